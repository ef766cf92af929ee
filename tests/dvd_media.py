"""DVD and broadcast-style MPEG-PS files for the tests, made with ffmpeg.

`dvd` is what a DVD rip looks like (MPEG-2 720x480 interlaced 29.97, 4:3 pixels of 8:9,
AC-3 5.1, a .vob); `worst` is the worst interleaving ffmpeg's MPEG-PS muxer can be made
to write: a low video bitrate with a large decoder buffer and mux delay lets it put each
picture seconds before the sound of the same moment, so a reader of the file meets the
video of t + 4 s next to the audio of t.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

SECONDS = 20
FRAME_RATE = "30000/1001"


def make_dvd(folder: Path, ffmpeg: str, seconds: float = SECONDS) -> Path:
    out = folder / "dvd.vob"
    subprocess.run([ffmpeg, "-v", "error", "-y",
                    # Two fields of different moments woven into each frame: real interlaced motion.
                    "-f", "lavfi", "-i", f"testsrc2=size=720x480:rate=60000/1001:d={seconds},"
                                         "tinterlace=mode=interleave_top,setsar=8/9",
                    "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:d={seconds}",
                    "-c:v", "mpeg2video", "-b:v", "5M", "-maxrate", "8M", "-bufsize", "1835k",
                    "-flags", "+ildct+ilme", "-top", "1", "-field_order", "tt",
                    "-c:a", "ac3", "-b:a", "384k", "-ac", "6",
                    "-f", "vob", str(out)], check=True, timeout=300)
    return out


def make_worst(folder: Path, ffmpeg: str, seconds: float = SECONDS) -> Path:
    out = folder / "worst.mpg"
    subprocess.run([ffmpeg, "-v", "error", "-y",
                    "-f", "lavfi", "-i", f"testsrc2=size=720x480:rate={FRAME_RATE}:d={seconds}",
                    "-f", "lavfi", "-i", f"sine=frequency=660:sample_rate=48000:d={seconds}",
                    "-c:v", "mpeg2video", "-b:v", "500k", "-maxrate", "500k", "-bufsize", "9000k",
                    "-c:a", "mp2", "-b:a", "192k", "-ac", "2",
                    "-max_interleave_delta", "0", "-muxdelay", "30", "-f", "mpeg", str(out)],
                   # The muxer says "buffer underflow" for every picture it sends that early.
                   check=True, timeout=300, capture_output=True)
    return out


def audio_lag_in_file(ffprobe: str, path: Path) -> float:
    """How far, at most, the sound of a moment sits behind its picture in the file: for each
    audio packet, the time of the last video packet before it minus its own."""
    out = subprocess.run([ffprobe, "-v", "error", "-show_entries", "packet=codec_type,pts_time,dts_time",
                          "-of", "json", str(path)], capture_output=True, text=True, check=True, timeout=120).stdout
    video_at, lag = None, 0.0
    for p in json.loads(out)["packets"]:
        if p["codec_type"] == "video" and p.get("dts_time") not in (None, "N/A"):
            video_at = float(p["dts_time"])
        elif p["codec_type"] == "audio" and video_at is not None and p.get("pts_time") not in (None, "N/A"):
            lag = max(lag, video_at - float(p["pts_time"]))
    return lag
