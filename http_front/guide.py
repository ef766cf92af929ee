"""GET /xmltv.xml without stopping the loop: made in steps between its rounds, once per window.

The guide of fifty channels for two weeks is 21 MB and seconds of work: made in one go, every
viewer's stream would stop that long. Instead a request starts the making of its window's
guide, or joins the one under way; the loop gives it a few milliseconds each round (work());
when it is done every request waiting for it gets the same bytes, and they are kept, so that
the next requests cost nothing until the window moves (xmltv.WINDOW_STEP_SECONDS) or the
configuration changes. A guide that cannot be made is a 500 for those waiting (answer_failed),
and is tried again by the next request.

No sockets: whoever asks is only a token handed back with its answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from retrovue_air.config import Config

from . import responses, xmltv
from .answer_failures import answer_failed
from .presentation import XML
from .public_urls import base_url

log = logging.getLogger("http_front")

# Guides kept for the current window: one per base URL clients reach us by (a Host header of
# their own each would otherwise keep a guide each).
KEPT = 4


@dataclass(frozen=True)
class _Window:
    generation: int  # of the configuration
    start: float
    base: str


@dataclass
class _Making:
    pieces: Iterator[bytes]
    began: float
    made: list[bytes] = field(default_factory=list)
    size: int = 0
    waiting: list[tuple[object, bool]] = field(default_factory=list)  # (who, head only)
    working: float = 0.0  # seconds of the loop's time it took


@dataclass(frozen=True)
class _Made:
    response: bytes  # the whole 200 response
    head: int  # its head's length: a HEAD gets only that

    def answer(self, head_only: bool) -> bytes:
        return self.response[:self.head] if head_only else self.response


class Guide:
    def __init__(self, config: Config):
        self.generation = 0
        self._deadline = 0.0  # of the current work(): a piece under way ends there
        self.made: dict[_Window, _Made] = {}
        self.making: dict[_Window, _Making] = {}
        self.configure(config)

    def configure(self, config: Config) -> None:
        """A new configuration: guides made from the old one are not given out again."""
        self.config = config
        self.generation += 1
        self.made.clear()

    @property
    def busy(self) -> bool:
        return bool(self.making)

    def ask(self, who: object, head_only: bool, host: str, now: float) -> bytes | None:
        """The guide for a request at now (unix time), if it is made; else None, and work() will give it."""
        start, end = xmltv.stepped_window(now, self.config.guide_hours)
        window = _Window(self.generation, start, base_url(self.config.public_url, host))
        made = self.made.get(window)
        if made is not None:
            return made.answer(head_only)
        making = self.making.get(window)
        if making is None:
            listing = [(c, xmltv.listed_airings(c, getattr(c.source, "schedule", None), start, end))
                       for c in self.config.channels]
            pieces = xmltv.document(listing, window.base, pause=self._out_of_time)
            making = self.making[window] = _Making(pieces, time.monotonic())
        making.waiting.append((who, head_only))
        return None

    def work(self, seconds: float) -> list[tuple[object, bytes]]:
        """Make guides, oldest first, for about `seconds`; the answers for those waiting on any now done."""
        self._deadline = time.monotonic() + seconds
        answers = []
        for window, making in list(self.making.items()):
            answers += self._work_on(window, making)
            if self._out_of_time():
                break
        return answers

    def _out_of_time(self) -> bool:
        return time.monotonic() >= self._deadline

    def _work_on(self, window: _Window, making: _Making) -> list[tuple[object, bytes]]:
        began = time.monotonic()
        try:
            for piece in making.pieces:
                making.made.append(piece)
                making.size += len(piece)
                if self._out_of_time():
                    making.working += time.monotonic() - began
                    return []
            head = responses.body_head(200, XML, making.size)
            made = _Made(b"".join([head, *making.made]), len(head))
        except Exception:
            del self.making[window]
            return [(who, answer_failed("the guide", head_only)) for who, head_only in making.waiting]
        del self.making[window]
        making.working += time.monotonic() - began
        self._keep(window, made)
        log.info("the guide for %s from %s: %.1f MB in %.2f s (%.2f s of work), for %d requests", window.base,
                 xmltv.xmltv_time(window.start), making.size / 1e6, time.monotonic() - making.began,
                 making.working, len(making.waiting))
        return [(who, made.answer(head_only)) for who, head_only in making.waiting]

    def _keep(self, window: _Window, made: _Made) -> None:
        if window.generation != self.generation:
            return  # made from a configuration replaced since: for those who asked then only
        for old in [w for w in self.made if (w.generation, w.start) != (window.generation, window.start)]:
            del self.made[old]
        while len(self.made) >= KEPT:
            del self.made[next(iter(self.made))]
        self.made[window] = made
