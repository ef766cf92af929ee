"""What there is to ingest, and what the cache's size limit evicts: decisions, no processes."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from retrovue_air import house_format
from retrovue_air.config import Config, MediaFiles
from retrovue_air.house_format import HouseFormat


@dataclass(frozen=True)
class IngestJob:
    source: str
    duration: float  # the schedule's (ffprobe's) duration: the entry lasts exactly this
    has_audio: bool
    fmt: HouseFormat
    target: str  # the cache entry it becomes
    channel: str  # the first channel that wants it, for the log


def work_list(config: Config) -> list[IngestJob]:
    """Every (file, house format) that a channel with ingest = true plays and the cache lacks,
    each once however many channels share it, in the order the channels list them."""
    jobs: dict[str, IngestJob] = {}
    for job in wanted(config):
        if job.target not in jobs and house_format.lookup(house_format.cache_dir(config), job.source, job.fmt) is None:
            jobs[job.target] = job
    return list(jobs.values())


def wanted(config: Config) -> list[IngestJob]:
    """Every file of every channel with ingest = true, in the channel's format, cached or not."""
    directory = house_format.cache_dir(config)
    out = []
    for channel in config.channels:
        source = channel.source
        if not channel.ingest or not isinstance(source, MediaFiles) or source.schedule is None:
            continue
        fmt = house_format.house_format(channel)
        programmes = [*source.schedule.playlist, *(p for b in source.schedule.blocks for p in b.programmes)]
        for programme in {p.path: p for p in programmes}.values():
            try:
                target = house_format.entry_path(directory, programme.path, fmt)
            except OSError:
                continue  # gone since the config was read: the channel will say so when it plays
            out.append(IngestJob(programme.path, programme.duration, programme.path not in source.silent,
                                 fmt, target, channel.id))
    return out


@dataclass(frozen=True)
class CacheEntry:
    path: str
    size: int
    last_played: float  # the entry's mtime: set when ingested, touched each time a stream plays it


def evictions(entries: list[CacheEntry], max_bytes: int, keep: frozenset[str] = frozenset()) -> list[str]:
    """The least recently played entries to delete until the cache fits in max_bytes (never `keep`)."""
    total = sum(e.size for e in entries)
    out = []
    for entry in sorted(entries, key=lambda e: e.last_played):
        if total <= max_bytes:
            break
        if entry.path in keep:
            continue
        out.append(entry.path)
        total -= entry.size
    return out


def cache_entries(directory: str) -> list[CacheEntry]:
    out = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return out
    for name in names:
        if name.endswith(".ts") and not name.startswith("."):
            try:
                st = os.lstat(os.path.join(directory, name))
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue  # not an entry the ingester renamed into place
            out.append(CacheEntry(os.path.join(directory, name), st.st_size, st.st_mtime))
    return out
