"""The ingester's account of itself: per channel, how many of its files are in the cache and which
one is being made, kept up to date in this instance's progress file in the cache for the front."""

from __future__ import annotations

import logging
import os
import time

from retrovue_air import ingest_progress
from retrovue_air.ingest_progress import ChannelIngest

from .work_list import IngestJob

log = logging.getLogger("ingest")

WRITE_EVERY_SECONDS = 1.0


class ChannelTally:
    """Told each job's progress (the Ingester's on_progress), says each channel's ChannelIngest."""

    def __init__(self, wanted: list[IngestJob], pending: list[IngestJob]):
        self.targets: dict[str, list[str]] = {}
        for job in wanted:
            self.targets.setdefault(job.channel, []).append(job.target)
        waiting = {job.target for job in pending}
        self.cached = {job.target for job in wanted if job.target not in waiting}
        self.failed: set[str] = set()
        self.current: dict[str, tuple[str, float]] = {}  # target -> (file name, fraction)

    def note(self, job: IngestJob, fraction: float | None) -> None:
        if fraction is None:
            self.failed.add(job.target)
            self.current.pop(job.target, None)
        elif fraction >= 1:
            self.cached.add(job.target)
            self.current.pop(job.target, None)
        else:
            self.current[job.target] = (os.path.basename(job.source), fraction)

    def channels(self) -> dict[str, ChannelIngest]:
        out = {}
        for cid, targets in self.targets.items():
            now = next((self.current[t] for t in targets if t in self.current), None)
            out[cid] = ChannelIngest(files=len(targets), ingested=sum(t in self.cached for t in targets),
                                     failed=sum(t in self.failed for t in targets),
                                     current=now[0] if now else None, percent=int(now[1] * 100) if now else None)
        return out


class ProgressFile:
    """Writes the tally to this instance's progress file: at most once a second, and at each file's end."""

    def __init__(self, path: str, tally: ChannelTally, tag: str):
        self.path, self.tally, self.tag = path, tally, tag  # tag: whose its temporaries are
        self.written = 0.0

    def __call__(self, job: IngestJob, fraction: float | None, number: int, total: int) -> None:
        self.tally.note(job, fraction)
        now = time.monotonic()
        if fraction is None or fraction in (0.0, 1.0) or now - self.written >= WRITE_EVERY_SECONDS:
            self.write(running=True)
            self.written = now

    def write(self, running: bool) -> None:
        try:
            ingest_progress.write(self.path, ingest_progress.encode(os.getpid(), running, self.tally.channels()),
                                  self.tag)
        except OSError as e:
            log.warning("cannot write the ingest progress file %s: %s", self.path, e)
