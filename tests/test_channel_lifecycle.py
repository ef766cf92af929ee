"""ChannelLifecycle, the pure per-channel state machine: every transition and every
"what if a viewer arrives while…" case, then invariants over random event sequences."""

from __future__ import annotations

import itertools
import random

import pytest

from http_front.channel_lifecycle import (Admit, ChannelLifecycle, Disconnect, Refuse, RequestStream,
                                          State, StopStream)


def make() -> ChannelLifecycle:
    ids = itertools.count(1)
    return ChannelLifecycle("1", next_stream=lambda: next(ids))


def starting(*viewers, spawned=True) -> ChannelLifecycle:
    lc = make()
    assert lc.tune_in(viewers[0]) == [RequestStream(1)]
    for v in viewers[1:]:
        assert lc.tune_in(v) == []
    if spawned:
        assert lc.worker_spawned(1, 100) == []
    return lc


def live(*viewers) -> ChannelLifecycle:
    lc = starting(*viewers)
    assert lc.stream_ready(1, 101) == []
    [admit] = lc.first_bytes(1)
    assert admit.from_start and set(admit.viewers) == set(viewers)
    return lc


# Transitions

def test_first_viewer_on_idle_requests_a_stream_and_waits():
    lc = make()
    assert lc.tune_in("a") == [RequestStream(1)]
    assert (lc.state, lc.stream, lc.waiting, lc.watching) == (State.STARTING, 1, {"a"}, set())


def test_worker_spawned_and_stream_ready_record_pids_without_actions():
    lc = starting("a")
    assert lc.stream_ready(1, 101) == []
    assert (lc.state, lc.worker_pid, lc.ffmpeg_pid) == (State.STARTING, 100, 101)


def test_viewer_arriving_while_starting_is_admitted_from_start_at_first_bytes():
    lc = starting("a")
    assert lc.tune_in("b") == []
    [admit] = lc.first_bytes(1)
    assert admit.from_start is True and set(admit.viewers) == {"a", "b"}
    assert (lc.state, lc.waiting, lc.watching) == (State.LIVE, set(), {"a", "b"})


def test_first_bytes_twice_admits_nobody_again():
    lc = live("a")
    assert lc.first_bytes(1) == []


def test_viewer_arriving_while_live_is_admitted_at_once_not_from_start():
    lc = live("a")
    assert lc.tune_in("b") == [Admit(("b",), from_start=False)]
    assert lc.watching == {"a", "b"} and lc.viewer_count == 2


def test_a_viewer_leaving_while_others_watch_changes_nothing_else():
    lc = live("a", "b")
    assert lc.tune_out("a") == []
    assert (lc.state, lc.watching) == (State.LIVE, {"b"})


def test_last_viewer_leaving_while_live_stops_the_stream():
    lc = live("a")
    assert lc.tune_out("a") == [StopStream(1)]
    assert lc.state is State.STOPPING and lc.viewer_count == 0


def test_last_viewer_leaving_while_starting_after_spawn_stops_at_once():
    lc = starting("a")
    assert lc.tune_out("a") == [StopStream(1)]
    assert lc.state is State.STOPPING


def test_last_viewer_leaving_before_worker_spawned_stops_exactly_once_when_it_spawns():
    lc = starting("a", spawned=False)
    assert lc.tune_out("a") == []
    assert lc.state is State.STOPPING
    assert lc.worker_spawned(1, 100) == [StopStream(1)]
    assert lc.worker_spawned(1, 100) == []
    assert lc.tune_out("nobody") == []


def test_stopped_stream_exiting_returns_to_idle():
    lc = live("a")
    lc.tune_out("a")
    assert lc.worker_exited(1, "exited 0") == [StopStream(1)]
    assert (lc.state, lc.stream, lc.worker_pid, lc.ffmpeg_pid) == (State.IDLE, None, None, None)
    assert lc.failure is None


def test_viewer_arriving_while_stopping_gets_a_new_stream_only_after_worker_exited():
    lc = live("a")
    lc.tune_out("a")
    assert lc.tune_in("b") == []
    assert lc.stream_ready(1, 101) == [StopStream(1)]  # the old stream is not revived
    assert lc.first_bytes(1) == []
    assert lc.worker_exited(1, "exited 0") == [StopStream(1), RequestStream(2)]
    assert (lc.state, lc.stream, lc.waiting) == (State.STARTING, 2, {"b"})


