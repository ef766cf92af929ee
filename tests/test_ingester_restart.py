"""An ingester that dies mid-file is started again, with a doubling backoff, as the front is; the
new one removes what the dead one left half-made, and only that: its own instance's temporaries,
owned by its user, of a process that is gone."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
from types import SimpleNamespace

import psutil
import pytest
from harness import files_channel, require_tool, wait_until

from ingest.ingester import leftovers, temporary_tag
from retrovue_air import config, instance
from supervisor.backoff import Backoff

NOBODY = 65534


# The decisions, without processes


def test_a_child_that_keeps_dying_waits_longer_each_time_and_a_steady_one_starts_over():
    backoff = Backoff(first=0.5, most=4.0, reset_after=60.0)
    assert [backoff.next_delay(ran_for=1.0) for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff.next_delay(ran_for=61.0) == 0.5  # it had been working: a new fault, not the same one
    assert backoff.next_delay(ran_for=0.1) == 1.0
    backoff.reset()
    assert backoff.next_delay(ran_for=0.1) == 0.5


def entry(uid: int = 1000, mode: int = stat.S_IFREG | 0o600):
    return SimpleNamespace(st_uid=uid, st_mode=mode)


def test_an_ingester_removes_only_its_own_instances_temporaries_of_a_process_that_is_gone():
    ours, dead, alive = "0123456789abcdef", 111, 222
    names = {
        f".red-x.ts.{temporary_tag(ours, dead)}.a1b2c3d4.part": entry(),  # ours, killed mid-file
        f".red-x.ts.json.{temporary_tag(ours, dead)}.e5f6g7h8.part": entry(),  # its sidecar
        f".red-x.ts.{temporary_tag(ours, alive)}.a1b2c3d4.part": entry(),  # ours, still at work
        f".red-x.ts.{temporary_tag('fedcba9876543210', dead)}.a1b2c3d4.part": entry(),  # another instance's
        f".blue-x.ts.{temporary_tag(ours, dead)}.a1b2c3d4.part": entry(uid=NOBODY),  # not our user's
        f".link-x.ts.{temporary_tag(ours, dead)}.a1b2c3d4.part": entry(mode=stat.S_IFLNK | 0o777),
        "red-x.ts": entry(), "red-x.ts.json": entry(),  # entries, not temporaries
        f".red-x.ts.{ours}-12x.a1b2c3d4.part": entry(),  # not a pid
    }
    found = leftovers(names.items(), ours, uid=1000, alive=lambda pid: pid == alive)
    assert sorted(found) == sorted((name, dead) for name in list(names)[:2])


def test_a_file_whose_temporary_cannot_be_made_fails_alone_and_the_ingester_goes_on(
        tmp_path, schedule_media, monkeypatch):
    require_tool("ffmpeg")
    from retrovue_air.ffmpeg.binary import ffmpeg_binary
    from ingest import ingester as ingester_module
    from ingest.ingester import Ingester
    from ingest.work_list import IngestJob
    from retrovue_air.house_format import HouseFormat

    fmt = HouseFormat(width=160, height=90, fps=25, gop=25, video_kbps=200, audio_kbps=64)
    cache = tmp_path / "cache"
    jobs = [IngestJob(str(schedule_media[n]), 4.0, True, fmt, str(cache / f"{n}-x.ts"), "tv")
            for n in ("red", "blue")]
    real = ingester_module.safe_files.create_temporary

    def full_disk_for_red(directory, name, tag):
        if name.startswith("red-"):
            raise OSError(28, "No space left on device")
        return real(directory, name, tag)
    monkeypatch.setattr(ingester_module.safe_files, "create_temporary", full_disk_for_red)
    ingester = Ingester(jobs, str(cache), ffmpeg_binary())
    assert ingester.run() == 1  # it does not raise: a crash would be restarted to fail the same way
    assert [(job.source, error) for job, error in ingester.failures] == [
        (jobs[0].source, "cannot start it: No space left on device")]
    assert sorted(os.listdir(cache)) == ["blue-x.ts", "blue-x.ts.json"]


# The service


@pytest.fixture(scope="module")
def long_programme(tmp_path_factory):
    """A minute of 640x360: long enough to be killed in the middle of its ingest."""
    ffmpeg = require_tool("ffmpeg")
    out = tmp_path_factory.mktemp("long-media") / "long.mp4"
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=640x360:r=25:d=60",
                    "-f", "lavfi", "-i", "sine=frequency=440:d=60", "-c:v", "libx264", "-preset", "ultrafast",
                    "-c:a", "aac", "-shortest", str(out)], check=True, timeout=300)
    return out


def parts(cache: str, tag: str) -> list[str]:
    try:
        return [n for n in os.listdir(cache) if n.endswith(".part") and f".{tag}." in n]
    except FileNotFoundError:
        return []


def test_an_ingester_killed_mid_file_is_started_again_and_its_half_made_file_removed(
        service_factory, long_programme, tmp_path):
    require_tool("ffmpeg")
    cache = str(tmp_path / "cache")
    service = service_factory(
        extra_top=f'state_dir = "{tmp_path / "state"}"\ncache_dir = "{cache}"',
        extra=files_channel("tv", long_programme, width=640, height=360, video_kbps=1500, audio_kbps=128,
                            ingest=True))
    supervisor, front = service.supervisor.pid, service.front.pid
    first = int(service.wait_for_log(r"started the ingester pid (\d+)").group(1))
    name = instance.name(str(tmp_path / "state"), str(tmp_path / "retrovue-air.toml"))
    tag = temporary_tag(name, first)

    # Half way through the file: its temporary holds megabytes.
    def half_made():
        found = parts(cache, tag)
        return found and os.path.getsize(os.path.join(cache, found[0])) > 1_000_000 and found[0]
    part = wait_until(half_made, 60, "the ingester's temporary over 1 MB", interval=0.05)
    assert service.ffmpegs()  # noted, so that the teardown checks it is gone too
    # Temporaries that are not this ingester's to remove: another instance's, and another user's.
    others = [os.path.join(cache, f".red-x.ts.{temporary_tag('fedcba9876543210', first)}.a1b2c3d4.part"),
              os.path.join(cache, f".blue-x.ts.{tag}.a1b2c3d4.part")]
    for path in others:
        with open(path, "wb") as f:
            f.write(b"x" * 1000)
    os.chown(others[1], NOBODY, NOBODY)

    mark = service.log_mark()
    os.kill(first, signal.SIGKILL)
    service.wait_for_log(r"the ingester killed by SIGKILL: starting a new one in [\d.]+ s", start=mark)
    second = int(service.wait_for_log(r"started the ingester pid (\d+)", start=mark).group(1))
    assert second != first
    service.wait_for_log(rf"ingester: removed {part}, left by ingester pid {first}", start=mark, timeout=10)
    assert not os.path.exists(os.path.join(cache, part))
    service.wait_for_log(r"ingester: all 1 files ingested", start=mark, timeout=120)
    service.wait_for_log(r"the ingester exited with status 0", start=mark, timeout=10)

    assert all(os.path.exists(p) for p in others)
    for path in others:
        os.unlink(path)
    assert not [n for n in os.listdir(cache) if n.endswith(".part")]
    cfg = config.load(str(tmp_path / "retrovue-air.toml"))
    assert service.channels()["tv"]["ingest"] == {"files": 1, "ingested": 1, "failed": 0, "current": None,
                                                  "percent": None}
    assert cfg.cache_dir == cache
    assert service.supervisor.pid == supervisor and service.proc.poll() is None
    assert service.front.pid == front and service.front.is_running()
    assert not psutil.pid_exists(first) or psutil.Process(first).status() == psutil.STATUS_ZOMBIE
    assert not service.ffmpegs()



def test_a_new_ingester_refuses_a_cache_loosened_since_and_ingests_once_it_is_fixed(
        service_factory, long_programme, tmp_path):
    require_tool("ffmpeg")
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o755)
    service = service_factory(
        extra_top=f'state_dir = "{tmp_path / "state"}"\ncache_dir = "{cache}"',
        extra=files_channel("tv", long_programme, width=640, height=360, video_kbps=1500, audio_kbps=128,
                            ingest=True))
    supervisor = service.supervisor.pid
    first = int(service.wait_for_log(r"started the ingester pid (\d+)").group(1))
    tag = temporary_tag(instance.name(str(tmp_path / "state"), str(tmp_path / "retrovue-air.toml")), first)
    wait_until(lambda: parts(str(cache), tag), 30, "the ingester at work")
    os.chmod(cache, 0o777)  # loosened while the service runs: checked again by each new ingester
    mark = service.log_mark()
    os.kill(first, signal.SIGKILL)
    refused = service.wait_for_log(r"ingester: not ingesting: .*", start=mark)
    os.chmod(cache, 0o755)
    assert f"{cache} is writable by others (mode 0777)" in refused.group(0)
    assert f"chmod go-w {cache}" in refused.group(0)
    service.wait_for_log(r"the ingester exited with status 1: starting a new one in 1\.0 s", start=mark)
    service.wait_for_log(rf"ingester: removed .*, left by ingester pid {first}", start=mark, timeout=10)
    service.wait_for_log(r"ingester: ingesting .*long\.mp4", start=mark)
    assert service.supervisor.pid == supervisor and service.proc.poll() is None
