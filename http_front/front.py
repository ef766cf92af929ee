"""Front: the one selectors loop that accepts viewers and fans each channel's stream out.

Per channel, the stream FD that the Air worker handed over is read once into a
StreamBuffer; every viewer of the channel is a cursor into it. Reads are gathered and
published to viewers in large pieces (flush_bytes, or flush_interval after the first
unpublished byte), so a send moves tens of kilobytes, not one ffmpeg write's worth.
A viewer whose socket is full is left behind, never waited for; once its first
missing byte is older than max_lag_seconds it is dropped.
"""

from __future__ import annotations

import collections
import logging
import os
import selectors
import signal
import socket
import time

from dataclasses import replace

from retrovue_air import config as config_module
from retrovue_air import wire
from retrovue_air.config import Config

from . import metrics, responses, routes, status_page
from .channel import Channel
from .channel_lifecycle import (Action, Admit, ChannelLifecycle, Disconnect, Refuse, RequestStream,
                                State, StopStream, stream_numbers)
from .stream_buffer import TS_PACKET, StreamBuffer
from .ts_packets import TsScanner
from .request_reader import Gone, Ignored, NeedMore, ReadClosed, Reject, Request
from .viewer import Phase, Sent, Viewer

log = logging.getLogger("http_front")

FLUSH_BYTES = 64 * 1024
ACCEPTS_PER_WAKEUP = 64
MIN_BUFFER = 4 * 1024 * 1024


