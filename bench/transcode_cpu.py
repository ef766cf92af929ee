"""What one channel transcoding live costs: the CPU of its decoder and encoder ffmpegs per
second of stream, for a DVD source and for a 1080p H.264 one, each alone on the box.

    .venv/bin/python -m bench.transcode_cpu [--seconds 20]

The decoders are reaped by the Air worker as airings end, so their CPU is read as the
worker's children's (psutil's children_user/children_system) plus that of the live ones.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psutil

from .cached_channel_cpu import watch, worker_of
from .service import running_service

SOURCE_SECONDS = 90  # longer than the window and the burst: one airing, one decoder


def make_dvd(folder: Path, ffmpeg: str) -> Path:
    """As a DVD rip is: MPEG-2 720x480 interlaced 29.97 at 5 Mbit/s, SAR 8:9, AC-3 5.1, a .vob."""
    out = folder / "dvd.vob"
    subprocess.run([ffmpeg, "-v", "error", "-y",
                    "-f", "lavfi", "-i", f"testsrc2=size=720x480:rate=60000/1001:d={SOURCE_SECONDS},"
                                         "tinterlace=mode=interleave_top,setsar=8/9",
                    "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:d={SOURCE_SECONDS}",
                    "-c:v", "mpeg2video", "-b:v", "5M", "-maxrate", "8M", "-bufsize", "1835k",
                    "-flags", "+ildct+ilme", "-top", "1", "-c:a", "ac3", "-b:a", "384k", "-ac", "6",
                    "-f", "vob", str(out)], check=True, timeout=900)
    return out


def make_hd(folder: Path, ffmpeg: str) -> Path:
    """1080p25 H.264 High at 8 Mbit/s with B-frames and CABAC, AAC stereo: as a broadcast or web rip is."""
    out = folder / "hd.mp4"
    subprocess.run([ffmpeg, "-v", "error", "-y",
                    "-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate=25:d={SOURCE_SECONDS}",
                    "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:d={SOURCE_SECONDS}",
                    "-c:v", "libx264", "-preset", "veryfast", "-b:v", "8M", "-g", "50",
                    "-c:a", "aac", "-shortest", str(out)], check=True, timeout=1800)
    return out


def ffmpeg_seconds(worker: psutil.Process) -> tuple[float, float, list[str]]:
    """CPU-s of all the worker's ffmpegs so far (reaped ones included), of which its encoder's
    (the one that outlives the airings), and the commands running."""
    t = worker.cpu_times()
    total, encoder, commands = t.children_user + t.children_system, 0.0, []
    for p in worker.children():
        try:
            c = p.cpu_times()
            cmdline = p.cmdline()
        except psutil.NoSuchProcess:
            continue
        total += c.user + c.system
        if "pipe:1" in cmdline:  # the encoder writes the stream; a decoder writes raw pipes
            encoder += c.user + c.system
        commands.append(" ".join(cmdline))
    return total, encoder, commands


def measure(state: Path, source: Path, seconds: float) -> dict:
    toml = (f'state_dir = "{state}"\n[[channel]]\nid = "live"\nname = "live"\nsource = "files"\n'
            f'file = "{source}"\n')
    with running_service(toml) as service:
        stop = threading.Event()
        reader = threading.Thread(target=watch, args=(service.port, "live", stop), daemon=True)
        reader.start()
        try:
            supervisor = psutil.Process(service.proc.pid)
            deadline = time.monotonic() + 30
            while True:
                try:
                    worker = worker_of(supervisor, "live")
                    if len(worker.children()) >= 2:
                        break
                except RuntimeError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("the channel did not start")
                time.sleep(0.1)
            time.sleep(10)  # past the cold-start burst (join_burst_seconds), into real time
            total0, encoder0, _ = ffmpeg_seconds(worker)
            t0 = time.monotonic()
            time.sleep(seconds)
            total1, encoder1, commands = ffmpeg_seconds(worker)
            elapsed = time.monotonic() - t0
        finally:
            stop.set()
            reader.join(timeout=5)
    encoder = (encoder1 - encoder0) / elapsed
    total = (total1 - total0) / elapsed
    return {"cores": round(total, 3), "decoder_cores": round(total - encoder, 3),
            "encoder_cores": round(encoder, 3), "seconds": round(elapsed, 1), "ffmpegs": commands}


def run(seconds: float) -> dict:
    from retrovue_air.ffmpeg.binary import ffmpeg_binary

    with tempfile.TemporaryDirectory(prefix="retrovue-air-bench-") as d:
        folder = Path(d)
        sources = {"dvd": (make_dvd(folder, ffmpeg_binary()),
                           "DVD: MPEG-2 720x480i 29.97 5 Mbit/s, SAR 8:9, AC-3 5.1 (deinterlaced, pillarboxed)"),
                   "hd": (make_hd(folder, ffmpeg_binary()), "1080p25 H.264 High 8 Mbit/s, AAC stereo")}
        # One at a time: two on the same cores would share them and each look cheaper or dearer.
        results = {name: {"source": what, **measure(folder / f"state-{name}", path, seconds)}
                   for name, (path, what) in sources.items()}
    return {"channel_format": "640x360 25 fps, 1500 + 128 kb/s (defaults)", "cores_per_channel": results}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20.0)
    args = p.parse_args()
    print(json.dumps(run(args.seconds), indent=2))


if __name__ == "__main__":
    main()
