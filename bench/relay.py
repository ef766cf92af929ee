"""Relays: what an edge costs and saves.

- Fan-out: N viewers of one channel on one instance alone, against the same N viewers
  split over two edges that relay it from an origin. Per tier: connections the origin
  serves, CPU of its front and encoder, CPU of the edges (front + relay ffmpeg).
  A channel the origin encodes once then serves as many viewers as all edges together
  can, and the origin's own cost no longer grows with the audience.
- Cold join through an edge: the first viewer of an idle channel on an idle edge of an
  idle origin, to the first byte and to the first decoded frame, against a cold join on
  the origin itself: the extra latency the edge's pull adds.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import time
import urllib.request

import psutil

from .join import first_frame_seconds, percentiles
from .readers import Readers
from .service import running_service

ORIGIN = """
max_connections = 5000
max_connections_per_address = 5000  # every bench viewer comes from 127.0.0.1

[[channel]]
id = "1"
name = "Bench"
source = "test-pattern"
video_kbps = 1900
audio_kbps = 128
"""


def edge_config(origin_port: int) -> str:
    return f"""
max_connections = 5000
max_connections_per_address = 5000

[[channel]]
id = "1"
name = "Bench relay"
source = "relay"
url = "http://127.0.0.1:{origin_port}/channels/1.ts"
video_kbps = 1900
audio_kbps = 128
"""


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def tree(svc) -> list[psutil.Process]:
    """The service's front, workers and ffmpegs (not the supervisor, which only waits)."""
    return psutil.Process(svc.proc.pid).children(recursive=True)


def viewers_of(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/channels", timeout=5) as r:
        return {c["id"]: c["viewers"] for c in json.load(r)}["1"]


def measure(origin, edges: list, viewers: int, seconds: float) -> dict:
    targets = edges or [origin]
    readers = [Readers("127.0.0.1", t.port, "/channels/1.ts", viewers // len(targets)) for t in targets]
    try:
        for r in readers:
            r.run_for(3.0 / len(readers))  # everyone admitted, ffmpeg at steady state
        origin_procs, edge_procs = tree(origin), [p for e in edges for p in tree(e)]
        o0, e0, b0 = cpu_seconds(origin_procs), cpu_seconds(edge_procs), sum(r.total() for r in readers)
        t0 = time.monotonic()
        slice_ = 0.25
        while time.monotonic() - t0 < seconds:  # keep every reader drained, turn by turn
            for r in readers:
                r.run_for(slice_ / len(readers))
        elapsed = time.monotonic() - t0
        o1, e1, b1 = cpu_seconds(origin_procs), cpu_seconds(edge_procs), sum(r.total() for r in readers)
        origin_connections = viewers_of(origin.port)
    finally:
        for r in readers:
            r.close()
    gb = (b1 - b0) / 1e9
    return {"viewers": viewers, "edges": len(edges), "origin_encoders": 1,
            "origin_connections": origin_connections,
            "origin_cpu_percent": round(100 * (o1 - o0) / elapsed, 1),
            "edges_cpu_percent": round(100 * (e1 - e0) / elapsed, 1),
            "all_tiers_cpu_s_per_gb": round((o1 - o0 + e1 - e0) / gb, 3),
            "viewer_rate_kbps": round((b1 - b0) * 8 / elapsed / viewers / 1000),
            "dropped": sum(r.closed for r in readers)}


def first_byte_seconds(port: int) -> float:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /channels/1.ts HTTP/1.1\r\nHost: bench\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
        if not data.partition(b"\r\n\r\n")[2]:
            s.recv(65536)
    return time.monotonic() - started


def wait_idle(*ports: int) -> None:
    deadline = time.monotonic() + 15
    while any(viewers_of(p) for p in ports) or any(_state(p) != "idle" for p in ports):
        if time.monotonic() > deadline:
            raise RuntimeError("the channel did not go idle")
        time.sleep(0.05)


def _state(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/channels", timeout=5) as r:
        return {c["id"]: c["state"] for c in json.load(r)}["1"]


def cold_joins(port: int, idle_ports: tuple[int, ...], ffmpeg: str, n: int) -> dict:
    to_byte, to_frame = [], []
    for _ in range(n):
        wait_idle(*idle_ports)
        to_byte.append(first_byte_seconds(port))
        wait_idle(*idle_ports)
        to_frame.append(first_frame_seconds(ffmpeg, f"http://127.0.0.1:{port}/channels/1.ts"))
    return {"first_byte": percentiles(to_byte), "first_frame": percentiles(to_frame)}


def run(viewers: int = 400, seconds: float = 10.0, colds: int = 5) -> dict:
    ffmpeg = shutil.which("ffmpeg")
    out = {}
    with running_service(ORIGIN) as origin:
        out["alone"] = measure(origin, [], viewers, seconds)
        out["cold_join_alone"] = cold_joins(origin.port, (origin.port,), ffmpeg, colds)
    with running_service(ORIGIN) as origin:
        with running_service(edge_config(origin.port)) as edge_a, running_service(edge_config(origin.port)) as edge_b:
            out["two_edges"] = measure(origin, [edge_a, edge_b], viewers, seconds)
            out["cold_join_through_edge"] = cold_joins(edge_a.port, (edge_a.port, origin.port), ffmpeg, colds)
    out["edge_adds_ms"] = {
        what: out["cold_join_through_edge"][what]["p50_ms"] - out["cold_join_alone"][what]["p50_ms"]
        for what in ("first_byte", "first_frame")}
    out["note"] = ("two_edges: the viewers are split over both edges directly (a channel carried by every "
                   "edge); origin_connections is what the origin serves for them")
    return out
