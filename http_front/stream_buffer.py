"""StreamBuffer: one channel's recent stream, shared by all of its viewers.

The stream is addressed by absolute byte offset (0 = the first byte ffmpeg wrote).
Bytes live in a fixed ring; a viewer is nothing but an offset into it (its cursor).
Reads from ffmpeg land straight in the ring and sends go straight out of it as
memoryview slices, so a byte is copied into user space once however many watch.
"""

from __future__ import annotations

import bisect

from retrovue_air.mpegts import TS_PACKET_SIZE

MAX_READ = 256 * 1024


class StreamBuffer:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self._ring = bytearray(capacity)
        self._view = memoryview(self._ring)
        self.end = 0  # bytes received
        self.published = 0  # bytes viewers may be sent: a packet boundary <= end
        # When each stretch of the stream arrived, to tell how far behind a cursor is
        # in stream time: (offset after a write, monotonic time of that write).
        self._offsets: list[int] = []
        self._times: list[float] = []

    @property
    def oldest(self) -> int:
        """The first offset still held."""
        return max(0, self.end - self.capacity)

    def grown(self, capacity: int) -> "StreamBuffer":
        """A bigger ring holding the same stream at the same offsets (cursors stay valid)."""
        bigger = StreamBuffer(capacity)
        offset = self.oldest
        while offset < self.end:
            piece = self._raw(offset, self.end)
            at = offset % capacity
            n = min(len(piece), capacity - at)
            bigger._view[at:at + n] = piece[:n]
            offset += n
        bigger.end, bigger.published = self.end, self.published
        bigger._offsets, bigger._times = self._offsets, self._times
        return bigger

    def writable(self) -> memoryview:
        """Where the next read from the stream should land (contiguous, may overwrite the oldest bytes)."""
        start = self.end % self.capacity
        return self._view[start:start + min(self.capacity - start, MAX_READ)]

    def overwritten_by(self, n: int) -> int:
        """Writing n more bytes destroys everything before this offset."""
        return self.end + n - self.capacity

    def wrote(self, n: int, now: float) -> None:
        self.end += n
        self._offsets.append(self.end)
        self._times.append(now)
        if len(self._offsets) > 64 and self._offsets[len(self._offsets) // 2] < self.oldest:
            half = len(self._offsets) // 2
            del self._offsets[:half], self._times[:half]

    def publish(self) -> bool:
        """Make every whole packet received so far sendable; True if that is anything new."""
        aligned = self.end - self.end % TS_PACKET_SIZE
        if aligned == self.published:
            return False
        self.published = aligned
        return True

    def discard_partial_packet(self) -> None:
        """Forget the bytes after the last packet boundary (a dead writer's half packet).

        They were never published, so no viewer has seen them."""
        self.end -= self.end % TS_PACKET_SIZE
        while self._offsets and self._offsets[-1] > self.end:
            self._offsets.pop()
            self._times.pop()

    @property
    def unpublished(self) -> int:
        return self.end - self.published

    def chunk(self, cursor: int) -> memoryview:
        """The longest contiguous run of published bytes starting at cursor (empty when caught up)."""
        if cursor >= self.published:
            return self._view[0:0]
        if cursor < self.oldest:
            raise IndexError(f"offset {cursor} is gone (oldest is {self.oldest})")
        start = cursor % self.capacity
        return self._view[start:start + min(self.published - cursor, self.capacity - start)]

    def _raw(self, start: int, stop: int) -> memoryview:
        begin = start % self.capacity
        return self._view[begin:begin + min(stop - start, self.capacity - begin)]

    def arrival_time(self, offset: int) -> float | None:
        """When the byte at offset arrived; None if it has not arrived yet."""
        i = bisect.bisect_right(self._offsets, offset)
        return self._times[i] if i < len(self._times) else None

    def offset_at(self, when: float) -> int:
        """The first offset still held that arrived at or after `when` (the held end if none did)."""
        i = bisect.bisect_left(self._times, when)
        offset = self._offsets[i - 1] if i > 0 else 0
        return min(self.end, max(self.oldest, offset))

    def lag(self, position: int, now: float) -> float:
        """How long ago, in stream time, the first byte a viewer still lacks arrived."""
        arrived = self.arrival_time(position)
        return 0.0 if arrived is None else max(0.0, now - arrived)
