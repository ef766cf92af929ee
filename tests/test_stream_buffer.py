"""StreamBuffer: the ring every viewer of a channel reads from, by absolute offset."""

from __future__ import annotations

import pytest

from http_front.stream_buffer import MAX_READ, StreamBuffer
from retrovue_air.mpegts import TS_PACKET_SIZE as TS_PACKET


def stream_bytes(start: int, n: int) -> bytes:
    """Bytes whose value depends on their absolute offset, so any misplacement shows."""
    return bytes((start + i) * 7 % 251 for i in range(n))


def feed(buffer: StreamBuffer, n: int, now: float = 0.0) -> None:
    """Write n bytes of stream_bytes the way the front does: recv_into(writable()), then wrote()."""
    while n:
        space = buffer.writable()
        k = min(n, len(space))
        space[:k] = stream_bytes(buffer.end, k)  # what sock.recv_into(space) does
        buffer.wrote(k, now)
        n -= k


@pytest.mark.parametrize("end, published", [(0, 0), (187, 0), (188, 188), (189, 188), (5 * 188 + 100, 5 * 188)])
def test_publish_makes_only_whole_packets_sendable(end, published):
    b = StreamBuffer(4096)
    feed(b, end)
    assert b.publish() is (published > 0)
    assert (b.published, b.unpublished) == (published, end - published)
    assert b.chunk(published) == b""  # nothing beyond the last whole packet


def test_publish_reports_nothing_new_until_another_whole_packet_arrives():
    b = StreamBuffer(4096)
    feed(b, 200)
    assert b.publish() is True
    feed(b, 100)
    assert b.publish() is False and b.published == 188
    feed(b, 100)
    assert b.publish() is True and b.published == 376


def test_writable_is_contiguous_up_to_the_ring_end_and_wrote_moves_it():
    b = StreamBuffer(1000)
    assert len(b.writable()) == 1000
    feed(b, 900)
    assert len(b.writable()) == 100
    feed(b, 100)
    assert len(b.writable()) == 1000 and b.end == 1000


def test_writable_never_offers_more_than_max_read():
    b = StreamBuffer(MAX_READ * 3)
    assert len(b.writable()) == MAX_READ


def test_chunk_is_the_contiguous_run_to_the_ring_end_then_continues_at_its_start():
    b = StreamBuffer(1000)  # not a multiple of 188: the wrap falls inside a packet
    feed(b, 1500)
    b.publish()  # 1500 bytes hold 7 whole packets
    assert b.published == 7 * TS_PACKET
    first = b.chunk(600)
    assert bytes(first) == stream_bytes(600, 400)  # offsets 600..999 end at the ring's end
    second = b.chunk(600 + len(first))
    assert bytes(second) == stream_bytes(1000, b.published - 1000)


def test_a_cursor_reading_chunk_by_chunk_gets_the_exact_stream_across_many_wraps():
    b = StreamBuffer(1000)
    cursor, got = 0, bytearray()
    for _ in range(20):
        feed(b, 333)
        b.publish()
        while chunk := b.chunk(cursor):
            got += chunk
            cursor += len(chunk)
    assert cursor == b.published == 20 * 333 // TS_PACKET * TS_PACKET
    assert bytes(got) == stream_bytes(0, cursor)


def test_chunk_of_a_caught_up_cursor_is_empty():
    b = StreamBuffer(1000)
    feed(b, 400)
    b.publish()
    assert len(b.chunk(b.published)) == 0 and len(b.chunk(b.published + 50)) == 0


@pytest.mark.parametrize("end, oldest", [(0, 0), (999, 0), (1000, 0), (1001, 1), (3500, 2500)])
def test_oldest_is_the_first_offset_still_in_the_ring(end, oldest):
    b = StreamBuffer(1000)
    feed(b, end)
    assert b.oldest == oldest


@pytest.mark.parametrize("end, n, destroyed_before", [(0, 100, -900), (900, 100, 0), (900, 300, 200), (2500, 500, 2000)])
def test_overwritten_by_is_the_offset_before_which_a_write_of_n_destroys_bytes(end, n, destroyed_before):
    b = StreamBuffer(1000)
    feed(b, end)
    assert b.overwritten_by(n) == destroyed_before
    feed(b, n)
    assert b.oldest == max(0, destroyed_before)


def test_chunk_of_an_overwritten_offset_raises_index_error():
    b = StreamBuffer(1000)
    feed(b, 2500)
    b.publish()
    with pytest.raises(IndexError, match="1499"):
        b.chunk(1499)
    assert bytes(b.chunk(1500)[:10]) == stream_bytes(1500, 10)


def test_arrival_time_is_the_time_of_the_write_that_brought_the_byte():
    b = StreamBuffer(10_000)
    feed(b, 100, now=10.0)  # offsets 0..99
    feed(b, 50, now=11.5)  # offsets 100..149
    assert [b.arrival_time(o) for o in (0, 99, 100, 149, 150)] == [10.0, 10.0, 11.5, 11.5, None]


def test_lag_is_how_long_ago_the_first_missing_byte_arrived():
    b = StreamBuffer(10_000)
    feed(b, 100, now=10.0)
    feed(b, 100, now=12.0)
    assert b.lag(50, now=13.0) == 3.0
    assert b.lag(150, now=13.0) == 1.0
    assert b.lag(200, now=13.0) == 0.0  # caught up: nothing missing has arrived
    assert b.lag(50, now=9.0) == 0.0  # never negative


def test_arrival_times_stay_right_for_held_bytes_after_old_ones_are_forgotten():
    b = StreamBuffer(1000)
    for t in range(500):
        feed(b, 10, now=float(t))  # write t covers offsets 10t..10t+9
    assert len(b._offsets) < 500  # the history is pruned
    for offset in (b.oldest, b.oldest + 5, b.end - 1):
        assert b.arrival_time(offset) == float(offset // 10)


def test_grown_keeps_every_held_byte_at_its_offset_and_its_arrival_time():
    b = StreamBuffer(1000)
    feed(b, 1900, now=5.0)
    b.publish()
    bigger = b.grown(4000)
    assert (bigger.capacity, bigger.end, bigger.published, bigger.oldest) == (4000, 1900, b.published, 0)
    got = b""
    cursor = 900  # the smaller ring held [900, 1900): the bigger one holds it at the same offsets
    while chunk := bigger.chunk(cursor):
        got += bytes(chunk)
        cursor += len(chunk)
    assert got == stream_bytes(900, b.published - 900)
    assert bigger.arrival_time(1500) == 5.0
    feed(bigger, 3000)
    assert bigger.oldest == 900  # it now holds 4,000 bytes
