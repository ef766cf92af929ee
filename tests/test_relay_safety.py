"""A relay's origin is not to be trusted: too fast, redirecting elsewhere, or behind credentials.

Each origin here is a small server of the test's own on loopback; the edge is the real service.
"""

from __future__ import annotations

import base64
import socket
import threading
import time

import psutil
import pytest
import requests

from harness import RawViewer, Reader, free_port, require_tool, wait_until

from bench.fast_origin import SECONDS, FastOrigin, make_looped_ts

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def looped_ts(tmp_path_factory) -> bytes:
    """A 4 s MPEG-TS of 600 + 64 kbit/s, which the fast origin loops without pause."""
    return make_looped_ts(require_tool("ffmpeg"), tmp_path_factory.mktemp("origin") / "loop.ts").read_bytes()


def relay_channel(url: str, channel_id: str = "r", extra: str = "") -> str:
    return (f'\n[[channel]]\nid = "{channel_id}"\nname = "Relay"\nsource = "relay"\nurl = "{url}"\n'
            f"video_kbps = 600\naudio_kbps = 64\n{extra}\n")


def edge_config(url: str, extra: str = "") -> str:
    return "failed_retry_seconds = 1\n" + relay_channel(url, extra=extra)


OTHER_CHANNEL = ('\n[[channel]]\nid = "other"\nname = "Other"\nsource = "test-pattern"\n'
                 "video_kbps = 300\naudio_kbps = 64\nwidth = 320\nheight = 180\n")


def assert_same_front_and_no_leak(edge, front_pid: int, fds: tuple[int, int]) -> None:
    edge.wait_idle(timeout=10)
    assert edge.front.pid == front_pid and edge.front.is_running(), "the front was replaced"
    assert sum(1 for line in edge.lines if "started http_front pid" in line) == 1
    wait_until(lambda: edge.fd_counts() == fds, 5, f"fds back to {fds}")


@pytest.mark.parametrize("remux", [False, True], ids=["http_pull", "remux"])
def test_a_relay_of_an_origin_faster_than_real_time_gets_the_streams_own_rate_in_bounded_memory(
        service_factory, looped_ts, remux):
    with FastOrigin(looped_ts) as origin:
        edge = service_factory(config_text=edge_config(origin.url(), extra="remux = true" if remux else "")
                               + OTHER_CHANNEL)
        front_pid, fds = edge.front.pid, edge.fd_counts()
        other = Reader(edge, "other")  # a viewer of another channel, who must not notice
        other.start()
        wait_until(lambda: other.count > 32 * 1024, 15, "the other channel streaming")
        rss_before = edge.front.memory_info().rss
        viewer = Reader(edge, "r")
        viewer.start()
        wait_until(lambda: viewer.count > 0, 15, "the relay streaming")
        started = time.monotonic()
        samples, peak = [], rss_before
        while time.monotonic() - started < 9:
            peak = max(peak, edge.front.memory_info().rss)
            samples.append((time.monotonic(), viewer.count))
            time.sleep(0.1)
        viewer.finish()
        other.finish()
    assert viewer.count > 0
    assert other.longest_gap < 0.5, f"the other channel's viewer waited {other.longest_gap:.2f} s"
    assert peak - rss_before < 32 * MIB, f"the front grew by {(peak - rss_before) / MIB:.0f} MiB"
    # The stream's own rate: the file's bytes over its length. The first viewer of an idle relay
    # gets the origin's join burst at once (a few seconds), then the stream as it plays.
    stream_rate = len(looped_ts) / SECONDS
    (t1, c1), (t2, c2) = next(s for s in samples if s[0] >= started + 3), samples[-1]
    real_time = (c2 - c1) / stream_rate / (t2 - t1)
    assert 0.6 < real_time < 1.6, f"the viewer got {real_time:.2f} s of stream a second after its burst"
    assert viewer.count / stream_rate < (samples[-1][0] - started) + 15, "more than the burst ahead"
    assert_same_front_and_no_leak(edge, front_pid, fds)


# Redirects and error answers: nothing an origin says reaches our clients but its status code

class Answering:
    """A server on loopback that gives every request the same canned answer; `requests` holds their heads."""

    def __init__(self, answer: bytes):
        self.answer = answer
        self.requests: list[bytes] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with conn:
                try:
                    head = b""
                    while b"\r\n\r\n" not in head and (data := conn.recv(4096)):
                        head += data
                    self.requests.append(head)
                    conn.sendall(self.answer)
                except OSError:
                    pass

    def close(self) -> None:
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(timeout=5)


def error_answer(status: str, body: bytes, headers: str = "") -> bytes:
    return f"HTTP/1.1 {status}\r\n{headers}Content-Length: {len(body)}\r\n\r\n".encode() + body


SECRET = "instance-secret-4f9a2c"
INTERNAL_BODY = f"{SECRET} is the key\nmore of it\n".encode()


