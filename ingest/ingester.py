"""The ingester: runs one ffmpeg per file (ingest_jobs at a time) into the cache, at idle priority.

It is its own process, forked by the supervisor when a channel has ingest = true (and run in
the foreground by `retrovue-air ingest`): an hour of 1080p takes minutes of CPU, which must
come from nobody's loop. It runs niced to 19 and in the idle I/O class, which its ffmpegs
inherit, so that live channels always come first. Each file is written under a temporary
name and renamed when complete; a file that fails is reported and skipped, the others go on.
Nothing waits for it: a channel plays from the cache once its whole window is there.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import selectors
import shutil
import signal
import socket
import stat
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable

from retrovue_air import child_process, house_format, ingest_progress, instance, safe_files
from retrovue_air.ffmpeg.binary import ffmpeg_binary
from retrovue_air.ffmpeg.exits import exit_reason, stderr_tail
from retrovue_air.ingest_progress import SOME_FILES_FAILED

from .progress import ChannelTally, ProgressFile
from .work_list import IngestJob, cache_entries, evictions, wanted, work_list

log = logging.getLogger("ingest")

@dataclass
class Running:
    job: IngestJob
    proc: subprocess.Popen
    progress_fd: int
    stderr_fd: int
    temp: str
    began: float
    partial: bytes = b""
    done_us: int = 0

    @property
    def fraction(self) -> float:
        return min(1.0, self.done_us / 1e6 / self.job.duration) if self.job.duration > 0 else 0.0


def parse_progress(data: bytes) -> tuple[int | None, bytes]:
    """The last out_time_us in ffmpeg's -progress output (key=value lines), and the unfinished line."""
    *lines, rest = data.split(b"\n")
    last = None
    for line in lines:
        key, _, value = line.partition(b"=")
        if key == b"out_time_us" and value.strip().lstrip(b"-").isdigit():
            last = max(0, int(value))
    return last, rest


