"""Channel: one channel's stream and the viewers who watch it, as Icecast's source owns its listeners.

A Channel reads its stream FD into its StreamBuffer, scans it for join points, publishes
it to its viewers in large pieces and notices the ones that fell too far behind. It does
not close anything a loop owns: its methods return what must happen (viewers to close,
with the reason), and the front carries that out.
"""

from __future__ import annotations

import logging
import re
import selectors
import socket
from dataclasses import dataclass

from retrovue_air.config import Channel as ChannelConfig
from retrovue_air.mpegts import NULL_PACKET, TS_PACKET_SIZE, TsScanner

from . import hls_segments, responses
from .channel_lifecycle import ChannelLifecycle
from .channel_stats import ChannelStats
from .stream_buffer import StreamBuffer
from .viewer import Phase, Sent, Viewer

log = logging.getLogger("http_front")

# Publish once this much has gathered at a read (or flush_interval_ms after the first of
# it): whole packets, about as much as one 64 KiB send.
FLUSH_BYTES = 348 * TS_PACKET_SIZE
READS_PER_WAKEUP = 8
# After a read that found bytes, the stream is not watched for this long; then it is read
# again. ffmpeg writes each muxed packet as it comes (about 70 writes a second for 30 fps
# video and AAC), and each write would wake the front for a select() and a small read.
# Resting, a live channel of up to 4 Mbit/s wakes the front 8 times a second, and no
# viewer waits longer for it: the front publishes about every flush_interval_ms (200).
READ_PAUSE = 0.125
# A stream silent this long gets a null packet into its ring, and then one more every as long:
# nothing else is sent to its viewers while it is silent, and a viewer that quit (a FIN, then
# nothing) is only found by a send, which its side answers with a reset. Stalls are not
# rare (a remux waiting out a timestamp gap, a frozen encoder), and a viewer who left must
# not hold a tuner through one.
KEEP_ALIVE_SECONDS = 1.0
MIN_BUFFER = 4 * 1024 * 1024
# The ring grows to keep held_seconds() of a stream that outruns its configured rate (a relay's
# origin, a remuxed file, a busy scene), but only up to this many times that rate. A source far
# faster than it says (a static file served to a relay) then costs a bounded ring, not the
# machine's memory: its oldest bytes go, and the viewers still on them are dropped as too slow.
RATE_HEADROOM = 4

# An absolute path as ffmpeg and our own messages print it: up to a space, quote or colon.
_PATH = re.compile(r"(?<![\w.])/[^\s'\":]*/([^\s'\":/]+)")


def redact_paths(text: str) -> str:
    """Paths reduced to their file names: where the media library lives is nobody's business."""
    return _PATH.sub(r"\1", text)


@dataclass(frozen=True)
class Close:
    """Close this viewer (it is gone, or too slow), and tune it out."""
    viewer: Viewer
    reason: str


@dataclass(frozen=True)
class StreamRead:
    """What reading the stream came to: viewers to close, and news for the lifecycle."""
    closes: list[Close]
    first_bytes: bool = False  # the stream's first packet arrived
    ended: bool = False  # EOF with no restarted stream queued: the stream is over


