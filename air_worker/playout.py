"""Playout: the schedule's airings, decoded one after another into the encoder's two raw pipes.

The worker owns the write ends of both pipes for the whole life of one encoder, and each
airing's decoder borrows them in turn, so the encoder never sees an end of input between
two programmes. Each decoder writes exactly as many frames and samples as its airing
covers on the wall clock from the moment the stream started (counted cumulatively, so
rounding never adds up), which keeps picture, sound and schedule together however long
the channel runs. The decoders run ahead of real time until the pipes and the encoder's
input queues are full; that backlog covers the next decoder's start-up.

An airing keeps its slot on the clock whatever became of its file since the schedule was
laid: a file deleted, unreadable or cut short is played as far as it goes, and a slate (the
channel's name, the programme's title, "back shortly", silence) fills exactly the rest, so the
next airing starts on the guide's second instead of early.
"""

from __future__ import annotations

import collections
import fcntl
import logging
import os
import subprocess
import time

from retrovue_air import child_process
from retrovue_air.config import Channel
from retrovue_air.ffmpeg.exits import exit_reason, exit_wording, stderr_tail
from retrovue_air.ffmpeg.profile import AUDIO_RATE
from retrovue_air.schedule import Airing

from .ffmpeg_command import decoder_command, font_file, slate_command
from .slots import FileChecks, Piece, pieces

log = logging.getLogger("air_worker")

F_SETPIPE_SZ = 1031
PIPE_BYTES = 1 << 20  # the default limit for an unprivileged process (/proc/sys/fs/pipe-max-size)


def raw_pipe() -> tuple[int, int]:
    """A pipe as large as we may make it: less blocking between decoder and encoder."""
    read_end, write_end = os.pipe()
    try:
        fcntl.fcntl(write_end, F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:
        pass  # a smaller pipe only means more, shorter writes
    return read_end, write_end


class Playout:
    def __init__(self, channel: Channel, binary: str, video_fd: int, audio_fd: int, start: float):
        self.channel = channel
        self.binary = binary
        self.video_fd, self.audio_fd = video_fd, audio_fd
        self.start = start
        self.airings = channel.source.schedule.airings_from(start)
        self.files = FileChecks()
        self.queued: collections.deque[Piece] = collections.deque()
        self.frames_done = 0
        self.samples_done = 0
        self.decoder: subprocess.Popen | None = None
        self.airing: Airing | None = None
        self.piece: Piece | None = None
        self.failures_in_a_row = 0
        self.stderr_fd = -1
        self.last_error: list[str] = []  # the failed decoder's stderr, for the reason we give up

    def next_piece(self) -> tuple[Piece, int, int]:
        """The next piece that lasts at least one frame, with its frames and samples."""
        while True:
            if not self.queued:
                airing = next(self.airings)
                self.queued.extend(pieces(airing, self.start, self.files.playable(airing.programme)))
            piece = self.queued.popleft()
            frames = round((piece.end - self.start) * self.channel.fps) - self.frames_done
            samples = round((piece.end - self.start) * AUDIO_RATE) - self.samples_done
            if frames > 0:
                return piece, frames, samples

    def next(self) -> None:
        """Start the decoder (or the slate) of the next piece of the schedule."""
        source = self.channel.source
        piece, frames, samples = self.next_piece()
        airing = piece.airing
        programme = airing.programme
        if piece.slate is None:
            # One decoder for the slot, not one per pass of the file; a slot begun mid-pass spans one more.
            passes = programme.repeats + 1 if programme.repeats > 1 else 1
            inpoint = piece.inpoint % programme.duration if passes > 1 else piece.inpoint
            cmd = decoder_command(self.channel, self.binary, programme.path, inpoint, frames, samples,
                                  self.video_fd, self.audio_fd, programme.path not in source.silent, passes)
        else:
            cmd = slate_command(self.channel, self.binary, airing.programme.title, frames, samples,
                                self.video_fd, self.audio_fd, font_file())
        self.frames_done += frames
        self.samples_done += samples
        # Its stderr in memory, read when it exits: no pipe it could fill, no file left behind.
        self.close_stderr()
        self.stderr_fd = os.memfd_create("decoder-stderr", 0)
        self.decoder = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.stderr_fd,
            pass_fds=(self.video_fd, self.audio_fd), process_group=0,
            preexec_fn=child_process.exec_guard(os.getpid()))
        self.airing, self.piece = airing, piece
        when = time.strftime("%H:%M:%S", time.localtime(piece.start))
        if piece.slate is None:
            log.info("channel %s: on air %s from %.1f s (%s, %d frames), decoder pid %d", self.channel.id,
                     airing.programme.title, piece.inpoint, when, frames, self.decoder.pid)
        else:
            log.warning("channel %s: slate for %s from %s for %.1f s (%d frames), pid %d: %s", self.channel.id,
                        airing.programme.title, when, piece.end - piece.start, frames, self.decoder.pid,
                        piece.slate)

    def poll(self) -> bool:
        """Start the next decoder if this one is done; False once it is time to give up."""
        if self.decoder is None or self.decoder.poll() is None:
            return True
        code = self.decoder.returncode
        if code != 0:
            said = stderr_tail(self.stderr_fd)
            self.failures_in_a_row += 1
            status = exit_wording(code)
            self.last_error = [exit_reason("ffmpeg", code, said), *said]
            # Its missing frames are not made up: the stream runs that much ahead of the clock.
            what = "slate" if self.piece.slate is not None else "decoder"
            log.warning("channel %s: the %s of %s %s; its last words:\n  %s", self.channel.id, what,
                        self.airing.programme.path, status, "\n  ".join(said) or "(nothing)")
            if self.failures_in_a_row > len(self.channel.source.paths) + 1:
                return False
        else:
            self.failures_in_a_row = 0
        self.next()
        return True

    def stop(self) -> None:
        """Stop the running decoder and close the write ends: the encoder then sees its input end."""
        if self.decoder is not None and self.decoder.poll() is None:
            self.decoder.kill()
            self.decoder.wait()
        for fd in (self.video_fd, self.audio_fd):
            os.close(fd)
        self.video_fd = self.audio_fd = -1
        self.close_stderr()

    def close_stderr(self) -> None:
        if self.stderr_fd >= 0:
            os.close(self.stderr_fd)
            self.stderr_fd = -1
