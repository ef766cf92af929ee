"""The guide as clients meet it: a real service, real sockets, media made with ffmpeg.

Whatever a schedule holds (a file whose header claims 30,000 years, a file one frame long,
two weeks of fifty channels) and however a client reads, /xmltv.xml is a valid XMLTV
document, it costs no other viewer a pause, and the front is the same process afterwards.
"""

from __future__ import annotations

import re
import selectors
import socket
import struct
import subprocess
import time
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path

import requests

from harness import Reader, fd_count, files_channel, require_tool, wait_until

from test_guide import xmllint_valid

CLAIMED_SECONDS = 1e12  # about 31,700 years


def huge_duration_mkv(folder: Path, ffmpeg: str) -> Path:
    """A two-second MKV whose Segment Duration (EBML 0x4489, an 8-byte float in ms) claims CLAIMED_SECONDS."""
    made = folder / "made.mkv"
    subprocess.run([ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=blue:s=160x90:r=25:d=2",
                    "-f", "lavfi", "-i", "sine=d=2", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac",
                    "-shortest", str(made)], check=True, timeout=120)
    data = bytearray(made.read_bytes())
    at = data.find(b"\x44\x89\x88")
    assert at > 0, "no 8-byte Segment Duration in ffmpeg's MKV"
    data[at + 3:at + 11] = struct.pack(">d", CLAIMED_SECONDS * 1000)
    out = folder / "huge.mkv"
    out.write_bytes(bytes(data))
    made.unlink()
    return out


def get(service, path: str, timeout: float = 30) -> requests.Response:
    return requests.get(service.url(path), timeout=timeout)


def xmltv_seconds(text: str) -> float:
    return datetime.strptime(text, "%Y%m%d%H%M%S %z").timestamp()


def test_a_file_claiming_thirty_thousand_years_gets_a_valid_guide_and_the_front_lives_on(service_factory, tmp_path):
    huge = huge_duration_mkv(tmp_path, require_tool("ffmpeg"))
    service = service_factory(extra_top=f'state_dir = "{tmp_path / "state"}"', extra=files_channel("huge", huge))
    front, fds = service.front.pid, fd_count(service.front.pid)
    for _ in range(3):  # any client, repeatedly
        r = get(service, "/xmltv.xml")
        assert r.status_code == 200, r.text[:300]
    xmllint_valid(r.content, tmp_path)
    times = [p.get(edge) for p in ET.fromstring(r.content).iter("programme") for edge in ("start", "stop")]
    assert all("1970" <= t[:4] <= "9999" for t in times), times
    assert [p.findtext("title") for p in ET.fromstring(r.content).iter("programme") if p.get("channel") == "huge"]
    for path in ("/", "/metrics", "/channels", "/channels.m3u"):
        assert get(service, path).status_code == 200, path
    assert service.front.pid == front and service.front.is_running()
    assert fd_count(front) == fds


def fifty_channels_two_weeks(service_factory, tmp_path):
    """The built-in two test-pattern channels and 48 more, with a guide of two weeks (16,950 programmes, 3 MB)."""
    more = "".join(f'\n[[channel]]\nid = "c{i}"\nname = "Channel number {i}"\nsource = "test-pattern"\n'
                   for i in range(48))
    return service_factory(extra_top=f'state_dir = "{tmp_path / "state"}"\nguide_hours = 336', extra=more)


def read_response(sock: socket.socket, pace: float = 0.0) -> tuple[bytes, bytes]:
    """(head, body) of one response, read to the end; pace: seconds between reads (a slow client)."""
    data = bytearray()
    while chunk := sock.recv(65536):
        data += chunk
        if pace:
            time.sleep(pace)
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    return head, body


def content_length(head: bytes) -> int:
    return int(re.search(rb"\r\nContent-Length: (\d+)", head).group(1))


def guide_requests(service, count: int) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", service.port), timeout=60)
        s.sendall(b"GET /xmltv.xml HTTP/1.1\r\nHost: guide.test\r\n\r\n")
        sockets.append(s)
    return sockets


def read_all(sockets: list[socket.socket]) -> list[bytes]:
    """Every socket's whole response, read as it comes (one thread, as a player's many tabs would)."""
    with selectors.DefaultSelector() as sel:
        got = {}
        for s in sockets:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
            got[s] = bytearray()
        deadline = time.monotonic() + 60
        while sel.get_map() and time.monotonic() < deadline:
            for key, _ in sel.select(1):
                chunk = key.fileobj.recv(1 << 20)
                if chunk:
                    got[key.fileobj] += chunk
                else:
                    sel.unregister(key.fileobj)
        assert not sel.get_map(), "a guide request was not answered within 60 s"
    for s in sockets:
        s.close()
    return [bytes(got[s]) for s in sockets]


