"""The guide's cost: /xmltv.xml of 50 channels for 336 guide hours, and what a viewer notices.

49 media channels, each looping three files of 19 to 25 minutes, and one test pattern, which
a viewer watches. Six clients ask for the guide at once (it is made once, for all six), then
one more (it is kept): how long each took, how large it is, and the viewer's longest wait
between two reads of its stream meanwhile, and the front's CPU time for the six.

    .venv/bin/python -m bench.guide
"""

from __future__ import annotations

import json
import selectors
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .service import running_service

CHANNELS = 50
GUIDE_HOURS = 336
CONCURRENT = 6
MINUTES = (19, 22, 25)


def make_media(folder: Path, ffmpeg: str = "ffmpeg") -> list[Path]:
    """Tiny pictures, real lengths: the guide reads only what ffprobe says of them."""
    out = []
    for minutes in MINUTES:
        path = folder / f"{minutes}min.mp4"
        subprocess.run([ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", f"color=c=gray:s=16x16:r=1:d={minutes * 60}",
                        "-c:v", "libx264", "-preset", "ultrafast", str(path)], check=True, timeout=120)
        out.append(path)
    return out


def config_toml(state: Path, media: list[Path]) -> str:
    text = f'state_dir = "{state}"\nguide_hours = {GUIDE_HOURS}\n'
    text += '\n[[channel]]\nid = "watched"\nname = "Watched"\nsource = "test-pattern"\nwidth = 160\nheight = 90\n'
    for i in range(CHANNELS - 1):
        files = ", ".join(f'{{ path = "{p}", title = "Show {i}-{n}", season = {1 + i % 9}, episode = {n + 1}, '
                          f'category = "Drama" }}' for n, p in enumerate(media))
        text += f'\n[[channel]]\nid = "c{i}"\nname = "Channel {i}"\nsource = "files"\nfiles = [{files}]\n'
    return text


def get_guides(port: int, count: int, viewer: socket.socket | None) -> dict:
    """count guide requests at once, read to the end beside the viewer's stream."""
    sel = selectors.DefaultSelector()
    got: dict[socket.socket, bytearray] = {}
    finished: dict[socket.socket, float] = {}
    started = time.monotonic()
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /xmltv.xml HTTP/1.1\r\nHost: bench\r\n\r\n")
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        got[s] = bytearray()
    if viewer is not None:
        sel.register(viewer, selectors.EVENT_READ)
    last, longest = time.monotonic(), 0.0
    while len(finished) < count:
        for key, _ in sel.select(30):
            s = key.fileobj
            data = s.recv(1 << 20)
            now = time.monotonic()
            if s is viewer:
                longest, last = max(longest, now - last), now
            elif data:
                got[s] += data
            else:
                finished[s] = now - started
                sel.unregister(s)
    if viewer is not None:
        sel.unregister(viewer)
    sel.close()
    bodies = [bytes(b).partition(b"\r\n\r\n")[2] for b in got.values()]
    for s in got:
        s.close()
    return {"seconds": sorted(finished.values()), "bytes": len(bodies[0]),
            "programmes": bodies[0].count(b"<programme "), "identical": len(set(bodies)) == 1,
            "viewer_longest_pause_s": round(longest, 3)}


def run() -> dict:
    with tempfile.TemporaryDirectory() as d:
        media = make_media(Path(d))
        with running_service(config_toml(Path(d) / "state", media)) as service:
            viewer = socket.create_connection(("127.0.0.1", service.port))
            viewer.sendall(b"GET /channels/watched.ts HTTP/1.1\r\nHost: bench\r\n\r\n")
            viewer.settimeout(20)
            warmed = 0
            while warmed < 200_000:
                warmed += len(viewer.recv(65536))
            viewer.setblocking(False)
            cpu = service.front.cpu_times()
            first = get_guides(service.port, CONCURRENT, viewer)
            after = service.front.cpu_times()
            kept = get_guides(service.port, 1, viewer)
            rss_mb = service.front.memory_info().rss / 1e6
            viewer.close()
    return {"channels": CHANNELS, "guide_hours": GUIDE_HOURS, "programmes": first["programmes"],
            "mb": round(first["bytes"] / 1e6, 1), "identical": first["identical"],
            "concurrent_requests": CONCURRENT,
            "made_for_all_s": round(first["seconds"][-1], 2), "first_answered_s": round(first["seconds"][0], 2),
            "front_cpu_s": round(after.user + after.system - cpu.user - cpu.system, 2),
            "kept_s": round(kept["seconds"][0], 3),
            "viewer_longest_pause_s": max(first["viewer_longest_pause_s"], kept["viewer_longest_pause_s"]),
            "front_rss_mb": round(rss_mb)}


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
