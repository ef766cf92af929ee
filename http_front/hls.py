"""HLS for one channel: its segment index kept up with its ring, its clients' leases, and the
playlist requests waiting for a cold channel's first segments.

An HLS client holds no connection while it watches: it asks for the playlist and the newest
segments every target duration. So it is counted as a Lease, a viewer without a socket that
its requests renew; the channel's lifecycle holds leases beside the TS viewers (same limits,
same one encoder), and a lease that is not renewed within hls_idle_seconds is tuned out, as
a TS viewer is when it leaves. What to do with a socket stays the front's.
"""

from __future__ import annotations

from collections.abc import Hashable

from retrovue_air.mpegts import TS_PACKET_SIZE

from .hls_segments import Segment, SegmentIndex, pes_pts
from .stream_buffer import StreamBuffer

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
SEGMENT_TYPE = "video/mp2t"
# Other sites' players (hls.js in someone else's page) fetch with CORS.
CORS = ("Access-Control-Allow-Origin", "*")
# A segment's URL names its bytes for ever (a stream id never repeats, nor a sequence number).
SEGMENT_CACHING = ("Cache-Control", "max-age=60, immutable")


def playlist_caching(target: int) -> tuple[str, str]:
    """At most half a target duration (RFC 8216 6.2.2 asks a server to make a playlist no staler
    than that): under 2 s, no-cache, as max-age counts whole seconds."""
    return ("Cache-Control", f"max-age={target // 2}" if target >= 2 else "no-cache")


class Lease:
    """One HLS client, as its channel's lifecycle counts it: a viewer without a connection."""
    __slots__ = ("key", "peer", "expires")

    def __init__(self, key: Hashable, peer: str, expires: float):
        self.key, self.peer, self.expires = key, peer, expires

    def __repr__(self) -> str:
        return f"<Lease {self.peer}>"


def packet_at(buffer: StreamBuffer, offset: int) -> bytes:
    """The published TS packet at offset, in one piece where the ring wraps inside it."""
    first = buffer.chunk(offset)[:TS_PACKET_SIZE]
    if len(first) == TS_PACKET_SIZE:
        return bytes(first)
    return bytes(first) + bytes(buffer.chunk(offset + len(first))[:TS_PACKET_SIZE - len(first)])


