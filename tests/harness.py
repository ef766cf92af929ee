"""Starting the real service for a test, talking to it, and checking that nothing leaked."""

from __future__ import annotations

import os
import re
import shutil
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

ROOT = Path(__file__).resolve().parent.parent

# Small pictures keep ffmpeg cheap on a 2-core CI machine; everything else is as shipped.
TEST_CONFIG = """
listen = "127.0.0.1:8000"
max_lag_seconds = {max_lag}
{extra_top}

[[channel]]
id = "1"
name = "Test One"
source = "test-pattern"
video_kbps = 600
audio_kbps = 64
width = 320
height = 180

[[channel]]
id = "2"
name = "Test Two"
source = "test-pattern"
tone_hz = 660
video_kbps = 600
audio_kbps = 64
width = 320
height = 180
{extra}
"""


def require_tool(name: str) -> str:
    """The path of a real client; with CI=true a missing one fails the test instead of skipping it."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (make test installs it when run as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def wait_until(predicate, timeout: float, what: str, interval: float = 0.02):
    """Poll a condition that has no event to wait on (a process gone, a count reached)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def zombies_under(proc: psutil.Process) -> list[psutil.Process]:
    out = []
    for child in proc.children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                out.append(child)
        except psutil.NoSuchProcess:
            pass
    return out


class Service:
    """One running retrovue-air (python -m supervisor), its log, and its processes."""

    def __init__(self, config_path: Path, env: dict | None = None, port: int | None = None,
                 wrapper: list[str] = ()):
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.lines: list[str] = []
        self._new_line = threading.Condition()
        self.proc = subprocess.Popen(
            [*wrapper, sys.executable, "-m", "supervisor", "--config", str(config_path),
             "--listen", f"127.0.0.1:{self.port}", "--log-level", os.environ.get("TEST_LOG_LEVEL", "INFO")],
            cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
            env={**os.environ, **(env or {})})
        self.supervisor = psutil.Process(self.proc.pid)
        self.seen_pids: set[int] = set()
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        self.wait_for_log(r"serving on", timeout=20)
        self.front = psutil.Process(int(self.wait_for_log(r"started http_front pid (\d+)").group(1)))

    def _read_log(self) -> None:
        for line in self.proc.stderr:
            with self._new_line:
                self.lines.append(line.rstrip("\n"))
                self._new_line.notify_all()
        with self._new_line:
            self._new_line.notify_all()

    def wait_for_log(self, pattern: str, timeout: float = 10, start: int = 0) -> re.Match:
        """Wait for a log line matching pattern (searching from line number start)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = start
        with self._new_line:
            while True:
                for line in self.lines[seen:]:
                    m = regex.search(line)
                    if m:
                        return m
                seen = len(self.lines)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no log line like {pattern!r}; log:\n" + "\n".join(self.lines[-40:]))
                self._new_line.wait(remaining)

    def log_mark(self) -> int:
        return len(self.lines)

    def url(self, path: str) -> str:
        return self.base + path

    def channels(self) -> dict[str, dict]:
        return {c["id"]: c for c in requests.get(self.url("/channels"), timeout=5).json()}

    def descendants(self) -> list[psutil.Process]:
        try:
            kids = self.supervisor.children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        self.seen_pids.update(k.pid for k in kids)
        return kids

    def ffmpegs(self) -> list[psutil.Process]:
        out = []
        for p in self.descendants():
            try:
                if "ffmpeg" in p.name() and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
            except psutil.NoSuchProcess:
                pass
        return out

    def wait_idle(self, timeout: float = 5) -> None:
        """Every channel idle (or failed), no worker and no ffmpeg left."""
        def idle():
            kids = [p for p in self.descendants() if p.pid != self.front.pid]
            states = {c["state"] for c in self.channels().values()}
            return not kids and states <= {"idle", "failed"}
        wait_until(idle, timeout, "all channels idle and no worker left")

    def fd_counts(self) -> tuple[int, int]:
        return fd_count(self.supervisor.pid), fd_count(self.front.pid)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.descendants()
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._reader.join(timeout=5)
        return code

    def assert_nothing_left(self) -> None:
        def gone():
            return not [p for p in self.seen_pids if psutil.pid_exists(p)
                        and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        wait_until(gone, 5, f"no process of the service left (pids {sorted(self.seen_pids)})")


def files_channel(channel_id: str, *paths, **keys) -> str:
    """The TOML of a media-file channel, for a test config's `extra`."""
    lines = ["[[channel]]", f'id = "{channel_id}"', f'name = "{channel_id.title()}"', 'source = "files"']
    lines.append(f'file = "{paths[0]}"' if len(paths) == 1 else "files = [" + ", ".join(f'"{p}"' for p in paths) + "]")
    lines += [f"{k} = {str(v).lower() if isinstance(v, bool) else v}" for k, v in keys.items()]
    return "\n" + "\n".join(lines) + "\n"


def write_config(tmp_path: Path, max_lag: float = 4.0, extra: str = "", extra_top: str = "") -> Path:
    path = tmp_path / "retrovue-air.toml"
    path.write_text(TEST_CONFIG.format(max_lag=max_lag, extra=extra, extra_top=extra_top))
    return path


