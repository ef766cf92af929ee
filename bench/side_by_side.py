"""Our service and Icecast2, side by side: N viewers of one test-pattern channel each.

Both are driven by the same load client and measured the same way, interleaved (ours,
Icecast, ours, Icecast...) so that whatever else the box does drifts over both alike.
Each run starts its server fresh and stops it after, so only one encoder runs at a time.
The server's CPU is its own process's (our front; Icecast's one process): the encoder,
the supervisor and the Air worker are not counted on either side. The reference rate is
what the channel's ffmpeg sent over the window (ours: its writes into the pipe, counted in
/proc/PID/io; Icecast's: its TCP connection's bytes_acked), so "below 95 % of the rate"
does not depend on either server's own accounting; but never less than the channel's
nominal bitrate, since a server that cannot keep up also holds back its encoder (Icecast
at 5,000 viewers read its source at a sixth of the rate). The first viewer joins alone and the
others only once it streams: first-byte times are those of viewers joining a live channel
(a cold start is the churn soak's and the join benchmark's business).
"""

from __future__ import annotations

import re
import statistics
import subprocess
import time

import psutil

from . import icecast
from .load_client import LoadClient
from .service import running_service

VIDEO_KBPS, AUDIO_KBPS, MAX_LAG = 1900, 128, 4.0
WARM_UP = 3.0  # seconds after the last join before the window opens
HOLDING = 0.01  # a server holds N viewers if at most 1 % of them are slow or lost


def channel_toml(viewers: int) -> str:
    limit = viewers + 100
    return f"""
max_connections = {limit}
max_connections_per_address = {limit}  # every bench viewer comes from 127.0.0.1
max_viewers_per_channel = {limit}

[[channel]]
id = "bench"
name = "Bench"
source = "test-pattern"
video_kbps = {VIDEO_KBPS}
audio_kbps = {AUDIO_KBPS}
"""


def bytes_per_second() -> int:
    # As retrovue_air.config.Channel.bytes_per_second: the TS framing adds about 5 %.
    return (VIDEO_KBPS + AUDIO_KBPS) * 1000 * 105 // 100 // 8


def listen_overflows() -> int:
    """TcpExt ListenOverflows: connections the kernel dropped because an accept queue was full."""
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split()[1:], values.split()[1:]))["ListenOverflows"])
    return 0


def cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def pipe_bytes_written(p: psutil.Process) -> int:
    return p.io_counters().write_chars  # write(2) into the pipe counts; send(2) would not


def tcp_bytes_sent(p: psutil.Process) -> int:
    """Bytes the peer acknowledged on the process's one TCP connection (tcp_info, through ss)."""
    conn = next(c for c in p.net_connections(kind="tcp") if c.status == psutil.CONN_ESTABLISHED)
    (lhost, lport), (rhost, rport) = conn.laddr, conn.raddr
    out = subprocess.run(["ss", "-tinH", "src", f"{lhost}:{lport}", "dst", f"{rhost}:{rport}"],
                         capture_output=True, text=True, check=True).stdout
    return int(re.search(r"bytes_acked:(\d+)", out).group(1))


def measure(port: int, path: str, server: psutil.Process, encoder, source_bytes, viewers: int,
            seconds: float, window: int) -> dict:
    """Join N viewers, let them settle, then measure a steady window.

    `encoder()` finds the channel's ffmpeg once it runs, `source_bytes(ffmpeg)` counts what it sent.
    """
    overflows0 = listen_overflows()
    client = LoadClient("127.0.0.1", port, path, viewers, window=window)
    try:
        client.count = 1  # the first viewer alone: ours starts the channel's encoder for it
        client.run_until_joined(timeout=30.0)
        client.count = viewers
        t_join = time.monotonic()
        all_joined = client.run_until_joined(timeout=max(30.0, viewers / 100))
        join_seconds = time.monotonic() - t_join
        client.run_for(WARM_UP)
        ffmpeg = encoder()
        per0, c0, w0, t0 = client.body_bytes(), cpu(server), source_bytes(ffmpeg), time.monotonic()
        client.run_for(seconds)
        per1, c1, w1, t1 = client.body_bytes(), cpu(server), source_bytes(ffmpeg), time.monotonic()
        rss = server.memory_info().rss
        overflows = listen_overflows() - overflows0
        late = client.viewers[1:]
        first_byte = [v.first_byte for v in late if v.first_byte is not None]
        first_body = [v.first_body_byte for v in late if v.first_body_byte is not None]
        losses = client.losses()
    finally:
        client.close()
    elapsed = t1 - t0
    source_rate = (w1 - w0) / elapsed
    reference = max(source_rate, (VIDEO_KBPS + AUDIO_KBPS) * 1000 / 8)
    rates = [(b - a) / elapsed for a, b in zip(per0, per1)]
    gb = sum(rates) * elapsed / 1e9
    ms = lambda v: None if v is None else round(1000 * v)  # noqa: E731
    return {
        "viewers": viewers, "seconds": round(elapsed, 2), "gb": round(gb, 3),
        "cpu_s": round(c1 - c0, 3), "cpu_s_per_gb": round((c1 - c0) / gb, 3) if gb else None,
        "cpu_cores": round((c1 - c0) / elapsed, 3), "rss_mb": round(rss / 2**20, 1),
        "source_kbps": round(source_rate * 8 / 1000),
        "viewer_rate_median_kbps": round(statistics.median(rates) * 8 / 1000) if rates else None,
        "below_95pct": sum(r < 0.95 * reference for r in rates),
        "dropped": sum(losses.values()), "lost_why": losses, "all_joined": all_joined,
        "join_seconds": round(join_seconds, 2), "listen_overflows": overflows,
        "first_byte_p50_ms": ms(percentile(first_byte, 0.5)), "first_byte_p99_ms": ms(percentile(first_byte, 0.99)),
        "first_media_p50_ms": ms(percentile(first_body, 0.5)), "first_media_p99_ms": ms(percentile(first_body, 0.99)),
        "first_media_samples_ms": [round(1000 * v, 1) for v in first_body],
    }