def test_worker_exiting_unasked_before_first_bytes_fails_and_refuses_with_its_reason():
    lc = starting("a", "b")
    assert lc.stream_failed(1, "ffmpeg: no such filter") == []
    actions = lc.worker_exited(1, "exited 1")
    assert actions[0] == StopStream(1)
    [refuse] = actions[1:]
    assert isinstance(refuse, Refuse) and set(refuse.viewers) == {"a", "b"}
    assert refuse.reason == "ffmpeg: no such filter"
    assert (lc.state, lc.failure, lc.viewer_count, lc.stream) == (State.FAILED, "ffmpeg: no such filter", 0, None)


def test_worker_exiting_unasked_without_a_reason_refuses_with_its_status():
    lc = starting("a")
    assert lc.worker_exited(1, "killed by SIGSEGV") == [StopStream(1), Refuse(("a",), "air worker killed by SIGSEGV")]


def test_tune_in_on_failed_retries_with_a_new_stream_and_clears_the_failure():
    lc = starting("a")
    lc.stream_failed(1, "boom")
    lc.worker_exited(1, "exited 1")
    assert lc.tune_in("b") == [RequestStream(2)]
    assert (lc.state, lc.failure, lc.waiting) == (State.STARTING, None, {"b"})


def test_stream_ended_after_the_worker_gave_up_disconnects_watchers_and_fails():
    lc = live("a", "b")
    lc.stream_failed(1, "input vanished")
    actions = lc.stream_ended(1)
    assert actions[0] == StopStream(1)
    [disconnect] = actions[1:]
    assert isinstance(disconnect, Disconnect) and set(disconnect.viewers) == {"a", "b"}
    assert disconnect.reason == "input vanished"
    assert (lc.state, lc.viewer_count) == (State.STOPPING, 0)
    assert lc.worker_exited(1, "exited 1") == [StopStream(1)]
    assert (lc.state, lc.failure) == (State.FAILED, "input vanished")


def test_a_failed_channel_refuses_new_viewers_until_its_retry_time():
    lc = ChannelLifecycle("ch", next_stream=iter(range(1, 100)).__next__, retry_after=30)
    lc.tune_in("a", now=0)
    lc.stream_failed(1, "boom")
    lc.worker_exited(1, "exited 1", now=1)
    assert lc.tune_in("b", now=10) == [Refuse(("b",), "boom")]
    assert lc.state is State.FAILED and lc.viewer_count == 0
    assert lc.tune_in("c", now=31.5) == [RequestStream(2)]


def test_stream_ended_under_watchers_starts_the_next_stream_for_them():
    lc = live("a")
    assert lc.stream_ended(1) == [StopStream(1), RequestStream(2)]
    assert (lc.state, lc.watching, lc.stream) == (State.LIVE, {"a"}, 2)
    assert lc.worker_exited(1, "killed by SIGKILL") == []  # the old stream's exit is stale now


def test_worker_dying_under_watchers_starts_the_next_stream_for_them():
    lc = live("a")
    assert lc.worker_exited(1, "killed by SIGKILL") == [StopStream(1), RequestStream(2)]
    assert (lc.state, lc.watching) == (State.LIVE, {"a"})
    assert lc.stream_ended(1) == []  # its EOF, seen later, is stale


def test_start_timeout_refuses_the_waiting_and_stops_the_worker():
    lc = starting("a")
    lc.worker_spawned(1, 100)
    assert lc.start_timed_out(1, "no stream within 10 s") == [Refuse(("a",), "no stream within 10 s"), StopStream(1)]
    assert lc.state is State.STOPPING
    assert lc.worker_exited(1, "exited 0") == [StopStream(1)]
    assert (lc.state, lc.failure) == (State.FAILED, "no stream within 10 s")


def test_stream_ended_before_first_bytes_stops_and_its_exit_then_fails():
    lc = starting("a")
    assert lc.stream_ended(1) == [StopStream(1)]
    assert lc.state is State.STARTING
    assert lc.worker_exited(1, "exited 1")[-1] == Refuse(("a",), "air worker exited 1")
    assert lc.state is State.FAILED


