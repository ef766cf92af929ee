"""SIGHUP: the new configuration is loaded (and its media probed) by a child, so the supervisor's
loop goes on pinging the watchdog and starting streams meanwhile; and whatever goes wrong with a
reload, the running configuration stays and the log says why."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import threading
import time

import psutil
import pytest

from harness import RawViewer, files_channel, wait_until
from retrovue_air import config as configuration, wire
from supervisor import arbiter

PROBE_DELAY_SECONDS = 0.25
SLOW_FILES = 24  # probed one after another: 6 s and more of reload


@pytest.fixture
def slow_ffprobe(tmp_path):
    """PATH for the service, with an ffprobe that waits before it answers: a cold cache on slow disks."""
    real = shutil.which("ffprobe")
    if real is None:
        pytest.skip("ffprobe is not installed")
    stand_in = tmp_path / "slow-bin" / "ffprobe"
    stand_in.parent.mkdir()
    stand_in.write_text(f'#!/bin/sh\nsleep {PROBE_DELAY_SECONDS}\nexec {real} "$@"\n')
    stand_in.chmod(0o755)
    return f"{stand_in.parent}:{os.environ['PATH']}"


def library(tmp_path, media, count: int) -> list:
    """count names for one media file, each probed on its own (the cache is by path)."""
    folder = tmp_path / "library"
    folder.mkdir(exist_ok=True)
    paths = []
    for n in range(count):
        path = folder / f"episode-{n:03d}.mp4"
        if not path.exists():
            os.link(media, path)
        paths.append(path)
    return paths


class Notifications(threading.Thread):
    """systemd's end of NOTIFY_SOCKET: every datagram with the time it came."""

    def __init__(self, path: str):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.got: list[tuple[float, str]] = []
        self.done = threading.Event()
        self.start()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            self.got.append((time.monotonic(), data.decode()))

    def wait_for(self, text: str, after: float = 0.0, timeout: float = 30) -> float:
        """The time of the first datagram after `after` that contains text."""
        def seen():
            return next((t for t, m in list(self.got) if t > after and text in m), None)
        return wait_until(seen, timeout, f"a notification with {text!r}")

    def close(self) -> None:
        self.done.set()
        self.join(timeout=5)
        self.sock.close()


@pytest.fixture
def systemd(tmp_path):
    notifications = Notifications(str(tmp_path / "notify"))
    yield notifications
    notifications.close()


def test_the_watchdog_is_pinged_and_tune_ins_answered_while_a_reload_probes_a_cold_cache(
        service_factory, tmp_path, schedule_media, slow_ffprobe, systemd):
    state = f'state_dir = "{tmp_path / "state"}"'
    service = service_factory(env={"PATH": slow_ffprobe, "NOTIFY_SOCKET": str(tmp_path / "notify"),
                                   "WATCHDOG_USEC": "2000000"}, extra_top=state)
    supervisor, front = service.supervisor.pid, service.front.pid
    ready = systemd.wait_for("READY=1")
    systemd.wait_for("WATCHDOG=1", after=ready)
    path = tmp_path / "retrovue-air.toml"
    path.write_text(path.read_text() + files_channel("tv", *library(tmp_path, schedule_media["red"], SLOW_FILES),
                                                     width=320, height=180, video_kbps=200, audio_kbps=64))
    mark = service.log_mark()
    service.proc.send_signal(signal.SIGHUP)
    reloading = systemd.wait_for("RELOADING=1")

    # Mid-reload, a viewer tunes in: the supervisor starts its stream at once.
    asked = time.monotonic()
    viewer = RawViewer(service, "1")
    try:
        head = viewer.read_head()
        assert head.startswith(b"HTTP/1.1 200"), head
        viewer.read_body(188 * 10)
        first_bytes = time.monotonic() - asked
    finally:
        viewer.close()

    done = systemd.wait_for("READY=1", after=reloading, timeout=60)
    service.wait_for_log(r"SIGHUP: configuration reloaded from .*: 3 channels", start=mark)
    assert done - reloading > SLOW_FILES * PROBE_DELAY_SECONDS * 0.9, "the reload probed nothing"
    pings = [t for t, m in systemd.got if "WATCHDOG=1" in m and reloading < t < done]
    edges = [reloading, *pings, done]
    gaps = [round(b - a, 2) for a, b in zip(edges, edges[1:])]
    assert max(gaps) < 3.0, f"watchdog gaps {gaps} during a {done - reloading:.1f} s reload"
    assert first_bytes < done - reloading, f"first bytes after {first_bytes:.1f} s: the reload held the start"
    assert set(service.channels()) == {"1", "2", "tv"}
    assert (service.supervisor.pid, service.front.pid) == (supervisor, front)


