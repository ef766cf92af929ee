"""Discovery under a flood: another local user (nobody) sending junk and real requests as fast as it can.

What the responder promises, whatever arrives: a datagram is parsed before anything else is done
with it (junk costs no log line, no file read, no socket); a peer gets at most ANSWER_BURST
requests answered at once and one a second after that, all peers together at most
TOTAL_BURST at once and TOTAL_PER_SECOND a second; each cause of a log line (a peer over its
rate, a socket read at its cap) is said at most once per ten seconds; and the responder reads
at most READS_PER_SECOND datagrams a second per socket, leaving the rest to the kernel to drop,
so a flood's cost to the front's loop is bounded whatever its rate.
"""

from __future__ import annotations

import json
import selectors
import socket
import time

import pytest
import requests

from harness import Reader, wait_until
from http_front import discovery, token_buckets
from retrovue_air import device_id
from test_discovery import DEVICE, JELLYFIN_REQUEST, free_udp_port, m_search, tags_of
from test_review_defects import as_nobody, end, needs_root

FLOOD_SECONDS = 2.0
FLOODER_ADDRESS = "127.0.0.3"  # a peer of its own: its limits are not the test's

# Sends the datagrams given (hex) round-robin to the targets given, as fast as it can, for the
# seconds given; reads every reply; says how many it sent and got, and how many bytes.
FLOOD = """
    import json, socket, sys, time
    source, seconds, targets, packets = sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
    packets = [bytes.fromhex(p) for p in packets]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((source, 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    s.setblocking(False)
    print("ready", flush=True)
    sent = sent_bytes = got = got_bytes = 0
    def drain():
        global got, got_bytes
        try:
            while True:
                got_bytes += len(s.recv(65536))
                got += 1
        except OSError:
            pass
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(64):
            packet = packets[sent % len(packets)]
            try:
                s.sendto(packet, tuple(targets[sent % len(targets)]))
                sent_bytes += len(packet)
            except OSError:
                pass
            sent += 1
        drain()
    time.sleep(0.5)
    drain()
    print(json.dumps({"sent": sent, "sent_bytes": sent_bytes, "replies": got, "reply_bytes": got_bytes}), flush=True)
    sys.stdin.read()
"""

JUNK = [b"", b"\x00\x02", b"junk" * 8, b"M-SEARCH * HTTP/1.1\r\n\r\n", b"\xff" * 400,
        JELLYFIN_REQUEST[:-1] + b"\x00"]  # the last: a request with a bad CRC


def flood(targets: list[tuple[str, int]], packets: list[bytes], seconds: float = FLOOD_SECONDS):
    """Start nobody's flood; returns the process (its result: flood_result)."""
    return as_nobody(FLOOD, FLOODER_ADDRESS, str(seconds), json.dumps(targets), json.dumps([p.hex() for p in packets]))


def flood_result(proc) -> dict:
    try:
        return json.loads(proc.stdout.readline())
    finally:
        end(proc)


def most_answered(seconds: float) -> int:
    """The most requests of one peer answered in `seconds`: the burst, then one a second."""
    return discovery.ANSWER_BURST + int(seconds * discovery.ANSWERS_PER_SECOND) + 1


# The responder alone, on real UDP sockets of its own

@pytest.fixture
def responder():
    selector = selectors.DefaultSelector()
    r = discovery.DiscoveryResponder(lambda: DEVICE, lambda peer: "http://192.168.1.20:8000", bind="127.0.0.1",
                                     ssdp_port=free_udp_port(), hdhomerun_port=free_udp_port())
    assert len(r.open(selector)) == 2
    yield r
    r.close()
    selector.close()


def run_loop(r, seconds: float) -> None:
    """What the front's loop does for the responder: dispatch readable sockets, resume at deadlines."""
    stop = time.monotonic() + seconds
    while (now := time.monotonic()) < stop:
        deadline = r.next_deadline()
        timeout = min(stop, deadline if deadline is not None else stop) - now
        for key, _ in r.selector.select(max(0.0, timeout)):
            r.handle_readable(key.fileobj)
        r.resume(time.monotonic())


def ports(r) -> dict[str, int]:
    return {kind: sock.getsockname()[1] for sock, kind in r.sockets.items()}


@needs_root
def test_a_flooding_peer_gets_its_burst_then_one_answer_a_second(responder):
    p = ports(responder)
    hostile = flood([("127.0.0.1", p["hdhomerun"]), ("127.0.0.1", p["ssdp"])],
                    [JELLYFIN_REQUEST, m_search("ssdp:all"), *JUNK])
    run_loop(responder, FLOOD_SECONDS + 0.7)
    result = flood_result(hostile)
    # Every answered request gets one HDHomeRun reply or three SSDP ones (ssdp:all).
    assert 0 < result["replies"] <= 3 * most_answered(FLOOD_SECONDS + 0.7), result
    assert result["reply_bytes"] < result["sent_bytes"] / 100, result
    assert responder.refused >= 1 and responder.junk >= 1


@needs_root
def test_another_peer_is_answered_once_the_flood_is_over(responder):
    p = ports(responder)
    hostile = flood([("127.0.0.1", p["hdhomerun"])], [JELLYFIN_REQUEST])
    run_loop(responder, FLOOD_SECONDS + 0.7)
    flood_result(hostile)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(5)
        client.sendto(JELLYFIN_REQUEST, ("127.0.0.1", p["hdhomerun"]))
        run_loop(responder, 0.3)
        assert tags_of(client.recv(4096))[discovery.TAG_DEVICE_ID] == bytes.fromhex(DEVICE.device_id)


