"""Response heads and short bodies, as bytes.

h11 parses every request. It does not write our responses: for an HTTP/1.1 peer it
frames a body of unknown length as chunked, and a live TS stream must be the raw
close-delimited body that every player expects (and that keeps each send one slice
of the shared buffer). Every response closes the connection, but HLS playlists' and
segments' (a player asks for two a second), which keep it open for the next request.
"""

from __future__ import annotations

import json
from http import HTTPStatus

SERVER = "retrovue-air"


def head(status: int, headers: list[tuple[str, str]] | tuple = (), keep_alive: bool = False,
         cache_control: str = "no-store") -> bytes:
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", f"Server: {SERVER}"]
    lines += [] if keep_alive else ["Connection: close"]
    lines += [f"Cache-Control: {cache_control}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def stream_head() -> bytes:
    return head(200, [("Content-Type", "video/mp2t")])


def text(status: int, body: str, headers: list[tuple[str, str]] | tuple = (), head_only: bool = False) -> bytes:
    data = (body.rstrip("\n") + "\n").encode()
    hdrs = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data))), *headers]
    return head(status, hdrs) + (b"" if head_only else data)


def body(status: int, content_type: str, data: bytes, head_only: bool = False) -> bytes:
    return body_head(status, content_type, len(data)) + (b"" if head_only else data)


def body_head(status: int, content_type: str, length: int) -> bytes:
    """The head of a body of that length, sent before it."""
    return head(status, [("Content-Type", content_type), ("Content-Length", str(length))])


def json_body(status: int, obj: object, head_only: bool = False) -> bytes:
    data = (json.dumps(obj, indent=1) + "\n").encode()
    hdrs = [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    return head(status, hdrs) + (b"" if head_only else data)


def hls_body(status: int, content_type: str, data: bytes, headers: list[tuple[str, str]], keep_alive: bool,
             head_only: bool = False) -> bytes:
    """A playlist or a segment: its own Cache-Control among the headers, the connection kept if asked."""
    cache = [value for name, value in headers if name == "Cache-Control"]
    hdrs = [("Content-Type", content_type), ("Content-Length", str(len(data))),
            *[(name, value) for name, value in headers if name != "Cache-Control"]]
    return head(status, hdrs, keep_alive, *cache) + (b"" if head_only else data)
