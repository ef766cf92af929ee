"""Lineup: the channels the front serves, by id, and those a reload removed whose stream is not over yet."""

from __future__ import annotations

import logging
import selectors
from collections.abc import Callable

from retrovue_air.config import Channel as ChannelConfig, Config

from .channel import Channel
from .channel_lifecycle import STREAMLESS, ChannelLifecycle

log = logging.getLogger("http_front")


class Lineup:
    def __init__(self, config: Config, next_stream: Callable[[], int], selector: selectors.BaseSelector):
        self._next_stream = next_stream
        self._selector = selector
        self._retry_after = config.failed_retry_seconds
        self.channels = {c.id: self._new(c) for c in config.channels}
        self.retired: set[Channel] = set()  # removed by a reload, their worker not yet reaped

    def _new(self, config: ChannelConfig) -> Channel:
        return Channel(config, ChannelLifecycle(config.id, next_stream=self._next_stream,
                                                retry_after=self._retry_after), self._selector)

    def get(self, channel_id: str) -> Channel | None:
        return self.channels.get(channel_id)

    def __iter__(self):
        """Every channel with state to look after: served ones, then retired ones."""
        return iter([*self.channels.values(), *self.retired])

    def served(self) -> tuple[Channel, ...]:
        return tuple(self.channels.values())

    def reload(self, new: Config) -> list[Channel]:
        """Take a new configuration: unchanged channels keep everything, changed ones take it for
        their next stream. Returns the removed channels, whose viewers the caller closes."""
        self._retry_after = new.failed_retry_seconds
        wanted = {c.id: c for c in new.channels}
        removed = [self.channels.pop(i) for i in [i for i in self.channels if i not in wanted]]
        for channel in removed:
            log.info("channel %s: removed by the new configuration; closing its viewers", channel.id)
            self.retired.add(channel)
        for channel_id, channel_config in wanted.items():
            if channel_id not in self.channels:
                log.info("channel %s: added", channel_id)
                self.channels[channel_id] = self._new(channel_config)
            elif self.channels[channel_id].config != channel_config:
                log.info("channel %s: changed; the change applies to its next stream", channel_id)
            self.channels[channel_id].config = channel_config
            self.channels[channel_id].lifecycle.retry_after = new.failed_retry_seconds
        return removed

    def retire_if_done(self, channel: Channel) -> None:
        if channel in self.retired and channel.lifecycle.state in STREAMLESS:
            self.retired.discard(channel)
            log.info("channel %s: retired: its last stream is over", channel.id)
