"""Viewer: one HTTP connection, from its request to the last byte of its stream.

The send discipline is asyncio's selector transport's: try the send now, keep what
did not fit, and ask the loop for writability only while something is pending. For a
stream the "backlog" is not a copy but a cursor into the channel's StreamBuffer.
"""

from __future__ import annotations

import enum
import fcntl
import socket
import struct
import termios

import h11

from .stream_buffer import StreamBuffer

MAX_REQUEST_HEAD = 8192


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
    __slots__ = ("sock", "fd", "peer", "conn", "phase", "channel", "cursor", "pending",
                 "blocked", "connected_at", "start_cursor", "address", "received", "read_closed",
                 "registered")

    def __init__(self, sock: socket.socket, peer: str, now: float):
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
        self.phase = Phase.REQUEST
        self.channel = None  # the Channel it tuned in to
        self.cursor = 0
        self.start_cursor = 0  # where the cursor started: bytes sent = cursor - start_cursor
        self.pending = b""  # response head (and anything else) before the stream bytes
        self.blocked = False
        self.read_closed = False  # the client half-closed after its request: it still reads
        self.registered = False  # in the loop's selector (for reading, writing, or both)
        self.connected_at = now
        self.received = 0  # request bytes read, to bound the head's size
        self.address = peer.rsplit(":", 1)[0]  # the client's address, for per-address limits

    def __repr__(self) -> str:
        return f"<Viewer {self.peer} {self.phase.value} {self.channel.id if self.channel else ''}>"

    def send(self, buffer: StreamBuffer | None) -> Sent:
        """Send what is pending, then the stream from the cursor, until caught up or full."""
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

    def unsent_in_kernel(self) -> int:
        """Bytes handed to the kernel that the peer has not acknowledged (SIOCOUTQ)."""
        try:
            return struct.unpack("i", fcntl.ioctl(self.fd, termios.TIOCOUTQ, b"\0\0\0\0"))[0]
        except OSError:
            return 0
