"""Being found on the LAN: the HDHomeRun discovery protocol (UDP 65001) and SSDP (UDP 1900).

The packets are pure functions, bytes in and bytes out; DiscoveryResponder is the thin part
the front's selectors loop drives (handle_readable). Both are off unless `discovery = true`,
and a client can always be pointed at http://HOST:PORT by hand instead.

HDHomeRun packets (libhdhomerun, hdhomerun_pkt.h): a big-endian u16 type and u16 payload
length, the payload as tag-length-value entries (a length over 127 takes two bytes: the low
seven bits with 0x80 set, then the rest), and an Ethernet CRC32 of all that, little-endian.
Jellyfin's DiscoverDevices broadcasts a request for any tuner with any id and then fetches
http://<the replying address>/discover.json, on port 80: on another port, add it by hand.

Anyone on the LAN (or this host) can send these ports anything, at any rate, from any source
address, and an answer is larger than its request (a short ssdp:all search gets three replies,
up to 14 times its size): what a flood may cost is bounded here, whatever it sends.
  - A datagram is parsed first: junk costs nothing more, a request for another device no log
    line and no look-up of our address.
  - A peer gets at most ANSWER_BURST requests answered at once, then ANSWERS_PER_SECOND; all
    peers together TOTAL_BURST, then TOTAL_PER_SECOND. So one request gets at most 3 replies of
    a few hundred bytes, and a flood gets about 1 KB a second per source address, 16 KB a
    second in all, however much it sends. (A real client asks a few times per search.)
  - Each socket reads at most READS_PER_SECOND datagrams a second; past that it is not read
    for a moment and the kernel drops what does not fit its buffer. A flood's cost to the loop
    that serves every viewer is that, at any rate.
  - Each cause of a log line (a peer over its rate, all peers over theirs, a socket read at its
    cap) is said at once and then at most once per ten seconds, with a count.
"""

from __future__ import annotations

import ipaddress
import logging
import selectors
import socket
import struct
import time
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from retrovue_air.logs import RepeatedLine

from .token_buckets import ALL, PEER, PeerBuckets, TokenBucket
from .tuner import MODEL_NUMBER, Device

if TYPE_CHECKING:
    from retrovue_air.config import Config

log = logging.getLogger("http_front")

HDHOMERUN_PORT = 65001
SSDP_PORT = 1900
SSDP_GROUP = "239.255.255.250"

TYPE_DISCOVER_REQ = 0x0002
TYPE_DISCOVER_RPY = 0x0003
TAG_DEVICE_TYPE = 0x01
TAG_DEVICE_ID = 0x02
TAG_TUNER_COUNT = 0x10
TAG_LINEUP_URL = 0x27
TAG_BASE_URL = 0x2A
TAG_DEVICE_AUTH_STR = 0x2B
TAG_MULTI_TYPE = 0x2D
DEVICE_TYPE_TUNER = 0x00000001
WILDCARD = 0xFFFFFFFF
MAX_PACKET = 1460  # HDHOMERUN_MAX_PACKET_SIZE

MEDIA_SERVER = "urn:schemas-upnp-org:device:MediaServer:1"
SSDP_MAX_AGE = 1800

ANSWER_BURST = 4
ANSWERS_PER_SECOND = 1
TOTAL_BURST = 32
TOTAL_PER_SECOND = 16
MAX_PEERS = 1024  # peers whose rate is tracked; beyond, the least recently seen are forgotten
READS_PER_SECOND = 1000  # per socket; a LAN's SSDP chatter is a few datagrams a second
READ_BURST = 100  # read at once before the cap applies: at the cap, a pause of 0.1 s


class PacketError(ValueError):
    pass


# HDHomeRun packets

def _length(n: int) -> bytes:
    if n <= 0x7F:
        return bytes([n])
    if n > 0x7FFF:
        raise PacketError(f"a value of {n} bytes is too long for a tag")
    return bytes([n & 0x7F | 0x80, n >> 7])


