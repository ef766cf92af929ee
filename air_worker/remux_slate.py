"""The slate of a remuxed channel: a short clip in the format of the files it stands in for.

A remux (-c copy) cannot switch to pictures it makes itself, so what covers a missing airing
must already be in the stream's format: same codecs, picture size, frame rate, sample rate
and channels as the files around it, so that the concat demuxer passes it on like any other
entry and the TS stays one continuous stream. It is made once per stream start, in memory,
and listed as often as the gap needs.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from dataclasses import dataclass

from retrovue_air import media_info
from retrovue_air.config import Channel

from .ffmpeg_command import slate_clip_command

log = logging.getLogger("air_worker")

# Short, since it is made before the stream's first byte (0.6 s at 1080p on a busy 2-core box);
# a long gap lists it many times.
CLIP_SECONDS = 2.0
MAKE_TIMEOUT_SECONDS = 20


@dataclass(frozen=True)
class StreamFormat:
    """What a clip must match to be remuxed among the channel's files (ffprobe's names)."""
    video: tuple[str, int, int, str, str] | None  # codec, width, height, frame rate ("30000/1001"), pix_fmt
    audio: tuple[str, int, int] | None  # codec, sample rate, channels


@dataclass(frozen=True)
class SlateClip:
    fd: int  # a memfd the worker owns; ffmpeg reads it as path
    path: str
    start_time: float  # its first timestamp, which the concat demuxer's outpoints count from
    seconds: float


def parse_stream_format(output: str) -> StreamFormat | None:
    try:
        streams = json.loads(output).get("streams", [])
    except (ValueError, AttributeError):
        return None
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    try:
        v = video and (video["codec_name"], int(video["width"]), int(video["height"]), video["r_frame_rate"],
                       video.get("pix_fmt", "yuv420p"))
        a = audio and (audio["codec_name"], int(audio["sample_rate"]), int(audio["channels"]))
    except (KeyError, TypeError, ValueError):
        return None
    return StreamFormat(v or None, a or None) if v or a else None


def stream_format(path: str) -> StreamFormat | None:
    try:
        out = subprocess.run(
            [media_info.ffprobe_binary(), "-v", "error", "-show_entries",
             "stream=codec_type,codec_name,width,height,r_frame_rate,pix_fmt,sample_rate,channels", "-of", "json",
             path], capture_output=True, text=True, timeout=media_info.PROBE_TIMEOUT_SECONDS,
            stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.SubprocessError, media_info.ProbeError):
        return None
    return parse_stream_format(out)


def make_slate_clip(channel: Channel, binary: str, title: str, fmt: StreamFormat, font: str | None) -> SlateClip | None:
    """The clip, or None (logged) when this format cannot be made here."""
    cmd = slate_clip_command(channel, binary, title, fmt, CLIP_SECONDS, font)
    if cmd is None:
        log.warning("channel %s: no slate can be made to match %s: gaps stay silent", channel.id, fmt)
        return None
    fd = os.memfd_create("slate.ts", 0)
    try:
        made = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=fd, stderr=subprocess.PIPE,
                              timeout=MAKE_TIMEOUT_SECONDS)
        path = f"/proc/{os.getpid()}/fd/{fd}"
        info = media_info.probe(path) if made.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, media_info.ProbeError) as e:
        made, info = None, None
        why = str(e)
    else:
        why = made.stderr.decode(errors="replace").strip()[-300:]
    if info is None:
        os.close(fd)
        log.warning("channel %s: cannot make a slate to match %s (%s): gaps stay silent", channel.id, fmt, why)
        return None
    # ffmpeg opens it by this name, in its own fd table (the fd is passed on).
    return SlateClip(fd, f"/dev/fd/{fd}", info.start_time, min(info.duration, CLIP_SECONDS))
