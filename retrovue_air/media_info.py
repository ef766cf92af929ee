"""What the schedule needs to know about a media file, from ffprobe, probed once per file.

The answers are kept in a JSON file in the state directory, keyed by path, size and
mtime, so a restart (or a reload, or the front re-reading the config) does not probe
again, and a file that changed on disk is probed anew.

What a file says about itself is data, never trusted: its header's duration is believed
only if the file's size can hold it (else its packets are read to measure it), numbers in
its tags are ASCII digits or nothing, and a cached answer is checked like a fresh one.
Each cache entry says which PROBE_VERSION wrote it: one probed for fewer facts than we now
keep is probed again.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import subprocess
import tempfile
import unicodedata
from dataclasses import asdict, dataclass, replace
from fractions import Fraction

from retrovue_air import child_process

log = logging.getLogger("retrovue_air.media_info")

CACHE_FILE = "media-info.json"
PROBE_TIMEOUT_SECONDS = 30
# 800 bit/s: less than any audio or video stream with its container's framing carries (a
# still picture held for an hour is still 25 tiny frames a second). A file smaller than its
# duration at this rate is lying about its duration.
MIN_BYTES_PER_SECOND = 100
# Packets further apart than this are a jump in the file's clock, not a programme's length.
MAX_PACKET_GAP_SECONDS = 60
MAX_PROGRAMME_SECONDS = 7 * 86400  # a single file a week long is a broken file, not television
# The 33-bit 90 kHz clock of MPEG-TS wraps here: no recording starts later in its own timeline.
MAX_START_SECONDS = 2**33 / 90000
TAG_NUMBER = re.compile(r"[0-9]{1,6}")  # ASCII: str.isdigit() also says yes to "²" and "٣"
MAX_TITLE_CHARS = 200
_NOT_ON_ONE_LINE = ("Cc", "Cs", "Zl", "Zp")  # controls, lone surrogates (unencodable), line breaks
_SECONDS = re.compile(r"-?[0-9]{1,20}(\.[0-9]{1,20})?")  # what ffprobe prints, and nothing else
# Bumped whenever MediaInfo gains a probed fact: 2 added the picture's shape.
PROBE_VERSION = 2
MAX_PICTURE_SIDE = 16384  # more than any real video's; a bigger claim is no picture size at all
_RATIO = re.compile(r"([0-9]{1,6}):([0-9]{1,6})")
MAX_PIXEL_ASPECT = 10  # pixels wider or taller than this are a broken header, taken as square
FIELD_ORDERS = ("progressive", "tt", "bb", "tb", "bt")  # ffprobe's; the last four are interlaced
_ROTATE_TAG = re.compile(r"-?[0-9]{1,3}")


class ProbeError(Exception):
    """A file ffprobe cannot read, or one without a duration or any stream we can use."""


@dataclass(frozen=True)
class Picture:
    """The shape of a file's first video stream, as the decoder's filters receive it."""
    width: int
    height: int
    sar: Fraction = Fraction(1)  # the pixels' own aspect ratio: 8/9 on a 4:3 DVD
    field_order: str = ""  # one of FIELD_ORDERS; "" when the file does not say
    rotation: int = 0  # degrees of the display matrix: ffmpeg turns the pictures before any filter

    @property
    def display_aspect(self) -> Fraction:
        """Width over height as seen, pixel shape and rotation applied."""
        aspect = Fraction(self.width) * self.sar / self.height
        return 1 / aspect if self.rotation % 180 == 90 else aspect

    @property
    def interlaced(self) -> bool:
        return self.field_order in FIELD_ORDERS[1:]


@dataclass(frozen=True)
class MediaInfo:
    duration: float
    has_audio: bool
    title: str | None = None
    episode: int | None = None
    season: int | None = None
    start_time: float = 0.0  # the first timestamp (MPEG-TS files rarely start at 0)
    has_video: bool = True
    # The first video stream's shape (see Picture); width 0 when there is none or it is unknown.
    width: int = 0
    height: int = 0
    sample_aspect_ratio: str = "1:1"
    field_order: str = ""
    rotation: int = 0

    @property
    def picture(self) -> Picture | None:
        if not (self.has_video and self.width > 0 and self.height > 0):
            return None
        return Picture(self.width, self.height, pixel_aspect(self.sample_aspect_ratio), self.field_order,
                       self.rotation)


def ffprobe_binary() -> str:
    found = shutil.which("ffprobe")
    if not found:
        raise ProbeError("ffprobe is not installed (Debian: apt-get install ffmpeg)")
    return found


def believable_duration(seconds: float, size: int) -> bool:
    """Whether a file of `size` bytes can last `seconds`."""
    return math.isfinite(seconds) and 0 < seconds <= MAX_PROGRAMME_SECONDS and size >= seconds * MIN_BYTES_PER_SECOND


def _seconds(value: object) -> float | None:
    if not isinstance(value, str) or not _SECONDS.fullmatch(value):
        return None
    return float(value)


def _number(tags: dict[str, str], *names: str) -> int | None:
    for name in names:
        value = tags.get(name, "").split("/")[0].strip()  # "3/12" track style
        if TAG_NUMBER.fullmatch(value):
            return int(value)
    return None


def _title(value: str | None) -> str | None:
    """One line of printable text: a tag may hold newlines, escapes and megabytes."""
    if not value:
        return None
    text = "".join(" " if unicodedata.category(c) in _NOT_ON_ONE_LINE else c for c in value[: MAX_TITLE_CHARS * 4])
    return " ".join(text.split())[:MAX_TITLE_CHARS] or None


def _side(value: object) -> int:
    return value if type(value) is int and 0 < value <= MAX_PICTURE_SIDE else 0


def pixel_aspect(text: object) -> Fraction:
    """ffprobe's "8:9" as a ratio; 1 for what says nothing ("0:1", "N/A") or nothing believable."""
    m = _RATIO.fullmatch(text) if isinstance(text, str) else None
    if not m or not int(m.group(1)) or not int(m.group(2)):
        return Fraction(1)
    ratio = Fraction(int(m.group(1)), int(m.group(2)))
    return ratio if 1 / MAX_PIXEL_ASPECT <= ratio <= MAX_PIXEL_ASPECT else Fraction(1)


