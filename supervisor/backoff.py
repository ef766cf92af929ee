"""How long to wait before starting a child again that exited when it should not have.

A child that dies at once every time (a broken file system, a bug on one input) must not be
started in a tight loop, and one that ran steadily for a while and then died has a new fault, not
the same one: the first wait again. The same doubling as a channel's ffmpeg restarts (0.5 s, 1 s,
2 s...), capped.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Backoff:
    first: float  # the first wait
    most: float  # no wait is longer
    reset_after: float  # a child that ran this long before it died starts the count again
    failures: int = 0  # in a row, each within reset_after of its start

    def next_delay(self, ran_for: float) -> float:
        """The wait before the next start of a child that died after running ran_for seconds."""
        if ran_for >= self.reset_after:
            self.failures = 0
        delay = min(self.most, self.first * 2 ** self.failures)
        self.failures += 1
        return delay

    def reset(self) -> None:
        """A new start for another reason (a new configuration): the next fault waits the least."""
        self.failures = 0
