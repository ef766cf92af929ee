"""`retrovue-air --check-config` on a large library: 1,000 and 10,000 file entries, probes cached.

Validation is what a SIGHUP does too (in a config loader child), so its time is how long a
reload takes to come into effect; the target is 10,000 files in under 2 s.

    .venv/bin/python -m bench --only config
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from .service import ROOT

FILES_PER_CHANNEL = 1000
BLOCK_FILES = 2  # of each channel's entries, these are in a daily block


def make_media(folder: Path) -> Path:
    from retrovue_air.ffmpeg.binary import ffmpeg_binary

    out = folder / "programme.mp4"
    subprocess.run([ffmpeg_binary(), "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=blue:s=160x90:r=25:d=2",
                    "-f", "lavfi", "-i", "sine=d=2", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac",
                    "-shortest", str(out)], check=True, timeout=120)
    return out


def library_config(folder: Path, media: Path, files: int) -> Path:
    """A config of `files` entries (hard links of `media`, each its own path), in channels of
    FILES_PER_CHANNEL with a daily block each, one entry in ten with metadata; and the
    media-info cache filled as a previous run would have left it, so that nothing is probed."""
    from retrovue_air import media_info

    library, state = folder / "library", folder / "state"
    library.mkdir(exist_ok=True)
    state.mkdir(exist_ok=True)
    info = asdict(media_info.probe(str(media)))
    st = os.stat(media)
    cache, lines = {}, [f'state_dir = "{state}"', ""]
    channels = max(1, -(-files // FILES_PER_CHANNEL))
    number = 0
    for c in range(channels):
        count = min(FILES_PER_CHANNEL, files - number)
        entries = []
        for _ in range(count):
            path = library / f"episode-{number:05d}.mp4"
            if not path.exists():
                os.link(media, path)
            cache[str(path)] = {"key": [st.st_size, st.st_mtime_ns], "version": media_info.PROBE_VERSION, "info": info}
            entries.append(f'  {{ path = "{path}", title = "Episode {number}", episode = {number % 100 + 1} }},'
                           if number % 10 == 0 else f'  "{path}",')
            number += 1
        blocked = entries[-BLOCK_FILES:] if count > BLOCK_FILES else []
        lines += ["[[channel]]", f'id = "library-{c}"', f'name = "Library {c}"', 'source = "files"',
                  "files = [", *entries[: len(entries) - len(blocked)], "]"]
        if blocked:
            lines += ["", "[[channel.block]]", 'start = "20:00"', "files = [", *blocked, "]"]
        lines.append("")
    (state / media_info.CACHE_FILE).write_text(json.dumps(cache))
    path = folder / f"library-{files}.toml"
    path.write_text("\n".join(lines))
    return path


def check_config(path: Path) -> float:
    """Seconds `python -m supervisor --check-config` takes on path (a process of its own, as run by hand)."""
    began = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "supervisor", "--check-config", str(path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    took = time.monotonic() - began
    if result.returncode != 0:
        raise RuntimeError(f"--check-config {path} failed: {result.stderr.strip()[-500:]}")
    return took


def startup_seconds() -> float:
    """The command with nothing to check (--print-default-config): the interpreter and imports."""
    began = time.monotonic()
    subprocess.run([sys.executable, "-m", "supervisor", "--print-default-config"], cwd=ROOT,
                   capture_output=True, check=True, timeout=60)
    return time.monotonic() - began


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def run(sizes: tuple[int, ...] = (1000, 10000), rounds: int = 3) -> dict:
    with tempfile.TemporaryDirectory(prefix="retrovue-air-bench-config-") as d:
        folder = Path(d)
        media = make_media(folder)
        rows = []
        for files in sizes:
            path = library_config(folder, media, files)
            times = [check_config(path) for _ in range(rounds)]
            rows.append({"files": files, "channels": max(1, -(-files // FILES_PER_CHANNEL)),
                         "check_config_s_median": round(median(times), 3),
                         "check_config_s_max": round(max(times), 3)})
        startup = median([startup_seconds() for _ in range(rounds)])
        return {"rounds": rounds, "startup_s": round(startup, 3), "summary": rows}


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
