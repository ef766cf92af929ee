"""The stream's own clock (PCRs) and the pacer that keeps a relay to it: bytes and times in, waits out."""

from __future__ import annotations

import pytest

from retrovue_air.mpegts_clock import PCR_HZ, PCR_WRAP, NoClock, Pacer, pcr_of

PID = 0x100
RATE = 100 * 188 * 25  # bytes a second: 25 PCRs a second, 100 packets apart


def packet(pid: int = PID, pcr: int | None = None, discontinuity: bool = False) -> bytes:
    header = bytes([0x47, pid >> 8 & 0x1F, pid & 0xFF])
    if pcr is None:
        return header + b"\x10" + bytes(184)
    base, extension = divmod(pcr, 300)
    adaptation = bytes([7, 0x10 | (0x80 if discontinuity else 0), base >> 25 & 0xFF, base >> 17 & 0xFF,
                        base >> 9 & 0xFF, base >> 1 & 0xFF, (base & 1) << 7 | 0x7E | extension >> 8,
                        extension & 0xFF])
    return header + b"\x30" + adaptation + bytes(184 - len(adaptation))


def stream(seconds: float, first_pcr: int = 0, pid: int = PID) -> list[bytes]:
    """A stream of RATE bytes a second with a PCR every 40 ms: one piece per 40 ms."""
    ticks = PCR_HZ // 25
    return [packet(pid, (first_pcr + i * ticks) % PCR_WRAP) + packet(pid) * 99 for i in range(round(seconds * 25))]


def pass_on(pacer: Pacer, pieces: list[bytes], now: float = 0.0, arrive_every: float = 0.0) -> float:
    """Feed each piece as it arrives (arrive_every apart), waiting as told; when the last went out."""
    for piece in pieces:
        now += pacer.feed(piece, now)
        now += arrive_every
    return now - arrive_every


def test_a_pcr_is_read_from_the_adaptation_field():
    pcr = 0x1_2345_6789 * 300 + 0x123
    assert pcr_of(packet(0x1ABC, pcr)) == (0x1ABC, pcr, False)
    assert pcr_of(packet(PID, 27, discontinuity=True)) == (PID, 27, True)
    assert pcr_of(packet(PID)) is None  # payload only
    assert pcr_of(b"\x00" * 188 + packet(PID, 5), 188) == (PID, 5, False)


def test_a_stream_faster_than_real_time_goes_out_at_its_own_rate_after_the_allowance():
    pacer = Pacer(ahead_seconds=2.0)
    done = pass_on(pacer, stream(10.0))  # all of it at once, as a static file over loopback
    assert done == pytest.approx(10.0 - 2.0 - 0.04, abs=0.05)
    assert pacer.bytes_per_second == pytest.approx(RATE)


def test_the_allowance_passes_at_once_and_a_real_time_stream_is_never_held():
    burst = Pacer(ahead_seconds=2.0)
    assert [burst.feed(p, 0.0) for p in stream(2.0)] == [0.0] * 50
    assert burst.feed(stream(0.2, 50 * PCR_HZ // 25)[0], 0.0) > 0
    live = Pacer(ahead_seconds=0.5)
    assert all(live.feed(p, i * 0.04) == 0.0 for i, p in enumerate(stream(10.0)))


def test_a_stall_earns_no_credit_beyond_the_allowance():
    pacer = Pacer(ahead_seconds=1.0)
    pieces = stream(12.0)
    now = pass_on(pacer, pieces[:50], arrive_every=0.04)  # 2 s as they play
    # 8 s of silence, then the origin's backlog at once: 1 s of it passes, the rest plays.
    done = pass_on(pacer, pieces[50:], now + 8.0)
    assert done == pytest.approx(now + 8.0 + 10.0 - 1.0, abs=0.1)


def test_a_looped_file_is_paced_across_its_jump_back_at_its_rate():
    pacer = Pacer(ahead_seconds=1.0)
    done = pass_on(pacer, stream(3.0, first_pcr=5 * PCR_HZ) * 3)  # PCR 5 s..8 s, then 5 s again, twice
    assert done == pytest.approx(9.0 - 1.0 - 0.04, abs=0.1)


def test_a_jump_counts_as_its_bytes_at_the_streams_rate():
    pieces = stream(2.0) + stream(2.0, first_pcr=3600 * PCR_HZ)  # an hour later, by the clock
    assert pass_on(Pacer(ahead_seconds=1.0), pieces) == pytest.approx(4.0 - 1.0 - 0.04, abs=0.1)
    # A step short enough to be time passing, but marked as a discontinuity: a jump all the same.
    half_a_second_on = 50 * PCR_HZ // 25 + PCR_HZ // 2
    marked = stream(2.0) + [packet(PID, half_a_second_on, discontinuity=True) + packet(PID) * 99]
    assert pass_on(Pacer(ahead_seconds=1.0), marked) == pytest.approx(2.04 - 1.0 - 0.04, abs=0.01)
    assert pass_on(Pacer(ahead_seconds=1.0), marked[:-1] + [marked[-1][:5] + b"\x10" + marked[-1][6:]]) \
        == pytest.approx(2.5 - 1.0, abs=0.01)  # unmarked, the same step is half a second


def test_the_pcr_wrapping_after_26_hours_is_time_going_on():
    pieces = stream(4.0, first_pcr=PCR_WRAP - 2 * PCR_HZ)
    assert pass_on(Pacer(ahead_seconds=1.0), pieces) == pytest.approx(4.0 - 1.0 - 0.04, abs=0.05)


def test_pieces_that_split_packets_are_paced_the_same():
    data = b"".join(stream(4.0))
    pieces = [data[i:i + 1000] for i in range(0, len(data), 1000)]
    assert pass_on(Pacer(ahead_seconds=1.0), pieces) == pytest.approx(4.0 - 1.0, abs=0.05)


def test_only_the_first_clock_counts():
    wild = [p[:188 * 50] + packet(0x200, (7 - i) * PCR_HZ) + p[188 * 51:] for i, p in enumerate(stream(4.0))]
    assert pass_on(Pacer(ahead_seconds=1.0), wild) == pytest.approx(4.0 - 1.0 - 0.04, abs=0.05)


def test_a_stream_without_a_clock_is_refused():
    pacer = Pacer(ahead_seconds=1.0, no_clock_bytes=100 * 188)
    assert pacer.feed(packet() * 100, 0.0) == 0.0
    with pytest.raises(NoClock, match="no PCR in 18 KiB"):
        pacer.feed(packet(), 0.0)
    jumping = Pacer(ahead_seconds=1.0, no_clock_bytes=100 * 188)
    with pytest.raises(NoClock, match="no two PCRs a sane step apart"):
        for i in range(101):
            jumping.feed(packet(PID, (i % 2) * 10 * PCR_HZ), 0.0)
    clock_stops = Pacer(ahead_seconds=1.0, no_clock_bytes=100 * 188)
    pass_on(clock_stops, stream(1.0))
    with pytest.raises(NoClock, match="no PCR in"):
        clock_stops.feed(packet() * 101, 100.0)
