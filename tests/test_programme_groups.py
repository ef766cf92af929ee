"""What the guide lists of a schedule: airings as they are, short ones grouped.

Pure: real Schedules (retrovue_air.schedule) and lists of airings, no sockets."""

from __future__ import annotations

import itertools
import time

import pytest

from http_front.programme_groups import GROUP_SECONDS, MIN_PROGRAMME_SECONDS, WALK_LIMIT, airings_from_list, listed
from retrovue_air.schedule import Airing, Block, Programme, Schedule, parse_daily_time

EPOCH = 1_700_000_000.0  # on the hour (UTC)
SHOW = Programme("/m/show.mkv", 1320, "The Show")
IDENT = Programme("/m/ident.mkv", 10, "Ident")
PROMO = Programme("/m/promo.mkv", 30, "Promo")
FRAME = Programme("/m/frame.mp4", 0.04, "One Frame")


def spans(entries) -> list[tuple[float, float, str]]:
    return [(round(a.start - EPOCH, 3), round(a.end - EPOCH, 3), a.programme.title) for a in entries]


def test_airings_of_a_minute_or_more_are_listed_as_they_are():
    schedule = Schedule((SHOW, Programme("/m/b.mkv", 60, "Exactly a minute")), epoch=EPOCH)
    got = list(listed(schedule.airings_from, EPOCH + 100, EPOCH + 5000))
    assert got == schedule.airings(EPOCH + 100, EPOCH + 5000)


def test_short_airings_between_shows_join_the_show_before_them():
    schedule = Schedule((SHOW, IDENT, IDENT, SHOW), epoch=EPOCH)
    assert spans(listed(schedule.airings_from, EPOCH, EPOCH + 2660)) == [
        (0, 1340, "The Show"),  # the show runs on over the two idents
        (1340, 2660, "The Show")]


def test_a_run_of_short_airings_a_minute_or_longer_is_one_programme_named_after_them():
    schedule = Schedule((SHOW, IDENT, PROMO, PROMO, IDENT, SHOW), epoch=EPOCH)
    assert spans(listed(schedule.airings_from, EPOCH, EPOCH + 2700)) == [
        (0, 1320, "The Show"), (1320, 1400, "Ident, Promo"), (1400, 2720, "The Show")]


def test_a_group_of_one_programme_is_listed_as_that_programme():
    episode = Programme("/m/e.mkv", 20, "Shorts", episode=3, season=1, description="Three of them.")
    schedule = Schedule((SHOW, episode, episode, episode), epoch=EPOCH)
    [_, group] = listed(schedule.airings_from, EPOCH, EPOCH + 1380)
    assert group.programme == episode and (group.start, group.end) == (EPOCH + 1320, EPOCH + 1380)


def test_a_group_of_many_programmes_names_the_first_three_and_more():
    clips = tuple(Programme(f"/m/{n}.mkv", 15, n) for n in ("A", "B", "C", "D"))
    schedule = Schedule((SHOW, *clips), epoch=EPOCH)
    [_, group] = listed(schedule.airings_from, EPOCH, EPOCH + 1380)
    assert group.programme.title == "A, B, C and more"


def test_a_one_frame_loop_is_listed_an_hour_at_a_time_without_looking_at_every_frame():
    schedule = Schedule((FRAME,), epoch=EPOCH)
    start, end = EPOCH + 0.5, EPOCH + 14 * 86400 + 7200  # two weeks: 30 million frames
    looked = itertools.count()

    def airings_from(t):
        for airing in schedule.airings_from(t):
            next(looked)
            yield airing
    began = time.process_time()
    got = list(listed(airings_from, start, end))
    took = time.process_time() - began
    assert len(got) == pytest.approx((end - start) / GROUP_SECONDS, abs=2)
    assert {a.programme for a in got} == {FRAME}
    assert got[0].start <= start and got[-1].end >= end
    assert all(a.end == b.start for a, b in zip(got, got[1:])), "no gap, no overlap"
    assert all(a.end - a.start <= GROUP_SECONDS + MIN_PROGRAMME_SECONDS for a in got)
    assert next(looked) < 2 * WALK_LIMIT * len(got), "every frame was looked at (90,000 an hour)"
    assert took < 5


@pytest.mark.parametrize("frames", [75, 438, 999, 1000, 1001, 1137, 1499, 1500, 1525, 1883])
def test_a_long_airing_among_one_frame_files_is_never_skipped(frames):
    # A run of frames (looked at one by one up to WALK_LIMIT, then skipped over), then a 90 s film.
    playlist = (*([FRAME] * frames), Programme("/m/film.mkv", 90, "Film"), *([FRAME] * 5000))
    schedule = Schedule(playlist, epoch=EPOCH)
    # Where the schedule puts the film (each one-frame file airs in a slot of its own minimum length).
    begins = next(a.start for a in schedule.airings_from(EPOCH) if a.programme.title == "Film") - EPOCH
    got = spans(listed(schedule.airings_from, EPOCH, EPOCH + begins + 150))
    film = [s for s in got if s[2] == "Film"]
    # The frames before it are a group of their own from a minute on; shorter, they join the film.
    assert film == [(begins if begins >= MIN_PROGRAMME_SECONDS else 0, begins + 90, "Film")], got
    assert all(a[1] == b[0] for a, b in zip(got, got[1:]))


def test_a_block_cutting_the_loop_short_leaves_no_sliver():
    # A block at 00:10 cuts the show 20 s after a new airing of it began.
    block = Block(parse_daily_time("00:10"), (SHOW,), "Block")
    loop = (Programme("/m/a.mkv", 580, "A"),)
    schedule = Schedule(loop, blocks=(block,), epoch=EPOCH - 86400)
    day = EPOCH - EPOCH % 86400 + 86400
    got = list(listed(schedule.airings_from, day, day + 1200))
    assert all(a.end - a.start >= MIN_PROGRAMME_SECONDS for a in got), spans(got)
    assert all(a.end == b.start for a, b in zip(got, got[1:]))


def test_a_list_of_airings_in_any_order_is_read_from_the_one_on_at_t():
    show = [Airing(SHOW, EPOCH + i * 1320, EPOCH + (i + 1) * 1320) for i in range(5)]
    airings_from = airings_from_list(reversed(show))
    assert list(airings_from(EPOCH + 2000)) == show[1:]
    assert list(airings_from(EPOCH - 50)) == show
    assert list(airings_from(EPOCH + 99999)) == []


def test_a_listing_of_only_short_airings_shorter_than_a_minute_is_one_programme():
    schedule = Schedule((IDENT,), epoch=EPOCH)
    assert spans(listed(schedule.airings_from, EPOCH, EPOCH + 25)) == [(0, 30, "Ident")]
