"""RequestReader, without sockets: bytes in, one decision out, however the bytes are split."""

from __future__ import annotations

import pytest

from http_front.request_reader import (GONE, IGNORED, MAX_REQUEST_HEAD, NEED_MORE, READ_CLOSED, Reject, Request,
                                       RequestReader)

GET = b"GET /channels/1.ts?x=1 HTTP/1.1\r\nHost: tv.example:8000\r\nUser-Agent: mpv\r\n\r\n"


def feed_all(*chunks: bytes) -> list:
    reader = RequestReader()
    return [reader.feed(c) for c in chunks]


def test_a_whole_request_in_one_feed_is_a_request():
    [result] = feed_all(GET)
    assert result == Request(b"GET", b"/channels/1.ts?x=1", ((b"host", b"tv.example:8000"), (b"user-agent", b"mpv")),
                             "tv.example:8000", keep_alive=True)


@pytest.mark.parametrize("head, keep_alive", [
    (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", True),
    (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", False),
    (b"GET / HTTP/1.0\r\n\r\n", False),
])
def test_a_request_may_keep_its_connection_unless_it_says_close_or_is_http_1_0(head, keep_alive):
    assert RequestReader().feed(head).keep_alive is keep_alive


def test_the_next_request_on_a_kept_connection_gets_what_was_pipelined_after_the_first():
    reader = RequestReader()
    first = reader.feed(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTT")
    assert first.target == b"/a"
    assert reader.feed(b"P/1.1\r\nHost: a\r\n\r\n") is IGNORED
    reader, second = reader.next_request()
    assert second.target == b"/b"
    _, nothing = reader.next_request()
    assert nothing is NEED_MORE


@pytest.mark.parametrize("cut", range(1, len(GET)))
def test_every_split_in_two_needs_more_then_gives_the_same_request(cut):
    first, second = feed_all(GET[:cut], GET[cut:])
    assert first == NEED_MORE
    assert second == feed_all(GET)[0]


def test_one_byte_at_a_time_gives_the_request_at_the_last_byte():
    results = feed_all(*(GET[i:i + 1] for i in range(len(GET))))
    assert results[:-1] == [NEED_MORE] * (len(GET) - 1)
    assert isinstance(results[-1], Request) and results[-1].target == b"/channels/1.ts?x=1"


@pytest.mark.parametrize("cuts", [(5,), (5, 30), (1, 2, 3, 40), (len(GET) - 1,)])
def test_every_split_in_several_feeds_gives_the_same_request(cuts):
    bounds = [0, *cuts, len(GET)]
    results = feed_all(*(GET[a:b] for a, b in zip(bounds, bounds[1:])))
    assert results == [NEED_MORE] * len(cuts) + [feed_all(GET)[0]]


def test_eof_before_a_complete_head_is_gone_without_an_answer():
    assert feed_all(b"") == [GONE]
    assert feed_all(b"GET /healthz HTTP/1.1\r\n", b"") == [NEED_MORE, GONE]


def test_bytes_after_the_head_are_ignored_and_eof_after_it_only_closes_reading():
    reader = RequestReader()
    assert isinstance(reader.feed(GET + b"GET /healthz HTTP/1.1\r\n"), Request)  # pipelined: not served
    assert reader.head_done
    assert reader.feed(b"\0\xff anything a player sends") == IGNORED
    assert reader.feed(b"") == READ_CLOSED  # an HTTP/1.0 client's shutdown(SHUT_WR): still send to it


def test_an_http_1_0_request_then_eof_is_a_request_then_read_closed():
    assert feed_all(b"GET /channels/1.ts HTTP/1.0\r\n\r\n", b"") == [
        Request(b"GET", b"/channels/1.ts", (), None), READ_CLOSED]


@pytest.mark.parametrize(("raw", "status"), [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET /channels/1.ts\r\n\r\n", 400),
    (b"GET  /x HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    (b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host
    (b"GET /healthz HTTP/1.1\r\nX-Broken header\r\n\r\n", 400),
])
def test_a_malformed_head_is_rejected_with_its_status(raw, status):
    reader = RequestReader()
    result = reader.feed(raw)
    assert isinstance(result, Reject) and result.status == status and result.why
    if status == 400:
        assert result.text == "bad request"  # never the client's bytes echoed back
    assert reader.feed(b"more") == IGNORED and reader.feed(b"") == READ_CLOSED


def test_an_incomplete_head_growing_past_8_kib_is_rejected_431_before_it_ends():
    reader = RequestReader()
    assert reader.feed(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ") == NEED_MORE
    result = reader.feed(b"a" * (MAX_REQUEST_HEAD + 1024))
    assert isinstance(result, Reject) and result.status == 431


@pytest.mark.parametrize("pieces", [1, 2, 3])
def test_a_complete_head_over_8_kib_is_rejected_431_however_it_arrives(pieces):
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (MAX_REQUEST_HEAD + 100) + b"\r\n\r\n"
    size = -(-len(head) // pieces)
    results = feed_all(*(head[i:i + size] for i in range(0, len(head), size)))
    assert results[-1] == Reject(431, "request header fields too large", f"request head of {len(head)} bytes")
    assert all(r == NEED_MORE for r in results[:-1])


def test_a_head_of_exactly_8_kib_is_accepted_and_what_follows_it_is_not_counted():
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: "
    head += b"a" * (MAX_REQUEST_HEAD - len(head) - 4) + b"\r\n\r\n"
    assert len(head) == MAX_REQUEST_HEAD
    [result] = feed_all(head + b"b" * 5000)  # a body or junk after the head
    assert isinstance(result, Request)


@pytest.mark.parametrize(("host", "shown"), [(b"tv.example:8000", "tv.example:8000"), (b"[::1]:8000", "[::1]:8000"),
                                             (b"evil\"><script>", None), (b"a b", None)])
def test_the_host_is_kept_only_when_safe_to_echo(host, shown):
    [result] = feed_all(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert result.host == shown
