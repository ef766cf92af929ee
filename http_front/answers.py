"""Answers to every request but a stream: route and state in, one complete response out. No sockets."""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass

from retrovue_air import ingest_progress
from retrovue_air.config import Config

from . import guide_page, metrics, presentation, responses, routes, static_files, status_page, watch_page
from .answer_failures import answer_failed
from .channel import Channel


@dataclass(frozen=True)
class FrontState:
    """What the pages and /metrics show of the front, made per request: they read it, never change it."""
    config: Config
    channels: tuple[Channel, ...]
    connections: int

    @property
    def viewers(self) -> int:
        """Viewers tuned in (waiting or watching), all channels."""
        return sum(c.lifecycle.viewer_count for c in self.channels)

    @functools.cached_property
    def ingest(self) -> ingest_progress.IngestStatus | None:
        """Ingest progress (issue 13), read from the cache directory once per page; None if no file yet."""
        ours = {c.id for c in self.channels if c.config.ingest}
        if not ours:
            return None
        status = ingest_progress.read(ingest_progress.progress_path(self.config))
        if status is None:
            return None
        # /metrics labels come from this: only the channels this front serves, whatever the file lists.
        return dataclasses.replace(status, channels={cid: c for cid, c in status.channels.items() if cid in ours})

    def ingest_of(self, channel: Channel) -> dict:
        """{"ingest": how far the channel's files are} for a channel with ingest = true; else {}."""
        if not channel.config.ingest:
            return {}
        status = self.ingest and self.ingest.channels.get(channel.id)
        return {"ingest": dataclasses.asdict(status) if status else None}

    @property
    def active_channels(self) -> int:
        """Channels with a viewer: each holds a tuner (max_active_channels)."""
        return sum(1 for c in self.channels if c.lifecycle.viewer_count)


HTML = "text/html; charset=utf-8"


def _schedules(state: FrontState) -> dict[str, object]:
    return {c.id: c.schedule for c in state.channels if c.schedule is not None}


def answer(r: routes.Route, host: str, state: FrontState) -> bytes | None:
    """The whole response for route r; None for a stream (Watch, not HEAD), which the front serves.

    Whatever goes wrong making it is a 500 for this request alone (answer_failed)."""
    try:
        return _answer(r, host, state)
    except Exception:
        return answer_failed(f"the {type(r).__name__} answer", getattr(r, "head_only", False))


def _answer(r: routes.Route, host: str, state: FrontState) -> bytes | None:
    if isinstance(r, routes.Refuse):
        return responses.text(r.status, r.text, r.headers)
    if isinstance(r, routes.Health):
        return responses.text(200, "ok", head_only=r.head_only)
    if isinstance(r, routes.ChannelList):
        body = [c.summary(state.config.expose_paths) | state.ingest_of(c) for c in state.channels]
        return responses.json_body(200, body, head_only=r.head_only)
    if isinstance(r, routes.StatusPage):
        return responses.body(200, HTML, status_page.render(state, host), r.head_only)
    if isinstance(r, routes.Metrics):
        content_type, data = metrics.render(state)
        return responses.body(200, content_type, data, r.head_only)
    if isinstance(r, routes.WatchPage):
        page = watch_page.render(r.channel, state.config.channels, _schedules(state), time.time())
        return responses.body(200, HTML, page, r.head_only)
    if isinstance(r, routes.GuideGrid):
        page = guide_page.render(state.config.channels, _schedules(state), time.time())
        return responses.body(200, HTML, page, r.head_only)
    if isinstance(r, routes.StaticFile):
        return static_files.answer(r.name, r.head_only)
    if isinstance(r, presentation.PRESENTATION_ROUTES):
        schedules = {c.id: c.schedule for c in state.channels if c.schedule is not None}
        return presentation.answer(r, state.config, schedules, host, time.time())
    if r.head_only:
        return responses.stream_head()
    return None
