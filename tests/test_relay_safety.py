"""A relay's origin is not to be trusted: too fast, redirecting elsewhere, or behind credentials.

Each origin here is a small server of the test's own on loopback; the edge is the real service.
"""

from __future__ import annotations

import time

import psutil
import pytest

from harness import Reader, require_tool, wait_until

from bench.fast_origin import SECONDS, FastOrigin, make_looped_ts

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def looped_ts(tmp_path_factory) -> bytes:
    """A 4 s MPEG-TS of 600 + 64 kbit/s, which the fast origin loops without pause."""
    return make_looped_ts(require_tool("ffmpeg"), tmp_path_factory.mktemp("origin") / "loop.ts").read_bytes()


def edge_config(url: str, extra: str = "", extra_top: str = "") -> str:
    return (f"failed_retry_seconds = 1\n{extra_top}\n"
            f'[[channel]]\nid = "r"\nname = "Relay"\nsource = "relay"\nurl = "{url}"\n'
            f"video_kbps = 600\naudio_kbps = 64\n{extra}\n")


def assert_same_front_and_no_leak(edge, front_pid: int, fds: tuple[int, int]) -> None:
    edge.wait_idle(timeout=10)
    assert edge.front.pid == front_pid and edge.front.is_running(), "the front was replaced"
    assert sum(1 for line in edge.lines if "started http_front pid" in line) == 1
    wait_until(lambda: edge.fd_counts() == fds, 5, f"fds back to {fds}")


def test_a_relay_of_an_origin_faster_than_real_time_gets_the_streams_own_rate_in_bounded_memory(
        service_factory, looped_ts):
    with FastOrigin(looped_ts) as origin:
        edge = service_factory(config_text=edge_config(origin.url()))
        front_pid, fds = edge.front.pid, edge.fd_counts()
        rss_before = edge.front.memory_info().rss
        viewer = Reader(edge, "r")
        viewer.start()
        wait_until(lambda: viewer.count > 0, 15, "the relay streaming")
        started = time.monotonic()
        samples, peak = [], rss_before
        while time.monotonic() - started < 9:
            peak = max(peak, edge.front.memory_info().rss)
            samples.append((time.monotonic(), viewer.count))
            time.sleep(0.1)
        viewer.finish()
    assert viewer.count > 0
    assert peak - rss_before < 32 * MIB, f"the front grew by {(peak - rss_before) / MIB:.0f} MiB"
    # The stream's own rate: the file's bytes over its length. The first viewer of an idle relay
    # gets the origin's join burst at once (a few seconds), then the stream as it plays.
    stream_rate = len(looped_ts) / SECONDS
    (t1, c1), (t2, c2) = next(s for s in samples if s[0] >= started + 3), samples[-1]
    real_time = (c2 - c1) / stream_rate / (t2 - t1)
    assert 0.6 < real_time < 1.6, f"the viewer got {real_time:.2f} s of stream a second after its burst"
    assert viewer.count / stream_rate < (samples[-1][0] - started) + 15, "more than the burst ahead"
    assert_same_front_and_no_leak(edge, front_pid, fds)
