"""Burst on join: a late joiner starts at PAT, PMT and a keyframe at least join_burst_seconds behind
the live edge, gets that burst as fast as it reads, and is not dropped as slow for it."""

from __future__ import annotations

import requests

from harness import RawViewer, Reader, assert_aligned_ts, require_tool, wait_until
from ts_packets_check import first_video_frame_is_key, pmt_pid_of

from ts_packets_check import continuity_errors


def video_pts(data: bytes) -> list[float]:
    """The PTS (seconds) of every video PES that starts in data, in stream order."""
    out = []
    for i in range(0, len(data) - 187, 188):
        packet = data[i:i + 188]
        if not packet[1] & 0x40:  # no PES starts here
            continue
        at = 4 + (1 + packet[4] if packet[3] & 0x20 else 0)
        pes = packet[at:]
        if pes[:3] != b"\0\0\1" or not 0xE0 <= pes[3] <= 0xEF or not pes[7] & 0x80:
            continue
        p = pes[9:14]
        pts = ((p[0] >> 1) & 7) << 30 | p[1] << 22 | (p[2] >> 1) << 15 | p[3] << 7 | p[4] >> 1
        out.append(pts / 90000)
    return out


def read_now(viewer: RawViewer, n: int) -> bytes:
    """What the joiner gets at once (the burst is sent as fast as it reads)."""
    return viewer.read_body(n)


def test_a_late_joiner_starts_at_a_keyframe_at_least_the_burst_behind_the_live_edge(service):
    require_tool("ffprobe")
    edge = Reader(service, "1", keep=True)
    edge.start()
    # Live for 9 s of wall time: its first 6 s (the cold-start burst) came at once.
    wait_until(lambda: len(video_pts(bytes(edge.data))) > 25 * 15, 30, "the channel live for 9 s")
    live_pts = video_pts(bytes(edge.data))[-1]
    joiner = RawViewer(service, "1")
    body = read_now(joiner, 188 * 800)
    assert_aligned_ts(body)
    assert body[0] == 0x47 and (body[1] & 0x1F) << 8 | body[2] == 0, "PAT first"
    assert (body[189] & 0x1F) << 8 | body[190] == pmt_pid_of(body), "PMT second"
    assert first_video_frame_is_key(body)
    assert continuity_errors(body) == []
    behind = live_pts - video_pts(body)[0]
    assert 6.0 - 0.5 <= behind <= 6.0 + 2.5, f"started {behind:.2f} s behind the live edge"
    # It drains the burst and goes on; nobody was dropped for being behind.
    joiner.read_body(len(joiner.body) + 200 * 1024)
    assert not [line for line in service.lines if "dropping slow viewer" in line]
    joiner.close()
    edge.finish()
    service.wait_idle()


def test_a_channel_live_for_less_than_the_burst_gives_its_oldest_keyframe(service):
    first = Reader(service, "1", keep=True)
    first.start()
    wait_until(lambda: len(video_pts(bytes(first.data))) > 25 * 2.5, 30, "the channel live for 2.5 s")
    joiner = RawViewer(service, "1")
    body = read_now(joiner, 188 * 200)
    assert first_video_frame_is_key(body)
    # The oldest keyframe held is the stream's first frame: the joiner starts where the first viewer did.
    assert abs(video_pts(body)[0] - video_pts(bytes(first.data))[0]) < 0.05
    joiner.close()
    first.finish()
    service.wait_idle()


def test_join_burst_seconds_zero_starts_at_the_latest_keyframe(service_factory):
    service = service_factory(extra='\n[[channel]]\nid = "3"\nname = "Three"\nsource = "test-pattern"\n'
                                    'width = 320\nheight = 180\njoin_burst_seconds = 0\n')
    edge = Reader(service, "3", keep=True)
    edge.start()
    wait_until(lambda: len(video_pts(bytes(edge.data))) > 25 * 8, 30, "the channel live for 8 s")
    live_pts = video_pts(bytes(edge.data))[-1]
    joiner = RawViewer(service, "3")
    body = read_now(joiner, 188 * 200)
    assert first_video_frame_is_key(body)
    assert live_pts - video_pts(body)[0] < 1.0 + 0.6  # within one GOP (1 s) of the edge
    joiner.close()
    edge.finish()
    service.wait_idle()


def test_join_and_cold_start_latency_are_shown_on_channels_metrics_and_the_status_page(service):
    cold = RawViewer(service, "1")
    cold.read_body(188 * 10)
    warm = RawViewer(service, "1")
    warm.read_body(188 * 10)
    entry = service.channels()["1"]
    assert entry["cold_start_seconds"]["count"] == 1 and entry["join_seconds"]["count"] == 1
    assert 0 < entry["cold_start_seconds"]["p50"] < 60 and 0 <= entry["join_seconds"]["p99"] < 60
    metrics = requests.get(service.url("/metrics"), timeout=5).text
    assert 'retrovue_air_join_seconds_count{channel="1"} 1.0' in metrics
    assert 'retrovue_air_cold_start_seconds_count{channel="1"} 1.0' in metrics
    page = requests.get(service.url("/"), timeout=5).text
    assert "Tune-in" in page and "cold start" in page
    warm.close()
    cold.close()
    service.wait_idle()
