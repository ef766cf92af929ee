"""ChannelLifecycle, the per-channel state machine: the table itself (every legal pair leads
where it says, every other pair raises, the README shows it), every "what if a viewer
arrives while…" case, then invariants over random event sequences played as the front does."""

from __future__ import annotations

import itertools
import pathlib
import random
import re

import pytest

from http_front.channel_lifecycle import (STOP_SENT, TRANSITIONS, Admit, ChannelLifecycle, Disconnect, Event,
                                          NoTransition, Refuse, RequestStream, State, StopStream, diagram,
                                          stream_numbers)

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
RETRY_AFTER = 30.0


def make() -> ChannelLifecycle:
    ids = itertools.count(1)
    return ChannelLifecycle("1", next_stream=lambda: next(ids), retry_after=RETRY_AFTER)


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


# Reaching each state, the way the front gets there

def reach(state: State) -> ChannelLifecycle:
    lc = make()
    recipes = {
        State.IDLE: [],
        State.STARTING_UNSPAWNED: [("tune_in", "a")],
        State.STARTING: [("tune_in", "a"), ("worker_spawned", 1, 100)],
        State.LIVE: [("tune_in", "a"), ("worker_spawned", 1, 100), ("stream_ready", 1, 101), ("first_bytes", 1)],
        State.REPLACING_UNSPAWNED: [("tune_in", "a"), ("worker_spawned", 1, 100), ("stream_ready", 1, 101),
                                    ("first_bytes", 1), ("stream_ended", 1)],
        State.REPLACING: [("tune_in", "a"), ("worker_spawned", 1, 100), ("stream_ready", 1, 101),
                          ("first_bytes", 1), ("stream_ended", 1), ("worker_spawned", 2, 200)],
        State.STOPPING_UNSPAWNED: [("tune_in", "a"), ("tune_out", "a")],
        State.STOPPING: [("tune_in", "a"), ("worker_spawned", 1, 100), ("tune_out", "a")],
        State.FAILING_UNSPAWNED: [("tune_in", "a"), ("start_timed_out", 1, "no stream within 10 s")],
        State.FAILING: [("tune_in", "a"), ("worker_spawned", 1, 100), ("start_timed_out", 1, "no stream within 10 s")],
        State.FAILED: [("tune_in", "a"), ("worker_spawned", 1, 100), ("start_timed_out", 1, "no stream within 10 s"),
                       ("worker_exited", 1, "exited 0", 5.0)],
    }
    for name, *args in recipes[state]:
        getattr(lc, name)(*args)
    assert lc.state is state
    return lc


def fire(lc: ChannelLifecycle, event: Event) -> list:
    """Send the event through the public method, arranging its guard (how many viewers, the retry time)."""
    s = lc.stream
    if event in (Event.TUNE_OUT, Event.LAST_TUNE_OUT):
        want = 2 if event is Event.TUNE_OUT else 1
        while lc.viewer_count < want:
            lc.tune_in(f"v{lc.viewer_count}", now=lc.failed_at)
        return lc.tune_out(next(iter([*lc.waiting, *lc.watching])))
    if event in (Event.WORKER_EXITED, Event.WORKER_EXITED_WITH_WAITING):
        if event is Event.WORKER_EXITED_WITH_WAITING and not lc.waiting:
            lc.tune_in("w")
        return lc.worker_exited(s, "exited 1", now=100.0)
    return {
        Event.TUNE_IN: lambda: lc.tune_in("z", now=lc.failed_at),
        Event.RETRY: lambda: lc.tune_in("z", now=lc.failed_at + RETRY_AFTER),
        Event.WORKER_SPAWNED: lambda: lc.worker_spawned(s, 999),
        Event.STREAM_READY: lambda: lc.stream_ready(s, 998),
        Event.FIRST_BYTES: lambda: lc.first_bytes(s),
        Event.START_TIMED_OUT: lambda: lc.start_timed_out(s, "no stream within 10 s"),
        Event.STREAM_FAILED: lambda: lc.stream_failed(s, "boom"),
        Event.STREAM_ENDED: lambda: lc.stream_ended(s),
    }[event]()


