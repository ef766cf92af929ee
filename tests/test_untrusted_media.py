"""Input from media is data, never trusted: a header that claims more time than the file holds,
timestamps that jump a day, tags in digits that are not ASCII, a corrupt probe cache. Each is
made with ffmpeg (and a patched byte or two) and met by the real config loader, the real
`retrovue-air ingest` and the real service."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from harness import ROOT, files_channel, require_tool
from retrovue_air import config, house_format, media_info
from retrovue_air.config import ConfigError

CLAIMED_SECONDS = 1e12  # what the patched header says: about 31,700 years


def make_mkv(path: Path, ffmpeg: str, *metadata: str) -> Path:
    tags = [arg for m in metadata for arg in ("-metadata", m)]
    subprocess.run([ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=red:s=160x90:r=25:d=4",
                    "-f", "lavfi", "-i", "sine=frequency=440:d=4", "-c:v", "libx264", "-preset", "ultrafast",
                    "-c:a", "aac", "-shortest", *tags, str(path)], check=True, timeout=120)
    return path


def claim_duration(path: Path, seconds: float) -> None:
    """Overwrite the Segment Info's Duration (EBML id 0x4489, an 8-byte float in TimecodeScale
    units, 1 ms as ffmpeg writes it) in place: the packets stay as they were."""
    data = bytearray(path.read_bytes())
    at = data.find(b"\x44\x89\x88")
    assert at > 0, "no 8-byte Duration element"
    data[at + 3: at + 11] = struct.pack(">d", seconds * 1000)
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """{name: path}: the hostile files, made once."""
    ffmpeg = require_tool("ffmpeg")
    folder = tmp_path_factory.mktemp("hostile-media")
    long_claim = make_mkv(folder / "claims-31700-years.mkv", ffmpeg, "title=Forever")
    claim_duration(long_claim, CLAIMED_SECONDS)
    # An MPEG-TS has no duration field: ffprobe takes it from the first and last timestamps,
    # and these jump 25 hours half way. Neither the header nor the packets can be believed.
    parts = []
    for n, offset in enumerate((0, 90000)):
        part = folder / f"part{n}.ts"
        subprocess.run([ffmpeg, "-v", "error", "-y", "-i", str(make_mkv(folder / f"part{n}.mkv", ffmpeg)),
                        "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-output_ts_offset", str(offset),
                        "-f", "mpegts", str(part)], check=True, timeout=120)
        parts.append(part.read_bytes())
    jump = folder / "jumps-a-day.ts"
    jump.write_bytes(b"".join(parts))
    superscript = make_mkv(folder / "episode-superscript-two.mkv", ffmpeg, "EPISODE_SORT=²", "SEASON_NUMBER=٣",
                           "title=Tagged")
    return {"long_claim": long_claim, "jump": jump, "superscript": superscript}


def write(tmp_path: Path, body: str, name: str = "air.toml") -> str:
    path = tmp_path / name
    path.write_text(f'state_dir = "{tmp_path / "state"}"\n' + body)
    return str(path)


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "LISTEN_FDS", "LISTEN_PID")}
    return subprocess.run([sys.executable, "-m", "supervisor", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


# Durations


def test_a_header_claiming_more_time_than_the_file_can_hold_is_clamped_to_what_its_packets_last(
        tmp_path, hostile, caplog):
    path = write(tmp_path, files_channel("tv", hostile["long_claim"]))
    with caplog.at_level("WARNING", logger="retrovue_air.media_info"):
        cfg = config.load(path)
    [programme] = cfg.channels[0].source.schedule.playlist
    assert 3.9 < programme.duration < 4.2
    assert any(str(hostile["long_claim"]) in r.getMessage() and "1000000000000" in r.getMessage()
               for r in caplog.records), caplog.text


def test_a_cached_probe_that_believed_such_a_header_is_not_believed_either(tmp_path, hostile):
    """A cache written before durations were checked (same size and mtime) holds the claim."""
    st = os.stat(hostile["long_claim"])
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / media_info.CACHE_FILE).write_text(json.dumps({str(hostile["long_claim"]): {
        "key": [st.st_size, st.st_mtime_ns],
        "info": {"duration": CLAIMED_SECONDS, "has_audio": True, "title": "Forever", "episode": None,
                 "season": None, "start_time": 0.0, "has_video": True}}}))
    cfg = config.load(write(tmp_path, files_channel("tv", hostile["long_claim"])))
    assert 3.9 < cfg.channels[0].source.schedule.playlist[0].duration < 4.2


def test_timestamps_that_jump_a_day_in_a_small_file_are_refused_with_file_line_and_key(tmp_path, hostile):
    path = write(tmp_path, files_channel("tv", hostile["jump"]))
    with pytest.raises(ConfigError) as e:
        config.load(path)
    assert (e.value.line, e.value.key) == (7, "file"), str(e.value)
    assert str(hostile["jump"]) in e.value.message and "90004" in e.value.message, str(e.value)


def test_a_still_picture_held_a_minute_is_believed_however_few_its_bytes(tmp_path):
    # 61 s of a grey 32x32 picture at 1 fps is about 2 KB: under the bytes-a-second floor, but
    # its packets come a second apart all the way, so they vouch for its length.
    still = tmp_path / "still.mp4"
    subprocess.run([require_tool("ffmpeg"), "-v", "error", "-f", "lavfi", "-i", "color=c=gray:s=32x32:r=1:d=61",
                    "-c:v", "libx264", "-preset", "ultrafast", str(still)], check=True, timeout=60)
    assert still.stat().st_size < 61 * media_info.MIN_BYTES_PER_SECOND
    assert media_info.probe(str(still)).duration == pytest.approx(61, abs=1)


@pytest.mark.parametrize("claimed, size, expected", [
    (7200.0, 2_000_000_000, True),  # a film
    (0.04, 2_000, True),  # one frame
    (CLAIMED_SECONDS, 39_000, False),
    (90004.0, 143_000, False),  # 1.6 bytes a second
    (30 * 86400.0, 10**13, False),  # no programme lasts a month, whatever its size
    (float("inf"), 10**9, False),
    (float("nan"), 10**9, False),
])
def test_whether_a_duration_is_believable_is_a_pure_function_of_it_and_the_files_size(claimed, size, expected):
    assert media_info.believable_duration(claimed, size) is expected


@pytest.mark.parametrize("format_doc", [
    {"duration": "inf"}, {"duration": "nan"}, {"duration": "-5"}, {"duration": "4 s"}, {"duration": 4},
    {"duration": "4.0", "start_time": "nan"}, {"duration": "4.0", "start_time": "1e300"},
])
def test_a_probe_answer_with_no_usable_number_is_a_probe_error_not_a_crash(format_doc):
    answer = json.dumps({"streams": [{"codec_type": "video"}], "format": format_doc})
    with pytest.raises(media_info.ProbeError):
        media_info.parse_probe(answer)


@pytest.mark.parametrize("answer", ["[]", "null", '{"streams": {}}', '{"streams": [1], "format": []}',
                                    '{"streams": [{"codec_type": "video"}], "format": {"duration": "4", "tags": []}}'])
def test_a_probe_answer_of_the_wrong_shape_is_a_probe_error_not_a_crash(answer):
    with pytest.raises(media_info.ProbeError):
        media_info.parse_probe(answer)


def test_retrovue_air_ingest_of_such_a_file_stops_at_what_its_packets_last(tmp_path, hostile):
    require_tool("ffmpeg")
    path = write(tmp_path, "ingest = true\n" + files_channel("tv", hostile["long_claim"], width=160, height=90,
                                                            video_kbps=200, audio_kbps=64))
    # Believing the header, ffmpeg pads the picture for 31,700 years: the timeout is the test.
    run = run_cli("ingest", "--config", path, timeout=90)
    assert run.returncode == 0, run.stderr
    cfg = config.load(path)
    channel = cfg.channel("tv")
    entry = house_format.lookup(house_format.cache_dir(cfg), str(hostile["long_claim"]),
                                house_format.house_format(channel))
    assert entry is not None, run.stderr
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
                            entry.path], capture_output=True, text=True, check=True)
    assert 3.9 < float(probe.stdout) < 4.3


def test_the_ingest_command_is_bounded_by_the_duration_it_is_given():
    fmt = house_format.HouseFormat(width=320, height=180, fps=25, gop=25, video_kbps=400, audio_kbps=64)
    cmd = house_format.ingest_command("ffmpeg", "/m/a.mkv", 4.03, True, fmt, "/c/a.ts", 5)
    limit = cmd.index("-t")
    assert limit > cmd.index("-i") and cmd[-1] == "/c/a.ts"  # an output option
    assert float(cmd[limit + 1]) >= 101 / 25  # never cuts the frames the trim keeps (4.03 s is 101 frames)
    assert float(cmd[limit + 1]) < 4.1


def test_the_guide_of_a_channel_playing_such_a_file_is_served_and_the_front_stays(service_factory, tmp_path, hostile):
    service = service_factory(extra_top=f'state_dir = "{tmp_path / "state"}"',
                              extra=files_channel("tv", hostile["long_claim"], width=320, height=180,
                                                  video_kbps=200, audio_kbps=64))
    front = service.front.pid
    for _ in range(3):
        response = requests.get(service.url("/xmltv.xml"), timeout=20)
        assert response.status_code == 200
        assert b'channel="tv"' in response.content
    assert requests.get(service.url("/healthz"), timeout=5).status_code == 200
    assert service.front.pid == front and service.front.is_running()


# Numeric tags


@pytest.mark.parametrize("tags, episode, season", [
    ({"episode_sort": "2", "season_number": "3"}, 2, 3),
    ({"episode_sort": "²", "season_number": "٣"}, None, None),  # isdigit() says yes to both
    ({"episode": "4/12"}, 4, None),  # track style
    ({"episode": " 7 "}, 7, None),
    ({"episode": "-1", "season": "+2"}, None, None),
    ({"episode": "1" * 40}, None, None),
    ({"episode_sort": "x", "episode": "5"}, 5, None),
])
def test_numeric_tags_are_read_in_ascii_digits_only(tags, episode, season):
    answer = json.dumps({"streams": [{"codec_type": "video"}], "format": {"duration": "4.0", "tags": tags}})
    info = media_info.parse_probe(answer)
    assert (info.episode, info.season) == (episode, season)


def test_check_config_of_a_file_tagged_episode_superscript_two_says_ok(tmp_path, hostile):
    path = write(tmp_path, files_channel("tv", hostile["superscript"]))
    result = run_cli("--check-config", path)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{path}: ok, 1 channels"


def test_a_corrupt_probe_cache_is_probed_again_not_a_traceback(tmp_path, hostile):
    st = os.stat(hostile["superscript"])
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / media_info.CACHE_FILE).write_text(json.dumps({str(hostile["superscript"]): {
        "key": [st.st_size, st.st_mtime_ns],
        "info": {"duration": "four", "has_audio": True, "title": ["x"], "episode": "²", "season": None,
                 "start_time": 0.0, "has_video": True}}}))
    path = write(tmp_path, files_channel("tv", hostile["superscript"]))
    result = run_cli("--check-config", path)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stderr
    cfg = config.load(path)
    programme = cfg.channels[0].source.schedule.playlist[0]
    assert 3.9 < programme.duration < 4.2 and programme.title == "Tagged" and programme.episode is None


def test_sighup_onto_a_file_tagged_episode_superscript_two_keeps_the_supervisor_and_reloads(
        service_factory, tmp_path, hostile):
    service = service_factory(extra_top=f'state_dir = "{tmp_path / "state"}"')
    supervisor, front = service.supervisor.pid, service.front.pid
    path = tmp_path / "retrovue-air.toml"
    path.write_text(path.read_text() + files_channel("tv", hostile["superscript"], width=320, height=180,
                                                     video_kbps=200, audio_kbps=64))
    mark = service.log_mark()
    service.proc.send_signal(signal.SIGHUP)
    service.wait_for_log(r"SIGHUP: configuration reloaded from .*: 3 channels", start=mark, timeout=30)
    assert set(service.channels()) == {"1", "2", "tv"}
    assert service.proc.poll() is None and service.supervisor.pid == supervisor and service.front.pid == front
    assert not [line for line in service.lines if "Traceback" in line]
