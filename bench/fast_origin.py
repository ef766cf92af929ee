"""An HTTP MPEG-TS origin that is faster than real time: a .ts file looped as fast as the socket takes it.

A relay pointed at a static .ts file (or a misbehaving origin) gets exactly this. The tests
and the bench use it to show what a relay makes of it: the stream's own rate, and a bounded
buffer, not whatever loopback can carry.
"""

from __future__ import annotations

import socket
import subprocess
import threading
from pathlib import Path

SECONDS = 4.0  # the looped file's length; its size over this is the stream's real rate


def make_looped_ts(ffmpeg: str, path: Path, video_kbps: int = 600, audio_kbps: int = 64) -> Path:
    """A SECONDS-long H.264 + AAC MPEG-TS, as our own origin would send it (one keyframe a second)."""
    subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", f"{SECONDS:g}",
                    "-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-b:v", f"{video_kbps}k",
                    "-maxrate", f"{video_kbps}k", "-bufsize", f"{video_kbps}k",
                    "-c:a", "aac", "-b:a", f"{audio_kbps}k", "-f", "mpegts", str(path)],
                   check=True, timeout=60)
    return path


class FastOrigin:
    """Answers every GET with the file, looped until the client leaves, without pacing.

    With `authorization`, a request whose Authorization header is not exactly that value
    gets 401. Every request head is kept in `requests`."""

    def __init__(self, ts: bytes, authorization: str | None = None):
        self.ts = ts
        self.authorization = authorization
        self.requests: list[bytes] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def url(self, path: str = "/live.ts", userinfo: str = "", query: str = "") -> str:
        return f"http://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}{path}{'?' + query if query else ''}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            try:
                while b"\r\n\r\n" not in head:
                    data = conn.recv(4096)
                    if not data:
                        return
                    head += data
                self.requests.append(head)
                given = [line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                         if line.lower().startswith(b"authorization:")]
                if self.authorization is not None and given != [self.authorization.encode()]:
                    conn.sendall(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"origin\"\r\n"
                                 b"Content-Length: 0\r\nConnection: close\r\n\r\n")
                    return
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nConnection: close\r\n\r\n")
                while True:
                    conn.sendall(self.ts)
            except OSError:
                return  # the client left, or close() cut it

    def close(self) -> None:
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept(); close() alone would not
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            for conn in self._conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        for t in self._threads:
            t.join(timeout=5)

    def __enter__(self) -> "FastOrigin":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
