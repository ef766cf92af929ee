"""The messages between the service's processes, and the private sockets that carry them.

Two kinds of conversation, all on this machine, all over socketpairs that the
supervisor makes before it forks (so no other process can name, reach or flood them):
  control (front <-> supervisor, one per front)
    front -> supervisor   StartStream, StopWorker, FrontReady, Pong
    supervisor -> front   WorkerSpawned (+ the front's end of that worker's link),
                          StartFailed, WorkerExited, Ping, Reload (+ a memfd holding the config)
  reload (a config loader -> supervisor, one per SIGHUP)
    loader -> supervisor  Reload (+ a memfd holding the config), or ReloadRefused
  link (front <-> one air worker, one per stream)
    worker -> front       StreamReady (+ the stream FD; again after each ffmpeg restart),
                          StreamFailed
    front -> worker       Stop            (and the front closing its end means the same)

Each message is one SOCK_SEQPACKET record of JSON: record boundaries are kept, and the
peer's death is an EOF, never a silently dropped datagram.
"""

from __future__ import annotations

import array
import json
import os
import pickle
import socket
from dataclasses import asdict, dataclass, fields

MAX_MESSAGE = 8192  # a reason with ffmpeg's stderr tail; a config travels in a memfd
MAX_FDS = 4  # descriptors accepted with one message: more are closed unread


class ProtocolError(Exception):
    pass


@dataclass(frozen=True)
class StartStream:
    channel: str
    stream: int


@dataclass(frozen=True)
class WorkerSpawned:
    channel: str
    stream: int
    pid: int


@dataclass(frozen=True)
class WorkerExited:
    channel: str
    stream: int
    pid: int
    status: str


@dataclass(frozen=True)
class StreamReady:
    channel: str
    stream: int
    ffmpeg_pid: int


@dataclass(frozen=True)
class StreamFailed:
    channel: str
    stream: int
    reason: str
    stderr_tail: str = ""


@dataclass(frozen=True)
class Stop:
    stream: int


@dataclass(frozen=True)
class StartFailed:
    """The supervisor could not start a worker for the stream (fork failed, unknown channel)."""
    channel: str
    stream: int
    reason: str


@dataclass(frozen=True)
class StopWorker:
    """The front asks the supervisor to stop a worker that did not stop on its own (or cannot be told)."""
    channel: str
    stream: int
    pid: int


@dataclass(frozen=True)
class FrontReady:
    """The front is serving: the supervisor may tell systemd READY=1."""


@dataclass(frozen=True)
class Ping:
    """The supervisor asks whether the front's loop still turns (for systemd's watchdog)."""


@dataclass(frozen=True)
class Pong:
    viewers: int
    live_channels: int


@dataclass(frozen=True)
class Reload:
    """A new, already validated configuration (SIGHUP); the Config itself comes in a memfd."""
    path: str


@dataclass(frozen=True)
class ReloadRefused:
    """The file a SIGHUP asked for cannot be the configuration: every error found, one a line."""
    reason: str

    @classmethod
    def cut(cls, reason: str, budget: int = MAX_MESSAGE // 2) -> "ReloadRefused":
        """As many whole lines of reason as fit in one message, and how many more there were."""
        lines = reason.splitlines() or [""]
        kept: list[str] = []
        size = 0
        for line in lines:
            line = line[: budget // 4]  # one long line (a path, ffmpeg's words) is cut, not dropped
            size += len(json.dumps(line, ensure_ascii=False).encode())
            if kept and size > budget:
                break
            kept.append(line)
        left = len(lines) - len(kept)
        return cls("\n".join(kept) + (f"\n(and {left} more)" if left else ""))


MESSAGES = {cls.__name__: cls for cls in (StartStream, WorkerSpawned, StartFailed, WorkerExited, StreamReady,
                                          StreamFailed, Stop, StopWorker, FrontReady, Ping, Pong, Reload,
                                          ReloadRefused)}
Message = (StartStream | WorkerSpawned | StartFailed | WorkerExited | StreamReady | StreamFailed | Stop
           | StopWorker | FrontReady | Ping | Pong | Reload | ReloadRefused)
_TYPES = {"str": str, "int": int}


def encode(message: Message) -> bytes:
    data = json.dumps({"type": type(message).__name__, **asdict(message)}, ensure_ascii=False).encode()
    if len(data) > MAX_MESSAGE:
        raise ProtocolError(f"{type(message).__name__} is {len(data)} bytes, over {MAX_MESSAGE}")
    return data


def decode(data: bytes) -> Message:
    try:
        obj = json.loads(data)
        cls = MESSAGES[obj.pop("type")]
        names = {f.name: _TYPES[f.type] for f in fields(cls)}
        if set(obj) != set(names):
            raise ProtocolError(f"{cls.__name__} with fields {sorted(obj)}")
        for name, value in obj.items():
            # type(), not isinstance: a JSON true is an int to isinstance.
            if type(value) is not names[name]:
                raise ProtocolError(f"{cls.__name__}.{name} is {type(value).__name__}")
        return cls(**obj)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        raise ProtocolError(f"undecodable message {data[:80]!r}: {e}") from None


def send(sock: socket.socket, message: Message, fd: int | None = None) -> None:
    """Send one message, with one descriptor attached when `fd` is given."""
    ancillary = []
    if fd is not None:
        ancillary.append((socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd])))
    sock.sendmsg([encode(message)], ancillary)


def receive(sock: socket.socket) -> tuple[Message | None, list[int]]:
    """Receive one message and the descriptors that came with it (the caller owns them).

    Returns (None, []) at EOF: the peer is gone. Raises BlockingIOError when nothing is
    queued, ProtocolError for a message that is not ours (its descriptors are closed here).
    """
    try:
        data, ancdata, flags, _ = sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(MAX_FDS * 4))
    except (ConnectionResetError, BrokenPipeError):
        return None, []
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % 4
            fds.extend(array.array("i", payload[:usable]))
    if not data and not fds:
        return None, []
    try:
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            raise ProtocolError("truncated message")
        return decode(data), fds
    except ProtocolError:
        for fd in fds:
            os.close(fd)
        raise


def receive_some(sock: socket.socket, limit: int = 64):
    """Yield up to `limit` messages queued on sock as (message, fds); (None, []) once at EOF.

    Bounded, so that one busy peer cannot hold the loop; a message that is not ours is
    skipped (the caller is told through `rejected`)."""
    for _ in range(limit):
        try:
            message, fds = receive(sock)
        except BlockingIOError:
            return
        except ProtocolError as e:
            yield e, []
            continue
        yield message, fds
        if message is None:
            return


def socket_pair() -> tuple[socket.socket, socket.socket]:
    """A private, connected pair for one conversation (control, or one worker's link)."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    return a, b


def send_config(sock: socket.socket, message: Reload, config) -> None:
    """Send a validated Config, parsed once by the supervisor, through a memfd.

    A memfd has no size limit, unlike one message; pickle is safe here because both
    ends are this program, over a socketpair no other process can reach."""
    fd = os.memfd_create("retrovue-air-config", os.MFD_CLOEXEC)
    try:
        with open(fd, "wb", closefd=False) as f:
            pickle.dump(config, f)
        send(sock, message, fd=fd)
    finally:
        os.close(fd)


def read_config(fd: int):
    """The Config from a memfd that send_config sent (closes the fd)."""
    with open(fd, "rb") as f:
        f.seek(0)
        return pickle.load(f)
