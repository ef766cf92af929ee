"""Answers made without sockets: a bug in one costs that answer alone, and the guide is made in
steps, once per window, for every request that wants it."""

from __future__ import annotations

import dataclasses
import logging
import time

import pytest

from http_front import answer_failures, answers, routes, xmltv
from http_front.guide import Guide
from retrovue_air import config

CONFIG = config.parse('[[channel]]\nid = "1"\nname = "One"\nsource = "test-pattern"\n', "t.toml")


class BrokenChannel:
    """A channel whose summary has a bug: what /channels shows of it cannot be made."""
    id = "1"

    def summary(self, expose_paths: bool) -> dict:
        raise RuntimeError("a bug in the channel's summary")


@pytest.fixture
def fresh_log_lines(monkeypatch):
    monkeypatch.setattr(answer_failures, "_lines", {})


def test_an_answer_that_raises_is_a_500_and_one_log_line_with_the_traceback(fresh_log_lines, caplog):
    state = answers.FrontState(CONFIG, (BrokenChannel(),), 1)
    with caplog.at_level(logging.ERROR, logger="http_front"):
        for _ in range(20):
            data = answers.answer(routes.ChannelList(False), "h:1", state)
            assert data.startswith(b"HTTP/1.1 500 ") and b"Connection: close" in data
        head = answers.answer(routes.ChannelList(True), "h:1", state)
    assert head.startswith(b"HTTP/1.1 500 ") and head.endswith(b"\r\n\r\n"), "HEAD: no body"
    [line] = [r.getMessage() for r in caplog.records]
    assert "the ChannelList answer could not be made" in line
    assert "Traceback" in line and "RuntimeError: a bug in the channel's summary" in line
    healthy = answers.answer(routes.Health(False), "h:1", state)
    assert healthy.startswith(b"HTTP/1.1 200 "), "other answers are made as ever"


# The guide, made in steps

NOW = 1_773_519_000.0 + 7200  # the start of a window step, two hours on


def many_channels(count: int, hours: int = 336) -> config.Config:
    text = f"guide_hours = {hours}\n" + "".join(
        f'[[channel]]\nid = "c{i}"\nname = "Channel {i}"\nsource = "test-pattern"\n' for i in range(count))
    return config.parse(text, "t.toml")


def test_requests_for_one_window_share_one_guide_kept_until_the_window_moves(caplog):
    made = Guide(many_channels(3, hours=6))
    assert made.ask("first", False, "h:1", NOW) is None and made.ask("second", False, "h:1", NOW + 60) is None
    assert made.busy
    with caplog.at_level(logging.INFO, logger="http_front"):
        [(who_1, first), (who_2, second)] = made.work(float("inf"))
    assert (who_1, who_2) == ("first", "second") and first is second and not made.busy
    assert len([r for r in caplog.records if "the guide for" in r.getMessage()]) == 1
    head, _, body = first.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and f"Content-Length: {len(body)}".encode() in head
    assert body.count(b"<programme ") == 3 * (2 + 6 + 1)
    assert made.ask("later", False, "h:1", NOW + xmltv.WINDOW_STEP_SECONDS - 1) is first, "made again"
    assert made.ask("head", True, "h:1", NOW) == head + b"\r\n\r\n"
    assert made.ask("elsewhere", False, "other:1", NOW) is None, "another base URL is another guide"
    made.work(float("inf"))
    assert made.ask("next step", False, "h:1", NOW + xmltv.WINDOW_STEP_SECONDS) is None
    made.work(float("inf"))
    made.configure(many_channels(2, hours=6))
    assert made.ask("reloaded", False, "h:1", NOW) is None
    [(_, reloaded)] = made.work(float("inf"))
    assert reloaded.count(b"<programme ") == 2 * 9


def test_the_guide_is_the_same_made_in_steps_or_at_once():
    cfg = many_channels(4, hours=12)
    made = Guide(cfg)
    made.ask("who", False, "h:1", NOW)
    answers = []
    while not answers:
        answers = made.work(0.0)  # one piece a round
    start, end = xmltv.stepped_window(NOW, 12)
    at_once = xmltv.render(xmltv.listings(cfg.channels, {}, start, end), "http://h:1")
    assert answers[0][1].partition(b"\r\n\r\n")[2] == at_once


def test_each_step_of_a_two_week_guide_of_fifty_channels_is_short():
    made = Guide(many_channels(50))
    for i in range(4):
        made.ask(i, False, "h:1", NOW)
    longest, steps, answers = 0.0, 0, []
    while not answers:
        began = time.process_time()
        answers = made.work(0.005)
        longest, steps = max(longest, time.process_time() - began), steps + 1
    assert len(answers) == 4 and steps > 10
    assert longest < 0.05, f"a step took {longest * 1000:.0f} ms of CPU"


def test_a_guide_that_cannot_be_made_is_a_500_for_those_waiting_and_is_tried_again(fresh_log_lines, caplog):
    broken = config.MediaFiles(paths=("/m/a.mkv",), schedule=BrokenSchedule())
    cfg = dataclasses.replace(CONFIG, channels=(dataclasses.replace(CONFIG.channels[0], source=broken),))
    made = Guide(cfg)
    made.ask("a", False, "h:1", NOW)
    made.ask("b", True, "h:1", NOW)
    with caplog.at_level(logging.ERROR, logger="http_front"):
        answers = made.work(float("inf"))
    assert [(who, data.split(b"\r\n")[0]) for who, data in answers] == [("a", b"HTTP/1.1 500 Internal Server Error"),
                                                                        ("b", b"HTTP/1.1 500 Internal Server Error")]
    assert len(caplog.records) == 1 and "RuntimeError: a bug in the schedule" in caplog.records[0].getMessage()
    assert not made.busy and made.ask("c", False, "h:1", NOW) is None, "not kept: asked again, made again"


class BrokenSchedule:
    def airings_from(self, t):
        raise RuntimeError("a bug in the schedule")
