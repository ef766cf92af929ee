"""What the schedule needs to know about a media file, from ffprobe, probed once per file.

The answers are kept in a JSON file in the state directory, keyed by path, size and
mtime, so a restart (or a reload, or the front re-reading the config) does not probe
again, and a file that changed on disk is probed anew.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass

log = logging.getLogger("retrovue_air.media_info")

CACHE_FILE = "media-info.json"
PROBE_TIMEOUT_SECONDS = 30


class ProbeError(Exception):
    """A file ffprobe cannot read, or one without a duration or any stream we can use."""


@dataclass(frozen=True)
class MediaInfo:
    duration: float
    has_audio: bool
    title: str | None = None
    episode: int | None = None
    season: int | None = None
    start_time: float = 0.0  # the first timestamp (MPEG-TS files rarely start at 0)
    has_video: bool = True


def ffprobe_binary() -> str:
    found = shutil.which("ffprobe")
    if not found:
        raise ProbeError("ffprobe is not installed (Debian: apt-get install ffmpeg)")
    return found


def _number(tags: dict[str, str], *names: str) -> int | None:
    for name in names:
        value = tags.get(name, "").split("/")[0].strip()  # "3/12" track style
        if value.isdigit():
            return int(value)
    return None


def parse_probe(output: str) -> MediaInfo:
    """ffprobe's JSON (format and streams) as MediaInfo; ProbeError if it is no use to us."""
    try:
        doc = json.loads(output)
    except ValueError:
        raise ProbeError("ffprobe gave no readable answer") from None
    streams = doc.get("streams", [])
    fmt = doc.get("format", {})
    kinds = {s.get("codec_type") for s in streams}
    if not kinds & {"video", "audio"}:
        raise ProbeError("neither video nor audio")
    durations = [fmt.get("duration"), *(s.get("duration") for s in streams)]
    duration = next((float(d) for d in durations if d not in (None, "N/A") and float(d) > 0), None)
    if duration is None:
        raise ProbeError("no duration")
    # Tag names differ by container (mp4: episode_sort, season_number; mkv: EPISODE...).
    tags = {k.lower(): str(v) for k, v in fmt.get("tags", {}).items()}
    start = fmt.get("start_time")
    return MediaInfo(duration=duration, has_audio="audio" in kinds, has_video="video" in kinds,
                     title=tags.get("title") or None,
                     start_time=float(start) if start not in (None, "N/A") else 0.0,
                     episode=_number(tags, "episode_sort", "episode", "episode_id"),
                     season=_number(tags, "season_number", "season"))


def probe(path: str) -> MediaInfo:
    try:
        result = subprocess.run(
            [ffprobe_binary(), "-v", "error", "-show_entries",
             "format=duration,start_time:format_tags:stream=codec_type,duration", "-of", "json", path], capture_output=True, text=True, timeout=PROBE_TIMEOUT_SECONDS,
            stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ProbeError(f"ffprobe took longer than {PROBE_TIMEOUT_SECONDS} s") from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no error output"])[-1]
        raise ProbeError(f"ffprobe cannot read it: {last}")
    return parse_probe(result.stdout)


def keyframe_at_or_before(path: str, t: float) -> float | None:
    """The time (in the file's own timestamps) of the last video keyframe at or before t, or None.

    A remux can only start on a keyframe, and the concat demuxer's seek in an MPEG-TS can land on
    the keyframe *after* its inpoint: starting exactly on one found here, it lands there."""
    try:
        out = subprocess.run(
            [ffprobe_binary(), "-v", "error", "-select_streams", "v:0", "-skip_frame", "nokey",
             "-read_intervals", f"{max(0.0, t - 12):.3f}%{t + 0.001:.3f}",
             "-show_entries", "frame=pts_time", "-of", "csv=p=0", path],
            capture_output=True, text=True, timeout=PROBE_TIMEOUT_SECONDS, stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.SubprocessError, ProbeError):
        return None
    times = []
    for line in out.split():
        try:
            times.append(float(line.split(",")[0]))
        except ValueError:
            continue
    before = [x for x in times if x <= t + 0.001]
    return max(before) if before else None


class MediaInfoCache:
    """Probe results by (path, size, mtime), loaded from and saved to one JSON file."""

    def __init__(self, state_dir: str | None):
        self.file = os.path.join(state_dir, CACHE_FILE) if state_dir else None
        self.entries: dict[str, dict] = {}
        self.changed = False
        if self.file:
            try:
                with open(self.file) as f:
                    loaded = json.load(f)
                if isinstance(loaded, dict):
                    self.entries = loaded
            except FileNotFoundError:
                pass
            except (OSError, ValueError) as e:
                log.warning("ignoring the media info cache %s: %s", self.file, e)

    def info(self, path: str) -> MediaInfo:
        st = os.stat(path)
        key = [st.st_size, st.st_mtime_ns]
        entry = self.entries.get(path)
        if entry and entry.get("key") == key:
            try:
                return MediaInfo(**entry["info"])
            except TypeError:
                pass  # written by another version: probe again
        info = probe(path)
        self.entries[path] = {"key": key, "info": asdict(info)}
        self.changed = True
        return info

    def save(self) -> None:
        """Write the cache if it changed; a state directory we cannot write only costs probes."""
        if not (self.file and self.changed):
            return
        try:
            os.makedirs(os.path.dirname(self.file), exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(self.file), prefix=".media-info-")
            with os.fdopen(fd, "w") as f:
                json.dump(self.entries, f)
            os.replace(tmp, self.file)
            self.changed = False
        except OSError as e:
            log.warning("cannot save the media info cache %s: %s", self.file, e)
