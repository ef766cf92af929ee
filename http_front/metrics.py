"""GET /metrics: the front's live state in the Prometheus text format.

Nothing here counts anything. The numbers live where the events happen (ChannelStats,
the lifecycles, the viewers' cursors); a scrape builds a fresh CollectorRegistry with
one collector that reads them once, and prometheus-client writes the text. A scrape
costs the loop a few microseconds per channel plus one /proc read per process.
"""

from __future__ import annotations

import os

import psutil
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from .channel_lifecycle import SHOWN_STATES

PREFIX = "retrovue_air_"

CHANNEL_COUNTERS = (
    # (name, help, value from a front Channel)
    ("bytes_out", "Bytes of stream sent to viewers.", lambda c: c.bytes_out()),
    ("bytes_in", "Bytes of stream read from the channel's ffmpeg.", lambda c: c.stats.bytes_in),
    ("streams_started", "Streams (Air workers) requested for the channel.", lambda c: c.stats.streams_started),
    ("stream_restarts", "ffmpeg restarts inside a stream, viewers kept.", lambda c: c.stats.stream_restarts),
    ("viewers_dropped_slow", "Viewers dropped for falling too far behind the live edge.",
     lambda c: c.stats.viewers_dropped_slow),
)


def _histogram(name: str, doc: str, channels, pick) -> HistogramMetricFamily:
    family = HistogramMetricFamily(PREFIX + name, doc, labels=["channel"])
    for c in channels:
        h = pick(c)
        buckets = [(floatToGoString(bound), count) for bound, count in h.cumulative()]
        family.add_metric([c.id], buckets, h.sum)
    return family


def _rss(pid: int) -> int | None:
    try:
        return psutil.Process(pid).memory_info().rss
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return None  # gone (or going) since we learned its pid


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


class FrontCollector:
    """Everything /metrics shows, read from the front's state at collect() time."""

    def __init__(self, state):
        self.state = state

    def collect(self):
        channels = self.state.channels

        viewers = GaugeMetricFamily(PREFIX + "viewers", "Viewers tuned in to the channel (waiting or watching).",
                                    labels=["channel"])
        for c in channels:
            viewers.add_metric([c.id], c.lifecycle.viewer_count)
        yield viewers

        for name, doc, value in CHANNEL_COUNTERS:
            family = CounterMetricFamily(PREFIX + name, doc, labels=["channel"])
            for c in channels:
                family.add_metric([c.id], value(c))
            yield family

        yield _histogram("time_to_first_byte_seconds",
                         "From requesting a stream to its first bytes from ffmpeg.",
                         channels, lambda c: c.stats.time_to_first_byte)
        yield _histogram("join_seconds",
                         "From a viewer's request to its first stream byte, joining a live channel.",
                         channels, lambda c: c.stats.join)
        yield _histogram("cold_start_seconds",
                         "From a viewer's request to its first stream byte, starting an idle channel.",
                         channels, lambda c: c.stats.cold_start)
        yield _histogram("teardown_seconds",
                         "From sending STOP to the Air worker's exit being reported.",
                         channels, lambda c: c.stats.teardown)

        state = GaugeMetricFamily(PREFIX + "state", "The channel's lifecycle state (1 for the current one).",
                                  labels=["channel", "state"])
        for c in channels:
            current = c.lifecycle.state.shown
            for s in SHOWN_STATES:
                state.add_metric([c.id, s], 1 if s == current else 0)
        yield state

        yield GaugeMetricFamily(PREFIX + "connections", "Open viewer connections to the HTTP front (any request).",
                                value=self.state.connections)
        yield GaugeMetricFamily(PREFIX + "open_fds", "Open file descriptors of the HTTP front.",
                                value=_open_fds())

        if self.state.ingest is not None:  # issue 13
            files = GaugeMetricFamily(PREFIX + "ingest_files", "The channel's distinct media files, by where "
                                      "they are: ingested into its house format, failed, or all.",
                                      labels=["channel", "state"])
            current = GaugeMetricFamily(PREFIX + "ingest_current_ratio", "How far the file being ingested "
                                        "for the channel is (0 to 1).", labels=["channel"])
            for cid, c in self.state.ingest.channels.items():
                for label, value in (("ingested", c.ingested), ("failed", c.failed), ("total", c.files)):
                    files.add_metric([cid, label], value)
                current.add_metric([cid], (c.percent or 0) / 100)
            yield files
            yield current

        rss = GaugeMetricFamily(PREFIX + "resident_memory_bytes",
                                "Resident memory of each process of the service.", labels=["role", "channel"])
        processes = [("supervisor", "", os.getppid()), ("http_front", "", os.getpid())]
        for c in channels:
            if c.lifecycle.worker_pid is not None:
                processes.append(("air_worker", c.id, c.lifecycle.worker_pid))
            if c.lifecycle.ffmpeg_pid is not None:
                processes.append(("ffmpeg", c.id, c.lifecycle.ffmpeg_pid))
        for role, channel, pid in processes:
            value = _rss(pid)
            if value is not None:
                rss.add_metric([role, channel], value)
        yield rss


def render(state) -> tuple[str, bytes]:
    """/metrics from a FrontState (http_front.answers)."""
    registry = CollectorRegistry(auto_describe=False)  # fresh per scrape: collect() runs once
    registry.register(FrontCollector(state))
    return CONTENT_TYPE_LATEST, generate_latest(registry)