class RawViewer:
    """A viewer on a plain socket: sends GET, reads the response head, then stream bytes."""

    def __init__(self, service: Service, channel: str = "1", rcvbuf: int | None = None):
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(15)
        self.sock.connect(("127.0.0.1", service.port))
        self.sock.sendall(f"GET /channels/{channel}.ts HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        self.head = b""
        self.body = bytearray()

    def read_head(self) -> bytes:
        while b"\r\n\r\n" not in self.head:
            data = self.sock.recv(4096)
            if not data:
                raise AssertionError(f"closed before the head: {self.head!r}")
            self.head += data
        self.head, _, rest = self.head.partition(b"\r\n\r\n")
        self.body += rest
        return self.head

    def read_body(self, n: int) -> bytes:
        if not self.head.startswith(b"HTTP/"):
            self.read_head()
        while len(self.body) < n:
            data = self.sock.recv(65536)
            if not data:
                raise AssertionError(f"stream closed after {len(self.body)} bytes")
            self.body += data
        return bytes(self.body[:n])

    def close(self) -> None:
        self.sock.close()


def assert_aligned_ts(data: bytes) -> None:
    assert len(data) >= 188 * 2, len(data)
    bad = [i for i in range(0, len(data) - len(data) % 188, 188) if data[i] != 0x47]
    assert not bad, f"sync byte missing at offsets {bad[:5]}"


class Reader(threading.Thread):
    """A viewer that reads continuously in a thread, as a player does: count is its bytes so far,
    longest_gap the longest wait between two reads; with keep=True, data holds every body byte."""

    def __init__(self, service, channel: str = "1", keep: bool = False):
        super().__init__(daemon=True)
        self.viewer = RawViewer(service, channel)
        self.count = 0
        self.keep = keep
        self.data = bytearray()
        self.longest_gap = 0.0
        self.stop = threading.Event()

    def run(self):
        self.viewer.read_head()
        if self.keep:
            self.data += self.viewer.body
        last = time.monotonic()
        while not self.stop.is_set():
            try:
                data = self.viewer.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            now = time.monotonic()
            self.longest_gap, last = max(self.longest_gap, now - last), now
            self.count += len(data)
            if self.keep:
                self.data += data

    def finish(self) -> bytes:
        """Stop reading and close; what it kept (with keep=True)."""
        self.stop.set()
        self.viewer.sock.shutdown(socket.SHUT_RDWR)
        self.join(timeout=10)
        self.viewer.close()
        return bytes(self.data)


# Several instances in a tree (origin, edges) with a real HAProxy in front.

def relay_config(origin: str, channel_ids=("1", "2"), extra_top: str = "") -> str:
    """An edge's whole config: each channel relays the channel of the same id at origin (http://HOST:PORT)."""
    text = f"max_connections_per_address = 4096\n{extra_top}\n"
    for channel_id in channel_ids:
        text += (f'\n[[channel]]\nid = "{channel_id}"\nname = "Relay {channel_id}"\nsource = "relay"\n'
                 f'url = "{origin}/channels/{channel_id}.ts"\n')
    return text


def cluster_demo_module():
    """deploy/cluster_demo.py, which renders deploy/haproxy.cfg for given ports."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("cluster_demo", ROOT / "deploy" / "cluster_demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class HAProxy:
    """HAProxy in the foreground on deploy/haproxy.cfg, with this test's port and edges."""

    def __init__(self, tmp_path: Path, edges: list[Service]):
        binary = require_tool("haproxy")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.names = {f"edge{n}": edge for n, edge in enumerate(edges, 1)}
        self.stats_socket = str(tmp_path / "haproxy.sock")
        text = cluster_demo_module().haproxy_config(
            (ROOT / "deploy" / "haproxy.cfg").read_text(), f"127.0.0.1:{self.port}",
            [(name, f"127.0.0.1:{edge.port}") for name, edge in self.names.items()], self.stats_socket)
        self.config = tmp_path / "haproxy.cfg"
        self.config.write_text(text)
        self.log = open(tmp_path / "haproxy.log", "w+")
        self.proc = subprocess.Popen([binary, "-db", "-f", str(self.config)], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        wait_until(lambda: self.proc.poll() is not None or set(self.up_servers()) == set(self.names), 20,
                   "HAProxy answering with every edge up")
        assert self.proc.poll() is None, self.log_text()

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(self.stats_socket)
            s.sendall(line.encode() + b"\n")
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        return out.decode()

    def up_servers(self) -> list[str]:
        """The edges HAProxy's health checks consider up (`show servers state`)."""
        try:
            text = self.command("show servers state edges")
        except OSError:
            return []
        # Columns: be_id be_name srv_id srv_name srv_addr srv_op_state ...; 2 is running.
        rows = [line.split() for line in text.splitlines()[2:] if line.strip()]
        return [row[3] for row in rows if len(row) > 5 and row[5] == "2"]

    def url(self, path: str) -> str:
        return self.base + path

    def log_text(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
