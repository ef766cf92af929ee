"""Front: the one selectors loop that accepts viewers and fans each channel's stream out.

The loop owns nothing but the selector and the dispatch: Connections accepts and sweeps,
each Viewer owns its socket and its interest in the selector, each Channel reads its
stream and fans it out to its viewers, AirLinks speaks to the supervisor and the
workers, and each ChannelLifecycle decides. What they return (viewers to close, the
lifecycle's actions) is carried out here, and nowhere else.
"""

from __future__ import annotations

import logging
import selectors
import signal
import socket
import time
from dataclasses import replace

from retrovue_air import device_id as device_ids
from retrovue_air import wire
from retrovue_air.config import Config

from . import discovery, hls, public_urls, responses, routes, tuner
from .air_links import AirLinks, SupervisorGone
from .answers import FrontState, answer
from .channel import Channel, Close
from .channel_lifecycle import Action, Admit, Disconnect, Refuse, RequestStream, StopStream, stream_numbers
from .connections import Connections
from .guide import Guide
from .hls import HlsChannel, Lease
from .lineup import Lineup
from .presentation import guide_numbers
from .request_reader import GONE, Reject, Request, Result
from .viewer import Phase, Sent, Viewer

log = logging.getLogger("http_front")

# The loop's time given to making a guide each round: a viewer's stream waits no longer than
# this for it (beside the flush interval it waits anyway).
GUIDE_SLICE_SECONDS = 0.01


