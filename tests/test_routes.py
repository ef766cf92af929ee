"""Routing of (method, target), the response bytes, and h11's limits as the front uses them."""

from __future__ import annotations

import re

import h11
import pytest

from http_front import responses
from http_front.routes import ChannelList, Health, HlsPlaylist, HlsSegment, Playlist, Refuse, Watch, route
from http_front.request_reader import MAX_REQUEST_HEAD

IDS = frozenset({"1", "news_2", "a-b"})


@pytest.mark.parametrize("method, target, expected", [
    (b"GET", b"/channels/1.ts", Watch("1", head_only=False)),
    (b"HEAD", b"/channels/1.ts", Watch("1", head_only=True)),
    (b"GET", b"/channels/news_2.ts", Watch("news_2", head_only=False)),
    (b"GET", b"/channels/1.ts?token=x&y=1", Watch("1", head_only=False)),
    (b"GET", b"/channels/%31.ts", Watch("1", head_only=False)),
    (b"GET", b"/channels/a%2Db.ts", Watch("a-b", head_only=False)),
    (b"GET", b"http://example.test/channels/1.ts", Watch("1", head_only=False)),
    (b"GET", b"/channels", ChannelList(head_only=False)),
    (b"HEAD", b"/channels?x", ChannelList(head_only=True)),
    (b"GET", b"/healthz", Health(head_only=False)),
    (b"HEAD", b"/healthz?probe=1", Health(head_only=True)),
])
def test_known_paths_route_to_their_handler(method, target, expected):
    assert route(method, target, IDS) == expected


@pytest.mark.parametrize("target", [
    b"/channels/9.ts",  # unknown id
    b"/channels/.ts",  # empty id
    b"/channels/a.b.ts",  # bad id characters
    b"/channels/a%20b.ts",
    b"/channels/../1.ts",
    b"/channels/9/1000000001-0.ts",  # an HLS segment of an unknown channel
    b"/channels/9.m3u8",
    b"/channels/" + b"a" * 65 + b".ts",
])
def test_unknown_or_malformed_channel_ids_are_404_no_such_channel(target):
    assert route(b"GET", target, IDS | {"a" * 65}) == Refuse(404, "no such channel")


@pytest.mark.parametrize("target", [b"/channels/1", b"/channels/1.ts/", b"/healthz/", b"/Channels/1.ts", b"*"])
def test_other_paths_are_404_not_found(target):
    assert route(b"GET", target, IDS) == Refuse(404, "not found")


@pytest.mark.parametrize("target", [b"/channels/1.ts", b"/channels/9.ts", b"/channels", b"/healthz?x"])
@pytest.mark.parametrize("method", [b"POST", b"PUT", b"DELETE", b"OPTIONS"])
def test_other_methods_on_known_paths_are_405_with_allow(method, target):
    r = route(method, target, IDS)
    assert (r.status, r.headers) == (405, (("Allow", "GET, HEAD"),))


@pytest.mark.parametrize("method, target, expected", [
    (b"GET", b"/channels/1.m3u8", HlsPlaylist("1", head_only=False)),
    (b"HEAD", b"/channels/news_2.m3u8?x=1", HlsPlaylist("news_2", head_only=True)),
    (b"GET", b"/channels/1/1000000001-42.ts", HlsSegment("1", 1000000001, 42, head_only=False)),
    (b"GET", b"/channels.m3u?format=hls", Playlist(None, head_only=False, hls=True)),
    (b"GET", b"/channels.m3u", Playlist(None, head_only=False, hls=False)),
])
def test_hls_paths_route_to_the_playlist_and_its_segments(method, target, expected):
    assert route(method, target, IDS) == expected


@pytest.mark.parametrize("name", [b"x", b"1-", b"-1", b"1-2-3", b"1_2", b"%C2%B2-1", b"1" * 21 + b"-1"])
def test_a_malformed_segment_name_is_400(name):
    assert route(b"GET", b"/channels/1/" + name + b".ts", IDS) == Refuse(400, "bad segment name")


