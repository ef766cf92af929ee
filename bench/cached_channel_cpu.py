"""CPU of one channel's ffmpegs: the same 1080p programme transcoded live and remuxed from the
ingest cache, side by side in one run (issue 13's target: <= 0.02 of a core from the cache).

    .venv/bin/python -m bench.cached_channel_cpu [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from .service import ROOT, running_service

SOURCE_SECONDS = 60


def make_source(folder: Path, ffmpeg: str) -> Path:
    out = folder / "programme-1080p.mp4"
    subprocess.run([ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate=25:d={SOURCE_SECONDS}",
                    "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:d={SOURCE_SECONDS}",
                    "-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-c:a", "aac", "-shortest", str(out)],
                   check=True, timeout=600)
    return out


def channels_toml(state: Path, source: Path) -> str:
    channel = '[[channel]]\nid = "{id}"\nname = "{id}"\nsource = "files"\nfile = "{file}"\ningest = {ingest}\n'
    return (f'state_dir = "{state}"\n' + channel.format(id="live", file=source, ingest="false")
            + channel.format(id="cached", file=source, ingest="true"))


def watch(port: int, channel: str, stop: threading.Event) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(f"GET /channels/{channel}.ts HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        s.settimeout(1)
        while not stop.is_set():
            try:
                if not s.recv(1 << 16):
                    return
            except socket.timeout:
                pass


def ffmpeg_cpu(worker: psutil.Process) -> float:
    total = 0.0
    for p in worker.children(recursive=True):
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def worker_of(supervisor: psutil.Process, channel: str) -> psutil.Process:
    for p in supervisor.children():
        if f"air_worker {channel}" in " ".join(p.cmdline()):
            return p
    raise RuntimeError(f"no air worker for channel {channel}")


def run(seconds: float) -> dict:
    from retrovue_air.ffmpeg.binary import ffmpeg_binary

    with tempfile.TemporaryDirectory(prefix="retrovue-air-bench-") as d:
        folder = Path(d)
        source = make_source(folder, ffmpeg_binary())
        toml = channels_toml(folder / "state", source)
        config = folder / "ingest.toml"
        config.write_text(toml)
        began = time.monotonic()
        subprocess.run([sys.executable, "-m", "supervisor", "ingest", "--config", str(config)], cwd=ROOT,
                       check=True, timeout=1200, stderr=subprocess.DEVNULL)
        ingest_seconds = time.monotonic() - began
        with running_service(toml) as service:
            stop = threading.Event()
            readers = [threading.Thread(target=watch, args=(service.port, c, stop), daemon=True)
                       for c in ("live", "cached")]
            for r in readers:
                r.start()
            try:
                supervisor = psutil.Process(service.proc.pid)
                deadline = time.monotonic() + 20
                while True:
                    try:
                        workers = {c: worker_of(supervisor, c) for c in ("live", "cached")}
                        if all(w.children() for w in workers.values()):
                            break
                    except RuntimeError:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError("the channels did not start")
                    time.sleep(0.1)
                time.sleep(8)  # past the cold-start burst (join_burst_seconds), into real time
                before = {c: ffmpeg_cpu(w) for c, w in workers.items()}
                t0 = time.monotonic()
                time.sleep(seconds)
                elapsed = time.monotonic() - t0
                after = {c: ffmpeg_cpu(w) for c, w in workers.items()}
                commands = {c: [" ".join(p.cmdline()[:1] + p.cmdline()[-8:]) for p in w.children()]
                            for c, w in workers.items()}
            finally:
                stop.set()
                for r in readers:
                    r.join(timeout=5)
    cores = {c: (after[c] - before[c]) / elapsed for c in before}
    return {"seconds": round(elapsed, 2), "source": "1920x1080 25 fps H.264 + AAC",
            "channel_format": "640x360 25 fps, 1500 + 128 kb/s (defaults)",
            "ingest_seconds_for_60_s": round(ingest_seconds, 1),
            "cores_live": round(cores["live"], 4), "cores_cached": round(cores["cached"], 4),
            "ratio": round(cores["live"] / cores["cached"], 1) if cores["cached"] else None,
            "ffmpegs": commands}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args()
    print(json.dumps(run(args.seconds), indent=2))


if __name__ == "__main__":
    main()