class Channel:
    def __init__(self, config: ChannelConfig, lifecycle: ChannelLifecycle, selector: selectors.BaseSelector):
        self.config = config
        self.lifecycle = lifecycle
        self._selector = selector
        # The stream being read, and the id of the stream it carries.
        self.stream_sock: socket.socket | None = None
        self.stream_id: int | None = None
        self.awaiting_first_bytes = False  # a new stream (not a restarted ffmpeg's) was attached
        # A restarted ffmpeg's stream, queued until the old one has been read to its end.
        self.next_stream_sock: socket.socket | None = None
        self.start_deadline: float | None = None
        self.flush_deadline: float | None = None
        self.read_deadline: float | None = None  # the stream rests, unwatched, until then
        self.last_bytes_at: float | None = None  # when the stream last gave bytes
        self.keep_alive_deadline: float | None = None  # silent until then: a null packet goes out
        self.failure_tail = ""  # the tail of ffmpeg's stderr when the channel last failed
        self.buffer: StreamBuffer | None = None
        self.scanner: TsScanner | None = None  # where in the buffer a late joiner can start
        # No viewer's cursor is below this. Cursors only grow, so an overrun of the ring
        # below it needs no look at the viewers, and a read is O(1) however many watch.
        self._cursors_from = 0
        self.said_no_keyframe = False
        self.said_ring_full = False
        self.stats = ChannelStats()
        self.start_requested_at: float | None = None

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def schedule(self):
        """What it airs when (retrovue_air.schedule), for the guide; None (placeholders): not a media channel."""
        return getattr(self.config.source, "schedule", None)

    @property
    def viewers(self) -> list[Viewer]:
        """The viewers receiving the stream, in arrival order: the lifecycle's to know, ours to serve.

        Not its HLS leases: the lifecycle counts them too, but they take their bytes by request."""
        return [v for v in self.lifecycle.watching if type(v) is Viewer]

    def bytes_out(self) -> int:
        return self.stats.bytes_out_closed + sum(v.cursor - v.start_cursor for v in self.viewers)

    def summary(self, expose_paths: bool = False) -> dict:
        lc = self.lifecycle
        error, tail = lc.failure, self.failure_tail if lc.failure else ""
        if not expose_paths:
            error, tail = error and redact_paths(error), redact_paths(tail)
        return {"id": self.id, "name": self.config.name, "state": lc.state.shown,
                "viewers": lc.viewer_count, "worker_pid": lc.worker_pid,
                "ffmpeg_pid": lc.ffmpeg_pid, "error": error, "stderr_tail": tail,
                "join_seconds": self.stats.join.summary(), "cold_start_seconds": self.stats.cold_start.summary()}

    # The stream FD

    def stream_ready(self, sock: socket.socket, stream: int, max_lag_seconds: float) -> None:
        """Take a stream FD the worker handed over (its first, or a restarted ffmpeg's)."""
        sock.setblocking(False)
        if self.stream_id == stream and self.stream_sock is not None:
            # The worker restarted ffmpeg: read the old stream to its end first.
            if self.next_stream_sock is not None:
                self.next_stream_sock.close()
            self.next_stream_sock = sock
            return
        self.close_stream()
        self.awaiting_first_bytes = True
        self._attach(sock, stream, max_lag_seconds)

    def held_seconds(self, max_lag_seconds: float) -> float:
        """What the ring must hold: a joiner's burst, then room for it to fall max_lag_seconds behind."""
        ts = 2 * max_lag_seconds + (self.config.join_burst_seconds if self.config.join == "keyframe" else 0)
        return max(ts, hls_segments.held_seconds(self.config.keyframe_seconds))

    def ring_seconds(self, max_lag_seconds: float) -> float:
        """What the ring is sized for: held_seconds() and, on top, a new stream's first
        join_burst_seconds, which come at once (its cold-start burst): without room for them the
        ring would look outrun by its own burst and grow."""
        return self.held_seconds(max_lag_seconds) + (self.config.join_burst_seconds
                                                     if self.config.join == "keyframe" else 0)

    def ring_limit(self, max_lag_seconds: float) -> int:
        """The most the ring may grow to: ring_seconds() at RATE_HEADROOM times the configured rate."""
        return max(MIN_BUFFER, int(RATE_HEADROOM * self.ring_seconds(max_lag_seconds) * self.config.bytes_per_second))

    def _attach(self, sock: socket.socket, stream: int, max_lag_seconds: float) -> None:
        self.stream_sock, self.stream_id = sock, stream
        if self.buffer is None:
            # The configured bitrate is a target, not a bound (MPEG-TS framing, a busy scene): half again.
            seconds = self.ring_seconds(max_lag_seconds)
            capacity = max(MIN_BUFFER, int(1.5 * seconds * self.config.bytes_per_second))
            self.buffer = StreamBuffer(capacity)
            self._cursors_from = 0
        else:
            # Viewers continue in the same buffer. A killed ffmpeg may have left half a
            # packet, which was never published: drop it so the next stream is aligned.
            self.buffer.discard_partial_packet()
        self.scanner = TsScanner()
        self._selector.register(sock, selectors.EVENT_READ, self)

    def close_stream(self, stream: int | None = None) -> None:
        """Close the stream FDs (only if they carry `stream`, when given); the buffer stays for its viewers."""
        if stream is not None and stream != self.stream_id:
            return
        if self.stream_sock is not None:
            if self.read_deadline is None:
                self._selector.unregister(self.stream_sock)
            self.read_deadline = None
            self.stream_sock.close()
            self.stream_sock = None
        if self.next_stream_sock is not None:
            self.next_stream_sock.close()
            self.next_stream_sock = None
        self.stream_id = None
        self.flush_deadline = None
        self.keep_alive_deadline = None

    def release_if_unused(self) -> None:
        if not self.viewers and self.stream_sock is None and self.buffer is not None:
            self.buffer = None  # nobody reads it and nothing writes it
            self.scanner = None
            self.stats.live_since = None

    def read(self, now: float, max_lag_seconds: float, flush_interval: float) -> StreamRead:
        """Read what the stream has, into the ring (without blocking)."""
        buffer = self.buffer
        closes: list[Close] = []
        got = 0
        for _ in range(READS_PER_WAKEUP):
            space = buffer.writable()
            if buffer.overwritten_by(len(space)) > 0 and self._grow(now, max_lag_seconds):
                buffer = self.buffer
                space = buffer.writable()
            closes += self._overrun_by(buffer.overwritten_by(len(space)))
            try:
                n = self.stream_sock.recv_into(space)
            except BlockingIOError:
                break
            except OSError:
                n = 0
            if n == 0:
                return StreamRead(closes, ended=not self._next_stream(max_lag_seconds))
            self.scanner.feed(space[:n], buffer.end)
            buffer.wrote(n, now)
            self.stats.bytes_in += n
            got += n
            if n < len(space):
                break
        self._rest_or_watch(got, now)
        if got:
            self.last_bytes_at = now
            self.keep_alive_deadline = now + KEEP_ALIVE_SECONDS
        if self.awaiting_first_bytes and buffer.published + TS_PACKET_SIZE <= buffer.end:
            # The stream's first packet: its viewers can be admitted (or, for a stream that
            # replaces a dead worker's, the channel is whole again).
            self.awaiting_first_bytes = False
            buffer.publish()
            if self.stats.live_since is None:
                self.stats.live_since = now
            self.start_deadline = None
            if self.start_requested_at is not None:
                self.stats.time_to_first_byte.observe(now - self.start_requested_at)
            return StreamRead(closes, first_bytes=True)
        if buffer.unpublished >= FLUSH_BYTES:
            closes += self.flush(now, max_lag_seconds)
        elif self.flush_deadline is None and buffer.unpublished >= TS_PACKET_SIZE:
            self.flush_deadline = now + flush_interval
        return StreamRead(closes)

    def _rest_or_watch(self, got: int, now: float) -> None:
        """After bytes, rest the stream for READ_PAUSE; after none, watch it for the next.

        Not while ffmpeg bursts a cold start's first join_burst_seconds: then the stream
        is read as it comes, since its first viewer may be leaving already, and a leave
        shows only on the next send (Viewer.reset_by_peer). Nor after a read of a flush's
        worth or more: a stream that fast gives large reads anyway, and resting it would
        cap it at what the socket holds (about 200 KB) per READ_PAUSE, some 13 Mbit/s."""
        live = self.stats.live_since
        if 0 < got < FLUSH_BYTES and live is not None and now - live > self.config.join_burst_seconds + 1.0:
            if self.read_deadline is None:
                self._selector.unregister(self.stream_sock)
            self.read_deadline = now + READ_PAUSE
        elif self.read_deadline is not None:
            self._selector.register(self.stream_sock, selectors.EVENT_READ, self)
            self.read_deadline = None

    def _next_stream(self, max_lag_seconds: float) -> bool:
        """At EOF: go on with a restarted ffmpeg's stream if one is queued."""
        stream, following = self.stream_id, self.next_stream_sock
        self.next_stream_sock = None
        self.close_stream()
        if following is None:
            log.info("channel %s: stream %s ended", self.id, stream)
            return False
        log.warning("channel %s: ffmpeg was restarted; its viewers continue", self.id)
        self.stats.stream_restarts += 1
        self._attach(following, stream, max_lag_seconds)
        return True

    def _grow(self, now: float, max_lag_seconds: float) -> bool:
        """Grow the ring when it holds less than held_seconds() of the stream.

        The first size comes from the configured bitrate; a passthrough source, or a
        reload that raised max_lag_seconds, can outrun it, and viewers would be dropped
        by the ring's wrap rather than by their real lag. Never past ring_limit(), which the
        log says once: a stream that fast is not what the configuration says it is."""
        buffer = self.buffer
        arrived = buffer.arrival_time(buffer.oldest)
        held = now - arrived if arrived is not None else 0.0
        wanted = self.held_seconds(max_lag_seconds)
        limit = self.ring_limit(max_lag_seconds)
        if held >= wanted or buffer.capacity >= limit:
            if held < wanted and not self.said_ring_full:
                self.said_ring_full = True
                log.warning("channel %s: the stream runs faster than %d times its configured %d kbit/s: its "
                            "buffer stays at %d MiB and viewers further behind are dropped (is video_kbps right?)",
                            self.id, RATE_HEADROOM, self.config.video_kbps + self.config.audio_kbps,
                            buffer.capacity // (1024 * 1024))
            return False
        rate = buffer.capacity / max(held, 0.05)
        capacity = min(limit, max(2 * buffer.capacity, int(rate * wanted * 1.25)))
        self.buffer = buffer.grown(capacity)
        log.warning("channel %s: the stream runs at %.1f MB/s: buffer grown to %d MiB", self.id,
                    rate / 1e6, capacity // (1024 * 1024))
        return True

    def _overrun_by(self, destroyed_before: int) -> list[Close]:
        if destroyed_before <= self._cursors_from:
            return []
        closes = []
        lowest = self.buffer.end
        for viewer in self.viewers:
            if viewer.blocked and viewer.cursor < destroyed_before:
                log.warning("channel %s: dropping slow viewer %s: the buffer moved past it", self.id, viewer.peer)
                self.stats.viewers_dropped_slow += 1
                closes.append(Close(viewer, "too slow"))
            elif viewer.cursor < lowest:
                lowest = viewer.cursor
        self._cursors_from = lowest
        return closes

    def keep_alive(self, now: float, max_lag_seconds: float) -> list[Close]:
        """The stream has been silent since its deadline: a null packet to every viewer, as if the
        stream had sent it, so that one who left is found by the send (and returned to close)."""
        self.keep_alive_deadline = now + KEEP_ALIVE_SECONDS
        buffer = self.buffer
        # Only between whole packets, all of them published: a stream that stopped in the middle
        # of a packet would have its next bytes misplaced.
        if buffer is None or not self.viewers or buffer.unpublished or buffer.end % TS_PACKET_SIZE:
            return []
        closes = self._overrun_by(buffer.overwritten_by(TS_PACKET_SIZE))
        written = 0
        while written < TS_PACKET_SIZE:  # in two pieces where the ring wraps
            space = buffer.writable()
            n = min(len(space), TS_PACKET_SIZE - written)
            space[:n] = NULL_PACKET[written:written + n]
            self.scanner.feed(space[:n], buffer.end)
            buffer.wrote(n, now)
            written += n
        self.stats.bytes_in += TS_PACKET_SIZE  # into the ring like any other byte: bytes out never exceed it
        return closes + self.flush(now, max_lag_seconds)

    # The fan-out

    def flush(self, now: float, max_lag_seconds: float) -> list[Close]:
        """Publish what arrived and send it to every viewer; the slow and the gone are returned to close."""
        self.flush_deadline = None
        buffer = self.buffer
        if buffer is None or not buffer.publish():
            return []
        closes: list[Close] = []
        blocked: list[Viewer] = []
        # The hot path: most viewers are caught up, all at the same cursor, so they get
        # the same slice of the ring with one send each. Anything else (a partial send,
        # the ring's wrap, a pending head) takes the general path, Viewer.send().
        end = buffer.published
        sliced_at, piece = -1, None
        for viewer in self.viewers:
            if viewer.blocked:
                blocked.append(viewer)
                continue
            if not viewer.pending:
                if viewer.cursor != sliced_at:
                    sliced_at, piece = viewer.cursor, buffer.chunk(viewer.cursor)
                try:
                    viewer.cursor += viewer.sock.send(piece)
                except BlockingIOError:
                    pass
                except OSError:
                    closes.append(Close(viewer, "connection lost"))
                    continue
                if viewer.cursor == end:
                    if viewer.read_closed and viewer.reset_by_peer():
                        closes.append(Close(viewer, "left"))
                    continue
            if viewer.send(buffer) is Sent.LOST:
                closes.append(Close(viewer, "connection lost"))
        for viewer in blocked:
            lag = buffer.lag(viewer.cursor - viewer.unsent_in_kernel(), now) - viewer.allowance
            if lag > max_lag_seconds:
                log.warning("channel %s: dropping slow viewer %s: %.1f s behind (limit %.1f s)",
                            self.id, viewer.peer, lag, max_lag_seconds)
                self.stats.viewers_dropped_slow += 1
                closes.append(Close(viewer, "too slow"))
        return closes

    # Viewers

    def admit(self, viewer: Viewer, from_start: bool, now: float) -> Sent:
        """Start sending the stream: the 200, then from where a joiner should start."""
        buffer = self.buffer
        viewer.phase = Phase.WATCHING
        viewer.pending = responses.stream_head()
        if from_start:
            viewer.cursor = 0
        elif self.config.join == "live":
            viewer.cursor = buffer.published
        else:
            self._join_at_keyframe(viewer, now)
        viewer.start_cursor = viewer.cursor
        self._cursors_from = min(self._cursors_from, viewer.cursor)
        viewer.bound_send_buffer(max(32 * 1024, self.config.bytes_per_second // 2))
        sent = viewer.send(buffer)
        (self.stats.cold_start if from_start else self.stats.join).observe(now - viewer.requested_at)
        return sent

    def _join_at_keyframe(self, viewer: Viewer, now: float) -> None:
        """Start a late joiner at PAT, PMT and a keyframe at least join_burst_seconds back.

        The burst lets a player that probes before it plays (ffmpeg, ffprobe: 5 s) start at
        once. Its cursor simply starts further back in the shared buffer; the only bytes of
        its own are a PAT/PMT prefix, and only where the stream lacks them there. A channel
        live for less than the burst gives what it holds, from its oldest keyframe.
        """
        buffer = self.buffer
        oldest = -(-buffer.oldest // TS_PACKET_SIZE) * TS_PACKET_SIZE
        point = None
        if self.config.join_burst_seconds > 0:
            burst_from = buffer.offset_at(now - self.config.join_burst_seconds)
            burst_from -= burst_from % TS_PACKET_SIZE
            point = self.scanner.join_point(oldest, burst_from + TS_PACKET_SIZE) if burst_from > oldest else None
            if point is None or not point.at_keyframe:
                point = self.scanner.earliest_join_point(oldest, buffer.published)
        if point is None:
            point = self.scanner.join_point(oldest, buffer.published)
        if point is None:
            viewer.cursor = buffer.published
            return
        viewer.cursor = point.offset
        viewer.pending += point.prefix
        viewer.allowance = buffer.lag(point.offset, now)
        if not point.at_keyframe and not self.said_no_keyframe:
            self.said_no_keyframe = True
            log.warning("channel %s: no keyframe in the buffer; late joiners start at PAT/PMT "
                        "without one (does the source set keyframes?)", self.id)

    def remove(self, viewer: Viewer) -> None:
        """The viewer is closed: count what it was sent."""
        if viewer.phase is Phase.WATCHING:
            self.stats.bytes_out_closed += viewer.cursor - viewer.start_cursor
