"""What the guide lists of a channel's airings: each one as it is, except those too short to see.

A guide's grid is drawn in half hours: an airing of a few seconds (an ident, a trailer, a file
one frame long) is a sliver nobody can read, and a loop of a one-frame file would be listed 25
times a second. So a run of consecutive airings each shorter than MIN_PROGRAMME_SECONDS is
listed as one programme, at most GROUP_SECONDS long (a channel of nothing but clips still reads
hour by hour); a group still shorter than the minimum joins the programme before it, which
then runs on to the group's end (the first of a listing joins the one after it instead).

A run is walked airing by airing up to WALK_LIMIT of them (an hour of clips of 3.6 s or
more). Beyond that (a file a frame long) the schedule is asked what is on half a minimum
after the run's end instead: a long airing that starts anywhere before that moment is still
on at it, so none is skipped, and the work per listed programme is bounded (a few
milliseconds) whatever the schedule holds.

Pure: airings_from(t) is a schedule's "the airing on at t, then the ones that follow".
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Callable, Iterable, Iterator

from retrovue_air.schedule import Airing, Programme

# Under a minute is a promo, an ident or a trailer; a music video or a short film lasts longer.
MIN_PROGRAMME_SECONDS = 60.0
GROUP_SECONDS = 3600.0
WALK_LIMIT = 1000
TITLES_NAMED = 3  # a group of different programmes is named after its first few

AiringsFrom = Callable[[float], Iterator[Airing]]


def listed(airings_from: AiringsFrom, start: float, end: float, minimum: float = MIN_PROGRAMME_SECONDS,
           longest: float = GROUP_SECONDS) -> Iterator[Airing]:
    """The programmes the guide lists for [start, end), in order, from the one on at start."""
    return _join_short(_runs(airings_from, start, end, minimum, longest), minimum)


def airings_from_list(airings: Iterable[Airing]) -> AiringsFrom:
    """airings_from over a schedule's list of airings (in any order)."""
    ordered = sorted(airings, key=lambda a: a.start)
    starts = [a.start for a in ordered]

    def airings_from(t: float) -> Iterator[Airing]:
        first = max(0, bisect.bisect_right(starts, t) - 1)
        return (ordered[i] for i in range(first, len(ordered)) if ordered[i].end > t)
    return airings_from


class _Run:
    """A run of short airings being gathered: where it starts, how far it has got, what it showed."""

    def __init__(self, first: Airing):
        self.first = first
        self.stop = first.end
        self.walked = 1
        self.programmes = {first.programme: None}  # distinct, in order; two are enough to know
        self.titles = {first.programme.title: None}

    def add(self, airing: Airing) -> None:
        self.stop = airing.end
        if len(self.programmes) < 2:
            self.programmes[airing.programme] = None
        if len(self.titles) <= TITLES_NAMED:
            self.titles[airing.programme.title] = None

    def airing(self) -> Airing:
        return Airing(self.programme(), self.first.start, self.stop, self.first.inpoint, self.first.block)

    def programme(self) -> Programme:
        if len(self.programmes) == 1:
            return self.first.programme
        titles = list(self.titles)
        name = ", ".join(titles[:TITLES_NAMED]) + (" and more" if len(titles) > TITLES_NAMED else "")
        return Programme(path="", duration=self.stop - self.first.start, title=name)


def _runs(airings_from: AiringsFrom, start: float, end: float, minimum: float, longest: float) -> Iterator[Airing]:
    """Each airing at least `minimum` long as it is, each run of shorter ones as one (perhaps still short) group."""
    upcoming = airings_from(start)
    while True:
        first = next(upcoming, None)
        if first is None or first.start >= end:
            return
        if first.end - first.start >= minimum:
            yield first
            continue
        run = _Run(first)
        while run.stop < end and run.stop - first.start < longest:
            skipping = run.walked >= WALK_LIMIT
            if skipping:
                upcoming = airings_from(run.stop + minimum / 2)
            following = next(upcoming, None)
            if following is None:
                break
            if following.end - following.start >= minimum:
                if skipping:  # the short airings before it, not looked at, are the run's too
                    run.stop = following.start
                upcoming = _first_then(following, upcoming)
                break
            run.add(following)
            run.walked += 1
        yield run.airing()


def _first_then(first: Airing, rest: Iterator[Airing]) -> Iterator[Airing]:
    yield first
    yield from rest


def _join_short(entries: Iterable[Airing], minimum: float) -> Iterator[Airing]:
    """A group shorter than the minimum joins the entry before it (the first joins the one after)."""
    held = None  # the last entry, not listed until the next shows whether it joins it
    for entry in entries:
        if held is None:
            held = entry
        elif entry.end - entry.start < minimum:
            held = dataclasses.replace(held, end=entry.end)
        elif held.end - held.start < minimum:  # only the first entry can still be short here
            held = dataclasses.replace(entry, start=held.start)
        else:
            yield held
            held = entry
    if held is not None:
        yield held