def _ratio_text(ratio: Fraction) -> str:
    return f"{ratio.numerator}:{ratio.denominator}"


def _rotation(stream: dict) -> int:
    """The display matrix's turn (side data), else the `rotate` tag older muxers wrote; 0..359."""
    sides = stream.get("side_data_list")
    for side in sides if isinstance(sides, list) else []:
        turn = side.get("rotation") if isinstance(side, dict) else None
        if type(turn) in (int, float) and math.isfinite(turn):
            return round(turn) % 360
    tags = stream.get("tags")
    tag = tags.get("rotate") if isinstance(tags, dict) else None
    return int(tag) % 360 if isinstance(tag, str) and _ROTATE_TAG.fullmatch(tag) else 0


def picture_fields(streams: list[dict]) -> dict:
    """The first video stream's shape as MediaInfo's fields; none when it has no believable size."""
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    if video is None or not (_side(video.get("width")) and _side(video.get("height"))):
        return {}
    order = video.get("field_order")
    return {"width": video["width"], "height": video["height"],
            "sample_aspect_ratio": _ratio_text(pixel_aspect(video.get("sample_aspect_ratio"))),
            "field_order": order if order in FIELD_ORDERS else "", "rotation": _rotation(video)}


def _say(seconds: float) -> str:
    return f"{seconds:.0f}" if seconds < 1e15 else f"{seconds:.3g}"


def parse_probe(output: str) -> MediaInfo:
    """ffprobe's JSON (format and streams) as MediaInfo; ProbeError if it is no use to us.

    The duration is the header's, checked only for being a number here: whether the file
    can hold it is probe()'s question, which needs the file."""
    try:
        doc = json.loads(output)
    except (ValueError, RecursionError):
        raise ProbeError("ffprobe gave no readable answer") from None
    streams = doc.get("streams", []) if isinstance(doc, dict) else None
    fmt = doc.get("format", {}) if isinstance(doc, dict) else None
    raw_tags = fmt.get("tags", {}) if isinstance(fmt, dict) else None
    if not (isinstance(streams, list) and all(isinstance(s, dict) for s in streams) and isinstance(raw_tags, dict)):
        raise ProbeError("ffprobe gave an answer of an unexpected shape")
    kinds = {s.get("codec_type") for s in streams}
    if not kinds & {"video", "audio"}:
        raise ProbeError("neither video nor audio")
    durations = (_seconds(d) for d in [fmt.get("duration"), *(s.get("duration") for s in streams)])
    duration = next((d for d in durations if d is not None and math.isfinite(d) and d > 0), None)
    if duration is None:
        raise ProbeError("no duration")
    start = fmt.get("start_time")
    start_time = 0.0 if start in (None, "N/A") else _seconds(start)
    if start_time is None or not abs(start_time) <= MAX_START_SECONDS:
        raise ProbeError(f"its start time {str(start)[:40]!r} is not a time")
    # Tag names differ by container (mp4: episode_sort, season_number; mkv: EPISODE...).
    tags = {str(k).lower(): v for k, v in raw_tags.items() if isinstance(v, str)}
    return MediaInfo(duration=duration, has_audio="audio" in kinds, has_video="video" in kinds,
                     title=_title(tags.get("title")), start_time=start_time,
                     episode=_number(tags, "episode_sort", "episode", "episode_id"),
                     season=_number(tags, "season_number", "season"), **picture_fields(streams))


def run_ffprobe(args: list[str], path: str) -> subprocess.CompletedProcess:
    """ffprobe on path; it dies with us (a config loader killed mid-probe leaves none behind)."""
    # A tag's bytes need not be UTF-8, and ffprobe passes them on as they are.
    return subprocess.run([ffprobe_binary(), "-v", "error", *args, path], capture_output=True,
                          encoding="utf-8", errors="replace", timeout=PROBE_TIMEOUT_SECONDS, stdin=subprocess.DEVNULL,
                          preexec_fn=child_process.exec_guard(os.getpid()))


