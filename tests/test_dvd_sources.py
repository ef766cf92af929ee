"""DVD and broadcast MPEG-PS files play: their decoder hands picture and sound over in step
however the file interleaves them, and a channel of them plays on, across its item change,
with no gap and a clean decode."""

from __future__ import annotations

import array
import datetime as dt
import math
import os
import select
import subprocess
import time

import dvd_media
import pytest
from harness import Reader, files_channel, require_tool, wait_until
from ts_packets_check import decoder_complaints, strict_ts_problems

from air_worker.ffmpeg_command import decoder_command
from air_worker.playout import raw_pipe
from retrovue_air import config
from retrovue_air.ffmpeg.binary import ffmpeg_binary
from retrovue_air.ffmpeg.profile import AUDIO_RATE
from retrovue_air.config import Channel, MediaFiles
from retrovue_air.schedule import Programme, Schedule

WIDTH, HEIGHT, FPS = 640, 360, 25  # the default channel: a 1 MiB pipe holds 3 of its pictures


@pytest.fixture(scope="module")
def dvd_files(tmp_path_factory):
    ffmpeg, ffprobe = require_tool("ffmpeg"), require_tool("ffprobe")
    folder = tmp_path_factory.mktemp("dvd-media")
    files = {"dvd": dvd_media.make_dvd(folder, ffmpeg), "worst": dvd_media.make_worst(folder, ffmpeg)}
    # What makes the second one the hard case: its sound lies seconds after its picture.
    assert dvd_media.audio_lag_in_file(ffprobe, files["worst"]) > 3.0
    return files


def read_in_step(video_fd: int, audio_fd: int, frames: int, samples: int, patience: float = 20.0) -> None:
    """Read a decoder's two pipes as an encoder does: never more than 0.2 s of one ahead of the
    other. A decoder that offers only the stream we are ahead on has stalled us for good."""
    frame_bytes, sample_bytes = WIDTH * HEIGHT * 3 // 2, 4
    got = {video_fd: 0, audio_fd: 0}
    want = {video_fd: frames * frame_bytes, audio_fd: samples * sample_bytes}
    while got[video_fd] < want[video_fd] or got[audio_fd] < want[audio_fd]:
        video_time = got[video_fd] / frame_bytes / FPS
        audio_time = got[audio_fd] / sample_bytes / AUDIO_RATE
        if got[audio_fd] >= want[audio_fd] or (got[video_fd] < want[video_fd] and video_time <= audio_time + 0.2):
            fd = video_fd
        else:
            fd = audio_fd
        ready, _, _ = select.select([fd], [], [], patience)
        assert ready, (f"stalled: waited {patience:g} s for {'video' if fd == video_fd else 'audio'} at "
                       f"video {video_time:.2f} s, audio {audio_time:.2f} s")
        data = os.read(fd, 1 << 16)
        assert data, f"the decoder ended early: video {video_time:.2f} s, audio {audio_time:.2f} s"
        got[fd] += len(data)
    assert got == want


@pytest.mark.parametrize("name, inpoint", [("dvd", 0.0), ("worst", 0.0), ("worst", 5.0)])
def test_a_decoder_hands_picture_and_sound_over_in_step_however_the_file_interleaves_them(
        dvd_files, name, inpoint):
    path = str(dvd_files[name])
    channel = Channel("tv", "TV", MediaFiles((path,), Schedule((Programme(path, 20.0, name),))),
                      width=WIDTH, height=HEIGHT, fps=FPS)
    frames, samples = 10 * FPS, 10 * AUDIO_RATE
    video_r, video_w = raw_pipe()
    audio_r, audio_w = raw_pipe()
    cmd = decoder_command(channel, ffmpeg_binary(), path, inpoint, frames, samples, video_w, audio_w)
    decoder = subprocess.Popen(cmd, pass_fds=(video_w, audio_w), stderr=subprocess.PIPE)
    os.close(video_w)
    os.close(audio_w)
    try:
        read_in_step(video_r, audio_r, frames, samples)
        assert decoder.wait(timeout=20) == 0, decoder.stderr.read().decode(errors="replace")
    finally:
        decoder.kill()
        decoder.wait()
        decoder.stderr.close()
        os.close(video_r)
        os.close(audio_r)


def loudness_per_second(ffmpeg: str, body: bytes) -> list[float]:
    """The RMS of the stream's sound (mono, 8 kHz) in each whole second."""
    rate = 8000
    raw = subprocess.run([ffmpeg, "-v", "error", "-f", "mpegts", "-i", "-", "-map", "0:a:0", "-ac", "1",
                          "-ar", str(rate), "-f", "s16le", "-"], input=body, capture_output=True, timeout=120,
                         check=True).stdout
    samples = array.array("h", raw[:len(raw) // 2 * 2])
    return [math.sqrt(sum(s * s for s in samples[i:i + rate]) / rate)
            for i in range(0, len(samples) - rate + 1, rate)]


def test_a_dvd_channel_plays_across_its_item_change_with_no_gap_and_a_clean_decode(
        service_factory, dvd_files, tmp_path):
    ffmpeg = require_tool("ffmpeg")
    dvd, worst = dvd_files["dvd"], dvd_files["worst"]
    probe_state = f'state_dir = "{tmp_path / "state"}"'
    # The worst file is 5 s in (a seek into it) about 8 s from now; the DVD follows 15 s later.
    epoch = dt.datetime.fromtimestamp(time.time() + 8 - (dvd_media.SECONDS + 5), dt.timezone.utc)
    service = service_factory(
        extra_top=probe_state,
        extra=files_channel("dvd", dvd, worst, video_kbps=400, audio_kbps=64, width=WIDTH, height=HEIGHT,
                            schedule_epoch=f'"{epoch.isoformat()}"'))
    schedule = config.load(str(tmp_path / "retrovue-air.toml")).channel("dvd").source.schedule

    def in_worst_at_4_to_6_s():
        on = schedule.airing_at(time.time())
        return on.programme.path == str(worst) and 4.0 <= time.time() - on.start <= 6.0
    wait_until(in_worst_at_4_to_6_s, 45, "the schedule reaching the worst file at 4-6 s")

    mark = service.log_mark()
    reader = Reader(service, "dvd", keep=True)
    reader.start()
    began = time.monotonic()
    while time.monotonic() - began < 45:
        assert reader.is_alive(), "the stream ended"
        time.sleep(0.5)
    body = reader.finish()
    said = "\n".join(service.lines[mark:])
    print(f"longest wait between two reads: {reader.longest_gap:.3f} s over {len(body)} bytes")

    assert "on air worst from" in said and "on air dvd from" in said, said
    assert reader.longest_gap < 1.0
    assert strict_ts_problems(body) == []
    assert decoder_complaints(ffmpeg, body) == ""
    loudness = loudness_per_second(ffmpeg, body)
    assert len(loudness) >= 44, f"{len(loudness)} s of sound in 45 s"
    assert min(loudness) > 500, [round(x) for x in loudness]  # both tones throughout, no silence
    service.wait_idle(timeout=10)
    assert not service.ffmpegs()
