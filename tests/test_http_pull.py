"""http_pull, the relay's puller, against HTTP servers that are not retrovue-air: a redirect,
a chunked body that starts mid-packet, an error answer, silence."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

import pytest

from harness import ROOT, assert_aligned_ts

from air_worker import http_pull

PACKETS = b"".join(bytes([0x47, 0, i % 256]) + bytes(185) for i in range(40))


def serve_once(answers: list[bytes]) -> int:
    """A listener that gives each connection the next canned answer, then closes it."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def run():
        with listener:
            for answer in answers:
                conn, _ = listener.accept()
                with conn:
                    conn.recv(65536)
                    conn.sendall(answer)
    threading.Thread(target=run, daemon=True).start()
    return port


def chunked(data: bytes, size: int = 1000) -> bytes:
    parts = [data[i:i + size] for i in range(0, len(data), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def run_pull(url: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "air_worker.http_pull", url], cwd=ROOT,
                          capture_output=True, timeout=30)


def test_it_follows_a_redirect_reads_chunks_and_starts_on_a_packet_boundary():
    body = b"\x00\x47junk" + PACKETS  # begins mid-packet, with a stray sync byte
    port = serve_once([
        b"HTTP/1.1 302 Found\r\nLocation: /live.ts\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(body),
    ])
    result = run_pull(f"http://127.0.0.1:{port}/channels/1.ts")
    assert result.returncode == 0, result.stderr
    assert result.stdout == PACKETS
    assert_aligned_ts(result.stdout)
    assert b"the origin ended the stream" in result.stderr


def test_an_error_answer_is_reported_with_the_origins_reason():
    text = b"channel 1 is unavailable: ffmpeg exited with status 1\n"
    port = serve_once([b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: %d\r\n\r\n%s" % (len(text), text)])
    result = run_pull(f"http://127.0.0.1:{port}/channels/1.ts")
    assert result.returncode == 1 and result.stdout == b""
    assert result.stderr.decode().strip().endswith("answered 503 Service Unavailable: " + text.decode().strip())


def test_a_silent_origin_is_given_up_after_the_stall_time(monkeypatch):
    listener = socket.create_server(("127.0.0.1", 0))  # accepts (backlog), never answers
    monkeypatch.setattr(http_pull, "STALL_SECONDS", 0.3)
    with listener, pytest.raises(http_pull.PullError, match="nothing from the origin for 0.3 s"):
        http_pull.open_stream(f"http://127.0.0.1:{listener.getsockname()[1]}/x.ts")


@pytest.mark.parametrize("data, start", [(PACKETS, 0), (b"\x47" * 5 + PACKETS, 5), (PACKETS[:300], None)])
def test_packet_start_needs_three_sync_bytes_a_packet_apart(data, start):
    assert http_pull.packet_start(data) == start
