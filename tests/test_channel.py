"""Channel and Viewer decisions, with socketpairs for the stream and the viewers: no process, no loop."""

from __future__ import annotations

import itertools
import selectors
import socket

import pytest

from http_front import hls_segments
from http_front.channel import KEEP_ALIVE_SECONDS, READ_PAUSE, Channel, Close
from http_front.channel_lifecycle import Admit, ChannelLifecycle
from http_front.request_reader import NEED_MORE, READ_CLOSED, Request
from http_front.viewer import Phase, Sent, Viewer
from retrovue_air import config
from retrovue_air.mpegts import NULL_PACKET

PACKET = b"\x47" + bytes(187)
STREAM = 7


@pytest.fixture
def selector():
    with selectors.DefaultSelector() as sel:
        yield sel


class Rig:
    """A live channel fed through a socketpair, and viewers on socketpairs whose far ends we hold."""

    def __init__(self, selector, **channel_keys):
        self.selector = selector
        cfg = config.Channel(id="1", name="One", source=config.TestPattern(),
                             **({"video_kbps": 100, "audio_kbps": 28} | channel_keys))
        self.channel = Channel(cfg, ChannelLifecycle("1", next_stream=itertools.count(STREAM).__next__),
                               selector)
        self.feed, ours = socket.socketpair()
        self.far_ends: dict[Viewer, socket.socket] = {}
        self.first = self.viewer()
        self.channel.lifecycle.tune_in(self.first)
        self.channel.lifecycle.worker_spawned(STREAM, 100)
        self.channel.lifecycle.stream_ready(STREAM, 101)
        self.channel.stream_ready(ours, STREAM, max_lag_seconds=1.0)

    def viewer(self) -> Viewer:
        near, far = socket.socketpair()
        near.setblocking(False)
        viewer = Viewer(near, ("127.0.0.1", 1000 + len(self.far_ends)), 0.0, self.selector)
        self.far_ends[viewer] = far
        return viewer

    def go_live(self, now: float = 0.0) -> None:
        self.feed.sendall(PACKET * 10)
        read = self.channel.read(now, 1.0, 0.2)
        assert read.first_bytes and not read.closes
        [admit] = self.channel.lifecycle.first_bytes(STREAM)
        assert isinstance(admit, Admit) and admit.viewers == (self.first,)
        self.channel.admit(self.first, from_start=True, now=now)

    def close(self) -> None:
        self.channel.close_stream()
        self.feed.close()
        for viewer, far in self.far_ends.items():
            viewer.close()
            far.close()


@pytest.fixture
def rig(selector):
    r = Rig(selector)
    yield r
    r.close()


def received(far: socket.socket) -> bytes:
    far.setblocking(False)
    out = b""
    while True:
        try:
            chunk = far.recv(1 << 20)
        except BlockingIOError:
            return out
        if not chunk:
            return out
        out += chunk


def test_first_bytes_admit_the_waiting_viewer_from_the_start_of_the_stream(rig):
    rig.go_live()
    head, _, body = received(rig.far_ends[rig.first]).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == PACKET * 10
    assert rig.first.phase is Phase.WATCHING and list(rig.channel.viewers) == [rig.first]


def test_flush_sends_every_viewer_the_same_published_bytes_and_closes_nobody(rig):
    rig.go_live()
    second = rig.viewer()
    rig.channel.lifecycle.tune_in(second)
    rig.channel.admit(second, from_start=False, now=0.5)
    received(rig.far_ends[rig.first]), received(rig.far_ends[second])
    rig.feed.sendall(PACKET * 5 + b"\x47\x00")  # a partial packet is not published
    assert rig.channel.read(1.0, 1.0, 0.2).closes == []
    assert rig.channel.flush(1.1, 1.0) == []
    assert received(rig.far_ends[rig.first]) == PACKET * 5
    assert rig.channel.buffer.published == 15 * 188


def test_a_viewer_that_stops_reading_is_returned_to_close_once_it_lags_too_far(rig):
    rig.go_live()
    rig.first.bound_send_buffer(4096)
    rig.far_ends[rig.first].setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    now, closes = 0.0, []
    while not closes and now < 60:
        now += 0.2
        rig.feed.sendall(PACKET * 50)
        closes = rig.channel.read(now, 1.0, 0.2).closes + rig.channel.flush(now, 1.0)
    assert closes == [Close(rig.first, "too slow")]
    assert rig.first.blocked
    assert 1.0 < now < 5.0  # dropped by its lag (1 s), not at once and not never
    assert rig.channel.stats.viewers_dropped_slow == 1