def encode_packet(kind: int, tags: list[tuple[int, bytes]]) -> bytes:
    payload = b"".join(bytes([tag]) + _length(len(value)) + value for tag, value in tags)
    frame = struct.pack(">HH", kind, len(payload)) + payload
    return frame + struct.pack("<I", zlib.crc32(frame))


def decode_packet(data: bytes) -> tuple[int, list[tuple[int, bytes]]]:
    """(type, [(tag, value), ...]); PacketError if it is cut short, too long or its CRC is wrong."""
    if len(data) < 8:
        raise PacketError(f"{len(data)} bytes is too short for a packet")
    kind, length = struct.unpack_from(">HH", data)
    if len(data) != 4 + length + 4:
        raise PacketError(f"a payload of {length} bytes in a packet of {len(data)}")
    frame, (crc,) = data[:4 + length], struct.unpack_from("<I", data, 4 + length)
    if zlib.crc32(frame) != crc:
        raise PacketError("bad CRC")
    tags, pos = [], 4
    while pos < len(frame):
        if pos + 2 > len(frame):
            raise PacketError("a tag without a length")
        tag, n = frame[pos], frame[pos + 1]
        pos += 2
        if n & 0x80:
            if pos >= len(frame):
                raise PacketError("a two-byte length cut short")
            n = n & 0x7F | frame[pos] << 7
            pos += 1
        if pos + n > len(frame):
            raise PacketError(f"tag 0x{tag:02x} says {n} bytes, {len(frame) - pos} are left")
        tags.append((tag, frame[pos:pos + n]))
        pos += n
    return kind, tags


def discover_reply(device: Device, base: str) -> bytes:
    return encode_packet(TYPE_DISCOVER_RPY, [
        (TAG_DEVICE_TYPE, struct.pack(">I", DEVICE_TYPE_TUNER)),
        (TAG_DEVICE_ID, struct.pack(">I", int(device.device_id, 16))),
        (TAG_TUNER_COUNT, bytes([min(device.tuner_count, 255)])),
        (TAG_DEVICE_AUTH_STR, device.device_auth.encode()),
        (TAG_BASE_URL, base.encode()),
        (TAG_LINEUP_URL, f"{base}/lineup.json".encode()),
    ])


def parse_discover(data: bytes) -> int | None:
    """The device id a discover request for a tuner (or any device) asks for, WILDCARD for any;
    None for anything else: another type, a reply, a damaged packet."""
    if len(data) < 8 or data[:2] != b"\x00\x02":  # not a request: no CRC to compute
        return None
    try:
        kind, tags = decode_packet(data)
    except PacketError:
        return None
    if kind != TYPE_DISCOVER_REQ:
        return None
    types: list[int] = []
    wanted_id = WILDCARD
    for tag, value in tags:
        if tag in (TAG_DEVICE_TYPE, TAG_MULTI_TYPE) and len(value) % 4 == 0:
            types += [int.from_bytes(value[i:i + 4], "big") for i in range(0, len(value), 4)]
        elif tag == TAG_DEVICE_ID and len(value) == 4:
            wanted_id = int.from_bytes(value, "big")
    if types and not {WILDCARD, DEVICE_TYPE_TUNER} & set(types):
        return None
    return wanted_id


def discover_is_for(wanted_id: int, device: Device) -> bool:
    return wanted_id in (WILDCARD, int(device.device_id, 16))


def answer_discover(request: bytes, device: Device, base: str) -> bytes | None:
    """The reply to a discover request that asks for a tuner (or anything) with our id (or any); else None."""
    wanted_id = parse_discover(request)
    if wanted_id is None or not discover_is_for(wanted_id, device):
        return None
    return discover_reply(device, base)


# SSDP

def search_targets(device: Device) -> list[str]:
    return ["upnp:rootdevice", device.udn, MEDIA_SERVER]


