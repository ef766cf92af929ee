"""The scheduled channel's commands: a decoder per airing into raw pipes, one encoder, a copy playlist;
and one real decoder run that writes exactly the frames and samples asked for."""

from __future__ import annotations

import os
import subprocess

from air_worker.ffmpeg_command import airing_list, build_command, decoder_command, encoder_command
from air_worker.playout import raw_pipe
from retrovue_air.config import Channel, MediaFiles
from retrovue_air.ffmpeg.binary import ffmpeg_binary
from retrovue_air.schedule import Airing, Programme, Schedule

A = Programme("/m/a.mkv", 10.0, "A")
B = Programme("/m/it's.mp4", 20.0, "B")


def scheduled(**kw) -> Channel:
    return Channel(**{"id": "tv", "name": "TV", "source": MediaFiles((A.path, B.path), Schedule((A, B))), **kw})


def value_after(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


def test_the_encoder_reads_raw_video_and_audio_from_the_given_pipes_in_real_time():
    cmd = encoder_command(scheduled(width=320, height=180, fps=30), "ffmpeg", 7, 9)
    assert cmd.count("-re") == 2 and "pipe:7" in cmd and "pipe:9" in cmd
    assert value_after(cmd, "-video_size") == "320x180" and value_after(cmd, "-framerate") == "30"
    assert value_after(cmd, "-pix_fmt") == "yuv420p" and value_after(cmd, "-ar") == "48000"
    assert value_after(cmd, "-f") != "mpegts" and "mpegts" in cmd and cmd[-1] == "pipe:1" and "libx264" in cmd


def test_a_decoder_seeks_only_when_it_starts_inside_its_file_and_counts_frames_and_samples():
    first = decoder_command(scheduled(), "ffmpeg", A.path, 3.25, 170, 326400, 5, 6)
    # The file opened twice, picture from the first demuxer, sound from the second: both seek.
    inputs = [i for i, arg in enumerate(first) if arg == "-i"]
    assert [first[i + 1] for i in inputs] == [A.path, A.path]
    assert [first[i - 2:i] for i in inputs] == [["-ss", "3.250"]] * 2
    assert value_after(first, "-map") == "0:v:0" and "1:a:0" in first
    assert "trim=end_frame=170" in value_after(first, "-vf") and "atrim=end_sample=326400" in value_after(first, "-af")
    assert "pipe:5" in first and "pipe:6" in first and "anullsrc" not in " ".join(first)
    whole = decoder_command(scheduled(), "ffmpeg", A.path, 0.0, 250, 480000, 5, 6, has_audio=False)
    assert "-ss" not in whole and value_after(whole, "-map") == "0:v:0" and "1:a:0" in whole


def test_a_file_shorter_than_its_slot_is_one_looping_decoder_and_one_copy_entry_per_pass():
    still = Programme("/m/still.ts", 0.25, "Still")  # a slot of four passes
    cmd = decoder_command(scheduled(), "ffmpeg", still.path, 0.1, 25, 48000, 5, 6, passes=5)
    assert cmd.index("-stream_loop") < cmd.index("-i") and value_after(cmd, "-stream_loop") == "4"
    loops = [i for i, arg in enumerate(cmd) if arg == "-stream_loop"]
    assert len(loops) == 2 and loops[1] > cmd.index("-i")  # the sound's demuxer loops as the picture's
    assert "trim=end_frame=25" in value_after(cmd, "-vf")
    assert "-stream_loop" not in decoder_command(scheduled(), "ffmpeg", A.path, 0.0, 25, 48000, 5, 6)
    text = airing_list([Airing(still, 100.0, 101.0, 0.35)], {still.path: 1.4})
    assert text == ("ffconcat version 1.0\n"
                    "file '/m/still.ts'\ninpoint 1.500000\noutpoint 1.650000\nduration 0.150000\n"
                    + "file '/m/still.ts'\noutpoint 1.650000\nduration 0.250000\n" * 3
                    + "file '/m/still.ts'\noutpoint 1.500000\nduration 0.100000\n")


def test_the_copy_playlist_cuts_each_airing_to_its_place():
    text = airing_list([Airing(A, 100.0, 105.0, 5.0), Airing(B, 105.0, 125.0)])
    assert text == ("ffconcat version 1.0\n"
                    "file '/m/a.mkv'\ninpoint 5.000000\noutpoint 10.000000\nduration 5.000000\n"
                    "file '/m/it'\\''s.mp4'\noutpoint 20.000000\nduration 20.000000\n")
    shifted = airing_list([Airing(A, 100.0, 105.0, 5.0)], {A.path: 1.4})  # an MPEG-TS starting at 1.4 s
    assert "inpoint 6.400000\noutpoint 11.400000\n" in shifted
    cmd = build_command(scheduled(transcode=False), "ffmpeg", "/run/p.ffconcat")
    assert "-stream_loop" not in cmd and value_after(cmd, "-i") == "/run/p.ffconcat" and value_after(cmd, "-c") == "copy"


def test_a_real_decoder_writes_exactly_the_frames_and_samples_of_its_airing(schedule_media, tmp_path):
    channel = scheduled(width=160, height=90, fps=25)
    video = tmp_path / "video.raw"
    audio = tmp_path / "audio.raw"
    with open(video, "wb") as v, open(audio, "wb") as a:
        # cyan is mono, 4 s long: ask for 6 s from 1.5 s in, so picture and sound are padded.
        cmd = decoder_command(channel, ffmpeg_binary(), str(schedule_media["cyan"]), 1.5, 150, 288000,
                              v.fileno(), a.fileno())
        run = subprocess.run(cmd, pass_fds=(v.fileno(), a.fileno()), capture_output=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert os.path.getsize(video) == 150 * 160 * 90 * 3 // 2
    assert os.path.getsize(audio) == 288000 * 2 * 2


def test_raw_pipes_are_made_large():
    r, w = raw_pipe()
    try:
        import fcntl
        assert fcntl.fcntl(w, 1032) >= 65536  # F_GETPIPE_SZ
    finally:
        os.close(r)
        os.close(w)