def test_junk_is_not_answered_and_costs_neither_a_device_nor_a_base_url(responder):
    asked = []
    responder.device = lambda: asked.append("device") or DEVICE
    responder.base_for = lambda peer: asked.append("base") or "http://h:1"
    p = ports(responder)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        for packet in JUNK:
            client.sendto(packet, ("127.0.0.1", p["hdhomerun"]))
            client.sendto(packet, ("127.0.0.1", p["ssdp"]))
        run_loop(responder, 0.3)
        client.setblocking(False)
        with pytest.raises(BlockingIOError):
            client.recv(4096)
    assert asked == [] and responder.junk == 2 * len(JUNK)


# The running service, with a state directory it cannot write

def udp_port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False


@needs_root
def test_a_flood_from_nobody_costs_the_service_a_few_log_lines_and_its_viewers_nothing(service_factory, tmp_path):
    if not udp_port_free(discovery.HDHOMERUN_PORT):
        pytest.skip(f"UDP {discovery.HDHOMERUN_PORT} is taken on this machine")
    (tmp_path / "file").write_text("")  # under a file: no one, root included, can make the state directory
    service = service_factory(extra_top=f'discovery = true\nstate_dir = "{tmp_path / "file" / "state"}"')
    service.wait_for_log(rf"discovery: answering hdhomerun on UDP 0\.0\.0\.0:{discovery.HDHOMERUN_PORT}")
    front, fds = service.front.pid, service.fd_counts()
    watcher = Reader(service, "1")
    watcher.start()
    wait_until(lambda: watcher.count > 16 * 1024, 20, "the viewer of channel 1 receiving")
    mark = service.log_mark()
    target = [("127.0.0.1", discovery.HDHOMERUN_PORT)]
    hostile = flood(target, [JELLYFIN_REQUEST, *JUNK])
    cpu_before, wall_before = sum(service.front.cpu_times()[:2]), time.monotonic()
    result = flood_result(hostile)
    cpu = (sum(service.front.cpu_times()[:2]) - cpu_before) / (time.monotonic() - wall_before)
    print(f"flood: {result['sent'] / FLOOD_SECONDS:,.0f} datagrams/s offered, {result['replies']} replies, "
          f"front CPU {cpu:.0%}, the viewer's longest gap {watcher.longest_gap:.2f} s")

    # The device id's two (it is read once), then one per cause: the peer's rate, the read cap.
    warnings = [line for line in service.lines[mark:] if "WARNING" in line]
    assert len(warnings) <= 6, f"{len(warnings)} warning lines, the first: {warnings[:3]}"
    assert 0 < result["replies"] <= most_answered(FLOOD_SECONDS + 0.5), result
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:  # another peer, after the flood
        client.settimeout(5)
        client.sendto(JELLYFIN_REQUEST, target[0])
        assert discovery.TAG_BASE_URL in tags_of(client.recv(4096))
    assert requests.get(service.url("/healthz"), timeout=5).text == "ok\n"
    before = watcher.count
    wait_until(lambda: watcher.count > before + 16 * 1024, 10, "the viewer of channel 1 still receiving")
    assert watcher.longest_gap < 1.0, f"the viewer went {watcher.longest_gap:.2f} s without bytes"
    watcher.finish()
    assert service.front.pid == front, "the front was restarted"
    service.wait_idle(10)
    wait_until(lambda: service.fd_counts() == fds, 5, f"descriptors back at {fds}")


# The pure parts: the buckets, and the device id read once

def test_a_bucket_gives_its_burst_at_once_then_its_rate():
    bucket = token_buckets.TokenBucket(rate=2, burst=3, now=100.0)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]
    assert [bucket.take(100.4), bucket.take(100.5), bucket.take(100.5)] == [False, True, False]
    assert sum(bucket.take(200.0) for _ in range(10)) == 3, "a long quiet refills the burst, no more"


def test_each_peer_has_a_bucket_of_its_own_and_all_of_them_share_one():
    buckets = token_buckets.PeerBuckets(rate=1, burst=2, total_rate=1, total_burst=3, max_peers=10)
    assert [buckets.take("a", 0.0) for _ in range(3)] == [None, None, token_buckets.PEER]
    assert [buckets.take("b", 0.0), buckets.take("c", 0.0)] == [None, token_buckets.ALL]
    assert buckets.take("c", 1.0) is None, "refused for the others' sake, c kept its own allowance"


def test_the_table_of_peers_keeps_only_the_ones_seen_last():
    buckets = token_buckets.PeerBuckets(rate=1, burst=1, total_rate=1e9, total_burst=1e9, max_peers=100)
    for n in range(10_000):
        buckets.take(f"10.0.{n // 256}.{n % 256}", 0.0)
    assert len(buckets.peers) == 100 and "10.0.39.15" in buckets.peers and "10.0.0.0" not in buckets.peers


def test_the_device_id_is_read_once_until_a_reload_forgets_it(tmp_path, caplog):
    (tmp_path / "file").write_text("")
    state = str(tmp_path / "file" / "state")  # unwritable: every read would say so
    ids = {device_id.load_or_create(state) for _ in range(1000)}
    assert len(ids) == 1 and caplog.text.count("cannot keep the HDHomeRun device id") == 1
    device_id.load_or_create.cache_clear()
    assert device_id.load_or_create(state) in ids
    assert caplog.text.count("cannot keep the HDHomeRun device id") == 2
