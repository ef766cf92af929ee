"""RequestReader: one connection's request head, as bytes in and one decision out. No sockets.

h11 parses; this adds what the front needs around it: the 8 KiB bound on the whole head,
the status each protocol error is answered with, and what the connection's later bytes
and its read-EOF mean. The front and the fuzz tests drive this same object.

    feed(data)  ->  NeedMore | Reject | Request      while the head is incomplete
    feed(b"")   ->  Gone                            EOF before a complete head: close, no answer
    feed(data)  ->  Ignored                         after the head (a player may send anything)
    feed(b"")   ->  ReadClosed                      after the head: stop reading, keep sending
"""

from __future__ import annotations

from dataclasses import dataclass

import h11

MAX_REQUEST_HEAD = 8192


@dataclass(frozen=True)
class NeedMore:
    """The head is not complete yet."""


@dataclass(frozen=True)
class Reject:
    """Answer with this status and text, then close; why is for the log."""
    status: int
    text: str
    why: str


@dataclass(frozen=True)
class Request:
    method: bytes
    target: bytes
    headers: tuple[tuple[bytes, bytes], ...]  # names lower-cased, as h11 gives them
    host: str | None  # the Host the client used, safe to echo in a link; None without one (HTTP/1.0)
    keep_alive: bool = False  # HTTP/1.1 without "Connection: close": it may send another request


@dataclass(frozen=True)
class Gone:
    """The peer closed (or reset) before its head was complete: nothing to answer."""


@dataclass(frozen=True)
class Ignored:
    """Bytes after the head: a pipelined request, a body, noise. Only the first request is served."""


@dataclass(frozen=True)
class ReadClosed:
    """The peer shut down its sending side after its head (HTTP/1.0 clients may): it still reads."""


NEED_MORE, GONE, IGNORED, READ_CLOSED = NeedMore(), Gone(), Ignored(), ReadClosed()

Result = NeedMore | Reject | Request | Gone | Ignored | ReadClosed


def safe_host(headers) -> str | None:
    """The Host the viewer used (for absolute links in playlists); None if none, or none safe to echo."""
    for name, value in headers:
        if name == b"host":
            host = value.decode("ascii", "replace")
            if all(c.isalnum() or c in ".-:[]" for c in host):
                return host
    return None


class RequestReader:
    def __init__(self, max_head: int = MAX_REQUEST_HEAD):
        self.max_head = max_head
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head)
        self._received = 0
        self._decided: Result | None = None  # the Request or Reject, once there is one
        self._after = b""  # bytes after the head (a pipelined request), for the next reader

    @property
    def head_done(self) -> bool:
        """A request or a refusal was decided: later bytes are ignored."""
        return self._decided is not None

    def feed(self, data: bytes) -> Result:
        if self._decided is not None:
            if len(self._after) < self.max_head:
                self._after += data[:self.max_head - len(self._after)]
            return IGNORED if data else READ_CLOSED
        if not data:
            return GONE
        self._conn.receive_data(data)
        self._received += len(data)
        try:
            event = self._conn.next_event()
        except h11.RemoteProtocolError as e:
            status = e.error_status_hint if e.error_status_hint >= 400 else 400
            # A 400 does not echo h11's words: they may quote the client's bytes.
            return self._decide(Reject(status, "bad request" if status == 400 else str(e), str(e)))
        if event is h11.NEED_DATA:
            return NEED_MORE
        if not isinstance(event, h11.Request):  # a server's first event is a Request, or an error
            return self._decide(Reject(400, "bad request", f"unexpected {type(event).__name__}"))
        # h11 bounds only a head still incomplete; one that arrived whole in a single feed
        # is measured here, so the limit does not depend on how TCP split it.
        head_size = self._received - len(self._conn.trailing_data[0])
        if head_size > self.max_head:
            return self._decide(Reject(431, "request header fields too large",
                                       f"request head of {head_size} bytes"))
        headers = tuple((bytes(name), bytes(value)) for name, value in event.headers)
        keep_alive = event.http_version == b"1.1" and not any(
            name == b"connection" and b"close" in value.lower() for name, value in headers)
        self._after = bytes(self._conn.trailing_data[0])
        return self._decide(Request(bytes(event.method), bytes(event.target), headers, safe_host(headers),
                                    keep_alive))

    def next_request(self) -> tuple[RequestReader, Result]:
        """For a kept connection: a reader for its next request, fed what already came of it."""
        reader = RequestReader(self.max_head)
        return reader, (reader.feed(self._after) if self._after else NEED_MORE)

    def _decide(self, result: Result) -> Result:
        self._decided = result
        return result
