"""The house encoding: what a transcoded channel is encoded as, live or ahead of time.

The live encoder (air_worker) and the ingest command (house_format) both take their arguments
from here, so that a cache entry remuxed onto the air is what the live encoder would have made.
A channel's numbers are its HouseFormat (retrovue_air.house_format); this module is the words
ffmpeg is given for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from retrovue_air.house_format import HouseFormat

# Every channel's sound, whatever its sources': raw pipes between decoder and encoder carry it.
AUDIO_RATE = 48000


def gop_frames(fps: int, keyframe_seconds: float) -> int:
    """Frames from one keyframe to the next: every cut point and late join is a multiple of it."""
    return max(1, round(fps * keyframe_seconds))


def encode_arguments(fmt: HouseFormat) -> list[str]:
    """The output's codecs: H.264 and AAC at the format's bitrates, a keyframe every fmt.gop frames."""
    kbps = fmt.video_kbps
    return [
        # zerolatency: no B-frames and no lookahead, so the first bytes come out at once, and
        # an outpoint in an ingested file cuts cleanly between any two frames.
        "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency",
        "-b:v", f"{kbps}k", "-maxrate", f"{kbps}k", "-bufsize", f"{kbps}k",
        # A fixed GOP, no scene-cut keyframes: a late joiner never waits longer than one GOP.
        "-g", str(fmt.gop), "-keyint_min", str(fmt.gop), "-sc_threshold", "0",
        "-c:a", "aac", "-b:a", f"{fmt.audio_kbps}k", "-ar", str(AUDIO_RATE), "-ac", "2",
    ]


# The muxer repeats PAT/PMT every 100 ms by default and before each keyframe; no delay, so
# that its first packets leave at once.
MPEGTS_OUTPUT = ("-f", "mpegts", "-muxdelay", "0", "-muxpreload", "0")

# The encoder of each codec a remuxed channel's files may carry, for a slate that matches them.
SLATE_ENCODERS = {"h264": ["libx264", "-preset", "ultrafast", "-tune", "stillimage", "-bf", "0"],
                  "hevc": ["libx265", "-preset", "ultrafast", "-bf", "0"], "mpeg2video": ["mpeg2video", "-bf", "0"],
                  "aac": ["aac"], "mp2": ["mp2"], "ac3": ["ac3"], "eac3": ["eac3"]}
