"""SegmentIndex: a channel's ring seen as HLS segments, one per GOP. No sockets, no clocks.

Told where each keyframe starts (the scanner finds them), where a stream ended, and where
the ring's oldest byte is, it answers the media playlist (RFC 8216) and which bytes of the
ring a segment's URL names. A segment is the bytes from one keyframe's join point (its PAT
and PMT, or copies of them as the prefix) to the next keyframe's: it decodes alone.

Media sequence and discontinuity sequence only grow, for the life of the index: a player
holding an older playlist must never see a number go back. Each segment carries the
discontinuity sequence of its stream, so a playlist tags every change of stream and counts,
in EXT-X-DISCONTINUITY-SEQUENCE, the changes before its first segment (RFC 8216 6.2.2).
"""

from __future__ import annotations

import datetime
import math
from collections import deque
from dataclasses import dataclass

from retrovue_air.mpegts import TS_PACKET_SIZE

PTS_HZ = 90_000
PTS_WRAP = 1 << 33
# A playlist lists the newest segments that make up at least this many target durations:
# RFC 8216 6.2.2 forbids a live playlist shorter than three after removing a segment.
WINDOW_TARGETS = 4
# Segments a cold playlist request waits for: players start three target durations from the
# live edge (RFC 8216 6.3.3), and with fewer they stall at once.
READY_SEGMENTS = 3


def target_duration(keyframe_seconds: float) -> int:
    """EXT-X-TARGETDURATION: a segment's duration rounded must not exceed it, and it may never change."""
    return max(1, math.ceil(round(keyframe_seconds, 3)))


def held_seconds(keyframe_seconds: float) -> float:
    """How much stream the ring must hold for HLS: a listed window (plus the segment being cut),
    and after a segment leaves the playlist, RFC 8216 6.2.2's retention (its duration plus the
    playlist's), with one target's margin."""
    target = target_duration(keyframe_seconds)
    return (2 * (WINDOW_TARGETS + 1) + 2) * target


def pes_pts(packet: bytes | memoryview) -> int | None:
    """The PTS (90 kHz) of the PES that starts in this TS packet; None if it starts none or has none."""
    if len(packet) < TS_PACKET_SIZE or packet[0] != 0x47 or not packet[1] & 0x40:
        return None
    afc = packet[3] & 0x30
    if not afc & 0x10:
        return None
    at = 5 + packet[4] if afc & 0x20 else 4
    pes = bytes(packet[at:at + 14])
    if len(pes) < 14 or pes[:3] != b"\x00\x00\x01" or not pes[7] & 0x80:
        return None
    p = pes[9:14]
    return ((p[0] >> 1) & 0x07) << 30 | p[1] << 22 | (p[2] >> 1) << 15 | p[3] << 7 | p[4] >> 1


@dataclass(frozen=True)
class Segment:
    seq: int  # media sequence number
    stream: int  # the stream it was cut from: its URL names both
    start: int  # absolute ring offset of its first byte
    end: int  # offset after its last byte: the next segment's start
    prefix: bytes  # PAT/PMT copies sent before start (b"" when the stream has them there)
    duration: float
    program_time: float  # wall clock of its first frame, seconds since the epoch
    discontinuity: int  # its stream's discontinuity sequence number

    @property
    def name(self) -> str:
        return f"{self.stream}-{self.seq}"


@dataclass(frozen=True)
class _Open:
    """The GOP being cut: it becomes a segment when the next keyframe closes it."""
    stream: int
    start: int
    prefix: bytes
    pts: int | None
    program_time: float


