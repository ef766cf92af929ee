"""A channel's house format and the ingest cache: each media file transcoded once into it.

A channel with `ingest = true` wants every file as H.264 + AAC (48 kHz stereo) MPEG-TS at
its own size, frame rate, GOP and bitrates: the encoder's settings, so that playout only
remuxes (-c copy) what the live encoder would have made. An entry is named by a hash of
the source's identity (path, size, mtime) and of the format: a file changed on disk, or a
channel whose format changed, misses the cache and is ingested again; the stale entry is
left to the size limit's eviction. The `.ts` appears by rename only when complete; its
`.json` sidecar (written first) says what it is and where its timestamps start.

Shared by the ingester (which writes entries) and the Air worker (which plays them).
Nothing here runs a process.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
from dataclasses import asdict, dataclass

from retrovue_air import safe_files
from retrovue_air.config import Channel, Config
from retrovue_air.ffmpeg.profile import AUDIO_RATE, MPEGTS_OUTPUT, encode_arguments, gop_frames

# Bumped when the ingest command changes in a way that makes old entries wrong.
HOUSE_FORMAT_VERSION = 1
SIDECAR = ".json"


@dataclass(frozen=True)
class HouseFormat:
    width: int
    height: int
    fps: int
    gop: int  # frames between keyframes, fixed: every cut point is a multiple of it
    video_kbps: int
    audio_kbps: int

    @property
    def keyframe_interval(self) -> float:
        return self.gop / self.fps

    def digest(self) -> str:
        text = json.dumps({"version": HOUSE_FORMAT_VERSION, "video": "h264", "audio": "aac",
                           "audio_rate": AUDIO_RATE, "channels": 2, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def house_format(channel: Channel) -> HouseFormat:
    return HouseFormat(channel.width, channel.height, channel.fps,
                       gop_frames(channel.fps, channel.keyframe_seconds), channel.video_kbps, channel.audio_kbps)


def cache_dir(config: Config) -> str:
    return config.cache_dir or os.path.join(config.state_dir, "cache")


class UnsafeCache(Exception):
    """The cache directory is one others can write (the message says which, and the fix)."""


def prepare_cache(directory: str) -> None:
    """Make the cache directory if need be, and check that it is ours alone; UnsafeCache if not.

    Checked again here, after any mkdir, as the user that writes it: the configuration was
    checked before the privileges were dropped, and a directory made since may be someone else's."""
    os.makedirs(directory, mode=0o755, exist_ok=True)
    problem = safe_files.private_directory_problem(directory, os.geteuid())
    if problem:
        raise UnsafeCache(problem)


def entry_name(source: str, size: int, mtime_ns: int, fmt: HouseFormat) -> str:
    """The cache file's name: readable stem, then the hash of identity and format."""
    key = hashlib.sha256(f"{source}\0{size}\0{mtime_ns}\0{fmt.digest()}".encode()).hexdigest()[:24]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.splitext(os.path.basename(source))[0])[:40]
    return f"{stem}-{key}.ts"


def entry_path(directory: str, source: str, fmt: HouseFormat) -> str:
    """Where `source` in `fmt` is (or will be) cached; OSError if the source cannot be stat'ed."""
    st = os.stat(source)
    return os.path.join(directory, entry_name(source, st.st_size, st.st_mtime_ns, fmt))


@dataclass(frozen=True)
class CachedFile:
    path: str
    start_time: float  # the file's first timestamp (its audio's): concat's inpoint and outpoint are in its timeline
    video_start: float  # its first picture's, a keyframe: the others follow every gop frames


SIDECAR_MAX_BYTES = 64 * 1024


def lookup(directory: str, source: str, fmt: HouseFormat) -> CachedFile | None:
    """The complete cache entry of `source` in `fmt`, or None (not ingested yet, or changed since).

    An entry is what an ingester of ours renamed into place: two regular files (no link is
    followed) owned by the user we run as (or root), never what another user put at the name."""
    try:
        path = entry_path(directory, source, fmt)
        meta = json.loads(safe_files.read_regular(path + SIDECAR, SIDECAR_MAX_BYTES))
        ours = (os.geteuid(), 0)
        for st in (os.lstat(path + SIDECAR), os.lstat(path)):
            if not stat.S_ISREG(st.st_mode) or st.st_uid not in ours:
                return None
        start_time, video_start = float(meta["start_time"]), float(meta["video_start"])
        if not (math.isfinite(start_time) and math.isfinite(video_start)):
            return None
        return CachedFile(path, start_time, video_start)
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None


def write_sidecar(path: str, source: str, start_time: float, video_start: float, duration: float,
                  fmt: HouseFormat, tag: str) -> None:
    """The entry's sidecar, put in place whole (safe_files.replace_whole: never through a planted link)."""
    data = json.dumps({"source": source, "start_time": start_time, "video_start": video_start,
                       "duration": duration, "format": asdict(fmt)}).encode()
    safe_files.replace_whole(path + SIDECAR, data, tag)


def ingest_command(binary: str, source: str, duration: float, has_audio: bool, fmt: HouseFormat,
                   output: str, progress_fd: int) -> list[str]:
    """The source as exactly `duration` of the house format, its progress written to progress_fd.

    Exact frame and sample counts (a short track padded, a last picture held) make the entry
    last what the schedule thinks the file lasts, so that remuxed airings change on time.
    The encoder settings are the live encoder's (retrovue_air/ffmpeg/profile.py).
    """
    frames = max(1, round(duration * fmt.fps))
    samples = max(1, round(duration * AUDIO_RATE))
    # The pads are endless and only the trims end them: -t also ends the output, so that no
    # filter graph (nor a source ffmpeg reads differently from ffprobe) can write for ever.
    # It is the longer of the two trims, so it never cuts what they keep.
    limit = max(frames / fmt.fps, samples / AUDIO_RATE)
    w, h = fmt.width, fmt.height
    cmd = [binary, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", "-y",
           "-progress", f"pipe:{progress_fd}", "-i", source]
    if not has_audio:
        cmd += ["-f", "lavfi", "-i", f"anullsrc=r={AUDIO_RATE}:cl=stereo"]
    cmd += [
        "-map", "0:v:0",
        "-vf", (f"scale={w}:{h}:force_original_aspect_ratio=decrease,pad={w}:{h}:(ow-iw)/2:(oh-ih)/2,"
                f"setsar=1,fps={fmt.fps},format=yuv420p,tpad=stop=-1:stop_mode=clone,trim=end_frame={frames}"),
        "-fps_mode", "passthrough",
        "-map", "0:a:0" if has_audio else "1:a:0",
        "-af", (f"aresample={AUDIO_RATE},aformat=sample_fmts=fltp:channel_layouts=stereo,apad,"
                f"atrim=end_sample={samples}"),
        *encode_arguments(fmt),
        "-t", f"{limit:.6f}", *MPEGTS_OUTPUT, output,
    ]
    return cmd
