"""Channel: the front's live state for one channel — its lifecycle, stream FDs, buffer and viewers."""

from __future__ import annotations

import re
import socket

import h11

from retrovue_air.config import Channel as ChannelConfig

from .channel_lifecycle import ChannelLifecycle
from .channel_stats import ChannelStats
from .stream_buffer import StreamBuffer
from .ts_packets import TsScanner
from .viewer import Viewer


def host_of(request: h11.Request) -> str:
    """The Host the viewer used (for absolute links in playlists), made safe to echo."""
    for name, value in request.headers:
        if name == b"host":
            host = value.decode("ascii", "replace")
            if all(c.isalnum() or c in ".-:[]" for c in host):
                return host
    return "127.0.0.1"


# An absolute path as ffmpeg and our own messages print it: up to a space, quote or colon.
_PATH = re.compile(r"(?<![\w.])/[^\s'\":]*/([^\s'\":/]+)")


def redact_paths(text: str) -> str:
    """Paths reduced to their file names: where the media library lives is nobody's business."""
    return _PATH.sub(r"\1", text)


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
        self.schedule = None  # what it airs when (retrovue_air.schedule), for the guide; None: placeholders

    def bytes_out(self) -> int:
        return self.stats.bytes_out_closed + sum(v.cursor - v.start_cursor for v in self.viewers)

    @property
    def id(self) -> str:
        return self.config.id

    def summary(self, expose_paths: bool = False) -> dict:
        lc = self.lifecycle
        error, tail = lc.failure, self.failure_tail if lc.failure else ""
        if not expose_paths:
            error, tail = error and redact_paths(error), redact_paths(tail)
        return {"id": self.id, "name": self.config.name, "state": lc.state.value,
                "viewers": lc.viewer_count, "worker_pid": lc.worker_pid,
                "ffmpeg_pid": lc.ffmpeg_pid, "error": error, "stderr_tail": tail}