def test_big_guides_cost_a_viewer_of_another_channel_no_pause_and_share_one_render(service_factory, tmp_path):
    service = fifty_channels_two_weeks(service_factory, tmp_path)
    front, fds = service.front.pid, fd_count(service.front.pid)
    viewer = Reader(service, "1")
    viewer.start()
    wait_until(lambda: viewer.count > 100_000, 20, "the viewer receiving its stream")
    viewer.longest_gap = 0.0
    mark = service.log_mark()
    started = time.monotonic()
    responses = read_all(guide_requests(service, 6))
    elapsed = time.monotonic() - started
    count_then = viewer.count
    wait_until(lambda: viewer.count > count_then, 5, "the viewer still receiving")
    gap = viewer.longest_gap
    viewer.finish()

    head, _, body = responses[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and len(body) == content_length(head)
    assert all(r == responses[0] for r in responses), "six requests for one window, six different guides"
    assert body.count(b"<programme ") == 50 * 338 + 50
    assert gap < 0.5, f"the viewer of channel 1 waited {gap:.2f} s for its stream while 6 guides were made " \
                      f"(in {elapsed:.1f} s)"
    renders = [line for line in service.lines[mark:] if "the guide for" in line]
    assert len(renders) == 1, renders
    again = read_all(guide_requests(service, 1))
    assert again == responses[:1], "the next request, in the same window, gets the same guide"
    assert len([line for line in service.lines[mark:] if "the guide for" in line]) == 1, "made again"
    print(f"longest pause of the viewer: {gap:.3f} s; six guides of {len(body) / 1e6:.1f} MB in {elapsed:.2f} s")
    assert service.front.pid == front
    wait_until(lambda: fd_count(front) == fds, 10, "the front back to its descriptors before the viewer")


def minute_long_mp4(folder: Path, ffmpeg: str) -> Path:
    out = folder / "minute.mp4"
    subprocess.run([ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=gray:s=32x32:r=1:d=61",
                    "-c:v", "libx264", "-preset", "ultrafast", str(out)], check=True, timeout=60)
    return out


def test_a_slow_client_gets_the_whole_guide_past_request_timeout(service_factory, tmp_path):
    # 2,950 programmes with a 4,000-character title: 12 MB, three times what the kernel buffers.
    minute = minute_long_mp4(tmp_path, require_tool("ffmpeg"))
    title = "A very long title " * 222
    service = service_factory(
        extra_top=f'state_dir = "{tmp_path / "state"}"\nrequest_timeout_seconds = 1',
        extra=f'\n[[channel]]\nid = "long"\nname = "Long"\nsource = "files"\n'
              f'files = [{{ path = "{minute}", title = "{title}" }}]\n')
    front, fds = service.front.pid, fd_count(service.front.pid)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # set before connect: the window it offers
    s.settimeout(30)
    s.connect(("127.0.0.1", service.port))
    s.sendall(b"GET /xmltv.xml HTTP/1.1\r\nHost: slow.test\r\n\r\n")
    started = time.monotonic()
    head, body = read_response(s, pace=0.025)  # at most 64 KB per 25 ms: 2.6 MB/s, 12 MB in 5 s
    s.close()
    took = time.monotonic() - started
    assert head.startswith(b"HTTP/1.1 200 ")
    assert len(body) == content_length(head) > 10_000_000, \
        f"{len(body)} of {content_length(head)} bytes in {took:.1f} s"
    assert body.rstrip().endswith(b"</tv>")
    assert took > 2, f"read in {took:.1f} s: not slower than request_timeout_seconds, the test proves nothing"
    assert service.front.pid == front
    wait_until(lambda: fd_count(front) == fds, 5, "the front closed the slow client's connection")


def one_frame_mp4(folder: Path, ffmpeg: str) -> Path:
    out = folder / "frame.mp4"
    subprocess.run([ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=red:s=160x90:r=25", "-frames:v", "1",
                    "-c:v", "libx264", "-preset", "ultrafast", "-metadata", "title=One Frame", str(out)],
                   check=True, timeout=60)
    return out


def test_a_one_frame_file_is_listed_as_a_few_grouped_programmes_not_one_per_frame(service_factory, tmp_path):
    frame = one_frame_mp4(tmp_path, require_tool("ffmpeg"))
    service = service_factory(extra_top=f'state_dir = "{tmp_path / "state"}"\nguide_hours = 1',
                              extra=files_channel("frame", frame))
    front = service.front.pid
    asked = time.time()
    r = get(service, "/xmltv.xml", timeout=60)
    assert r.status_code == 200
    xmllint_valid(r.content, tmp_path)
    listed = [p for p in ET.fromstring(r.content).iter("programme") if p.get("channel") == "frame"]
    spans = [(xmltv_seconds(p.get("start")), xmltv_seconds(p.get("stop"))) for p in listed]
    assert 1 <= len(listed) <= 8, f"{len(listed)} programmes for three hours of a one-frame file"
    assert {p.findtext("title") for p in listed} == {"One Frame"}
    assert spans[0][0] <= asked - 2 * 3600 and spans[-1][1] >= asked + 3600, "the window is covered"
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:])), "no gap, no overlap"
    assert service.front.pid == front
