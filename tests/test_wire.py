"""The wire protocol: JSON datagrams between the processes, with a descriptor attached at times."""

from __future__ import annotations

import array
import os
import socket

import pytest

from retrovue_air import wire
from retrovue_air.wire import (ProtocolError, StartStream, Stop, StreamFailed, StreamReady, WorkerExited,
                               WorkerSpawned)

MESSAGES = [
    StartStream("1", 7),
    WorkerSpawned("1", 7, 4242),
    wire.StartFailed("1", 7, "cannot start an air worker: Resource temporarily unavailable"),
    wire.StopWorker("1", 7, 4242),
    wire.Reload("/etc/retrovue-air.toml"),
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


def test_non_ascii_text_is_sent_as_utf8_not_escaped():
    assert wire.encode(StreamFailed("1", 1, "Grüße")) == \
        '{"type": "StreamFailed", "channel": "1", "stream": 1, "reason": "Grüße", "stderr_tail": ""}'.encode()


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


# Over real socketpairs

@pytest.fixture
def pair():
    a, b = wire.socket_pair()
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_pair_is_private_seqpacket_with_no_name():
    a, b = wire.socket_pair()
    with a, b:
        assert a.type == socket.SOCK_SEQPACKET and a.family == socket.AF_UNIX
        assert a.getsockname() in ("", b"", None) and b.getpeername() in ("", b"", None)


def test_receive_on_an_empty_socket_raises_blocking_io_error(pair):
    with pytest.raises(BlockingIOError):
        wire.receive(pair[1])


def test_send_and_receive_messages_in_order(pair):
    a, b = pair
    wire.send(a, Stop(5))
    wire.send(a, StreamFailed("2", 5, "gone"))
    assert wire.receive(b) == (Stop(5), [])
    assert wire.receive(b) == (StreamFailed("2", 5, "gone"), [])


def test_the_peer_closing_reads_as_none(pair):
    a, b = pair
    wire.send(a, Stop(1))
    a.close()
    assert wire.receive(b) == (Stop(1), [])
    assert wire.receive(b) == (None, [])


def test_receive_some_is_bounded_and_reports_bad_messages_without_stopping(pair):
    a, b = pair
    for i in range(5):
        wire.send(a, Stop(i))
    a.send(b"garbage")
    wire.send(a, Stop(99))
    got = list(wire.receive_some(b, limit=3))
    assert got == [(Stop(0), []), (Stop(1), []), (Stop(2), [])]
    rest = list(wire.receive_some(b))
    assert [m for m, _ in rest[:2]] == [Stop(3), Stop(4)]
    assert isinstance(rest[2][0], ProtocolError)
    assert rest[3] == (Stop(99), [])


def test_a_descriptor_sent_with_a_message_arrives_as_a_working_fd(pair):
    a, b = pair
    r, w = os.pipe()
    try:
        wire.send(a, StreamReady("1", 9, 1234), fd=w)
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


def test_a_rejected_message_with_scm_rights_has_its_fds_closed(pair):
    a, b = pair
    r, w = os.pipe()
    try:
        before = fd_count()
        for _ in range(5):
            a.sendmsg([b'{"type": "Nope"}'], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [w]))])
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


def test_a_config_of_any_size_travels_whole_through_a_memfd(pair):
    from retrovue_air import config as configuration

    a, b = pair
    text = "# Grüße\n" * 20_000 + configuration.default_config_text()
    config = configuration.parse(text, "/etc/big.toml")
    before = fd_count()
    wire.send_config(a, wire.Reload("/etc/big.toml"), config)
    message, [fd] = wire.receive(b)
    assert message == wire.Reload("/etc/big.toml")
    assert wire.read_config(fd) == config
    assert fd_count() == before
