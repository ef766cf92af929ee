"""A media channel's schedule: its playlist laid on the wall clock, with daily blocks.

The playlist starts at `epoch` and loops forever. A file shorter than MIN_SLOT_SECONDS (a
still, a one-frame file, a sting) airs as often back to back as it takes to last that long:
its slot, which the guide lists and the playout fills, one decoder per slot. Daily blocks pre-empt it at a local
time every day; a block that runs into the next block's start is cut there. Outside the
blocks, what airs at t is what the loop puts at t: the loop's timeline keeps running
underneath a block, so after a block the loop resumes in the middle of whatever item
it would be showing anyway. That makes every moment's programme a pure function of the
clock, stable whatever was watched before, which is what a guide needs.

Pure arithmetic: nothing here probes, reads or sleeps. Times are kept internally as
integer microseconds so that one airing's end is exactly the next one's start.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
from dataclasses import dataclass, field
from typing import Iterator
from zoneinfo import ZoneInfo

DEFAULT_EPOCH = 946684800.0  # 2000-01-01T00:00:00Z
US = 1_000_000
# The shortest an airing of a whole file lasts. Each airing costs a process start (about 50 ms of
# CPU) and a guide entry: a one-frame file aired once per frame started 25 decoders a second,
# more than a core can, and the channel fell behind the clock.
MIN_SLOT_SECONDS = 1.0


@dataclass(frozen=True)
class Programme:
    """One media file as the schedule knows it."""
    path: str
    duration: float  # seconds, from ffprobe
    title: str  # config title, else container tag, else file name (stem)
    episode: int | None = None
    season: int | None = None
    description: str = ""
    category: str = ""
    # (size, mtime_ns) of the file when it was probed: a file that differs now has changed since,
    # and its duration is no longer known. Not part of equality: the same programme, touched.
    identity: tuple[int, int] | None = field(default=None, compare=False)

    @property
    def repeats(self) -> int:
        """How many times its file plays back to back in one airing."""
        length = _length_us(self)
        return 1 if length >= MIN_SLOT_US else -(-MIN_SLOT_US // length)

    @property
    def slot(self) -> float:
        """How long one airing of it lasts: the file's duration, times its repeats."""
        return _slot_us(self) / US


@dataclass(frozen=True)
class Airing:
    """One programme on the wall clock."""
    programme: Programme
    start: float  # unix time (s) it goes on air
    end: float  # unix time it comes off (a block may cut it short)
    inpoint: float = 0.0  # seconds into its slot at `start` (into the file, unless it repeats)
    block: str | None = None  # the block's title when it airs in a daily block


@dataclass(frozen=True)
class Block:
    """Programmes that pre-empt the loop every day at `start`, local time."""
    start: dt.time
    programmes: tuple[Programme, ...]
    title: str | None = None

    @property
    def label(self) -> str:
        return self.title or self.start.strftime("%H:%M")


def _us(seconds: float) -> int:
    return round(seconds * US)


MIN_SLOT_US = _us(MIN_SLOT_SECONDS)


def _length_us(programme: Programme) -> int:
    # A programme is at least 1 µs long, so that every airing has a length.
    return max(1, _us(programme.duration))


