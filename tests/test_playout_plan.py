"""What a scheduled channel puts in each slot when its file cannot fill it, decided without a process."""

from __future__ import annotations

import os

import pytest

from air_worker.ffmpeg_command import slate_command
from air_worker.slots import FileChecks, Piece, Playable, pieces
from retrovue_air import media_info
from retrovue_air.config import Channel, MediaFiles
from retrovue_air.schedule import Airing, Programme

SHOW = Programme("/m/show.mkv", 600.0, "Show")


def test_a_whole_file_fills_its_slot_from_the_streams_start():
    on = Airing(SHOW, 1000.0, 1600.0, 0.0)
    assert pieces(on, 1100.0, Playable(600.0)) == [Piece(on, 1100.0, 1600.0, 100.0)]
    assert pieces(on, 900.0, Playable(600.0)) == [Piece(on, 1000.0, 1600.0, 0.0)]


def test_a_missing_file_is_a_slate_of_exactly_its_slot():
    on = Airing(SHOW, 1000.0, 1600.0, 0.0)
    assert pieces(on, 1100.0, Playable(0.0, "gone")) == [Piece(on, 1100.0, 1600.0, 100.0, "gone")]


def test_a_file_shorter_than_scheduled_plays_then_a_slate_covers_the_rest_of_its_slot():
    on = Airing(SHOW, 1000.0, 1600.0, 0.0)
    assert pieces(on, 1000.0, Playable(250.0, "short")) == [
        Piece(on, 1000.0, 1250.0, 0.0), Piece(on, 1250.0, 1600.0, 250.0, "short")]
    late = pieces(on, 1300.0, Playable(250.0, "short"))  # tuned in after the file ran out
    assert late == [Piece(on, 1300.0, 1600.0, 300.0, "short")]
    resumed = Airing(SHOW, 2000.0, 2300.0, 300.0)  # the loop resuming mid-file after a block
    assert pieces(resumed, 2000.0, Playable(400.0, "short")) == [
        Piece(resumed, 2000.0, 2100.0, 300.0), Piece(resumed, 2100.0, 2300.0, 400.0, "short")]


def test_a_shortfall_under_a_second_is_left_to_the_held_last_picture():
    on = Airing(SHOW, 1000.0, 1600.0, 0.0)
    assert pieces(on, 1000.0, Playable(599.5, "short")) == [Piece(on, 1000.0, 1600.0, 0.0)]


def test_a_file_is_checked_against_its_probe_and_probed_again_only_when_it_changed(tmp_path):
    path = tmp_path / "a.ts"
    path.write_bytes(b"x" * 100)
    st = os.stat(path)
    programme = Programme(str(path), 60.0, "A", identity=(st.st_size, st.st_mtime_ns))
    probes = []

    def probe(p):
        probes.append(p)
        return media_info.MediaInfo(duration=12.0, has_audio=True)

    files = FileChecks(probe)
    assert files.playable(programme) == Playable(60.0) and probes == []
    path.write_bytes(b"x" * 50)  # truncated while the service runs
    short = files.playable(programme)
    assert short.seconds == 12.0 and str(path) in short.why and "12.0 s of the 60.0 s" in short.why
    assert files.playable(programme) == short and len(probes) == 1  # once per version of the file
    path.unlink()
    gone = files.playable(programme)
    assert gone.seconds == 0.0 and "missing" in gone.why and str(path) in gone.why
    os.mkdir(path)
    assert files.playable(programme).seconds == 0.0


def test_a_changed_file_ffprobe_cannot_read_plays_nothing(tmp_path):
    path = tmp_path / "a.ts"
    path.write_bytes(b"x")

    def probe(p):
        raise media_info.ProbeError("ffprobe cannot read it: Invalid data found")

    checked = FileChecks(probe).playable(Programme(str(path), 60.0, "A", identity=(99, 0)))
    assert checked.seconds == 0.0 and "Invalid data" in checked.why


def test_the_slate_is_exact_frames_and_samples_of_black_with_the_names_and_no_free_text():
    channel = Channel("tv", "Tv: it's [on]", MediaFiles(()), width=320, height=180, fps=30)
    cmd = slate_command(channel, "ffmpeg", "Film; 'x'", 90, 144000, 7, 8, "/f.ttf")
    video, audio = cmd[cmd.index("-i") + 1], cmd[len(cmd) - cmd[::-1].index("-i")]
    assert video.startswith("color=c=black:s=320x180:r=30,") and video.endswith("trim=end_frame=90")
    assert "text=Tv it s on:" in video and "text=Film x:" in video and "text=back shortly:" in video
    assert audio == "anullsrc=r=48000:cl=stereo,atrim=end_sample=144000"
    assert "pipe:7" in cmd and "pipe:8" in cmd
    assert "drawtext" not in " ".join(slate_command(channel, "ffmpeg", "Film", 1, 1, 7, 8, None))