def lower_priority() -> None:
    """Idle CPU and I/O priority for this process and every ffmpeg it starts (they inherit both)."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, 19)
    except OSError as e:  # a system call filter may refuse it
        log.warning("cannot lower the CPU priority (%s): ingest runs at normal priority", e)
    ionice = shutil.which("ionice")
    if ionice is None:
        log.warning("ionice (util-linux) not found: ingest runs at normal I/O priority")
        return
    result = subprocess.run([ionice, "-c", "3", "-p", str(os.getpid())], capture_output=True, text=True)
    if result.returncode != 0:
        log.warning("ionice -c 3 refused (%s): ingest runs at normal I/O priority", result.stderr.strip())


@dataclass
class Ingester:
    jobs: list[IngestJob]
    directory: str
    binary: str
    max_bytes: int | None = None
    parallel: int = 1
    # Told each running job's progress as it moves (job, fraction done, its number from 1, how many),
    # and its end: fraction 1.0, or None when it failed.
    on_progress: Callable[[IngestJob, float | None, int, int], None] = lambda job, fraction, number, total: None
    failures: list[tuple[IngestJob, str]] = field(default_factory=list)
    # The instance it ingests for (instance.name): its temporaries say so, with this process's pid.
    instance: str = "ingest"
    done: int = 0  # files ingested so far

    def run(self, wake: socket.socket | None = None) -> int:
        """Ingest every job; 0 when all succeeded, 1 if any failed, 0 at once when woken (stop)."""
        os.makedirs(self.directory, mode=0o755, exist_ok=True)
        self.remove_leftovers()
        pending = collections.deque(self.jobs)
        running: dict[int, Running] = {}
        sel = selectors.DefaultSelector()
        try:
            if wake is not None:
                sel.register(wake, selectors.EVENT_READ, None)
            while pending or running:
                while pending and len(running) < self.parallel:
                    job = pending.popleft()
                    try:
                        r = self.start(job)
                    except OSError as e:  # an unwritable or full cache: the job fails, not the ingester
                        self.fail(job, f"cannot start it: {e.strerror or e}")
                        continue
                    running[r.progress_fd] = r
                    sel.register(r.progress_fd, selectors.EVENT_READ, r)
                if not running:
                    continue  # every job left failed to start: nothing to wait for
                for key, _ in sel.select():
                    if key.data is None:
                        return 0  # the supervisor says stop
                    r = key.data
                    if not self.read_progress(r):
                        sel.unregister(r.progress_fd)
                        del running[r.progress_fd]
                        self.finish(r)
            return 1 if self.failures else 0
        finally:
            for r in running.values():  # stopped (or interrupted) half way: nothing half-made stays
                r.proc.kill()
                r.proc.wait()
                self.close(r)
                remove(r.temp)
            sel.close()

    @property
    def tag(self) -> str:
        """Whose a temporary is (safe_files.create_temporary): this instance's ingester, this process."""
        return temporary_tag(self.instance, os.getpid())

    def start(self, job: IngestJob) -> Running:
        # ffmpeg writes a file we made new, through its descriptor: given a name, it would open
        # whatever is there by then (-y truncates, and follows a link).
        out_fd, temp = safe_files.create_temporary(self.directory, os.path.basename(job.target), self.tag)
        progress_r, progress_w = os.pipe()
        stderr_fd = os.memfd_create("ingest-stderr", 0)
        try:
            cmd = house_format.ingest_command(self.binary, job.source, job.duration, job.has_audio, job.fmt,
                                              f"pipe:{out_fd}", progress_w)
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr_fd,
                                    pass_fds=(progress_w, out_fd), process_group=0,
                                    preexec_fn=child_process.exec_guard(os.getpid()))
        except BaseException:
            for fd in (progress_r, stderr_fd):
                os.close(fd)
            remove(temp)
            raise
        finally:
            os.close(progress_w)  # ffmpeg's now: its exit is our EOF
            os.close(out_fd)
        os.set_blocking(progress_r, False)
        log.info("ingesting %s for channel %s (%dx%d %d fps), ffmpeg pid %d", job.source, job.channel,
                 job.fmt.width, job.fmt.height, job.fmt.fps, proc.pid)
        log.debug("ingest command: %s", " ".join(cmd))
        self.on_progress(job, 0.0, self.number(job), len(self.jobs))
        return Running(job, proc, progress_r, stderr_fd, temp, time.monotonic())

    def read_progress(self, r: Running) -> bool:
        """Note how far ffmpeg got; False at EOF (it exited)."""
        try:
            data = os.read(r.progress_fd, 65536)
        except BlockingIOError:
            return True
        if not data:
            return False
        done_us, r.partial = parse_progress(r.partial + data)
        if done_us is not None and done_us > r.done_us:
            r.done_us = done_us
            # 100 % is said once, when the entry is in place.
            self.on_progress(r.job, min(r.fraction, 0.999), self.number(r.job), len(self.jobs))
        return True

    def finish(self, r: Running) -> None:
        code = r.proc.wait()
        job = r.job
        error = None
        if code != 0:
            error = exit_reason("ffmpeg", code, stderr_tail(r.stderr_fd))
        self.close(r)
        if error is None:
            try:
                start_time, video_start = probe_starts(r.temp)
                house_format.write_sidecar(job.target, job.source, start_time, video_start, job.duration, job.fmt,
                                           self.tag)
                os.replace(r.temp, job.target)
            except (OSError, ValueError) as e:
                error = f"cannot store the result: {e}"
        if error is not None:
            remove(r.temp)
            self.fail(job, error)
            return
        self.done += 1
        self.on_progress(job, 1.0, self.number(job), len(self.jobs))
        size = os.stat(job.target).st_size
        log.info("ingested %s in %.1f s (%.1f MB) -> %s", job.source, time.monotonic() - r.began,
                 size / 1e6, job.target)
        if self.max_bytes is not None:
            self.evict(keep=frozenset({job.target}))

    def fail(self, job: IngestJob, error: str) -> None:
        self.failures.append((job, error))
        self.on_progress(job, None, self.number(job), len(self.jobs))
        log.error("%s failed: %s", job.source, error)

    def number(self, job: IngestJob) -> int:
        return self.jobs.index(job) + 1

    def evict(self, keep: frozenset[str]) -> None:
        for path in evictions(cache_entries(self.directory), self.max_bytes, keep):
            log.info("cache over %.1f GB: evicting %s (least recently played)", self.max_bytes / 1e9, path)
            remove(path + house_format.SIDECAR)
            remove(path)

    @staticmethod
    def close(r: Running) -> None:
        for fd in (r.progress_fd, r.stderr_fd):
            try:
                os.close(fd)
            except OSError:
                pass

    def remove_leftovers(self) -> None:
        """Remove what ingesters of this instance that were killed mid-file left half-made."""
        entries = []
        for name in os.listdir(self.directory):
            try:
                entries.append((name, os.lstat(os.path.join(self.directory, name))))
            except FileNotFoundError:
                pass
        for name, pid in leftovers(entries, self.instance, os.geteuid(), child_process.process_exists):
            remove(os.path.join(self.directory, name))
            log.info("removed %s, left by ingester pid %d", name, pid)


