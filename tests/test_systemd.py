"""Running under systemd: the unit files, the sd_notify protocol, socket activation."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import requests

from harness import ROOT, free_port, require_tool, wait_until, write_config
from supervisor import socket_activation
from supervisor.sd_notify import Notifier

DEPLOY = ROOT / "deploy"
INSTALLED_BINARY = "/opt/retrovue-air/.venv/bin/retrovue-air"


# The unit files


def test_units_pass_systemd_analyze_verify(tmp_path):
    analyze = require_tool("systemd-analyze")
    service = (DEPLOY / "retrovue-air.service").read_text()
    socket_unit = (DEPLOY / "retrovue-air.socket").read_text()
    assert f"ExecStart={INSTALLED_BINARY} " in service
    # verify checks that ExecStart's program exists: point it at this checkout's real
    # entry point (the same console script, installed in another venv).
    entry_point = Path(sys.executable).parent / "retrovue-air"
    assert os.access(entry_point, os.X_OK), f"{entry_point}: run `make venv`"
    (tmp_path / "retrovue-air.service").write_text(service.replace(INSTALLED_BINARY, str(entry_point)))
    (tmp_path / "retrovue-air.socket").write_text(socket_unit)
    result = subprocess.run(
        [analyze, "verify", "--man=no", "retrovue-air.service", "retrovue-air.socket"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0"})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # verify exits 0 even for unknown keys and unparsable values; it only warns about them.
    ours = [line for line in output.splitlines() if "retrovue-air" in line]
    assert not ours, "\n".join(ours)


def test_service_unit_has_the_settings_the_supervisor_relies_on():
    lines = {line.strip() for line in (DEPLOY / "retrovue-air.service").read_text().splitlines()}
    for setting in ("Type=notify", "NotifyAccess=main", "KillMode=mixed", "WatchdogSec=10",
                    "ExecReload=kill -HUP $MAINPID", "Restart=on-failure", "LimitNOFILE=65536",
                    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6"):
        assert setting in lines, setting
    assert not any(line.startswith("MemoryDenyWriteExecute=") for line in lines)
    assert "ListenStream=127.0.0.1:8000" in (DEPLOY / "retrovue-air.socket").read_text().splitlines()


# sd_notify: the test plays systemd


@pytest.fixture(params=["path", "abstract"])
def manager(request, tmp_path):
    """A NOTIFY_SOCKET the way systemd binds it; yields (its NOTIFY_SOCKET value, the socket)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        address = str(tmp_path / "notify")
        sock.bind(address)
    else:
        name = f"retrovue-air-test/{secrets.token_hex(6)}"
        sock.bind("\0" + name)
        address = "@" + name
    sock.settimeout(5)
    yield address, sock
    sock.close()


def receive(sock: socket.socket) -> bytes:
    return sock.recv(4096)


def test_notifier_sends_the_exact_datagrams(manager):
    address, sock = manager
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "10000000",
                                      "WATCHDOG_PID": str(os.getpid())})
    try:
        assert notifier.enabled
        assert notifier.watchdog_interval == 5.0
        notifier.ready()
        assert receive(sock) == b"READY=1"
        notifier.ready("serving 2 channels")
        assert receive(sock) == b"READY=1\nSTATUS=serving 2 channels"
        notifier.status("channel 1 live\nchannel 2 idle")
        assert receive(sock) == b"STATUS=channel 1 live channel 2 idle"
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        notifier.reloading()
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        first, second = receive(sock).split(b"\n")
        assert first == b"RELOADING=1"
        key, _, usec = second.partition(b"=")
        assert key == b"MONOTONIC_USEC" and before <= int(usec) <= after
        notifier.stopping()
        assert receive(sock) == b"STOPPING=1"
        notifier.watchdog()
        assert receive(sock) == b"WATCHDOG=1"
    finally:
        notifier.close()


def test_keepalive_pings_when_due_and_says_when_next(manager):
    address, sock = manager
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "4000000"})
    try:
        assert notifier.keepalive(now=100.0) == 2.0  # the first call pings at once
        assert receive(sock) == b"WATCHDOG=1"
        assert notifier.keepalive(now=101.5) == 0.5  # not due: nothing sent
        notifier.status("marker")
        assert receive(sock) == b"STATUS=marker"
        assert notifier.keepalive(now=102.0) == 2.0
        assert receive(sock) == b"WATCHDOG=1"
    finally:
        notifier.close()


def test_watchdog_settings_for_another_pid_are_ignored(manager):
    address, _ = manager
    environ = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "10000000"}
    assert Notifier.from_environ(environ).watchdog_interval == 5.0
    assert Notifier.from_environ({**environ, "WATCHDOG_PID": str(os.getpid() + 1)}).watchdog_interval is None
    assert Notifier.from_environ({**environ, "WATCHDOG_USEC": "0"}).watchdog_interval is None
    assert Notifier.from_environ({**environ, "WATCHDOG_USEC": "soon"}).watchdog_interval is None
    assert Notifier.from_environ({"NOTIFY_SOCKET": address}).watchdog_interval is None


