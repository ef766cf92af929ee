"""SegmentIndex without sockets: keyframes and stream restarts in, playlists and byte ranges out."""

from __future__ import annotations

import re

from http_front.hls_segments import (PTS_HZ, PTS_WRAP, SegmentIndex, held_seconds, pes_pts, segment_name,
                                     target_duration)

GOP = 100 * 188  # bytes of one GOP in these tests
T0 = 1_700_000_000.0


def fed(index: SegmentIndex, stream: int, gops: int, first_gop: int = 0, pts0: int = 0, wall: float = T0):
    """One keyframe per GOP (1 s), offsets following on from first_gop."""
    for k in range(gops):
        index.keyframe(stream, (first_gop + k) * GOP, b"", pts0 + k * PTS_HZ, wall + k)
    return index


def tags(playlist: bytes, name: str) -> list[str]:
    return re.findall(rf"^#{name}:?(.*)$", playlist.decode(), re.M)


def uris(playlist: bytes) -> list[str]:
    return [line for line in playlist.decode().splitlines() if line and not line.startswith("#")]


def test_a_segment_is_the_bytes_from_one_keyframe_to_the_next_and_the_newest_gop_is_not_listed_yet():
    index = fed(SegmentIndex(1.0), 7, 4)
    listed = index.listed(published=10**9)
    assert [(s.seq, s.start, s.end) for s in listed] == [(0, 0, GOP), (1, GOP, 2 * GOP), (2, 2 * GOP, 3 * GOP)]
    assert [s.duration for s in listed] == [1.0, 1.0, 1.0]
    assert index.segment(7, 1, 10**9).start == GOP


def test_a_segment_whose_last_bytes_are_unpublished_is_neither_listed_nor_served():
    index = fed(SegmentIndex(1.0), 7, 4)
    assert [s.seq for s in index.listed(published=2 * GOP + 5)] == [0, 1]
    assert index.segment(7, 2, 2 * GOP + 5) is None


def test_the_playlist_has_the_rfc_8216_tags_and_relative_uris():
    index = fed(SegmentIndex(2.0), 7, 4)
    text = index.playlist(10**9, lambda s: f"1/{s.name}.ts")
    assert text.startswith(b"#EXTM3U\n")
    assert tags(text, "EXT-X-TARGETDURATION") == ["2"]
    assert tags(text, "EXT-X-MEDIA-SEQUENCE") == ["0"]
    assert tags(text, "EXT-X-DISCONTINUITY-SEQUENCE") == ["0"]
    assert tags(text, "EXT-X-INDEPENDENT-SEGMENTS") == [""]
    assert tags(text, "EXT-X-PROGRAM-DATE-TIME") == ["2023-11-14T22:13:20.000Z", "2023-11-14T22:13:21.000Z",
                                                     "2023-11-14T22:13:22.000Z"]
    assert uris(text) == ["1/7-0.ts", "1/7-1.ts", "1/7-2.ts"]


def test_the_window_slides_and_the_media_sequence_never_goes_back():
    index = SegmentIndex(1.0)
    sequences = []
    for k in range(30):
        index.keyframe(7, k * GOP, b"", k * PTS_HZ, T0 + k)
        index.forget_before(max(0, (k - 15) * GOP))
        sequences.append(int(tags(index.playlist(10**9, str), "EXT-X-MEDIA-SEQUENCE")[0]))
    assert sequences == sorted(sequences) and sequences[-1] > 20
    listed = index.listed(10**9)
    assert sum(s.duration for s in listed) >= 4 * index.target  # RFC 8216 6.2.2: never under 3 after a removal
    assert len(listed) == 4


def test_a_segment_off_the_playlist_is_served_until_it_leaves_the_ring_then_never_again():
    index = fed(SegmentIndex(1.0), 7, 12)
    assert index.listed(10**9)[0].seq == 7
    assert index.segment(7, 2, 10**9).start == 2 * GOP  # off the playlist, still held
    index.forget_before(2 * GOP + 188)
    assert index.segment(7, 2, 10**9) is None
    assert index.segment(7, 3, 10**9).start == 3 * GOP
    assert index.segment(8, 3, 10**9) is None  # another stream's name for that number: not these bytes


