"""One load client for any HTTP stream server: one process, one selectors loop, N viewers.

Connects are non-blocking and at most `window` viewers are joining at once (connecting or
waiting for their first byte), so the client never floods a listen queue by itself and the
time to first byte of each viewer is its own, not the time the client took to get round to
it. After joining, a viewer only reads: whatever arrives is counted and thrown away.
"""

from __future__ import annotations

import errno
import selectors
import socket
import time

CONNECTING, JOINING, STREAMING, CLOSED = range(4)


class Viewer:
    __slots__ = ("sock", "state", "started", "first_byte", "first_body_byte", "head", "status",
                 "received", "body", "lost")

    def __init__(self, sock: socket.socket, now: float):
        self.sock = sock
        self.state = CONNECTING
        self.started = now
        self.first_byte: float | None = None  # seconds from connect() to the response's first byte
        self.first_body_byte: float | None = None  # ... to the stream's first byte, after the head
        self.head = b""
        self.status: int | None = None
        self.received = 0  # every byte, head included
        self.body = 0
        self.lost: str | None = None  # why the viewer was lost: "refused 503", "closed", "connect ..."


class LoadClient:
    def __init__(self, host: str, port: int, path: str, count: int, window: int = 256):
        self.address = (host, port)
        self.request = f"GET {path} HTTP/1.1\r\nHost: bench\r\nUser-Agent: retrovue-air-bench\r\n\r\n".encode()
        self.count, self.window = count, window
        self.sel = selectors.DefaultSelector()
        self.viewers: list[Viewer] = []
        self.joining = 0
        self.buf = bytearray(262144)
        self.view = memoryview(self.buf)

    # -- joining ----------------------------------------------------------------------

    def _connect_more(self, now: float) -> None:
        while self.joining < self.window and len(self.viewers) < self.count:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            v = Viewer(s, now)
            self.viewers.append(v)
            self.joining += 1
            err = s.connect_ex(self.address)
            if err not in (0, errno.EINPROGRESS):
                self._lose(v, f"connect: {errno.errorcode.get(err, err)}")
                continue
            self.sel.register(s, selectors.EVENT_WRITE, v)

    def _connected(self, v: Viewer) -> None:
        err = v.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._lose(v, f"connect: {errno.errorcode.get(err, err)}")
            return
        try:
            v.sock.send(self.request)  # a few dozen bytes into an empty socket: all of it goes
        except OSError as e:
            self._lose(v, f"request: {errno.errorcode.get(e.errno, e.errno)}")
            return
        v.state = JOINING
        self.sel.modify(v.sock, selectors.EVENT_READ, v)

    def _read_head(self, v: Viewer, data: bytes, now: float) -> None:
        if v.first_byte is None:
            v.first_byte = now - v.started
        v.head += data
        end = v.head.find(b"\r\n\r\n")
        if end < 0:
            if len(v.head) > 65536:
                self._lose(v, "no response head")
            return
        status_line = v.head.split(b"\r\n", 1)[0].split()
        v.status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else 0
        if v.status != 200:
            self._lose(v, f"refused {v.status}")
            return
        body = len(v.head) - end - 4
        v.head = b""
        v.state = STREAMING
        self.joining -= 1
        if body:
            v.first_body_byte = now - v.started
            v.body += body

    def _lose(self, v: Viewer, why: str) -> None:
        if v.state in (CONNECTING, JOINING):
            self.joining -= 1
        if v.state != CLOSED:
            try:
                self.sel.unregister(v.sock)
            except (KeyError, ValueError):
                pass
            v.sock.close()
        v.state, v.lost = CLOSED, why

    # -- the loop ---------------------------------------------------------------------

    def run_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        view, sel, clock = self.view, self.sel, time.monotonic
        while True:
            now = clock()
            left = end - now
            if left <= 0:
                return
            if self.joining < self.window and len(self.viewers) < self.count:
                self._connect_more(now)
            for key, _ in sel.select(min(left, 0.05) if len(self.viewers) < self.count else left):
                v = key.data
                if v.state == CONNECTING:
                    self._connected(v)
                    continue
                try:
                    n = v.sock.recv_into(view)
                except BlockingIOError:
                    continue
                except OSError:
                    n = 0
                if n == 0:
                    self._lose(v, "closed" if v.state == STREAMING else "closed before the stream")
                    continue
                v.received += n
                if v.state != STREAMING:
                    self._read_head(v, bytes(view[:n]), clock())
                    continue
                if v.first_body_byte is None:
                    v.first_body_byte = clock() - v.started
                v.body += n

    def run_until_joined(self, timeout: float) -> bool:
        """Until every viewer streams or is lost (or timeout); True if nobody is still joining."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.viewers) == self.count and self.joining == 0:
                return True
            self.run_for(0.1)
        return len(self.viewers) == self.count and self.joining == 0

    # -- what it saw ------------------------------------------------------------------

    def body_bytes(self) -> list[int]:
        return [v.body for v in self.viewers]

    def streaming(self) -> int:
        return sum(v.state == STREAMING for v in self.viewers)

    def losses(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for v in self.viewers:
            if v.lost:
                out[v.lost] = out.get(v.lost, 0) + 1
        return out

    def close(self) -> None:
        for v in self.viewers:
            if v.state != CLOSED:
                v.sock.close()
        self.sel.close()
