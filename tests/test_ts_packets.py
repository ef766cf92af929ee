"""retrovue_air.mpegts against real ffmpeg MPEG-TS output.

ffprobe's packet positions serve as the independent keyframe oracle, and
ffmpeg itself decodes what a joining viewer would receive.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from retrovue_air import mpegts
from retrovue_air.mpegts import (
    MAX_RANDOM_ACCESS_POINTS,
    TS_PACKET_SIZE,
    JoinPoint,
    TsScanner,
)
from ts_packets_check import continuity_errors, packet_pids

FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"
FFPROBE = shutil.which("ffprobe") or "/usr/bin/ffprobe"

pytestmark = pytest.mark.skipif(
    not (Path(FFMPEG).exists() and Path(FFPROBE).exists()), reason="needs ffmpeg and ffprobe"
)

P = TS_PACKET_SIZE
SOURCES = [
    "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25",
    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
]
X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-sc_threshold", "0", "-b:v", "800k"]
AAC = ["-c:a", "aac", "-b:a", "96k"]


@dataclass(frozen=True)
class Sample:
    data: bytes
    keyframes: list[int]  # ffprobe: byte positions of video keyframe packets
    video_packets: list[int]  # ffprobe: byte positions of all video packets


def _ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def _probe(path: Path) -> tuple[list[int], list[int]]:
    out = subprocess.run(
        [FFPROBE, "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pos,flags",
         "-of", "csv=p=0", str(path)],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    rows = [line.split(",") for line in out]
    return [int(r[0]) for r in rows if "K" in r[1]], [int(r[0]) for r in rows]


def _strip_rai(data: bytes) -> bytes:
    """Clear every random_access_indicator so only the PES/NAL inspection can find keyframes."""
    out = bytearray(data)
    for i in range(0, len(out), P):
        if out[i + 3] & 0x20 and out[i + 4]:
            out[i + 5] &= ~0x40 & 0xFF
    return bytes(out)


@pytest.fixture(scope="module")
def streams(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Sample]:
    d = tmp_path_factory.mktemp("ts")
    _ffmpeg(*SOURCES, "-t", "6", *X264, "-g", "25", "-keyint_min", "25", *AAC, "-f", "mpegts", str(d / "gop25.ts"))
    # -c copy remux in CBR mode: adds null packets, PCR-only adaptation packets
    # and SDTs between the PMT and the keyframes.
    _ffmpeg("-i", str(d / "gop25.ts"), "-c", "copy", "-muxrate", "1500k", "-f", "mpegts", str(d / "cbr-remux.ts"))
    # All-intra: ffmpeg forces PAT/PMT only before a keyframe that follows a
    # non-keyframe, so most joins here need spliced PAT/PMT copies.
    _ffmpeg(*SOURCES, "-t", "4", *X264, "-g", "1", *AAC, "-f", "mpegts", str(d / "all-intra.ts"))
    _ffmpeg(*SOURCES, "-t", "6", *X264, "-g", "250", "-keyint_min", "250", *AAC, "-f", "mpegts", str(d / "gop250.ts"))
    names = ["gop25", "cbr-remux", "all-intra", "gop250"]
    encoders = subprocess.run([FFMPEG, "-hide_banner", "-encoders"], capture_output=True, text=True).stdout
    if "libx265" in encoders:
        _ffmpeg(*SOURCES, "-t", "3", "-c:v", "libx265", "-preset", "ultrafast",
                "-x265-params", "keyint=25:min-keyint=25:scenecut=0:open-gop=0:log-level=error",
                *AAC, "-f", "mpegts", str(d / "hevc.ts"))
        names.append("hevc")
    samples = {name: Sample((d / f"{name}.ts").read_bytes(), *_probe(d / f"{name}.ts")) for name in names}
    for name in ("gop25", "hevc"):
        if name in samples:
            s = samples[name]
            samples[f"{name}-no-rai"] = Sample(_strip_rai(s.data), s.keyframes, s.video_packets)
    return samples


GOP_STREAMS = ["gop25", "cbr-remux", "all-intra", "gop25-no-rai", "hevc", "hevc-no-rai"]


def _sample(streams: dict[str, Sample], name: str) -> Sample:
    if name not in streams:
        pytest.skip(f"{name} not available (no libx265?)")
    return streams[name]


def _scan(data: bytes) -> TsScanner:
    scanner = TsScanner()
    scanner.feed(data, 0)
    return scanner


def _scan_chunked(data: bytes, rng: random.Random) -> TsScanner:
    """Feed like the front does: memoryviews into a mutable buffer, odd sizes, some 1-byte reads."""
    scanner = TsScanner()
    ring = bytearray(data)
    view = memoryview(ring)
    pos = 0
    while pos < len(data):
        size = rng.choice([1, 2, 187, 189, rng.randint(1, 400), rng.randint(1, 20000)])
        scanner.feed(view[pos : pos + size], pos)
        pos += min(size, len(data) - pos)
    return scanner


def _video_pid(data: bytes) -> int:
    pid = _scan(data[: 20 * P]).video_pid
    assert pid is not None
    return pid


def _first_video_payload(body: bytes, video_pid: int) -> int:
    """Index in `body` of the first packet carrying video payload."""
    for i in range(0, len(body), P):
        if ((body[i + 1] & 0x1F) << 8 | body[i + 2]) == video_pid and body[i + 3] & 0x10:
            return i
    raise AssertionError("no video payload in body")


def _expected_keyframe(keyframes: list[int], oldest: int, newest: int) -> int | None:
    in_range = [k for k in keyframes if oldest <= k < newest]
    return in_range[-1] if in_range else None


def _check_keyframe_join(sample: Sample, jp: JoinPoint, oldest: int, newest: int, pmt_pid: int) -> bytes:
    """Structural checks on what the viewer receives; returns prefix + stream from the cursor."""
    data = sample.data
    assert jp.at_keyframe
    assert oldest <= jp.offset < newest and jp.offset % P == 0
    assert len(jp.prefix) in (0, 2 * P)
    body = jp.prefix + data[jp.offset :]
    pids = packet_pids(body)
    assert pids[:2] == [0, pmt_pid]
    first = _first_video_payload(body, _video_pid(data))
    assert body[first + 1] & 0x40, "first video payload must start a PES"
    stream_pos = jp.offset + first - len(jp.prefix)
    assert stream_pos == _expected_keyframe(sample.keyframes, oldest, newest)
    assert continuity_errors(body) == []
    return body


def _decode(body: bytes) -> tuple[int, str]:
    """(video frames decoded, stderr) by ffmpeg at -v error."""
    run = subprocess.run(
        [FFMPEG, "-hide_banner", "-v", "error", "-f", "mpegts", "-i", "-", "-map", "0:v:0", "-f", "framemd5", "-"],
        input=body, capture_output=True, check=True,
    )
    frames = sum(1 for line in run.stdout.decode().splitlines() if line and not line.startswith("#"))
    return frames, run.stderr.decode()


def _ffmpeg_cc_complaints(body: bytes) -> list[str]:
    run = subprocess.run(
        [FFMPEG, "-hide_banner", "-v", "debug", "-f", "mpegts", "-i", "-", "-map", "0", "-c", "copy", "-f", "null", "-"],
        input=body, capture_output=True,
    )
    return [line for line in run.stderr.decode(errors="replace").splitlines() if "Continuity check failed" in line]


# -- basics ------------------------------------------------------------------


def test_none_until_pat_and_pmt_seen(streams: dict[str, Sample]) -> None:
    data = streams["gop25"].data
    assert packet_pids(data[: 4 * P])[:3] == [0x11, 0, 0x1000]  # SDT, PAT, PMT, keyframe
    scanner = TsScanner()
    assert scanner.join_point(0, 0) is None
    scanner.feed(data[: 2 * P], 0)  # SDT + PAT
    assert scanner.join_point(0, 2 * P) is None
    scanner.feed(data[2 * P : 3 * P + 10], 2 * P)  # PMT + a sliver of the keyframe packet
    jp = scanner.join_point(0, 3 * P)
    assert jp is not None and not jp.at_keyframe
    assert jp.offset == 3 * P and packet_pids(jp.prefix) == [0, 0x1000]
    scanner.feed(data[3 * P + 10 : 4 * P], 3 * P + 10)
    assert scanner.join_point(0, 4 * P) == JoinPoint(b"", P, True)


def test_feed_contract() -> None:
    scanner = TsScanner()
    with pytest.raises(ValueError):
        scanner.feed(b"\x47" + bytes(187), 100)  # not packet-aligned
    scanner.feed(b"\x47\x1f\xff\x10" + bytes(184), 188 * 5)  # attaching mid-stream is fine
    with pytest.raises(ValueError):
        scanner.feed(b"\x47\x1f\xff\x10" + bytes(184), 188 * 7)  # gap


@pytest.mark.parametrize("name", GOP_STREAMS + ["gop250"])
def test_random_access_points_match_ffprobe(streams: dict[str, Sample], name: str) -> None:
    sample = _sample(streams, name)
    scanner = _scan(sample.data)
    assert scanner.pmt_pid == 0x1000 and scanner.video_pid == _video_pid(sample.data)
    assert scanner.random_access_points == sample.keyframes[-MAX_RANDOM_ACCESS_POINTS:]
    assert scanner.sync_errors == 0


@pytest.mark.parametrize("name", GOP_STREAMS + ["gop250"])
def test_chunked_feed_matches_whole_feed(streams: dict[str, Sample], name: str) -> None:
    sample = _sample(streams, name)
    whole = _scan(sample.data)
    rng = random.Random(name)
    chunked = _scan_chunked(sample.data, rng)
    packets = len(sample.data) // P
    windows = [(0, len(sample.data))]
    for _ in range(60):
        a, b = sorted(rng.randrange(packets + 1) for _ in range(2))
        windows.append((a * P, b * P))
    assert chunked.random_access_points == whole.random_access_points
    assert [chunked.join_point(*w) for w in windows] == [whole.join_point(*w) for w in windows]


class EveryPacket(TsScanner):
    """The reference: Python looks at every packet (what the skipping scan must equal)."""

    def _packets(self, view, start, end, offset):
        for i in range(start, end, P):
            self._packet(view, i, offset + i)


def _damaged(data: bytes, rng: random.Random) -> bytes:
    """Broken sync bytes, and packets swapped about: runs cut, PES starts lost, tables torn."""
    out = bytearray(data)
    packets = len(data) // P
    for _ in range(40):
        out[rng.randrange(packets) * P] = 0x00
    for _ in range(40):
        a, b = rng.randrange(packets) * P, rng.randrange(packets) * P
        out[a:a + P], out[b:b + P] = out[b:b + P], out[a:a + P]
    return bytes(out)


@pytest.mark.parametrize("damage", [False, True], ids=["clean", "damaged"])
@pytest.mark.parametrize("name", GOP_STREAMS + ["gop250"])
def test_skipping_scan_finds_what_a_look_at_every_packet_finds(streams: dict[str, Sample], name: str,
                                                               damage: bool) -> None:
    rng = random.Random(name)
    data = _sample(streams, name).data
    data = _damaged(data, rng) if damage else data
    reference = EveryPacket()
    reference.feed(data, 0)
    fast = _scan_chunked(data, rng)
    packets = len(data) // P
    windows = [(0, len(data))] + [tuple(sorted(rng.randrange(packets + 1) * P for _ in range(2))) for _ in range(60)]
    assert fast.random_access_points == reference.random_access_points and reference.random_access_points
    assert fast.sync_errors == reference.sync_errors and (reference.sync_errors > 0) == damage
    assert [fast.join_point(*w) for w in windows] == [reference.join_point(*w) for w in windows]
    assert [fast.earliest_join_point(*w) for w in windows] == [reference.earliest_join_point(*w) for w in windows]
    assert list(fast._psi_history) == list(reference._psi_history)


class Mux:
    """A tiny TS muxer for what ffmpeg never writes: each case the skipping scan must not skip."""

    VIDEO, AUDIO, PMT = 0x100, 0x101, 0x1000

    def __init__(self) -> None:
        self.out = bytearray()
        self.cc: dict[int, int] = {}

    def _packet(self, pid: int, payload: bytes, pusi: bool, rai: bool = False) -> None:
        cc = self.cc.get(pid, 0)
        self.cc[pid] = (cc + 1) % 16
        room = 184 - len(payload)
        if room == 0 and not rai:
            self.out += bytes([0x47, (0x40 if pusi else 0) | pid >> 8, pid & 0xFF, 0x10 | cc]) + payload
            return
        if room < 2:  # an adaptation field needs two bytes at least: carry less
            raise ValueError("payload too long for an adaptation field")
        field = bytes([room - 1, 0x40 if rai else 0]) + b"\xff" * (room - 2)
        self.out += bytes([0x47, (0x40 if pusi else 0) | pid >> 8, pid & 0xFF, 0x30 | cc]) + field + payload

    def _split(self, pid: int, data: bytes, rai: bool = False, fill: bytes | None = None) -> None:
        first = True
        while data:
            size = 184 if len(data) >= 184 and not (first and rai) else min(len(data), 182)
            chunk, data = data[:size], data[size:]
            if fill is not None and len(chunk) < 184:
                chunk += fill * (184 - len(chunk))  # PSI stuffing
            self._packet(pid, chunk, first, rai and first)
            first = False

    def psi(self, extra_streams: int = 0, audio_between: bool = False) -> None:
        pat = bytes([0x00, 0xB0, 13, 0, 1, 0xC1, 0, 0, 0, 1, 0xE0 | self.PMT >> 8, self.PMT & 0xFF]) + bytes(4)
        self._split(0, b"\x00" + pat, fill=b"\xff")
        if audio_between:
            self.audio()
        streams = bytes([0x1B, 0xE0 | self.VIDEO >> 8, self.VIDEO & 0xFF, 0xF0, 0])
        for k in range(extra_streams):  # audio streams, each with a language descriptor
            pid = self.AUDIO + k
            streams += bytes([0x0F, 0xE0 | pid >> 8, pid & 0xFF, 0xF0, 6, 0x0A, 4]) + b"eng\x00"
        body = bytes([0, 1, 0xC1, 0, 0, 0xE0 | self.VIDEO >> 8, self.VIDEO & 0xFF, 0xF0, 0]) + streams + bytes(4)
        pmt = bytes([0x02, 0xB0 | len(body) >> 8, len(body) & 0xFF]) + body
        self._split(self.PMT, b"\x00" + pmt, fill=b"\xff")

    def picture(self, *nals: bytes, rai: bool = False) -> int:
        """A video PES of these NAL units; returns the offset of its first packet."""
        at = len(self.out)
        es = b"".join(b"\x00\x00\x01" + n for n in nals)
        self._split(self.VIDEO, b"\x00\x00\x01\xe0\x00\x00\x80\x80\x05\x21\x00\x01\x00\x01" + es, rai=rai)
        return at

    def audio(self) -> None:
        self._split(self.AUDIO, b"\x00\x00\x01\xc0\x00\x00\x80\x80\x05\x21\x00\x01\x00\x01" + bytes(300))

    def random_access_indicator_alone(self) -> None:
        """An adaptation-only video packet with random_access_indicator: the next PES starts an access point."""
        self.out += bytes([0x47, self.VIDEO >> 8, self.VIDEO & 0xFF, 0x20 | self.cc.get(self.VIDEO, 0)])
        self.out += bytes([183, 0x40]) + b"\xff" * 182


SEI, SPS, IDR, SLICE = b"\x06" + bytes(600), b"\x67" + bytes(20), b"\x65" + bytes(900), b"\x41" + bytes(700)


def _synthetic() -> tuple[bytes, list[int]]:
    """PAT/PMT runs, keyframes whose IDR slice is packets in (after a long SEI, no SPS before
    it), an access point marked only on an adaptation-only packet before a plain slice, and a
    PMT of two packets, sent apart from its PAT; returns the stream and where a viewer may start.
    Audio packets end a PAT/PMT run, after which the scan skips what it may."""
    mux, points = Mux(), []
    for gop in range(6):
        mux.psi(extra_streams=30 if gop % 2 else 0, audio_between=bool(gop % 2))
        if gop % 3 == 0:
            points.append(mux.picture(SEI, IDR))  # found only by scanning on past the first packet
        elif gop % 3 == 1:
            mux.audio()
            mux.random_access_indicator_alone()
            points.append(mux.picture(SLICE))  # the RAI says so, though the slice does not
        else:
            points.append(mux.picture(SPS, IDR, rai=True))
        for _ in range(4):
            mux.audio()
            mux.picture(SLICE)
    return bytes(mux.out), points


def test_skipping_scan_looks_at_every_packet_that_can_matter() -> None:
    data, points = _synthetic()
    reference = EveryPacket()
    reference.feed(data, 0)
    assert reference.random_access_points == points and reference.sync_errors == 0
    assert reference.video_pid == Mux.VIDEO and reference.pmt_pid == Mux.PMT
    rng = random.Random(7)
    for _ in range(20):
        fast = _scan_chunked(data, rng)
        assert fast.random_access_points == points
        assert list(fast._psi_history) == list(reference._psi_history)
        windows = [(0, len(data))] + [tuple(sorted(rng.randrange(len(data) // P + 1) * P for _ in range(2)))
                                      for _ in range(30)]
        assert [fast.join_point(*w) for w in windows] == [reference.join_point(*w) for w in windows]


@pytest.mark.parametrize("name", ["gop25-no-rai", "hevc-no-rai"])
def test_parameter_sets_decide_when_the_picture_nal_is_out_of_reach(
    streams: dict[str, Sample], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sample = _sample(streams, name)
    monkeypatch.setattr(mpegts, "MAX_SCAN_PACKETS", 1)
    assert _scan(sample.data).random_access_points == sample.keyframes


def test_attach_mid_stream(streams: dict[str, Sample]) -> None:
    sample = streams["gop25"]
    start = (sample.keyframes[2] // P - 50) * P
    scanner = TsScanner()
    scanner.feed(sample.data[start:], start)
    assert scanner.random_access_points == [k for k in sample.keyframes if k >= start]


# -- keyframe joins ----------------------------------------------------------


@pytest.mark.parametrize("name", GOP_STREAMS)
def test_join_starts_with_pat_pmt_then_latest_keyframe(streams: dict[str, Sample], name: str) -> None:
    sample = _sample(streams, name)
    scanner = _scan_chunked(sample.data, random.Random(1))
    rng = random.Random(name)
    first_kf = sample.keyframes[-MAX_RANDOM_ACCESS_POINTS:][0]  # older ones are forgotten by design
    packets = len(sample.data) // P
    checked = 0
    for _ in range(80):
        oldest = rng.randrange(first_kf // P, packets) * P
        newest = rng.choice([len(sample.data), rng.randrange(oldest // P + 1, packets + 1) * P])
        jp = scanner.join_point(oldest, newest)
        assert jp is not None
        if _expected_keyframe(sample.keyframes, oldest, newest) is None:
            assert not jp.at_keyframe and jp.offset == newest
            continue
        _check_keyframe_join(sample, jp, oldest, newest, scanner.pmt_pid or -1)
        checked += 1
    assert checked >= 20


@pytest.mark.parametrize("name", GOP_STREAMS)
def test_ffmpeg_decodes_joined_stream_from_first_frame(streams: dict[str, Sample], name: str) -> None:
    sample = _sample(streams, name)
    scanner = _scan(sample.data)
    keyframes = sample.keyframes[-MAX_RANDOM_ACCESS_POINTS:]
    picks = [keyframes[1], keyframes[len(keyframes) // 2], keyframes[-1]]
    if name == "all-intra":  # make sure spliced prefixes get decoded too
        picks += [k for k in keyframes if scanner.join_point(k, k + P).prefix][:2]
    for kf in picks:
        jp = scanner.join_point(kf - P, kf + P)  # as if the buffer held just this keyframe
        assert jp is not None
        body = _check_keyframe_join(sample, jp, kf - P, kf + P, 0x1000)
        frames, stderr = _decode(body)
        assert stderr == ""
        # Every frame from the keyframe on must come out: nothing dropped for a missing reference.
        assert frames == sum(1 for pos in sample.video_packets if pos >= kf)
        assert _ffmpeg_cc_complaints(body) == []


@pytest.mark.parametrize("name", ["gop25", "cbr-remux", "hevc"])
def test_ffmpeg_emits_pat_pmt_before_each_keyframe_so_no_splice(streams: dict[str, Sample], name: str) -> None:
    sample = _sample(streams, name)
    data = sample.data
    scanner = _scan(data)
    video_pid = _video_pid(data)
    for previous_kf, kf in zip(sample.keyframes, sample.keyframes[1:]):
        jp = scanner.join_point(previous_kf + P, kf + P)
        assert jp is not None and jp.prefix == b"" and jp.offset < kf
        pids = packet_pids(data[jp.offset : kf])
        assert pids[:2] == [0, 0x1000]
        between = [
            pid for i, pid in zip(range(jp.offset, kf, P), pids)
            if pid == video_pid and data[i + 3] & 0x10  # video payload before the keyframe
        ]
        assert between == []


def test_all_intra_prefix_copies_line_up_with_next_pat_pmt(streams: dict[str, Sample]) -> None:
    data = streams["all-intra"].data
    scanner = _scan(data)
    spliced = 0
    for kf in streams["all-intra"].keyframes[-MAX_RANDOM_ACCESS_POINTS:]:
        jp = scanner.join_point(kf, kf + P)
        assert jp is not None and jp.offset == kf
        if not jp.prefix:
            continue
        spliced += 1
        for copy_at, pid in ((0, 0), (P, 0x1000)):
            copy = jp.prefix[copy_at : copy_at + P]
            later = next((i for i in range(kf, len(data), P) if packet_pids(data[i : i + P]) == [pid]), None)
            previous = max(i for i in range(0, kf, P) if packet_pids(data[i : i + P]) == [pid])
            if later is not None:
                assert (copy[3] & 0x0F) == ((data[later + 3] & 0x0F) - 1) & 0x0F
            assert copy == data[previous : previous + P]  # content unchanged (single-packet tables)
    assert spliced >= 30  # ffmpeg forced PAT/PMT only before the first of the run of keyframes


def test_newest_bounds_the_choice(streams: dict[str, Sample]) -> None:
    sample = streams["gop25"]
    scanner = _scan(sample.data)
    k1, k2 = sample.keyframes[1], sample.keyframes[2]
    assert scanner.join_point(0, k2).offset == k1 - 2 * P  # the PAT right before k1
    assert scanner.join_point(0, k2 + P).offset == k2 - 2 * P
    # The clean PAT+PMT start is older than the buffer: splice copies instead.
    jp = scanner.join_point(k2 - P, len(sample.data))
    assert jp.offset == sample.keyframes[-1] - 2 * P
    jp = scanner.join_point(sample.keyframes[-1] - P, len(sample.data))
    assert jp.offset == sample.keyframes[-1] and packet_pids(jp.prefix) == [0, 0x1000]
    assert continuity_errors(jp.prefix + sample.data[jp.offset :]) == []


def test_memory_is_bounded(streams: dict[str, Sample]) -> None:
    sample = streams["all-intra"]
    assert len(sample.keyframes) > MAX_RANDOM_ACCESS_POINTS
    scanner = _scan(sample.data)
    assert len(scanner.random_access_points) == MAX_RANDOM_ACCESS_POINTS
    assert scanner.random_access_points == sample.keyframes[-MAX_RANDOM_ACCESS_POINTS:]


# -- fallback ----------------------------------------------------------------


def test_fallback_without_keyframe_in_range(streams: dict[str, Sample]) -> None:
    sample = streams["gop250"]
    data = sample.data
    assert len(sample.keyframes) == 1
    scanner = _scan_chunked(data, random.Random(7))
    assert scanner.join_point(0, len(data)).at_keyframe
    rng = random.Random(250)
    packets = len(data) // P
    for _ in range(25):
        oldest = rng.randrange(sample.keyframes[0] // P + 1, packets) * P
        newest = rng.randrange(oldest // P, packets + 1) * P
        jp = scanner.join_point(oldest, newest)
        assert jp is not None and not jp.at_keyframe
        assert jp.offset == newest
        assert packet_pids(jp.prefix) == [0, 0x1000]
        # The copies' CCs must match the PAT/PMT that were current *at newest*,
        # not the newest ones fed, or the next real PAT/PMT is a CC error.
        body = jp.prefix + data[newest:]
        assert continuity_errors(body) == []
    mid = (packets // 2) * P
    body = scanner.join_point(mid, mid).prefix + data[mid:]
    assert continuity_errors(body) == [] and _ffmpeg_cc_complaints(body) == []


# -- continuity_errors -------------------------------------------------------


def test_continuity_errors_reports_real_problems(streams: dict[str, Sample]) -> None:
    data = streams["gop25"].data
    assert continuity_errors(data) == []
    assert continuity_errors(streams["cbr-remux"].data) == []  # adaptation-only PCR packets keep their CC
    packets = [data[i : i + P] for i in range(0, len(data), P)]
    video_pid = _video_pid(data)
    vid = [i for i, p in enumerate(packets) if packet_pids(p) == [video_pid]]

    dropped = packets[: vid[100]] + packets[vid[100] + 1 :]
    errors = continuity_errors(b"".join(dropped))
    assert len(errors) == 1 and f"pid {video_pid:#x}" in errors[0]

    once = packets[: vid[100]] + [packets[vid[100]]] + packets[vid[100] :]
    assert continuity_errors(b"".join(once)) == []  # one duplicate is legal
    twice = packets[: vid[100]] + [packets[vid[100]]] * 2 + packets[vid[100] :]
    assert len(continuity_errors(b"".join(twice))) == 1

    # Drop the video packet before one with an adaptation field: a
    # discontinuity_indicator there makes the gap legal.
    k = next(i for i in vid if i > vid[100] and packets[i][3] & 0x20 and packets[i][4])
    j = vid[vid.index(k) - 1]
    gap = packets[:j] + packets[j + 1 :]
    assert len(continuity_errors(b"".join(gap))) == 1
    marked = bytearray(packets[k])
    marked[5] |= 0x80
    gap_marked = packets[:j] + packets[j + 1 : k] + [bytes(marked)] + packets[k + 1 :]
    assert continuity_errors(b"".join(gap_marked)) == []

    cbr = streams["cbr-remux"].data
    af_only = next(i for i in range(0, len(cbr), P) if packet_pids(cbr[i : i + P]) == [video_pid] and not cbr[i + 3] & 0x10)
    broken = bytearray(cbr)
    broken[af_only + 3] ^= 0x01
    assert any("without payload" in e for e in continuity_errors(bytes(broken)))
