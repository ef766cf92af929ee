"""The wire protocol: JSON datagrams between the processes, with a descriptor attached at times."""

from __future__ import annotations

import array
import os
import socket
import uuid

import pytest

from retrovue_air import wire
from retrovue_air.wire import (ProtocolError, StartStream, Stop, StreamFailed, StreamReady, WorkerExited,
                               WorkerSpawned)

MESSAGES = [
    StartStream("1", 7),
    WorkerSpawned("1", 7, 4242),
    WorkerExited("news", 7, 4242, "killed by SIGKILL"),
    StreamReady("1", 7, 4243),
    StreamFailed("1", 7, "ffmpeg: Invalid argument \"é\"\n"),
    Stop(7),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_survives_encode_and_decode(message):
    data = wire.encode(message)
    assert isinstance(data, bytes)
    assert wire.decode(data) == message


def test_encoding_is_one_flat_json_object_with_its_type():
    assert wire.encode(WorkerExited("1", 3, 99, "exited 0")) == \
        b'{"type": "WorkerExited", "channel": "1", "stream": 3, "pid": 99, "status": "exited 0"}'


def test_a_message_over_max_message_is_refused_when_encoded():
    with pytest.raises(ProtocolError, match=f"over {wire.MAX_MESSAGE}"):
        wire.encode(StreamFailed("1", 1, "x" * wire.MAX_MESSAGE))


@pytest.mark.parametrize("data", [
    b"", b"not json", b"\xff\xfe", b"[]", b"42", b"null", b'"Stop"',
    b'{"stream": 1}',  # no type
    b'{"type": "Launch", "stream": 1}',  # unknown type
    b'{"type": ["Stop"], "stream": 1}',  # unhashable type
    b'{"type": "Stop"}',  # missing field
    b'{"type": "Stop", "stream": 1, "extra": 2}',  # extra field
    b'{"type": "Stop", "stream": "1"}',  # wrong types
    b'{"type": "Stop", "stream": 1.0}',
    b'{"type": "Stop", "stream": true}',
    b'{"type": "Stop", "stream": null}',
    b'{"type": "StartStream", "channel": 1, "stream": 1}',
    b'{"type": "StreamFailed", "channel": "1", "stream": 1, "reason": ["x"]}',
])
def test_garbage_and_malformed_messages_raise_protocol_error(data):
    with pytest.raises(ProtocolError):
        wire.decode(data)


def test_deeply_nested_json_under_max_message_raises_protocol_error():
    data = b"[" * 3000
    assert len(data) <= wire.MAX_MESSAGE
    with pytest.raises(ProtocolError):
        wire.decode(data)


# Over real sockets

@pytest.fixture
def inboxes():
    tag = uuid.uuid4().hex
    a = wire.bind_inbox(f"\0retrovue-air-test/{tag}/a".encode())
    b = wire.bind_inbox(f"\0retrovue-air-test/{tag}/b".encode())
    yield a, b
    a.close()
    b.close()


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_inbox_addresses_are_abstract_and_distinct_per_stream():
    assert wire.front_inbox_address("x").startswith(b"\0")
    assert wire.air_inbox_address("x", 1) != wire.air_inbox_address("x", 2)


def test_binding_an_address_in_use_fails():
    address = f"\0retrovue-air-test/{uuid.uuid4().hex}".encode()
    first = wire.bind_inbox(address)
    try:
        with pytest.raises(OSError):
            wire.bind_inbox(address)
    finally:
        first.close()


def test_receive_on_an_empty_inbox_raises_blocking_io_error(inboxes):
    with pytest.raises(BlockingIOError):
        wire.receive(inboxes[1])


def test_send_and_receive_a_message_between_inboxes(inboxes):
    a, b = inboxes
    wire.send(a, Stop(5), b.getsockname())
    wire.send(a, StreamFailed("2", 5, "gone"), b.getsockname())
    assert wire.receive(b) == (Stop(5), [])
    assert wire.receive(b) == (StreamFailed("2", 5, "gone"), [])


def test_a_descriptor_sent_with_a_message_arrives_as_a_working_fd(inboxes):
    a, b = inboxes
    r, w = os.pipe()
    try:
        wire.send(a, StreamReady("1", 9, 1234), b.getsockname(), fd=w)
        message, fds = wire.receive(b)
        assert message == StreamReady("1", 9, 1234)
        [received] = fds
        assert received not in (r, w)
        os.write(received, b"through the passed fd")
        os.close(received)
        assert os.read(r, 100) == b"through the passed fd"
    finally:
        os.close(r)
        os.close(w)


def test_a_rejected_message_with_scm_rights_has_its_fds_closed(inboxes):
    a, b = inboxes
    r, w = os.pipe()
    try:
        before = fd_count()
        for _ in range(5):
            a.sendmsg([b'{"type": "Nope"}'], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [w]))],
                      0, b.getsockname())
            with pytest.raises(ProtocolError):
                wire.receive(b)
        assert fd_count() == before
        os.close(w)
        w = -1
        os.set_blocking(r, False)
        assert os.read(r, 1) == b""  # EOF: no copy of the write end is left open (else BlockingIOError)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def test_a_datagram_without_sender_credentials_is_rejected():
    tag = uuid.uuid4().hex
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # no SO_PASSCRED
    receiver.bind(f"\0retrovue-air-test/{tag}".encode())
    receiver.setblocking(False)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            wire.send(sender, Stop(1), receiver.getsockname())
        with pytest.raises(ProtocolError, match="credentials"):
            wire.receive(receiver)
    finally:
        receiver.close()


def test_control_pair_carries_messages_both_ways():
    supervisor, front = wire.control_pair()
    with supervisor, front:
        wire.send(front, StartStream("1", 1))
        assert wire.decode(supervisor.recv(wire.MAX_MESSAGE)) == StartStream("1", 1)
        wire.send(supervisor, WorkerSpawned("1", 1, 77))
        assert wire.receive(front) == (WorkerSpawned("1", 1, 77), [])
