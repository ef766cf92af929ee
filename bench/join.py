"""Tune-in latency for the clients people run, warm (a live channel) and cold (an idle one).

Each join is a fresh client process, as a media server or a player starts one:
  ffprobe URL                      (defaults) until it has printed the streams
  ffmpeg -i URL -frames:v 1        (defaults) until the frame is written
  ffmpeg -analyzeduration 0 -probesize 32768 ... until the first decoded frame
  mpv --vo=null --frames=1         until it has displayed the first frame
  cvlc (as nobody)                 until its log says "Received first picture"
Plus the front's own teardown figure after the cold starts.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
import signal
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


def run_until_exit(cmd: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(cmd, check=True, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    return time.monotonic() - started


def vlc_first_picture(url: str) -> float:
    """cvlc as nobody (VLC refuses root) until its decoder reports the first picture."""
    started = time.monotonic()
    proc = subprocess.Popen(["runuser", "-u", "nobody", "--", "cvlc", "-vv", "--vout", "dummy", "--aout", "dummy",
                             "--no-audio", url], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, start_new_session=True, text=True, errors="replace")
    try:
        for line in proc.stderr:
            if "Received first picture" in line:
                return time.monotonic() - started
            if time.monotonic() - started > 60:
                break
        raise RuntimeError("VLC showed no picture")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()


def clients() -> dict:
    """Each client as a function of the URL, for those installed."""
    ffmpeg, ffprobe, mpv = shutil.which("ffmpeg"), shutil.which("ffprobe"), shutil.which("mpv")
    found = {}
    if ffprobe:
        found["ffprobe (defaults)"] = lambda url: run_until_exit([ffprobe, "-v", "error", "-show_streams", url])
    if ffmpeg:
        found["ffmpeg -frames:v 1 (defaults)"] = lambda url: run_until_exit(
            [ffmpeg, "-v", "error", "-i", url, "-frames:v", "1", "-f", "null", "-"])
        found["ffmpeg -analyzeduration 0 -probesize 32768"] = lambda url: run_until_exit(
            [ffmpeg, "-v", "error", "-probesize", "32768", "-analyzeduration", "0", "-i", url,
             "-frames:v", "1", "-f", "null", "-"])
    if mpv:
        found["mpv, first frame shown"] = lambda url: run_until_exit(
            [mpv, "--no-config", "--vo=null", "--ao=null", "--frames=1", "--really-quiet", url])
    if shutil.which("cvlc") and os.geteuid() == 0:
        found["vlc (as nobody), first picture"] = vlc_first_picture
    return found


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


def wait_idle(port: int, channel: str) -> None:
    deadline = time.monotonic() + 10
    while channel_state(port, channel) != "idle" and time.monotonic() < deadline:
        time.sleep(0.05)


def run(joins: int = 30, colds: int = 30) -> dict:
    out: dict = {"burst_behind_live_edge_s": 6.0}  # the default join_burst_seconds: what a joiner lags
    with running_service(CHANNELS, max_lag=600) as svc:
        base = f"http://127.0.0.1:{svc.port}/channels"
        # Keepers hold the warm channels up; their socket buffers absorb the stream
        # and they are never read (max_lag 600 s keeps them connected for the run).
        keepers = [keep_watching(svc.port, "keyframe"), keep_watching(svc.port, "live")]
        try:
            time.sleep(8)  # a burst's worth (6 s) and a GOP in the buffer before the first warm join
            for name, client in clients().items():
                cold = []
                for _ in range(colds):
                    cold.append(client(f"{base}/cold.ts"))
                    wait_idle(svc.port, "cold")
                out[f"{name}: cold"] = distribution(cold)
                out[f"{name}: warm"] = distribution([client(f"{base}/keyframe.ts") for _ in range(joins)])
                print(f"  {name}: warm p50 {out[f'{name}: warm']['p50_ms']} ms, "
                      f"cold p50 {out[f'{name}: cold']['p50_ms']} ms", flush=True)
            ffmpeg = shutil.which("ffmpeg")
            out["warm_join_live (ffmpeg -analyzeduration 0)"] = distribution(
                [clients()["ffmpeg -analyzeduration 0 -probesize 32768"](f"{base}/live.ts")
                 for _ in range(joins)]) if ffmpeg else None
        finally:
            for k in keepers:
                k.close()
        out["teardown_after_last_viewer"] = teardown_from_metrics(svc.port, "cold")
    return out
