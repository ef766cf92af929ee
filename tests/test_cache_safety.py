"""The ingest cache is the service's alone: a cache directory others can write is refused, and no
file in it is written through a name someone planted there first.

Whoever can write the cache decides what the channels play (an entry's name is a hash of the
source's path, size and mtime and of the format: anyone who can read the media can work it out),
so a directory writable by group or others, or owned by another user, is refused as ssh refuses
a loose key. Below that check, every cache file is created new (O_EXCL, O_NOFOLLOW) and renamed
into place, and read without following a link: a directory loosened after the check costs at
most an ingest, never a file outside the cache.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap

import pytest
from harness import files_channel, require_tool

from ingest.ingester import Ingester
from ingest.work_list import IngestJob
from retrovue_air import config, house_format, safe_files
from retrovue_air.house_format import HouseFormat

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="plays another user: needs root")
NOBODY = 65534
FMT = HouseFormat(width=160, height=90, fps=25, gop=25, video_kbps=200, audio_kbps=64)


def mkdir(path, mode: int):
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)  # not mkdir's mode: the umask would take bits off
    return path


# The directory check, on real directories


def test_a_directory_only_its_owner_can_write_is_private(tmp_path):
    assert safe_files.private_directory_problem(str(mkdir(tmp_path / "cache", 0o755)), os.geteuid()) is None
    assert safe_files.private_directory_problem(str(mkdir(tmp_path / "closed", 0o700)), os.geteuid()) is None


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757, 0o1777, 0o3770])
def test_a_directory_group_or_others_can_write_is_refused_naming_it_its_mode_and_the_fix(tmp_path, mode):
    cache = str(mkdir(tmp_path / "cache", mode))
    problem = safe_files.private_directory_problem(cache, os.geteuid())
    assert problem is not None and cache in problem, problem
    assert f"mode {mode & 0o7777:04o}" in problem, problem
    assert f"chmod go-w {cache}" in problem, problem


@needs_root
def test_a_directory_owned_by_another_user_is_refused(tmp_path):
    cache = mkdir(tmp_path / "cache", 0o755)
    os.chown(cache, NOBODY, NOBODY)
    problem = safe_files.private_directory_problem(str(cache), os.geteuid())
    assert problem is not None and "owned by nobody" in problem, problem
    assert f"chown {pwd_name(os.geteuid())} {cache}" in problem, problem


def pwd_name(uid: int) -> str:
    import pwd

    return pwd.getpwuid(uid).pw_name


def test_a_parent_others_can_write_is_refused_unless_sticky(tmp_path):
    # Others who can write a parent can rename the cache away and put their own in its place;
    # the sticky bit (as on /tmp) keeps them from renaming what is not theirs.
    loose = mkdir(tmp_path / "loose", 0o777)
    cache = str(mkdir(loose / "cache", 0o755))
    problem = safe_files.private_directory_problem(cache, os.geteuid())
    assert problem is not None and str(loose) in problem and f"chmod go-w {loose}" in problem, problem
    os.chmod(loose, 0o1777)
    assert safe_files.private_directory_problem(cache, os.geteuid()) is None


def test_a_cache_not_made_yet_is_judged_by_the_parent_it_will_be_made_in(tmp_path):
    parent = mkdir(tmp_path / "state", 0o755)
    assert safe_files.private_directory_problem(str(parent / "cache"), os.geteuid()) is None
    os.chmod(parent, 0o777)
    assert str(parent) in safe_files.private_directory_problem(str(parent / "cache"), os.geteuid())


@needs_root
def test_a_link_on_the_way_owned_by_another_user_is_refused(tmp_path):
    real = mkdir(tmp_path / "real", 0o755)
    link = tmp_path / "link"
    link.symlink_to(real)
    assert safe_files.private_directory_problem(str(link), os.geteuid()) is None
    os.lchown(link, NOBODY, NOBODY)  # its owner can point it anywhere
    problem = safe_files.private_directory_problem(str(link), os.geteuid())
    assert problem is not None and str(link) in problem and "owned by nobody" in problem, problem


# The configuration: at --check-config, at start and at a reload


def ingest_config(tmp_path, schedule_media, top: str) -> str:
    path = tmp_path / "tv.toml"
    path.write_text(f'state_dir = "{tmp_path / "state"}"\n{top}\n'
                    + files_channel("tv", schedule_media["red"], width=160, height=90, video_kbps=200,
                                    audio_kbps=64, ingest=True))
    return str(path)


def test_a_cache_dir_others_can_write_is_a_config_error_with_file_line_and_key(tmp_path, schedule_media):
    cache = mkdir(tmp_path / "shared", 0o777)
    path = ingest_config(tmp_path, schedule_media, f'cache_dir = "{cache}"')
    with pytest.raises(config.ConfigError) as e:
        config.load(path)
    assert str(e.value).startswith(f"{path}:2: cache_dir: {cache} is writable by others (mode 0777)"), str(e.value)
    assert f"chmod go-w {cache}" in str(e.value)
    check = subprocess.run([sys.executable, "-m", "supervisor", "--check-config", path],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 2 and f"{path}:2: cache_dir: {cache}" in check.stderr, check.stderr
    start = subprocess.run([sys.executable, "-m", "supervisor", "--config", path, "--listen", "127.0.0.1:0"],
                           capture_output=True, text=True, timeout=60)
    assert start.returncode == 2 and f"chmod go-w {cache}" in start.stderr, start.stderr
    os.chmod(cache, 0o755)
    assert config.load(path).cache_dir == str(cache)


def test_the_default_cache_is_judged_by_its_state_dir(tmp_path, schedule_media):
    path = ingest_config(tmp_path, schedule_media, "")
    state = mkdir(tmp_path / "state", 0o777)
    with pytest.raises(config.ConfigError) as e:
        config.load(path)
    assert str(e.value).startswith(f"{path}:1: state_dir: "), str(e.value)
    assert f"chmod go-w {state}" in str(e.value)


def test_a_loose_directory_is_no_concern_of_a_config_that_ingests_nothing(tmp_path, schedule_media):
    cache = mkdir(tmp_path / "shared", 0o777)
    path = tmp_path / "tv.toml"
    path.write_text(f'state_dir = "{tmp_path / "state"}"\ncache_dir = "{cache}"\n'
                    + files_channel("tv", schedule_media["red"]))
    assert config.load(str(path)).cache_dir == str(cache)


def test_a_reload_with_the_cache_loosened_is_refused_and_the_service_goes_on(
        service_factory, schedule_media, tmp_path):
    require_tool("ffmpeg")
    cache = mkdir(tmp_path / "cache", 0o755)
    service = service_factory(extra_top=f'state_dir = "{tmp_path / "state"}"\ncache_dir = "{cache}"',
                              extra=files_channel("tv", schedule_media["red"], width=160, height=90,
                                                  video_kbps=200, audio_kbps=64, ingest=True))
    service.wait_for_log(r"the ingester exited with status 0", timeout=60)
    front = service.front.pid
    os.chmod(cache, 0o777)
    mark = service.log_mark()
    service.proc.send_signal(signal.SIGHUP)
    line = service.wait_for_log(r"SIGHUP: configuration refused, keeping the running one: .*cache_dir", start=mark)
    assert f"chmod go-w {cache}" in line.string
    assert service.proc.poll() is None and service.front.pid == front and service.front.is_running()
    assert service.channels()["tv"]["ingest"]["ingested"] == 1


# The files: a link planted by nobody is never written through


@pytest.fixture
def shared_dir():
    """A folder under /tmp that nobody can reach (pytest's own are the owner's only)."""
    top = tempfile.mkdtemp(prefix="retrovue-cache-safety-")
    os.chmod(top, 0o755)
    yield top
    shutil.rmtree(top)


def as_nobody(script: str, *args: str) -> None:
    subprocess.run(["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c", textwrap.dedent(script), *args],
                   check=True, timeout=30, cwd="/")


@needs_root
def test_links_planted_by_another_user_in_the_cache_never_get_their_target_written(shared_dir, schedule_media):
    require_tool("ffmpeg")
    from retrovue_air.ffmpeg.binary import ffmpeg_binary

    victim = os.path.join(shared_dir, "victim")  # the service user's, in a folder nobody cannot write
    with open(victim, "w") as f:
        f.write("keep")
    # Loosened after the service checked it: the opens themselves must hold.
    cache = os.path.join(shared_dir, "cache")
    os.mkdir(cache)
    os.chmod(cache, 0o777)
    target = house_format.entry_path(cache, str(schedule_media["red"]), FMT)
    name = os.path.basename(target)
    # Every name today's and yesterday's ingester could write: the temporaries and the finished names.
    planted = [target + ".json.part", target + ".json", target, os.path.join(cache, f".{name}.{os.getpid()}.part")]
    as_nobody("""
        import os, sys
        victim, *names = sys.argv[1:]
        for name in names:
            os.symlink(victim, name)
    """, victim, *planted)
    assert all(os.path.islink(p) for p in planted)

    job = IngestJob(str(schedule_media["red"]), 4.0, True, FMT, target, "tv")
    assert Ingester([job], cache, ffmpeg_binary()).run() == 0
    with open(victim) as f:
        assert f.read() == "keep"
    # The entry is ours: the links at its names were replaced, not followed.
    assert not os.path.islink(target) and not os.path.islink(target + ".json")
    assert os.stat(target).st_uid == os.geteuid() and os.path.getsize(target) > 10_000
    assert house_format.lookup(cache, str(schedule_media["red"]), FMT).path == target


@needs_root
def test_a_cache_entry_planted_as_links_is_not_played(shared_dir, schedule_media):
    cache = os.path.join(shared_dir, "cache")
    os.mkdir(cache)
    os.chmod(cache, 0o777)
    source = str(schedule_media["red"])
    target = house_format.entry_path(cache, source, FMT)
    elsewhere = os.path.join(shared_dir, "elsewhere")
    os.mkdir(elsewhere)
    os.chmod(elsewhere, 0o777)
    as_nobody("""
        import json, os, sys
        target, elsewhere = sys.argv[1:]
        with open(os.path.join(elsewhere, "x.json"), "w") as f:
            json.dump({"start_time": 0.0, "video_start": 0.0}, f)
        open(os.path.join(elsewhere, "x.ts"), "w").close()
        os.symlink(os.path.join(elsewhere, "x.json"), target + ".json")
        os.symlink(os.path.join(elsewhere, "x.ts"), target)
    """, target, elsewhere)
    assert house_format.lookup(cache, source, FMT) is None


@needs_root
def test_a_cache_entry_another_user_made_is_not_played(shared_dir, schedule_media):
    cache = os.path.join(shared_dir, "cache")
    os.mkdir(cache)
    os.chmod(cache, 0o777)
    source = str(schedule_media["red"])
    target = house_format.entry_path(cache, source, FMT)
    as_nobody("""
        import json, sys
        target = sys.argv[1]
        with open(target + ".json", "w") as f:
            json.dump({"start_time": 0.0, "video_start": 0.0}, f)
        with open(target, "wb") as f:
            f.write(b"G" * 188 * 100)  # their programme, not ours
    """, target)
    assert os.stat(target).st_uid == NOBODY
    assert house_format.lookup(cache, source, FMT) is None
