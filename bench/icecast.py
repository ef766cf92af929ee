"""Debian's Icecast2, started for a benchmark and fed our test-pattern channel by ffmpeg.

Icecast is measured at its best: its client limit is raised above the run's viewers, its
per-listener queue is the same lag our front tolerates (max_lag_seconds of stream), and
its listen backlog is raised to ours. Icecast 2.4 has no setting for the backlog: it
calls listen(fd, ICECAST_LISTEN_QUEUE), which is 5 (src/global.h), and past five waiting
connections the kernel drops SYNs and a viewer waits a second for the retransmission.
A tiny LD_PRELOAD library (built here with the C compiler, when there is one) raises it.
It runs as `nobody`, as it would in production, from a temporary directory of its own.
"""

from __future__ import annotations

import base64
import contextlib
import grp
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from xml.sax.saxutils import escape

import psutil

from air_worker.ffmpeg_command import build_command, font_file
from retrovue_air import config
from retrovue_air.ffmpeg.binary import ffmpeg_binary

MOUNT = "/bench.ts"
LISTEN_BACKLOG = 4096  # as supervisor/arbiter.py LISTEN_BACKLOG

BACKLOG_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/socket.h>
int listen(int fd, int backlog) {
    static int (*real_listen)(int, int);
    if (!real_listen) real_listen = dlsym(RTLD_NEXT, "listen");
    const char *raised = getenv("BENCH_LISTEN_BACKLOG");
    return real_listen(fd, raised ? atoi(raised) : backlog);
}
"""


def icecast_config(*, port: int, directory: str, password: str, clients: int, queue_size: int,
                   burst_size: int) -> str:
    """The whole icecast.xml for one benchmark run: one listen socket, no YP, logs in `directory`."""
    e = lambda v: escape(str(v))  # noqa: E731
    return f"""<icecast>
    <location>bench</location>
    <admin>bench@localhost</admin>
    <limits>
        <clients>{clients}</clients>
        <sources>2</sources>
        <queue-size>{queue_size}</queue-size>
        <client-timeout>30</client-timeout>
        <header-timeout>15</header-timeout>
        <source-timeout>10</source-timeout>
        <burst-on-connect>1</burst-on-connect>
        <burst-size>{burst_size}</burst-size>
    </limits>
    <authentication>
        <source-password>{e(password)}</source-password>
        <relay-password>{e(password)}</relay-password>
        <admin-user>admin</admin-user>
        <admin-password>{e(password)}</admin-password>
    </authentication>
    <hostname>127.0.0.1</hostname>
    <listen-socket>
        <port>{port}</port>
        <bind-address>127.0.0.1</bind-address>
    </listen-socket>
    <fileserve>1</fileserve>
    <paths>
        <basedir>/usr/share/icecast2</basedir>
        <logdir>{e(directory)}</logdir>
        <webroot>/usr/share/icecast2/web</webroot>
        <adminroot>/usr/share/icecast2/admin</adminroot>
    </paths>
    <logging>
        <accesslog>access.log</accesslog>
        <errorlog>error.log</errorlog>
        <loglevel>2</loglevel>
    </logging>
    <security>
        <chroot>0</chroot>
    </security>
</icecast>
"""


def source_command(channel_toml: str, port: int, password: str) -> list[str]:
    """Our test-pattern channel's own ffmpeg command, sending to Icecast instead of a pipe."""
    channel = config.parse(channel_toml, "<bench>").channels[0]
    cmd = build_command(channel, ffmpeg_binary(), font=font_file())
    assert cmd[-1] == "pipe:1", cmd
    return cmd[:-1] + ["-content_type", "video/mp2t",
                       f"icecast://source:{password}@127.0.0.1:{port}{MOUNT}"]


def build_backlog_shim(directory: Path) -> Path | None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return None
    src, lib = directory / "backlog.c", directory / "backlog.so"
    src.write_text(BACKLOG_SHIM)
    done = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(lib), str(src), "-ldl"],
                          capture_output=True, text=True)
    return lib if done.returncode == 0 else None


def listen_backlog(port: int) -> int | None:
    """The backlog the kernel holds for a listening socket: `ss -ltn` shows it as Send-Q."""
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout
    fields = out.split()
    return int(fields[2]) if len(fields) > 2 and fields[2].isdigit() else None


class RunningIcecast:
    def __init__(self, proc: subprocess.Popen, port: int, password: str, backlog: int | None,
                 source: subprocess.Popen, limits: dict):
        self.proc, self.port, self.password, self.source = proc, port, password, source
        self.server = psutil.Process(proc.pid)
        self.backlog, self.limits = backlog, limits

    def stats(self) -> str:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/admin/stats")
        token = base64.b64encode(f"admin:{self.password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.read().decode(errors="replace")

    def bytes_in(self) -> int | None:
        """Bytes of stream Icecast has read from its source, from its own statistics."""
        m = re.search(r"<source mount=\"" + re.escape(MOUNT) + r"\">.*?<total_bytes_read>(\d+)<",
                      self.stats(), re.S)
        return int(m.group(1)) if m else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mount_live(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(f"GET {MOUNT} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            return re.match(rb"HTTP/1\.[01] 200", s.recv(64)) is not None
    except OSError:
        return False


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def running_icecast(channel_toml: str, clients: int, queue_size: int, burst_size: int = 65536):
    binary = shutil.which("icecast2")
    if not binary:
        raise RuntimeError("icecast2 is not installed (make bench installs it when run as root)")
    port, password = _free_port(), secrets.token_hex(8)
    limits = {"clients": clients, "sources": 2, "queue_size": queue_size, "burst_size": burst_size}
    with tempfile.TemporaryDirectory(prefix="bench-icecast-") as d:
        directory = Path(d)
        os.chmod(directory, 0o755)
        shim = build_backlog_shim(directory)
        (directory / "icecast.xml").write_text(icecast_config(
            port=port, directory=d, password=password, clients=clients, queue_size=queue_size,
            burst_size=burst_size))
        env = dict(os.environ)
        if shim:
            env.update(LD_PRELOAD=str(shim), BENCH_LISTEN_BACKLOG=str(LISTEN_BACKLOG))
        as_nobody = {}
        if os.geteuid() == 0:
            # Icecast refuses to run as root; its logs go to a directory nobody may write.
            os.chown(directory, pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid)
            as_nobody = {"user": "nobody", "group": "nogroup", "extra_groups": []}
        log = open(directory / "stderr", "w+")
        proc = subprocess.Popen([binary, "-c", str(directory / "icecast.xml")], env=env,
                                stdout=log, stderr=log, cwd=d, **as_nobody)
        source = None
        try:
            deadline = time.monotonic() + 10
            while listen_backlog(port) is None:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"icecast2 did not start: {log.read()[-500:]}")
                time.sleep(0.05)
            source = subprocess.Popen(source_command(channel_toml, port, password),
                                      stdin=subprocess.DEVNULL, stderr=log)
            deadline = time.monotonic() + 15
            while not _mount_live(port):
                if source.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"the ffmpeg source did not go live on icecast: {log.read()[-500:]}")
                time.sleep(0.1)
            yield RunningIcecast(proc, port, password, listen_backlog(port), source, limits)
        finally:
            if source is not None:
                _stop(source)
            _stop(proc)
            log.close()
