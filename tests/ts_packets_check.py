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


def strict_ts_problems(body: bytes, max_step_seconds: float = 1.0) -> list[str]:
    """Everything that makes a TS not one continuous stream, parsed here independently of the code
    under test: lost alignment, a continuity counter that jumps, a PAT or PMT whose version or
    PIDs change, and PTS, DTS or PCR that fail to keep increasing (per PID, 33-bit wrap aware)
    or leap ahead by more than max_step_seconds (a frozen picture)."""
    max_step = round(max_step_seconds * 90000)
    problems: list[str] = []
    if len(body) % 188:
        problems.append(f"length {len(body)} is not a multiple of 188")
    counters: dict[int, int] = {}
    tables: dict[int, tuple[int, bytes]] = {}  # PID -> (version, section body) of PAT/PMT
    pmt_pids: set[int] = set()
    last_ts: dict[tuple[int, str], int] = {}

    def increasing(pid: int, kind: str, value: int, offset: int, strictly: bool = True) -> None:
        before = last_ts.get((pid, kind))
        if before is not None:
            step = (value - before) % (1 << 33)
            if step >= 1 << 32 or (strictly and step == 0) or step > max_step:  # back, still, or a leap
                problems.append(f"PID {pid} {kind} {before} -> {value} at byte {offset}")
        last_ts[(pid, kind)] = value

    for offset in range(0, len(body) - len(body) % 188, 188):
        p = body[offset:offset + 188]
        if p[0] != 0x47:
            problems.append(f"no sync byte at {offset}")
            continue
        pid = (p[1] & 0x1F) << 8 | p[2]
        if pid == 0x1FFF:
            continue
        start = bool(p[1] & 0x40)
        afc = (p[3] >> 4) & 3
        cc = p[3] & 0x0F
        payload_at = 4
        if afc & 2:
            length = p[4]
            if length and p[5] & 0x10:  # PCR
                pcr = p[6] << 25 | p[7] << 17 | p[8] << 9 | p[9] << 1 | p[10] >> 7  # its 90 kHz base
                increasing(pid, "PCR", pcr, offset)
            payload_at = 5 + length
        if afc & 1:
            expected = (counters[pid] + 1) % 16 if pid in counters else cc
            if cc != expected:
                problems.append(f"PID {pid} continuity {counters[pid]} -> {cc} at byte {offset}")
            counters[pid] = cc
        if not (afc & 1) or not start:
            continue
        data = p[payload_at:]
        if pid == 0 or pid in pmt_pids:
            section = data[1 + data[0]:]
            length = (section[1] & 0x0F) << 8 | section[2]
            version = (section[5] >> 1) & 0x1F
            content = section[3:3 + length - 4]  # without the CRC
            if pid == 0:
                for i in range(8, 3 + length - 4, 4):
                    pmt_pids.add((section[i + 2] & 0x1F) << 8 | section[i + 3])
            if pid in tables and tables[pid] != (version, content):
                problems.append(f"PID {pid} table changed (version {tables[pid][0]} -> {version}) at byte {offset}")
            tables[pid] = (version, content)
        elif data[:3] == b"\x00\x00\x01" and len(data) > 13:
            flags = data[7] >> 6

            def stamp(at: int) -> int:
                b = data[at:at + 5]
                return (b[0] >> 1 & 7) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1

            if flags & 2:
                increasing(pid, "DTS" if flags == 3 else "PTS/DTS", stamp(14 if flags == 3 else 9), offset)
    if not tables.get(0):
        problems.append("no PAT")
    return problems


# Packet-level checks, independent of the scanner under test.

TS_PACKET_SIZE = 188
SYNC_BYTE = 0x47
NULL_PID = 0x1FFF

def packet_pids(stream: bytes) -> list[int]:
    """PID of every whole packet in `stream` (which starts on a packet boundary)."""
    return [
        ((stream[i + 1] & 0x1F) << 8) | stream[i + 2]
        for i in range(0, len(stream) - TS_PACKET_SIZE + 1, TS_PACKET_SIZE)
    ]


def continuity_errors(stream: bytes) -> list[str]:
    """Continuity-counter violations in `stream`, as a player's demuxer sees them.

    Rules (ISO/IEC 13818-1 2.4.3.3): the CC of a PID advances by one per packet
    with payload; packets without payload repeat the previous CC; one identical
    duplicate of a payload packet may repeat its CC; a set discontinuity_indicator
    restarts counting; the first packet of a PID and null packets are free.
    A trailing partial packet is ignored.
    """
    errors: list[str] = []
    last: dict[int, tuple[int, bytes | None, bool]] = {}  # pid -> (cc, payload packet, was duplicate)
    for i in range(0, len(stream) - TS_PACKET_SIZE + 1, TS_PACKET_SIZE):
        if stream[i] != SYNC_BYTE:
            errors.append(f"offset {i}: sync byte {stream[i]:#04x}")
            continue
        pid = ((stream[i + 1] & 0x1F) << 8) | stream[i + 2]
        if pid == NULL_PID:
            continue
        b3 = stream[i + 3]
        cc = b3 & 0x0F
        has_payload = bool(b3 & 0x10)
        discontinuity = bool(b3 & 0x20) and stream[i + 4] > 0 and bool(stream[i + 5] & 0x80)
        packet = stream[i : i + TS_PACKET_SIZE] if has_payload else None
        duplicate = False
        previous = last.get(pid)
        if previous is not None and not discontinuity:
            prev_cc, prev_packet, prev_was_duplicate = previous
            if not has_payload:
                if cc != prev_cc:
                    errors.append(f"offset {i}: pid {pid:#x} cc {cc} on a packet without payload, expected {prev_cc}")
            elif cc == prev_cc and packet == prev_packet and not prev_was_duplicate:
                duplicate = True
            elif cc != (prev_cc + 1) & 0x0F:
                errors.append(f"offset {i}: pid {pid:#x} cc {cc}, expected {(prev_cc + 1) & 0x0F}")
        last[pid] = (cc, packet, duplicate)
    return errors


def whole_frames(body: bytes) -> bytes:
    """The body up to the last video PES that starts in it: a stream read for a while ends
    inside a frame, and a decoder rightly complains about that half frame (not the server's doing)."""
    last = None
    for i in range(0, len(body) - TS_PACKET_SIZE + 1, TS_PACKET_SIZE):
        if not body[i + 1] & 0x40:
            continue
        at = i + 4 + (1 + body[i + 4] if body[i + 3] & 0x20 else 0)
        if body[at:at + 3] == b"\0\0\1" and 0xE0 <= body[at + 3] <= 0xEF:
            last = i
    return body[:last] if last else body


def decoder_complaints(ffmpeg: str, body: bytes, frames: int | None = None) -> str:
    """What `ffmpeg -v error` says decoding a live body (all of it, or its first frames), up to its
    last whole frame: empty for a clean stream."""
    limit = ["-frames:v", str(frames)] if frames else []
    result = subprocess.run([ffmpeg, "-v", "error", "-f", "mpegts", "-i", "-", *limit, "-f", "null", "-"],
                            input=whole_frames(body), capture_output=True, timeout=120)
    return result.stderr.decode(errors="replace") + ("" if result.returncode == 0 else f"exit {result.returncode}")
