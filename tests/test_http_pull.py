"""http_pull, the relay's puller, against HTTP servers that are not retrovue-air: a redirect,
a chunked body that starts mid-packet, an error answer, credentials, no clock, silence."""

from __future__ import annotations

import base64
import socket
import subprocess
import sys
import tempfile
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


def run_pull(url: str, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "air_worker.http_pull", *options, url], cwd=ROOT,
                          capture_output=True, timeout=30)


def test_it_follows_a_redirect_when_told_reads_chunks_and_starts_on_a_packet_boundary():
    body = b"\x00\x47junk" + PACKETS  # begins mid-packet, with a stray sync byte
    port = serve_once([
        b"HTTP/1.1 302 Found\r\nLocation: /live.ts\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(body),
    ])
    result = run_pull(f"http://127.0.0.1:{port}/channels/1.ts", "--follow-redirects")
    assert result.returncode == 0, result.stderr
    assert result.stdout == PACKETS
    assert_aligned_ts(result.stdout)
    assert b"the origin ended the stream" in result.stderr


def test_a_redirect_is_refused_by_its_status_code_alone_unless_told():
    port = serve_once([b"HTTP/1.1 302 Go There\r\nLocation: http://10.1.2.3/secret\r\nContent-Length: 0\r\n\r\n"])
    result = run_pull(f"http://127.0.0.1:{port}/channels/1.ts")
    assert result.returncode == 1 and result.stdout == b""
    last = result.stderr.decode().strip().splitlines()[-1]
    assert last == (f"http://127.0.0.1:{port}/channels/1.ts: the origin answered 302 Found "
                    "(a redirect: not followed unless the channel has follow_redirects = true)")


@pytest.mark.parametrize("status, words", [("503 Service Unavailable", "503 Service Unavailable"),
                                           ("500 hunter2", "500 Internal Server Error"),
                                           ("599 Whatever", "599 (a server error)")])
def test_an_error_answer_is_reported_by_its_status_in_our_words_never_the_origins(status, words):
    text = b"secret: hunter2\n"
    port = serve_once([b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n%s" % (status.encode(), len(text), text)])
    result = run_pull(f"http://127.0.0.1:{port}/channels/1.ts")
    assert result.returncode == 1 and result.stdout == b""
    assert result.stderr.decode().strip() == f"http://127.0.0.1:{port}/channels/1.ts: the origin answered {words}"


def test_userinfo_goes_as_basic_auth_to_its_origin_only_and_the_url_is_never_said_whole():
    elsewhere = socket.create_server(("127.0.0.1", 0))
    heads: list[bytes] = []

    def other_origin():
        with elsewhere:
            conn, _ = elsewhere.accept()
            with conn:
                heads.append(conn.recv(65536))
                conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    thread = threading.Thread(target=other_origin, daemon=True)
    thread.start()
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def origin():
        with listener:
            conn, _ = listener.accept()
            with conn:
                heads.append(conn.recv(65536))
                conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:%d/x.ts\r\nContent-Length: 0\r\n\r\n"
                             % elsewhere.getsockname()[1])
    threading.Thread(target=origin, daemon=True).start()
    with tempfile.NamedTemporaryFile("w", suffix=".url") as f:
        f.write(f"http://us%40er:pa55w0rd@127.0.0.1:{port}/1.ts?token=t0k3n\n")
        f.flush()
        result = subprocess.run([sys.executable, "-m", "air_worker.http_pull", "--follow-redirects",
                                 "--url-from", f.name], cwd=ROOT, capture_output=True, timeout=30)
    thread.join(timeout=10)
    first, second = heads
    assert b"GET /1.ts?token=t0k3n HTTP/1.1\r\n" in first  # the query is the origin's to read
    assert b"Authorization: Basic " + base64.b64encode(b"us@er:pa55w0rd") + b"\r\n" in first
    assert b"Host: 127.0.0.1:%d\r\n" % port in first
    assert b"Authorization" not in second  # another origin: the credentials are not its
    assert result.returncode == 1
    assert b"pa55w0rd" not in result.stderr and b"t0k3n" not in result.stderr
    assert result.stderr.decode().strip().endswith(": the origin answered 404 Not Found")


def test_a_stream_without_pcr_is_refused_not_passed_on_unpaced():
    no_clock = PACKETS * 400  # 3 MB of packets, not one with a PCR
    port = serve_once([b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(no_clock) + no_clock])
    result = run_pull(f"http://127.0.0.1:{port}/channels/1.ts")
    assert result.returncode == 1
    assert len(result.stdout) <= 2 * 1024 * 1024 + 65536
    assert b"no PCR in 2048 KiB of stream" in result.stderr.splitlines()[-1]


def test_a_silent_origin_is_given_up_after_the_stall_time(monkeypatch):
    listener = socket.create_server(("127.0.0.1", 0))  # accepts (backlog), never answers
    monkeypatch.setattr(http_pull, "STALL_SECONDS", 0.3)
    with listener, pytest.raises(http_pull.PullError, match="nothing from the origin for 0.3 s"):
        http_pull.open_stream(f"http://127.0.0.1:{listener.getsockname()[1]}/x.ts")


@pytest.mark.parametrize("data, start", [(PACKETS, 0), (b"\x47" * 5 + PACKETS, 5), (PACKETS[:300], None)])
def test_packet_start_needs_three_sync_bytes_a_packet_apart(data, start):
    assert http_pull.packet_start(data) == start
