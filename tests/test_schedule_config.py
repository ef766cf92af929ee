"""Scheduled media channels in the config: file entries with metadata, blocks, epoch, time zone,
probing once into the state directory's cache, and errors that name file, line and key."""

from __future__ import annotations

import datetime as dt
import os
import textwrap

import pytest

from retrovue_air import config
from retrovue_air.config import ConfigError
from retrovue_air.schedule import DEFAULT_EPOCH, Programme


def load(tmp_path, body: str, top: str = ""):
    path = tmp_path / "air.toml"
    path.write_text(f'state_dir = "{tmp_path / "state"}"\n' + textwrap.dedent(top) + textwrap.dedent(body))
    return config.load(str(path)), str(path)


def error(tmp_path, body: str, top: str = "") -> ConfigError:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, body, top)
    assert str(e.value).startswith(f"{tmp_path / 'air.toml'}:{e.value.line}: {e.value.key}: ")
    return e.value


def channel(files: str, extra: str = "") -> str:
    return f'[[channel]]\nid = "tv"\nname = "TV"\nsource = "files"\n{files}\n{extra}'


def test_file_entries_carry_metadata_else_the_containers_title_else_the_file_name(tmp_path, schedule_media):
    red, green, cyan = schedule_media["red"], schedule_media["green"], schedule_media["cyan"]
    os.link(cyan, tmp_path / "untitled.ts")  # MPEG-TS keeps no title tag
    cfg, _ = load(tmp_path, channel(f'''files = [
  {{ path = "{red}", title = "Pilot", episode = 1, season = 2, description = "It begins.", category = "Drama" }},
  "{green}",
  "{tmp_path / 'untitled.ts'}",
]'''))
    [ch] = cfg.channels
    s = ch.source.schedule
    assert ch.source.paths == (str(red), str(green), str(tmp_path / "untitled.ts"))
    pilot, tagged, plain = s.playlist
    assert pilot == Programme(str(red), pilot.duration, "Pilot", 1, 2, "It begins.", "Drama")
    assert tagged.title == "Green Show" and tagged.episode is None  # the container's title tag
    assert plain.title == "untitled"
    assert all(3.9 < p.duration < 4.2 for p in s.playlist)
    assert (s.epoch, s.timezone, s.blocks) == (DEFAULT_EPOCH, "UTC", ())


def test_blocks_epoch_and_time_zone_make_the_schedule(tmp_path, schedule_media):
    cfg, _ = load(tmp_path, channel(f'file = "{schedule_media["red"]}"', f'''
schedule_epoch = "2024-05-01T06:00:00+02:00"
[[channel.block]]
start = "20:00"
title = "Prime time"
files = ["{schedule_media["green"]}", {{ path = "{schedule_media["blue"]}", title = "Late film" }}]
[[channel.block]]
start = "06:30"
file = "{schedule_media["cyan"]}"
'''), top='timezone = "Europe/Berlin"\n')
    s = cfg.channels[0].source.schedule
    assert s.epoch == dt.datetime(2024, 5, 1, 4, tzinfo=dt.timezone.utc).timestamp()
    assert s.timezone == "Europe/Berlin"
    assert [(b.start, b.title, [p.title for p in b.programmes]) for b in s.blocks] == [
        (dt.time(20), "Prime time", ["Green Show", "Late film"]), (dt.time(6, 30), None, ["cyan"])]
    assert s.blocks[1].label == "06:30" and cfg.channels[0].source.silent == frozenset()


def test_a_file_that_cannot_be_probed_is_refused_with_its_line(tmp_path, schedule_media):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video\n" * 100)
    e = error(tmp_path, channel(f'files = [\n  "{schedule_media["red"]}",\n  "{junk}",\n]'))
    assert (e.line, e.key) == (8, "files") and str(junk) in e.message and "ffprobe" in e.message


def test_an_unprobeable_file_in_a_block_names_the_block_key(tmp_path, schedule_media):
    junk = tmp_path / "junk.mkv"
    junk.write_bytes(b"\x00" * 1000)
    e = error(tmp_path, channel(f'file = "{schedule_media["red"]}"', f'[[channel.block]]\nstart = "20:00"\nfile = "{junk}"\n'))
    assert (e.line, e.key) == (9, "block.file") and str(junk) in e.message


