"""Channel: the front's live state for one channel — its lifecycle, stream FDs, buffer and viewers."""

from __future__ import annotations

import socket

from retrovue_air.config import Channel as ChannelConfig

from .channel_lifecycle import ChannelLifecycle
from .channel_stats import ChannelStats
from .stream_buffer import StreamBuffer
from .ts_packets import TsScanner
from .viewer import Viewer


class Channel:
    """The front's view of one channel: its lifecycle, its stream and its buffer."""

    def __init__(self, config: ChannelConfig, lifecycle: ChannelLifecycle):
        self.config = config
        self.lifecycle = lifecycle
        self.stream_sock: socket.socket | None = None
        self.stream_id: int | None = None  # the stream stream_sock carries
        # A restarted ffmpeg's stream, queued until the old one has been read to its end.
        self.next_stream_sock: socket.socket | None = None
        self.start_deadline: float | None = None
        self.failure_tail = ""  # the tail of ffmpeg's stderr when the channel last failed
        self.buffer: StreamBuffer | None = None
        self.scanner: TsScanner | None = None  # where in the buffer a late joiner can start
        self.said_no_keyframe = False
        self.flush_deadline: float | None = None
        self.blocked: set[Viewer] = set()  # watching viewers waiting for writability
        self.viewers: dict[Viewer, None] = {}  # watching viewers, in arrival order
        self.stats = ChannelStats()
        self.start_requested_at: float | None = None
        self.stop_requested_at: float | None = None

    def bytes_out(self) -> int:
        return self.stats.bytes_out_closed + sum(v.cursor - v.start_cursor for v in self.viewers)

    @property
    def id(self) -> str:
        return self.config.id

    def summary(self) -> dict:
        lc = self.lifecycle
        return {"id": self.id, "name": self.config.name, "state": lc.state.shown,
                "viewers": lc.viewer_count, "worker_pid": lc.worker_pid,
                "ffmpeg_pid": lc.ffmpeg_pid, "error": lc.failure,
                "stderr_tail": self.failure_tail if lc.failure else ""}