def config_loader(service) -> psutil.Process:
    def find():
        for p in service.descendants():
            try:
                if "config loader" in " ".join(p.cmdline()):
                    return p
            except psutil.NoSuchProcess:
                pass
        return None
    return wait_until(find, 10, "a config loader process")


def test_a_reload_whose_loader_is_killed_keeps_the_running_configuration_and_says_so(
        service_factory, tmp_path, schedule_media, slow_ffprobe, systemd):
    service = service_factory(env={"PATH": slow_ffprobe, "NOTIFY_SOCKET": str(tmp_path / "notify")},
                              extra_top=f'state_dir = "{tmp_path / "state"}"')
    supervisor, front = service.supervisor.pid, service.front.pid
    systemd.wait_for("READY=1")
    path = tmp_path / "retrovue-air.toml"
    path.write_text(path.read_text() + files_channel("tv", *library(tmp_path, schedule_media["red"], SLOW_FILES)))
    mark = service.log_mark()
    service.proc.send_signal(signal.SIGHUP)
    reloading = systemd.wait_for("RELOADING=1")
    config_loader(service).kill()
    service.wait_for_log(r"SIGHUP: configuration refused, keeping the running one: the config loader "
                         r"\(pid \d+\) killed by SIGKILL before it answered", start=mark)
    systemd.wait_for("READY=1", after=reloading)
    assert set(service.channels()) == {"1", "2"}
    assert (service.supervisor.pid, service.front.pid) == (supervisor, front)
    # The next SIGHUP loads it.
    mark = service.log_mark()
    service.proc.send_signal(signal.SIGHUP)
    service.wait_for_log(r"SIGHUP: configuration reloaded from .*: 3 channels", start=mark, timeout=60)


def test_a_sighup_during_a_reload_loads_the_file_again_once_that_one_is_done(
        service_factory, tmp_path, schedule_media, slow_ffprobe):
    service = service_factory(env={"PATH": slow_ffprobe}, extra_top=f'state_dir = "{tmp_path / "state"}"')
    path = tmp_path / "retrovue-air.toml"
    original = path.read_text()
    episodes = library(tmp_path, schedule_media["red"], SLOW_FILES)
    path.write_text(original + files_channel("tv", *episodes))
    mark = service.log_mark()
    service.proc.send_signal(signal.SIGHUP)
    config_loader(service)
    path.write_text(original + files_channel("tv", *episodes) + files_channel("more", episodes[0]))
    service.proc.send_signal(signal.SIGHUP)
    service.wait_for_log(r"SIGHUP: a reload is under way: loading again when it is done", start=mark)
    service.wait_for_log(r"SIGHUP: configuration reloaded from .*: 4 channels", start=mark, timeout=60)
    wait_until(lambda: set(service.channels()) == {"1", "2", "tv", "more"}, 5, "the second file's channels")


def test_an_unexpected_error_while_loading_is_a_refusal_that_says_what(tmp_path, monkeypatch):
    path = tmp_path / "air.toml"
    path.write_text('[[channel]]\nid = "1"\nname = "One"\nsource = "test-pattern"\n')

    def broken(_path):
        raise RuntimeError("the disk said no")
    monkeypatch.setattr(configuration, "load", broken)
    ours, theirs = wire.socket_pair()
    with ours, theirs:
        arbiter.send_loaded_config(str(path), theirs)
        message, fds = wire.receive(ours)
    assert fds == []
    assert message == wire.ReloadRefused(f"cannot load {path}: RuntimeError: the disk said no")


def test_a_refusal_too_long_for_one_message_is_cut_not_lost(tmp_path):
    path = tmp_path / "air.toml"
    path.write_text("".join(f"unknown_{n} = 1\n" for n in range(2000)))
    ours, theirs = wire.socket_pair()
    with ours, theirs:
        arbiter.send_loaded_config(str(path), theirs)
        message, _ = wire.receive(ours)
    assert isinstance(message, wire.ReloadRefused)
    assert message.reason.startswith(f"{path}:1: unknown_0: unknown key\n{path}:2: unknown_1: unknown key")
    assert message.reason.endswith("more)")
