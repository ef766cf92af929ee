"""Connections: who is connected, the limits on that, and the two sweeps with deadlines.

Accepting, counting per address, and closing what overstays: a request head not
complete within request_timeout_seconds (slowloris), and a final response whose client
takes nothing of it for the same time (one that keeps reading, however slowly, gets all of
a large one). Each sweep is a queue in deadline order, so it looks only at its oldest
entry: there is no timer per connection.
"""

from __future__ import annotations

import collections
import errno
import logging
import resource
import selectors
import socket

from retrovue_air.config import Config
from retrovue_air.logs import RepeatedLine

from .viewer import Viewer

log = logging.getLogger("http_front")

ACCEPTS_PER_WAKEUP = 64
# Descriptors kept back from max_connections: the listener, the loop's own, and per
# channel a stream, a queued restarted stream and a worker link.
RESERVED_FDS = 32
FDS_PER_CHANNEL = 3
# Out of descriptors, accept() fails at once every time it is called: pause it this long.
ACCEPT_PAUSE_SECONDS = 0.5


def connection_budget(config: Config, fd_limit: int) -> int:
    """max_connections, lowered to what the fd limit allows: past it accept() could only fail."""
    allowed = fd_limit - RESERVED_FDS - FDS_PER_CHANNEL * len(config.channels)
    if fd_limit != resource.RLIM_INFINITY and allowed < config.max_connections:
        return max(1, allowed)
    return config.max_connections


class Connections:
    def __init__(self, listener: socket.socket, selector: selectors.BaseSelector, config: Config):
        self.listener = listener
        self._selector = selector
        self.viewers: dict[int, Viewer] = {}  # by fd: every open connection
        self.reading: dict[Viewer, None] = {}  # still sending their request, oldest first
        self.closing: dict[Viewer, float] = {}  # sending a final response, with its deadline
        self.per_address: collections.Counter[str] = collections.Counter()
        self.paused_until: float | None = None
        self.accept_failures = RepeatedLine(log, logging.WARNING)
        self.configure(config)
        selector.register(listener, selectors.EVENT_READ, self)

    def configure(self, config: Config) -> None:
        self.config = config
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.max_connections = connection_budget(config, soft)
        if self.max_connections < config.max_connections:
            log.warning("max_connections %d lowered: at most %d connections: the fd limit is %d",
                        config.max_connections, self.max_connections, soft)

    def __len__(self) -> int:
        return len(self.viewers)

    def accept(self, now: float) -> list[tuple[Viewer, str | None]]:
        """New connections, each with the limit it is over (to refuse with 503), or None."""
        accepted = []
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                sock, addr = self.listener.accept()
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # The pending connection stays queued, so the listener stays readable:
                    # without a pause this loop would spin on accept() at 100 % CPU.
                    self._selector.unregister(self.listener)
                    self.paused_until = now + ACCEPT_PAUSE_SECONDS
                    self.accept_failures.say(f"accept failed: {e.strerror}; pausing accepts for "
                                             f"{ACCEPT_PAUSE_SECONDS:g} s")
                else:
                    log.warning("accept failed: %s", e)
                break
            sock.setblocking(False)
            viewer = Viewer(sock, addr, now, self._selector)
            self.viewers[viewer.fd] = viewer
            self.per_address[viewer.address] += 1
            limit = self._limit(viewer)
            if limit is None:
                self.reading[viewer] = None
            accepted.append((viewer, limit))
        return accepted

    def _limit(self, viewer: Viewer) -> str | None:
        if len(self.viewers) > self.max_connections:
            return f"the server is full ({self.max_connections} connections)"
        if self.per_address[viewer.address] > self.config.max_connections_per_address:
            return f"too many connections from {viewer.address} (limit {self.config.max_connections_per_address})"
        return None

    def is_open(self, viewer: Viewer) -> bool:
        return self.viewers.get(viewer.fd) is viewer

    def request_read(self, viewer: Viewer) -> None:
        self.reading.pop(viewer, None)

    def responding(self, viewer: Viewer, now: float) -> None:
        self.reading.pop(viewer, None)
        self.closing[viewer] = now + self.config.request_timeout_seconds

    def kept_alive(self, viewer: Viewer) -> None:
        """Its response is out and it may send another request: within the request timeout, as a new one."""
        self.closing.pop(viewer, None)
        self.reading[viewer] = None

    def progressed(self, viewer: Viewer, now: float) -> None:
        """The client took more of its final response: its deadline counts from now.

        Moved to the end of the queue, which keeps it in deadline order: every deadline is
        the same timeout after a later moment."""
        if self.closing.pop(viewer, None) is not None:
            self.closing[viewer] = now + self.config.request_timeout_seconds

    def forget(self, viewer: Viewer) -> bool:
        """The viewer is being closed; False if it already was."""
        if not self.is_open(viewer):
            return False
        del self.viewers[viewer.fd]
        self.reading.pop(viewer, None)
        self.closing.pop(viewer, None)
        self.per_address[viewer.address] -= 1
        if not self.per_address[viewer.address]:
            del self.per_address[viewer.address]
        return True

    def overdue(self, now: float) -> list[tuple[Viewer, str]]:
        """Connections past their deadline, with the reason; accepting resumes after a pause."""
        due = []
        timeout = self.config.request_timeout_seconds
        for viewer in self.reading:
            if viewer.connected_at + timeout > now:
                break
            log.info("%s: no complete request within %g s: closed", viewer.peer, timeout)
            due.append((viewer, "request timeout"))
        for viewer, deadline in self.closing.items():
            if deadline > now:
                break
            log.info("%s: response not taken within %g s: closed", viewer.peer, timeout)
            due.append((viewer, "response timeout"))
        if self.paused_until is not None and self.paused_until <= now:
            self.paused_until = None
            self._selector.register(self.listener, selectors.EVENT_READ, self)
        return due

    def next_deadline(self) -> float | None:
        deadlines = [self.paused_until] if self.paused_until is not None else []
        if self.reading:
            deadlines.append(next(iter(self.reading)).connected_at + self.config.request_timeout_seconds)
        if self.closing:
            deadlines.append(next(iter(self.closing.values())))
        return min(deadlines) if deadlines else None