class HlsChannel:
    def __init__(self, keyframe_seconds: float):
        self.index = SegmentIndex(keyframe_seconds)
        self.leases: dict[Hashable, Lease] = {}  # by client, the least recently renewed first
        self.held: dict[object, tuple[Lease, float]] = {}  # playlist requests waiting, with their deadline
        self._bytes: dict[int, bytes] = {}  # segment bytes by sequence number, copied once for all who ask
        self._live_since: float | None = None  # which ring the index is of (Channel.stats.live_since)
        self._scanner = None  # which stream's scanner: a new one is a new stream
        self._stream: int | None = None
        self._stream_from = 0.0  # when that stream's first bytes came (monotonic)
        self._last_keyframe = -1

    # The index, kept up with the ring

    def observe(self, channel, mono_now: float, wall_now: float) -> None:
        """Learn the keyframes the channel's scanner found since last time, and what left the ring."""
        buffer, live_since = channel.buffer, channel.stats.live_since
        if buffer is None or live_since is None or live_since != self._live_since:
            if self._live_since is not None:
                self.index.reset()
                self._bytes.clear()
            self._live_since = None if buffer is None else live_since
            self._scanner, self._last_keyframe = None, -1
            if self._live_since is None:
                return
        scanner = channel.scanner
        if scanner is not self._scanner:
            if self._scanner is not None:
                self.index.cut()
                self._stream_from = mono_now
            else:
                self._stream_from = live_since
            self._scanner, self._stream = scanner, channel.stream_id
        elif channel.stream_id is not None:
            self._stream = channel.stream_id
        oldest = buffer.oldest
        self.index.forget_before(oldest)
        first = self.index.first_seq
        for seq in [s for s in self._bytes if first is None or s < first]:
            del self._bytes[seq]
        if scanner is None or self._stream is None:
            return
        burst = channel.config.join_burst_seconds
        for offset in scanner.random_access_points:
            if offset <= self._last_keyframe or offset < oldest:
                continue
            if offset + TS_PACKET_SIZE > buffer.published:
                break
            start_from = max(self._last_keyframe + TS_PACKET_SIZE, -(-oldest // TS_PACKET_SIZE) * TS_PACKET_SIZE)
            self._last_keyframe = offset
            point = scanner.join_point(start_from, offset + TS_PACKET_SIZE)
            if point is None or not point.at_keyframe:
                continue
            arrived = buffer.arrival_time(offset)
            arrived = mono_now if arrived is None else arrived
            wall = wall_now - (mono_now - arrived)
            if arrived - self._stream_from > burst + 1.0:
                # Past its cold-start burst an encoder runs the burst ahead of real time: the
                # frame that arrives now is the schedule's frame of burst seconds from now.
                wall += burst
            self.index.keyframe(self._stream, point.offset, point.prefix, pes_pts(packet_at(buffer, offset)), wall)

    def segment_bytes(self, segment: Segment, buffer: StreamBuffer) -> bytes:
        """Its prefix and its bytes of the ring: copied once, then shared by every request for it.

        A copy, not a cursor into the ring: a slow client must get the whole segment, and the
        ring may overwrite it while that client is still taking it."""
        data = self._bytes.get(segment.seq)
        if data is None:
            parts, at = [segment.prefix], segment.start
            while at < segment.end:
                piece = buffer.chunk(at)[:segment.end - at]
                parts.append(bytes(piece))
                at += len(piece)
            data = self._bytes[segment.seq] = b"".join(parts)
        return data

    # Leases

    def renew(self, key: Hashable, now: float, idle_seconds: float) -> Lease | None:
        """The client's lease, renewed; None if it holds none (it is new, or its lease ran out)."""
        lease = self.leases.pop(key, None)
        if lease is not None:
            lease.expires = now + idle_seconds
            self.leases[key] = lease
        return lease

    def lease(self, key: Hashable, peer: str, now: float, idle_seconds: float) -> Lease:
        """A new lease for a client (the caller tunes it in)."""
        lease = self.leases[key] = Lease(key, peer, now + idle_seconds)
        return lease

    def drop(self, lease: Lease) -> list:
        """Forget a lease (refused, disconnected, run out); the requests it had waiting, to answer."""
        if self.leases.get(lease.key) is lease:
            del self.leases[lease.key]
        waiting = [viewer for viewer, (held_for, _) in self.held.items() if held_for is lease]
        for viewer in waiting:
            del self.held[viewer]
        return waiting

    def expired(self, now: float) -> list[Lease]:
        """Leases not renewed in time, and not waiting for a playlist either."""
        waiting = {lease for lease, _ in self.held.values()}
        gone = []
        for lease in self.leases.values():
            if lease.expires > now:
                break
            if lease not in waiting:
                gone.append(lease)
        return gone

    def next_deadline(self) -> float | None:
        deadlines = [deadline for _, deadline in self.held.values()]
        if self.leases:
            deadlines.append(next(iter(self.leases.values())).expires)
        return min(deadlines) if deadlines else None

    # Playlist requests that wait for the first segments

    def hold(self, viewer: object, lease: Lease, deadline: float) -> None:
        self.held[viewer] = (lease, deadline)

    def answerable(self, published: int, now: float) -> list[tuple[object, Lease]]:
        """Held requests to answer now: all once enough segments are listed, else those past their deadline."""
        if not self.held:
            return []
        ready = self.index.ready(published)
        due = [(viewer, lease) for viewer, (lease, deadline) in self.held.items() if ready or deadline <= now]
        for viewer, _ in due:
            del self.held[viewer]
        return due
