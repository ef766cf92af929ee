"""What plays when a file cannot: the guide's slots hold, a slate covers a missing airing, a silent
stream still finds the viewers who left, and a file too short for its own decoder fills a slot."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
import schedule_media as media
from harness import RawViewer, Reader, files_channel, require_tool, wait_until
from test_scheduled_playout import decoded_frames
from ts_packets_check import strict_ts_problems

from retrovue_air import config

SLATE_LUMA_BELOW = 28  # the slate's body is black (16); the darkest item, blue, is 41


def shown(luma: float) -> str:
    return "slate" if luma < SLATE_LUMA_BELOW else media.which_item(luma).name


def guide_mismatches(frames, rate: float, wall0: float, schedule, names: dict[str, str],
                     slated: dict[str, float] = {}, margin: float = 0.3) -> tuple[list, int]:
    """Frames (at `rate` a second from the wall time wall0) whose picture is not what the guide
    has on at that moment, or the slate where `slated` says (path: seconds into the airing it
    starts at); frames within `margin` of a change are not judged. Also how many were."""
    bad, judged = [], 0
    for i, (luma, _) in enumerate(frames):
        t = wall0 + i / rate
        on = schedule.airing_at(t)
        slate_at = on.start + slated.get(on.programme.path, on.end - on.start)
        if min(abs(t - on.start), abs(t - on.end), abs(t - slate_at)) < margin:
            continue
        judged += 1
        expected = "slate" if t >= slate_at else names[on.programme.path]
        if shown(luma) != expected:
            bad.append((round(t - wall0, 2), shown(luma), expected))
    return bad, judged


def epoch_in(seconds: float) -> str:
    return '"' + dt.datetime.fromtimestamp(time.time() + seconds, dt.timezone.utc).isoformat() + '"'


def test_a_file_deleted_while_the_channel_plays_is_covered_by_a_slate_and_the_rest_stays_on_the_guide(
        service_factory, schedule_media, tmp_path):
    ffmpeg = require_tool("ffmpeg")
    order = ["red", "green", "blue", "yellow"]
    copies = {name: tmp_path / schedule_media[name].name for name in order}
    for name, path in copies.items():
        shutil.copy(schedule_media[name], path)
    # No cold-start burst: the decoders then run at most ~2.5 s ahead of the clock, so blue's
    # (8 s after red's start) has not started when blue is deleted.
    service = service_factory(
        extra_top=f'state_dir = "{tmp_path / "state"}"',
        extra=files_channel("tv", *copies.values(), video_kbps=400, audio_kbps=64, width=320, height=180,
                            join_burst_seconds=0, schedule_epoch=epoch_in(4)))
    schedule = config.load(str(tmp_path / "retrovue-air.toml")).channel("tv").source.schedule
    names = {str(path): name for name, path in copies.items()}
    wait_until(lambda: names[schedule.airing_at(time.time()).programme.path] == "red"
               and time.time() - schedule.airing_at(time.time()).start < 0.5, 25, "red's first half second")
    mark = service.log_mark()
    tuned_in = time.time()
    expected = schedule.airing_at(tuned_in)
    reader = Reader(service, "tv", keep=True)
    reader.start()
    wait_until(lambda: reader.count > 0, 15, "the first stream bytes")
    copies["blue"].unlink()
    # Two loops: the airing after them is the ninth put on air.
    wait_until(lambda: len(re.findall(r"channel tv: (on air|slate)", "\n".join(service.lines[mark:]))) >= 9,
               45, "two loops on air")
    body = reader.finish()

    [(luma, offset)] = decoded_frames(ffmpeg, body)
    assert shown(luma) == "red", luma
    wall0 = expected.start + offset
    rate = 4
    frames = decoded_frames(ffmpeg, body, rate=rate)
    bad, judged = guide_mismatches(frames, rate, wall0, schedule, names, slated={str(copies["blue"]): 0.0})
    print(f"{judged - len(bad)} of {judged} quarter-second frames as the guide says")
    assert judged > 20 * rate and not bad, bad[:20]
    assert strict_ts_problems(body) == []
    service.wait_for_log(r"channel tv: slate for Blue Show .*blue\.mp4.*(missing|No such file)", start=mark)
    service.wait_idle(timeout=10)


def make_clip(ffmpeg: str, path: Path, seconds: float, like: str) -> Path:
    """An H.264 + AAC MPEG-TS in the colour of schedule item `like`, its strip ramping over `seconds`."""
    item = next(i for i in media.ITEMS if i.name == like)
    cb, cr = media.CHROMA[like]
    rows = media.STRIP_ROWS
    ramp = (f"geq=lum='if(lt(Y,H*{rows}),16+219*T/{seconds},{item.luma})'"
            f":cb='if(lt(Y,H*{rows}),128,{cb})':cr='if(lt(Y,H*{rows}),128,{cr})'")
    subprocess.run([ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", f"color=c=black:s=320x180:r=25:d={seconds},"
                    f"format=yuv420p,{ramp}", "-f", "lavfi", "-i", f"sine=frequency={item.tone}:d={seconds}",
                    "-ac", "2", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-c:a", "aac",
                    "-shortest", "-metadata", f"title={like.title()} Show", "-f", "mpegts", str(path)],
                   check=True, timeout=120)
    return path


def test_a_remuxed_file_cut_short_after_its_probe_is_covered_by_a_slate_and_the_next_airs_on_its_second(
        service_factory, tmp_path):
    ffmpeg = require_tool("ffmpeg")
    red = make_clip(ffmpeg, tmp_path / "red.ts", 20.0, "red")
    cyan = make_clip(ffmpeg, tmp_path / "cyan.ts", 4.0, "cyan")
    service = service_factory(
        extra_top=f'state_dir = "{tmp_path / "state"}"',
        extra=files_channel("copy", red, cyan, transcode=False, schedule_epoch=epoch_in(7)))
    schedule = config.load(str(tmp_path / "retrovue-air.toml")).channel("copy").source.schedule
    # Probed at 20 s; now only its first 3 s are left.
    subprocess.run([ffmpeg, "-v", "error", "-i", str(red), "-t", "3", "-c", "copy", "-f", "mpegts",
                    str(tmp_path / "short.ts")], check=True, timeout=60)
    os.replace(tmp_path / "short.ts", red)
    names = {str(red): "red", str(cyan): "cyan"}
    wait_until(lambda: names[schedule.airing_at(time.time()).programme.path] == "red"
               and 1.0 <= time.time() - schedule.airing_at(time.time()).start <= 1.5, 30, "red at 1 s")
    mark = service.log_mark()
    on = schedule.airing_at(time.time())
    reader = Reader(service, "copy", keep=True)
    reader.start()
    after = schedule.airing_at(on.end)
    burst = 6.0  # join_burst_seconds: the remux makes that much at once, then runs in real time
    wait_until(lambda: time.time() > after.end - burst + 1.5, 40, "cyan sent whole, by the schedule's clock")
    body = reader.finish()
    print(f"longest wait between two reads: {reader.longest_gap:.2f} s over {len(body)} bytes")

    [(luma, strip)] = decoded_frames(ffmpeg, body)
    assert shown(luma) == "red", luma
    rate = 4
    wall0 = on.start + strip * 20.0 / media.SECONDS  # red's ramp runs over its 20 s
    frames = decoded_frames(ffmpeg, body, rate=rate)
    bad, judged = guide_mismatches(frames, rate, wall0, schedule, names, slated={str(red): 3.0})
    print(f"{judged - len(bad)} of {judged} quarter-second frames as the guide says")
    assert judged > 18 * rate and not bad, bad[:20]
    assert reader.longest_gap < 1.0
    assert strict_ts_problems(body) == []
    service.wait_for_log(r"channel copy: .*slate.*red\.ts changed since it was probed", start=mark)
    service.wait_idle(timeout=10)


def test_while_a_stream_is_silent_a_viewer_who_left_is_found_and_the_one_who_stays_gets_null_packets(
        service_factory, tmp_path):
    ffmpeg = require_tool("ffmpeg")
    clip = make_clip(ffmpeg, tmp_path / "red.ts", 8.0, "red")
    service = service_factory(extra_top=f'state_dir = "{tmp_path / "state"}"',
                              extra=files_channel("copy", clip, transcode=False))
    front = service.front.pid
    stays, leaves = Reader(service, "copy", keep=True), RawViewer(service, "copy")
    stays.start()
    leaves.read_body(64 * 1024)
    assert service.channels()["copy"]["viewers"] == 2
    remux = service.channels()["copy"]["ffmpeg_pid"]
    os.kill(remux, signal.SIGSTOP)  # a stalled source: not a byte more, and no exit either
    try:
        def quiet_for(seconds):
            seen = [stays.count, time.monotonic()]

            def check():
                if stays.count != seen[0]:
                    seen[:] = [stays.count, time.monotonic()]
                return time.monotonic() - seen[1] >= seconds
            return check
        wait_until(quiet_for(0.6), 10, "the stream falling silent")
        silent_from = len(stays.data)
        # A player that quits having read all it was sent: its close is a FIN, no reset.
        leaves.sock.setblocking(False)
        try:
            while leaves.sock.recv(65536):
                pass
        except BlockingIOError:
            pass
        leaves.close()
        closed = time.monotonic()
        wait_until(lambda: service.channels()["copy"]["viewers"] == 1, 6, "the viewer who left dropped")
        dropped_after = time.monotonic() - closed
        wait_until(lambda: len(stays.data) >= silent_from + 2 * 188, 5, "two keep-alives to the one who stays")
        silence = bytes(stays.data[silent_from:])
    finally:
        os.kill(remux, signal.SIGCONT)
    print(f"dropped {dropped_after:.2f} s after it closed; {len(silence) // 188} keep-alives")
    assert dropped_after < 2.5
    assert len(silence) % 188 == 0 and all(silence[i:i + 3] == b"\x47\x1f\xff" for i in range(0, len(silence), 188))
    wait_until(lambda: len(stays.data) > silent_from + len(silence) + 32 * 1024, 15, "the stream going on after")
    body = stays.finish()
    assert strict_ts_problems(body) == []
    assert service.front.pid == front and service.front.is_running()
    service.wait_idle(timeout=10)


def test_a_one_frame_file_airs_in_whole_second_slots_one_decoder_each_and_the_channel_keeps_real_time(
        service_factory, tmp_path):
    ffmpeg, ffprobe = require_tool("ffmpeg"), require_tool("ffprobe")
    still = tmp_path / "still.mp4"
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", "color=c=white:s=320x180:r=25,format=yuv420p",
                    "-frames:v", "1", "-c:v", "libx264", "-preset", "ultrafast", str(still)], check=True, timeout=60)
    service = service_factory(
        extra_top=f'state_dir = "{tmp_path / "state"}"',
        extra=files_channel("still", still, video_kbps=300, audio_kbps=64, width=320, height=180,
                            join_burst_seconds=0))
    front = service.front.pid
    schedule = config.load(str(tmp_path / "retrovue-air.toml")).channel("still").source.schedule
    on = schedule.airing_at(time.time())
    assert on.programme.duration == 0.04
    print(f"the guide's slot for a {on.programme.duration} s file: {on.end - on.start} s")
    assert on.end - on.start >= 1.0 and schedule.airing_at(on.end).start == on.end

    mark = service.log_mark()
    reader = Reader(service, "still", keep=True)
    reader.start()
    wait_until(lambda: reader.count > 0, 15, "the first stream bytes")
    began = time.monotonic()
    channel = service.channels()["still"]
    worker, encoder = psutil.Process(channel["worker_pid"]), channel["ffmpeg_pid"]
    decoders: set[int] = set()
    window = 6.0
    while time.monotonic() - began < window:  # a measurement over a window, not a wait for an event
        try:
            decoders.update(p.pid for p in worker.children() if p.pid != encoder)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.01)
    body = reader.finish()
    elapsed = time.monotonic() - began
    out = subprocess.run([ffprobe, "-v", "error", "-select_streams", "v:0", "-count_packets", "-show_entries",
                          "stream=nb_read_packets", "-of", "json", "-f", "mpegts", "-"], input=body,
                         capture_output=True, timeout=60, check=True).stdout
    frames = int(json.loads(out)["streams"][0]["nb_read_packets"])
    print(f"{len(decoders)} decoders in {window:g} s; {frames} frames in {elapsed:.1f} s "
          f"({frames / elapsed:.1f} a second, the channel's rate is 25)")
    # One a slot, and the few that fill the decoders' head start (pipes and the encoder's queue,
    # about 2.5 s) at the stream's start.
    assert len(decoders) <= window / (on.end - on.start) + 4
    assert frames >= 25 * (elapsed - 1.0)  # real time, less what is still in the encoder and the front
    on_air = re.findall(r"channel still: on air .*?(\d+) frames", "\n".join(service.lines[mark:]))
    assert on_air and set(on_air[1:]) <= {"25"}, on_air  # after the first (cut at the moment), whole slots
    assert service.front.pid == front
    service.wait_idle(timeout=10)
