"""A large library: 10,000 file entries are validated in time linear in the file, and an error at
the far end of it still names its own line and key."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from bench.config_check import library_config, make_media
from harness import ROOT, require_tool
from retrovue_air import config
from retrovue_air.config import ConfigError

# Before the line finder was linear, 10,000 cached files took 40 s; the target is under 2.
CHECK_TIMEOUT_SECONDS = 30


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    require_tool("ffmpeg")
    return make_media(tmp_path_factory.mktemp("library-media"))


def check_config(path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "LISTEN_FDS", "LISTEN_PID")}
    return subprocess.run([sys.executable, "-m", "supervisor", "--check-config", str(path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=CHECK_TIMEOUT_SECONDS)


def test_check_config_of_ten_thousand_cached_files_answers_in_linear_time(tmp_path, media):
    path = library_config(tmp_path, media, 10_000)
    probes_before = (tmp_path / "state" / "media-info.json").stat().st_mtime_ns
    result = check_config(path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{path}: ok, 10 channels"
    assert (tmp_path / "state" / "media-info.json").stat().st_mtime_ns == probes_before, "something was probed"


def test_an_error_at_the_end_of_ten_thousand_files_names_its_own_line_and_key(tmp_path, media):
    path = library_config(tmp_path, media, 10_000)
    lines = path.read_text().splitlines()
    last = max(i for i, line in enumerate(lines) if "episode-09999.mp4" in line)
    lines[last] = lines[last].replace("episode-09999.mp4", "missing.mp4")
    path.write_text("\n".join(lines))
    result = check_config(path)
    assert result.returncode == 2
    assert f"{path}:{last + 1}: block.files: no such media file: {tmp_path / 'library' / 'missing.mp4'}" \
        in result.stderr, result.stderr


def write(tmp_path, text: str) -> str:
    path = tmp_path / "air.toml"
    path.write_text(f'state_dir = "{tmp_path / "state"}"\n' + textwrap.dedent(text))
    return str(path)


def error(tmp_path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        config.load(write(tmp_path, text))
    return e.value


def test_a_path_listed_twice_is_found_at_each_of_its_lines(tmp_path, media):
    gone = tmp_path / "gone.mp4"
    e = error(tmp_path, f'''\
        [[channel]]
        id = "a"
        name = "A"
        source = "files"
        files = [
          "{media}",
          "{media}",
          {{ path = "{media}", title = "Again" }},
          "{gone}",
        ]
        ''')
    assert (e.line, e.key) == (10, "files"), str(e)


def test_a_path_in_a_later_channel_is_found_there_not_where_an_earlier_channel_lists_it(tmp_path, media):
    e = error(tmp_path, f'''\
        [[channel]]
        id = "a"
        name = "A"
        source = "files"
        files = ["{tmp_path / 'x.mp4'}"]
        ingest = false

        [[channel]]
        id = "b"
        name = "B"
        source = "files"
        file = "{media}"

        [[channel.block]]
        start = "20:00"
        file = "{media}"

        [[channel.block]]
        start = "21:00"
        file = "{tmp_path / 'x.mp4'}"
        ''')
    assert (e.line, e.key) == (6, "files"), str(e)
    assert [(o.line, o.key) for o in e.others] == [(21, "block.file")], str(e)


def test_keys_of_the_same_name_in_the_top_a_channel_and_a_block_are_each_found_in_their_own(tmp_path, media):
    e = error(tmp_path, f'''\
        timezone = "Mars/Olympus"

        [[channel]]
        id = "a"
        name = "A"
        source = "files"
        timezone = "Venus/Maxwell"
        file = "{media}"

        [[channel.block]]
        start = "25:00"
        file = "{media}"
        ''')
    assert (e.line, e.key) == (2, "timezone"), str(e)
    assert [(o.line, o.key) for o in e.others] == [(8, "timezone")], str(e)
