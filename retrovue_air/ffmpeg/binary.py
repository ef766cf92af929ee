"""Which ffmpeg the service runs, and what that binary can do."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess

import imageio_ffmpeg

# Found here, at import, while the supervisor may still be root: after it drops to a user
# that cannot read the interpreter's own library, imageio_ffmpeg could not look in a worker.
BUNDLED_FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg_binary(cold_burst: bool = False) -> str:
    """The ffmpeg on PATH, else the one imageio-ffmpeg ships.

    A cold-start burst needs -readrate_initial_burst, new in ffmpeg 6.1: Debian 12's is 5.1,
    so a channel with a burst takes imageio-ffmpeg's (9.0) unless PATH's is new enough."""
    found = shutil.which("ffmpeg")
    if found and (not cold_burst or ffmpeg_version(found) >= (6, 1)):
        return found
    return BUNDLED_FFMPEG


@functools.lru_cache(maxsize=None)
def ffmpeg_version(binary: str) -> tuple[int, int]:
    """(major, minor) from `ffmpeg -version` ("5.1.9-0+deb12u1", "n9.0.2-17-g…"); (0, 0) if unknown."""
    try:
        first = subprocess.run([binary, "-version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return (0, 0)
    m = re.search(r"version n?(\d+)\.(\d+)", first)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


@functools.lru_cache(maxsize=None)
def ffmpeg_options(binary: str) -> frozenset[str]:
    """The options `ffmpeg -h long` lists ("-re", "-readrate", ...); empty if it cannot say."""
    try:
        text = subprocess.run([binary, "-hide_banner", "-h", "long"], capture_output=True, text=True,
                              timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return frozenset()
    return frozenset(re.findall(r"^(-\w+)", text, re.M))
