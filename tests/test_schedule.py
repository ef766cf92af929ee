"""The schedule's arithmetic: the loop from the epoch, daily blocks, cuts, DST, and its invariants."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retrovue_air.schedule import (DEFAULT_EPOCH, MIN_SLOT_SECONDS, Block, Programme, Schedule, file_passes,
                                   parse_daily_time, parse_epoch)

A, B, C = (Programme(f"/m/{n}.mkv", d, n.upper()) for n, d in (("a", 600.0), ("b", 1200.0), ("c", 300.0)))
NEWS = Programme("/m/news.mkv", 1800.0, "News")
FILM = Programme("/m/film.mkv", 7200.0, "Film")
LOOP = 2100.0  # A + B + C


def at(text: str, zone: str = "UTC") -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp()


def test_the_playlist_starts_at_the_epoch_and_loops():
    s = Schedule((A, B, C), epoch=1000.0)
    first = s.airing_at(1000.0)
    assert (first.programme, first.start, first.end, first.inpoint, first.block) == (A, 1000.0, 1600.0, 0.0, None)
    assert s.airing_at(1600.0).programme == B
    assert s.airing_at(2799.9).programme == B
    looped = s.airing_at(1000.0 + 3 * LOOP + 650.0)
    assert (looped.programme, looped.start, looped.end) == (B, 1000.0 + 3 * LOOP + 600, 1000.0 + 3 * LOOP + 1800)


def test_an_epoch_in_the_future_is_still_a_loop_running_backwards_in_time():
    s = Schedule((A, B, C), epoch=10_000.0)
    before = s.airing_at(10_000.0 - 100.0)
    assert (before.programme, before.start, before.end) == (C, 10_000.0 - 300.0, 10_000.0)


def test_the_default_epoch_is_2000_01_01_utc():
    s = Schedule((A,))
    assert DEFAULT_EPOCH == at("2000-01-01T00:00:00")
    assert s.airing_at(at("2026-11-26T12:00:00")).start % 600 == DEFAULT_EPOCH % 600


def test_tuning_in_mid_programme_gives_the_offset_into_it():
    s = Schedule((A, B, C), epoch=0.0)
    a = s.airing_at(LOOP * 10 + 600 + 123.5)
    assert (a.programme, a.start, a.inpoint) == (B, LOOP * 10 + 600, 0.0)
    assert a.start + 123.5 == LOOP * 10 + 600 + 123.5  # the worker seeks t - start


def test_airings_lists_everything_overlapping_the_window():
    s = Schedule((A, B, C), epoch=0.0)
    got = s.airings(500.0, 2200.0)
    assert [(x.programme.title, x.start, x.end) for x in got] == [
        ("A", 0.0, 600.0), ("B", 600.0, 1800.0), ("C", 1800.0, 2100.0), ("A", 2100.0, 2700.0)]
    assert s.airings(600.0, 600.0) == []


def test_a_daily_block_preempts_the_loop_and_the_loop_resumes_where_its_timeline_is():
    s = Schedule((A, B, C), blocks=(Block(dt.time(20, 0), (NEWS,), "Evening news"),), epoch=0.0)
    day = at("2026-03-02T00:00:00")
    got = s.airings(day + 20 * 3600 - 1, day + 20 * 3600 + 1800 + 1)
    news = got[1]
    assert (news.programme, news.start, news.end, news.block) == (NEWS, day + 72000, day + 73800, "Evening news")
    cut, resumed = got[0], got[2]
    assert cut.end == day + 72000 and cut.block is None
    # After the block: what the loop would show at that moment, at that offset.
    plain = Schedule((A, B, C), epoch=0.0).airing_at(day + 73800)
    assert (resumed.programme, resumed.start, resumed.block) == (plain.programme, day + 73800, None)
    assert resumed.inpoint == pytest.approx(day + 73800 - plain.start)
    assert resumed.end == plain.end


def test_a_block_that_runs_past_the_next_blocks_start_is_cut_there():
    s = Schedule((A,), blocks=(Block(dt.time(20, 0), (FILM, NEWS)), Block(dt.time(21, 0), (NEWS,), "Late")), epoch=0.0)
    day = at("2026-03-02T00:00:00")
    got = s.airings(day + 20 * 3600, day + 22 * 3600)
    assert [(x.programme.title, x.start - day, x.end - day, x.block) for x in got[:3]] == [
        ("Film", 72000, 75600, "20:00"), ("News", 75600, 77400, "Late"), ("A", 77400, 78000, None)]


def test_a_block_longer_than_a_day_is_cut_by_its_own_next_day():
    s = Schedule((A,), blocks=(Block(dt.time(6, 0), (Programme("/m/long.mkv", 30 * 3600, "Long"),)),), epoch=0.0)
    day = at("2026-03-02T00:00:00")
    got = s.airings(day + 6 * 3600, day + 31 * 3600)
    assert [(x.start - day, x.end - day, x.inpoint) for x in got] == [(21600, 108000, 0), (108000, 194400, 0)]


def test_blocks_follow_local_time_across_dst_changes():
    zone = "Europe/Berlin"
    s = Schedule((A,), blocks=(Block(dt.time(20, 0), (NEWS,)),), epoch=0.0, timezone=zone)
    for day in ("2026-03-28", "2026-03-29", "2026-03-30", "2026-10-24", "2026-10-25", "2026-10-26"):
        eight = at(day + "T20:00:00", zone)
        a = s.airing_at(eight)
        assert (a.programme, a.start) == (NEWS, eight), day
    # 23 hours between the two news on the spring-forward day, 25 in autumn
    assert at("2026-03-29T20:00:00", zone) - at("2026-03-28T20:00:00", zone) == 23 * 3600


def test_a_block_in_the_spring_forward_gap_starts_when_the_clock_jumps_past_it():
    zone = "America/New_York"
    s = Schedule((A,), blocks=(Block(dt.time(2, 30), (NEWS,)),), epoch=0.0, timezone=zone)
    a = s.airing_at(at("2026-03-08T03:30:00", zone))  # 02:30 does not exist that night
    assert (a.programme, a.start) == (NEWS, at("2026-03-08T03:30:00", zone))


def test_a_file_shorter_than_the_minimum_slot_repeats_to_fill_one_and_the_guide_lists_the_slot():
    still = Programme("/m/still.mp4", 0.04, "Still")  # one frame
    sting = Programme("/m/sting.ts", 0.3, "Sting")
    assert MIN_SLOT_SECONDS == 1.0
    assert (still.repeats, still.slot) == (25, 1.0) and (sting.repeats, sting.slot) == (4, 1.2)
    assert (A.repeats, A.slot) == (1, A.duration)
    s = Schedule((still, sting, C), epoch=1000.0)
    assert [(a.programme, a.start, a.end) for a in s.airings(1000.0, 1003.0)] == [
        (still, 1000.0, 1001.0), (sting, 1001.0, 1002.2), (C, 1002.2, 1302.2)]
    assert s.airing_at(1000.99).programme == still


def test_a_stretch_of_a_repeating_slot_is_one_pass_of_the_file_after_another():
    sting = Programme("/m/sting.ts", 0.3, "Sting")
    assert file_passes(sting, 100.0, 101.0, 0.5) == [(100.0, 100.1, 0.2), (100.1, 100.4, 0.0), (100.4, 100.7, 0.0),
                                                     (100.7, 101.0, 0.0)]
    assert file_passes(A, 100.0, 150.0, 30.0) == [(100.0, 150.0, 30.0)]


def test_the_schedule_refuses_an_empty_playlist_and_twin_blocks():
    with pytest.raises(ValueError):
        Schedule(())
    with pytest.raises(ValueError):
        Schedule((A,), blocks=(Block(dt.time(8), (A,)), Block(dt.time(8), (B,))))


@pytest.mark.parametrize("text, expected", [("20:00", dt.time(20)), ("00:05", dt.time(0, 5)),
                                            ("23:59:30", dt.time(23, 59, 30))])
def test_daily_times_parse(text, expected):
    assert parse_daily_time(text) == expected


@pytest.mark.parametrize("text", ["24:00", "8:00", "20", "20:60", "twenty", "20:00:00:00", ""])
def test_bad_daily_times_are_refused(text):
    with pytest.raises(ValueError, match="HH:MM"):
        parse_daily_time(text)


def test_epochs_parse_and_need_an_offset():
    assert parse_epoch("2000-01-01T00:00:00Z") == DEFAULT_EPOCH
    assert parse_epoch("2000-01-01T01:00:00+01:00") == DEFAULT_EPOCH
    for bad in ("2000-01-01T00:00:00", "yesterday", "2000-13-01T00:00:00Z"):
        with pytest.raises(ValueError):
            parse_epoch(bad)


programmes = st.lists(st.builds(Programme, path=st.just("/m/x.mkv"), title=st.sampled_from("XYZ"),
                                duration=st.floats(20, 20000, allow_nan=False) | st.floats(0.001, 3, allow_nan=False)),
                      min_size=1, max_size=6)
blocks = st.lists(st.builds(Block, start=st.times().map(lambda t: t.replace(microsecond=0)),
                            programmes=programmes.map(tuple), title=st.none() | st.just("B")),
                  max_size=3, unique_by=lambda b: b.start)
moments = st.floats(0, 4e9, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(programmes, blocks, st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"]),
       st.floats(-1e9, 4e9, allow_nan=False), moments, st.floats(1, 2 * 86400))
def test_airings_are_contiguous_and_the_one_at_t_contains_t(loop, day_blocks, zone, epoch, t, span):
    s = Schedule(tuple(loop), tuple(day_blocks), epoch, zone)
    on = s.airing_at(t)
    assert on.start <= t < on.end
    assert on.inpoint >= 0 and on.end - on.start <= on.programme.slot - on.inpoint + 1e-6
    assert on.programme.slot >= min(MIN_SLOT_SECONDS, on.programme.duration * on.programme.repeats)
    got = s.airings(t, t + span)
    assert got[0] == on and got[-1].end >= t + span
    for before, after in zip(got, got[1:]):
        assert before.end == after.start
        assert after.start < after.end
    middle = got[len(got) // 2]
    assert s.airing_at(middle.start) == middle
