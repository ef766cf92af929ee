"""A scheduled media channel on the air: the programme of the moment, and one seamless stream
across programme changes and the playlist's loop, whatever the sources' sizes and rates."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import time

import schedule_media as media
from harness import RawViewer, Reader, files_channel, require_tool, wait_until
from ts_packets_check import decoder_complaints, strict_ts_problems

from retrovue_air import config

ORDER = ["red", "green", "blue", "yellow", "cyan"]  # green: another size; blue: 30 fps; yellow: 44.1 kHz; cyan: mono
WIDTH, HEIGHT = 320, 180


def decoded_frames(ffmpeg: str, body: bytes, rate: float | None = None) -> list[tuple[float, float]]:
    """(body luma, seconds into the item) of the stream's frames (all, or `rate` a second)."""
    args = ["-vf", f"fps={rate}"] if rate else ["-frames:v", "1"]
    out = subprocess.run([ffmpeg, "-v", "error", "-f", "mpegts", "-i", "-", *args, "-f", "rawvideo",
                          "-pix_fmt", "yuv420p", "-"], input=body, capture_output=True, timeout=120, check=True).stdout
    size = WIDTH * HEIGHT * 3 // 2
    return [media.read_frame(out[i:i + WIDTH * HEIGHT], WIDTH, HEIGHT) for i in range(0, len(out) - size + 1, size)]


