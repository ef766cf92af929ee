"""How far ingest got, per channel: written by the ingester, read by the front when it renders;
and what the ingester's exit status says, which the supervisor reads.

A small JSON file in the cache directory, one per instance sharing it, replaced whole (write,
then rename) at most once a second and at every file's end, so a reader never sees half of
one. It is the simplest channel between the two that stays correct: the front only reads it
when a page or /metrics asks, and an ingester killed without a word is told apart by its pid
no longer running.

The front reads it in its loop, from a directory others may share, so the file is data, not
trust: read without blocking or following a link and capped (safe_files), and believed only if
every field has its type and range; anything else is no progress, said once a minute in the log.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, fields

from retrovue_air import child_process, house_format, instance, logs, safe_files
from retrovue_air.config import CHANNEL_ID

log = logging.getLogger("ingest_progress")

# What the ingester writes is about 100 bytes a channel. It is read and checked in the front's
# loop for each page: 2,000 channels (216 KB) take 17 ms there, a 1 MiB document 100 ms.
MAX_BYTES = 256 * 1024
MAX_CHANNELS = 2_000
MAX_COUNT = 10 ** 9
MAX_NAME = 255  # a file name, as the ingester writes it (basename only)
PID_MAX = 1 << 22  # the kernel's highest pid_max

_ignored = logs.RepeatedLine(log, logging.WARNING, every=60.0)


# The service's ingester exits 0 when every file is in, this when it went through its list but
# some files failed (each is logged): both are done, not a crash to start it again for, since
# the same files would fail the same way.
SOME_FILES_FAILED = 3


def ingester_finished(status: int) -> bool:
    """Whether a waitpid status is an ingester that got through its list (else: it died)."""
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) in (0, SOME_FILES_FAILED)


@dataclass(frozen=True)
class ChannelIngest:
    files: int  # distinct files the channel plays
    ingested: int  # of them, in the cache in its format
    failed: int = 0
    current: str | None = None  # the file (name only) being ingested for it, if any
    percent: int | None = None  # how far that one is


FIELDS = frozenset(f.name for f in fields(ChannelIngest))


@dataclass(frozen=True)
class IngestStatus:
    running: bool
    channels: dict[str, ChannelIngest]


class BadProgress(ValueError):
    """The document is not one the ingester writes: says what is wrong with it."""


def encode(pid: int, running: bool, channels: dict[str, ChannelIngest]) -> bytes:
    return json.dumps({"pid": pid, "running": running,
                       "channels": {cid: asdict(c) for cid, c in channels.items()}}).encode()


def parse(data: bytes, alive=child_process.process_exists) -> IngestStatus:
    """The status in `data`; BadProgress unless it is exactly what encode() makes. A running
    ingester whose pid is gone was killed: nothing is being ingested."""
    try:
        doc = json.loads(data)
    except RecursionError:  # the C decoder recurses once per nesting level
        raise BadProgress("nested too deeply") from None
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError both
        raise BadProgress(f"not JSON ({e})") from None
    if not isinstance(doc, dict) or set(doc) != {"pid", "running", "channels"}:
        raise BadProgress("not an object of pid, running and channels")
    pid, running, channels = doc["pid"], doc["running"], doc["channels"]
    if not _is_count(pid) or not 0 < pid < PID_MAX:
        raise BadProgress(f"pid: not a process id: {pid!r:.40}")
    if not isinstance(running, bool):
        raise BadProgress("running: not true or false")
    if not isinstance(channels, dict) or len(channels) > MAX_CHANNELS:
        raise BadProgress(f"channels: not an object of at most {MAX_CHANNELS} channels")
    running = running and alive(pid)
    out = {}
    for cid, c in channels.items():
        if not CHANNEL_ID.match(cid):
            raise BadProgress(f"channels: {cid!r:.70} is not a channel id")
        c = _channel(cid, c)
        out[cid] = c if running else ChannelIngest(c.files, c.ingested, c.failed)
    return IngestStatus(running, out)


def _channel(cid: str, c) -> ChannelIngest:
    if not isinstance(c, dict) or set(c) != FIELDS:
        raise BadProgress(f"channel {cid}: not an object of {', '.join(sorted(FIELDS))}")
    for key in ("files", "ingested", "failed"):
        if not _is_count(c[key]) or not 0 <= c[key] <= MAX_COUNT:
            raise BadProgress(f"channel {cid}: {key}: not a count: {c[key]!r:.40}")
    if c["ingested"] + c["failed"] > c["files"]:
        raise BadProgress(f"channel {cid}: more files ingested and failed than it has")
    current, percent = c["current"], c["percent"]
    if (current is None) != (percent is None):
        raise BadProgress(f"channel {cid}: current and percent come together")
    if current is not None:
        if not isinstance(current, str) or not 0 < len(current) <= MAX_NAME:
            raise BadProgress(f"channel {cid}: current: not a file name")
        if not _is_count(percent) or not 0 <= percent <= 100:
            raise BadProgress(f"channel {cid}: percent: not 0 to 100: {percent!r:.40}")
    return ChannelIngest(**c)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON's true is an int to Python


def decode(data: bytes, alive=child_process.process_exists) -> IngestStatus | None:
    """The status in `data`, None if it is not a well-formed progress document."""
    try:
        return parse(data, alive)
    except BadProgress:
        return None


def progress_path(config) -> str:
    """This instance's progress file: in the cache, named for the instance (instance.name), so
    that instances sharing the cache never show each other's ingest as their own."""
    return os.path.join(house_format.cache_dir(config),
                        f"ingest-progress-{instance.name(config.state_dir, config.path)}.json")


def write(path: str, data: bytes, tag: str) -> None:
    safe_files.replace_whole(path, data, tag)


def read(path: str) -> IngestStatus | None:
    """The progress in the file at path; None when there is none yet or it cannot be believed (logged)."""
    try:
        return parse(safe_files.read_regular(path, MAX_BYTES))
    except FileNotFoundError:
        return None  # no ingester has written one yet
    except (OSError, BadProgress) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        _ignored.say(f"ingest progress file {path}: {why}: showing no ingest progress")
        return None
