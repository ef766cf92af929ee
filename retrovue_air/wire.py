"""The messages between the service's processes, and the sockets that carry them.

Three conversations, all on this machine:
  front -> supervisor   StartStream, FrontReady, Pong          (SOCK_SEQPACKET socketpair)
  supervisor -> front   WorkerSpawned, WorkerExited, Ping, Reload (same socketpair)
  air worker -> front   StreamReady (+ the stream FD; again after each ffmpeg restart),
                        StreamFailed                (datagram to the front's inbox)
  front -> air worker   Stop                        (datagram to the worker's inbox)

Each message is one datagram of JSON. Inboxes are abstract-namespace Unix datagram
sockets: they vanish with their last descriptor, so a crash leaves no file behind.
Abstract sockets have no permissions, so every receiver asks the kernel for the
sender's credentials (SO_PASSCRED) and drops what another user sent.
"""

from __future__ import annotations

import array
import json
import os
import socket
import struct
from dataclasses import asdict, dataclass, fields

MAX_MESSAGE = 65536  # a whole config file fits (Reload)
_UCRED = struct.Struct("3i")  # pid, uid, gid


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
    """A new, already validated configuration (SIGHUP)."""
    path: str
    text: str


MESSAGES = {cls.__name__: cls for cls in (StartStream, WorkerSpawned, WorkerExited, StreamReady,
                                          StreamFailed, Stop, FrontReady, Ping, Pong, Reload)}
Message = (StartStream | WorkerSpawned | WorkerExited | StreamReady | StreamFailed | Stop | FrontReady
           | Ping | Pong | Reload)


def encode(message: Message) -> bytes:
    data = json.dumps({"type": type(message).__name__, **asdict(message)}).encode()
    if len(data) > MAX_MESSAGE:
        raise ProtocolError(f"{type(message).__name__} is {len(data)} bytes, over {MAX_MESSAGE}")
    return data


def decode(data: bytes) -> Message:
    try:
        obj = json.loads(data)
        cls = MESSAGES[obj.pop("type")]
        names = {f.name: f.type for f in fields(cls)}
        if set(obj) != set(names):
            raise ProtocolError(f"{cls.__name__} with fields {sorted(obj)}")
        for name, value in obj.items():
            if type(value).__name__ != names[name]:
                raise ProtocolError(f"{cls.__name__}.{name} is {type(value).__name__}")
        return cls(**obj)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        raise ProtocolError(f"undecodable message {data[:80]!r}: {e}") from None


def front_inbox_address(instance: str) -> bytes:
    return f"\0retrovue-air/{instance}/front".encode()


def air_inbox_address(instance: str, stream: int) -> bytes:
    return f"\0retrovue-air/{instance}/air/{stream}".encode()


def bind_inbox(address: bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        sock.bind(address)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def send(sock: socket.socket, message: Message, address: bytes | None = None, fd: int | None = None) -> None:
    """Send one message, with one descriptor attached when `fd` is given.

    Python 3.11's socket.send_fds ignores its address, so an unconnected datagram
    socket goes through sendmsg with SCM_RIGHTS directly.
    """
    ancillary = []
    if fd is not None:
        ancillary.append((socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd])))
    if address is None:
        sock.sendmsg([encode(message)], ancillary)
    else:
        sock.sendmsg([encode(message)], ancillary, 0, address)


def receive(sock: socket.socket) -> tuple[Message, list[int]]:
    """Receive one message and the descriptors that came with it (the caller owns them).

    Raises BlockingIOError when nothing is queued, ProtocolError for a message that is
    not ours: undecodable, or sent by another user (its descriptors are closed here).
    """
    data, ancdata, flags, _ = sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(4 * 4)
                                           + socket.CMSG_SPACE(_UCRED.size))
    fds: list[int] = []
    sender_uid = None
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % 4
            fds.extend(array.array("i", payload[:usable]))
        elif level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            _, sender_uid, _ = _UCRED.unpack(payload[: _UCRED.size])
    try:
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            raise ProtocolError("truncated message")
        if sender_uid is None and sock.type == socket.SOCK_DGRAM:
            raise ProtocolError("message without sender credentials")
        if sender_uid is not None and sender_uid != os.geteuid():
            raise ProtocolError(f"message from uid {sender_uid}, not ours")
        return decode(data), fds
    except ProtocolError:
        for fd in fds:
            os.close(fd)
        raise


def control_pair() -> tuple[socket.socket, socket.socket]:
    """The supervisor's end and the front's end of their private control channel."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
