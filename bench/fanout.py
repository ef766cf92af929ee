"""Fan-out cost: CPU-seconds of the front per GB delivered to N full-rate viewers.

Side by side in one run, against a bare Python loop that sends 64 KiB slices of one
buffer to the same number of readers at the same rate (the floor for Python code).
"""

from __future__ import annotations

import os
import socket
import time

import psutil

from .readers import Readers
from .service import running_service

CHANNEL = """
max_connections = 5000
max_connections_per_address = 5000  # every bench viewer comes from 127.0.0.1
max_viewers_per_channel = 5000  # the viewers and the one that keeps the channel live before they join

[[channel]]
id = "bench"
name = "Bench"
source = "test-pattern"
video_kbps = 1900
audio_kbps = 128
join_burst_seconds = {burst}
"""
RATE = (1900 + 128) * 1000 / 8 * 1.05  # bytes per second, with MPEG-TS framing


def cpu(p: psutil.Process) -> tuple[float, float]:
    """CPU seconds so far, and of them the user's (Python's own; the rest is the kernel's, mostly sends)."""
    t = p.cpu_times()
    return t.user + t.system, t.user


def measure_front(viewers: int, seconds: float, burst: float = 6.0) -> dict:
    """N viewers joining a channel that has been live for longer than the burst, within about a
    second; whether each got its burst (at least 90 % of burst x rate in its first 2 s), then the
    front's CPU per GB at steady state."""
    with running_service(CHANNEL.format(burst=burst), max_lag=4.0) as svc:
        keeper = Readers("127.0.0.1", svc.port, "/channels/bench.ts", 1)
        keeper.run_for(burst + 2.0)  # the channel live for longer than the burst
        started = time.monotonic()
        readers = Readers("127.0.0.1", svc.port, "/channels/bench.ts", viewers)
        joined_in = time.monotonic() - started
        try:
            readers.run_for(2.0)
            got_burst = sum(1 for b in readers.snapshot() if b >= 0.9 * burst * RATE)
            readers.run_for(1.0)  # warm up: everyone caught up, ffmpeg at steady state
            front = svc.front
            b0, (c0, u0), per0 = readers.total(), cpu(front), readers.snapshot()
            t0 = time.monotonic()
            readers.run_for(seconds)
            elapsed = time.monotonic() - t0
            b1, (c1, u1), per1 = readers.total(), cpu(front), readers.snapshot()
        finally:
            readers.close()
            keeper.close()
        rates = sorted((b - a) / elapsed for a, b in zip(per0, per1))
        gb = (b1 - b0) / 1e9
        return {"viewers": viewers, "join_burst_seconds": burst, "joined_within_s": round(joined_in, 2),
                "got_their_burst": got_burst if burst else None,
                "seconds": round(elapsed, 2), "gb": round(gb, 3),
                "front_cpu_s": round(c1 - c0, 3), "front_s_per_gb": round((c1 - c0) / gb, 3),
                "front_user_s_per_gb": round((u1 - u0) / gb, 3),
                "viewer_rate_min_kbps": round(rates[0] * 8 / 1000), "viewer_rate_median_kbps": round(rates[len(rates) // 2] * 8 / 1000),
                "dropped": readers.closed}


def bare_loop_child(listener: socket.socket, viewers: int, rate: float, seconds: float) -> None:
    conns = []
    while len(conns) < viewers:
        c, _ = listener.accept()
        c.recv(4096)
        c.setblocking(False)
        conns.append(c)
    chunk = memoryview(bytes(65536))
    interval = len(chunk) / rate
    end = time.monotonic() + seconds
    next_send = time.monotonic()
    pending = {c: 0 for c in conns}
    while time.monotonic() < end:
        now = time.monotonic()
        if now < next_send:
            time.sleep(next_send - now)
        next_send += interval
        for c in conns:
            try:
                c.send(chunk)
            except (BlockingIOError, OSError):
                pending[c] += 1
    os._exit(0)


def measure_bare_loop(viewers: int, seconds: float, rate: float) -> dict:
    listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
    port = listener.getsockname()[1]
    pid = os.fork()
    if pid == 0:
        bare_loop_child(listener, viewers, rate, seconds + 5)
    listener.close()
    proc = psutil.Process(pid)
    readers = Readers("127.0.0.1", port, "/", viewers)
    try:
        readers.run_for(2.0)
        b0, (c0, u0) = readers.total(), cpu(proc)
        t0 = time.monotonic()
        readers.run_for(seconds)
        elapsed = time.monotonic() - t0
        b1, (c1, u1) = readers.total(), cpu(proc)
    finally:
        readers.close()
        os.waitpid(pid, 0)
    gb = (b1 - b0) / 1e9
    return {"viewers": viewers, "seconds": round(elapsed, 2), "gb": round(gb, 3),
            "cpu_s": round(c1 - c0, 3), "s_per_gb": round((c1 - c0) / gb, 3),
            "user_s_per_gb": round((u1 - u0) / gb, 3)}


def run(viewers: int = 1000, seconds: float = 15.0, rounds: int = 2) -> dict:
    """The front with the join burst, the bare loop, and the front without the burst,
    interleaved for `rounds` rounds so that the box's drift falls on all three alike."""
    measures = {"front": lambda: measure_front(viewers, seconds),
                "bare_python_loop_64k": lambda: measure_bare_loop(viewers, seconds, RATE),
                "front_without_burst": lambda: measure_front(viewers, seconds, burst=0.0)}
    runs: dict[str, list[dict]] = {name: [] for name in measures}
    for _ in range(rounds):
        for name, measure in measures.items():
            runs[name].append(measure())
    mean = {name: sum(r.get("front_s_per_gb", r.get("s_per_gb")) for r in done) / rounds
            for name, done in runs.items()}
    return {"rounds": runs, "mean_s_per_gb": {name: round(v, 3) for name, v in mean.items()},
            "ratio_front_to_bare": round(mean["front"] / mean["bare_python_loop_64k"], 2),
            "ratio_burst_to_no_burst": round(mean["front"] / mean["front_without_burst"], 2)}