def answers_of(edge, channel_id: str = "r") -> dict[str, str]:
    """Everything the edge tells a client about its channels, by path."""
    viewer = RawViewer(edge, channel_id)
    head = viewer.read_head()
    viewer.sock.settimeout(10)
    refusal = bytes(viewer.body) + b"".join(iter(lambda: viewer.sock.recv(65536), b""))
    viewer.close()
    out = {"503": (head + b"\r\n\r\n" + refusal).decode()}
    for path in ("/", "/channels", "/metrics", "/xmltv.xml", "/channels.m3u", f"/channels/{channel_id}.m3u"):
        out[path] = requests.get(edge.url(path), timeout=10).text
    return out


@pytest.mark.parametrize("origin_says", ["a redirect to an internal address", "an error with a body"])
def test_an_origins_redirect_is_not_followed_and_no_upstream_body_reaches_a_client(service_factory, origin_says):
    internal = Answering(error_answer(f"500 {SECRET}-reason", INTERNAL_BODY))
    if origin_says == "an error with a body":
        origin = internal
    else:
        origin = Answering(error_answer("302 Found", b"", f"Location: http://127.0.0.1:{internal.port}/latest/\r\n"))
    try:
        edge = service_factory(config_text=edge_config(f"http://127.0.0.1:{origin.port}/channels/1.ts"))
        front_pid, fds = edge.front.pid, edge.fd_counts()
        answers = answers_of(edge)
        if origin is not internal:
            assert internal.requests == [], "the edge fetched the address the origin redirected it to"
        assert answers["503"].startswith("HTTP/1.1 503")
        status = "302" if origin is not internal else "500"
        assert f"origin answered {status}" in answers["503"]
        assert f"origin answered {status}" in edge.channels()["r"]["error"]
        leaks = {path: text for path, text in answers.items() if SECRET in text}
        assert not leaks, f"the upstream's words in {sorted(leaks)}"
        assert not [line for line in edge.lines if SECRET in line]
        assert_same_front_and_no_leak(edge, front_pid, fds)
    finally:
        for server in {internal, origin}:
            server.close()


def test_a_redirect_is_followed_when_the_channel_says_so(service_factory, looped_ts):
    with FastOrigin(looped_ts) as target:
        origin = Answering(error_answer("302 Found", b"", f"Location: {target.url()}\r\n"))
        try:
            edge = service_factory(config_text=edge_config(f"http://127.0.0.1:{origin.port}/1.ts",
                                                           extra="follow_redirects = true"))
            viewer = Reader(edge, "r")
            viewer.start()
            wait_until(lambda: viewer.count > 64 * 1024, 15, "the relay streaming from where it was sent")
            viewer.finish()
            assert len(origin.requests) == 1 and len(target.requests) == 1
            edge.wait_idle(timeout=10)
        finally:
            origin.close()


# Credentials in a relay's URL: sent to the origin, shown to nobody

PASSWORD, TOKEN = "pa55w0rd", "s3cr3tt0ken"


def test_a_relays_credentials_reach_its_origin_and_appear_in_no_answer_no_log_and_no_command_line(
        service_factory, looped_ts):
    with FastOrigin(looped_ts, authorization="Basic " + base64.b64encode(f"user:{PASSWORD}".encode()).decode()) \
            as origin:
        dead = f"http://user:{PASSWORD}@127.0.0.1:{free_port()}/live.ts?token={TOKEN}"
        live = origin.url(userinfo=f"user:{PASSWORD}", query=f"token={TOKEN}&x=1")
        edge = service_factory(config_text=edge_config(live) + relay_channel(dead, "down"))
        front_pid, fds = edge.front.pid, edge.fd_counts()
        viewer = Reader(edge, "r")
        viewer.start()
        wait_until(lambda: viewer.count > 64 * 1024, 15, "the relay streaming from the origin that wants a password")
        pull = psutil.Process(edge.channels()["r"]["ffmpeg_pid"])
        command_line = " ".join(pull.cmdline())  # what any local user sees in ps
        answers = answers_of(edge, "down") | {
            "/ (while live)": requests.get(edge.url("/"), timeout=10).text,
            "/channels (while live)": requests.get(edge.url("/channels"), timeout=10).text}
        viewer.finish()
    [request] = origin.requests
    assert f"GET /live.ts?token={TOKEN}&x=1 HTTP/1.1".encode() in request  # the query goes to the origin as it is
    assert f"Relay of 127.0.0.1:{origin.port}" in answers["/ (while live)"]
    assert "Connection refused" in answers["503"] and "user:***@127.0.0.1" in answers["503"]
    leaks = sorted(path for path, text in answers.items() if PASSWORD in text or TOKEN in text)
    assert not leaks, f"a credential in {leaks}"
    assert PASSWORD not in command_line and TOKEN not in command_line, command_line
    assert not [line for line in edge.lines if PASSWORD in line or TOKEN in line]
    assert_same_front_and_no_leak(edge, front_pid, fds)