def holds(run: dict) -> bool:
    return run["below_95pct"] + run["dropped"] <= HOLDING * run["viewers"]


def measure_ours(viewers: int, seconds: float, window: int) -> dict:
    with running_service(channel_toml(viewers), max_lag=MAX_LAG) as svc:
        supervisor = psutil.Process(svc.proc.pid)

        def encoder() -> psutil.Process:
            return next(p for p in supervisor.children(recursive=True) if p.name().startswith("ffmpeg"))  # Debian's or the bundled one

        result = measure(svc.port, "/channels/bench.ts", svc.front, encoder, pipe_bytes_written,
                         viewers, seconds, window)
    result["server"] = "retrovue-air"
    return result


def measure_icecast(viewers: int, seconds: float, window: int) -> dict:
    queue = int(MAX_LAG * bytes_per_second())  # the lag our front tolerates, in bytes
    with icecast.running_icecast(channel_toml(viewers), clients=viewers + 100, queue_size=queue) as ic:
        result = measure(ic.port, icecast.MOUNT, ic.server, lambda: psutil.Process(ic.source.pid),
                         tcp_bytes_sent, viewers, seconds, window)
        result["listen_backlog"] = ic.backlog
        result["limits"] = ic.limits
    result["server"] = "icecast2"
    return result


def summarise(runs: list[dict]) -> dict:
    """One row per server and N: the median cost, the worst of the losses."""
    med = lambda k: (statistics.median(v) if (v := [r[k] for r in runs if r[k] is not None]) else None)  # noqa: E731
    return {
        "server": runs[0]["server"], "viewers": runs[0]["viewers"], "rounds": len(runs),
        "cpu_s_per_gb": med("cpu_s_per_gb"), "cpu_cores": med("cpu_cores"), "rss_mb": med("rss_mb"),
        "source_kbps": med("source_kbps"), "viewer_rate_median_kbps": med("viewer_rate_median_kbps"),
        "below_95pct": max(r["below_95pct"] for r in runs), "dropped": max(r["dropped"] for r in runs),
        "listen_overflows": max(r["listen_overflows"] for r in runs),
        "first_byte_p50_ms": med("first_byte_p50_ms"), "first_byte_p99_ms": med("first_byte_p99_ms"),
        "first_media_p50_ms": med("first_media_p50_ms"), "first_media_p99_ms": med("first_media_p99_ms"),
        "holds": all(holds(r) for r in runs),
    }


def run(viewer_counts: list[int], seconds: float = 10.0, rounds: int = 2, servers=("ours", "icecast"),
        window: int = 256, log=print) -> dict:
    runs: list[dict] = []
    summary: list[dict] = []
    errors: list[dict] = []
    icecast_gave_up_at = None
    for n in viewer_counts:
        by_server: dict[str, list[dict]] = {}
        for r in range(rounds):
            for server in servers:
                if server == "icecast" and icecast_gave_up_at is not None:
                    continue
                measure_one = measure_ours if server == "ours" else measure_icecast
                try:
                    result = measure_one(n, seconds, window)
                except (RuntimeError, OSError, StopIteration) as e:
                    # A server that cannot be started or measured at this N: say so, go on.
                    log(f"  {server} N={n} round {r} failed: {e!r}")
                    errors.append({"server": server, "viewers": n, "round": r, "error": repr(e)})
                    if server == "icecast":
                        icecast_gave_up_at = n
                    continue
                result["round"] = r
                runs.append(result)
                by_server.setdefault(server, []).append(result)
                log(f"  {result['server']:12} N={n:<6} round {r}: {result['cpu_s_per_gb']} CPU-s/GB, "
                    f"{result['rss_mb']} MB, {result['below_95pct']} below 95 %, {result['dropped']} dropped, "
                    f"first byte p99 {result['first_byte_p99_ms']} ms")
        for server, rs in by_server.items():
            row = summarise(rs)
            summary.append(row)
            if server == "icecast" and not row["holds"]:
                icecast_gave_up_at = n
    return {"channel_kbps": VIDEO_KBPS + AUDIO_KBPS, "seconds": seconds, "rounds": rounds,
            "connect_window": window, "icecast_stopped_holding_at": icecast_gave_up_at,
            "summary": summary, "runs": runs, "errors": errors}
