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
import errno
import itertools
import logging
import os
import resource
import selectors
import signal
import socket
import time

import h11

from dataclasses import replace

from retrovue_air import wire
from retrovue_air.config import Config
from retrovue_air.logs import RepeatedLine

from . import discovery, metrics, presentation, responses, routes, status_page, tuner
from .channel import Channel, host_of
from .channel_lifecycle import (Action, Admit, ChannelLifecycle, Disconnect, Refuse, RequestStream,
                                State, StopStream)
from .stream_buffer import TS_PACKET, StreamBuffer
from .ts_packets import TsScanner
from .viewer import MAX_REQUEST_HEAD, Phase, Sent, Viewer

log = logging.getLogger("http_front")

FLUSH_BYTES = 64 * 1024
ACCEPTS_PER_WAKEUP = 64
MIN_BUFFER = 4 * 1024 * 1024
MAX_BUFFER = 512 * 1024 * 1024
# Descriptors kept back from max_connections: the listener, the loop's own, and per
# channel a stream, a queued restarted stream and a worker link.
RESERVED_FDS = 32
FDS_PER_CHANNEL = 3
# Out of descriptors, accept() fails at once every time it is called: pause it this long.
ACCEPT_PAUSE_SECONDS = 0.5
# A worker told to STOP that the supervisor has not reported gone after this is
# handed to the supervisor to stop by signal.
STOP_GRACE_SECONDS = 2.0
STREAMS_PER_GENERATION = 1_000_000