def test_the_remux_playlist_lists_a_slate_clip_as_often_as_its_gap_needs_and_keeps_every_time():
    from air_worker.ffmpeg_command import remux_list
    from air_worker.remux_slate import SlateClip

    on, after = Airing(SHOW, 1000.0, 1600.0, 0.0), Airing(Programme("/m/b.ts", 30.0, "B"), 1600.0, 1630.0)
    parts = [*pieces(on, 1000.0, Playable(595.0, "short")), *pieces(after, 1000.0, Playable(0.0, "gone"))]
    clip = SlateClip(9, "/dev/fd/9", 0.1, 2.0)
    text = remux_list(parts, {SHOW.path: 1.4}, {"Show": clip, "B": clip})
    assert text.startswith("ffconcat version 1.0\nfile '/m/show.mkv'\noutpoint 596.400000\nduration 595.000000\n"
                           "file '/dev/fd/9'\noutpoint 2.100000\nduration 2.000000\n")
    durations = [float(line.split()[1]) for line in text.splitlines() if line.startswith("duration")]
    assert abs(sum(durations) - 630.0) < 1e-6 and len(durations) == 1 + 3 + 15  # 5 s and 30 s of 2 s clips
    assert text.count("file '/dev/fd/9'") == 18 and "outpoint 1.100000\nduration 1.000000\n" in text
    # No clip (a codec we cannot encode): the gap is silence, the next entry still on its time.
    silent = remux_list(parts, {SHOW.path: 1.4}, {})
    assert silent == ("ffconcat version 1.0\nfile '/m/show.mkv'\noutpoint 596.400000\nduration 630.000000\n")


def test_a_remux_slate_is_encoded_like_the_files_it_stands_in_for():
    from air_worker.ffmpeg_command import slate_clip_command
    from air_worker.remux_slate import StreamFormat, parse_stream_format

    fmt = parse_stream_format('{"streams": [{"codec_type": "video", "codec_name": "h264", "width": 1920, '
                              '"height": 1080, "r_frame_rate": "30000/1001", "pix_fmt": "yuv420p"}, '
                              '{"codec_type": "audio", "codec_name": "ac3", "sample_rate": "48000", "channels": 6}]}')
    assert fmt == StreamFormat(("h264", 1920, 1080, "30000/1001", "yuv420p"), ("ac3", 48000, 6))
    assert parse_stream_format('{"streams": []}') is None and parse_stream_format("junk") is None
    channel = Channel("tv", "TV", MediaFiles(()))
    cmd = " ".join(slate_clip_command(channel, "ffmpeg", "Film", fmt, 2.0, None))
    assert "color=c=black:s=1920x1080:r=30000/1001,format=yuv420p" in cmd and "-c:v libx264" in cmd
    assert "anullsrc=r=48000" in cmd and "-c:a ac3 -ac 6" in cmd and cmd.endswith("-t 2.000 -f mpegts "
                                                                                  "-muxdelay 0 -muxpreload 0 pipe:1")
    radio = " ".join(slate_clip_command(channel, "ffmpeg", "Film", StreamFormat(None, ("mp2", 44100, 2)), 2.0, None))
    assert "color" not in radio and "-map 0:a -c:a mp2" in radio
    assert slate_clip_command(channel, "ffmpeg", "Film", StreamFormat(("vp9", 1, 1, "25/1", "yuv420p"), None),
                              2.0, None) is None


def test_from_the_ingest_cache_a_short_file_is_listed_per_pass_and_rounding_to_frames_never_adds_up():
    from air_worker.cached_playout import cached_airing_list
    from retrovue_air.house_format import CachedFile, HouseFormat

    fmt = HouseFormat(width=320, height=180, fps=25, gop=25, video_kbps=400, audio_kbps=64)
    sting, show = Programme("/m/sting.mp4", 0.3, "Sting"), Programme("/m/show.mp4", 10.0, "Show")  # 7.5 frames
    entries = {sting.path: CachedFile("/c/sting.ts", 0.0, 0.0), show.path: CachedFile("/c/show.ts", 0.0, 0.0)}
    airings = [Airing(sting, 100.0, 101.2), Airing(show, 101.2, 111.2), Airing(sting, 111.2, 112.4)]
    lines = cached_airing_list(airings, entries, fmt).splitlines()
    assert lines.count("file '/c/sting.ts'") == 8 and lines.count("file '/c/show.ts'") == 1
    durations = [float(line.split()[1]) for line in lines if line.startswith("duration")]
    assert sum(durations[:4]) == pytest.approx(1.2) and durations[4] == pytest.approx(10.0)
    assert sum(durations) == pytest.approx(12.4)  # every change on its frame, however many passes


def test_gaps_of_titles_without_a_clip_of_their_own_share_the_untitled_slate():
    from air_worker.ffmpeg_command import remux_list, slate_picture
    from air_worker.remux_slate import SlateClip

    gone = Airing(Programme("/m/c.ts", 3.0, "C"), 0.0, 3.0)
    text = remux_list(pieces(gone, 0.0, Playable(0.0, "gone")), {}, {"": SlateClip(4, "/dev/fd/4", 0.0, 2.0)})
    assert text.count("file '/dev/fd/4'") == 2
    untitled = slate_picture("TV", "", "320x180", "25", "/f.ttf")
    assert untitled.count("drawtext") == 2 and "text=back shortly" in untitled