def test_without_notify_socket_everything_is_a_no_op():
    notifier = Notifier.from_environ({"WATCHDOG_USEC": "10000000"})
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    assert notifier.keepalive() is None
    notifier.ready("x")
    notifier.reloading()
    notifier.status("x")
    notifier.stopping()
    notifier.watchdog()
    assert notifier._sock is None  # not even a socket was made
    notifier.close()


def test_a_forked_child_never_notifies(manager):
    address, sock = manager
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "10000000"})
    try:
        pid = os.fork()
        if pid == 0:
            code = 2
            try:
                notifier.ready("from the child")
                notifier.watchdog()
                code = 0 if notifier.keepalive() is None else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        notifier.status("from the supervisor")
        assert receive(sock) == b"STATUS=from the supervisor"  # the first datagram: the child sent none
    finally:
        notifier.close()


def test_send_failures_are_logged_once(tmp_path, caplog):
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    with caplog.at_level(logging.WARNING, logger="supervisor"):
        notifier.ready()
        notifier.watchdog()
        notifier.stopping()
    notifier.close()
    warnings = [r for r in caplog.records if "cannot notify systemd" in r.getMessage()]
    assert len(warnings) == 1, caplog.text


# Socket activation


def test_listen_fds_ignores_sockets_meant_for_another_process():
    environ = {"LISTEN_FDS": "1", "LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDNAMES": "x"}
    assert socket_activation.listen_fds(environ) == []
    assert environ == {}  # unset all the same, so that nothing inherits them
    assert socket_activation.listen_fds({}) == []


ACTIVATE = """
import os, sys
fd = int(sys.argv[1])
os.dup2(fd, 3)  # systemd's first passed descriptor; dup2 leaves it inheritable
os.close(fd)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())  # exec keeps the pid
os.execv(sys.executable, [sys.executable] + sys.argv[2:])
"""


class LogReader:
    def __init__(self, stream):
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.lines.append(None)  # end of stream
            self.cond.notify_all()

    def wait_for(self, text: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines:
                    if line is None:
                        raise AssertionError(f"log ended without {text!r}:\n" + "\n".join(self.lines[:-1]))
                    if text in line:
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no {text!r} in the log:\n" + "\n".join(self.lines))
                self.cond.wait(remaining)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_socket_activation_serves_on_the_passed_socket(tmp_path):
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    port = listener.getsockname()[1]
    not_bound = free_port()  # the address the config asks for: must stay unbound
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")}
    proc = subprocess.Popen(
        [sys.executable, "-c", ACTIVATE, str(listener.fileno()), "-m", "supervisor",
         "--config", str(write_config(tmp_path)), "--listen", f"127.0.0.1:{not_bound}"],
        cwd=ROOT, env=env, pass_fds=(listener.fileno(),),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = LogReader(proc.stderr)
    seen: set[int] = {proc.pid}
    try:
        # No waiting for readiness: the socket already listens, the connection waits in its backlog.
        response = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=20)
        listener.close()  # from here on only the service holds the socket
        assert response.status_code == 200
        assert response.text.strip() == "ok"
        log.wait_for("using the socket passed by systemd")
        supervisor = psutil.Process(proc.pid)
        kids = supervisor.children(recursive=True)
        seen.update(k.pid for k in kids)
        # Every listening TCP socket of the service is the passed one; nothing else was bound.
        listening = [c for p in [supervisor, *kids] for c in p.net_connections(kind="tcp")
                     if c.status == psutil.CONN_LISTEN]
        assert listening and {c.laddr.port for c in listening} == {port}
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", not_bound), timeout=5).close()
        # The LISTEN_* variables were unset, so nothing inherits them: look at the environment
        # an exec'd ffmpeg got (a forked child's /proc/PID/environ still shows its parent's exec).
        viewer = socket.create_connection(("127.0.0.1", port), timeout=20)
        try:
            viewer.sendall(b"GET /channels/1.ts HTTP/1.1\r\nHost: x\r\n\r\n")
            assert viewer.recv(12).startswith(b"HTTP/1.1 200")
            ffmpeg = wait_until(lambda: next((p for p in supervisor.children(recursive=True)
                                              if "ffmpeg" in p.name()), None), 10, "an ffmpeg")
            seen.update(p.pid for p in supervisor.children(recursive=True))
            names = set(ffmpeg.environ())
            assert "PATH" in names
            assert not {"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"} & names
        finally:
            viewer.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        log.wait_for("stopped")
        wait_until(lambda: not [p for p in seen if alive(p)], 5, "every process of the service gone")
    finally:
        listener.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.thread.join(timeout=5)