class Front:
    def __init__(self, config: Config, listener: socket.socket, control: socket.socket, generation: int = 1):
        self.config = config
        self.listener = listener
        self.control = control
        # Stream ids never repeat across restarts of the front: each front (a generation,
        # counted by the supervisor) numbers its streams in a range of its own.
        self.next_stream = itertools.count(generation * STREAMS_PER_GENERATION + 1).__next__
        self.channels = {c.id: self.new_channel(c) for c in config.channels}
        self.channel_ids = frozenset(self.channels)
        self.retired: set[Channel] = set()  # removed by a reload, their worker not yet reaped
        self.streams: dict[int, Channel] = {}  # every stream asked for and not yet reaped
        self.links: dict[int, socket.socket] = {}  # stream -> the private link to its worker
        # Streams told to STOP, with the time after which their worker is stopped by signal.
        self.stop_deadlines: dict[int, float] = {}
        self.viewers: dict[int, Viewer] = {}
        # Connections still sending their request, and connections sending a final
        # response, oldest first: each sweep looks only at the head of its queue, so
        # there is no timer per connection.
        self.reading: dict[Viewer, None] = {}
        self.closing: dict[Viewer, float] = {}
        self.per_address: collections.Counter[str] = collections.Counter()
        self.sel = selectors.DefaultSelector()
        self.running = True
        self.accept_paused_until: float | None = None
        self.accept_failures = RepeatedLine(log, logging.WARNING)
        self.max_connections = self.connection_budget(config)

    def new_channel(self, config) -> Channel:
        return Channel(config, ChannelLifecycle(config.id, next_stream=self.next_stream,
                                                retry_after=self.config.failed_retry_seconds))

    def connection_budget(self, config: Config) -> int:
        """max_connections, lowered to what the fd limit allows: past it accept() could only fail."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        allowed = soft - RESERVED_FDS - FDS_PER_CHANNEL * len(config.channels)
        if soft != resource.RLIM_INFINITY and allowed < config.max_connections:
            allowed = max(1, allowed)
            log.warning("max_connections %d lowered: at most %d connections: the fd limit is %d",
                        config.max_connections, allowed, soft)
            return allowed
        return config.max_connections

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
        responder = discovery.responder_for(lambda: self.config, self.listener.getsockname()) if self.config.discovery else None
        for sock in responder.open() if responder else ():
            self.sel.register(sock, selectors.EVENT_READ, ("discovery", responder))
        log.info("serving on %s:%d", *self.listener.getsockname()[:2])
        self.tell_supervisor(wire.FrontReady())
        try:
            while self.running:
                events = self.sel.select(self.timeout())
                # A worker's last word (StreamFailed, on its link) is sent before it
                # exits, so it is handled before the supervisor's news of that exit.
                events.sort(key=lambda e: e[0].data[0] != "link")
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
                    elif kind == "link":
                        if self.links.get(obj) is not None and self.links[obj].fileno() == key.fd:
                            self.read_link(obj)
                    elif kind == "control":
                        self.read_control()
                    elif kind == "discovery":
                        obj.handle_readable(key.fileobj)
                    elif kind == "signal":
                        if signal.SIGTERM in wake_r.recv(64):
                            log.info("terminating")
                            self.running = False
                self.flush_due()
                self.check_deadlines()
        finally:
            self.shutdown()
            if responder:
                responder.close()
            signal.set_wakeup_fd(-1)
            wake_r.close()
            wake_w.close()
        return 0

    def all_channels(self) -> list[Channel]:
        return [*self.channels.values(), *self.retired]

    def timeout(self) -> float | None:
        deadlines = [d for c in self.all_channels() for d in (c.flush_deadline, c.start_deadline) if d]
        deadlines += self.stop_deadlines.values()
        if self.reading:
            deadlines.append(next(iter(self.reading)).connected_at + self.config.request_timeout_seconds)
        if self.closing:
            deadlines.append(next(iter(self.closing.values())))
        if self.accept_paused_until is not None:
            deadlines.append(self.accept_paused_until)
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
        while self.closing:
            oldest, deadline = next(iter(self.closing.items()))
            if deadline > now:
                break
            log.info("%s: response not taken within %g s: closed", oldest.peer, self.config.request_timeout_seconds)
            self.close_viewer(oldest, "response timeout")
        if self.accept_paused_until is not None and self.accept_paused_until <= now:
            self.accept_paused_until = None
            self.sel.register(self.listener, selectors.EVENT_READ, ("accept", None))
        for stream, deadline in list(self.stop_deadlines.items()):
            if deadline <= now:
                del self.stop_deadlines[stream]
                self.escalate_stop(stream)
        for channel in self.all_channels():
            if channel.start_deadline is not None and channel.start_deadline <= now:
                channel.start_deadline = None
                reason = f"no stream within {self.config.start_timeout_seconds:g} s"
                log.error("channel %s: %s; giving up on stream %s", channel.id, reason, channel.lifecycle.stream)
                self.carry_out(channel, channel.lifecycle.start_timed_out(channel.lifecycle.stream, reason, now))

    def shutdown(self) -> None:
        for viewer in list(self.viewers.values()):
            self.close_viewer(viewer, "service stopping", tune_out=False)
        for channel in self.all_channels():
            if channel.lifecycle.stream is not None:
                self.stop_stream(channel, channel.lifecycle.stream)
        for link in self.links.values():
            link.close()
        self.sel.close()

    # Viewers: accept, read the request, route it

    def accept(self) -> None:
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                sock, addr = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # The pending connection stays queued, so the listener stays readable:
                    # without a pause this loop would spin on accept() at 100 % CPU.
                    self.sel.unregister(self.listener)
                    self.accept_paused_until = time.monotonic() + ACCEPT_PAUSE_SECONDS
                    self.accept_failures.say(f"accept failed: {e.strerror}; pausing accepts for "
                                             f"{ACCEPT_PAUSE_SECONDS:g} s")
                else:
                    log.warning("accept failed: %s", e)
                return
            sock.setblocking(False)
            viewer = Viewer(sock, f"{addr[0]}:{addr[1]}", time.monotonic())
            viewer.address = addr[0]
            self.viewers[viewer.fd] = viewer
            self.per_address[viewer.address] += 1
            self.update_interest(viewer)
            limit = self.connection_limit(viewer)
            if limit:
                self.refuse(viewer, limit)
            else:
                self.reading[viewer] = None

    def connection_limit(self, viewer: Viewer) -> str | None:
        if len(self.viewers) > self.max_connections:
            return f"the server is full ({self.max_connections} connections)"
        if self.per_address[viewer.address] > self.config.max_connections_per_address:
            return f"too many connections from {viewer.address} (limit {self.config.max_connections_per_address})"
        return None

    def refuse(self, viewer: Viewer, why: str, headers: tuple = ()) -> None:
        log.warning("%s: refused: %s", viewer.peer, why)
        self.respond(viewer, responses.text(503, why, [("Retry-After", "10"), *headers]))

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
        if not data and viewer.phase is Phase.REQUEST:
            self.close_viewer(viewer, "left")
            return False
        if not data:
            # EOF after a whole request is a half-close (HTTP/1.0 tools, some proxies): the
            # client still reads. Stop reading; a client that is really gone shows on a send.
            viewer.read_closed = True
            self.update_interest(viewer)
            return True
        if viewer.phase is not Phase.REQUEST:
            return True  # a player may send anything once it is watching; it is ignored
        viewer.conn.receive_data(data)
        viewer.received += len(data)
        try:
            event = viewer.conn.next_event()
        except h11.RemoteProtocolError as e:
            status = e.error_status_hint if e.error_status_hint >= 400 else 400
            log.info("%s: bad request (%s): %s", viewer.peer, status, e)
            self.reading.pop(viewer, None)
            self.respond(viewer, responses.text(status, "bad request" if status == 400 else str(e)))
            return True
        if event is h11.NEED_DATA:
            return True
        self.reading.pop(viewer, None)
        if isinstance(event, h11.Request):
            # h11 bounds only a head still incomplete; one that arrived whole in a single
            # recv is measured here, so the limit does not depend on how TCP split it.
            head_size = viewer.received - len(viewer.conn.trailing_data[0])
            if head_size > MAX_REQUEST_HEAD:
                log.info("%s: request head of %d bytes: 431", viewer.peer, head_size)
                self.respond(viewer, responses.text(431, "request header fields too large"))
                return True
            self.handle_request(viewer, event)
        else:
            self.close_viewer(viewer, "closed before a request")
            return False
        return True

    def handle_request(self, viewer: Viewer, request: h11.Request) -> None:
        r = routes.route(request.method, request.target, self.channel_ids, presentation.guide_numbers(self.config))
        if isinstance(r, routes.Refuse):
            log.info("%s: %s %s -> %d", viewer.peer, request.method.decode(),
                     request.target.decode("ascii", "replace")[:200], r.status)
            self.respond(viewer, responses.text(r.status, r.text, r.headers))
        elif isinstance(r, routes.Health):
            self.respond(viewer, responses.text(200, "ok", head_only=r.head_only))
        elif isinstance(r, routes.ChannelList):
            body = [c.summary(self.config.expose_paths) for c in self.channels.values()]
            self.respond(viewer, responses.json_body(200, body, head_only=r.head_only))
        elif isinstance(r, routes.StatusPage):
            page = status_page.render(self, host_of(request))
            self.respond(viewer, responses.body(200, "text/html; charset=utf-8", page, r.head_only))
        elif isinstance(r, routes.Metrics):
            content_type, data = metrics.render(self)
            self.respond(viewer, responses.body(200, content_type, data, r.head_only))
        elif isinstance(r, presentation.PRESENTATION_ROUTES):
            schedules = {c.id: c.schedule for c in self.channels.values() if c.schedule is not None}
            self.respond(viewer, presentation.answer(r, self.config, schedules, host_of(request), time.time()))
        elif r.head_only:
            self.respond(viewer, responses.stream_head())
        else:
            channel = self.channels[r.channel]
            limit = self.viewer_limit(channel)
            if limit:
                # A channel nobody watches is refused only for want of a tuner (max_active_channels).
                self.refuse(viewer, limit, () if channel.lifecycle.viewer_count else tuner.ALL_TUNERS_IN_USE)
                return
            viewer.phase = Phase.WAITING
            viewer.channel = channel
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
        """Send a final response, then close once it is out (or at a deadline, if it is never taken)."""
        viewer.phase = Phase.CLOSING
        viewer.pending = data
        self.reading.pop(viewer, None)
        self.closing[viewer] = time.monotonic() + self.config.request_timeout_seconds
        self.pump(viewer)

    def update_interest(self, viewer: Viewer) -> None:
        """Register the viewer's socket for what it waits on: reading (until EOF), writing (while blocked)."""
        events = (0 if viewer.read_closed else selectors.EVENT_READ) | (selectors.EVENT_WRITE if viewer.blocked else 0)
        registered = viewer.registered
        if events and registered:
            self.sel.modify(viewer.sock, events, ("viewer", viewer))
        elif events:
            self.sel.register(viewer.sock, events, ("viewer", viewer))
        elif registered:
            self.sel.unregister(viewer.sock)
        viewer.registered = bool(events)

    def pump(self, viewer: Viewer) -> None:
        channel = self.channel_of(viewer)
        result = viewer.send(channel.buffer if channel else None)
        if result is Sent.LOST:
            self.close_viewer(viewer, "connection lost")
        elif result is Sent.BLOCKED:
            if not viewer.blocked:
                viewer.blocked = True
                self.update_interest(viewer)
                if channel is not None and viewer.phase is Phase.WATCHING:
                    channel.blocked.add(viewer)
        elif viewer.phase is Phase.CLOSING:
            self.close_viewer(viewer, None)
        elif viewer.blocked:
            viewer.blocked = False
            self.update_interest(viewer)
            if channel is not None:
                channel.blocked.discard(viewer)

    def close_viewer(self, viewer: Viewer, why: str | None, tune_out: bool = True) -> None:
        if self.viewers.get(viewer.fd) is not viewer:
            return
        del self.viewers[viewer.fd]
        self.reading.pop(viewer, None)
        self.closing.pop(viewer, None)
        self.per_address[viewer.address] -= 1
        if not self.per_address[viewer.address]:
            del self.per_address[viewer.address]
        if viewer.registered:
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
        self.streams[stream] = channel
        channel.stats.streams_started += 1
        channel.start_requested_at = time.monotonic()
        channel.start_deadline = channel.start_requested_at + self.config.start_timeout_seconds
        self.tell_supervisor(wire.StartStream(channel.id, stream))

    def stop_stream(self, channel: Channel, stream: int) -> None:
        link = self.links.pop(stream, None)
        if link is not None:
            channel.stop_requested_at = time.monotonic()
            channel.start_deadline = None
            self.stop_deadlines[stream] = channel.stop_requested_at + STOP_GRACE_SECONDS
            try:
                wire.send(link, wire.Stop(stream))
            except OSError:
                pass  # a full or dead link: closing it below says the same to a worker that reads
            # The worker also takes EOF on its link as STOP.
            self.sel.unregister(link)
            link.close()
        if channel.stream_id == stream:
            self.close_stream(channel)

    def escalate_stop(self, stream: int) -> None:
        """A worker told to STOP has not been reported gone in time: the supervisor stops it by signal."""
        channel = self.streams.get(stream)
        if channel is None or channel.lifecycle.stream != stream or channel.lifecycle.worker_pid is None:
            return
        log.warning("channel %s: stream %d did not stop within %g s: asking the supervisor to stop its worker",
                    channel.id, stream, STOP_GRACE_SECONDS)
        self.tell_supervisor(wire.StopWorker(channel.id, stream, channel.lifecycle.worker_pid))

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
        for message, fds in wire.receive_some(self.control):
            if message is None:
                log.error("the supervisor is gone")
                self.running = False
                return
            if isinstance(message, wire.ProtocolError):
                log.error("bad message from the supervisor: %s", message)
            elif isinstance(message, wire.Ping):
                live = sum(1 for c in self.channels.values() if c.lifecycle.viewer_count)
                viewers = sum(c.lifecycle.viewer_count for c in self.channels.values())
                self.tell_supervisor(wire.Pong(viewers, live))
            elif isinstance(message, wire.Reload) and len(fds) == 1:
                self.reload(wire.read_config(fds.pop()))
            elif isinstance(message, wire.WorkerSpawned) and len(fds) == 1:
                self.worker_spawned(message, socket.socket(fileno=fds.pop()))
            elif isinstance(message, wire.WorkerExited):
                self.worker_exited(message)
            elif isinstance(message, wire.StartFailed):
                self.start_failed(message)
            for fd in fds:
                os.close(fd)

    def worker_spawned(self, message: wire.WorkerSpawned, link: socket.socket) -> None:
        channel = self.streams.get(message.stream)
        if channel is None:
            link.close()  # the worker reads EOF: nobody wants its stream
            return
        link.setblocking(False)
        self.links[message.stream] = link
        self.sel.register(link, selectors.EVENT_READ, ("link", message.stream))
        self.carry_out(channel, channel.lifecycle.worker_spawned(message.stream, message.pid))

    def worker_exited(self, message: wire.WorkerExited) -> None:
        channel = self.streams.get(message.stream)
        if channel is None or channel.lifecycle.worker_pid not in (None, message.pid):
            return
        self.stop_deadlines.pop(message.stream, None)
        if channel.stop_requested_at is not None:
            took = time.monotonic() - channel.stop_requested_at
            channel.stats.teardown.observe(took)
            log.info("channel %s: stream %d torn down in %.3f s (air worker %s)",
                     channel.id, message.stream, took, message.status)
            channel.stop_requested_at = None
        self.carry_out(channel, channel.lifecycle.worker_exited(message.stream, message.status, time.monotonic()))
        self.forget_stream(message.stream)

    def start_failed(self, message: wire.StartFailed) -> None:
        channel = self.streams.get(message.stream)
        if channel is None:
            return
        log.error("channel %s: stream %d could not start: %s", channel.id, message.stream, message.reason)
        now = time.monotonic()
        self.carry_out(channel, channel.lifecycle.stream_failed(message.stream, message.reason))
        self.carry_out(channel, channel.lifecycle.worker_exited(message.stream, "not started", now))
        self.forget_stream(message.stream)

    def forget_stream(self, stream: int) -> None:
        """The stream's worker is gone: drop what the front kept for it."""
        channel = self.streams.pop(stream, None)
        self.stop_deadlines.pop(stream, None)
        link = self.links.pop(stream, None)
        if link is not None:
            self.sel.unregister(link)
            link.close()
        if channel in self.retired and channel.lifecycle.state in (State.IDLE, State.FAILED):
            self.retired.discard(channel)
            log.info("channel %s: retired: its last stream is over", channel.id)

    def tell_supervisor(self, message: wire.Message) -> None:
        try:
            wire.send(self.control, message)
        except OSError as e:
            log.error("cannot reach the supervisor: %s", e)
            self.running = False

    def reload(self, new: Config) -> None:
        """Apply a new configuration (parsed and validated by the supervisor): unchanged channels
        see no gap, changed ones take it for their next stream, removed ones close their viewers and stop."""
        self.config = replace(new, listen=self.config.listen)
        self.max_connections = self.connection_budget(self.config)
        wanted = {c.id: c for c in new.channels}
        for channel_id in [c for c in self.channels if c not in wanted]:
            channel = self.channels.pop(channel_id)
            log.info("channel %s: removed by the new configuration; closing its viewers", channel_id)
            self.retired.add(channel)
            for viewer in list(channel.lifecycle.waiting):
                self.respond(viewer, responses.text(404, "no such channel"))
                self.carry_out(channel, channel.lifecycle.tune_out(viewer))
            for viewer in list(channel.viewers):
                self.close_viewer(viewer, "channel removed")
            if channel.lifecycle.state in (State.IDLE, State.FAILED):
                self.retired.discard(channel)
                log.info("channel %s: retired", channel_id)
        for channel_id, channel_config in wanted.items():
            if channel_id in self.channels:
                if self.channels[channel_id].config != channel_config:
                    log.info("channel %s: changed; the change applies to its next stream", channel_id)
                self.channels[channel_id].config = channel_config
            else:
                log.info("channel %s: added", channel_id)
                self.channels[channel_id] = self.new_channel(channel_config)
            self.channels[channel_id].lifecycle.retry_after = new.failed_retry_seconds
        self.channel_ids = frozenset(self.channels)

    def channel_of(self, viewer: Viewer) -> Channel | None:
        return viewer.channel

    def read_link(self, stream: int) -> None:
        channel = self.streams.get(stream)
        for message, fds in wire.receive_some(self.links[stream], limit=16):
            if message is None or channel is None:  # the worker is gone; the supervisor reports its exit
                for fd in fds:
                    os.close(fd)
                link = self.links.pop(stream)
                self.sel.unregister(link)
                link.close()
                return
            if isinstance(message, wire.StreamReady) and len(fds) == 1 and message.stream == stream:
                self.stream_ready(channel, message, fds.pop())
            elif isinstance(message, wire.StreamFailed) and message.stream == stream:
                log.error("channel %s: stream %d failed: %s", channel.id, stream, message.reason)
                channel.failure_tail = message.stderr_tail
                self.carry_out(channel, channel.lifecycle.stream_failed(stream, message.reason))
            elif isinstance(message, wire.ProtocolError):
                log.warning("channel %s: bad message from the worker of stream %d: %s", channel.id, stream, message)
            for fd in fds:
                os.close(fd)
            if stream not in self.links:
                return

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
        first = buffer.end == 0
        if channel.lifecycle.state is State.LIVE:
            channel.start_deadline = None
        for _ in range(8):
            space = buffer.writable()
            if buffer.overwritten_by(len(space)) > 0 and self.grow_buffer(channel, now):
                buffer = channel.buffer
                space = buffer.writable()
            self.drop_overrun(channel, buffer.overwritten_by(len(space)))
            if channel.stream_sock is None:
                return  # that was the last viewer: the stream was stopped and closed
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
        if first and buffer.end >= 188:
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

    def grow_buffer(self, channel: Channel, now: float) -> bool:
        """Grow the ring when it holds less than twice max_lag_seconds of the stream.

        The first size comes from the configured bitrate; a passthrough source, or a
        reload that raised max_lag_seconds, can outrun it, and viewers would be dropped
        by the ring's wrap rather than by their real lag."""
        buffer = channel.buffer
        arrived = buffer.arrival_time(buffer.oldest)
        held = now - arrived if arrived is not None else 0.0
        wanted = 2 * self.config.max_lag_seconds
        if held >= wanted or buffer.capacity >= MAX_BUFFER:
            return False
        rate = buffer.capacity / max(held, 0.05)
        capacity = min(MAX_BUFFER, max(2 * buffer.capacity, int(rate * wanted * 1.25)))
        channel.buffer = buffer.grown(capacity)
        log.warning("channel %s: the stream runs at %.1f MB/s: buffer grown to %d MiB", channel.id,
                    rate / 1e6, capacity // (1024 * 1024))
        return True

    def drop_overrun(self, channel: Channel, destroyed_before: int) -> None:
        for viewer in list(channel.blocked):
            if viewer.cursor < destroyed_before:
                log.warning("channel %s: dropping slow viewer %s: the buffer moved past it",
                            channel.id, viewer.peer)
                channel.stats.viewers_dropped_slow += 1
                self.close_viewer(viewer, "too slow")


def run_front(config: Config, listener: socket.socket, control: socket.socket, generation: int) -> int:
    return Front(config, listener, control, generation).run()
