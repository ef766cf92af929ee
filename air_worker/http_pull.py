"""http_pull: copy an HTTP MPEG-TS stream's body to stdout; a relay's Air worker runs it where
another channel runs ffmpeg (`python -m air_worker.http_pull URL`).

Why not `ffmpeg -c copy`: the origin's stream is already what the front wants (aligned TS,
PAT/PMT before each keyframe), so there is nothing to remux, and ffmpeg's probing and
muxer start-up cost a cold join through an edge about 1.3 s before its first byte, against
tens of milliseconds here (bench/relay.py). Like ffmpeg it is a child the worker restarts
with backoff on a new socketpair, so the front's handling of a restarted stream applies.

An origin is trusted to send a stream, not to pace it: the bytes go on at the stream's own
rate, by its PCRs (retrovue_air/mpegts_clock.py), at most --ahead seconds ahead of real time.
A static .ts file served over HTTP would otherwise fill the front's buffer as fast as the
network carries it. A stream with no PCR is refused.

Exit status 0 when the origin ends the stream, 1 on any failure; the last line on stderr
says why, as ffmpeg's does. Reconnecting is the worker's job, not this program's.
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
import sys
import time
from http import HTTPStatus
from urllib.parse import urljoin, urlsplit

import h11

from retrovue_air.mpegts_clock import TS_PACKET_SIZE, NoClock, Pacer
from retrovue_air.url_secrets import basic_auth, origin_of, redacted

# An origin silent this long is gone (a cut cable sends no FIN): exit, and be restarted.
STALL_SECONDS = 5.0
MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)
SYNC_PACKETS = 3  # sync bytes this many packets apart mark where packets begin
USER_AGENT = "retrovue-air relay"


class PullError(Exception):
    pass


def start_request(url: str, authorization: str | None) -> tuple[str, int, bool, h11.Connection, bytes]:
    """(host, port, tls, the client connection, the GET request's bytes) for url."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise PullError(f"{redacted(url)}: not a URL") from None
    tls = parts.scheme == "https"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PullError(f"{redacted(url)}: not an http(s) URL")
    port = port or (443 if tls else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = parts.netloc.rpartition("@")[2]
    headers = [("Host", host), ("User-Agent", USER_AGENT), ("Accept", "*/*"), ("Connection", "close")]
    if authorization:
        headers.append(("Authorization", authorization))
    conn = h11.Connection(h11.CLIENT)
    data = conn.send(h11.Request(method="GET", target=target, headers=headers))
    data += conn.send(h11.EndOfMessage())
    return parts.hostname, port, tls, conn, data


def open_stream(url: str, follow_redirects: bool = False) -> tuple[socket.socket, h11.Connection]:
    """Connect and read the response head (following redirects only when told to); the body is next.

    The URL's userinfo goes as basic auth, to its own origin only: a redirect elsewhere does
    not get it. An answer other than 200 is reported by its status code and our own words for
    it: what the origin wrote (its reason phrase, its body) could be anything a redirect reached,
    and the reason ends up in our 503s and /channels."""
    authorization, home = basic_auth(url), None
    for _ in range(MAX_REDIRECTS + 1):
        shown = redacted(url)
        try:
            here = origin_of(url)
        except ValueError:
            raise PullError(f"{shown}: not a URL") from None
        home = home or here
        host, port, tls, conn, request = start_request(url, authorization if here == home else None)
        try:
            sock = socket.create_connection((host, port), timeout=STALL_SECONDS)
        except OSError as e:
            raise PullError(f"{shown}: {e.strerror or e}") from None
        try:
            if tls:
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
            sock.sendall(request)
            event = next_event(sock, conn, url)
            if not isinstance(event, h11.Response):
                raise PullError(f"{shown}: no response")
            if event.status_code == 200:
                return sock, conn
            location = dict(event.headers).get(b"location")
            if event.status_code in REDIRECTS and location and follow_redirects:
                sock.close()
                url = urljoin(url, location.decode("latin-1"))
                continue
            why = f"the origin answered {event.status_code} {status_words(event.status_code)}"
            if event.status_code in REDIRECTS:
                why += " (a redirect: not followed unless the channel has follow_redirects = true)"
            raise PullError(f"{shown}: {why}")
        except BaseException:
            sock.close()
            raise
    raise PullError(f"{redacted(url)}: more than {MAX_REDIRECTS} redirects")


def status_words(code: int) -> str:
    """Our phrase for a status code (the standard one, or its class), never the origin's."""
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return {1: "(informational)", 2: "(success)", 3: "(a redirect)", 4: "(a client error)",
                5: "(a server error)"}.get(code // 100, "(not HTTP)")


def next_event(sock: socket.socket, conn: h11.Connection, url: str):
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:  # its message may quote the origin's bytes: not ours to repeat
            raise PullError(f"{redacted(url)}: bad HTTP from the origin") from None
        if event is not h11.NEED_DATA:
            return event
        try:
            data = sock.recv(65536)
        except TimeoutError:
            raise PullError(f"{redacted(url)}: nothing from the origin for {STALL_SECONDS:g} s") from None
        except OSError as e:
            raise PullError(f"{redacted(url)}: {e.strerror or e}") from None
        conn.receive_data(data)


def packet_start(data: bytes) -> int | None:
    """The first offset with sync bytes SYNC_PACKETS packets in a row; None if none yet."""
    for i in range(min(TS_PACKET_SIZE, len(data))):
        if all(i + k * TS_PACKET_SIZE < len(data) and data[i + k * TS_PACKET_SIZE] == 0x47 for k in range(SYNC_PACKETS)):
            return i
    return None


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def pull(url: str, out: int, ahead_seconds: float, follow_redirects: bool = False) -> int:
    sock, conn = open_stream(url, follow_redirects)
    url = redacted(url)  # from here on, only for messages
    pacer = Pacer(ahead_seconds)
    with sock:
        # A stream from elsewhere may begin mid-packet; the front's buffer must not.
        head = b""
        aligned = False
        while True:
            event = next_event(sock, conn, url)
            if isinstance(event, h11.EndOfMessage):
                print(f"{url}: the origin ended the stream", file=sys.stderr)
                return 0
            if not isinstance(event, h11.Data):
                continue
            if aligned:
                pass_on(out, event.data, pacer, url)
                continue
            head += event.data
            start = packet_start(head)
            if start is not None:
                aligned = True
                pass_on(out, head[start:], pacer, url)
            elif len(head) > 64 * TS_PACKET_SIZE:
                raise PullError(f"{url}: not an MPEG-TS stream (no sync bytes)")


def pass_on(out: int, data: bytes, pacer: Pacer, url: str) -> None:
    """Write data when the stream's clock says it is due (the socket meanwhile fills, and the origin waits)."""
    try:
        wait = pacer.feed(data, time.monotonic())
    except NoClock as e:
        raise PullError(f"{url}: {e}; refused (a relay passes a live stream on at its own rate)") from None
    if wait > 0:
        time.sleep(wait)
    write_all(out, data)


def arguments(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m air_worker.http_pull",
                                description="Copy an HTTP MPEG-TS stream to stdout at its own rate.")
    p.add_argument("--ahead", type=float, default=2.0, metavar="SECONDS",
                   help="how far ahead of real time the stream may run (an origin's joiner burst; default 2)")
    p.add_argument("--follow-redirects", action="store_true",
                   help="follow the origin's redirects (default: refuse them)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--url-from", metavar="FILE",
                       help="read the URL from FILE (/dev/fd/N): a command line is public to every local user")
    where.add_argument("url", nargs="?")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = arguments(argv)
    try:
        if args.url_from:
            try:
                with open(args.url_from) as f:
                    args.url = f.read().strip()
            except OSError as e:
                raise PullError(f"{args.url_from}: {e.strerror or e}") from None
        return pull(args.url, sys.stdout.fileno(), args.ahead, args.follow_redirects)
    except PullError as e:
        print(e, file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 1  # the front closed the stream: the worker is stopping us


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
