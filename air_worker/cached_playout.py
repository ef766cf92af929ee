"""Playout from the ingest cache: the schedule's airings as house-format files, remuxed.

When every airing of the window is in the cache, the channel needs no decoder and no
encoder: one ffmpeg reads a concat playlist of the cached files with -c copy (the
transcode = false path of build_command). Every entry has the same codecs, size, rate and
GOP, and lasts exactly its programme's duration, so the concat demuxer's timestamps run on
without a jump or an overlap from one airing to the next.

A remux can only start on a keyframe. An airing that starts inside a file (the one on air
when the stream starts, or one the loop resumes after a daily block) is started at the
keyframe at or before its inpoint and keeps its length on the wall clock: it shows up to
one GOP (keyframe_seconds) of the programme from before the schedule's moment and loses as
much of its tail, and the next airing changes on time. The airing before one that starts
mid-file ends its sound 43 ms (two AAC frames) and perhaps its last picture early, to make room
for the audio that the seek brings from just before the keyframe.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os

from retrovue_air import house_format
from retrovue_air.config import Channel, Config
from retrovue_air.ffmpeg.profile import AUDIO_RATE
from retrovue_air.house_format import CachedFile, HouseFormat
from retrovue_air.schedule import Airing, file_passes

log = logging.getLogger("air_worker")

# Two AAC frames at 48 kHz: how far before a keyframe the audio muxed after it can reach.
SEEK_AUDIO_LEAD_SECONDS = 2 * 1024 / AUDIO_RATE


def cached_airing_list(airings: list[Airing], entries: dict[str, CachedFile], fmt: HouseFormat) -> str:
    """The concat playlist of `airings` from their cache entries (every one must have an entry)."""
    # A file shorter than its slot is listed once per pass.
    airings = [dataclasses.replace(a, start=start, end=end, inpoint=inpoint) for a in airings
               for start, end, inpoint in file_passes(a.programme, a.start, a.end, a.inpoint)]
    begins = [keyframe_begin(a, entries[a.programme.path], fmt) for a in airings]
    out = ["ffconcat version 1.0\n"]
    origin = airings[0].start
    for i, a in enumerate(airings):
        entry = entries[a.programme.path]
        # Whole frames: an airing cut at an arbitrary moment (the one on air at the start) would
        # otherwise end between two frames, and its last frame and the next airing's first would
        # fall within one frame of each other (a decoder's "non monotonically increasing dts").
        # Counted from the stream's start, so that what each airing loses is not lost for good:
        # a file of 7.5 frames repeated would otherwise put every later change earlier.
        frames = (math.floor((a.end - origin) * fmt.fps + 1e-6)
                  - math.floor((a.start - origin) * fmt.fps + 1e-6))
        if frames <= 0:
            continue
        length = frames / fmt.fps
        begin = begins[i]
        end = begin + length
        if i + 1 < len(airings) and begins[i + 1] > entries[airings[i + 1].programme.path].start_time:
            # The next one starts mid-file: the demuxer's seek also brings the audio packets muxed
            # after that keyframe with earlier timestamps, which would overlap this one's last
            # (ffmpeg then rewrites timestamps). Ending this one's sound that much sooner leaves
            # them room; its length on the clock is unchanged.
            end -= SEEK_AUDIO_LEAD_SECONDS
        out.append("file '" + entry.path.replace("'", "'\\''") + "'\n")
        if begin > entry.start_time:
            out.append(f"inpoint {begin:.6f}\n")
        out.append(f"outpoint {end:.6f}\n")
        out.append(f"duration {length:.6f}\n")
    return "".join(out)


def keyframe_begin(a: Airing, entry: CachedFile, fmt: HouseFormat) -> float:
    """Where in its file the airing's remux starts: the keyframe at or before its inpoint."""
    if a.inpoint <= 0:
        return entry.start_time
    step = fmt.keyframe_interval
    k = math.floor((entry.start_time + a.inpoint - entry.video_start + 1e-6) / step)
    return entry.video_start + k * step if k > 0 else entry.start_time


def cached_window(channel: Channel, config: Config, airings: list[Airing]) -> dict[str, CachedFile] | None:
    """Each airing's cache entry by source path, or None when any is missing (then: transcode live).

    The entries found are touched: their mtime is when they were last put on air, which the
    cache's size limit evicts by."""
    fmt = house_format.house_format(channel)
    directory = house_format.cache_dir(config)
    entries: dict[str, CachedFile] = {}
    missing = []
    for path in dict.fromkeys(a.programme.path for a in airings):
        entry = house_format.lookup(directory, path, fmt)
        if entry is None:
            missing.append(path)
        else:
            entries[path] = entry
    if missing:
        log.info("channel %s: %d of %d files not ingested yet (%s%s): transcoding live", channel.id,
                 len(missing), len(missing) + len(entries), os.path.basename(missing[0]),
                 ", ..." if len(missing) > 1 else "")
        return None
    for entry in entries.values():
        try:
            os.utime(entry.path)
        except OSError:
            pass  # a read-only cache still plays; only its eviction order suffers
    return entries


def from_now(airings: list[Airing], now: float) -> list[Airing]:
    """The window with its first airing cut to begin now, at the matching offset."""
    on = airings[0]
    return [dataclasses.replace(on, start=now, inpoint=on.inpoint + now - on.start), *airings[1:]]
