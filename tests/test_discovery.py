"""Discovery: HDHomeRun packets as bytes, SSDP answers, and the responder on real UDP sockets."""

from __future__ import annotations

import select
import selectors
import socket
import struct

import pytest

from http_front import discovery, tuner
from http_front.discovery import PacketError, decode_packet, encode_packet
from retrovue_air import device_id

# What Jellyfin's HdHomerunHost.DiscoverDevices broadcasts, byte for byte: any tuner, any id.
JELLYFIN_REQUEST = bytes([0, 2, 0, 12, 1, 4, 255, 255, 255, 255, 2, 4, 255, 255, 255, 255, 115, 204, 125, 143])
DEVICE = tuner.Device(device_id.with_checksum(0x105404B), "RetroVue Air", 4)
BASE = "http://192.168.1.20:8000"


def tags_of(packet: bytes) -> dict[int, bytes]:
    kind, tags = decode_packet(packet)
    assert kind == discovery.TYPE_DISCOVER_RPY
    return dict(tags)


# Packets

def test_a_request_encodes_to_jellyfins_exact_bytes_crc_included():
    wildcard = struct.pack(">I", 0xFFFFFFFF)
    assert encode_packet(2, [(1, wildcard), (2, wildcard)]) == JELLYFIN_REQUEST
    assert decode_packet(JELLYFIN_REQUEST) == (2, [(1, wildcard), (2, wildcard)])


def test_lengths_over_127_take_two_bytes_low_seven_bits_first():
    value = bytes(range(256)) * 2  # 512 bytes: 0x80 | (512 & 0x7f), 512 >> 7
    packet = encode_packet(3, [(0x2A, value), (0x10, b"\x02")])
    assert packet[4:7] == bytes([0x2A, 0x80, 0x04])
    assert decode_packet(packet) == (3, [(0x2A, value), (0x10, b"\x02")])
    assert struct.unpack("<I", packet[-4:])[0] == __import__("zlib").crc32(packet[:-4])


@pytest.mark.parametrize("damage", [
    lambda p: p[:-1],  # cut short
    lambda p: p + b"\0",  # a byte too many
    lambda p: p[:-4] + bytes([p[-4] ^ 1]) + p[-3:],  # CRC wrong
    lambda p: p[:6] + bytes([p[6] ^ 0x40]) + p[7:],  # payload changed, CRC kept
    lambda p: b"\0\2",
])
def test_damaged_packets_are_refused(damage):
    with pytest.raises(PacketError):
        decode_packet(damage(JELLYFIN_REQUEST))


def test_a_tag_longer_than_its_payload_is_refused_even_with_a_good_crc():
    frame = struct.pack(">HH", 2, 3) + bytes([1, 9, 0])
    with pytest.raises(PacketError, match="says 9 bytes"):
        decode_packet(frame + struct.pack("<I", __import__("zlib").crc32(frame)))


def test_jellyfins_request_gets_a_reply_with_type_id_tuners_and_urls():
    reply = discovery.answer_discover(JELLYFIN_REQUEST, DEVICE, BASE)
    assert reply[:2] == b"\x00\x03" and len(reply) > 13  # what Jellyfin checks before it asks discover.json
    tags = tags_of(reply)
    assert tags[discovery.TAG_DEVICE_TYPE] == struct.pack(">I", 1)
    assert tags[discovery.TAG_DEVICE_ID] == bytes.fromhex(DEVICE.device_id)
    assert tags[discovery.TAG_TUNER_COUNT] == b"\x04"
    assert tags[discovery.TAG_BASE_URL] == BASE.encode()
    assert tags[discovery.TAG_LINEUP_URL] == f"{BASE}/lineup.json".encode()
    assert tags[discovery.TAG_DEVICE_AUTH_STR] == DEVICE.device_auth.encode()


def request(types: list[int], wanted: int | None = None, tag: int = discovery.TAG_DEVICE_TYPE) -> bytes:
    tags = [(tag, b"".join(struct.pack(">I", t) for t in types))]
    if wanted is not None:
        tags.append((discovery.TAG_DEVICE_ID, struct.pack(">I", wanted)))
    return encode_packet(discovery.TYPE_DISCOVER_REQ, tags)


@pytest.mark.parametrize("packet, answered", [
    (request([1]), True),  # libhdhomerun: a tuner, any id (no id tag)
    (request([1], int(DEVICE.device_id, 16)), True),  # this very device
    (request([5, 1], tag=discovery.TAG_MULTI_TYPE), True),  # storage or tuner
    (request([5]), False),  # storage only
    (request([1], 0x12345674), False),  # another device
    (encode_packet(discovery.TYPE_DISCOVER_RPY, []), False),  # a reply, not a request
    (JELLYFIN_REQUEST[:-1] + b"\0", False),  # bad CRC
])
def test_only_requests_for_a_tuner_with_our_id_or_any_are_answered(packet, answered):
    assert (discovery.answer_discover(packet, DEVICE, BASE) is not None) is answered


# SSDP

def m_search(st: str, man: str = '"ssdp:discover"') -> bytes:
    return (f"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: {man}\r\nMX: 1\r\nST: {st}\r\n\r\n").encode()


