"""Ingest to the house format (issue 13): each file transcoded once, in the background, into its
channel's format, and a channel whose window is all ingested played by remuxing the cache."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import time

import pytest
import requests
import schedule_media as media
from harness import RawViewer, files_channel, require_tool, wait_until
from test_scheduled_playout import decoded_frames
from ts_packets_check import decoder_complaints, strict_ts_problems

from air_worker.cached_playout import cached_airing_list, cached_window, from_now
from ingest.ingester import Ingester, parse_progress
from ingest.progress import ChannelTally
from ingest.work_list import CacheEntry, IngestJob, evictions, work_list
from retrovue_air import config, house_format, ingest_progress
from retrovue_air.house_format import CachedFile, HouseFormat
from retrovue_air.schedule import Airing, Programme

FMT = HouseFormat(width=320, height=180, fps=25, gop=25, video_kbps=400, audio_kbps=64)
ORDER = ["red", "green", "blue", "yellow", "cyan"]


def write(tmp_path, text: str) -> str:
    path = tmp_path / "retrovue-air.toml"
    path.write_text(text)
    return str(path)


def ingest_config(tmp_path, schedule_media, top: str = "ingest = true", **keys) -> str:
    return write(tmp_path, f'state_dir = "{tmp_path / "state"}"\n{top}\n'
                 + files_channel("tv", *(schedule_media[n] for n in ORDER), width=320, height=180,
                                 video_kbps=400, audio_kbps=64, **keys))


# The cache's decisions, without processes


def test_an_entry_is_named_by_the_files_identity_and_the_format():
    name = house_format.entry_name("/media/a.mkv", 100, 5, FMT)
    assert name.startswith("a-") and name.endswith(".ts")
    assert house_format.entry_name("/media/a.mkv", 100, 5, FMT) == name
    assert house_format.entry_name("/media/a.mkv", 100, 6, FMT) != name  # touched
    assert house_format.entry_name("/media/a.mkv", 101, 5, FMT) != name  # rewritten
    assert house_format.entry_name("/other/a.mkv", 100, 5, FMT) != name
    for changed in (dict(width=640), dict(fps=30), dict(gop=50), dict(video_kbps=800), dict(audio_kbps=128)):
        other = HouseFormat(**{**FMT.__dict__, **changed})
        assert house_format.entry_name("/media/a.mkv", 100, 5, other) != name, changed


def test_a_remux_playlist_starts_the_first_airing_on_a_keyframe_and_keeps_every_change_on_time():
    red, green = Programme("/m/red.mp4", 4.0, "Red"), Programme("/m/green.mkv", 4.0, "Green")
    entries = {"/m/red.mp4": CachedFile("/c/red.ts", 0.0, 0.021333),
               "/m/green.mkv": CachedFile("/c/green.ts", 0.0, 0.061333)}
    airings = [Airing(red, 100.0, 104.0), Airing(green, 104.0, 108.0), Airing(red, 108.0, 112.0)]
    joined = from_now(airings, 102.7)  # 2.7 s into red
    assert joined[0].start == 102.7 and joined[0].inpoint == pytest.approx(2.7)
    lines = cached_airing_list(joined, entries, FMT).splitlines()
    assert lines[0] == "ffconcat version 1.0"
    # The keyframe at or before 2.7 s is the one at 2.021333: up to one GOP (1 s) early,
    # and the airing keeps its 1.3 s on the wall clock in whole frames (32 at 25 fps, 1.28 s:
    # a cut between two frames would put two frames within one frame's time), so green starts
    # on time to within a frame.
    assert lines[1:5] == ["file '/c/red.ts'", "inpoint 2.021333", "outpoint 3.301333", "duration 1.280000"]
    assert lines[5:8] == ["file '/c/green.ts'", "outpoint 4.000000", "duration 4.000000"]
    assert lines[8:11] == ["file '/c/red.ts'", "outpoint 4.000000", "duration 4.000000"]
    # An inpoint inside the first GOP starts at the file's start.
    early = cached_airing_list(from_now(airings, 100.5), entries, FMT).splitlines()
    assert early[1:4] == ["file '/c/red.ts'", "outpoint 3.480000", "duration 3.480000"]  # 87 whole frames
    # Green resumed 1.5 s in (after a block): from its keyframe at 1.061333; red before it ends
    # its sound two AAC frames early, so that the audio green's seek brings along fits.
    resumed = cached_airing_list([Airing(red, 100.0, 104.0), Airing(green, 104.0, 106.5, 1.5)], entries, FMT)
    assert resumed.splitlines()[1:] == ["file '/c/red.ts'", "outpoint 3.957333", "duration 4.000000",
                                        "file '/c/green.ts'", "inpoint 1.061333", "outpoint 3.541333",
                                        "duration 2.480000"]  # 62 whole frames


def test_the_size_limit_evicts_the_least_recently_played_first_and_never_the_new_entry():
    entries = [CacheEntry("/c/old.ts", 40, 100.0), CacheEntry("/c/new.ts", 40, 300.0),
               CacheEntry("/c/mid.ts", 40, 200.0), CacheEntry("/c/just-made.ts", 40, 50.0)]
    assert evictions(entries, 160) == []
    assert evictions(entries, 100, keep=frozenset({"/c/just-made.ts"})) == ["/c/old.ts", "/c/mid.ts"]
    assert evictions(entries, 0, keep=frozenset({"/c/just-made.ts"})) == ["/c/old.ts", "/c/mid.ts", "/c/new.ts"]


def test_ffmpeg_progress_is_read_across_reads():
    done, rest = parse_progress(b"frame=10\nout_time_us=400000\nprogress=continue\nout_time_us=8")
    assert (done, rest) == (400000, b"out_time_us=8")
    done, rest = parse_progress(rest + b"00000\nout_time_us=N/A\nprogress=end\n")
    assert (done, rest) == (800000, b"")


def test_the_progress_file_says_per_channel_how_many_files_are_in_and_which_one_is_being_made():
    def job(name: str, channel: str) -> IngestJob:
        return IngestJob(f"/m/{name}.mp4", 4.0, True, FMT, f"/c/{name}.ts", channel)
    wanted = [job("a", "one"), job("b", "one"), job("a", "two"), job("c", "two")]
    tally = ChannelTally(wanted, pending=[job("b", "one"), job("c", "two")])  # a is cached already
    tally.note(job("b", "one"), 0.42)
    data = ingest_progress.encode(1234, True, tally.channels())
    status = ingest_progress.decode(data, alive=lambda pid: pid == 1234)
    assert status.running
    assert status.channels["one"] == ingest_progress.ChannelIngest(2, 1, 0, "b.mp4", 42)
    assert status.channels["two"] == ingest_progress.ChannelIngest(2, 1, 0, None, None)
    tally.note(job("b", "one"), 1.0)
    tally.note(job("c", "two"), None)
    status = ingest_progress.decode(ingest_progress.encode(1234, True, tally.channels()), alive=lambda pid: True)
    assert status.channels["one"] == ingest_progress.ChannelIngest(2, 2, 0, None, None)
    assert status.channels["two"] == ingest_progress.ChannelIngest(2, 1, 1, None, None)
    # An ingester killed mid-file: its pid is gone, so nothing is being made.
    killed = ingest_progress.decode(data, alive=lambda pid: False)
    assert not killed.running and killed.channels["one"] == ingest_progress.ChannelIngest(2, 1, 0)
    assert ingest_progress.decode(b"{not json") is None


# Configuration


def test_ingest_keys_are_validated_with_file_line_and_key(tmp_path, schedule_media):
    text = (f'state_dir = "{tmp_path}"\ningest_jobs = 0\ncache_max_gb = -1\n'
            + files_channel("a", schedule_media["red"], transcode=False, ingest=True)
            + '\n[[channel]]\nid = "b"\nname = "B"\nsource = "test-pattern"\ningest = true\n')
    with pytest.raises(config.ConfigError) as e:
        config.parse(text, "tv.toml")
    lines = str(e.value).splitlines()
    assert "tv.toml:2: ingest_jobs: must be greater than 0 (and finite)" in lines
    assert "tv.toml:3: cache_max_gb: must be greater than 0 (and finite)" in lines
    assert any(line.startswith("tv.toml:") and ": ingest: a channel with transcode = false" in line for line in lines)
    assert any(": ingest: only for source = \"files\"" in line for line in lines), lines


def test_the_top_level_ingest_is_every_transcoded_files_channels_default(tmp_path, schedule_media):
    text = (f'state_dir = "{tmp_path / "state"}"\ningest = true\n'
            + files_channel("a", schedule_media["red"])
            + files_channel("b", schedule_media["red"], ingest=False)
            + files_channel("c", schedule_media["red"], transcode=False))
    cfg = config.parse(text, write(tmp_path, text))
    assert [(c.id, c.ingest) for c in cfg.channels] == [("a", True), ("b", False), ("c", False)]
    assert house_format.cache_dir(cfg) == str(tmp_path / "state" / "cache")
    assert (cfg.cache_max_gb, cfg.ingest_jobs) == (None, 1)
    cfg = config.load(write(tmp_path, 'cache_dir = "media-cache"\ncache_max_gb = 2.5\ningest_jobs = 2\n' + text))
    assert (house_format.cache_dir(cfg), cfg.cache_max_gb, cfg.ingest_jobs) == (str(tmp_path / "media-cache"), 2.5, 2)


# Ingest


def test_retrovue_air_ingest_fills_the_cache_once_and_again_for_a_changed_file(tmp_path, schedule_media):
    require_tool("ffmpeg")
    media_dir = tmp_path / "media"
    media_dir.mkdir()
    for name in ORDER:  # copies: this test rewrites one
        (media_dir / schedule_media[name].name).write_bytes(schedule_media[name].read_bytes())
    path = write(tmp_path, f'state_dir = "{tmp_path / "state"}"\ningest = true\n'
                 + files_channel("tv", *(media_dir / schedule_media[n].name for n in ORDER), width=320, height=180,
                                 video_kbps=400, audio_kbps=64)
                 + files_channel("same", media_dir / schedule_media["red"].name, width=320, height=180,
                                 video_kbps=400, audio_kbps=64))
    run = subprocess.run([sys.executable, "-m", "supervisor", "ingest", "--config", path],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "5 files ingested" in run.stderr, run.stderr  # red once, though two channels play it
    cfg = config.load(path)
    channel = cfg.channel("tv")
    fmt = house_format.house_format(channel)
    cache = house_format.cache_dir(cfg)
    for name in ORDER:
        entry = house_format.lookup(cache, str(media_dir / schedule_media[name].name), fmt)
        assert entry is not None, name
        probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                                "stream=codec_name,width,height,r_frame_rate,sample_rate,channels",
                                "-of", "json", entry.path], capture_output=True, text=True, check=True)
        streams = {s["codec_name"]: s for s in json.loads(probe.stdout)["streams"]}
        assert streams["h264"]["width"] == 320 and streams["h264"]["height"] == 180, name
        assert streams["h264"]["r_frame_rate"] == "25/1", name
        assert streams["aac"]["sample_rate"] == "48000" and streams["aac"]["channels"] == 2, name
    assert not [n for n in os.listdir(cache) if n.endswith(".part")]

    again = subprocess.run([sys.executable, "-m", "supervisor", "ingest", "--config", path],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "already in the cache" in again.stderr, again.stderr

    # The same file rewritten: a new entry (the old one is left to eviction).
    changed = media_dir / schedule_media["green"].name
    before = house_format.lookup(cache, str(changed), fmt)
    changed.write_bytes(schedule_media["blue"].read_bytes())
    assert house_format.lookup(cache, str(changed), fmt) is None
    third = subprocess.run([sys.executable, "-m", "supervisor", "ingest", "--config", path],
                           capture_output=True, text=True, timeout=60)
    assert third.returncode == 0 and "1 files ingested" in third.stderr, third.stderr
    after = house_format.lookup(cache, str(changed), fmt)
    assert after is not None and after.path != before.path


def test_a_file_that_fails_to_ingest_is_named_and_leaves_nothing_behind(tmp_path, schedule_media):
    from retrovue_air.ffmpeg.binary import ffmpeg_binary

    cache = tmp_path / "cache"
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 100)
    jobs = [IngestJob(str(broken), 4.0, True, FMT, str(cache / "broken-x.ts"), "tv"),
            IngestJob(str(schedule_media["red"]), 4.0, True, FMT, str(cache / "red-x.ts"), "tv")]
    seen = []
    ingester = Ingester(jobs, str(cache), ffmpeg_binary(), on_progress=lambda *a: seen.append(a))
    assert ingester.run() == 1
    [(job, error)] = ingester.failures
    assert job.source == str(broken) and "ffmpeg exited with status" in error, error
    assert (jobs[0], None, 1, 2) in seen and (jobs[1], 1.0, 2, 2) in seen
    assert sorted(os.listdir(cache)) == ["red-x.ts", "red-x.ts.json"]  # the other went on; no .part left


# Playout from the cache


def test_a_channel_plays_from_the_cache_once_ingested_seamlessly_across_item_changes(
        service_factory, schedule_media, tmp_path):
    ffmpeg = require_tool("ffmpeg")
    epoch = dt.datetime.fromtimestamp(time.time() - 1000, dt.timezone.utc)
    service = service_factory(
        extra_top=f'state_dir = "{tmp_path / "state"}"',
        extra=files_channel("tv", *(schedule_media[n] for n in ORDER), width=320, height=180, video_kbps=400,
                            audio_kbps=64, ingest=True, schedule_epoch=f'"{epoch.isoformat()}"'))
    # The supervisor's ingester, at idle priority, says how far it got and ends when all is done.
    pid = int(service.wait_for_log(r"started the ingester pid (\d+)").group(1))
    service.wait_for_log(r"ingester: 5 files to ingest")  # said once it runs niced (ffmpeg inherits it)
    assert os.getpriority(os.PRIO_PROCESS, pid) == 19
    service.wait_for_log(r"ingester: ingested .*red\.mp4", timeout=60)
    service.wait_for_log(r"ingester: cyan\.ts 100 % \(file 5 of 5\)", timeout=60)
    service.wait_for_log(r"ingester: all 5 files ingested", timeout=60)
    service.wait_for_log(r"the ingester exited with status 0", timeout=10)
    assert not service.ffmpegs(), "an ffmpeg runs before anyone watches"
    # How far ingest got, on /channels, /metrics and the status page.
    assert service.channels()["tv"]["ingest"] == {"files": 5, "ingested": 5, "failed": 0, "current": None,
                                                  "percent": None}
    assert "1" not in {c for c, v in service.channels().items() if "ingest" in v}  # a test pattern: no ingest
    metrics = requests.get(service.url("/metrics"), timeout=5).text
    assert 'retrovue_air_ingest_files{channel="tv",state="ingested"} 5.0' in metrics, metrics
    assert "5 of 5 files" in requests.get(service.url("/"), timeout=5).text

    schedule = config.load(str(tmp_path / "retrovue-air.toml")).channel("tv").source.schedule

    def late_in_an_item():
        on = schedule.airing_at(time.time())
        return 2.5 <= time.time() - on.start <= 3.0
    wait_until(late_in_an_item, 10, "the schedule 2.5-3 s into an item")
    tuned_in = time.time()
    expected = schedule.airing_at(tuned_in)
    following = [a.programme.path for a in schedule.airings(tuned_in, tuned_in + 10)]
    mark = service.log_mark()
    viewer = RawViewer(service, "tv")
    service.wait_for_log(r"channel tv: playing \d+ airings from the ingest cache", start=mark, timeout=10)
    [encoder] = service.ffmpegs()  # one remuxing ffmpeg: no decoder, no encoder
    assert "-c" in encoder.cmdline() and "copy" in encoder.cmdline()
    body = viewer.read_body(400 * 1024)  # ~7 s at 464 kb/s: two item changes
    body = body[:len(body) // 188 * 188]
    viewer.close()

    [(luma, offset)] = decoded_frames(ffmpeg, body)
    assert media.which_item(luma).name == os.path.splitext(os.path.basename(expected.programme.path))[0]
    moment = tuned_in - expected.start + expected.inpoint
    assert moment - 1.0 - 0.5 <= offset <= moment + 0.5, (offset, moment)  # at most one GOP (1 s) early

    assert strict_ts_problems(body) == []
    assert decoder_complaints(ffmpeg, body) == ""
    seen = [media.which_item(luma).name for luma, _ in decoded_frames(ffmpeg, body, rate=2)]
    changes = [name for i, name in enumerate(seen) if i == 0 or name != seen[i - 1]]
    names = [os.path.splitext(os.path.basename(p))[0] for p in following]
    assert changes[:3] == names[:3], seen

    service.wait_idle(timeout=10)
    assert not service.ffmpegs(), "an ffmpeg runs after the last viewer left"


def test_a_window_with_a_file_not_yet_ingested_is_transcoded_live(tmp_path, schedule_media):
    require_tool("ffmpeg")
    path = ingest_config(tmp_path, schedule_media)
    cfg = config.load(path)
    channel = cfg.channel("tv")
    now = time.time()
    airings = from_now(channel.source.schedule.airings(now, now + 60), now)
    assert cached_window(channel, cfg, airings) is None
    jobs = work_list(cfg)
    assert [os.path.basename(j.source) for j in jobs] == [schedule_media[n].name for n in ORDER]
    from retrovue_air.ffmpeg.binary import ffmpeg_binary
    assert Ingester(jobs[:4], house_format.cache_dir(cfg), ffmpeg_binary()).run() == 0
    assert cached_window(channel, cfg, airings) is None  # cyan is still missing
    assert [os.path.basename(j.source) for j in work_list(cfg)] == [schedule_media["cyan"].name]
    assert Ingester(work_list(cfg), house_format.cache_dir(cfg), ffmpeg_binary()).run() == 0
    entries = cached_window(channel, cfg, airings)
    assert entries is not None and set(entries) == {str(schedule_media[n]) for n in ORDER}

    # Remuxed, airings that start mid-file (as after a daily block) still make one clean TS.
    from air_worker.ffmpeg_command import build_command

    def airing(name: str, start: float, end: float, inpoint: float = 0.0) -> Airing:
        return Airing(Programme(str(schedule_media[name]), media.SECONDS, name), start, end, inpoint)
    resumed = [airing("red", 0, 4), airing("green", 4, 6.5, inpoint=1.5), airing("blue", 6.5, 10.5),
               airing("cyan", 10.5, 12, inpoint=2.5), airing("red", 12, 14)]
    playlist = tmp_path / "resumed.ffconcat"
    playlist.write_text(cached_airing_list(resumed, entries, house_format.house_format(channel)))
    remux = dataclasses.replace(channel, transcode=False, join_burst_seconds=0)
    cmd = build_command(remux, ffmpeg_binary(), str(playlist))
    cmd = [arg for arg in cmd if arg != "-re"][:-1] + [str(tmp_path / "resumed.ts")]
    made = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0 and made.stderr == "", made.stderr
    body = (tmp_path / "resumed.ts").read_bytes()
    assert strict_ts_problems(body) == []
    decode = subprocess.run(["ffmpeg", "-v", "error", "-f", "mpegts", "-i", "-", "-f", "null", "-"],
                            input=body, capture_output=True, timeout=60)
    assert decode.returncode == 0 and decode.stderr == b"", decode.stderr.decode(errors="replace")
    seen = [media.which_item(luma).name for luma, _ in decoded_frames("ffmpeg", body, rate=4)]
    changes = [name for i, name in enumerate(seen) if i == 0 or name != seen[i - 1]]
    assert changes == ["red", "green", "blue", "cyan", "red"], seen


def test_a_reload_that_changes_a_channels_format_ingests_its_files_again(service_factory, schedule_media, tmp_path):
    import signal

    require_tool("ffmpeg")
    service = service_factory(
        extra_top=f'state_dir = "{tmp_path / "state"}"',
        extra=files_channel("tv", schedule_media["red"], schedule_media["green"], width=160, height=90,
                            video_kbps=200, audio_kbps=64, ingest=True))
    service.wait_for_log(r"ingester: all 2 files ingested", timeout=60)
    service.wait_for_log(r"the ingester exited with status 0")
    path = tmp_path / "retrovue-air.toml"
    path.write_text(path.read_text().replace("width = 160", "width = 192"))
    mark = service.log_mark()
    service.proc.send_signal(signal.SIGHUP)
    service.wait_for_log(r"SIGHUP: configuration reloaded", start=mark)
    service.wait_for_log(r"ingester: ingesting .*red\.mp4 for channel tv \(192x90 25 fps\)", start=mark, timeout=30)
    service.wait_for_log(r"ingester: all 2 files ingested", start=mark, timeout=60)
    entries = [n for n in os.listdir(tmp_path / "state" / "cache") if n.endswith(".ts")]
    assert len(entries) == 4, entries  # both formats: the old ones are left to eviction


def test_over_the_size_limit_the_least_recently_played_entry_goes(tmp_path, schedule_media):
    from retrovue_air.ffmpeg.binary import ffmpeg_binary

    require_tool("ffmpeg")
    cache = tmp_path / "cache"
    jobs = [IngestJob(str(schedule_media[n]), 4.0, True, FMT, str(cache / f"{n}-x.ts"), "tv") for n in ("red", "green")]
    assert Ingester(jobs[:1], str(cache), ffmpeg_binary()).run() == 0
    os.utime(cache / "red-x.ts", (time.time() - 3600, time.time() - 3600))  # last played an hour ago
    size = os.path.getsize(cache / "red-x.ts")
    assert Ingester(jobs[1:], str(cache), ffmpeg_binary(), max_bytes=size * 3 // 2).run() == 0
    assert sorted(os.listdir(cache)) == ["green-x.ts", "green-x.ts.json"]