class Front:
    def __init__(self, config: Config, listener: socket.socket, control: socket.socket,
                 inbox: socket.socket, instance: str):
        self.config = config
        self.listener = listener
        self.control = control
        self.inbox = inbox
        self.instance = instance
        # Stream ids name workers' inboxes: they must not repeat after a front restart, while
        # the old front's workers may still be stopping. (The supervisor's generation number
        # for this front belongs here; until it passes one, our pid is new to this boot.)
        self.next_stream = stream_numbers(os.getpid())
        self.channels = {c.id: Channel(c, ChannelLifecycle(c.id, self.next_stream,
                                                           retry_after=config.failed_retry_seconds))
                         for c in config.channels}
        self.channel_ids = frozenset(self.channels)
        self.retired: dict[str, Channel] = {}  # removed by a reload, their worker not yet reaped
        self.viewers: dict[int, Viewer] = {}
        # Connections still sending their request, oldest first: the slowloris sweep
        # looks only at the head of this queue, so there is no timer per connection.
        self.reading: dict[Viewer, None] = {}
        self.per_address: collections.Counter[str] = collections.Counter()
        self.stopped_streams: set[int] = set()
        self.sel = selectors.DefaultSelector()
        self.running = True

    # The loop

    def run(self) -> int:
        wake_r, wake_w = socket.socketpair()
        wake_w.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, lambda *_: None)
        for sock in (self.listener, self.control):
            sock.setblocking(False)
        self.sel.register(wake_r, selectors.EVENT_READ, ("signal", None))
        self.sel.register(self.listener, selectors.EVENT_READ, ("accept", None))
        self.sel.register(self.control, selectors.EVENT_READ, ("control", None))
        self.sel.register(self.inbox, selectors.EVENT_READ, ("inbox", None))
        log.info("serving on %s:%d", *self.listener.getsockname()[:2])
        self.tell_supervisor(wire.FrontReady())
        try:
            while self.running:
                events = self.sel.select(self.timeout())
                # A worker's last word (StreamFailed, in the inbox) is sent before it
                # exits, so it is handled before the supervisor's news of that exit.
                events.sort(key=lambda e: e[0].data[0] != "inbox")
                for key, mask in events:
                    kind, obj = key.data
                    if kind == "viewer":
                        # Closed earlier in this round, perhaps with its fd number reused since.
                        if self.viewers.get(obj.fd) is obj:
                            self.viewer_event(obj, mask)
                    elif kind == "stream":
                        if obj.stream_sock is not None and obj.stream_sock.fileno() == key.fd:
                            self.read_stream(obj)
                    elif kind == "accept":
                        self.accept()
                    elif kind == "inbox":
                        self.read_inbox()
                    elif kind == "control":
                        self.read_control()
                    elif kind == "signal":
                        if signal.SIGTERM in wake_r.recv(64):
                            log.info("terminating")
                            self.running = False
                self.flush_due()
                self.check_deadlines()
        finally:
            self.shutdown()
            signal.set_wakeup_fd(-1)
            wake_r.close()
            wake_w.close()
        return 0

    def timeout(self) -> float | None:
        deadlines = [d for c in self.channels.values() for d in (c.flush_deadline, c.start_deadline) if d]
        if self.reading:
            deadlines.append(next(iter(self.reading)).connected_at + self.config.request_timeout_seconds)
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def check_deadlines(self) -> None:
        now = time.monotonic()
        while self.reading:
            oldest = next(iter(self.reading))
            if oldest.connected_at + self.config.request_timeout_seconds > now:
                break
            log.info("%s: no complete request within %g s: closed", oldest.peer,
                     self.config.request_timeout_seconds)
            self.close_viewer(oldest, "request timeout")
        for channel in self.channels.values():
            if channel.start_deadline is not None and channel.start_deadline <= now:
                channel.start_deadline = None
                reason = f"no stream within {self.config.start_timeout_seconds:g} s"
                log.error("channel %s: %s; giving up on stream %s", channel.id, reason, channel.lifecycle.stream)
                self.carry_out(channel, channel.lifecycle.start_timed_out(channel.lifecycle.stream, reason, now))

    def shutdown(self) -> None:
        for viewer in list(self.viewers.values()):
            self.close_viewer(viewer, "service stopping", tune_out=False)
        for channel in [*self.channels.values(), *self.retired.values()]:
            if channel.lifecycle.stream is not None:
                self.stop_stream(channel, channel.lifecycle.stream)
        self.sel.close()

    # Viewers: accept, read the request, route it

    def accept(self) -> None:
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                sock, addr = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as e:  # EMFILE and friends: the next round tries again
                log.warning("accept failed: %s", e)
                return
            sock.setblocking(False)
            viewer = Viewer(sock, f"{addr[0]}:{addr[1]}", time.monotonic())
            viewer.address = addr[0]
            self.viewers[viewer.fd] = viewer
            self.per_address[viewer.address] += 1
            self.sel.register(sock, selectors.EVENT_READ, ("viewer", viewer))
            limit = self.connection_limit(viewer)
            if limit:
                self.refuse(viewer, limit)
            else:
                self.reading[viewer] = None

    def connection_limit(self, viewer: Viewer) -> str | None:
        if len(self.viewers) > self.config.max_connections:
            return f"the server is full ({self.config.max_connections} connections)"
        if self.per_address[viewer.address] > self.config.max_connections_per_address:
            return f"too many connections from {viewer.address} (limit {self.config.max_connections_per_address})"
        return None

    def refuse(self, viewer: Viewer, why: str) -> None:
        log.warning("%s: refused: %s", viewer.peer, why)
        self.respond(viewer, responses.text(503, why, [("Retry-After", "10")]))

    def viewer_event(self, viewer: Viewer, mask: int) -> None:
        if mask & selectors.EVENT_READ:
            if not self.read_request(viewer):
                return
        if mask & selectors.EVENT_WRITE and self.viewers.get(viewer.fd) is viewer:
            self.pump(viewer)

    def read_request(self, viewer: Viewer) -> bool:
        """Read from the viewer; False if it is gone."""
        try:
            data = viewer.sock.recv(65536)
        except BlockingIOError:
            return True
        except OSError:
            data = b""
        if data and viewer.phase is not Phase.REQUEST:
            return True  # refused at accept, or past its head: what it sends is ignored
        result = viewer.reader.feed(data)
        if isinstance(result, (NeedMore, Ignored)):
            return True
        if isinstance(result, (Gone, ReadClosed)):
            self.close_viewer(viewer, "left")
            return False
        self.reading.pop(viewer, None)
        if isinstance(result, Reject):
            log.info("%s: bad request (%s): %s", viewer.peer, result.status, result.why)
            self.respond(viewer, responses.text(result.status, result.text))
        else:
            self.handle_request(viewer, result)
        return True

    def handle_request(self, viewer: Viewer, request: Request) -> None:
        r = routes.route(request.method, request.target, self.channel_ids)
        if isinstance(r, routes.Refuse):
            log.info("%s: %s %s -> %d", viewer.peer, request.method.decode(),
                     request.target.decode("ascii", "replace")[:200], r.status)
            self.respond(viewer, responses.text(r.status, r.text, r.headers))
        elif isinstance(r, routes.Health):
            self.respond(viewer, responses.text(200, "ok", head_only=r.head_only))
        elif isinstance(r, routes.ChannelList):
            body = [c.summary() for c in self.channels.values()]
            self.respond(viewer, responses.json_body(200, body, head_only=r.head_only))
        elif isinstance(r, routes.StatusPage):
            page = status_page.render(self, request.host)
            self.respond(viewer, responses.body(200, "text/html; charset=utf-8", page, r.head_only))
        elif isinstance(r, routes.Metrics):
            content_type, data = metrics.render(self)
            self.respond(viewer, responses.body(200, content_type, data, r.head_only))
        elif isinstance(r, routes.Playlist):
            chosen = [self.channels[r.channel]] if r.channel else list(self.channels.values())
            data = status_page.m3u(chosen, request.host)
            self.respond(viewer, responses.body(200, "audio/x-mpegurl", data, r.head_only))
        elif r.head_only:
            self.respond(viewer, responses.stream_head())
        else:
            channel = self.channels[r.channel]
            limit = self.viewer_limit(channel)
            if limit:
                self.refuse(viewer, limit)
                return
            viewer.phase = Phase.WAITING
            viewer.channel = channel.id
            log.info("channel %s: tune in %s (%d viewers)", channel.id, viewer.peer,
                     channel.lifecycle.viewer_count + 1)
            self.carry_out(channel, channel.lifecycle.tune_in(viewer, time.monotonic()))

    def viewer_limit(self, channel: Channel) -> str | None:
        if channel.lifecycle.viewer_count >= self.config.max_viewers_per_channel:
            return f"channel {channel.id} is full ({self.config.max_viewers_per_channel} viewers)"
        active = sum(1 for c in self.channels.values() if c.lifecycle.viewer_count)
        if not channel.lifecycle.viewer_count and active >= self.config.max_active_channels:
            return f"too many channels on air ({self.config.max_active_channels})"
        return None

    def respond(self, viewer: Viewer, data: bytes) -> None:
        """Send a final response, then close once it is out."""
        viewer.phase = Phase.CLOSING
        viewer.pending = data
        self.pump(viewer)

    def pump(self, viewer: Viewer) -> None:
        channel = self.channel_of(viewer)
        result = viewer.send(channel.buffer if channel else None)
        if result is Sent.LOST:
            self.close_viewer(viewer, "connection lost")
        elif result is Sent.BLOCKED:
            if not viewer.blocked:
                viewer.blocked = True
                self.sel.modify(viewer.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, ("viewer", viewer))
                if channel is not None and viewer.phase is Phase.WATCHING:
                    channel.blocked.add(viewer)
        elif viewer.phase is Phase.CLOSING:
            self.close_viewer(viewer, None)
        elif viewer.blocked:
            viewer.blocked = False
            self.sel.modify(viewer.sock, selectors.EVENT_READ, ("viewer", viewer))
            if channel is not None:
                channel.blocked.discard(viewer)

    def close_viewer(self, viewer: Viewer, why: str | None, tune_out: bool = True) -> None:
        if self.viewers.get(viewer.fd) is not viewer:
            return
        del self.viewers[viewer.fd]
        self.reading.pop(viewer, None)
        self.per_address[viewer.address] -= 1
        if not self.per_address[viewer.address]:
            del self.per_address[viewer.address]
        self.sel.unregister(viewer.sock)
        if viewer.phase is Phase.CLOSING:
            # Read what the peer already sent, so that close() does not answer it with
            # a reset that could destroy our response before the peer reads it.
            try:
                viewer.sock.shutdown(socket.SHUT_WR)
                while viewer.sock.recv(65536):
                    pass
            except OSError:
                pass
        viewer.sock.close()
        channel = self.channel_of(viewer)
        if channel is None or viewer.phase is Phase.CLOSING:
            return
        channel.blocked.discard(viewer)
        if channel.viewers.pop(viewer, 0) is None:
            channel.stats.bytes_out_closed += viewer.cursor - viewer.start_cursor
        if tune_out:
            log.info("channel %s: tune out %s: %s (%d viewers)", channel.id, viewer.peer, why,
                     channel.lifecycle.viewer_count - 1)
            self.carry_out(channel, channel.lifecycle.tune_out(viewer))

    # The lifecycle's decisions

    def carry_out(self, channel: Channel, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, RequestStream):
                self.request_stream(channel, action.stream)
            elif isinstance(action, StopStream):
                self.stop_stream(channel, action.stream)
            elif isinstance(action, Admit):
                for viewer in action.viewers:
                    self.admit(channel, viewer, action.from_start)
            elif isinstance(action, Refuse):
                log.warning("channel %s: refusing %d viewers: %s", channel.id, len(action.viewers), action.reason)
                for viewer in action.viewers:
                    self.respond(viewer, responses.text(503, f"channel {channel.id} is unavailable: {action.reason}",
                                                        [("Retry-After", "5")]))
            elif isinstance(action, Disconnect):
                log.warning("channel %s: closing %d viewers: %s", channel.id, len(action.viewers), action.reason)
                for viewer in action.viewers:
                    self.close_viewer(viewer, action.reason, tune_out=False)
        if not channel.viewers and channel.stream_sock is None and channel.buffer is not None:
            channel.buffer = None  # nobody reads it and nothing writes it
            channel.scanner = None
            channel.stats.live_since = None

    def request_stream(self, channel: Channel, stream: int) -> None:
        log.info("channel %s: starting stream %d", channel.id, stream)
        channel.stats.streams_started += 1
        channel.start_requested_at = time.monotonic()
        channel.start_deadline = channel.start_requested_at + self.config.start_timeout_seconds
        try:
            wire.send(self.control, wire.StartStream(channel.id, stream))
        except OSError as e:
            log.error("channel %s: cannot reach the supervisor: %s", channel.id, e)
            self.running = False

    def stop_stream(self, channel: Channel, stream: int) -> None:
        if stream not in self.stopped_streams:
            self.stopped_streams.add(stream)
            if channel.lifecycle.stream in (stream, None):  # not a stale stream's: the deadline is the current one's
                channel.stop_requested_at = time.monotonic()
                channel.start_deadline = None
            try:
                wire.send(self.inbox, wire.Stop(stream), wire.air_inbox_address(self.instance, stream))
            except OSError:
                pass  # the worker is already gone; the supervisor reaps it either way
        if channel.stream_id == stream:
            self.close_stream(channel)

    def close_stream(self, channel: Channel) -> None:
        """Close the stream FDs; the buffer stays while viewers may continue in it."""
        if channel.stream_sock is not None:
            self.sel.unregister(channel.stream_sock)
            channel.stream_sock.close()
            channel.stream_sock = None
        if channel.next_stream_sock is not None:
            channel.next_stream_sock.close()
            channel.next_stream_sock = None
        channel.stream_id = None

    def admit(self, channel: Channel, viewer: Viewer, from_start: bool) -> None:
        buffer = channel.buffer
        viewer.phase = Phase.WATCHING
        viewer.pending = responses.stream_head()
        if from_start:
            viewer.cursor = 0
        elif channel.config.join == "live":
            viewer.cursor = buffer.published
        else:
            self.join_at_keyframe(channel, viewer)
        viewer.start_cursor = viewer.cursor
        # The kernel would otherwise grow a stalled viewer's send buffer to megabytes
        # (seconds of stream) before our cursor fell behind at all.
        sndbuf = max(32 * 1024, channel.config.bytes_per_second // 2)
        try:
            viewer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        except OSError:
            pass
        channel.viewers[viewer] = None
        self.pump(viewer)

    def join_at_keyframe(self, channel: Channel, viewer: Viewer) -> None:
        """Start a late joiner at PAT, PMT and the latest GOP still in the buffer.

        Its cursor simply starts further back in the shared buffer; the only bytes of
        its own are a PAT/PMT prefix, and only where the stream lacks them there.
        """
        buffer = channel.buffer
        oldest = -(-buffer.oldest // TS_PACKET) * TS_PACKET
        point = channel.scanner.join_point(oldest, buffer.published)
        log.debug("channel %s: join point for %s in [%d, %d): %s", channel.id, viewer.peer, oldest,
                  buffer.published, point and (point.offset, len(point.prefix), point.at_keyframe))
        if point is None:
            viewer.cursor = buffer.published
            return
        viewer.cursor = point.offset
        viewer.pending += point.prefix
        if not point.at_keyframe and not channel.said_no_keyframe:
            channel.said_no_keyframe = True
            log.warning("channel %s: no keyframe in the buffer; late joiners start at PAT/PMT "
                        "without one (does the source set keyframes?)", channel.id)

    # Messages from the supervisor and the workers

    def read_control(self) -> None:
        while True:
            try:
                data = self.control.recv(wire.MAX_MESSAGE)
            except BlockingIOError:
                return
            if not data:
                log.error("the supervisor is gone")
                self.running = False
                return
            try:
                message = wire.decode(data)
            except wire.ProtocolError as e:
                log.error("bad message from the supervisor: %s", e)
                continue
            if isinstance(message, wire.Ping):
                live = sum(1 for c in self.channels.values() if c.lifecycle.viewer_count)
                viewers = sum(c.lifecycle.viewer_count for c in self.channels.values())
                self.tell_supervisor(wire.Pong(viewers, live))
                continue
            if isinstance(message, wire.Reload):
                self.reload(message)
                continue
            channel = self.channels.get(getattr(message, "channel", "")) or self.retired.get(
                getattr(message, "channel", ""))
            if channel is None:
                continue
            if isinstance(message, wire.WorkerSpawned):
                self.carry_out(channel, channel.lifecycle.worker_spawned(message.stream, message.pid))
            elif isinstance(message, wire.WorkerExited):
                if message.stream in self.stopped_streams and channel.stop_requested_at is not None:
                    took = time.monotonic() - channel.stop_requested_at
                    channel.stats.teardown.observe(took)
                    log.info("channel %s: stream %d torn down in %.3f s (air worker %s)",
                             channel.id, message.stream, took, message.status)
                    channel.stop_requested_at = None
                self.carry_out(channel, channel.lifecycle.worker_exited(message.stream, message.status,
                                                                        time.monotonic()))
                self.stopped_streams.discard(message.stream)
                self.forget_retired(channel)

    def tell_supervisor(self, message: wire.Message) -> None:
        try:
            wire.send(self.control, message)
        except OSError as e:
            log.error("cannot reach the supervisor: %s", e)
            self.running = False

    def reload(self, message: wire.Reload) -> None:
        """Apply a new configuration: unchanged channels see no gap, changed ones take it
        for their next stream, removed ones close their viewers and stop."""
        try:
            new = config_module.parse(message.text, message.path)
        except config_module.ConfigError as e:  # the supervisor validated it: should not happen
            log.error("reload refused: %s", e)
            return
        self.config = replace(new, listen=self.config.listen)
        wanted = {c.id: c for c in new.channels}
        for channel_id in [c for c in self.channels if c not in wanted]:
            channel = self.channels.pop(channel_id)
            log.info("channel %s: removed by the new configuration; closing its viewers", channel_id)
            self.retired[channel_id] = channel
            for viewer in list(channel.lifecycle.waiting):
                self.respond(viewer, responses.text(404, "no such channel"))
                self.carry_out(channel, channel.lifecycle.tune_out(viewer))
            for viewer in list(channel.viewers):
                self.close_viewer(viewer, "channel removed")
            self.forget_retired(channel)
        for channel_id, channel_config in wanted.items():
            if channel_id in self.channels:
                if self.channels[channel_id].config != channel_config:
                    log.info("channel %s: changed; the change applies to its next stream", channel_id)
                self.channels[channel_id].config = channel_config
            else:
                log.info("channel %s: added", channel_id)
                self.channels[channel_id] = Channel(channel_config, ChannelLifecycle(
                    channel_id, self.next_stream, retry_after=new.failed_retry_seconds))
            self.channels[channel_id].lifecycle.retry_after = new.failed_retry_seconds
        self.channel_ids = frozenset(self.channels)

    def channel_of(self, viewer: Viewer) -> Channel | None:
        if viewer.channel is None:
            return None
        return self.channels.get(viewer.channel) or self.retired.get(viewer.channel)

    def forget_retired(self, channel: Channel) -> None:
        if channel.id in self.retired and channel.lifecycle.state in (State.IDLE, State.FAILED):
            del self.retired[channel.id]

    def read_inbox(self) -> None:
        while True:
            try:
                message, fds = wire.receive(self.inbox)
            except BlockingIOError:
                return
            except wire.ProtocolError as e:
                log.warning("ignored a message in the inbox: %s", e)
                continue
            channel = self.channels.get(getattr(message, "channel", "")) or self.retired.get(
                getattr(message, "channel", ""))
            if isinstance(message, wire.StreamReady) and len(fds) == 1 and channel is not None:
                self.stream_ready(channel, message, fds[0])
                continue
            for fd in fds:
                os.close(fd)
            if isinstance(message, wire.StreamFailed) and channel is not None:
                log.error("channel %s: stream %d failed: %s", channel.id, message.stream, message.reason)
                channel.failure_tail = message.stderr_tail
                self.carry_out(channel, channel.lifecycle.stream_failed(message.stream, message.reason))

    def stream_ready(self, channel: Channel, message: wire.StreamReady, fd: int) -> None:
        sock = socket.socket(fileno=fd)
        actions = channel.lifecycle.stream_ready(message.stream, message.ffmpeg_pid)
        if actions:  # nobody wants it any more
            sock.close()
            self.carry_out(channel, actions)
            return
        sock.setblocking(False)
        if channel.stream_id == message.stream and channel.stream_sock is not None:
            # The worker restarted ffmpeg: read the old stream to its end first.
            if channel.next_stream_sock is not None:
                channel.next_stream_sock.close()
            channel.next_stream_sock = sock
            return
        self.close_stream(channel)
        self.attach_stream(channel, sock, message.stream)

    def attach_stream(self, channel: Channel, sock: socket.socket, stream: int) -> None:
        channel.stream_sock = sock
        channel.stream_id = stream
        if channel.buffer is None:
            capacity = max(MIN_BUFFER, int(2 * self.config.max_lag_seconds * channel.config.bytes_per_second))
            channel.buffer = StreamBuffer(capacity)
        else:
            # Viewers continue in the same buffer. A killed ffmpeg may have left half a
            # packet, which was never published: drop it so the next stream is aligned.
            channel.buffer.discard_partial_packet()
        channel.scanner = TsScanner()
        self.sel.register(sock, selectors.EVENT_READ, ("stream", channel))

    # The stream

    def read_stream(self, channel: Channel) -> None:
        buffer = channel.buffer
        now = time.monotonic()
        end_before = buffer.end
        for _ in range(8):
            space = buffer.writable()
            self.drop_overrun(channel, buffer.overwritten_by(len(space)))
            try:
                n = channel.stream_sock.recv_into(space)
            except BlockingIOError:
                break
            except OSError:
                n = 0
            if n == 0:
                self.stream_eof(channel)
                return
            channel.scanner.feed(space[:n], buffer.end)
            buffer.wrote(n, now)
            channel.stats.bytes_in += n
            if n < len(space):
                break
        if channel.lifecycle.state is State.REPLACING and buffer.end > end_before:
            channel.start_deadline = None  # the replacement's first bytes: its viewers continue
            self.carry_out(channel, channel.lifecycle.first_bytes(channel.stream_id))
        if channel.lifecycle.state is State.STARTING and buffer.end >= 188:
            buffer.publish()
            channel.stats.live_since = now
            channel.start_deadline = None
            if channel.start_requested_at is not None:
                channel.stats.time_to_first_byte.observe(now - channel.start_requested_at)
            self.carry_out(channel, channel.lifecycle.first_bytes(channel.stream_id))
            return
        if buffer.unpublished >= FLUSH_BYTES:
            self.flush(channel, now)
        elif channel.flush_deadline is None and buffer.unpublished >= 188:
            channel.flush_deadline = now + self.config.flush_interval

    def stream_eof(self, channel: Channel) -> None:
        stream, following = channel.stream_id, channel.next_stream_sock
        channel.next_stream_sock = None
        self.close_stream(channel)
        if following is not None:
            log.warning("channel %s: ffmpeg was restarted; its viewers continue", channel.id)
            channel.stats.stream_restarts += 1
            self.attach_stream(channel, following, stream)
            return
        log.info("channel %s: stream %s ended", channel.id, stream)
        self.carry_out(channel, channel.lifecycle.stream_ended(stream, time.monotonic()))

    def flush_due(self) -> None:
        now = time.monotonic()
        for channel in self.channels.values():
            if channel.flush_deadline is not None and channel.flush_deadline <= now:
                self.flush(channel, now)

    def flush(self, channel: Channel, now: float) -> None:
        channel.flush_deadline = None
        buffer = channel.buffer
        if buffer is None or not buffer.publish():
            return
        # The hot path: most viewers are caught up, all at the same cursor, so they get
        # the same slice of the ring with one send each. Anything else (a partial send,
        # the ring's wrap, a pending head) takes the general path, pump().
        end = buffer.published
        sliced_at, piece = -1, None
        for viewer in list(channel.viewers):
            if viewer.blocked:
                continue
            if viewer.pending:
                self.pump(viewer)
                continue
            if viewer.cursor != sliced_at:
                sliced_at, piece = viewer.cursor, buffer.chunk(viewer.cursor)
            try:
                viewer.cursor += viewer.sock.send(piece)
            except BlockingIOError:
                pass
            except OSError:
                self.close_viewer(viewer, "connection lost")
                continue
            if viewer.cursor != end:
                self.pump(viewer)
        for viewer in list(channel.blocked):
            lag = buffer.lag(viewer.cursor - viewer.unsent_in_kernel(), now)
            if lag > self.config.max_lag_seconds:
                log.warning("channel %s: dropping slow viewer %s: %.1f s behind (limit %.1f s)",
                            channel.id, viewer.peer, lag, self.config.max_lag_seconds)
                channel.stats.viewers_dropped_slow += 1
                self.close_viewer(viewer, "too slow")

    def drop_overrun(self, channel: Channel, destroyed_before: int) -> None:
        for viewer in list(channel.blocked):
            if viewer.cursor < destroyed_before:
                log.warning("channel %s: dropping slow viewer %s: the buffer moved past it",
                            channel.id, viewer.peer)
                channel.stats.viewers_dropped_slow += 1
                self.close_viewer(viewer, "too slow")


def run_front(config: Config, listener: socket.socket, control: socket.socket,
              inbox: socket.socket, instance: str) -> int:
    return Front(config, listener, control, inbox, instance).run()