def parse_reply(data: bytes) -> dict[str, str]:
    status, *lines = data.decode().rstrip("\r\n").split("\r\n")
    assert status == "HTTP/1.1 200 OK"
    return {k.upper(): v.strip() for k, _, v in (line.partition(":") for line in lines)}


@pytest.mark.parametrize("st, targets", [
    ("ssdp:all", ["upnp:rootdevice", DEVICE.udn, discovery.MEDIA_SERVER]),
    ("upnp:rootdevice", ["upnp:rootdevice"]),
    (discovery.MEDIA_SERVER, [discovery.MEDIA_SERVER]),
    (DEVICE.udn, [DEVICE.udn]),
    ("urn:schemas-upnp-org:device:InternetGatewayDevice:1", []),
])
def test_m_search_for_us_is_answered_with_device_xml_as_location(st, targets):
    replies = [parse_reply(r) for r in discovery.answer_search(m_search(st), DEVICE, BASE)]
    assert [r["ST"] for r in replies] == targets
    for r in replies:
        assert r["LOCATION"] == f"{BASE}/device.xml"
        assert r["USN"].startswith(DEVICE.udn) and "EXT" in r


@pytest.mark.parametrize("data", [m_search("ssdp:all", man='"ssdp:alive"'), b"NOTIFY * HTTP/1.1\r\n\r\n",
                                  b"\xff\xfe", b"", b"M-SEARCH * HTTP/1.1\r\nST: ssdp:all\r\n\r\n"])
def test_anything_else_on_the_ssdp_port_is_not_answered(data):
    assert discovery.answer_search(data, DEVICE, BASE) == []


# The responder, on loopback

def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def responder():
    bases = []

    def base_for(peer):
        bases.append(peer)
        return BASE

    r = discovery.DiscoveryResponder(lambda: DEVICE, base_for, bind="127.0.0.1",
                                     ssdp_port=free_udp_port(), hdhomerun_port=free_udp_port())
    with selectors.DefaultSelector() as selector:
        socks = r.open(selector)
        assert len(socks) == 2
        r.asked = bases
        yield r
        r.close()


def exchange(responder, kind: str, data: bytes, expect: int) -> list[bytes]:
    """Send data from a real client socket, let the responder handle what arrives, read the replies."""
    [sock] = [s for s, k in responder.sockets.items() if k == kind]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(5)
        client.sendto(data, sock.getsockname())
        ready, _, _ = select.select([sock], [], [], 5)
        assert ready, "the datagram reached the responder's socket"
        responder.handle_readable(sock)
        replies = [client.recv(4096) for _ in range(expect)]
        client.setblocking(False)
        with pytest.raises(BlockingIOError):
            client.recv(4096)
        return replies


def test_responder_answers_jellyfins_broadcast_request_over_udp(responder):
    [reply] = exchange(responder, "hdhomerun", JELLYFIN_REQUEST, 1)
    assert tags_of(reply)[discovery.TAG_BASE_URL] == BASE.encode()
    assert responder.asked == ["127.0.0.1"]


def test_responder_answers_an_ssdp_search_for_all_with_three_replies(responder):
    replies = exchange(responder, "ssdp", m_search("ssdp:all"), 3)
    assert {parse_reply(r)["LOCATION"] for r in replies} == {f"{BASE}/device.xml"}


def test_responder_ignores_garbage_and_keeps_answering(responder):
    exchange(responder, "hdhomerun", b"\x00\x02garbage", 0)
    exchange(responder, "ssdp", b"GET / HTTP/1.1\r\n\r\n", 0)
    assert len(exchange(responder, "hdhomerun", JELLYFIN_REQUEST, 1)) == 1


def test_a_taken_port_is_left_out_and_the_other_still_answers():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        r = discovery.DiscoveryResponder(lambda: DEVICE, lambda peer: BASE, bind="127.0.0.1",
                                         ssdp_port=free_udp_port(), hdhomerun_port=taken.getsockname()[1])
        with selectors.DefaultSelector() as selector:
            try:
                assert list(r.open(selector) and r.sockets.values()) == ["ssdp"]
                assert len(exchange(r, "ssdp", m_search("upnp:rootdevice"), 1)) == 1
            finally:
                r.close()


def test_the_answer_names_the_address_the_peer_reached():
    assert discovery.local_address_towards("127.0.0.1") == "127.0.0.1"
    r = discovery.responder_for(lambda: type("C", (), {"public_url": None})(), ("0.0.0.0", 8123))
    assert r.base_for("127.0.0.1") == "http://127.0.0.1:8123"
    r = discovery.responder_for(lambda: type("C", (), {"public_url": "https://tv.example"})(), ("0.0.0.0", 8123))
    assert r.base_for("127.0.0.1") == "https://tv.example"


@pytest.mark.parametrize("address, answered", [("192.168.1.5", True), ("10.1.2.3", True), ("127.0.0.1", True),
                                               ("169.254.3.4", True), ("8.8.8.8", False), ("1.1.1.1", False)])
def test_only_peers_on_private_addresses_are_answered(address, answered):
    assert discovery.answers_peer(address) is answered
