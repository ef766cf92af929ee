"""The log format (journal and plain) and the command line."""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
import tomllib

import pytest

from harness import ROOT, free_port, write_config
from retrovue_air import __version__
from supervisor import cli

# Logs at every level, one message of three lines, and one line as another role.
LOG_EVERY_LEVEL = """
import logging
from retrovue_air import logs
logs.setup("DEBUG")
log = logging.getLogger("supervisor")
log.debug("d")
log.info("i")
log.warning("w")
log.error("e")
log.critical("c")
log.error("channel 1: ffmpeg failed:\\nError opening input\\nConversion failed!")
logs.set_role("air_worker")
log.info("from a worker")
"""


def run_logging(journal_stream: str | None, match_stderr: bool) -> list[str]:
    """Run LOG_EVERY_LEVEL with stderr on a pipe; JOURNAL_STREAM naming that pipe if match_stderr."""
    r, w = os.pipe()
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    if match_stderr:
        st = os.fstat(w)
        env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    elif journal_stream is not None:
        env["JOURNAL_STREAM"] = journal_stream
    try:
        proc = subprocess.Popen([sys.executable, "-c", LOG_EVERY_LEVEL], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=w)
    finally:
        os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    assert proc.wait(timeout=30) == 0, out
    return out.splitlines()


def test_journal_format_has_priorities_and_no_timestamp():
    assert run_logging(None, match_stderr=True) == [
        "<7>DEBUG   supervisor: d",
        "<6>INFO    supervisor: i",
        "<4>WARNING supervisor: w",
        "<3>ERROR   supervisor: e",
        "<2>CRITICAL supervisor: c",
        "<3>ERROR   supervisor: channel 1: ffmpeg failed:",
        "<3>ERROR   supervisor:   Error opening input",
        "<3>ERROR   supervisor:   Conversion failed!",
        "<6>INFO    air_worker: from a worker",
    ]


@pytest.mark.parametrize("journal_stream", [None, "1:1", "garbage"])
def test_plain_format_when_stderr_is_not_the_journal(journal_stream):
    lines = run_logging(journal_stream, match_stderr=False)
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} "
    expected = [
        "DEBUG   supervisor: d",
        "INFO    supervisor: i",
        "WARNING supervisor: w",
        "ERROR   supervisor: e",
        "CRITICAL supervisor: c",
        "ERROR   supervisor: channel 1: ffmpeg failed:",
        None, None,  # the message's other lines, as they are
        "INFO    air_worker: from a worker",
    ]
    assert len(lines) == len(expected), lines
    for line, want in zip(lines, expected):
        assert not line.startswith("<"), line
        if want is not None:
            assert re.fullmatch(stamp + re.escape(want), line), line
    assert lines[6:8] == ["Error opening input", "Conversion failed!"]


# The command line, as a process


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "LISTEN_FDS", "LISTEN_PID")}
    return subprocess.run([sys.executable, "-m", "supervisor", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=30)


def test_print_default_config_parses_and_passes_check_config(tmp_path):
    printed = run_cli("--print-default-config")
    assert printed.returncode == 0, printed.stderr
    doc = tomllib.loads(printed.stdout)
    assert [c["id"] for c in doc["channel"]] == ["1", "2"]
    path = tmp_path / "default.toml"
    path.write_text(printed.stdout)
    checked = run_cli("--check-config", str(path))
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip() == f"{path}: ok, 2 channels"


@pytest.mark.parametrize("text, line, key", [
    ('listen = "127.0.0.1:8000"\n\nmax_lag_seconds = "soon"\n', 3, "max_lag_seconds"),
    ('[[channel]]\nid = "1"\nname = "One"\nsource = "test-pattern"\n\n'
     '[[channel]]\nid = "2"\nname = "Two"\nsource = "files"\nfile = "missing.ts"\n', 10, "file"),
    ('[[channel]]\nid = "1"\nname = "One\n', 3, None),  # a TOML syntax error
])
def test_check_config_names_file_and_line_of_the_error(tmp_path, text, line, key):
    path = tmp_path / "broken.toml"
    path.write_text(text)
    result = run_cli("--check-config", str(path))
    assert result.returncode != 0
    assert result.stdout == ""
    assert f"{path}:{line}: " + (f"{key}: " if key else "") in result.stderr, result.stderr


def test_unreadable_config_is_refused_before_anything_starts(tmp_path):
    result = run_cli("--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert f"{tmp_path / 'nope.toml'}: cannot read" in result.stderr


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"retrovue-air {__version__}"


# The command line, in process: which log level and which socket reach the Supervisor


@pytest.fixture
def captured_run(monkeypatch):
    """cli.main() up to Supervisor(...).run(), which records what it was given instead of running."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    seen: dict = {}

    class FakeSupervisor:
        def __init__(self, cfg, listener):
            seen.update(cfg=cfg, listener=listener, level=logging.getLevelName(root.level))

        def run(self) -> int:
            seen["listener"].close()
            return 0

    for name in ("LISTEN_FDS", "LISTEN_PID", "JOURNAL_STREAM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(cli, "Supervisor", FakeSupervisor)
    monkeypatch.setattr(cli, "raise_fd_limit", lambda: None)
    yield seen
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


@pytest.mark.parametrize("config_level, option, effective", [
    (None, [], "INFO"),
    ('"warning"', [], "WARNING"),
    ('"warning"', ["--log-level", "debug"], "DEBUG"),
])
def test_log_level_from_config_unless_given_on_the_command_line(tmp_path, captured_run, config_level,
                                                               option, effective):
    extra_top = f"log_level = {config_level}" if config_level else ""
    path = write_config(tmp_path, extra_top=extra_top)
    assert cli.main(["--config", str(path), "--listen", f"127.0.0.1:{free_port()}", *option]) == 0
    assert captured_run["level"] == effective
    listener = captured_run["listener"]
    assert listener.type == socket.SOCK_STREAM and listener.family == socket.AF_INET
