"""Late joiners start clean: PAT, PMT, then video from a keyframe, decodable from byte 0."""

from __future__ import annotations

import random
import re
import subprocess

from harness import RawViewer, Reader, assert_aligned_ts, files_channel, require_tool, wait_until
from ts_packets_check import (continuity_errors, decoder_complaints, first_video_frame_is_key, packet_pids,
                              pmt_pid_of)


JOIN_BYTES = 120 * 1024


def assert_clean_join(body: bytes, ffmpeg: str, from_start: bool = False) -> None:
    assert_aligned_ts(body)
    pids = packet_pids(body)
    if from_start:  # ffmpeg's own first bytes: its SDT (PID 17), then PAT and PMT
        assert pids[0] == 17
        pids = pids[1:]
        body = body[188:]
    assert pids[0] == 0, f"first packet is PID {pids[0]}, not the PAT"
    assert pids[1] == pmt_pid_of(body), f"second packet is PID {pids[1]}, not the PMT"
    assert first_video_frame_is_key(body), "video does not start at a keyframe"
    assert continuity_errors(body) == []
    assert decoder_complaints(ffmpeg, body, frames=5) == ""


def test_viewers_joining_at_random_moments_start_at_pat_pmt_and_a_keyframe(service):
    ffmpeg = require_tool("ffmpeg")
    rng = random.Random(3)
    keeper = Reader(service)  # keeps the channel live, reading as a player does; its bytes are our clock
    keeper.start()
    for _ in range(12):
        moment = keeper.count + rng.randrange(1, 60 * 1024)  # a random moment later
        wait_until(lambda: keeper.count >= moment, 10, "the stream moving on")
        joiner = RawViewer(service)
        assert_clean_join(joiner.read_body(JOIN_BYTES), ffmpeg)
        joiner.close()
    assert keeper.is_alive(), "the keeper was dropped: the joins did not test a running channel"
    keeper.finish()


def test_a_viewer_who_joins_while_the_channel_starts_gets_its_first_byte(service):
    first, second = RawViewer(service, "2"), RawViewer(service, "2")
    a, b = first.read_body(JOIN_BYTES), second.read_body(JOIN_BYTES)
    assert a == b
    assert_clean_join(a, require_tool("ffmpeg"), from_start=True)
    first.close()
    second.close()


def test_live_join_mode_starts_at_the_live_edge(service_factory):
    service = service_factory(extra='''
[[channel]]
id = "edge"
name = "Edge"
source = "test-pattern"
join = "live"
video_kbps = 600
width = 320
height = 180
''')
    keeper = RawViewer(service, "edge")
    keeper.read_body(64 * 1024)
    starts = set()
    for _ in range(5):
        keeper.read_body(len(keeper.body) + 20 * 1024)
        late = RawViewer(service, "edge")
        body = late.read_body(8 * 188)
        assert_aligned_ts(body)
        starts.add(packet_pids(body)[0])
        late.close()
    keeper.close()
    # At the live edge a joiner lands wherever the stream is: mostly not on a PAT.
    assert starts != {0}


def test_players_play_a_late_joined_stream_without_decode_errors(service):
    mpv, cvlc = require_tool("mpv"), require_tool("cvlc")
    keeper = Reader(service)
    keeper.start()
    wait_until(lambda: keeper.count > 200 * 1024, 10, "the channel running")
    url = service.url("/channels/1.ts")
    played = subprocess.run([mpv, "--no-config", "--vo=null", "--ao=null", "--frames=25",
                             "--msg-level=all=warn", url], capture_output=True, text=True, timeout=60)
    assert played.returncode == 0, played.stdout + played.stderr
    complaints = [l for l in (played.stdout + played.stderr).splitlines() if "error" in l.lower()]
    assert not complaints, complaints
    # VLC refuses to run as root: it plays as nobody.
    played = subprocess.run(["runuser", "-u", "nobody", "--", cvlc, "-I", "dummy", "--no-video-title-show",
                             "--vout=dummy", "--aout=dummy", "--play-and-exit", "--stop-time=1", "-vv", url],
                            capture_output=True, text=True, timeout=60)
    log = played.stdout + played.stderr
    assert played.returncode == 0, log
    decoder_errors = [l for l in log.splitlines()
                      if re.search(r"(avcodec|decoder|packetizer|ts demux) error", l) or "corrupt" in l.lower()]
    assert not decoder_errors, decoder_errors
    assert re.search(r'using .*decoder module "avcodec"', log), "VLC decoded no video:\n" + log[-3000:]
    assert keeper.is_alive(), "the keeper was dropped: the players did not join a running channel"
    keeper.finish()


def assert_late_joins_are_clean(service, channel: str, ffmpeg: str, joins: int = 3) -> None:
    keeper = Reader(service, channel)  # keeps the channel live, as a player would
    keeper.start()
    for _ in range(joins):
        moment = keeper.count + 40 * 1024
        wait_until(lambda: keeper.count >= moment, 10, "the stream moving on")
        joiner = RawViewer(service, channel)
        assert_clean_join(joiner.read_body(40 * 1024), ffmpeg)
        joiner.close()
    assert keeper.is_alive(), "the keeper was dropped: the joins did not test a running channel"
    keeper.finish()


def make_ts(ffmpeg: str, path, extra: list[str], seconds: int = 4) -> None:
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=25", "-f", "lavfi",
                    "-i", "sine", "-t", str(seconds), *extra, *([] if "-f" in extra else ["-f", "mpegts"]), str(path)], check=True)


def test_a_passed_through_mpegts_source_joins_at_its_own_keyframes(service_factory, tmp_path):
    ffmpeg = require_tool("ffmpeg")
    source = tmp_path / "source.ts"
    make_ts(ffmpeg, source, ["-c:v", "libx264", "-preset", "ultrafast", "-g", "20", "-c:a", "aac"])
    service = service_factory(extra=files_channel("copy", source, transcode=False))
    assert_late_joins_are_clean(service, "copy", ffmpeg)


def test_a_source_without_keyframes_falls_back_to_pat_pmt_and_says_so_once(service_factory, tmp_path):
    ffmpeg = require_tool("ffmpeg")
    source = tmp_path / "radio.ts"
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", "sine", "-t", "4", "-c:a", "aac",
                    "-f", "mpegts", str(source)], check=True)
    service = service_factory(extra=files_channel("radio", source, transcode=False))
    mark = service.log_mark()
    keeper = RawViewer(service, "radio")
    keeper.read_body(16 * 1024)
    for _ in range(3):
        keeper.read_body(len(keeper.body) + 4 * 1024)
        joiner = RawViewer(service, "radio")
        body = joiner.read_body(4 * 1024)
        assert packet_pids(body)[:2] == [0, pmt_pid_of(body)]
        assert continuity_errors(body) == []
        joiner.close()
    keeper.close()
    service.wait_for_log(r"channel radio: no keyframe in the buffer", start=mark)
    said = [l for l in service.lines[mark:] if "no keyframe in the buffer" in l]
    assert len(said) == 1, said


def test_a_transcoded_media_file_channel_joins_at_keyframes_too(service_factory, tmp_path):
    ffmpeg = require_tool("ffmpeg")
    clip = tmp_path / "clip.mp4"
    make_ts(ffmpeg, clip, ["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-f", "mp4"], seconds=3)
    service = service_factory(extra=files_channel("movie", clip, video_kbps=400, width=160, height=90))
    assert_late_joins_are_clean(service, "movie", ffmpeg)
