"""The real service, started for a benchmark on a config of the benchmark's own."""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


class RunningService:
    def __init__(self, proc: subprocess.Popen, port: int, front: psutil.Process):
        self.proc, self.port, self.front = proc, port, front


@contextlib.contextmanager
def running_service(channels: str, max_lag: float = 4.0):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "bench.toml"
        cfg.write_text(f"max_lag_seconds = {max_lag}\n{channels}")
        log = open(Path(d) / "log", "w+")
        proc = subprocess.Popen([sys.executable, "-m", "supervisor", "--config", str(cfg),
                                 "--listen", f"127.0.0.1:{port}", "--log-level", "WARNING"],
                                cwd=ROOT, stderr=log)
        try:
            sup = psutil.Process(proc.pid)
            deadline = time.monotonic() + 20
            while not sup.children() or not _answers(port):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the service did not start")
                time.sleep(0.05)
            yield RunningService(proc, port, sup.children()[0])
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
            log.seek(0)
            problems = [l for l in log if re.search(r"ERROR|WARNING", l)]
            if problems:
                print("service log:", *problems[-10:], sep="\n  ", file=sys.stderr)
            log.close()


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False