class SegmentIndex:
    def __init__(self, keyframe_seconds: float):
        self.keyframe_seconds = keyframe_seconds
        self.target = target_duration(keyframe_seconds)
        self._segments: deque[Segment] = deque()  # complete, oldest first
        self._open: _Open | None = None
        self._next_seq = 0
        self._first_listed = 0  # the playlist's media sequence: never goes back
        self._discontinuity = 0
        self._cut_since_segment = False
        self._clock: tuple[float, int] | None = None  # (program time, PTS) of the stream's first keyframe seen

    # What happened

    def keyframe(self, stream: int, offset: int, prefix: bytes, pts: int | None, wall: float) -> None:
        """A GOP starts at offset (its PAT, or its keyframe packet with prefix before it).

        wall: the schedule's time of this keyframe as the caller best knows it; only the
        first of a stream is taken, the rest follow from the PTS, which burst or no burst
        is the stream's own clock."""
        if self._open is not None and self._open.stream != stream:
            self.cut()
        if self._cut_since_segment:
            self._discontinuity += 1
            self._cut_since_segment = False
        program_time = wall
        if pts is not None and self._clock is not None:
            program_time = self._clock[0] + ((pts - self._clock[1]) % PTS_WRAP) / PTS_HZ
        elif pts is not None:
            self._clock = (wall, pts)
        opened = self._open
        if opened is not None and offset > opened.start:
            duration = self.keyframe_seconds
            if opened.pts is not None and pts is not None:
                measured = ((pts - opened.pts) % PTS_WRAP) / PTS_HZ
                if 0 < measured <= 4 * self.target:  # else a jump in the clock: the nominal GOP
                    duration = measured
            self._segments.append(Segment(self._next_seq, opened.stream, opened.start, offset, opened.prefix,
                                          duration, opened.program_time, self._discontinuity))
            self._next_seq += 1
        self._open = _Open(stream, offset, prefix, pts, program_time)

    def cut(self) -> None:
        """The stream ended or restarted here: its unfinished GOP is no segment, and what
        follows is a discontinuity (new timestamps, maybe new parameters)."""
        self._open = None
        self._clock = None
        if self._next_seq:
            self._cut_since_segment = True

    def reset(self) -> None:
        """The ring is gone (the channel stopped): no segment of it can be served any more."""
        self._segments.clear()
        self.cut()

    def forget_before(self, oldest: int) -> None:
        """The ring no longer holds anything before oldest."""
        while self._segments and self._segments[0].start < oldest:
            self._segments.popleft()
        if self._open is not None and self._open.start < oldest:
            self._open = None  # a GOP longer than the ring: never complete

    # What it says

    @property
    def first_seq(self) -> int | None:
        return self._segments[0].seq if self._segments else None

    def listed(self, published: int) -> list[Segment]:
        """The playlist's segments: the newest complete ones, at least WINDOW_TARGETS target durations."""
        window: list[Segment] = []
        total = 0.0
        for segment in reversed(self._segments):
            if segment.end > published:
                continue  # its last bytes are not sendable yet
            if segment.seq < self._first_listed or total >= WINDOW_TARGETS * self.target:
                break
            window.append(segment)
            total += segment.duration
        window.reverse()
        if window:
            self._first_listed = window[0].seq
        return window

    def ready(self, published: int) -> bool:
        return len(self.listed(published)) >= READY_SEGMENTS

    def segment(self, stream: int, seq: int, published: int) -> Segment | None:
        """The segment that URL names, while the ring holds all of it; None once it has left."""
        if not self._segments:
            return None
        i = seq - self._segments[0].seq
        if not 0 <= i < len(self._segments):
            return None
        segment = self._segments[i]
        if segment.stream != stream or segment.end > published:
            return None
        return segment

    def playlist(self, published: int, segment_url) -> bytes:
        """The media playlist text; segment_url(segment) gives each segment's URI."""
        segments = self.listed(published)
        first = segments[0] if segments else None
        lines = ["#EXTM3U", "#EXT-X-VERSION:6", f"#EXT-X-TARGETDURATION:{self.target}",
                 f"#EXT-X-MEDIA-SEQUENCE:{first.seq if first else self._next_seq}",
                 f"#EXT-X-DISCONTINUITY-SEQUENCE:{first.discontinuity if first else self._discontinuity}",
                 "#EXT-X-INDEPENDENT-SEGMENTS"]
        previous = first.discontinuity if first else 0
        for segment in segments:
            if segment.discontinuity != previous:
                lines.append("#EXT-X-DISCONTINUITY")
                previous = segment.discontinuity
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{program_date_time(segment.program_time)}")
            lines.append(f"#EXTINF:{segment.duration:.3f},")
            lines.append(segment_url(segment))
        return ("\n".join(lines) + "\n").encode()


def program_date_time(when: float) -> str:
    """ISO 8601 with milliseconds and a zone, as RFC 8216 4.3.2.6 asks."""
    moment = datetime.datetime.fromtimestamp(round(when, 3), datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def segment_name(text: str) -> tuple[int, int] | None:
    """(stream, seq) from a segment's file name without .ts, e.g. "1000000003-42"; None if malformed."""
    stream, dash, seq = text.partition("-")
    if not dash or not (stream.isascii() and stream.isdigit() and seq.isascii() and seq.isdigit()):
        return None
    if len(stream) > 20 or len(seq) > 20:
        return None
    return int(stream), int(seq)