def test_the_ring_drops_a_stalled_viewer_as_it_overwrites_its_bytes_and_not_before(rig):
    """The backstop behind the lag check: a viewer whose bytes the ring overwrites is gone,
    even one allowed to lag (a joiner's burst), and the caught-up one beside it is not."""
    rig.go_live()
    stalled = rig.first
    stalled.bound_send_buffer(4096)
    rig.far_ends[stalled].setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.allowance = 3600.0  # the lag check lets it be: only the ring can drop it
    reader = rig.viewer()
    rig.channel.lifecycle.tune_in(reader)
    rig.channel.admit(reader, from_start=False, now=0.0)
    buffer, now, closes = rig.channel.buffer, 0.0, []
    while not closes and now < 600:
        now += 0.25
        rig.feed.sendall(PACKET * 100)
        closes = rig.channel.read(now, 1.0, 0.2).closes + rig.channel.flush(now, 1.0)
        received(rig.far_ends[reader])
        if not closes:
            assert buffer.end - buffer.capacity <= stalled.cursor  # its bytes are all still there
    assert closes == [Close(stalled, "too slow")]
    # Dropped by the read that overwrote its next byte.
    assert stalled.blocked and buffer.end - 100 * len(PACKET) <= buffer.capacity + stalled.cursor < buffer.end
    assert reader.cursor == buffer.published


def test_a_live_stream_rests_unwatched_after_bytes_and_is_watched_again_when_it_has_none(rig, selector):
    """ffmpeg writes each muxed packet; past its cold-start burst the front reads them READ_PAUSE
    apart, not 70 times a second."""
    rig.go_live(now=0.0)
    channel, feed = rig.channel, rig.feed
    past_burst = channel.config.join_burst_seconds + 1.5
    feed.sendall(PACKET)
    channel.read(1.0, 1.0, 0.2)
    assert channel.read_deadline is None  # the burst: read as it comes
    feed.sendall(PACKET)
    channel.read(past_burst, 1.0, 0.2)
    assert channel.read_deadline == past_burst + READ_PAUSE
    assert channel.stream_sock.fileno() not in selector.get_map()  # resting: no wake-up per write
    for _ in range(5):
        feed.sendall(PACKET * 3)  # writes that come while it rests wait in the socket
    read = channel.read(channel.read_deadline, 1.0, 0.2)
    assert not read.closes and channel.buffer.end == 12 * 188 + 15 * 188  # all of them, in one read
    assert channel.read_deadline == past_burst + 2 * READ_PAUSE
    channel.read(channel.read_deadline, 1.0, 0.2)  # nothing came: watched again
    assert channel.read_deadline is None and selector.get_key(channel.stream_sock).data is channel
    feed.sendall(PACKET * 400)  # a flush's worth in one read: a fast stream is not held back
    channel.read(past_burst + 1, 1.0, 0.2)
    assert channel.read_deadline is None
    feed.sendall(PACKET)
    channel.read(past_burst + 2, 1.0, 0.2)
    assert channel.read_deadline == past_burst + 2 + READ_PAUSE
    feed.close()  # EOF while resting: the stream ends cleanly
    assert channel.read(channel.read_deadline, 1.0, 0.2).ended
    assert channel.stream_sock is None and channel.read_deadline is None


def test_a_viewer_whose_peer_is_gone_is_returned_as_connection_lost(rig):
    rig.go_live()
    rig.far_ends[rig.first].close()
    closes = []
    for now in (1.0, 1.2, 1.4):
        rig.feed.sendall(PACKET * 5)
        closes += rig.channel.read(now, 1.0, 0.2).closes + rig.channel.flush(now, 1.0)
    assert Close(rig.first, "connection lost") in closes


def test_a_silent_stream_sends_its_viewers_a_null_packet_a_second_and_finds_the_one_who_left(rig):
    rig.go_live(now=10.0)
    second = rig.viewer()
    rig.channel.lifecycle.tune_in(second)
    rig.channel.admit(second, from_start=False, now=10.0)
    received(rig.far_ends[rig.first]), received(rig.far_ends[second])
    assert rig.channel.keep_alive_deadline == 10.0 + KEEP_ALIVE_SECONDS  # from the last bytes
    rig.far_ends[second].close()  # quit, having read everything
    closes = rig.channel.keep_alive(11.0, 1.0)
    assert received(rig.far_ends[rig.first]) == NULL_PACKET and NULL_PACKET[:3] == b"\x47\x1f\xff"
    assert closes == [Close(second, "connection lost")]
    assert rig.channel.keep_alive_deadline == 11.0 + KEEP_ALIVE_SECONDS
    rig.feed.sendall(PACKET * 2)
    rig.channel.read(11.5, 1.0, 0.2)
    assert rig.channel.keep_alive_deadline == 11.5 + KEEP_ALIVE_SECONDS  # bytes again: silent from here
    rig.channel.flush(11.6, 1.0)
    assert received(rig.far_ends[rig.first]) == PACKET * 2


