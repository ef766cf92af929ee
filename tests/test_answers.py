"""Answers made without sockets: a bug in one costs that answer alone."""

from __future__ import annotations

import logging

import pytest

from http_front import answer_failures, answers, routes
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