def _slot_us(programme: Programme) -> int:
    length = _length_us(programme)
    return length if length >= MIN_SLOT_US else -(-MIN_SLOT_US // length) * length


def _cumulative(programmes: tuple[Programme, ...]) -> list[int]:
    return [0, *itertools.accumulate(_slot_us(p) for p in programmes)]


def file_passes(programme: Programme, start: float, end: float, inpoint: float) -> list[tuple[float, float, float]]:
    """A stretch [start, end) of an airing, `inpoint` seconds into its slot, as (start, end, seconds
    into the file) for each pass of the file it spans: one, unless the programme repeats."""
    if programme.repeats == 1:
        return [(start, end, inpoint)]
    length = _length_us(programme)
    cursor, stop, position = _us(start), _us(end), _us(inpoint) % length
    out = []
    while cursor < stop:
        step = min(length - position, stop - cursor)
        out.append((cursor / US, (cursor + step) / US, position / US))
        cursor, position = cursor + step, 0
    return out


@dataclass(frozen=True)
class Schedule:
    playlist: tuple[Programme, ...]
    blocks: tuple[Block, ...] = ()
    epoch: float = DEFAULT_EPOCH
    timezone: str = "UTC"
    _loop: list[int] = field(init=False, repr=False, compare=False, hash=False)
    _blocks: list[tuple[Block, list[int]]] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self):
        if not self.playlist:
            raise ValueError("a schedule needs at least one programme")
        if len({b.start for b in self.blocks}) != len(self.blocks):
            raise ValueError("two blocks start at the same time")
        object.__setattr__(self, "_loop", _cumulative(self.playlist))
        ordered = sorted(self.blocks, key=lambda b: b.start)
        object.__setattr__(self, "_blocks", [(b, _cumulative(b.programmes)) for b in ordered])

    def airing_at(self, t: float) -> Airing:
        return next(self.airings_from(t))

    def airings(self, start: float, end: float) -> list[Airing]:
        """Every airing that overlaps [start, end), in order."""
        out = []
        for airing in self.airings_from(start):
            if airing.start >= end:
                break
            out.append(airing)
        return out

    def airings_from(self, t: float) -> Iterator[Airing]:
        """The airing on at t, then the ones that follow, forever."""
        cursor = _us(t)
        if cursor / US > t:  # rounding must never put t before its own airing's start
            cursor -= 1
        windows = self._block_windows(cursor)
        floor = -(2 ** 62)  # where the loop's current stretch began: the last block's end
        start, end, block, cum = next(windows)
        while True:
            if cursor >= end:
                floor = max(floor, end)
                start, end, block, cum = next(windows)
            elif cursor >= start:
                yield from self._block_airings(cursor, start, end, block, cum)
                cursor = end
            else:
                yield from self._loop_airings(cursor, floor, start)
                cursor = start

    def _loop_airings(self, start: int, floor: int, stop: int) -> Iterator[Airing]:
        """The looping playlist from the item on at `start` until `stop` (a block's start).

        The first airing begins no earlier than `floor` (the end of the block before),
        the last is cut at `stop`.
        """
        cum, length = self._loop, self._loop[-1]
        epoch = _us(self.epoch)
        cycle, offset = divmod(start - epoch, length)
        i = bisect.bisect_right(cum, offset) - 1
        base = epoch + cycle * length
        cursor = max(base + cum[i], floor)
        while cursor < stop:
            end = min(base + cum[i + 1], stop)
            yield Airing(self.playlist[i], cursor / US, end / US, (cursor - base - cum[i]) / US)
            cursor = end
            i += 1
            if i == len(self.playlist):
                i, base = 0, base + length

    @staticmethod
    def _block_airings(cursor: int, start: int, end: int, block: Block, cum: list[int]) -> Iterator[Airing]:
        i = bisect.bisect_right(cum, cursor - start) - 1
        cursor = start + cum[i]
        while cursor < end:
            stop = min(start + cum[i + 1], end)
            yield Airing(block.programmes[i], cursor / US, stop / US, (cursor - start - cum[i]) / US, block.label)
            cursor = stop
            i += 1

    def _block_windows(self, t: int) -> Iterator[tuple[int, int, Block | None, list[int]]]:
        """(start, end, block, cumulative durations) of each block occurrence from the day before t's.

        With no blocks, one window that never comes: the loop runs forever.
        """
        if not self._blocks:
            forever = 2 ** 62
            while True:
                yield forever, forever, None, []
        occurrences = self._occurrences(t)
        start, block, cum = next(occurrences)
        for next_start, next_block, next_cum in occurrences:
            yield start, min(start + cum[-1], next_start), block, cum
            start, block, cum = next_start, next_block, next_cum

    def _occurrences(self, t: int) -> Iterator[tuple[int, Block, list[int]]]:
        """Each block's start instant, day by day, from the local day before t's."""
        zone = ZoneInfo(self.timezone)
        day = dt.datetime.fromtimestamp(t / US, zone).date() - dt.timedelta(days=1)
        while True:
            # A local time that does not exist that day (the spring-forward gap) is read
            # with the offset before the change, so it starts when the clock jumps past
            # it; one that exists twice (autumn) starts at the first. Either can reorder
            # a day's blocks, hence the sort.
            yield from sorted(
                ((round(dt.datetime.combine(day, block.start, tzinfo=zone).timestamp() * US), block, cum)
                 for block, cum in self._blocks), key=lambda o: o[0])
            day += dt.timedelta(days=1)


def parse_daily_time(value: str) -> dt.time:
    """"20:00" (or "20:00:30") as a time of day; ValueError otherwise."""
    parts = value.split(":")
    if len(parts) not in (2, 3) or not all(p.isdigit() and len(p) == 2 for p in parts):
        raise ValueError(f"expected HH:MM, got {value!r}")
    h, m, s = (int(p) for p in (*parts, "00")[:3])
    if h > 23 or m > 59 or s > 59:
        raise ValueError(f"expected HH:MM, got {value!r}")
    return dt.time(h, m, s)


def parse_epoch(value: str) -> float:
    """An ISO 8601 instant with its offset (or Z) as unix time; ValueError otherwise."""
    try:
        instant = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"expected an ISO 8601 instant like 2000-01-01T00:00:00Z, got {value!r}") from None
    if instant.tzinfo is None:
        raise ValueError(f"{value!r} has no offset: add Z or +HH:MM")
    return instant.timestamp()