# The table

@pytest.mark.parametrize(("state", "event"), list(TRANSITIONS), ids=lambda x: x.name)
def test_every_legal_pair_leads_where_the_table_says(state, event):
    lc = reach(state)
    fire(lc, event)
    assert lc.state is TRANSITIONS[(state, event)]


ILLEGAL = [(s, e) for s in State for e in Event if (s, e) not in TRANSITIONS]


@pytest.mark.parametrize(("state", "event"), ILLEGAL, ids=lambda x: x.name)
def test_every_pair_not_in_the_table_raises(state, event):
    lc = reach(state)
    with pytest.raises(NoTransition, match=rf"channel 1: no transition for {re.escape(event.value)} from {state.name}"):
        lc._fire(event)
    assert lc.state is state


STREAM_EVENTS = [Event.WORKER_SPAWNED, Event.STREAM_READY, Event.FIRST_BYTES, Event.START_TIMED_OUT,
                 Event.STREAM_FAILED, Event.STREAM_ENDED, Event.WORKER_EXITED]


# Through the methods: every stream event that has no transition, in each state that has a
# stream (in the others every stream is stale). A starting channel always has viewers
# waiting, so its worker's exit is always the guarded event there.
THROUGH_METHODS = [(s, e) for s, e in ILLEGAL if e in STREAM_EVENTS and s not in (State.IDLE, State.FAILED)
                   and not (e is Event.WORKER_EXITED and s in (State.STARTING_UNSPAWNED, State.STARTING))]


@pytest.mark.parametrize(("state", "event"), THROUGH_METHODS, ids=lambda x: x.name)
def test_a_stream_event_for_the_current_stream_with_no_transition_raises_through_the_method(state, event):
    lc = reach(state)
    with pytest.raises(NoTransition):
        fire(lc, event)


def test_the_table_covers_every_state_and_every_event():
    assert {s for s, _ in TRANSITIONS} == set(State)
    assert {e for _, e in TRANSITIONS} == set(Event)
    assert set(TRANSITIONS.values()) == set(State)


def test_the_readme_state_diagram_is_the_table_printed():
    text = README.read_text()
    m = re.search(r"<!-- lifecycle diagram: .*? -->\n```\n(.*?)```\n", text, re.S)
    assert m, "README.md has no lifecycle diagram block"
    assert m.group(1) == diagram(), "README's diagram differs from channel_lifecycle.diagram(): paste its output"


def test_stream_numbers_do_not_repeat_across_generations():
    first, second = stream_numbers(1), stream_numbers(2)
    a = [first() for _ in range(3)]
    b = [second() for _ in range(3)]
    assert a == [1_000_000_001, 1_000_000_002, 1_000_000_003]
    assert not set(a) & set(b)


def test_shown_states_are_the_five_the_readme_names():
    assert {s.shown for s in State} == {"idle", "starting", "live", "stopping", "failed"}


# Transitions, case by case

def test_first_viewer_on_idle_requests_a_stream_and_waits():
    lc = make()
    assert lc.tune_in("a") == [RequestStream(1)]
    assert (lc.state, lc.stream, set(lc.waiting), set(lc.watching)) == (State.STARTING_UNSPAWNED, 1, {"a"}, set())


def test_worker_spawned_and_stream_ready_record_pids_without_actions():
    lc = starting("a")
    assert lc.stream_ready(1, 101) == []
    assert (lc.state, lc.worker_pid, lc.ffmpeg_pid) == (State.STARTING, 100, 101)


def test_stream_ready_before_worker_spawned_also_means_the_worker_runs():
    lc = starting("a", spawned=False)
    assert lc.stream_ready(1, 101) == []
    assert lc.state is State.STARTING
    assert lc.worker_spawned(1, 100) == [] and lc.worker_pid == 100
    assert lc.tune_out("a") == [StopStream(1)]


def test_viewer_arriving_while_starting_is_admitted_from_start_at_first_bytes():
    lc = starting("a")
    assert lc.tune_in("b") == []
    [admit] = lc.first_bytes(1)
    assert admit == Admit(("a", "b"), from_start=True)  # in arrival order
    assert (lc.state, set(lc.waiting), set(lc.watching)) == (State.LIVE, set(), {"a", "b"})


