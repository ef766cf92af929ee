"""Config: the built-in file loads, and every error names the file, the line and the key."""

from __future__ import annotations

import os
import textwrap

import pytest

from retrovue_air import config
from retrovue_air.config import BUILT_IN, ConfigError

ONE = """\
[[channel]]
id = "1"
name = "One"
source = "test-pattern"
"""


def write(tmp_path, text: str, name: str = "air.toml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def error(tmp_path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        config.load(path)
    assert e.value.path == path and str(e.value).startswith(f"{path}:")
    return e.value


def test_built_in_config_has_two_test_pattern_channels():
    c = config.load_default()
    assert c.path == BUILT_IN and c.listen == ("127.0.0.1", 8000) and c.max_lag_seconds == 4.0
    assert [(ch.id, ch.name) for ch in c.channels] == [("1", "RetroVue One"), ("2", "RetroVue Two")]
    assert [ch.source for ch in c.channels] == [config.TestPattern(440), config.TestPattern(660)]
    assert c.channel("2") is c.channels[1] and c.channel("3") is None


def test_a_minimal_file_gets_the_defaults(tmp_path):
    c = config.load(write(tmp_path, ONE))
    [ch] = c.channels
    assert (c.listen, ch.fps, ch.keyframe_seconds, ch.join, ch.transcode) == \
        (("127.0.0.1", 8000), 25, 1.0, "keyframe", True)


def test_top_level_settings_are_read(tmp_path):
    c = config.load(write(tmp_path, 'listen = "[::1]:9000"\nmax_lag_seconds = 2\nflush_interval_ms = 20\n' + ONE))
    assert (c.listen, c.max_lag_seconds, c.flush_interval) == (("::1", 9000), 2.0, 0.02)


def test_toml_syntax_error_has_the_line_from_tomllib(tmp_path):
    e = error(tmp_path, ONE + 'fps = 25\nwidth = = 3\n')
    assert (e.line, e.key) == (6, None)


def test_unknown_top_level_key_is_named_with_its_line(tmp_path):
    e = error(tmp_path, '# comment\nlisten = "127.0.0.1:1"\nlisen_port = 5\n' + ONE)
    assert (e.line, e.key, e.message) == (3, "lisen_port", "unknown key")
    assert str(e).endswith(":3: lisen_port: unknown key")


def test_unknown_channel_key_in_the_second_channel_gets_that_keys_line(tmp_path):
    e = error(tmp_path, ONE + "\n" + ONE.replace('"1"', '"2"') + "fps = 10\nwitdh = 320\n")
    assert (e.line, e.key, e.message) == (11, "witdh", "unknown key")


@pytest.mark.parametrize("line, expected", [
    ('width = "640"', "must be int, got str"),
    ("width = 640.0", "must be int, got float"),
    ("fps = true", "must be int, got bool"),
    ("width = 0", "must be greater than 0"),
    ("keyframe_seconds = -1", "must be greater than 0"),
    ("keyframe_seconds = 2.5", "at most 2"),
    ('join = "middle"', "unknown join mode"),
    ("transcode = false", "only for source"),
    ('file = "x.ts"', "only for source"),
])
def test_bad_channel_values_are_refused_at_their_line(tmp_path, line, expected):
    e = error(tmp_path, ONE + line + "\n")
    assert e.line == 5 and e.key == line.split(" =")[0] and expected in e.message


def test_keyframe_seconds_of_two_is_accepted(tmp_path):
    assert config.load(write(tmp_path, ONE + "keyframe_seconds = 2\n")).channels[0].keyframe_seconds == 2.0


@pytest.mark.parametrize("line", ["keyframe_seconds = nan", "max_lag_seconds = inf"])
def test_non_finite_numbers_are_refused(tmp_path, line):
    if line.startswith("max_lag"):
        error(tmp_path, line + "\n" + ONE)
    else:
        error(tmp_path, ONE + line + "\n")


@pytest.mark.parametrize("value", ['"a b"', '"1.5"', '""', '"' + "x" * 65 + '"', "7"])
def test_bad_channel_id_is_refused_at_its_line(tmp_path, value):
    e = error(tmp_path, ONE.replace('id = "1"', f"id = {value}"))
    assert (e.line, e.key) == (2, "id")


def test_duplicate_id_names_the_line_of_the_second(tmp_path):
    e = error(tmp_path, ONE + "\n" + ONE)
    assert (e.line, e.key) == (7, "id") and "duplicate" in e.message


def test_missing_name_points_at_its_channel_header(tmp_path):
    e = error(tmp_path, ONE + "\n" + ONE.replace('name = "One"\n', "").replace('"1"', '"2"'))
    assert (e.line, e.key, e.message) == (6, "name", "missing")


def test_unknown_source_is_refused_at_its_line(tmp_path):
    e = error(tmp_path, ONE.replace("test-pattern", "webcam"))
    assert (e.line, e.key) == (4, "source") and "webcam" in e.message


def test_no_channel_is_an_error(tmp_path):
    e = error(tmp_path, 'listen = "127.0.0.1:8000"\n')
    assert e.key == "channel" and "no channel" in e.message


def files_channel(extra: str) -> str:
    return ONE.replace("test-pattern", "files") + extra + "\n"


def test_files_source_with_a_missing_file_names_the_resolved_path(tmp_path):
    e = error(tmp_path, files_channel('file = "missing.ts"'))
    assert (e.line, e.key) == (5, "file") and str(tmp_path / "missing.ts") in e.message


def test_files_source_with_both_file_and_files_is_refused(tmp_path):
    (tmp_path / "a.ts").write_bytes(b"x")
    e = error(tmp_path, files_channel('file = "a.ts"\nfiles = ["a.ts"]'))
    assert (e.line, e.key) == (6, "files") and "exactly one" in e.message


def test_files_source_with_neither_file_nor_files_is_refused(tmp_path):
    assert error(tmp_path, files_channel("")).key == "files"


@pytest.mark.parametrize("value", ["[]", "[1]", "3"])
def test_files_must_be_a_non_empty_list_of_paths(tmp_path, value):
    e = error(tmp_path, files_channel(f"files = {value}"))
    assert (e.line, e.key) == (5, "files")


def test_relative_media_paths_resolve_against_the_config_files_folder(tmp_path, monkeypatch, schedule_media):
    media = tmp_path / "media"
    media.mkdir()
    (media / "a.ts").write_bytes(schedule_media["cyan"].read_bytes())
    (media / "b.ts").write_bytes(schedule_media["cyan"].read_bytes())
    (tmp_path / "conf").mkdir()
    path = write(tmp_path / "conf", f'state_dir = "{tmp_path / "state"}"\n'
                 + files_channel('files = ["../media/a.ts", "' + str(media / "b.ts") + '"]'))
    monkeypatch.chdir("/")
    [ch] = config.load(path).channels
    assert ch.source.paths == (os.path.join(str(tmp_path / "conf"), "../media/a.ts"), str(media / "b.ts"))
    assert all(os.path.isfile(p) for p in ch.source.paths)


def test_an_unreadable_file_names_the_file():
    with pytest.raises(ConfigError, match="/nonexistent/air.toml: cannot read"):
        config.load("/nonexistent/air.toml")


def test_a_file_that_is_not_utf8_names_its_line(tmp_path):
    path = tmp_path / "air.toml"
    path.write_bytes(ONE.encode() + b'# caf\xe9\n')
    with pytest.raises(ConfigError) as e:
        config.load(str(path))
    assert e.value.line == 5 and "UTF-8" in e.value.message


@pytest.mark.parametrize("value, expected", [
    ("127.0.0.1:8000", ("127.0.0.1", 8000)),
    ("0.0.0.0:1", ("0.0.0.0", 1)),
    ("[::]:65535", ("::", 65535)),
    ("localhost:80", ("localhost", 80)),
])
def test_parse_listen_accepts_host_and_port(value, expected):
    assert config.parse_listen(value) == expected


@pytest.mark.parametrize("value", ["8000", ":8000", "host:", "host:0", "host:65536", "host:http", "host:-1"])
def test_parse_listen_refuses_anything_else(value):
    with pytest.raises(ValueError, match="HOST:PORT"):
        config.parse_listen(value)


def test_a_bad_listen_in_the_file_names_its_line(tmp_path):
    e = error(tmp_path, ONE.replace("[[channel]]", 'listen = "8000"\n[[channel]]'))
    assert (e.line, e.key) == (1, "listen")


def test_every_error_in_a_file_is_reported_at_once(tmp_path):
    e = error(tmp_path, 'bogus = 1\nmax_connections = "x"\n[[channel]]\nid = "a b"\nname = "x"\n'
                        'source = "test-pattern"\n[[channel]]\nid = "c"\nname = "c"\nsource = "nope"\n')
    lines = str(e).splitlines()
    assert [line.split(": ")[0].rsplit(":", 1)[1] for line in lines] == ["1", "2", "4", "10"]
    assert (e.line, e.key) == (1, "bogus") and len(e.others) == 3


@pytest.mark.parametrize("url", ["ftp://user:pa55w0rd@origin.example/1.ts?token=s3cr3t",
                                 "http://user:pa55w0rd@/1.ts?token=s3cr3t"])
def test_a_refused_relay_url_is_named_without_its_credentials(tmp_path, url):
    path = write(tmp_path, f"""
        [[channel]]
        id = "r"
        name = "R"
        source = "relay"
        url = "{url}"
    """)
    with pytest.raises(ConfigError) as e:
        config.load(path)
    assert "url" in str(e.value)
    assert "pa55w0rd" not in str(e.value) and "s3cr3t" not in str(e.value)
