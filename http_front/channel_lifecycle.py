"""ChannelLifecycle: what a channel does when told what happened, as a table-driven state machine.

It owns no socket and no process: each method takes an event and returns the actions the
front must carry out. Every "what if a viewer arrives while…" question is answered once,
here, in TRANSITIONS; `diagram()` prints that table, and the README shows its output.

As in h11's `_state.py`, the states and events are named constants, every legal move is
one entry of one dict, and an event with no entry from the current state raises
NoTransition instead of being quietly ignored. What the table cannot say alone is done
once, at the entry of each method, before the table is consulted:
  - an event about a stream that is not the current one is stale: a worker or a stream
    FD that nobody wants is answered with StopStream, any other stale event with [];
  - tune_out of a viewer this lifecycle does not hold (refused or disconnected by it
    already) is answered with [];
  - three events are told apart by a guard, and the guard is part of the event's name:
    tune_out of the last viewer, tune_in to a failed channel whose retry time is due,
    and a worker's exit while viewers wait for the next stream.

"Unspawned" states are those where the supervisor has not yet reported the stream's
worker (WorkerSpawned) and the worker has not shown itself (StreamReady, StreamFailed):
its inbox may not exist yet, so a STOP sent now could be lost. STOP goes out at the
first sign of the worker instead. Each channel has at most one stream: a viewer who
arrives while the channel is stopping waits for the old worker's exit, then gets the
next stream.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable, Hashable, KeysView
from dataclasses import dataclass


class State(enum.Enum):
    IDLE = "idle"  # no stream, nobody tuned in
    STARTING_UNSPAWNED = "starting_unspawned"  # a worker was asked for; viewers wait
    STARTING = "starting"  # its worker runs; viewers wait for the first bytes
    LIVE = "live"  # viewers watch; newcomers are admitted at once
    REPLACING_UNSPAWNED = "replacing_unspawned"  # the worker died under viewers; the next one was asked for
    REPLACING = "replacing"  # the next worker runs; viewers stay connected until its bytes come
    STOPPING_UNSPAWNED = "stopping_unspawned"  # nobody wants the stream; STOP goes out when its worker shows
    STOPPING = "stopping"  # STOP sent; viewers who arrive wait for the next stream
    FAILING_UNSPAWNED = "failing_unspawned"  # no stream in time, its viewers told; STOP when the worker shows
    FAILING = "failing"  # the stream failed, its viewers were told why; the worker is on its way out
    FAILED = "failed"  # resting: newcomers are refused with the reason until the retry time

    @property
    def shown(self) -> str:
        """The state as /channels, /metrics and the status page name it."""
        return _SHOWN[self]


SHOWN_STATES = ("idle", "starting", "live", "stopping", "failed")
_SHOWN = {
    State.IDLE: "idle",
    State.STARTING_UNSPAWNED: "starting", State.STARTING: "starting",
    State.LIVE: "live", State.REPLACING_UNSPAWNED: "live", State.REPLACING: "live",
    State.STOPPING_UNSPAWNED: "stopping", State.STOPPING: "stopping",
    State.FAILING_UNSPAWNED: "failed", State.FAILING: "failed", State.FAILED: "failed",
}


class Event(enum.Enum):
    TUNE_IN = "tune_in"
    RETRY = "tune_in (retry due)"
    TUNE_OUT = "tune_out"
    LAST_TUNE_OUT = "tune_out (last viewer)"
    WORKER_SPAWNED = "worker_spawned"
    STREAM_READY = "stream_ready"
    FIRST_BYTES = "first_bytes"
    START_TIMED_OUT = "start_timed_out"
    STREAM_FAILED = "stream_failed"
    STREAM_ENDED = "stream_ended"
    WORKER_EXITED = "worker_exited"
    WORKER_EXITED_WITH_WAITING = "worker_exited (viewers waiting)"


S, E = State, Event

TRANSITIONS: dict[tuple[State, Event], State] = {
    (S.IDLE, E.TUNE_IN): S.STARTING_UNSPAWNED,

    (S.STARTING_UNSPAWNED, E.TUNE_IN): S.STARTING_UNSPAWNED,
    (S.STARTING_UNSPAWNED, E.TUNE_OUT): S.STARTING_UNSPAWNED,
    (S.STARTING_UNSPAWNED, E.LAST_TUNE_OUT): S.STOPPING_UNSPAWNED,
    (S.STARTING_UNSPAWNED, E.WORKER_SPAWNED): S.STARTING,
    (S.STARTING_UNSPAWNED, E.STREAM_READY): S.STARTING,  # its stream proves the worker runs
    (S.STARTING_UNSPAWNED, E.START_TIMED_OUT): S.FAILING_UNSPAWNED,
    (S.STARTING_UNSPAWNED, E.STREAM_FAILED): S.FAILING,
    (S.STARTING_UNSPAWNED, E.WORKER_EXITED_WITH_WAITING): S.FAILED,  # an exit proves a spawn

    (S.STARTING, E.TUNE_IN): S.STARTING,
    (S.STARTING, E.TUNE_OUT): S.STARTING,
    (S.STARTING, E.LAST_TUNE_OUT): S.STOPPING,
    (S.STARTING, E.WORKER_SPAWNED): S.STARTING,  # its StreamReady came first
    (S.STARTING, E.STREAM_READY): S.STARTING,  # the first FD, or a restarted ffmpeg's
    (S.STARTING, E.FIRST_BYTES): S.LIVE,
    (S.STARTING, E.START_TIMED_OUT): S.FAILING,
    (S.STARTING, E.STREAM_FAILED): S.FAILING,
    (S.STARTING, E.STREAM_ENDED): S.STARTING,  # the worker is going: its exit says why
    (S.STARTING, E.WORKER_EXITED_WITH_WAITING): S.FAILED,  # no byte ever: trying again would fail alike

    (S.LIVE, E.TUNE_IN): S.LIVE,
    (S.LIVE, E.TUNE_OUT): S.LIVE,
    (S.LIVE, E.LAST_TUNE_OUT): S.STOPPING,
    (S.LIVE, E.WORKER_SPAWNED): S.LIVE,  # its stream came first
    (S.LIVE, E.STREAM_READY): S.LIVE,  # the worker restarted ffmpeg: the same stream goes on
    (S.LIVE, E.STREAM_FAILED): S.FAILING,
    (S.LIVE, E.STREAM_ENDED): S.REPLACING_UNSPAWNED,  # killed or crashed: viewers stay for the next stream
    (S.LIVE, E.WORKER_EXITED): S.REPLACING_UNSPAWNED,

    (S.REPLACING_UNSPAWNED, E.TUNE_IN): S.REPLACING_UNSPAWNED,
    (S.REPLACING_UNSPAWNED, E.TUNE_OUT): S.REPLACING_UNSPAWNED,
    (S.REPLACING_UNSPAWNED, E.LAST_TUNE_OUT): S.STOPPING_UNSPAWNED,
    (S.REPLACING_UNSPAWNED, E.WORKER_SPAWNED): S.REPLACING,
    (S.REPLACING_UNSPAWNED, E.STREAM_READY): S.REPLACING,
    (S.REPLACING_UNSPAWNED, E.START_TIMED_OUT): S.FAILING_UNSPAWNED,
    (S.REPLACING_UNSPAWNED, E.STREAM_FAILED): S.FAILING,
    (S.REPLACING_UNSPAWNED, E.WORKER_EXITED): S.FAILED,

    (S.REPLACING, E.TUNE_IN): S.REPLACING,
    (S.REPLACING, E.TUNE_OUT): S.REPLACING,
    (S.REPLACING, E.LAST_TUNE_OUT): S.STOPPING,
    (S.REPLACING, E.WORKER_SPAWNED): S.REPLACING,
    (S.REPLACING, E.STREAM_READY): S.REPLACING,
    (S.REPLACING, E.FIRST_BYTES): S.LIVE,
    (S.REPLACING, E.START_TIMED_OUT): S.FAILING,
    (S.REPLACING, E.STREAM_FAILED): S.FAILING,
    (S.REPLACING, E.STREAM_ENDED): S.REPLACING,
    (S.REPLACING, E.WORKER_EXITED): S.FAILED,  # the replacement died before its first byte

    (S.STOPPING_UNSPAWNED, E.TUNE_IN): S.STOPPING_UNSPAWNED,
    (S.STOPPING_UNSPAWNED, E.TUNE_OUT): S.STOPPING_UNSPAWNED,
    (S.STOPPING_UNSPAWNED, E.LAST_TUNE_OUT): S.STOPPING_UNSPAWNED,
    (S.STOPPING_UNSPAWNED, E.WORKER_SPAWNED): S.STOPPING,
    (S.STOPPING_UNSPAWNED, E.STREAM_READY): S.STOPPING,
    (S.STOPPING_UNSPAWNED, E.START_TIMED_OUT): S.FAILING_UNSPAWNED,
    (S.STOPPING_UNSPAWNED, E.STREAM_FAILED): S.FAILING,
    (S.STOPPING_UNSPAWNED, E.WORKER_EXITED): S.IDLE,
    (S.STOPPING_UNSPAWNED, E.WORKER_EXITED_WITH_WAITING): S.STARTING_UNSPAWNED,

    (S.STOPPING, E.TUNE_IN): S.STOPPING,
    (S.STOPPING, E.TUNE_OUT): S.STOPPING,
    (S.STOPPING, E.LAST_TUNE_OUT): S.STOPPING,
    (S.STOPPING, E.WORKER_SPAWNED): S.STOPPING,
    (S.STOPPING, E.STREAM_READY): S.STOPPING,
    (S.STOPPING, E.STREAM_FAILED): S.FAILING,  # it failed before our STOP reached it
    (S.STOPPING, E.WORKER_EXITED): S.IDLE,
    (S.STOPPING, E.WORKER_EXITED_WITH_WAITING): S.STARTING_UNSPAWNED,

    (S.FAILING_UNSPAWNED, E.TUNE_IN): S.FAILING_UNSPAWNED,
    (S.FAILING_UNSPAWNED, E.WORKER_SPAWNED): S.FAILING,
    (S.FAILING_UNSPAWNED, E.STREAM_READY): S.FAILING,
    (S.FAILING_UNSPAWNED, E.STREAM_FAILED): S.FAILING,
    (S.FAILING_UNSPAWNED, E.WORKER_EXITED): S.FAILED,

    (S.FAILING, E.TUNE_IN): S.FAILING,
    (S.FAILING, E.WORKER_SPAWNED): S.FAILING,
    (S.FAILING, E.STREAM_READY): S.FAILING,
    (S.FAILING, E.STREAM_FAILED): S.FAILING,  # after a start timeout, the worker's own failure
    (S.FAILING, E.WORKER_EXITED): S.FAILED,

    (S.FAILED, E.TUNE_IN): S.FAILED,
    (S.FAILED, E.RETRY): S.STARTING_UNSPAWNED,
}

del S, E

# What a state means for a viewer who tunes in, and for STOP.
ADMITTING = frozenset({State.LIVE, State.REPLACING_UNSPAWNED, State.REPLACING})  # admitted at once
REFUSING = frozenset({State.FAILING_UNSPAWNED, State.FAILING, State.FAILED})  # refused with the failure
STOP_SENT = frozenset({State.STOPPING, State.FAILING})  # STOP went out to the current stream's worker
STREAMLESS = frozenset({State.IDLE, State.FAILED})  # no current stream


class NoTransition(Exception):
    """An event that the lifecycle has no transition for in its current state: a bug in the caller."""

    def __init__(self, channel_id: str, state: State, event: Event):
        super().__init__(f"channel {channel_id}: no transition for {event.value} from {state.name}")
        self.channel_id, self.state, self.event = channel_id, state, event


def diagram() -> str:
    """TRANSITIONS as text, one block per state: each way out, then the events it stays on."""
    blocks = []
    for state in State:
        moves: dict[State, list[str]] = {}
        for (source, event), target in TRANSITIONS.items():
            if source is state:
                moves.setdefault(target, []).append(event.value)
        exits = [(" | ".join(events), target) for target, events in moves.items() if target is not state]
        width = max((len(events) for events, _ in exits), default=0)
        lines = [f"{state.name} ({state.shown})"]
        lines += [f"    {events:<{width}} -> {target.name}" for events, target in exits]
        if state in moves:
            lines.append(f"    stays on {', '.join(moves[state])}")
        blocks.append("\n".join(lines))
    return "\n".join(blocks) + "\n"


def stream_numbers(generation: int) -> Callable[[], int]:
    """Stream ids for one front's life: generation * 10**9 + 1, + 2, ...

    They must not repeat while an old front's worker may still be on its way out (its exit
    must never be taken for a new stream's): the supervisor gives each front a new generation.
    """
    counter = itertools.count(generation * 10**9 + 1)
    return lambda: next(counter)


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


class ChannelLifecycle:
    def __init__(self, channel_id: str, next_stream: Callable[[], int], retry_after: float = 0.0):
        self.channel_id = channel_id
        self._next_stream = next_stream
        self.retry_after = retry_after  # how long a failed channel refuses before trying again
        self.state = State.IDLE
        self.stream: int | None = None
        self.worker_pid: int | None = None
        self.ffmpeg_pid: int | None = None
        self.failure: str | None = None  # why the channel last failed
        self.failed_at = 0.0
        # The viewers, in arrival order; each is in at most one of the two.
        self._waiting: dict[Hashable, None] = {}  # tuned in, no 200 yet
        self._watching: dict[Hashable, None] = {}  # receiving the stream

    @property
    def waiting(self) -> KeysView:
        return self._waiting.keys()

    @property
    def watching(self) -> KeysView:
        return self._watching.keys()

    @property
    def viewer_count(self) -> int:
        return len(self._waiting) + len(self._watching)

    @property
    def stop_sent(self) -> bool:
        return self.state in STOP_SENT

    # The table

    def _fire(self, event: Event) -> State:
        """Move along the table; the state moved from."""
        try:
            new = TRANSITIONS[(self.state, event)]
        except KeyError:
            raise NoTransition(self.channel_id, self.state, event) from None
        old, self.state = self.state, new
        return old

    def _stop_on_entry(self, old: State) -> list[Action]:
        """STOP goes out once, as the lifecycle enters a state that needs it sent."""
        if self.state in STOP_SENT and old not in STOP_SENT:
            return [StopStream(self.stream)]
        return []

    def _stale(self, stream: int) -> bool:
        return stream != self.stream  # None when streamless

    def _new_stream(self) -> list[Action]:
        self.stream = self._next_stream()
        self.worker_pid = self.ffmpeg_pid = None
        return [RequestStream(self.stream)]

    def _end_stream(self, now: float) -> None:
        self.stream = self.worker_pid = self.ffmpeg_pid = None
        if self.state is State.FAILED:
            self.failed_at = now

    def _tell_everyone(self, reason: str) -> list[Action]:
        """The stream is over for its viewers: the waiting are refused, the watching closed."""
        actions: list[Action] = []
        if self._watching:
            actions.append(Disconnect(tuple(self._watching), reason))
            self._watching.clear()
        if self._waiting:
            actions.append(Refuse(tuple(self._waiting), reason))
            self._waiting.clear()
        return actions

    # Viewers

    def tune_in(self, viewer: Hashable, now: float = 0.0) -> list[Action]:
        if viewer in self._waiting or viewer in self._watching:
            raise ValueError(f"channel {self.channel_id}: {viewer!r} is tuned in already")
        due = self.state is State.FAILED and now >= self.failed_at + self.retry_after
        old = self._fire(Event.RETRY if due else Event.TUNE_IN)
        if self.state in REFUSING:
            return [Refuse((viewer,), self.failure or "failed")]
        if self.state in ADMITTING:
            self._watching[viewer] = None
            return [Admit((viewer,), from_start=False)]
        self._waiting[viewer] = None
        if old in STREAMLESS:
            self.failure = None
            return self._new_stream()
        return []  # starting: served at the first bytes; stopping: by the next stream

    def tune_out(self, viewer: Hashable) -> list[Action]:
        if viewer not in self._waiting and viewer not in self._watching:
            return []  # refused or disconnected by us already
        self._waiting.pop(viewer, None)
        self._watching.pop(viewer, None)
        old = self._fire(Event.TUNE_OUT if self.viewer_count else Event.LAST_TUNE_OUT)
        return self._stop_on_entry(old)

    # The stream's worker and ffmpeg

    def worker_spawned(self, stream: int, pid: int) -> list[Action]:
        if self._stale(stream):
            return [StopStream(stream)]  # a worker nobody wants
        old = self._fire(Event.WORKER_SPAWNED)
        self.worker_pid = pid
        return self._stop_on_entry(old)

    def stream_ready(self, stream: int, ffmpeg_pid: int) -> list[Action]:
        """A stream FD arrived (the first, or a restarted ffmpeg's). StopStream if nobody wants it."""
        if self._stale(stream):
            return [StopStream(stream)]
        self._fire(Event.STREAM_READY)
        self.ffmpeg_pid = ffmpeg_pid
        return [StopStream(stream)] if self.state in STOP_SENT else []

    def first_bytes(self, stream: int) -> list[Action]:
        """The current stream's first bytes: the first stream's, or a replacement's."""
        if self._stale(stream):
            return []
        old = self._fire(Event.FIRST_BYTES)
        if old is State.REPLACING:
            return []  # its viewers simply continue in the same buffer
        admitted = tuple(self._waiting)
        self._watching.update(self._waiting)
        self._waiting.clear()
        return [Admit(admitted, from_start=True)]

    def start_timed_out(self, stream: int, reason: str, now: float = 0.0) -> list[Action]:
        """No stream (FD or first byte) in time: its viewers hear why, the worker is stopped.

        Also for the stream that replaces a dead worker's under viewers: they are closed
        rather than left connected to a stream that never comes."""
        if self._stale(stream):
            return []
        old = self._fire(Event.START_TIMED_OUT)
        self.failure = reason
        return self._tell_everyone(reason) + self._stop_on_entry(old)

    def stream_failed(self, stream: int, reason: str) -> list[Action]:
        """The worker gave up on its ffmpeg and is exiting: its viewers hear why now."""
        if self._stale(stream):
            return []
        old = self._fire(Event.STREAM_FAILED)
        if old in REFUSING:
            return self._stop_on_entry(old)  # they were told already, the first reason stands
        self.failure = reason
        return self._tell_everyone(reason) + self._stop_on_entry(old)

    def stream_ended(self, stream: int, now: float = 0.0) -> list[Action]:
        """EOF on the stream: the worker is gone or going."""
        if self._stale(stream):
            return []
        self._fire(Event.STREAM_ENDED)
        actions: list[Action] = [StopStream(stream)]
        if self.state is State.REPLACING_UNSPAWNED:
            # The worker died under its viewers (killed, crashed): they stay connected and
            # the next stream continues in the same buffer, after a TS discontinuity.
            actions += self._new_stream()
        return actions

    def worker_exited(self, stream: int, status: str, now: float = 0.0) -> list[Action]:
        if self._stale(stream):
            return []
        old = self._fire(Event.WORKER_EXITED_WITH_WAITING if self._waiting else Event.WORKER_EXITED)
        actions: list[Action] = [StopStream(stream)]  # closes what is left of its stream
        if self.state is State.REPLACING_UNSPAWNED:
            return actions + self._new_stream()
        if self.state is State.FAILED and old not in REFUSING:
            # It never produced a byte: starting it again at once for the same viewers
            # would fail the same way, so they hear why.
            self.failure = f"air worker {status}"
            actions += self._tell_everyone(self.failure)
        self._end_stream(now)
        if self.state is State.STARTING_UNSPAWNED:  # they arrived while the old stream was stopping
            actions += self._new_stream()
        return actions