@pytest.mark.parametrize("event", ["worker_spawned", "first_bytes", "stream_failed", "stream_ended", "worker_exited"])
def test_events_for_a_stale_stream_are_ignored(event):
    lc = live("a")
    lc.tune_out("a")
    lc.worker_exited(1, "exited 0")
    lc.tune_in("b")  # stream 2 is starting
    before = (lc.state, lc.stream, lc.worker_pid, lc.failure, set(lc.waiting), set(lc.watching))
    args = {"worker_spawned": (1, 5), "first_bytes": (1,), "stream_failed": (1, "old"),
            "stream_ended": (1,), "worker_exited": (1, "exited 0")}[event]
    assert getattr(lc, event)(*args) == []
    assert (lc.state, lc.stream, lc.worker_pid, lc.failure, set(lc.waiting), set(lc.watching)) == before


@pytest.mark.parametrize("stream", [1, 99])
def test_stream_ready_for_a_stream_nobody_wants_is_stopped(stream):
    lc = make()
    if stream == 1:  # an old stream that already exited
        lc.tune_in("a")
        lc.tune_out("a")
        lc.worker_spawned(1, 100)
        lc.worker_exited(1, "exited 0")
    assert lc.stream_ready(stream, 7) == [StopStream(stream)]
    assert lc.ffmpeg_pid is None and lc.state is State.IDLE


def test_tune_out_of_an_unknown_viewer_does_nothing():
    lc = make()
    assert lc.tune_out("ghost") == [] and lc.state is State.IDLE


# Random sequences: invariants that must hold whatever the order of events