@pytest.mark.parametrize("start", ['"25:00"', '"8pm"', '"20:00:00:00"', "2000"])
def test_a_bad_block_start_names_its_line(tmp_path, schedule_media, start):
    e = error(tmp_path, channel(f'file = "{schedule_media["red"]}"',
                                f'[[channel.block]]\nstart = "06:00"\nfile = "{schedule_media["red"]}"\n'
                                f'[[channel.block]]\nstart = {start}\nfile = "{schedule_media["red"]}"\n'))
    assert (e.line, e.key) == (11, "block.start")


def test_two_blocks_at_one_time_and_a_missing_start_are_refused(tmp_path, schedule_media):
    red = schedule_media["red"]
    e = error(tmp_path, channel(f'file = "{red}"', f'[[channel.block]]\nfile = "{red}"\n'))
    assert (e.line, e.key) == (7, "block.start") and "missing" in e.message
    e = error(tmp_path, channel(f'file = "{red}"', f'[[channel.block]]\nstart = "08:00"\nfile = "{red}"\n'
                                                   f'[[channel.block]]\nstart = "08:00"\nfile = "{red}"\n'))
    assert (e.line, e.key) == (11, "block.start") and "already" in e.message


@pytest.mark.parametrize("where", ["top", "channel"])
def test_a_bad_time_zone_names_its_line(tmp_path, schedule_media, where):
    red = schedule_media["red"]
    if where == "top":
        e = error(tmp_path, channel(f'file = "{red}"'), top='timezone = "Mars/Olympus"\n')
        assert (e.line, e.key) == (2, "timezone")
    else:
        e = error(tmp_path, channel(f'file = "{red}"', 'timezone = "../etc/passwd"\n'))
        assert (e.line, e.key) == (7, "timezone")
    assert "time zone" in e.message


@pytest.mark.parametrize("value", ['"2000-01-01T00:00:00"', '"soon"', "2000"])
def test_a_bad_epoch_names_its_line(tmp_path, schedule_media, value):
    e = error(tmp_path, channel(f'file = "{schedule_media["red"]}"', f"schedule_epoch = {value}\n"))
    assert (e.line, e.key) == (7, "schedule_epoch")


def test_schedule_keys_are_only_for_media_channels(tmp_path):
    e = error(tmp_path, '[[channel]]\nid = "tv"\nname = "TV"\nsource = "test-pattern"\ntimezone = "UTC"\n')
    assert (e.line, e.key) == (6, "timezone")


def test_unknown_keys_in_a_file_entry_are_refused(tmp_path, schedule_media):
    e = error(tmp_path, channel(f'files = [{{ path = "{schedule_media["red"]}", titel = "x" }}]'))
    assert (e.line, e.key) == (6, "files") and "titel" in e.message


def test_a_restart_does_not_probe_again_and_a_changed_file_is_probed_anew(tmp_path, schedule_media, monkeypatch):
    real = __import__("shutil").which("ffprobe")
    assert real, "ffprobe is needed"
    calls = tmp_path / "calls"
    stand_in = tmp_path / "bin" / "ffprobe"
    stand_in.parent.mkdir()
    stand_in.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexec {real} "$@"\n')
    stand_in.chmod(0o755)
    monkeypatch.setenv("PATH", f"{stand_in.parent}:{os.environ['PATH']}")
    media = tmp_path / "m.mp4"
    media.write_bytes(schedule_media["red"].read_bytes())
    body = channel(f'files = ["{media}", "{schedule_media["green"]}"]')
    first, _ = load(tmp_path, body)
    assert len(calls.read_text().splitlines()) == 2
    assert (tmp_path / "state" / "media-info.json").is_file()
    again, _ = load(tmp_path, body)  # a restart
    assert len(calls.read_text().splitlines()) == 2, "probed again"
    assert again.channels == first.channels
    media.write_bytes(schedule_media["blue"].read_bytes())  # replaced on disk
    load(tmp_path, body)
    assert len(calls.read_text().splitlines()) == 3


def test_an_audio_only_file_needs_transcode_false(tmp_path, schedule_media):
    import subprocess
    radio = tmp_path / "radio.ts"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(schedule_media["red"]), "-vn", "-c", "copy", "-f", "mpegts",
                    str(radio)], check=True, timeout=60)
    e = error(tmp_path, channel(f'file = "{radio}"'))
    assert (e.line, e.key) == (6, "file") and "no video" in e.message
    cfg, _ = load(tmp_path, channel(f'file = "{radio}"', "transcode = false\n"))
    assert cfg.channels[0].source.schedule.playlist[0].duration > 3
