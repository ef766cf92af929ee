"""AirLinks: the front's side of the supervisor's control socket and of each worker's link.

It keeps which stream belongs to which channel, each live worker's private link, and
when STOP went out; messages become calls on the channel's lifecycle, whose actions it
returns for the front to carry out. A worker that does not go within STOP_GRACE_SECONDS
of its STOP is handed to the supervisor to stop by signal.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import time
from collections.abc import Iterator

from retrovue_air import wire
from retrovue_air.config import Config
from retrovue_air.url_secrets import redact_urls

from .channel import Channel
from .channel_lifecycle import Action

log = logging.getLogger("http_front")

STOP_GRACE_SECONDS = 2.0

# What the supervisor's messages come to, for the front to carry out.
Decision = tuple[Channel, list[Action]]


class SupervisorGone(Exception):
    pass


class AirLinks:
    def __init__(self, control: socket.socket, selector: selectors.BaseSelector):
        self.control = control
        control.setblocking(False)
        self._selector = selector
        self.streams: dict[int, Channel] = {}  # every stream asked for and not yet reaped
        self.links: dict[int, socket.socket] = {}  # stream -> the private link to its worker
        self.stops_sent: dict[int, float] = {}  # stream -> when STOP went out
        selector.register(control, selectors.EVENT_READ, self)

    def tell_supervisor(self, message: wire.Message) -> None:
        try:
            wire.send(self.control, message)
        except OSError as e:
            raise SupervisorGone(f"cannot reach the supervisor: {e}") from None

    def start(self, channel: Channel, stream: int) -> None:
        log.info("channel %s: starting stream %d", channel.id, stream)
        self.streams[stream] = channel
        self.tell_supervisor(wire.StartStream(channel.id, stream))

    def stop(self, stream: int) -> None:
        """STOP to the stream's worker, then its link closed (the worker takes EOF as STOP too)."""
        link = self.links.pop(stream, None)
        if link is None:
            return
        self.stops_sent[stream] = time.monotonic()
        try:
            wire.send(link, wire.Stop(stream))
        except OSError:
            pass  # a full or dead link: its closing says the same to a worker that still reads
        self._selector.unregister(link)
        link.close()

    def overdue(self, now: float) -> None:
        """Hand workers that ignored their STOP to the supervisor."""
        for stream, sent in list(self.stops_sent.items()):
            if sent + STOP_GRACE_SECONDS > now:
                continue
            del self.stops_sent[stream]
            channel = self.streams.get(stream)
            if channel is not None and channel.lifecycle.worker_pid is not None:
                log.warning("channel %s: stream %d did not stop within %g s: asking the supervisor to stop "
                            "its worker", channel.id, stream, STOP_GRACE_SECONDS)
                self.tell_supervisor(wire.StopWorker(channel.id, stream, channel.lifecycle.worker_pid))

    def next_deadline(self) -> float | None:
        return min(self.stops_sent.values()) + STOP_GRACE_SECONDS if self.stops_sent else None

    # The supervisor

    def read_control(self) -> Iterator[Decision | wire.Ping | Config]:
        """Decisions for channels, and what only the front can answer: a Ping, a new Config."""
        for message, fds in wire.receive_some(self.control):
            if message is None:
                raise SupervisorGone("the supervisor is gone")
            try:
                if isinstance(message, wire.ProtocolError):
                    log.error("bad message from the supervisor: %s", message)
                elif isinstance(message, wire.Ping):
                    yield message
                elif isinstance(message, wire.Reload) and len(fds) == 1:
                    yield wire.read_config(fds.pop())
                elif isinstance(message, wire.WorkerSpawned) and len(fds) == 1:
                    yield from self._worker_spawned(message, socket.socket(fileno=fds.pop()))
                elif isinstance(message, wire.WorkerExited):
                    yield from self._worker_exited(message)
                elif isinstance(message, wire.StartFailed):
                    yield from self._start_failed(message)
            finally:
                for fd in fds:
                    os.close(fd)

    def _worker_spawned(self, message: wire.WorkerSpawned, link: socket.socket) -> Iterator[Decision]:
        channel = self.streams.get(message.stream)
        if channel is None:
            link.close()  # the worker reads EOF: nobody wants its stream
            return
        link.setblocking(False)
        self.links[message.stream] = link
        self._selector.register(link, selectors.EVENT_READ, (self, message.stream))
        yield channel, channel.lifecycle.worker_spawned(message.stream, message.pid)

    def _worker_exited(self, message: wire.WorkerExited) -> Iterator[Decision]:
        channel = self.streams.get(message.stream)
        if channel is None or channel.lifecycle.worker_pid not in (None, message.pid):
            return
        sent = self.stops_sent.get(message.stream)
        if sent is not None:
            took = time.monotonic() - sent
            channel.stats.teardown.observe(took)
            log.info("channel %s: stream %d torn down in %.3f s (air worker %s)",
                     channel.id, message.stream, took, message.status)
        self._forget(message.stream)
        yield channel, channel.lifecycle.worker_exited(message.stream, message.status, time.monotonic())

    def _start_failed(self, message: wire.StartFailed) -> Iterator[Decision]:
        channel = self.streams.get(message.stream)
        if channel is None:
            return
        log.error("channel %s: stream %d could not start: %s", channel.id, message.stream, message.reason)
        self._forget(message.stream)
        yield channel, channel.lifecycle.stream_failed(message.stream, message.reason)
        yield channel, channel.lifecycle.worker_exited(message.stream, "not started", time.monotonic())

    def _forget(self, stream: int) -> None:
        """The stream's worker is gone: drop what was kept for it."""
        self.streams.pop(stream, None)
        self.stops_sent.pop(stream, None)
        link = self.links.pop(stream, None)
        if link is not None:
            self._selector.unregister(link)
            link.close()

    # The workers

    def read_link(self, stream: int, max_lag_seconds: float) -> Iterator[Decision]:
        """What a worker said: its stream FD (StreamReady), or why it gave up (StreamFailed)."""
        channel = self.streams.get(stream)
        link = self.links.get(stream)
        if link is None:
            return
        for message, fds in wire.receive_some(link, limit=16):
            try:
                if message is None:  # the worker is gone; the supervisor reports its exit
                    self._selector.unregister(link)
                    link.close()
                    del self.links[stream]
                    return
                if isinstance(message, wire.StreamReady) and len(fds) == 1 and message.stream == stream:
                    sock = socket.socket(fileno=fds.pop())
                    actions = channel.lifecycle.stream_ready(stream, message.ffmpeg_pid)
                    if actions:  # nobody wants it any more
                        sock.close()
                    else:
                        channel.stream_ready(sock, stream, max_lag_seconds)
                    yield channel, actions
                elif isinstance(message, wire.StreamFailed) and message.stream == stream:
                    # Shown to anyone (/channels, the status page, 503s): no URL's password or token,
                    # whatever a worker's ffmpeg printed.
                    reason = redact_urls(message.reason)
                    log.error("channel %s: stream %d failed: %s", channel.id, stream, reason)
                    channel.failure_tail = redact_urls(message.stderr_tail)
                    yield channel, channel.lifecycle.stream_failed(stream, reason)
                elif isinstance(message, wire.ProtocolError):
                    log.warning("channel %s: bad message from the worker of stream %d: %s",
                                channel.id, stream, message)
            finally:
                for fd in fds:
                    os.close(fd)
            if stream not in self.links:
                return

    def close(self) -> None:
        for link in self.links.values():
            link.close()
        self.links.clear()