def test_first_bytes_twice_raises():
    lc = live("a")
    with pytest.raises(NoTransition):
        lc.first_bytes(1)


def test_viewer_arriving_while_live_is_admitted_at_once_not_from_start():
    lc = live("a")
    assert lc.tune_in("b") == [Admit(("b",), from_start=False)]
    assert set(lc.watching) == {"a", "b"} and lc.viewer_count == 2


def test_a_viewer_tuning_in_twice_is_a_bug():
    lc = live("a")
    with pytest.raises(ValueError, match="tuned in already"):
        lc.tune_in("a")


def test_a_viewer_leaving_while_others_watch_changes_nothing_else():
    lc = live("a", "b")
    assert lc.tune_out("a") == []
    assert (lc.state, set(lc.watching)) == (State.LIVE, {"b"})


def test_last_viewer_leaving_while_live_stops_the_stream():
    lc = live("a")
    assert lc.tune_out("a") == [StopStream(1)]
    assert lc.state is State.STOPPING and lc.viewer_count == 0 and lc.stop_sent


def test_last_viewer_leaving_while_starting_after_spawn_stops_at_once():
    lc = starting("a")
    assert lc.tune_out("a") == [StopStream(1)]
    assert lc.state is State.STOPPING


def test_last_viewer_leaving_before_worker_spawned_stops_exactly_once_when_it_spawns():
    lc = starting("a", spawned=False)
    assert lc.tune_out("a") == []
    assert lc.state is State.STOPPING_UNSPAWNED and not lc.stop_sent
    assert lc.worker_spawned(1, 100) == [StopStream(1)]
    assert lc.state is State.STOPPING and lc.stop_sent
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
    assert lc.worker_exited(1, "exited 0") == [StopStream(1), RequestStream(2)]
    assert (lc.state, lc.stream, set(lc.waiting)) == (State.STARTING_UNSPAWNED, 2, {"b"})


def test_worker_failing_before_first_bytes_refuses_its_viewers_with_its_reason_at_once():
    lc = starting("a", "b")
    assert lc.stream_failed(1, "ffmpeg: no such filter") == [Refuse(("a", "b"), "ffmpeg: no such filter"),
                                                              StopStream(1)]
    assert (lc.state.shown, lc.viewer_count) == ("failed", 0)
    assert lc.worker_exited(1, "exited 1") == [StopStream(1)]
    assert (lc.state, lc.failure, lc.stream) == (State.FAILED, "ffmpeg: no such filter", None)


def test_worker_exiting_unasked_without_a_reason_refuses_with_its_status():
    lc = starting("a")
    assert lc.worker_exited(1, "killed by SIGSEGV") == [StopStream(1), Refuse(("a",), "air worker killed by SIGSEGV")]
    assert lc.state is State.FAILED


def test_tune_in_on_failed_retries_with_a_new_stream_and_clears_the_failure():
    lc = starting("a")
    lc.stream_failed(1, "boom")
    lc.worker_exited(1, "exited 1", now=1)
    assert lc.tune_in("b", now=1 + RETRY_AFTER) == [RequestStream(2)]
    assert (lc.state, lc.failure, set(lc.waiting)) == (State.STARTING_UNSPAWNED, None, {"b"})


def test_a_failed_channel_refuses_new_viewers_until_its_retry_time():
    lc = starting("a")
    lc.stream_failed(1, "boom")
    lc.worker_exited(1, "exited 1", now=1)
    assert lc.tune_in("b", now=10) == [Refuse(("b",), "boom")]
    assert lc.state is State.FAILED and lc.viewer_count == 0
    assert lc.tune_in("c", now=31.5) == [RequestStream(2)]


def test_a_worker_giving_up_under_watchers_closes_them_with_its_reason():
    lc = live("a", "b")
    assert lc.stream_failed(1, "input vanished") == [Disconnect(("a", "b"), "input vanished"), StopStream(1)]
    assert (lc.state, lc.viewer_count) == (State.FAILING, 0)
    assert lc.tune_in("c") == [Refuse(("c",), "input vanished")]  # no waiting for a dying worker
    assert lc.worker_exited(1, "exited 1") == [StopStream(1)]
    assert (lc.state, lc.failure) == (State.FAILED, "input vanished")