class World:
    """Plays the front, the supervisor and the workers around one lifecycle, checking invariants."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.lc = make()
        self.viewers: dict[int, str] = {}  # viewer -> "waiting" | "watching"
        self.next_viewer = 0
        self.requested: list[int] = []
        self.spawned: set[int] = set()
        self.ready: set[int] = set()  # stream_ready was accepted (the front reads the stream)
        self.exited: set[int] = set()
        self.ended: set[int] = set()  # EOF seen: its worker closed the write end
        self.stopped: set[int] = set()  # StopStream was issued
        self.log: list[str] = []

    def alive(self) -> set[int]:
        return set(self.requested) - self.exited - self.ended

    def apply(self, name: str, *args) -> None:
        self.log.append(f"{name}{args}")
        if name == "stream_ended":
            self.ended.add(args[0])
        actions = getattr(self.lc, name)(*args)
        for a in actions:
            self.log.append(f"  -> {a}")
            if isinstance(a, RequestStream):
                assert not self.alive(), f"RequestStream while {self.alive()} not exited"
                assert a.stream not in self.requested, "stream id reused"
                self.requested.append(a.stream)
            elif isinstance(a, StopStream):
                assert a.stream in self.requested or a.stream == 999
                self.stopped.add(a.stream)
            elif isinstance(a, Admit):
                for v in a.viewers:
                    if a.from_start:
                        assert self.viewers.get(v) == "waiting"
                    else:
                        assert name == "tune_in" and args[0] == v
                    self.viewers[v] = "watching"
            elif isinstance(a, Refuse):
                for v in a.viewers:
                    assert self.viewers.pop(v) == "waiting"
                assert a.reason
            elif isinstance(a, Disconnect):
                for v in a.viewers:
                    assert self.viewers.pop(v) == "watching"
                assert a.reason
        if name == "stream_ready" and actions == []:
            self.ready.add(args[0])
        self.check()

    def check(self) -> None:
        lc = self.lc
        assert lc.viewer_count == len(lc.waiting) + len(lc.watching)
        assert not lc.waiting & lc.watching
        assert lc.waiting == {v for v, s in self.viewers.items() if s == "waiting"}
        assert lc.watching == {v for v, s in self.viewers.items() if s == "watching"}
        assert len(self.alive()) <= 1, "two streams at once"
        assert self.alive() <= {lc.stream}, "a running stream the lifecycle forgot"
        if lc.state in (State.IDLE, State.FAILED):
            assert lc.stream is None and lc.viewer_count == 0
        if lc.state is State.LIVE:
            assert not lc.waiting
        if lc.state in (State.STARTING, State.LIVE):
            assert lc.viewer_count > 0, "a stream running for nobody"
        if lc.state is State.STOPPING:
            assert not lc.watching
            if lc.stream in self.spawned:
                assert lc.stream in self.stopped, "a spawned worker of a stopping stream was never told to stop"

    def step(self) -> None:
        rng, lc = self.rng, self.lc
        choices = ["tune_in", "tune_out", "stale"]
        s = self.requested[-1] if self.requested else None
        if s is not None and s not in self.exited:
            choices += ["worker_spawned", "stream_ready", "stream_failed", "worker_exited"]
            if s in self.ready:
                choices += ["first_bytes", "stream_ended"]
        kind = rng.choice(choices)
        if kind == "tune_in":
            self.next_viewer += 1
            self.viewers[self.next_viewer] = "waiting"
            self.apply("tune_in", self.next_viewer)
            assert self.viewers[self.next_viewer] in ("waiting", "watching")
        elif kind == "tune_out":
            if self.viewers:
                v = rng.choice(sorted(self.viewers))
                del self.viewers[v]
                self.apply("tune_out", v)
        elif kind == "stale":
            old = rng.choice(self.requested[:-1] or [999])
            event = rng.choice(["worker_spawned", "first_bytes", "stream_failed", "stream_ended", "worker_exited"])
            args = {"worker_spawned": (old, 1), "first_bytes": (old,), "stream_failed": (old, "x"),
                    "stream_ended": (old,), "worker_exited": (old, "x")}[event]
            before = (lc.state, lc.stream, lc.worker_pid, lc.failure)
            self.apply(event, *args)
            assert (lc.state, lc.stream, lc.worker_pid, lc.failure) == before
        elif kind == "worker_spawned":
            if s not in self.spawned:
                self.spawned.add(s)
                self.apply("worker_spawned", s, 1000 + s)
        elif kind == "stream_ready":
            if s not in self.ready:
                self.apply("stream_ready", s, 2000 + s)
        elif kind == "stream_failed":
            self.apply("stream_failed", s, f"failure of {s}")
        elif kind == "worker_exited":
            if s in self.spawned:
                self.exited.add(s)
                self.apply("worker_exited", s, "exited 1")
                assert s in self.stopped, "an exited stream was never closed"
        else:
            self.apply(kind, s)

    def settle(self) -> None:
        """Let every started stream get going: waiting viewers must end up watching (or refused)."""
        for _ in range(4):
            s = self.lc.stream
            if s is None:
                break
            if s not in self.spawned:
                self.spawned.add(s)
                self.apply("worker_spawned", s, 1000 + s)
            if self.lc.state is State.STOPPING:
                self.exited.add(s)
                self.apply("worker_exited", s, "exited 0")
                continue
            if s not in self.ready:
                self.apply("stream_ready", s, 2000 + s)
            self.apply("first_bytes", s)
            break
        if self.viewers:
            assert self.lc.state is State.LIVE and set(self.viewers.values()) == {"watching"}
        # Everybody leaves: the stream is stopped and its worker reaped.
        for v in sorted(self.viewers):
            del self.viewers[v]
            self.apply("tune_out", v)
        s = self.lc.stream
        if s is not None:
            if s not in self.spawned:
                self.spawned.add(s)
                self.apply("worker_spawned", s, 1000 + s)
            assert s in self.stopped
            self.exited.add(s)
            self.apply("worker_exited", s, "exited 0")
        assert self.lc.state in (State.IDLE, State.FAILED) and not self.alive()


@pytest.mark.parametrize("seed", range(300))
def test_random_event_sequences_keep_one_stream_at_a_time_and_consistent_viewers(seed):
    world = World(random.Random(seed))
    try:
        for _ in range(60):
            world.step()
        world.settle()
    except AssertionError:
        print("\n".join(world.log[-40:]))
        raise


def test_a_replacement_stream_that_never_comes_closes_its_live_viewers():
    lc = live("a")
    lc.stream_ended(1)  # the worker died: stream 2 is requested for "a"
    lc.worker_spawned(2, 200)
    actions = lc.start_timed_out(2, "no stream within 10 s")
    assert actions == [Disconnect(("a",), "no stream within 10 s"), StopStream(2)]
    assert lc.state is State.STOPPING and lc.viewer_count == 0
    lc.worker_exited(2, "exited 0")
    assert (lc.state, lc.failure) == (State.FAILED, "no stream within 10 s")
