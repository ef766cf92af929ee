"""What the front has counted about each channel, for /metrics and the status page.

Plain numbers updated where the events happen (a stream starts, a viewer is dropped),
never per byte or per send: bytes sent are derived from the viewers' cursors when
someone asks, so the fan-out path pays nothing for them.
"""

from __future__ import annotations

import bisect
import collections
from dataclasses import dataclass, field

TTFB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
TEARDOWN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
TUNE_IN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
RECENT = 1000  # observations kept for exact percentiles on /channels and the status page


@dataclass
class Histogram:
    """Cumulative-bucket histogram in the Prometheus sense, without a registry."""
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    sum: float = 0.0
    count: int = 0
    recent: collections.deque = field(default_factory=lambda: collections.deque(maxlen=RECENT))

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self.buckets, value)
        if i < len(self.counts):
            self.counts[i] += 1
        self.sum += value
        self.count += 1
        self.recent.append(value)

    def percentile(self, p: float) -> float | None:
        """The p-th percentile (0-100) of the recent observations; None before the first."""
        if not self.recent:
            return None
        ordered = sorted(self.recent)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]

    def summary(self) -> dict:
        """count, p50 and p99 in seconds, for /channels."""
        return {"count": self.count, "p50": self.percentile(50), "p99": self.percentile(99)}

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations <= bound), ending with (+inf, count)."""
        out, running = [], 0
        for bound, n in zip(self.buckets, self.counts):
            running += n
            out.append((bound, running))
        out.append((float("inf"), self.count))
        return out


@dataclass
class ChannelStats:
    bytes_in: int = 0  # read from the stream, all streams so far
    bytes_out_closed: int = 0  # sent to viewers who have left
    streams_started: int = 0
    stream_restarts: int = 0  # ffmpeg restarted inside a stream, viewers kept
    viewers_dropped_slow: int = 0
    live_since: float | None = None  # monotonic time the current stream went live
    time_to_first_byte: Histogram = field(default_factory=lambda: Histogram(TTFB_BUCKETS))
    teardown: Histogram = field(default_factory=lambda: Histogram(TEARDOWN_BUCKETS))
    # A viewer's request until its first stream byte went out: joining a live channel, and
    # starting an idle one (the first viewers, who wait for ffmpeg).
    join: Histogram = field(default_factory=lambda: Histogram(TUNE_IN_BUCKETS))
    cold_start: Histogram = field(default_factory=lambda: Histogram(TUNE_IN_BUCKETS))
