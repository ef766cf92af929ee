"""What fills each airing's slot: its file as far as it goes now, and a slate for the rest.

The schedule was laid from each file's probe when the configuration was loaded; the file may
have been deleted, made unreadable or replaced since. A file still as it was probed (same
size and mtime) is taken at its word without opening it; a changed one is probed again, once
per version. The answer is a length, so that the caller covers what is missing on the clock
instead of letting the channel run ahead of its guide.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

from retrovue_air import media_info
from retrovue_air.schedule import Airing, Programme


@dataclass(frozen=True)
class Playable:
    seconds: float  # of the file, from its start, that can play (0: none)
    why: str = ""  # why not all the schedule counted on, for the log


class FileChecks:
    def __init__(self, probe=media_info.probe):
        self._probe = probe
        self._probed: dict[tuple[str, int, int], Playable] = {}

    def playable(self, programme: Programme) -> Playable:
        path = programme.path
        try:
            st = os.stat(path)
        except OSError as e:
            what = "missing" if e.errno == errno.ENOENT else "unreadable"
            return Playable(0.0, f"{path} is {what} ({e.strerror})")
        if not stat.S_ISREG(st.st_mode):
            return Playable(0.0, f"{path} is no longer a regular file")
        if not os.access(path, os.R_OK):
            return Playable(0.0, f"{path} is unreadable (permission denied)")
        if programme.identity is None or programme.identity == (st.st_size, st.st_mtime_ns):
            return Playable(programme.duration)
        key = (path, st.st_size, st.st_mtime_ns)
        if key not in self._probed:
            self._probed[key] = self._reprobe(programme)
        return self._probed[key]

    def _reprobe(self, programme: Programme) -> Playable:
        try:
            info = self._probe(programme.path)
        except media_info.ProbeError as e:
            return Playable(0.0, f"{programme.path} changed since it was probed and cannot be read: {e}")
        if info.duration < programme.duration:
            return Playable(info.duration, f"{programme.path} changed since it was probed: now {info.duration:.1f} s "
                                           f"of the {programme.duration:.1f} s scheduled")
        return Playable(programme.duration)


# A shortfall shorter than this is left to the decoder, which holds the file's last picture and
# pads with silence: a slate that flashes up for a moment says less than a held picture.
SLATE_MIN_SECONDS = 1.0


@dataclass(frozen=True)
class Piece:
    """A stretch of one airing on the wall clock, decoded from its file or covered by a slate."""
    airing: Airing
    start: float  # unix time
    end: float
    inpoint: float  # seconds into the file at `start`
    slate: str | None = None  # why a slate covers it instead


def pieces(airing: Airing, stream_start: float, playable: Playable) -> list[Piece]:
    """What airs in the airing's slot (from the stream's start): as much of its file as can play,
    then a slate of exactly what is missing, so that the next airing starts on the guide's second."""
    begin = max(airing.start, stream_start)
    inpoint = airing.inpoint + begin - airing.start
    # A file that repeats to fill its slot fills it as long as any of it plays.
    covers = airing.programme.slot if airing.programme.repeats > 1 and playable.seconds > 0 else playable.seconds
    file_ends = airing.start - airing.inpoint + covers  # when its file runs out, on the clock
    if file_ends >= airing.end - SLATE_MIN_SECONDS:
        return [Piece(airing, begin, airing.end, inpoint)]
    if file_ends <= begin:
        return [Piece(airing, begin, airing.end, inpoint, playable.why)]
    return [Piece(airing, begin, file_ends, inpoint),
            Piece(airing, file_ends, airing.end, playable.seconds, playable.why)]
