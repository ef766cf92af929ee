"""`retrovue-air ingest --config FILE`: fill the cache now, with a progress bar, and exit."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from retrovue_air import child_process, config as configuration, house_format, ingest_progress, instance
from retrovue_air.ffmpeg.binary import ffmpeg_binary

from .ingester import Ingester, each, lower_priority, temporary_tag
from .progress import ChannelTally, ProgressFile
from .work_list import IngestJob, wanted, work_list

log = logging.getLogger("ingest")
BAR_WIDTH = 30


def progress_line(job: IngestJob, fraction: float, number: int, total: int) -> str:
    """`[#########                     ]  30 %  file 2 of 5  name.mkv`"""
    filled = int(fraction * BAR_WIDTH)
    return (f"[{'#' * filled}{' ' * (BAR_WIDTH - filled)}] {int(fraction * 100):3d} %  "
            f"file {number} of {total}  {os.path.basename(job.source)}")


class ProgressBar:
    """On a terminal, one line per file redrawn in place (the log says the rest); elsewhere nothing:
    the log's start and done lines are the record."""

    def __init__(self, out=sys.stderr):
        self.out = out
        self.tty = out.isatty()

    def __call__(self, job: IngestJob, fraction: float | None, number: int, total: int) -> None:
        if not self.tty:
            return
        if fraction is None:
            self.out.write("\n")
        else:
            self.out.write("\r" + progress_line(job, fraction, number, total) + "\x1b[K"
                           + ("\n" if fraction >= 1 else ""))
        self.out.flush()


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="retrovue-air ingest",
                                description="Transcode every file of the channels with ingest = true into "
                                            "their house format, now, and exit.")
    p.add_argument("--config", metavar="FILE", required=True, help="TOML configuration")
    args = p.parse_args(argv)
    try:
        cfg = configuration.load(args.config)
    except configuration.ConfigError as e:
        log.error("bad configuration: %s", e)
        return 2
    if not any(c.ingest for c in cfg.channels):
        log.warning("no channel has ingest = true in %s: nothing to do", args.config)
        return 0
    jobs = work_list(cfg)
    directory = house_format.cache_dir(cfg)
    if not jobs:
        log.info("every file is already in the cache (%s)", directory)
        return 0
    if cfg.user and os.geteuid() == 0:
        child_process.drop_privileges(cfg.user)  # the cache must be the service's to write, evict and touch
    lower_priority()
    bar = ProgressBar()
    if bar.tty:  # the bar says which file and how far; only warnings and errors interrupt it
        logging.getLogger("ingest").setLevel(logging.WARNING)
    max_bytes = round(cfg.cache_max_gb * 1e9) if cfg.cache_max_gb else None
    try:
        house_format.prepare_cache(directory)  # as the user who will own it
    except house_format.UnsafeCache as e:
        log.error("not ingesting: %s", e)
        return 2
    name = instance.name(cfg.state_dir, cfg.path)  # the service of this config's: it shows the progress too
    progress = ProgressFile(ingest_progress.progress_path(cfg), ChannelTally(wanted(cfg), jobs),
                            temporary_tag(name, os.getpid()))
    ingester = Ingester(jobs, directory, ffmpeg_binary(), max_bytes, cfg.ingest_jobs, each(bar, progress),
                        instance=name)
    try:
        code = ingester.run()
    except KeyboardInterrupt:
        log.error("interrupted: %d of %d files ingested", ingester.done, len(jobs))
        return 130
    finally:
        progress.write(running=False)
    for job, error in ingester.failures:
        log.error("%s: %s", job.source, error)
    if code:
        log.error("%d of %d files failed", len(ingester.failures), len(jobs))
        return 1
    logging.getLogger("ingest").setLevel(logging.INFO)
    log.info("%d files ingested into %s", len(jobs), directory)
    return 0
