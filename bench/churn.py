"""Churn soak: viewer after viewer tunes in to an idle channel, reads a little, and leaves.

Each cycle is a cold start and a teardown: the channel has no other viewer, so the
encoder starts for the viewer and must be gone again before the next one comes. What
must not grow over thousands of cycles: the service's processes, descriptors and memory.
Teardown is timed from outside, from the viewer's close until the channel's ffmpeg has
exited and until its Air worker has been reaped, and compared with the front's own
histogram (retrovue_air_teardown_seconds: STOP sent until the worker's exit reported).
"""

from __future__ import annotations

import os
import socket
import time

import psutil

from .join import percentiles, teardown_from_metrics
from .service import running_service

CHANNEL = """
[[channel]]
id = "churn"
name = "Churn"
source = "test-pattern"
"""
WARM_UP_CYCLES = 2
POLL = 0.002  # seconds between looks at the processes; a teardown takes tens of milliseconds


def footprint(supervisor: psutil.Process) -> dict:
    """Processes, open descriptors and resident memory of the service, all processes summed."""
    procs = [supervisor, *supervisor.children(recursive=True)]
    fds = rss = 0
    for p in procs:
        try:
            fds += p.num_fds()
            rss += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return {"processes": len(procs), "fds": fds, "rss_mb": round(rss / 2**20, 1)}


def _gone(pid: int) -> bool:
    """Exited: reaped already, or a zombie waiting for its parent."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _reaped(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return False
    except ProcessLookupError:
        return True


def _wait(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL)
    return True


def one_cycle(port: int, supervisor: psutil.Process, front_pid: int) -> dict:
    """Tune in, read the stream's first bytes, leave; then wait for the teardown."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(b"GET /channels/churn.ts HTTP/1.1\r\nHost: bench\r\n\r\n")
        got = b""
        while b"\r\n\r\n" not in got or len(got) - got.index(b"\r\n\r\n") - 4 < 188:
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError(f"the stream ended before its first packet: {got[:80]!r}")
            got += chunk
        first_packet = time.monotonic() - started
        worker_pids = [p.pid for p in supervisor.children() if p.pid != front_pid]
        ffmpegs = [p for p in supervisor.children(recursive=True) if p.name().startswith("ffmpeg")]  # Debian's, or the bundled "ffmpeg-linux-x86_64-v9.0.2"
    left = time.monotonic()
    ok = _wait(lambda: all(_gone(p.pid) for p in ffmpegs))
    stopped = time.monotonic() - left
    ok = _wait(lambda: all(_reaped(pid) for pid in worker_pids)) and ok
    reaped = time.monotonic() - left
    return {"first_packet": first_packet, "ffmpeg_exited": stopped, "worker_reaped": reaped, "ok": ok}


def run(cycles: int = 200) -> dict:
    with running_service(CHANNEL) as svc:
        supervisor = psutil.Process(svc.proc.pid)
        time.sleep(1.0)  # let the supervisor and the front settle into their idle state
        fresh = footprint(supervisor)
        # The first streams allocate what every later one reuses (the front grows ~4 MB at the
        # second): counted in the start, that would read as growth of the soak.
        for _ in range(WARM_UP_CYCLES):
            one_cycle(svc.port, supervisor, svc.front.pid)
        time.sleep(1.0)
        before = footprint(supervisor)
        samples, trace = [], []
        t0 = time.monotonic()
        for n in range(1, cycles + 1):
            samples.append(one_cycle(svc.port, supervisor, svc.front.pid))
            if n % max(1, cycles // 10) == 0:
                # Growth that stops (a histogram's window filling, the allocator's arenas)
                # shows as a step in the first tenth; a leak, as a slope across all ten.
                trace.append({"cycle": n, **footprint(supervisor),
                              "front_rss_mb": round(svc.front.memory_info().rss / 2**20, 1)})
        took = time.monotonic() - t0
        time.sleep(1.0)
        after = footprint(supervisor)
        front_view = teardown_from_metrics(svc.port, "churn")
    return {
        "cycles": cycles, "seconds": round(took, 1),
        "fresh": fresh, "start": before, "end": after, "warm_up_cycles": WARM_UP_CYCLES,
        "growth": {k: round(after[k] - before[k], 1) for k in before},
        "trace": trace,
        "growth_after_first_tenth": {k: round(after[k] - trace[0][k], 1) for k in before} if trace else None,
        "stuck": sum(not s["ok"] for s in samples),
        "first_packet": percentiles([s["first_packet"] for s in samples]),
        "teardown_ffmpeg_exited": percentiles([s["ffmpeg_exited"] for s in samples]),
        "teardown_worker_reaped": percentiles([s["worker_reaped"] for s in samples]),
        "teardown_front_histogram": front_view,
        "samples_ms": {k: [round(1000 * s[k], 1) for s in samples]
                       for k in ("first_packet", "ffmpeg_exited", "worker_reaped")},
    }
