"""What a channel plays when: the shapes the guide renders (the schedule itself replaces this file)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Programme:
    path: str
    duration: float
    title: str
    episode: int | None = None
    season: int | None = None
    description: str = ""
    category: str = ""


@dataclass(frozen=True)
class Airing:
    programme: Programme
    start: float          # unix time
    end: float
    inpoint: float = 0.0
    block: str | None = None
