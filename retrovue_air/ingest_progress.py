"""How far ingest got, per channel: written by the ingester, read by the front when it renders.

A small JSON file in the cache directory, replaced whole (write, then rename) at most once a
second and at every file's end, so a reader never sees half of one. It is the simplest channel
between the two that stays correct: the front only reads it when a page or /metrics asks, and
an ingester killed without a word is told apart by its pid no longer running.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass

PROGRESS_FILE = "ingest-progress.json"


@dataclass(frozen=True)
class ChannelIngest:
    files: int  # distinct files the channel plays
    ingested: int  # of them, in the cache in its format
    failed: int = 0
    current: str | None = None  # the file (name only) being ingested for it, if any
    percent: int | None = None  # how far that one is


@dataclass(frozen=True)
class IngestStatus:
    running: bool
    channels: dict[str, ChannelIngest]


def encode(pid: int, running: bool, channels: dict[str, ChannelIngest]) -> bytes:
    return json.dumps({"pid": pid, "running": running,
                       "channels": {cid: asdict(c) for cid, c in channels.items()}}).encode()


def decode(data: bytes, alive=lambda pid: _alive(pid)) -> IngestStatus | None:
    """The status in `data`, None if it is unreadable. A running ingester whose pid is gone was
    killed: nothing is being ingested."""
    try:
        doc = json.loads(data)
        running = bool(doc["running"]) and alive(int(doc["pid"]))
        channels = {}
        for cid, c in doc["channels"].items():
            c = ChannelIngest(**c)
            channels[cid] = c if running else ChannelIngest(c.files, c.ingested, c.failed)
        return IngestStatus(running, channels)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def write(directory: str, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".ingest-progress-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(directory, PROGRESS_FILE))
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read(directory: str) -> IngestStatus | None:
    try:
        with open(os.path.join(directory, PROGRESS_FILE), "rb") as f:
            return decode(f.read())
    except OSError:
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