def test_stream_ended_under_watchers_starts_the_next_stream_for_them():
    lc = live("a")
    assert lc.stream_ended(1) == [StopStream(1), RequestStream(2)]
    assert (lc.state, set(lc.watching), lc.stream) == (State.REPLACING_UNSPAWNED, {"a"}, 2)
    assert lc.worker_exited(1, "killed by SIGKILL") == []  # the old stream's exit is stale now
    assert lc.tune_in("b") == [Admit(("b",), from_start=False)]  # the buffer still holds the old stream
    assert lc.worker_spawned(2, 200) == [] and lc.state is State.REPLACING
    assert lc.stream_ready(2, 201) == []
    assert lc.first_bytes(2) == []  # they continue: nobody is admitted again
    assert (lc.state, set(lc.watching)) == (State.LIVE, {"a", "b"})


def test_worker_dying_under_watchers_starts_the_next_stream_for_them():
    lc = live("a")
    assert lc.worker_exited(1, "killed by SIGKILL") == [StopStream(1), RequestStream(2)]
    assert (lc.state, set(lc.watching)) == (State.REPLACING_UNSPAWNED, {"a"})
    assert lc.stream_ended(1) == []  # its EOF, seen later, is stale


def test_a_replacement_dying_before_its_first_byte_fails_the_channel():
    lc = live("a")
    lc.stream_ended(1)
    lc.worker_spawned(2, 200)
    assert lc.worker_exited(2, "exited 1") == [StopStream(2), Disconnect(("a",), "air worker exited 1")]
    assert (lc.state, lc.viewer_count) == (State.FAILED, 0)


def test_start_timeout_refuses_the_waiting_and_stops_the_worker():
    lc = starting("a")
    assert lc.start_timed_out(1, "no stream within 10 s") == [Refuse(("a",), "no stream within 10 s"), StopStream(1)]
    assert lc.state is State.FAILING
    assert lc.worker_exited(1, "exited 0") == [StopStream(1)]
    assert (lc.state, lc.failure) == (State.FAILED, "no stream within 10 s")


def test_start_timeout_before_the_worker_spawned_stops_it_when_it_does():
    lc = starting("a", spawned=False)
    assert lc.start_timed_out(1, "no stream within 10 s") == [Refuse(("a",), "no stream within 10 s")]
    assert lc.state is State.FAILING_UNSPAWNED
    assert lc.worker_spawned(1, 100) == [StopStream(1)]
    assert lc.worker_exited(1, "exited 0") == [StopStream(1)]
    assert lc.state is State.FAILED


def test_start_timeout_while_stopping_unspawned_refuses_those_waiting_for_the_next_stream():
    lc = starting("a", spawned=False)
    lc.tune_out("a")
    lc.tune_in("b")
    assert lc.start_timed_out(1, "no stream within 10 s") == [Refuse(("b",), "no stream within 10 s")]
    assert lc.state is State.FAILING_UNSPAWNED


def test_stream_ended_before_first_bytes_stops_and_its_exit_then_fails():
    lc = starting("a")
    assert lc.stream_ended(1) == [StopStream(1)]
    assert lc.state is State.STARTING
    assert lc.worker_exited(1, "exited 1")[-1] == Refuse(("a",), "air worker exited 1")
    assert lc.state is State.FAILED


def test_a_replacement_that_never_comes_closes_its_live_viewers():
    lc = live("a")
    lc.stream_ended(1)  # the worker died: stream 2 is requested for "a"
    lc.worker_spawned(2, 200)
    actions = lc.start_timed_out(2, "no stream within 10 s")
    assert actions == [Disconnect(("a",), "no stream within 10 s"), StopStream(2)]
    assert lc.state is State.FAILING and lc.viewer_count == 0
    lc.worker_exited(2, "exited 0")
    assert (lc.state, lc.failure) == (State.FAILED, "no stream within 10 s")


