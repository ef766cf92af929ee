"""ChannelLifecycle: what a channel does when told what happened, as a pure state machine.

    IDLE --tune_in--> STARTING --first_bytes--> LIVE --last tune_out--> STOPPING --worker_exited--> IDLE
                          |                                                  ^
                          +--worker exits before any byte--> FAILED         |
                          +--last tune_out---------------------------------+

It owns no socket and no process: each method takes an event and returns the actions
the front must carry out. Every "what if a viewer arrives while…" question is answered
here, so it is answered once, and tested without a process.

At most one stream exists per channel: a viewer who arrives while the channel is
stopping waits for the old worker to be reaped, then gets the next stream.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable, Hashable
from dataclasses import dataclass


class State(enum.Enum):
    IDLE = "idle"
    STARTING = "starting"
    LIVE = "live"
    STOPPING = "stopping"
    FAILED = "failed"


@dataclass(frozen=True)
class RequestStream:
    """Ask the supervisor for an Air worker for this stream."""
    stream: int


@dataclass(frozen=True)
class StopStream:
    """Send STOP to the stream's worker and close the stream (safe to repeat)."""
    stream: int


@dataclass(frozen=True)
class Admit:
    """Start sending the stream to these viewers: 200, then their cursor."""
    viewers: tuple
    from_start: bool


@dataclass(frozen=True)
class Refuse:
    """Answer these waiting viewers 503 with the reason."""
    viewers: tuple
    reason: str


@dataclass(frozen=True)
class Disconnect:
    """Close these watching viewers: their stream is over."""
    viewers: tuple
    reason: str


Action = RequestStream | StopStream | Admit | Refuse | Disconnect

_stream_ids = itertools.count(1)


