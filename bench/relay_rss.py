"""The memory of a front relaying an origin faster than real time, and the rate its viewers get.

The origin is a .ts file looped as fast as the socket takes it (bench/fast_origin.py), as a
static file on a web server would be; `channels` relay channels pull it, one viewer each
reading as fast as it can. Sampled every 0.1 s: the front's RSS, and what the viewers got in
seconds of stream (the file's size over its length).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from .fast_origin import SECONDS, FastOrigin, make_looped_ts
from .readers import Readers
from .service import running_service

VIDEO_KBPS, AUDIO_KBPS = 1900, 128
MB = 1024 * 1024


def edge_config(url: str, channels: int) -> str:
    return "".join(f'\n[[channel]]\nid = "{i}"\nname = "Fast relay {i}"\nsource = "relay"\nurl = "{url}"\n'
                   f"video_kbps = {VIDEO_KBPS}\naudio_kbps = {AUDIO_KBPS}\n" for i in range(1, channels + 1))


def run(seconds: float = 10.0, channels: int = 4) -> dict:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return {"error": "ffmpeg is not installed"}
    with tempfile.TemporaryDirectory() as d:
        ts = make_looped_ts(ffmpeg, Path(d) / "loop.ts", VIDEO_KBPS, AUDIO_KBPS).read_bytes()
    stream_rate = len(ts) / SECONDS
    samples = []
    with FastOrigin(ts) as origin, running_service(edge_config(origin.url(), channels)) as edge:
        rss_idle = edge.front.memory_info().rss
        readers = [Readers("127.0.0.1", edge.port, f"/channels/{i}.ts", 1) for i in range(1, channels + 1)]
        try:
            started = time.monotonic()
            while (now := time.monotonic()) - started < seconds:
                for r in readers:
                    r.run_for(0.1 / channels)
                samples.append((now - started, [r.total() for r in readers], edge.front.memory_info().rss))
        finally:
            for r in readers:
                r.close()
        dropped = sum(r.closed for r in readers)
    # After the first 3 s (the origin's joiner burst passes at once), each viewer's rate in
    # seconds of stream a second: 1.0 is real time.
    t1, got1, _ = next(s for s in samples if s[0] >= 3.0)
    t2, got2, _ = samples[-1]
    rates = [(b - a) / stream_rate / (t2 - t1) for a, b in zip(got1, got2)]
    return {"channels": channels, "channel_kbps": VIDEO_KBPS + AUDIO_KBPS, "seconds": seconds,
            "origin": f"a {SECONDS:g} s .ts looped as fast as loopback takes it",
            "front_rss_idle_mb": round(rss_idle / MB, 1),
            "front_rss_peak_mb": round(max(s[2] for s in samples) / MB, 1),
            "front_rss_end_mb": round(samples[-1][2] / MB, 1),
            "viewer_stream_seconds": [round(g / stream_rate, 1) for g in got2],
            "viewer_real_time_after_3s": [round(r, 2) for r in rates],
            "viewers_dropped": dropped}
