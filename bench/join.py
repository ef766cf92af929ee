"""Join latency: connect until ffmpeg has decoded the first video frame.

Warm joins (a running channel) in both join modes, and cold starts (the first viewer
of an idle channel) for comparison. The client is a real decoder, ffmpeg with its
default probing, started fresh for each join, as a player would be.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
import socket
import statistics
import subprocess
import time

from .service import running_service

CHANNELS = """
[[channel]]
id = "keyframe"
name = "Keyframe join"
source = "test-pattern"

[[channel]]
id = "live"
name = "Live-edge join"
source = "test-pattern"
join = "live"

[[channel]]
id = "cold"
name = "Cold start"
source = "test-pattern"
"""


def first_frame_seconds(ffmpeg: str, url: str) -> float:
    started = time.monotonic()
    # Minimal probing: with ffmpeg's default 5 s analysis every join would take 5 s,
    # whatever the server does. What is left is the wait for a decodable frame.
    subprocess.run([ffmpeg, "-v", "error", "-probesize", "32768", "-analyzeduration", "0", "-i", url,
                    "-frames:v", "1", "-f", "null", "-"],
                   check=True, capture_output=True, timeout=60)
    return time.monotonic() - started


def channel_state(port: int, channel: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/channels", timeout=5) as r:
        return {c["id"]: c["state"] for c in json.load(r)}[channel]


def teardown_from_metrics(port: int, channel: str) -> dict:
    """Last viewer gone until the worker was reaped, as the front's own histogram saw it."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.labels.get("channel") == channel and s.name.startswith("retrovue_air_teardown_seconds")
               and "le" not in s.labels}
    count = samples.get("retrovue_air_teardown_seconds_count", 0)
    mean = samples.get("retrovue_air_teardown_seconds_sum", 0) / count if count else None
    return {"n": int(count), "mean_ms": round(1000 * mean) if mean is not None else None}


def percentiles(samples: list[float]) -> dict:
    s = sorted(samples)
    return {"n": len(s), "p50_ms": round(1000 * statistics.median(s)),
            "p99_ms": round(1000 * s[min(len(s) - 1, int(0.99 * len(s)))]), "max_ms": round(1000 * s[-1])}


def distribution(samples: list[float]) -> dict:
    """Percentiles, and the samples themselves for the plots."""
    return {**percentiles(samples), "samples_ms": [round(1000 * v, 1) for v in samples]}


def keep_watching(port: int, channel: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"GET /channels/{channel}.ts HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    s.recv(65536)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    return s


def run(joins: int = 50, colds: int = 10) -> dict:
    ffmpeg = shutil.which("ffmpeg")
    out = {}
    with running_service(CHANNELS, max_lag=600) as svc:
        base = f"http://127.0.0.1:{svc.port}/channels"
        cold = []
        for _ in range(colds):
            cold.append(first_frame_seconds(ffmpeg, f"{base}/cold.ts"))
            deadline = time.monotonic() + 10
            while channel_state(svc.port, "cold") != "idle" and time.monotonic() < deadline:
                time.sleep(0.05)
        out["cold_start"] = distribution(cold)
        out["teardown_after_last_viewer"] = teardown_from_metrics(svc.port, "cold")
        # Keepers hold the warm channels up; their socket buffers absorb the stream
        # and they are never read (max_lag 600 s keeps them connected for the run).
        keepers = [keep_watching(svc.port, "keyframe"), keep_watching(svc.port, "live")]
        try:
            time.sleep(2)  # a GOP or two in the buffer before the first warm join
            for mode in ("keyframe", "live"):
                out[f"warm_join_{mode}"] = distribution(
                    [first_frame_seconds(ffmpeg, f"{base}/{mode}.ts") for _ in range(joins)])
        finally:
            for k in keepers:
                k.close()
    return out
