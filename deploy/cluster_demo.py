"""make cluster-demo: an origin, two edges and HAProxy on loopback ports, until Ctrl-C.

    viewers -> HAProxy :8080 -> edge :8101 -> origin :8100 (encodes channels 1 and 2)
                             -> edge :8102 ->

The edges relay the origin's channels; HAProxy runs deploy/haproxy.cfg with loopback
addresses put in. Ctrl-C stops HAProxy, then the edges, then the origin, and removes the
temporary configs. The tests render HAProxy's config with the same function.
"""

from __future__ import annotations

import argparse
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HAPROXY_TEMPLATE = ROOT / "deploy" / "haproxy.cfg"


def haproxy_config(template: str, bind: str, edges: list[tuple[str, str]], stats_socket: str) -> str:
    """deploy/haproxy.cfg with its bind address, its edges and its stats socket replaced.

    Everything else (routing, health checks, timeouts) stays as shipped, so what a test
    runs is what an operator installs. Logging goes to stderr, as HAProxy in a terminal.
    """
    lines = template.splitlines()
    out: list[str] = []
    servers_done = False
    for line in lines:
        indent = line[: len(line) - len(line.lstrip())]
        word = line.split()[0] if line.split() else ""
        if word == "bind":
            out.append(f"{indent}bind {bind}")
        elif word == "server":
            if not servers_done:
                out += [f"{indent}server {name} {address}" for name, address in edges]
                servers_done = True
        elif word == "stats" and line.split()[1:2] == ["socket"]:
            out.append(f"{indent}stats socket {stats_socket} mode 600 level admin")
        elif word == "log" and line.split()[1:2] != ["global"]:
            out.append(f"{indent}log stderr format raw local0 notice")
        else:
            out.append(line)
    if not servers_done:
        raise ValueError("the template has no server line to replace")
    return "\n".join(out) + "\n"


def origin_config() -> str:
    return """\
[[channel]]
id = "1"
name = "RetroVue One"
source = "test-pattern"

[[channel]]
id = "2"
name = "RetroVue Two"
source = "test-pattern"
tone_hz = 660
"""


def edge_config(origin: str, channel_ids: list[str]) -> str:
    # Behind HAProxy every viewer comes from HAProxy's address: the per-address limit
    # is HAProxy's (its stick table), not the edge's.
    text = "max_connections_per_address = 4096\n"
    for channel_id in channel_ids:
        text += (f'\n[[channel]]\nid = "{channel_id}"\nname = "Relay of {channel_id}"\n'
                 f'source = "relay"\nurl = "{origin}/channels/{channel_id}.ts"\n')
    return text


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


class Cluster:
    """The processes of the demo; stop() ends them front to back, whatever started."""

    def __init__(self, workdir: Path, haproxy: str, log_level: str):
        self.workdir = workdir
        self.haproxy = haproxy
        self.log_level = log_level
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start_service(self, name: str, config: str, port: int) -> None:
        path = self.workdir / f"{name}.toml"
        path.write_text(config)
        # Their own process group: Ctrl-C reaches only the demo, which stops them in order.
        proc = subprocess.Popen([sys.executable, "-m", "supervisor", "--config", str(path), "--listen",
                                 f"127.0.0.1:{port}", "--log-level", self.log_level],
                                cwd=ROOT, process_group=0)
        self.procs.append((name, proc))
        self.wait_until_up(name, proc, f"http://127.0.0.1:{port}/healthz")

    def start_haproxy(self, port: int, edges: list[tuple[str, str]]) -> None:
        path = self.workdir / "haproxy.cfg"
        path.write_text(haproxy_config(HAPROXY_TEMPLATE.read_text(), f"127.0.0.1:{port}", edges,
                                       str(self.workdir / "haproxy.sock")))
        proc = subprocess.Popen([self.haproxy, "-db", "-f", str(path)], process_group=0)
        self.procs.append(("haproxy", proc))
        self.wait_until_up("haproxy", proc, f"http://127.0.0.1:{port}/healthz")

    def wait_until_up(self, name: str, proc: subprocess.Popen, url: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not answers(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start")
            time.sleep(0.1)

    def any_exited(self) -> str | None:
        return next((name for name, proc in self.procs if proc.poll() is not None), None)

    def stop(self) -> None:
        for name, proc in reversed(self.procs):  # HAProxy first, the origin last
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                print(f"cluster-demo: {name} did not stop; killing it", file=sys.stderr)
                proc.kill()
                proc.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cluster-demo", description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8080, help="HAProxy's port (viewers connect here)")
    p.add_argument("--origin-port", type=int, default=8100)
    p.add_argument("--edge-ports", default="8101,8102", help="comma-separated, one edge each")
    p.add_argument("--log-level", default="WARNING")
    args = p.parse_args(argv)
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        print("cluster-demo: haproxy is not installed (apt-get install haproxy)", file=sys.stderr)
        return 1
    edge_ports = [int(x) for x in args.edge_ports.split(",")]
    stop = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda signum, _: stop.append(signum))
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the loop when one of them dies
    wake_r, wake_w = socket.socketpair()
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
    workdir = Path(tempfile.mkdtemp(prefix="retrovue-air-cluster-"))
    cluster = Cluster(workdir, haproxy, args.log_level)
    try:
        origin = f"http://127.0.0.1:{args.origin_port}"
        cluster.start_service("origin", origin_config(), args.origin_port)
        edges = []
        for n, port in enumerate(edge_ports, 1):
            cluster.start_service(f"edge{n}", edge_config(origin, ["1", "2"]), port)
            edges.append((f"edge{n}", f"127.0.0.1:{port}"))
        cluster.start_haproxy(args.port, edges)
        print(f"cluster-demo: ready. Watch http://127.0.0.1:{args.port}/channels/1.ts (or 2.ts);\n"
              f"  origin {origin}/channels, edges " + ", ".join(f"http://{a}/channels" for _, a in edges)
              + "\n  Ctrl-C stops them all.", flush=True)
        while not stop:
            dead = cluster.any_exited()
            if dead:
                print(f"cluster-demo: {dead} exited; stopping the rest", file=sys.stderr)
                return 1
            select.select([wake_r], [], [])
            wake_r.recv(64)
        print("cluster-demo: stopping", flush=True)
        return 0
    except RuntimeError as e:
        print(f"cluster-demo: {e}", file=sys.stderr)
        return 1
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        signal.set_wakeup_fd(-1)
        wake_r.close()
        wake_w.close()


if __name__ == "__main__":
    sys.exit(main())