def test_a_restarted_stream_is_a_discontinuity_and_its_open_gop_is_dropped():
    index = fed(SegmentIndex(1.0), 7, 3)  # segments 0, 1; GOP 2 open
    index.cut()
    fed(index, 8, 3, first_gop=10, pts0=5 * PTS_HZ, wall=T0 + 100)
    text = index.playlist(10**9, lambda s: s.name)
    assert uris(text) == ["7-0", "7-1", "8-2", "8-3"]
    lines = text.decode().splitlines()
    assert lines[lines.index("8-2") - 3] == "#EXT-X-DISCONTINUITY"
    assert tags(text, "EXT-X-PROGRAM-DATE-TIME")[2] == "2023-11-14T22:15:00.000Z"  # the new stream's own clock
    fed(index, 8, 5, first_gop=13, pts0=8 * PTS_HZ, wall=T0 + 103)
    later = index.playlist(10**9, lambda s: s.name)
    assert tags(later, "EXT-X-DISCONTINUITY-SEQUENCE") == ["1"] and "#EXT-X-DISCONTINUITY\n" not in later.decode()


def test_a_stream_id_change_without_a_cut_still_makes_a_discontinuity():
    index = fed(SegmentIndex(1.0), 7, 3)
    fed(index, 8, 2, first_gop=5)
    assert [s.discontinuity for s in index.listed(10**9)] == [0, 0, 1]


def test_a_ring_that_is_gone_serves_nothing_and_numbering_goes_on():
    index = fed(SegmentIndex(1.0), 7, 5)
    index.reset()
    assert index.listed(10**9) == [] and index.segment(7, 1, 10**9) is None
    fed(index, 9, 3)  # a new ring: offsets from 0 again
    assert [(s.seq, s.discontinuity) for s in index.listed(10**9)] == [(4, 1), (5, 1)]


def test_program_time_follows_the_pts_through_a_burst_and_across_the_33_bit_wrap():
    index = SegmentIndex(1.0)
    pts0 = PTS_WRAP - PTS_HZ // 2
    for k in range(4):  # all arrived at once: the burst
        index.keyframe(7, k * GOP, b"", (pts0 + k * PTS_HZ) % PTS_WRAP, T0)
    listed = index.listed(10**9)
    assert [s.program_time - T0 for s in listed] == [0.0, 1.0, 2.0]
    assert [s.duration for s in listed] == [1.0, 1.0, 1.0]


def test_a_jump_in_the_pts_gives_the_nominal_duration():
    index = SegmentIndex(1.0)
    index.keyframe(7, 0, b"", 0, T0)
    index.keyframe(7, GOP, b"", 3600 * PTS_HZ, T0 + 1)
    assert index.listed(10**9)[0].duration == 1.0


def test_ready_means_three_segments():
    index = fed(SegmentIndex(1.0), 7, 3)
    assert not index.ready(10**9)
    index.keyframe(7, 3 * GOP, b"", 3 * PTS_HZ, T0 + 3)
    assert index.ready(10**9)


def test_target_duration_and_what_the_ring_must_hold():
    assert [target_duration(s) for s in (0.5, 1.0, 1.5, 2.0)] == [1, 1, 2, 2]
    # listed window + the open GOP, then 6.2.2's retention: segment + playlist
    assert held_seconds(1.0) >= (4 + 1) + (1 + 5)
    assert held_seconds(2.0) >= 2 * ((4 + 1) + (1 + 5))


def test_pes_pts_reads_the_pts_of_a_pes_starting_in_the_packet():
    pts = 0x1_2345_6789
    pes = bytes([0, 0, 1, 0xE0, 0, 0, 0x80, 0x80, 5,
                 0x21 | ((pts >> 29) & 0x0E), (pts >> 22) & 0xFF, 0x01 | ((pts >> 14) & 0xFE),
                 (pts >> 7) & 0xFF, 0x01 | ((pts << 1) & 0xFE)])
    packet = bytes([0x47, 0x41, 0x00, 0x10]) + pes + b"\xff" * (184 - len(pes))
    assert pes_pts(packet) == pts
    assert pes_pts(bytes([0x47, 0x01, 0x00, 0x10]) + pes + b"\xff" * (184 - len(pes))) is None  # no PES start
    adapted = bytes([0x47, 0x41, 0x00, 0x30, 7, 0x50]) + b"\0" * 6 + pes + b"\xff" * (176 - len(pes))
    assert pes_pts(adapted) == pts


def test_segment_names():
    assert segment_name("1000000001-42") == (1000000001, 42)
    assert [segment_name(n) for n in ("x", "1-", "-1", "1-2-3", "١-٢", "1" * 21 + "-1")] == [None] * 6