def test_a_viewer_gets_the_programme_of_the_moment_and_one_seamless_stream_across_changes(
        service_factory, schedule_media, tmp_path):
    ffmpeg, mpv, cvlc = require_tool("ffmpeg"), require_tool("mpv"), require_tool("cvlc")
    # The epoch puts the second item (green, another frame size) 1.5 s in about 4 s from now.
    epoch = dt.datetime.fromtimestamp(time.time() + 4 - (media.SECONDS + 1.5), dt.timezone.utc)
    service = service_factory(
        extra_top=f'state_dir = "{tmp_path / "state"}"',
        extra=files_channel("tv", *(schedule_media[n] for n in ORDER), video_kbps=400, audio_kbps=64,
                            width=WIDTH, height=HEIGHT, schedule_epoch=f'"{epoch.isoformat()}"'))
    assert not service.ffmpegs(), "an ffmpeg runs before anyone watches"
    schedule = config.load(str(tmp_path / "retrovue-air.toml")).channel("tv").source.schedule

    def in_green_at_1_to_2_s():
        on = schedule.airing_at(time.time())
        return on.programme.path == str(schedule_media["green"]) and 1.0 <= time.time() - on.start <= 2.0
    wait_until(in_green_at_1_to_2_s, 30, "the schedule reaching green at 1-2 s")  # at most one loop

    mark = service.log_mark()
    tuned_in = time.time()
    expected = schedule.airing_at(tuned_in)
    reader = Reader(service, "tv", keep=True)
    reader.start()
    service.wait_for_log(r"channel tv: on air", start=mark, timeout=20)
    # Two players join the running channel and play across changes and the loop too.
    url = service.url("/channels/tv.ts")
    players = [
        subprocess.Popen([mpv, "--no-config", "--vo=null", "--ao=null", "--frames=450", "--msg-level=all=warn", url],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
        # VLC refuses to run as root: it plays as nobody.
        subprocess.Popen(["runuser", "-u", "nobody", "--", cvlc, "-I", "dummy", "--no-video-title-show",
                          "--vout=dummy", "--aout=dummy", "--play-and-exit", "--run-time=18", "-vv", url],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
    ]
    # The viewer reads until the decoder of the 7th airing starts: by then it has green's rest,
    # blue, yellow, cyan, the loop back to red, and green again (decoders run at most ~2 s ahead).
    wait_until(lambda: len(re.findall(r"channel tv: on air", "\n".join(service.lines[mark:]))) >= 7, 60,
               "seven airings on air")
    mpv_log, _ = players[0].communicate(timeout=90)
    vlc_log, _ = players[1].communicate(timeout=90)
    body = reader.finish()
    print(f"longest wait between two reads: {reader.longest_gap:.3f} s over {len(body)} bytes")

    # The programme of the moment, at its offset.
    [(luma, offset)] = decoded_frames(ffmpeg, body)
    assert media.which_item(luma).name == "green", luma
    assert abs(offset - (tuned_in - expected.start + expected.inpoint)) < 0.5, (offset, tuned_in - expected.start)

    # One continuous, clean TS through every change and the loop.
    assert strict_ts_problems(body) == []
    assert decoder_complaints(ffmpeg, body) == ""
    seen = [media.which_item(luma).name for luma, _ in decoded_frames(ffmpeg, body, rate=2)]
    changes = [name for i, name in enumerate(seen) if i == 0 or name != seen[i - 1]]
    assert changes[:6] == ["green", "blue", "yellow", "cyan", "red", "green"], seen

    assert players[0].returncode == 0, mpv_log
    assert not [line for line in mpv_log.splitlines() if "error" in line.lower()], mpv_log
    assert players[1].returncode == 0, vlc_log[-3000:]
    decoder_errors = [line for line in vlc_log.splitlines()
                      if re.search(r"(avcodec|decoder|packetizer|ts demux) error", line) or "corrupt" in line.lower()]
    assert not decoder_errors, decoder_errors
    assert re.search(r'using .*decoder module "avcodec"', vlc_log), "VLC decoded no video:\n" + vlc_log[-3000:]

    service.wait_idle(timeout=10)
    assert not service.ffmpegs(), "an ffmpeg runs after the last viewer left"


def test_a_remuxed_channel_starts_at_the_programme_of_the_moment_at_most_one_gop_early(
        service_factory, schedule_media, tmp_path):
    ffmpeg = require_tool("ffmpeg")
    items = []
    for name in ("red", "cyan"):  # already H.264 + AAC: made MPEG-TS without re-encoding
        items.append(tmp_path / f"{name}-copy.ts")
        subprocess.run([ffmpeg, "-v", "error", "-i", str(schedule_media[name]), "-c", "copy", "-f", "mpegts",
                        str(items[-1])], check=True, timeout=60)
    epoch = dt.datetime.fromtimestamp(time.time() - 1000, dt.timezone.utc)
    service = service_factory(
        extra_top=f'state_dir = "{tmp_path / "state"}"',
        extra=files_channel("copy", *items, transcode=False, schedule_epoch=f'"{epoch.isoformat()}"'))
    schedule = config.load(str(tmp_path / "retrovue-air.toml")).channel("copy").source.schedule

    def in_cyan_at_2_to_3_s():
        on = schedule.airing_at(time.time())
        return on.programme.path == str(items[1]) and 2.0 <= time.time() - on.start <= 3.0
    wait_until(in_cyan_at_2_to_3_s, 30, "the schedule reaching cyan at 2-3 s")
    tuned_in = time.time()
    expected = schedule.airing_at(tuned_in)
    viewer = RawViewer(service, "copy")
    body = viewer.read_body(64 * 1024)
    viewer.close()
    [(luma, offset)] = decoded_frames(ffmpeg, body)
    assert media.which_item(luma).name == "cyan", luma
    moment = tuned_in - expected.start
    assert moment - 1.0 - 0.5 <= offset <= moment + 0.5, (offset, moment)  # the media's GOP is 1 s
    service.wait_idle(timeout=10)
    assert not service.ffmpegs()


def test_a_killed_decoder_or_encoder_does_not_end_the_viewers_stream(service_factory, schedule_media, tmp_path):
    import os
    import signal


    service = service_factory(
        extra_top=f'state_dir = "{tmp_path / "state"}"',
        extra=files_channel("tv", schedule_media["red"], schedule_media["green"], video_kbps=300,
                            width=160, height=90))
    reader = Reader(service, "tv")
    reader.start()
    decoder = int(service.wait_for_log(r"channel tv: on air .* decoder pid (\d+)").group(1))
    mark = service.log_mark()
    os.kill(decoder, signal.SIGKILL)
    service.wait_for_log(r"channel tv: the decoder of .* killed by SIGKILL", start=mark)
    service.wait_for_log(r"channel tv: on air", start=mark)  # the next airing
    encoder = service.channels()["tv"]["ffmpeg_pid"]
    mark = service.log_mark()
    os.kill(encoder, signal.SIGKILL)
    service.wait_for_log(r"channel tv: ffmpeg killed by SIGKILL.*restarting", start=mark)
    service.wait_for_log(r"channel tv: on air", start=mark, timeout=15)
    moment = reader.count + 32 * 1024
    wait_until(lambda: reader.count >= moment, 15, "the viewer's stream going on")
    assert reader.is_alive()
    reader.finish()
    service.wait_idle(timeout=10)
    assert not service.ffmpegs()


def test_the_guide_lists_what_the_schedule_plays_blocks_included(service_factory, schedule_media, tmp_path):
    import xml.etree.ElementTree as ET

    import requests

    from http_front.xmltv import xmltv_time

    now = dt.datetime.now(dt.timezone.utc)
    block_at = (now + dt.timedelta(minutes=30)).strftime("%H:%M")
    service = service_factory(
        extra_top=f'state_dir = "{tmp_path / "state"}"\nguide_hours = 1',
        extra=files_channel("tv", schedule_media["red"], schedule_media["green"])
        + f'[[channel.block]]\nstart = "{block_at}"\ntitle = "Evening"\n'
          f'files = [{{ path = "{schedule_media["blue"]}", title = "Film", season = 1, episode = 3 }}]\n')
    schedule = config.load(str(tmp_path / "retrovue-air.toml")).channel("tv").source.schedule
    asked = time.time()
    guide = ET.fromstring(requests.get(service.url("/xmltv.xml"), timeout=10).content)
    listed = [(p.get("start"), p.get("stop"), p.findtext("title")) for p in guide.iter("programme")
              if p.get("channel") == "tv"]
    # Four-second files: each programme listed is a run of them (at most an hour), named after
    # what it holds, and begins and ends where an airing does.
    airings = schedule.airings(asked - 3 * 3600, asked + 3 * 3600)
    edges = {xmltv_time(a.start) for a in airings} | {xmltv_time(a.end) for a in airings}
    assert 3 <= len(listed) <= 6 and all(start in edges and stop in edges for start, stop, _ in listed)
    assert all(a[1] == b[0] for a, b in zip(listed, listed[1:])), "no gap, no overlap"
    for start, stop, title in listed:
        held = [a.programme.title for a in airings if start <= xmltv_time(a.start) < stop]
        assert title == ", ".join(dict.fromkeys(held)), (start, stop, title)
    assert all({"Red Show", "Green Show"} <= set(title.split(", ")) for _, _, title in listed)
    assert any("Film" in title for _, _, title in listed), "the block is named where it airs"
    assert not service.ffmpegs(), "the guide ran an ffmpeg"
