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
    def __init__(self, channel_id: str, next_stream: Callable[[], int] = lambda: next(_stream_ids)):
        self.channel_id = channel_id
        self._next_stream = next_stream
        self.state = State.IDLE
        self.stream: int | None = None
        self.worker_pid: int | None = None
        self.ffmpeg_pid: int | None = None
        self.waiting: set[Hashable] = set()  # tuned in, no 200 yet
        self.watching: set[Hashable] = set()  # receiving the stream
        self.failure: str | None = None  # why the last stream failed
        self._stop_sent = False
        self._went_live = False

    @property
    def viewer_count(self) -> int:
        return len(self.waiting) + len(self.watching)

    def _start(self) -> list[Action]:
        self.state = State.STARTING
        self.stream = self._next_stream()
        self.worker_pid = self.ffmpeg_pid = None
        self.failure = None
        self._stop_sent = False
        self._went_live = False
        return [RequestStream(self.stream)]

    def _stop(self) -> list[Action]:
        self.state = State.STOPPING
        if self.worker_pid is None:  # not spawned yet: STOP goes out when it is
            return []
        self._stop_sent = True
        return [StopStream(self.stream)]

    def _current(self, stream: int) -> bool:
        return stream == self.stream and self.state in (State.STARTING, State.LIVE, State.STOPPING)

    # Viewers

    def tune_in(self, viewer: Hashable) -> list[Action]:
        if self.state is State.LIVE:
            self.watching.add(viewer)
            return [Admit((viewer,), from_start=False)]
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
        """The stream FD arrived. Returns StopStream if nobody wants it any more."""
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

    def stream_failed(self, stream: int, reason: str) -> list[Action]:
        """The worker says ffmpeg died; its exit (worker_exited) decides what follows."""
        if self._current(stream):
            self.failure = reason
        return []

    def stream_ended(self, stream: int) -> list[Action]:
        """EOF on the stream: the worker is gone or going."""
        if not self._current(stream):
            return []
        actions: list[Action] = [StopStream(stream)]
        if self.state is State.LIVE:
            reason = self.failure or "the stream ended"
            actions.append(Disconnect(tuple(self.watching), reason))
            self.watching.clear()
            self.state = State.STOPPING
            self._stop_sent = True
        return actions

    def worker_exited(self, stream: int, status: str) -> list[Action]:
        if not self._current(stream):
            return []
        actions: list[Action] = []
        if self.watching:
            actions.append(Disconnect(tuple(self.watching), self.failure or f"air worker {status}"))
            self.watching.clear()
        actions.append(StopStream(stream))
        unasked = not self._stop_sent
        self.worker_pid = self.ffmpeg_pid = None
        self.stream = None
        if unasked:
            self.failure = self.failure or f"air worker {status}"
            if not self._went_live:
                # It never produced a byte: starting it again for the same viewers
                # would fail the same way, so they hear why instead.
                self.state = State.FAILED
                if self.waiting:
                    actions.append(Refuse(tuple(self.waiting), self.failure))
                    self.waiting.clear()
                return actions
        self.state = State.IDLE
        if self.waiting:  # they arrived while the old stream was stopping
            actions += self._start()
        return actions