def test_a_worker_failing_after_its_start_timeout_keeps_the_reason_its_viewers_heard():
    lc = starting("a")
    lc.start_timed_out(1, "no stream within 10 s")
    assert lc.stream_failed(1, "ffmpeg exited") == []
    assert lc.failure == "no stream within 10 s"


# Stale events: filtered once, at the entry

@pytest.mark.parametrize("event", ["worker_spawned", "stream_ready", "first_bytes", "start_timed_out",
                                   "stream_failed", "stream_ended", "worker_exited"])
def test_events_for_a_stale_stream_change_nothing(event):
    lc = live("a")
    lc.tune_out("a")
    lc.worker_exited(1, "exited 0")
    lc.tune_in("b")  # stream 2 is starting
    before = (lc.state, lc.stream, lc.worker_pid, lc.failure, set(lc.waiting), set(lc.watching))
    args = {"worker_spawned": (1, 5), "stream_ready": (1, 6), "first_bytes": (1,),
            "start_timed_out": (1, "old"), "stream_failed": (1, "old"), "stream_ended": (1,),
            "worker_exited": (1, "exited 0")}[event]
    expected = [StopStream(1)] if event in ("worker_spawned", "stream_ready") else []
    assert getattr(lc, event)(*args) == expected
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


def test_the_viewer_sets_are_read_only_views_in_arrival_order():
    lc = live("a", "b")
    lc.tune_in("c")
    assert list(lc.watching) == ["a", "b", "c"]
    assert not hasattr(lc.watching, "add")


# Random sequences, played as the front, the supervisor and the workers would: invariants hold
# and no event they can send meets NoTransition


