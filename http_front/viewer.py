"""Viewer: one HTTP connection, from its request to the last byte of its stream.

It owns its socket and its interest in the loop's selector, as asyncio's selector
transport does: it asks for writability only while something is pending, for
readability until the client half-closes. For a stream the "backlog" is not a copy but
a cursor into the channel's StreamBuffer.
"""

from __future__ import annotations

import enum
import fcntl
import selectors
import socket
import struct
import termios

from .request_reader import GONE, NEED_MORE, READ_CLOSED, RequestReader, Result
from .stream_buffer import StreamBuffer


class Phase(enum.Enum):
    REQUEST = "request"  # reading the request head
    WAITING = "waiting"  # tuned in, no 200 yet
    WATCHING = "watching"  # receiving the stream
    CLOSING = "closing"  # sending a final response, then close


class Sent(enum.Enum):
    ALL = "all"  # nothing pending: caught up with the stream, or response done
    BLOCKED = "blocked"  # the socket is full: wait for writability
    LOST = "lost"  # the peer is gone


class Viewer:
    __slots__ = ("sock", "fd", "peer", "address", "reader", "phase", "channel", "cursor", "start_cursor",
                 "pending", "blocked", "read_closed", "connected_at", "requested_at", "allowance",
                 "keep_alive", "_selector", "_events")

    def __init__(self, sock: socket.socket, address: tuple, now: float, selector: selectors.BaseSelector):
        self.sock = sock
        self.fd = sock.fileno()
        self.address = address[0]  # the client's address, for per-address limits
        self.peer = f"{address[0]}:{address[1]}"
        self.reader = RequestReader()
        self.phase = Phase.REQUEST
        self.channel = None  # the Channel it tuned in to
        self.cursor = 0
        self.start_cursor = 0  # where the cursor started: bytes sent = cursor - start_cursor
        self.pending = b""  # response head (and anything else) before the stream bytes
        self.blocked = False  # the socket is full: waiting for writability
        self.read_closed = False  # the client half-closed after its request: it still reads
        self.connected_at = now
        self.requested_at = now  # when its request was complete: tune-in latency counts from here
        # How far behind the live edge it started (its join burst): its lag is counted from there,
        # so it is not dropped as slow while it drains the burst.
        self.allowance = 0.0
        self.keep_alive = False  # once its final response is out, it is read for another request
        self._selector = selector
        self._events = 0
        self._update_interest()

    def __repr__(self) -> str:
        return f"<Viewer {self.peer} {self.phase.value} {self.channel.id if self.channel else ''}>"

    def _update_interest(self) -> None:
        events = (0 if self.read_closed else selectors.EVENT_READ) | (selectors.EVENT_WRITE if self.blocked else 0)
        if events == self._events:
            return
        if events and self._events:
            self._selector.modify(self.sock, events, self)
        elif events:
            self._selector.register(self.sock, events, self)
        else:
            self._selector.unregister(self.sock)
        self._events = events

    def read(self) -> Result:
        """Read what the client sent; what it means comes from the RequestReader."""
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return NEED_MORE
        except OSError:
            return GONE  # a reset: unlike an EOF, this client is gone, not half-closed
        result = self.reader.feed(data)
        if result is READ_CLOSED:
            # EOF after a whole request is a half-close (HTTP/1.0 tools, some proxies): the
            # client still reads. Stop reading; a client that is really gone shows on a send.
            self.read_closed = True
            self._update_interest()
        return result

    def respond(self, data: bytes) -> Sent:
        """Send a final response; the caller closes the viewer once it is out (Sent.ALL)."""
        self.phase = Phase.CLOSING
        # A view, not bytes: each send's remainder would otherwise be a copy of what is left
        # (of a 21 MB guide, megabytes per send). Shared: many viewers may be sent the same bytes.
        self.pending = memoryview(data)
        return self.send(None)

    def next_request(self, now: float) -> Result:
        """Its response is out and the connection stays: read it for the next request, as a new one is."""
        self.phase = Phase.REQUEST
        self.keep_alive = False
        self.pending = b""
        self.connected_at = self.requested_at = now
        self.reader, result = self.reader.next_request()
        return result

    def send(self, buffer: StreamBuffer | None) -> Sent:
        """Send what is pending, then the stream from the cursor, until caught up or full."""
        result = self._send(buffer)
        blocked = result is Sent.BLOCKED
        if blocked != self.blocked:
            self.blocked = blocked
            self._update_interest()
        return result

    def _send(self, buffer: StreamBuffer | None) -> Sent:
        try:
            while self.pending:
                n = self.sock.send(self.pending)
                self.pending = self.pending[n:]
                if self.pending:
                    return Sent.BLOCKED
            if buffer is None or self.phase is not Phase.WATCHING:
                return Sent.ALL
            while True:
                chunk = buffer.chunk(self.cursor)
                if not chunk:
                    return Sent.ALL
                n = self.sock.send(chunk)
                self.cursor += n
                if n < len(chunk):
                    return Sent.BLOCKED
        except BlockingIOError:
            return Sent.BLOCKED
        except OSError:
            return Sent.LOST

    def bound_send_buffer(self, size: int) -> None:
        # The kernel would otherwise grow a stalled viewer's send buffer to megabytes
        # (seconds of stream) before our cursor fell behind at all.
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
        except OSError:
            pass

    def reset_by_peer(self) -> bool:
        """After a send to a client that sent EOF: was that a half-close, or is it gone?

        Only data tells: a client that closed answers it with a reset, and the socket's
        pending error says so (at once on loopback, an RTT later elsewhere)."""
        try:
            return self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0
        except OSError:
            return True

    def unsent_in_kernel(self) -> int:
        """Bytes handed to the kernel that the peer has not acknowledged (SIOCOUTQ)."""
        try:
            return struct.unpack("i", fcntl.ioctl(self.fd, termios.TIOCOUTQ, b"\0\0\0\0"))[0]
        except OSError:
            return 0

    def close(self) -> None:
        if self._events:
            self._selector.unregister(self.sock)
            self._events = 0
        if self.phase is Phase.CLOSING:
            # Read what the peer already sent, so that close() does not answer it with
            # a reset that could destroy our response before the peer reads it.
            try:
                self.sock.shutdown(socket.SHUT_WR)
                while self.sock.recv(65536):
                    pass
            except OSError:
                pass
        self.sock.close()