class Front:
    def __init__(self, config: Config, listener: socket.socket, control: socket.socket, generation: int = 1):
        self.config = config
        self.sel = selectors.DefaultSelector()
        # Stream ids never repeat across restarts of the front: each front (a generation,
        # counted by the supervisor) numbers its streams in a range of its own.
        self.next_stream = stream_numbers(generation)
        self.lineup = Lineup(config, self.next_stream, self.sel)
        self.connections = Connections(listener, self.sel, config)
        self.air = AirLinks(control, self.sel)
        self.guide = Guide(config)
        self.responder: discovery.DiscoveryResponder | None = None  # with discovery = true, once running
        self.hls: dict[Channel, HlsChannel] = {}  # made at a channel's first HLS request
        self.running = True

    def state(self) -> FrontState:
        return FrontState(self.config, self.lineup.served(), len(self.connections))

    # The loop

    def run(self) -> int:
        wake_r, wake_w = socket.socketpair()
        wake_w.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, lambda *_: None)
        self.sel.register(wake_r, selectors.EVENT_READ, "signal")
        if self.config.discovery:
            self.responder = discovery.responder_for(lambda: self.config, self.connections.listener.getsockname())
            self.responder.open(self.sel)
        log.info("serving on %s:%d", *self.connections.listener.getsockname()[:2])
        try:
            self.air.tell_supervisor(wire.FrontReady())
            while self.running:
                events = self.sel.select(self.timeout())
                # A worker's last word (StreamFailed, on its link) is sent before it
                # exits, so it is handled before the supervisor's news of that exit.
                events.sort(key=lambda e: not isinstance(e[0].data, tuple))
                for key, mask in events:
                    self.dispatch(key, mask, wake_r)
                self.check_deadlines()
                self.make_guide()
        except SupervisorGone as e:
            log.error("%s", e)
        finally:
            self.shutdown()
            if self.responder:
                self.responder.close()
            signal.set_wakeup_fd(-1)
            wake_r.close()
            wake_w.close()
        return 0

    def dispatch(self, key: selectors.SelectorKey, mask: int, wake: socket.socket) -> None:
        target = key.data
        now = time.monotonic()
        if isinstance(target, Viewer):
            # Closed earlier in this round, perhaps with its fd number reused since.
            if self.connections.is_open(target):
                self.viewer_event(target, mask)
        elif isinstance(target, Channel):
            if target.stream_sock is not None and target.stream_sock.fileno() == key.fd:
                self.stream_readable(target, now)
        elif isinstance(target, tuple):  # a worker's link: (AirLinks, stream)
            for channel, actions in self.air.read_link(target[1], self.config.max_lag_seconds):
                self.carry_out(channel, actions)
        elif target is self.connections:
            for viewer, limit in self.connections.accept(now):
                if limit:
                    self.refuse(viewer, limit)
        elif target is self.air:
            for news in self.air.read_control():
                self.supervisor_said(news)
        elif target == "signal":
            if signal.SIGTERM in wake.recv(64):
                log.info("terminating")
                self.running = False
        elif target is self.responder:
            self.responder.handle_readable(key.fileobj)

    def timeout(self) -> float | None:
        if self.guide.busy:
            return 0.0
        deadlines = [d for c in self.lineup
                     for d in (c.flush_deadline, c.start_deadline, c.read_deadline, c.keep_alive_deadline) if d]
        deadlines += [d for d in (h.next_deadline() for h in self.hls.values()) if d]
        deadlines += [d for d in (self.connections.next_deadline(), self.air.next_deadline(),
                                  self.responder and self.responder.next_deadline()) if d]
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def check_deadlines(self) -> None:
        now = time.monotonic()
        for viewer, why in self.connections.overdue(now):
            self.close_viewer(viewer, why)
        self.air.overdue(now)
        if self.responder:
            self.responder.resume(now)
        for channel in self.lineup:
            if channel.read_deadline is not None and channel.read_deadline <= now:
                self.stream_readable(channel, now)
            if channel.flush_deadline is not None and channel.flush_deadline <= now:
                self.close_all(channel.flush(now, self.config.max_lag_seconds))
                self.hls_news(channel, now)
            if channel.keep_alive_deadline is not None and channel.keep_alive_deadline <= now:
                self.close_all(channel.keep_alive(now, self.config.max_lag_seconds))
            if channel.start_deadline is not None and channel.start_deadline <= now:
                channel.start_deadline = None
                reason = f"no stream within {self.config.start_timeout_seconds:g} s"
                log.error("channel %s: %s; giving up on stream %s", channel.id, reason, channel.lifecycle.stream)
                self.carry_out(channel, channel.lifecycle.start_timed_out(channel.lifecycle.stream, reason, now))
        for channel, audience in list(self.hls.items()):
            for lease in audience.expired(now):
                audience.drop(lease)
                log.info("channel %s: tune out HLS %s: no request for %g s (%d viewers)", channel.id, lease.peer,
                         self.config.hls_idle_seconds, channel.lifecycle.viewer_count - 1)
                self.carry_out(channel, channel.lifecycle.tune_out(lease))
            self.answer_held(channel, audience, now)

    def shutdown(self) -> None:
        for viewer in list(self.connections.viewers.values()):
            self.close_viewer(viewer, "service stopping", tune_out=False)
        for channel in self.lineup:
            if channel.lifecycle.stream is not None:
                self.stop_stream(channel, channel.lifecycle.stream)
        self.air.close()
        self.sel.close()

    # Viewers

    def viewer_event(self, viewer: Viewer, mask: int) -> None:
        if mask & selectors.EVENT_READ:
            result = viewer.read()
            if result is GONE:
                self.close_viewer(viewer, "left" if viewer.phase is Phase.REQUEST else "connection lost")
                return
            self.request_result(viewer, result)
        if mask & selectors.EVENT_WRITE and self.connections.is_open(viewer):
            self.pump(viewer)

    def request_result(self, viewer: Viewer, result: Result) -> None:
        if isinstance(result, Reject):
            log.info("%s: bad request (%d): %s", viewer.peer, result.status, result.why)
            self.respond(viewer, responses.text(result.status, result.text))
        elif isinstance(result, Request):
            viewer.requested_at = time.monotonic()
            self.connections.request_read(viewer)
            self.handle_request(viewer, result)

    def handle_request(self, viewer: Viewer, request: Request) -> None:
        r = routes.route(request.method, request.target, self.lineup.channels.keys(), guide_numbers(self.config))
        if isinstance(r, routes.Refuse):
            log.info("%s: %s %s -> %d", viewer.peer, request.method.decode("ascii", "replace"),
                     request.target.decode("ascii", "replace")[:200], r.status)
        # No Host (HTTP/1.0): links name the address and port this connection reached.
        host = request.host or public_urls.authority(viewer.sock.getsockname())
        if isinstance(r, (routes.HlsPlaylist, routes.HlsSegment)):
            self.hls_request(viewer, request, r)
            return
        if isinstance(r, routes.Guide):
            # Seconds of work for a large guide: made between the loop's rounds (make_guide).
            data = self.guide.ask(viewer, r.head_only, host, time.time())
            if data is not None:
                self.respond(viewer, data)
            return
        data = answer(r, host, self.state())
        if data is not None:
            self.respond(viewer, data)
            return
        channel = self.lineup.get(r.channel)
        limit = self.viewer_limit(channel)
        if limit:
            # A channel nobody watches is refused only when every tuner is in use.
            self.refuse(viewer, limit, () if channel.lifecycle.viewer_count else tuner.ALL_TUNERS_IN_USE)
            return
        viewer.phase = Phase.WAITING
        viewer.channel = channel
        log.info("channel %s: tune in %s (%d viewers)", channel.id, viewer.peer, channel.lifecycle.viewer_count + 1)
        self.carry_out(channel, channel.lifecycle.tune_in(viewer, time.monotonic()))

    def make_guide(self) -> None:
        for viewer, data in self.guide.work(GUIDE_SLICE_SECONDS):
            if self.connections.is_open(viewer):  # it may have left while the guide was made
                self.respond(viewer, data)

    def viewer_limit(self, channel: Channel) -> str | None:
        if channel.lifecycle.viewer_count >= self.config.max_viewers_per_channel:
            return f"channel {channel.id} is full ({self.config.max_viewers_per_channel} viewers)"
        if not channel.lifecycle.viewer_count and self.state().active_channels >= self.config.max_active_channels:
            return f"too many channels on air ({self.config.max_active_channels})"
        return None

    def refuse(self, viewer: Viewer, why: str, headers=()) -> None:
        log.warning("%s: refused: %s", viewer.peer, why)
        self.respond(viewer, responses.text(503, why, [("Retry-After", "10"), *headers]))

    def respond(self, viewer: Viewer, data: bytes, keep_alive: bool = False) -> None:
        """Send a final response; close once it is out (unless kept alive), or at a deadline if it is never taken."""
        self.connections.responding(viewer, time.monotonic())
        viewer.keep_alive = keep_alive
        self.after_send(viewer, viewer.respond(data))

    def pump(self, viewer: Viewer) -> None:
        channel = viewer.channel
        unsent = len(viewer.pending)
        sent = viewer.send(channel.buffer if channel else None)
        if viewer.phase is Phase.CLOSING and len(viewer.pending) < unsent:
            self.connections.progressed(viewer, time.monotonic())
        self.after_send(viewer, sent)

    def after_send(self, viewer: Viewer, sent: Sent) -> None:
        if sent is Sent.LOST:
            self.close_viewer(viewer, "connection lost")
        elif sent is Sent.ALL and viewer.phase is Phase.CLOSING:
            if viewer.keep_alive and not viewer.read_closed:
                result = viewer.next_request(time.monotonic())
                self.connections.kept_alive(viewer)
                self.request_result(viewer, result)
            else:
                self.close_viewer(viewer, None)

    def close_all(self, closes: list[Close]) -> None:
        for close in closes:
            self.close_viewer(close.viewer, close.reason)

    def close_viewer(self, viewer: Viewer, why: str | None, tune_out: bool = True) -> None:
        if not self.connections.forget(viewer):
            return
        viewer.close()
        channel = viewer.channel
        if channel is None or viewer.phase is Phase.CLOSING:
            return
        channel.remove(viewer)
        if tune_out:
            log.info("channel %s: tune out %s: %s (%d viewers)", channel.id, viewer.peer, why,
                     channel.lifecycle.viewer_count - 1)
            self.carry_out(channel, channel.lifecycle.tune_out(viewer))

    # The stream

    def stream_readable(self, channel: Channel, now: float) -> None:
        read = channel.read(now, self.config.max_lag_seconds, self.config.flush_interval)
        self.close_all(read.closes)
        self.hls_news(channel, now)
        if read.first_bytes:
            self.carry_out(channel, channel.lifecycle.first_bytes(channel.stream_id))
        elif read.ended:
            stream = channel.lifecycle.stream
            self.carry_out(channel, channel.lifecycle.stream_ended(stream, time.monotonic()))

    # The lifecycle's decisions, and the supervisor's news

    def carry_out(self, channel: Channel, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, RequestStream):
                channel.start_requested_at = time.monotonic()
                channel.start_deadline = channel.start_requested_at + self.config.start_timeout_seconds
                channel.stats.streams_started += 1
                self.air.start(channel, action.stream)
            elif isinstance(action, StopStream):
                self.stop_stream(channel, action.stream)
            elif isinstance(action, Admit):
                for viewer in action.viewers:
                    if not isinstance(viewer, Lease):  # a lease's playlist is answered as segments come
                        self.after_send(viewer, channel.admit(viewer, action.from_start, time.monotonic()))
            elif isinstance(action, Refuse):
                log.warning("channel %s: refusing %d viewers: %s", channel.id, len(action.viewers), action.reason)
                why = f"channel {channel.id} is unavailable: {action.reason}"
                for viewer in action.viewers:
                    if isinstance(viewer, Lease):
                        self.lease_ended(channel, viewer, why)
                    else:
                        self.respond(viewer, responses.text(503, why, [("Retry-After", "5")]))
            elif isinstance(action, Disconnect):
                log.warning("channel %s: closing %d viewers: %s", channel.id, len(action.viewers), action.reason)
                for viewer in action.viewers:
                    if isinstance(viewer, Lease):
                        self.lease_ended(channel, viewer, f"channel {channel.id}: {action.reason}")
                    else:
                        self.close_viewer(viewer, action.reason, tune_out=False)
        channel.release_if_unused()
        self.lineup.retire_if_done(channel)

    def stop_stream(self, channel: Channel, stream: int) -> None:
        if channel.lifecycle.stream in (stream, None):  # a stale stream's STOP leaves the current one's deadline
            channel.start_deadline = None
        self.air.stop(stream)
        channel.close_stream(stream)

    def supervisor_said(self, news) -> None:
        if isinstance(news, wire.Ping):
            state = self.state()
            self.air.tell_supervisor(wire.Pong(state.viewers, state.active_channels))
        elif isinstance(news, Config):
            self.reload(news)
        else:
            self.carry_out(*news)

    def reload(self, new: Config) -> None:
        """Apply a configuration the supervisor parsed and validated."""
        self.config = replace(new, listen=self.config.listen)
        device_ids.load_or_create.cache_clear()  # the next answer reads the id again (a new state_dir, say)
        self.connections.configure(self.config)
        self.guide.configure(self.config)
        for channel in self.lineup.reload(new):
            for viewer in list(channel.lifecycle.waiting):
                if isinstance(viewer, Lease):
                    self.lease_ended(channel, viewer, "no such channel", status=404)
                else:
                    self.respond(viewer, responses.text(404, "no such channel"))
                self.carry_out(channel, channel.lifecycle.tune_out(viewer))
            for lease in [v for v in channel.lifecycle.watching if isinstance(v, Lease)]:
                self.lease_ended(channel, lease, "channel removed")
                self.carry_out(channel, channel.lifecycle.tune_out(lease))
            for viewer in list(channel.viewers):
                self.close_viewer(viewer, "channel removed")
            self.carry_out(channel, [])


    # HLS: playlists and segments cut from the ring (hls_segments), clients as leases (hls)

    def hls_news(self, channel: Channel, now: float) -> None:
        """The ring moved on: the segment index learns of it, and waiting playlist requests may be answered."""
        audience = self.hls.get(channel)
        if audience is not None:
            audience.observe(channel, now, time.time())
            self.answer_held(channel, audience, now)

    def hls_request(self, viewer: Viewer, request: Request, r: routes.HlsPlaylist | routes.HlsSegment) -> None:
        channel = self.lineup.get(r.channel)
        now = time.monotonic()
        audience = self.hls.get(channel)
        if audience is None:
            audience = self.hls[channel] = HlsChannel(channel.config.keyframe_seconds)
        audience.observe(channel, now, time.time())
        keep = viewer.keep_alive = request.keep_alive  # a held request is answered in kind
        if isinstance(r, routes.HlsSegment):
            buffer = channel.buffer
            segment = buffer and audience.index.segment(r.stream, r.seq, buffer.published)
            if segment is None:
                self.respond(viewer, responses.text(404, "no such segment: it has left the buffer, or never was",
                                                    [hls.CORS]))
                return
            data = audience.segment_bytes(segment, buffer)
            if not r.head_only:
                self.lease_of(viewer, request, channel, audience, now)
                channel.stats.bytes_out_closed += len(data)
            self.respond(viewer, responses.hls_body(200, hls.SEGMENT_TYPE, data, [hls.CORS, hls.SEGMENT_CACHING],
                                                    keep, r.head_only), keep)
            return
        if r.head_only:  # the headers, without starting the channel
            self.respond(viewer, self.playlist(channel, audience, keep, head_only=True), keep)
            return
        lease = self.lease_of(viewer, request, channel, audience, now, held=True)
        if lease is not None:
            self.answer_held(channel, audience, now)

    def lease_of(self, viewer: Viewer, request: Request, channel: Channel, audience: HlsChannel, now: float,
                 held: bool = False) -> Lease | None:
        """The client's lease, renewed, or a new one tuned in; with held, its playlist request waits
        for the segments (answered at once if they are there). None: refused, and answered so."""
        user_agent = next((value for name, value in request.headers if name == b"user-agent"), b"")
        key = (viewer.address, user_agent)
        lease = audience.renew(key, now, self.config.hls_idle_seconds)
        if lease is not None:
            if held:
                audience.hold(viewer, lease, now + self.config.start_timeout_seconds)
            return lease
        limit = self.viewer_limit(channel)
        if limit:
            if held:
                self.refuse(viewer, limit, () if channel.lifecycle.viewer_count else tuner.ALL_TUNERS_IN_USE)
            return None
        lease = audience.lease(key, viewer.peer, now, self.config.hls_idle_seconds)
        if held:
            audience.hold(viewer, lease, now + self.config.start_timeout_seconds)
        log.info("channel %s: tune in HLS %s (%d viewers)", channel.id, viewer.peer,
                 channel.lifecycle.viewer_count + 1)
        self.carry_out(channel, channel.lifecycle.tune_in(lease, now))
        return lease

    def answer_held(self, channel: Channel, audience: HlsChannel, now: float) -> None:
        for viewer, lease in audience.answerable(channel.buffer.published if channel.buffer else 0, now):
            if not self.connections.is_open(viewer):
                continue  # it left while it waited
            audience.renew(lease.key, now, self.config.hls_idle_seconds)  # from its answer, in renewal order
            listed = len(audience.index.listed(channel.buffer.published)) if channel.buffer else 0
            if listed:
                # A request that had to wait: a cold start, whose time to a playable playlist is worth a line.
                log.log(logging.INFO if now - viewer.requested_at > 0.01 else logging.DEBUG,
                        "channel %s: HLS playlist for %s after %.2f s (%d segments)", channel.id, viewer.peer,
                        now - viewer.requested_at, listed)
                self.respond(viewer, self.playlist(channel, audience, viewer.keep_alive), viewer.keep_alive)
            else:
                self.respond(viewer, responses.text(
                    503, f"channel {channel.id}: no segment within {self.config.start_timeout_seconds:g} s",
                    [("Retry-After", "5"), hls.CORS]))

    def playlist(self, channel: Channel, audience: HlsChannel, keep: bool, head_only: bool = False) -> bytes:
        published = channel.buffer.published if channel.buffer else 0
        data = audience.index.playlist(published, lambda s: f"{channel.id}/{s.name}.ts")
        headers = [hls.CORS, hls.playlist_caching(audience.index.target)]
        return responses.hls_body(200, hls.PLAYLIST_TYPE, data, headers, keep, head_only)

    def lease_ended(self, channel: Channel, lease: Lease, why: str, status: int = 503) -> None:
        """The lifecycle let the lease go (refused, its stream over): its waiting requests hear why."""
        audience = self.hls.get(channel)
        for viewer in audience.drop(lease) if audience else ():
            if self.connections.is_open(viewer):
                self.respond(viewer, responses.text(status, why, [("Retry-After", "5"), hls.CORS]))


def run_front(config: Config, listener: socket.socket, control: socket.socket, generation: int) -> int:
    return Front(config, listener, control, generation).run()