class World:
    def __init__(self, rng: random.Random):
        self.rng = rng
        self.lc = make()
        self.viewers: dict[int, str] = {}  # viewer -> "waiting" | "watching"
        self.next_viewer = 0
        self.requested: list[int] = []
        self.spawned: set[int] = set()  # WorkerSpawned delivered
        self.ready: set[int] = set()  # the front holds its stream FD
        self.closed: set[int] = set()  # the front closed its stream FD (StopStream or EOF)
        self.gave_up: set[int] = set()
        self.exited: set[int] = set()
        self.stopped: set[int] = set()  # StopStream was issued
        self.live_bytes: set[int] = set()  # first_bytes sent
        self.deadline: int | None = None  # the front's start deadline: for which stream
        self.log: list[str] = []

    def alive(self) -> set[int]:
        return set(self.requested) - self.exited

    def apply(self, name: str, *args) -> None:
        self.log.append(f"{name}{args} in {self.lc.state.name}")
        try:
            actions = getattr(self.lc, name)(*args)
        except NoTransition:
            print("\n".join(self.log[-40:]))
            raise
        for a in actions:
            self.log.append(f"  -> {a}")
            if isinstance(a, RequestStream):
                assert self.alive() <= self.stopped, f"RequestStream while {self.alive()} runs unstopped"
                assert a.stream not in self.requested, "stream id reused"
                self.requested.append(a.stream)
                self.deadline = a.stream
            elif isinstance(a, StopStream):
                assert a.stream in self.requested or a.stream == 999
                self.stopped.add(a.stream)
                self.closed.add(a.stream)
                if a.stream == self.deadline:
                    self.deadline = None
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
            self.closed.discard(args[0])
        self.check()

    def check(self) -> None:
        lc = self.lc
        assert lc.viewer_count == len(lc.waiting) + len(lc.watching)
        assert not set(lc.waiting) & set(lc.watching)
        assert set(lc.waiting) == {v for v, s in self.viewers.items() if s == "waiting"}
        assert set(lc.watching) == {v for v, s in self.viewers.items() if s == "watching"}
        assert len(self.alive() - self.stopped) <= 1, "two streams at once"
        assert self.alive() - self.stopped <= {lc.stream}, "a running stream the lifecycle forgot"
        if lc.state in (State.IDLE, State.FAILED):
            assert lc.stream is None and lc.viewer_count == 0
        if lc.state in (State.LIVE, State.REPLACING_UNSPAWNED, State.REPLACING):
            assert not lc.waiting and lc.watching, "live for nobody"
        if lc.state in (State.STARTING_UNSPAWNED, State.STARTING):
            assert not lc.watching and lc.waiting, "starting for nobody"
        if lc.state.name.startswith(("STOPPING", "FAILING")):
            assert not lc.watching
        if lc.state.name.startswith("FAILING"):
            assert not lc.waiting
        if lc.state in STOP_SENT:
            assert lc.stream in self.stopped, "STOP due but never sent"

    def step(self) -> None:
        rng, lc = self.rng, self.lc
        s = self.requested[-1] if self.requested else None
        choices = ["tune_in", "tune_out", "stale"]
        if s is not None and s not in self.exited:
            choices += ["worker_spawned", "stream_ready", "stream_failed", "worker_exited", "deadline"]
            if s in self.ready and s not in self.closed:
                choices += ["first_bytes", "stream_ended"]
        kind = rng.choice(choices)
        if kind == "tune_in":
            self.next_viewer += 1
            self.viewers[self.next_viewer] = "waiting"
            self.apply("tune_in", self.next_viewer, rng.choice([0.0, 1000.0]))
        elif kind == "tune_out":
            if self.viewers:
                v = rng.choice(sorted(self.viewers))
                del self.viewers[v]
                self.apply("tune_out", v)
        elif kind == "stale":
            old = rng.choice(self.requested[:-1] or [999])
            event = rng.choice(["worker_spawned", "stream_ready", "first_bytes", "stream_failed",
                                "stream_ended", "worker_exited"])
            args = {"worker_spawned": (old, 1), "stream_ready": (old, 2), "first_bytes": (old,),
                    "stream_failed": (old, "x"), "stream_ended": (old,), "worker_exited": (old, "x")}[event]
            before = (lc.state, lc.stream, lc.worker_pid, lc.failure)
            self.apply(event, *args)
            assert (lc.state, lc.stream, lc.worker_pid, lc.failure) == before
        elif kind == "worker_spawned":
            if s not in self.spawned:
                self.spawned.add(s)
                self.apply("worker_spawned", s, 1000 + s)
        elif kind == "stream_ready":
            if s not in self.gave_up and s not in self.stopped:
                self.apply("stream_ready", s, 2000 + s)
        elif kind == "stream_failed":
            if s not in self.gave_up:
                self.gave_up.add(s)
                self.apply("stream_failed", s, f"failure of {s}")
        elif kind == "worker_exited":
            if s in self.spawned:
                self.exited.add(s)
                self.apply("worker_exited", s, "exited 1", 5.0)
                assert s in self.stopped, "an exited stream was never closed"
        elif kind == "deadline":
            if self.deadline == s:
                self.deadline = None
                self.apply("start_timed_out", s, "no stream within 10 s")
        elif kind == "first_bytes":
            if s not in self.live_bytes and lc.state in (State.STARTING, State.REPLACING):
                self.live_bytes.add(s)
                self.deadline = None
                self.apply("first_bytes", s)
        else:
            self.closed.add(s)
            self.apply("stream_ended", s)

    def settle(self) -> None:
        """Let the streams run their course: waiting viewers end up watching or refused, then all leave."""
        for _ in range(6):
            s = self.lc.stream
            if s is None:
                break
            if s not in self.spawned:
                self.spawned.add(s)
                self.apply("worker_spawned", s, 1000 + s)
            if self.lc.state.name.startswith(("STOPPING", "FAILING")) or s in self.closed:
                self.exited.add(s)
                self.apply("worker_exited", s, "exited 0", 5.0)
                continue
            if s not in self.ready:
                self.apply("stream_ready", s, 2000 + s)
            if self.lc.state in (State.STARTING, State.REPLACING):
                self.apply("first_bytes", s)
            break
        if self.viewers:
            assert self.lc.state is State.LIVE and set(self.viewers.values()) == {"watching"}
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
            self.apply("worker_exited", s, "exited 0", 5.0)
        assert self.lc.state in (State.IDLE, State.FAILED) and not self.alive() - self.stopped


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