def test_other_methods_on_unknown_paths_are_404():
    assert route(b"POST", b"/nope", IDS) == Refuse(404, "not found")


@pytest.mark.parametrize("target", [b"/channels/1%00.ts", b"/healthz%00", b"/channels/caf\xc3\xa9.ts", b"/\xff", b"http://[::1/x"])
def test_nul_non_ascii_and_unparsable_targets_are_400(target):
    assert route(b"GET", target, IDS) == Refuse(400, "bad request target")


@pytest.mark.parametrize("target", [b"/channels/%ff.ts", b"/healthz%C3"])
def test_percent_encoded_invalid_utf8_is_400(target):
    assert route(b"GET", target, IDS) == Refuse(400, "bad request target")


# Response bytes

def split(response: bytes) -> tuple[str, dict[str, str], bytes]:
    head, sep, body = response.partition(b"\r\n\r\n")
    assert sep
    status, *lines = head.decode("latin-1").split("\r\n")
    return status, dict(line.split(": ", 1) for line in lines), body


@pytest.mark.parametrize("status, phrase", [(200, "OK"), (404, "Not Found"), (405, "Method Not Allowed"),
                                            (431, "Request Header Fields Too Large"), (503, "Service Unavailable")])
def test_text_response_has_status_line_close_and_exact_content_length(status, phrase):
    line, headers, body = split(responses.text(status, "élan\n", [("Retry-After", "5")]))
    assert line == f"HTTP/1.1 {status} {phrase}"
    assert headers["Connection"] == "close" and headers["Retry-After"] == "5"
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert body == "élan\n".encode() and int(headers["Content-Length"]) == len(body)


def test_head_only_text_response_keeps_content_length_but_sends_no_body():
    full = responses.text(200, "ok")
    head_only = responses.text(200, "ok", head_only=True)
    assert full.startswith(head_only) and head_only.endswith(b"\r\n\r\n")
    assert split(head_only)[1]["Content-Length"] == "3" and split(head_only)[2] == b""


def test_json_response_body_parses_and_matches_content_length():
    import json
    _, headers, body = split(responses.json_body(200, [{"id": "1", "name": "Ünï"}]))
    assert headers["Content-Type"] == "application/json"
    assert int(headers["Content-Length"]) == len(body)
    assert json.loads(body) == [{"id": "1", "name": "Ünï"}]


def test_stream_head_is_mp2t_close_delimited_without_content_length():
    data = responses.stream_head()
    line, headers, body = split(data)
    assert line == "HTTP/1.1 200 OK" and body == b""
    assert headers["Content-Type"] == "video/mp2t" and headers["Connection"] == "close"
    assert not any(re.match(r"(?i)content-length|transfer-encoding", name) for name in headers)


# h11 as the front feeds it

def parse(raw: bytes):
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
    conn.receive_data(raw)
    return conn.next_event()


def test_a_well_formed_request_reaches_route_as_method_and_target():
    event = parse(b"GET /channels/1.ts?x=1 HTTP/1.1\r\nHost: t\r\n\r\n")
    assert isinstance(event, h11.Request)
    assert route(event.method, event.target, IDS) == Watch("1", head_only=False)


def test_a_partial_request_needs_more_data():
    assert parse(b"GET /channels/1.ts HTTP/1.1\r\nHost: t\r\n") is h11.NEED_DATA


@pytest.mark.parametrize("raw", [b"GARBAGE\r\n\r\n", b"GET /channels/1.ts\r\n\r\n", b"GET  /x HTTP/1.1\r\nHost: t\r\n\r\n",
                                 b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: t\r\n\r\n"])
def test_a_malformed_request_line_raises_remote_protocol_error(raw):
    with pytest.raises(h11.RemoteProtocolError) as e:
        parse(raw)
    assert e.value.error_status_hint == 400


def test_a_request_head_over_8_kib_gets_431():
    assert MAX_REQUEST_HEAD == 8192
    raw = b"GET /channels/1.ts HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 9000
    with pytest.raises(h11.RemoteProtocolError) as e:
        parse(raw)
    assert e.value.error_status_hint == 431