def parse_search(datagram: bytes) -> str | None:
    """The search target (ST) of an SSDP M-SEARCH; None for anything else (a NOTIFY, junk)."""
    if not datagram.startswith(b"M-SEARCH "):
        return None
    try:
        lines = datagram.decode("ascii").split("\r\n")
    except UnicodeDecodeError:
        return None
    if lines[0].split() != ["M-SEARCH", "*", "HTTP/1.1"]:
        return None
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if headers.get("man", "").strip('"') != "ssdp:discover":
        return None
    return headers.get("st", "")


def search_targets_for(st: str, device: Device) -> list[str]:
    """Which of our targets a search for st finds: all of them for ssdp:all, none for another device's."""
    ours = search_targets(device)
    return ours if st == "ssdp:all" else [st] if st in ours else []


def answer_search(datagram: bytes, device: Device, base: str) -> list[bytes]:
    """The unicast replies to an SSDP M-SEARCH that looks for us (one per target for ssdp:all)."""
    st = parse_search(datagram)
    targets = [] if st is None else search_targets_for(st, device)
    return [_search_reply(device, base, target) for target in targets]


def _search_reply(device: Device, base: str, target: str) -> bytes:
    usn = device.udn if target == device.udn else f"{device.udn}::{target}"
    lines = ["HTTP/1.1 200 OK", f"CACHE-CONTROL: max-age={SSDP_MAX_AGE}", "EXT:",
             f"LOCATION: {base}/device.xml", f"SERVER: Linux UPnP/1.0 {MODEL_NUMBER}/1.0",
             f"ST: {target}", f"USN: {usn}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# The responder

class DiscoveryResponder:
    """Two UDP sockets in the front's selector; handle_readable answers what arrived.

    It owns its sockets' interest in the selector: at its read cap it unregisters a socket, and
    resume(now), at next_deadline(), registers it again. device() is asked whether a request is
    for us, base_for(peer_address) only for one within its rates, both at the time, so a
    reload's new name or tuner count is what the next answer says. Only peers answers_peer()
    accepts get a reply.
    """

    def __init__(self, device: Callable[[], Device], base_for: Callable[[str], str], bind: str = "0.0.0.0",
                 ssdp_port: int = SSDP_PORT, hdhomerun_port: int = HDHOMERUN_PORT,
                 clock: Callable[[], float] = time.monotonic):
        self.device = device
        self.base_for = base_for
        self.bind = bind
        self.ports = {"ssdp": ssdp_port, "hdhomerun": hdhomerun_port}
        self.clock = clock
        self.sockets: dict[socket.socket, str] = {}
        self.selector: selectors.BaseSelector | None = None
        self.reads: dict[socket.socket, TokenBucket] = {}
        self.paused: dict[socket.socket, float] = {}  # not read until then: over its read cap
        self.rates = PeerBuckets(ANSWERS_PER_SECOND, ANSWER_BURST, TOTAL_PER_SECOND, TOTAL_BURST, MAX_PEERS)
        self.said = {cause: RepeatedLine(log, logging.WARNING) for cause in (PEER, ALL, "ssdp", "hdhomerun")}
        self.junk = 0  # datagrams that were no request for us
        self.refused = 0  # requests for us, over a rate

    def open(self, selector: selectors.BaseSelector) -> list[socket.socket]:
        """Bind what can be bound and watch it in selector; a port that is taken is logged and left out."""
        self.selector = selector
        for kind, port in self.ports.items():
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                if kind == "ssdp":
                    # Other UPnP software on the host (minidlna, a desktop) listens on 1900 too.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((self.bind, port))
                sock.setblocking(False)
            except OSError as e:
                log.warning("discovery: cannot listen on UDP %s:%d (%s): %s clients must add the tuner by address",
                            self.bind, port, e.strerror, "SSDP" if kind == "ssdp" else "HDHomeRun")
                sock.close()
                continue
            if kind == "ssdp" and self.bind in ("0.0.0.0", ""):
                try:
                    membership = socket.inet_aton(SSDP_GROUP) + socket.inet_aton("0.0.0.0")
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
                except OSError as e:
                    log.warning("discovery: cannot join SSDP's multicast group (%s); unicast searches only", e.strerror)
            self.sockets[sock] = kind
            self.reads[sock] = TokenBucket(READS_PER_SECOND, READ_BURST, self.clock())
            selector.register(sock, selectors.EVENT_READ, self)
            log.info("discovery: answering %s on UDP %s:%d", kind, self.bind, sock.getsockname()[1])
        return list(self.sockets)

    def handle_readable(self, sock: socket.socket) -> None:
        kind = self.sockets.get(sock)
        if kind is None or sock in self.paused:
            return
        for _ in range(16):  # a flood must not starve the viewers
            now = self.clock()
            if not self.reads[sock].take(now):
                self._pause(sock, kind, now)
                return
            try:
                data, peer = sock.recvfrom(MAX_PACKET + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # an ICMP error from an earlier reply, reported here
                log.debug("discovery: %s", e)
                continue
            self._answer(sock, kind, data, peer, now)

    def _answer(self, sock: socket.socket, kind: str, data: bytes, peer: tuple, now: float) -> None:
        request = parse_search(data) if kind == "ssdp" else parse_discover(data)
        if request is None or not answers_peer(peer[0]):
            self.junk += 1
            return
        device = self.device()
        ours = search_targets_for(request, device) if kind == "ssdp" else discover_is_for(request, device)
        if not ours:  # a search for another device: common on a LAN, and nothing to do
            self.junk += 1
            return
        over = self.rates.take(peer[0], now)
        if over is not None:
            self.refused += 1
            self.said[over].say(f"discovery: not answering {peer[0]}: " + (
                f"more than {ANSWERS_PER_SECOND} request a second from it" if over == PEER else
                f"more than {TOTAL_PER_SECOND} requests a second from all peers"), now)
            return
        base = self.base_for(peer[0])
        replies = [_search_reply(device, base, target) for target in ours] if kind == "ssdp" else \
            [discover_reply(device, base)]
        for reply in replies:
            try:
                sock.sendto(reply, peer)
            except OSError as e:
                log.debug("discovery: cannot answer %s: %s", peer, e)
        log.debug("discovery: answered a %s search from %s:%d", kind, *peer)

    def _pause(self, sock: socket.socket, kind: str, now: float) -> None:
        self.selector.unregister(sock)
        self.paused[sock] = now + READ_BURST / READS_PER_SECOND  # its bucket full again
        self.said[kind].say(f"discovery: datagrams come faster than the {READS_PER_SECOND} a second read on UDP "
                            f"{sock.getsockname()[1]} ({kind}): the kernel drops the rest", now)

    def next_deadline(self) -> float | None:
        """When a paused socket is to be read again."""
        return min(self.paused.values(), default=None)

    def resume(self, now: float) -> None:
        for sock, until in list(self.paused.items()):
            if until <= now:
                del self.paused[sock]
                self.selector.register(sock, selectors.EVENT_READ, self)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()
        self.paused.clear()


def answers_peer(address: str) -> bool:
    """Private, loopback and link-local peers only: a discovery reply is larger than the request,
    and a service that also faces the internet should not be a reflector."""
    return ipaddress.ip_address(address).is_private


def local_address_towards(peer: str) -> str:
    """The address of ours that a peer reaches: the source address the kernel would pick to
    answer it (connecting a UDP socket sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((peer, 9))
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def responder_for(config: Callable[[], "Config"], listen: tuple) -> DiscoveryResponder:
    """The responder for the running service: config() is its current configuration,
    listen the HTTP listener's address (the URLs in the answers point there)."""
    from .presentation import device  # the tuner's identity, exactly as /discover.json gives it

    host, port = listen[:2]
    if host == "localhost" or host.startswith("127.") or host == "::1":
        log.warning("discovery: the service listens on %s only, so only this machine can use what it finds", host)

    def base_for(peer: str) -> str:
        public_url = config().public_url
        if public_url:
            return public_url
        ip = local_address_towards(peer) if host in ("0.0.0.0", "::", "") else host
        return f"http://[{ip}]:{port}" if ":" in ip else f"http://{ip}:{port}"

    return DiscoveryResponder(lambda: device(config()), base_for)