def probe(path: str, size: int | None = None) -> MediaInfo:
    size = os.stat(path).st_size if size is None else size
    try:
        result = run_ffprobe(["-show_entries", "format=duration,start_time:format_tags"
                              ":stream=codec_type,duration,width,height,sample_aspect_ratio,field_order"
                              ":stream_tags=rotate:stream_side_data=rotation", "-of", "json"], path)
    except subprocess.TimeoutExpired:
        raise ProbeError(f"ffprobe took longer than {PROBE_TIMEOUT_SECONDS} s") from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no error output"])[-1]
        raise ProbeError(f"ffprobe cannot read it: {last}")
    info = parse_probe(result.stdout)
    if believable_duration(info.duration, size):
        return info
    measured = measure_duration(path, info.start_time)
    # Packets a few seconds apart all the way vouch for a length whatever the bytes (a still
    # picture held for a minute is a few KB); a jump in their times does not.
    if measured is None or not 0 < measured <= MAX_PROGRAMME_SECONDS:
        packets = ("no packets that vouch for it (none with times, or a jump of over "
                   f"{MAX_PACKET_GAP_SECONDS} s between two)") if measured is None \
            else f"packets that span {_say(measured)} s"
        raise ProbeError(f"its header says it lasts {_say(info.duration)} s and it has {packets}: more than "
                         f"its {size} bytes can hold (at least {MIN_BYTES_PER_SECOND} bytes a second, "
                         f"at most {MAX_PROGRAMME_SECONDS // 86400} days)")
    log.warning("%s: its header says it lasts %s s, more than its %d bytes can hold; its packets last %.3f s, "
                "which is what it is scheduled for", path, _say(info.duration), size, measured)
    return replace(info, duration=measured)


def measure_duration(path: str, start_time: float) -> float | None:
    """How long the file's packets last (the end of the last one, from start_time), or None
    when they cannot vouch for it: no packet with a time, or a gap between two packets'
    times over MAX_PACKET_GAP_SECONDS (a timestamp jump, not a programme).

    Only demuxed, never decoded: the time taken is the file's size, not its claimed length,
    and a file small enough to be suspect is read in a moment."""
    try:
        result = run_ffprobe(["-show_entries", "packet=pts_time,dts_time,duration_time", "-of", "csv=p=0"], path)
    except subprocess.TimeoutExpired:
        raise ProbeError(f"its header's duration cannot be believed and reading its packets took longer than "
                         f"{PROBE_TIMEOUT_SECONDS} s") from None
    times, end = [], None
    for line in result.stdout.splitlines():
        pts, dts, length = ([_seconds(v) for v in line.split(",")[:3]] + [None, None, None])[:3]
        at = pts if pts is not None else dts
        if at is not None:
            times.append(at)
            packet_end = at + (length if length is not None and length > 0 else 0.0)
            end = packet_end if end is None else max(end, packet_end)
    if end is None or not end - start_time > 0:
        return None
    times.sort()
    if any(b - a > MAX_PACKET_GAP_SECONDS for a, b in zip(times, times[1:])):
        return None
    return end - start_time


def cached_info(entry: dict, size: int) -> MediaInfo | None:
    """A cache entry's MediaInfo if it is one this version could have written for a file of
    `size` bytes; None (probe again) for one written by another version, edited, or believing
    a header that an earlier version did not check."""
    if entry.get("version") != PROBE_VERSION:
        return None
    try:
        info = MediaInfo(**entry["info"])
    except (TypeError, KeyError):
        return None
    sound = (type(info.duration) is float and believable_duration(info.duration, size)
             and type(info.start_time) is float and abs(info.start_time) <= MAX_START_SECONDS
             and type(info.has_audio) is bool and type(info.has_video) is bool
             and (info.title is None or type(info.title) is str and _title(info.title) == info.title)
             and all(n is None or type(n) is int and 0 <= n < 10**6 for n in (info.episode, info.season))
             and all(type(n) is int and (n == 0 or _side(n)) for n in (info.width, info.height))
             and type(info.sample_aspect_ratio) is str
             and _ratio_text(pixel_aspect(info.sample_aspect_ratio)) == info.sample_aspect_ratio
             and info.field_order in ("", *FIELD_ORDERS)
             and type(info.rotation) is int and 0 <= info.rotation < 360)
    return info if sound else None


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
    times = (_seconds(line.split(",")[0]) for line in out.split())
    before = [x for x in times if x is not None and x <= t + 0.001]
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
        if isinstance(entry, dict) and entry.get("key") == key:
            cached = cached_info(entry, st.st_size)
            if cached is not None:
                return cached
        info = probe(path, st.st_size)
        self.entries[path] = {"key": key, "version": PROBE_VERSION, "info": asdict(info)}
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
