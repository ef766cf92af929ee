"""Many channels on one instance, every one playing from the ingest cache (issue 13).

First a cold-start storm: `storm` idle channels tuned in at the same moment, one viewer each
(first byte p50/p99, refusals). Then every channel with `viewers` viewers each, all read by one
load client: after the cold-start burst, each viewer's rate over a steady window against the
median of its channel's viewers (at rate: at least 90 % of it), losses, and the CPU of the channels' ffmpegs and the front.

    .venv/bin/python -m bench.many_channels [--channels 100] [--viewers 10] [--storm 50] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from .load_client import LoadClient
from .readers import raise_fd_limit
from .service import ROOT, running_service

SOURCE_SECONDS = 20


class ManyChannelsClient(LoadClient):
    """The load client with one path per viewer (the shared one asks every viewer for the same)."""

    def __init__(self, port: int, paths: list[str], window: int):
        super().__init__("127.0.0.1", port, paths[0], len(paths), window)
        self.requests = [f"GET {p} HTTP/1.1\r\nHost: bench\r\nUser-Agent: retrovue-air-bench\r\n\r\n".encode()
                         for p in paths]
        self.index: dict[int, int] = {}

    def _connect_more(self, now: float) -> None:
        before = len(self.viewers)
        super()._connect_more(now)
        for i in range(before, len(self.viewers)):
            self.index[id(self.viewers[i])] = i

    def _connected(self, v) -> None:
        self.request = self.requests[self.index[id(v)]]
        super()._connected(v)


def make_sources(folder: Path, ffmpeg: str) -> list[Path]:
    out = []
    for name, pattern in (("bars", "smptebars"), ("test", "testsrc2")):
        path = folder / f"{name}.mp4"
        subprocess.run([ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", f"{pattern}=size=640x360:rate=25:d={SOURCE_SECONDS}",
                        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:d={SOURCE_SECONDS}",
                        "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-shortest", str(path)],
                       check=True, timeout=300)
        out.append(path)
    return out


def config_toml(state: Path, sources: list[Path], channels: int, viewers: int) -> str:
    files = ", ".join(f'"{s}"' for s in sources)
    top = (f'state_dir = "{state}"\ningest = true\nmax_active_channels = {channels}\n'
           f"max_connections = {channels * viewers + 1024}\nmax_connections_per_address = {channels * viewers + 1024}\n")
    return top + "".join(f'\n[[channel]]\nid = "c{i}"\nname = "C{i}"\nsource = "files"\nfiles = [{files}]\n'
                         for i in range(channels))


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cpu_by_role(supervisor: psutil.Process) -> dict[str, float]:
    out = {"ffmpeg": 0.0, "front": 0.0, "workers": 0.0}
    for p in supervisor.children(recursive=True):
        try:
            line = " ".join(p.cmdline())
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        role = "ffmpeg" if "ffmpeg" in line else "front" if "http_front" in line else "workers"
        out[role] += t.user + t.system
    return out


def pump(load: LoadClient, cold: LoadClient, seconds: float) -> None:
    """Both clients' viewers read, for `seconds` (each client has its own selectors loop)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        load.run_for(min(0.1, max(0.0, end - time.monotonic())))
        cold.run_for(0.001)


def run(channels: int, viewers: int, storm: int, seconds: float) -> dict:
    from retrovue_air.ffmpeg.binary import ffmpeg_binary

    raise_fd_limit()
    with tempfile.TemporaryDirectory(prefix="retrovue-air-bench-") as d:
        folder = Path(d)
        sources = make_sources(folder, ffmpeg_binary())
        toml = config_toml(folder / "state", sources, channels, viewers)
        (folder / "many.toml").write_text(toml)
        subprocess.run([sys.executable, "-m", "supervisor", "ingest", "--config", str(folder / "many.toml")],
                       cwd=ROOT, check=True, timeout=600, stderr=subprocess.DEVNULL)
        with running_service(toml) as service:
            supervisor = psutil.Process(service.proc.pid)
            # The storm: idle channels, one viewer each, all at the same moment.
            cold = ManyChannelsClient(service.port, [f"/channels/c{i}.ts" for i in range(storm)], window=storm)
            cold.run_until_joined(60)
            first = [v.first_body_byte for v in cold.viewers if v.first_body_byte is not None]
            storm_result = {"channels": storm, "first_byte_p50": percentile(first, 0.5),
                            "first_byte_p99": percentile(first, 0.99), "streaming": cold.streaming(),
                            "lost": cold.losses()}
            # Then every channel, `viewers` viewers each.
            paths = [f"/channels/c{i}.ts" for i in range(channels) for _ in range(viewers - (i < storm))]
            load = ManyChannelsClient(service.port, paths, window=256)
            try:
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline and not (len(load.viewers) == load.count and load.joining == 0):
                    pump(load, cold, 0.1)
                pump(load, cold, 8)  # past every channel's cold-start burst
                ffmpegs = [p for p in supervisor.children(recursive=True) if "ffmpeg" in " ".join(p.cmdline())]
                remuxing = sum("copy" in p.cmdline() for p in ffmpegs)
                before = cpu_by_role(supervisor)
                bytes_before = load.body_bytes() + cold.body_bytes()
                t0 = time.monotonic()
                pump(load, cold, seconds)
                elapsed = time.monotonic() - t0
                after = cpu_by_role(supervisor)
                rates = [(b - a) / elapsed for a, b in zip(bytes_before, load.body_bytes() + cold.body_bytes())]
                median = statistics.median(rates)
                # The programmes' bitrates vary (bars compress to little, a test pattern less), and
                # channels started at different moments: a viewer is at rate when it gets what the
                # other viewers of its channel get.
                channel_of = paths + [f"/channels/c{i}.ts" for i in range(storm)]
                by_channel: dict[str, list[float]] = {}
                for path, rate in zip(channel_of, rates):
                    by_channel.setdefault(path, []).append(rate)
                below = sum(rate < 0.9 * statistics.median(by_channel[path]) for path, rate in zip(channel_of, rates))
                result = {
                    "channels": channels, "viewers_per_channel": viewers, "window_seconds": round(elapsed, 2),
                    "ffmpegs": len(ffmpegs), "remuxing_from_cache": remuxing,
                    "viewers": len(rates), "streaming": load.streaming() + cold.streaming(),
                    "lost": {**load.losses(), **cold.losses()},
                    "median_bytes_per_second": round(median),
                    "below_90_percent_of_their_channels_median": below,
                    "cores": {k: round((after[k] - before[k]) / elapsed, 3) for k in after},
                    "ffmpeg_cores_per_channel": round((after["ffmpeg"] - before["ffmpeg"]) / elapsed / channels, 4),
                    "storm": storm_result,
                }
            finally:
                load.close()
                cold.close()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--channels", type=int, default=100)
    p.add_argument("--viewers", type=int, default=10)
    p.add_argument("--storm", type=int, default=50)
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args()
    print(json.dumps(run(args.channels, args.viewers, min(args.storm, args.channels), args.seconds), indent=2))


if __name__ == "__main__":
    main()
