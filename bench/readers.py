"""Many viewers in one process: non-blocking sockets that read whatever arrives."""

from __future__ import annotations

import resource
import selectors
import socket
import time


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Readers:
    def __init__(self, host: str, port: int, path: str, count: int):
        self.sel = selectors.DefaultSelector()
        self.counts: dict[socket.socket, int] = {}
        request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
        for _ in range(count):
            s = socket.create_connection((host, port))
            s.sendall(request)
            s.setblocking(False)
            self.counts[s] = 0
            self.sel.register(s, selectors.EVENT_READ)
        self.closed = 0
        self.buf = bytearray(262144)

    def run_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        view = memoryview(self.buf)
        while (left := end - time.monotonic()) > 0:
            for key, _ in self.sel.select(left):
                s = key.fileobj
                try:
                    n = s.recv_into(view)
                except BlockingIOError:
                    continue
                except OSError:
                    n = 0
                if n == 0:
                    self.sel.unregister(s)
                    self.closed += 1
                    continue
                self.counts[s] += n

    def total(self) -> int:
        return sum(self.counts.values())

    def snapshot(self) -> list[int]:
        return list(self.counts.values())

    def close(self) -> None:
        for s in self.counts:
            s.close()
        self.sel.close()
