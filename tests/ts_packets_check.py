"""Independent checks of a TS body for the tests: who is the PMT, does video start on a key frame."""

from __future__ import annotations

import json
import shutil
import subprocess


def pmt_pid_of(body: bytes) -> int:
    """The PMT PID that the body's first PAT announces (parsed here, not by the code under test)."""
    assert body[0] == 0x47 and ((body[1] & 0x1F) << 8 | body[2]) == 0, "no PAT first"
    pointer = body[4]
    section = body[5 + pointer:]
    # PAT: table_id, length(2), tsid(2), version, section, last_section, then 4-byte programs
    programs = section[8:8 + 4]
    return (programs[2] & 0x1F) << 8 | programs[3]


def first_video_frame_is_key(body: bytes) -> bool:
    ffprobe = shutil.which("ffprobe")
    assert ffprobe, "ffprobe is needed"
    result = subprocess.run([ffprobe, "-v", "error", "-select_streams", "v:0", "-read_intervals", "%+#1",
                             "-show_frames", "-show_entries", "frame=key_frame,pict_type", "-of", "json",
                             "-f", "mpegts", "-"], input=body, capture_output=True, timeout=60)
    frames = json.loads(result.stdout or b"{}").get("frames", [])
    return bool(frames) and frames[0].get("key_frame") == 1