def test_a_keep_alive_never_splits_a_packet_the_stream_left_half_written(rig):
    rig.go_live()
    received(rig.far_ends[rig.first])
    rig.feed.sendall(b"\x47\x00")
    rig.channel.read(0.5, 1.0, 0.2)
    assert rig.channel.keep_alive(1.5, 1.0) == [] and received(rig.far_ends[rig.first]) == b""
    assert rig.channel.buffer.end == 10 * 188 + 2
    rig.channel.close_stream()
    assert rig.channel.keep_alive_deadline is None  # no stream, nothing to keep alive


def test_eof_ends_the_stream_unless_a_restarted_ffmpeg_stream_is_queued(rig):
    rig.go_live()
    queued_far, queued = socket.socketpair()
    rig.channel.stream_ready(queued, STREAM, 1.0)  # the worker restarted ffmpeg: same stream id
    assert rig.channel.next_stream_sock is queued
    rig.feed.sendall(PACKET * 3)
    rig.feed.close()
    while True:
        read = rig.channel.read(2.0, 1.0, 0.2)
        if rig.channel.stream_sock is queued:
            break
    assert not read.ended and rig.channel.stats.stream_restarts == 1
    queued_far.sendall(PACKET * 2)
    queued_far.close()
    for _ in range(5):
        if rig.channel.read(3.0, 1.0, 0.2).ended:
            break
    assert rig.channel.stream_sock is None
    assert rig.channel.buffer.end == 15 * 188  # both streams in the same buffer
    rig.feed = socket.socket()  # closed above; the rig's close() closes this one


def feed_at_once(rig: Rig, n: int, now: float = 0.5) -> list[Close]:
    """n bytes of stream in no time at all, read as they come; the viewers the reads closed (tuned out)."""
    closes, sent = [], 0
    rig.feed.setblocking(False)
    while sent < n:
        try:
            sent += rig.feed.send(PACKET * 1000)
        except BlockingIOError:
            pass
        for close in rig.channel.read(now, 1.0, 0.2).closes:
            rig.channel.lifecycle.tune_out(close.viewer)
            closes.append(close)
    return closes


def test_a_stream_faster_than_its_configured_rate_grows_the_ring(selector):
    rig = Rig(selector, video_kbps=1500, audio_kbps=128)
    try:
        rig.go_live()
        first = rig.channel.buffer.capacity
        assert not feed_at_once(rig, 2 * first)
        assert rig.channel.buffer.capacity > first
        assert rig.channel.buffer.oldest == 0  # nothing was lost: the ring grew before it wrapped
    finally:
        rig.close()


def test_a_stream_far_faster_than_its_configured_rate_keeps_a_ring_of_the_limit_and_drops_who_it_passes(
        selector, caplog):
    rig = Rig(selector, video_kbps=1500, audio_kbps=128)
    try:
        rig.go_live()  # its viewer never reads: it blocks at its socket's size and stays there
        # The ring's seconds (what HLS's segments need held, 12 s, here more than 2 x max_lag + the
        # burst; plus the burst) at 4 times 1,628 kbit/s (+5 % framing).
        limit = int(4 * (hls_segments.held_seconds(1.0) + 6.0) * (1628 * 1000 * 105 // 100 // 8))
        closes = feed_at_once(rig, 5 * limit)
        assert rig.channel.buffer.capacity == limit
        assert rig.channel.buffer.oldest == rig.channel.buffer.end - limit > 0  # the oldest went
        assert closes == [Close(rig.first, "too slow")]
        full = [r for r in caplog.records if "faster than 4 times its configured 1628 kbit/s" in r.getMessage()]
        assert len(full) == 1, "said once"
    finally:
        rig.close()


def test_viewer_interest_follows_what_it_waits_for(selector):
    near, far = socket.socketpair()
    near.setblocking(False)
    viewer = Viewer(near, ("127.0.0.1", 5), 0.0, selector)
    try:
        assert selector.get_key(near).events == selectors.EVENT_READ
        far.sendall(b"GET /channels/1.ts HTTP/1.0\r\n")
        assert viewer.read() is NEED_MORE
        far.sendall(b"\r\n")
        assert isinstance(viewer.read(), Request)
        far.shutdown(socket.SHUT_WR)  # a half-close: it still reads
        assert viewer.read() is READ_CLOSED
        assert near not in selector.get_map().keys() and near.fileno() not in selector.get_map()
        big = b"x" * (4 << 20)
        assert viewer.respond(big) is Sent.BLOCKED  # more than the socket takes at once
        assert selector.get_key(near).events == selectors.EVENT_WRITE
        while viewer.pending:
            received(far)
            viewer.send(None)
        assert not viewer.blocked and near.fileno() not in selector.get_map()
    finally:
        viewer.close()
        far.close()