def leftovers(entries, instance: str, uid: int, alive) -> list[tuple[str, int]]:
    """Of (name, lstat) in the cache, the temporaries (with the pid that made each) that are ours to remove.

    Only what an ingester of this instance made (its tag: safe_files.create_temporary), as a regular
    file of our user, in a process that is gone: another instance's ingester, or a live one of ours
    (retrovue-air ingest beside the service), may be writing its own right now."""
    out = []
    for name, st in entries:
        made = safe_files.temporary_of(name)
        if made is None:
            continue
        owner, _, pid = made[1].rpartition("-")
        if owner != instance or not (pid.isascii() and pid.isdigit()):
            continue
        if not stat.S_ISREG(st.st_mode) or st.st_uid != uid or alive(int(pid)):
            continue
        out.append((name, int(pid)))
    return out


def temporary_tag(instance: str, pid: int) -> str:
    return f"{instance}-{pid}"


def probe_starts(path: str) -> tuple[float, float]:
    """(the file's first timestamp, its first picture's), which the remux's cut points are relative to."""
    from retrovue_air.media_info import ffprobe_binary

    result = subprocess.run([ffprobe_binary(), "-v", "error", "-show_entries", "format=start_time:stream=codec_type,start_time",
                             "-of", "json", path], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise ValueError(f"ffprobe cannot read the result: {result.stderr.strip()[-200:]}")
    doc = json.loads(result.stdout)
    video = [s for s in doc.get("streams", []) if s.get("codec_type") == "video"]
    return float(doc["format"]["start_time"]), float(video[0]["start_time"])


def remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def each(*callbacks):
    """One on_progress that tells several."""
    def tell(*args) -> None:
        for callback in callbacks:
            callback(*args)
    return tell


class ProgressLog:
    """The service's progress report: a log line per file every 10 percent."""

    def __init__(self):
        self.logged: dict[str, int] = {}

    def __call__(self, job: IngestJob, fraction: float | None, number: int, total: int) -> None:
        if fraction is None:
            return
        step = int(fraction * 10)
        if self.logged.get(job.target, -1) < step:
            self.logged[job.target] = step
            log.info("%s %d %% (file %d of %d)", os.path.basename(job.source), step * 10, number, total)


def run_ingester(config, parent_pid: int) -> int:
    """The supervisor's ingester child: ingest what the config's channels lack, then exit."""
    child_process.become("ingester", "ingester", parent_pid)
    import prctl

    prctl.set_no_new_privs(True)
    lower_priority()
    wake_r, wake_w = socket.socketpair()
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
    signal.signal(signal.SIGTERM, lambda *_: None)
    directory = house_format.cache_dir(config)
    progress = None
    try:
        try:
            house_format.prepare_cache(directory)
        except house_format.UnsafeCache as e:
            log.error("not ingesting: %s", e)
            return 1
        except OSError as e:
            log.error("not ingesting: cannot make the cache directory %s: %s", directory, e.strerror)
            return 1
        jobs = work_list(config)
        name = instance.name(config.state_dir, config.path)
        progress = ProgressFile(ingest_progress.progress_path(config), ChannelTally(wanted(config), jobs),
                                temporary_tag(name, os.getpid()))
        if not jobs:
            log.info("every file is in the cache (%s)", directory)
            return 0
        log.info("%d files to ingest into %s", len(jobs), directory)
        max_bytes = round(config.cache_max_gb * 1e9) if config.cache_max_gb else None
        ingester = Ingester(jobs, directory, ffmpeg_binary(), max_bytes, config.ingest_jobs,
                            each(ProgressLog(), progress), instance=name)
        code = ingester.run(wake_r)
        if code == 0 and ingester.done == len(jobs):
            log.info("all %d files ingested", len(jobs))
        return SOME_FILES_FAILED if code else 0
    finally:
        if progress is not None:
            progress.write(running=False)
        signal.set_wakeup_fd(-1)
        wake_r.close()
        wake_w.close()