class ChannelLifecycle:
    def __init__(self, channel_id: str, next_stream: Callable[[], int] = lambda: next(_stream_ids),
                 retry_after: float = 0.0):
        self.channel_id = channel_id
        self._next_stream = next_stream
        self.retry_after = retry_after  # how long a failed channel refuses before trying again
        self.state = State.IDLE
        self.stream: int | None = None
        self.worker_pid: int | None = None
        self.ffmpeg_pid: int | None = None
        self.waiting: set[Hashable] = set()  # tuned in, no 200 yet
        self.watching: set[Hashable] = set()  # receiving the stream
        self.failure: str | None = None  # why the last stream failed
        self.failed_at = 0.0
        self._stop_sent = False
        self._went_live = False
        self._gave_up = False  # the worker said its ffmpeg cannot be kept running

    @property
    def viewer_count(self) -> int:
        return len(self.waiting) + len(self.watching)

    def _start(self) -> list[Action]:
        self.state = State.STARTING
        self._went_live = False
        self.failure = None
        return self._new_stream()

    def _new_stream(self) -> list[Action]:
        self.stream = self._next_stream()
        self.worker_pid = self.ffmpeg_pid = None
        self._stop_sent = False
        self._gave_up = False
        return [RequestStream(self.stream)]

    def _stop(self) -> list[Action]:
        self.state = State.STOPPING
        if self.worker_pid is None:  # not spawned yet: STOP goes out when it is
            return []
        self._stop_sent = True
        return [StopStream(self.stream)]

    def _fail(self, reason: str, now: float) -> list[Action]:
        """The channel cannot stream now: everyone is told why, and it rests."""
        actions: list[Action] = []
        self.failure = reason
        self.failed_at = now
        if self.watching:
            actions.append(Disconnect(tuple(self.watching), reason))
            self.watching.clear()
        if self.waiting:
            actions.append(Refuse(tuple(self.waiting), reason))
            self.waiting.clear()
        return actions

    def _current(self, stream: int) -> bool:
        return stream == self.stream and self.state in (State.STARTING, State.LIVE, State.STOPPING)

    # Viewers

    def tune_in(self, viewer: Hashable, now: float = 0.0) -> list[Action]:
        if self.state is State.LIVE:
            self.watching.add(viewer)
            return [Admit((viewer,), from_start=False)]
        if self.state is State.FAILED and now < self.failed_at + self.retry_after:
            return [Refuse((viewer,), self.failure or "failed")]
        self.waiting.add(viewer)
        if self.state in (State.IDLE, State.FAILED):
            return self._start()
        return []  # STARTING: served when the first bytes arrive; STOPPING: by the next stream

    def tune_out(self, viewer: Hashable) -> list[Action]:
        self.waiting.discard(viewer)
        self.watching.discard(viewer)
        if self.viewer_count or self.state not in (State.STARTING, State.LIVE):
            return []
        return self._stop()

    # The stream's worker and ffmpeg

    def worker_spawned(self, stream: int, pid: int) -> list[Action]:
        if not self._current(stream):
            return []
        self.worker_pid = pid
        if self.state is State.STOPPING and not self._stop_sent:
            self._stop_sent = True
            return [StopStream(stream)]
        return []

    def stream_ready(self, stream: int, ffmpeg_pid: int) -> list[Action]:
        """A stream FD arrived (the first, or a restarted ffmpeg's). StopStream if nobody wants it."""
        if not self._current(stream):
            return [StopStream(stream)]
        self.ffmpeg_pid = ffmpeg_pid
        if self.state is State.STOPPING:
            return [StopStream(stream)]
        return []

    def first_bytes(self, stream: int) -> list[Action]:
        if not self._current(stream) or self.state is not State.STARTING:
            return []
        self.state = State.LIVE
        self._went_live = True
        admitted = tuple(self.waiting)
        self.watching |= self.waiting
        self.waiting.clear()
        return [Admit(admitted, from_start=True)] if admitted else []

    def start_timed_out(self, stream: int, reason: str, now: float = 0.0) -> list[Action]:
        """No stream (FD or first byte) in time: its viewers hear why, the worker is stopped.

        Also for the stream that replaces a dead worker's under LIVE viewers: they are
        closed rather than left connected to a stream that never comes."""
        if not self._current(stream) or self.state not in (State.STARTING, State.LIVE):
            return []
        actions = self._fail(reason, now)
        self._gave_up = True
        return actions + self._stop()

    def stream_failed(self, stream: int, reason: str) -> list[Action]:
        """The worker gave up on its ffmpeg; its EOF and exit follow."""
        if self._current(stream):
            self.failure = reason
            self._gave_up = True
        return []

    def stream_ended(self, stream: int, now: float = 0.0) -> list[Action]:
        """EOF on the stream: the worker is gone or going."""
        if not self._current(stream):
            return []
        return [StopStream(stream)] + self._lost_worker("the stream ended", now)

    def _lost_worker(self, why: str, now: float) -> list[Action]:
        if self.state is not State.LIVE:
            return []
        if self._gave_up or not self.watching:
            actions = self._fail(self.failure or why, now)
            self.state = State.STOPPING
            self._stop_sent = True
            return actions
        # The worker died under its viewers (killed, crashed): they stay connected and
        # the next stream continues in the same buffer, after a TS discontinuity.
        return self._new_stream()

    def worker_exited(self, stream: int, status: str, now: float = 0.0) -> list[Action]:
        if not self._current(stream):
            return []
        actions: list[Action] = [StopStream(stream)]
        if self.state is State.LIVE and not self._stop_sent:
            actions += self._lost_worker(f"air worker {status}", now)
            if self.state is State.LIVE:
                return actions
        unasked = not self._stop_sent
        self.worker_pid = self.ffmpeg_pid = None
        self.stream = None
        if self._gave_up or (unasked and not self._went_live):
            # It never produced a byte, or cannot keep ffmpeg running: starting it again
            # at once for the same viewers would fail the same way, so they hear why.
            actions += self._fail(self.failure or f"air worker {status}", now)
            self.state = State.FAILED
            return actions
        if self.watching:
            actions.append(Disconnect(tuple(self.watching), self.failure or f"air worker {status}"))
            self.watching.clear()
        self.state = State.IDLE
        if self.waiting:  # they arrived while the old stream was stopping
            actions += self._start()
        return actions
