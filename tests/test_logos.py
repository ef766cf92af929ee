"""Channel logos as players fetch them, from the running service over real sockets.

A remote logo is a 302 to a URI any client can follow (an IRI in the config is percent-encoded,
its host through IDNA), the same URI the playlist and the guide hand out. A local logo is read
without following a link, without waiting on a FIFO and up to a size cap: whatever else is
planted at its path (the folder may be writable by others) is a 404 and a log line, and the
service, its other viewers and its descriptors are as they were.
"""

from __future__ import annotations

import os
import signal
import socket
import time
import xml.etree.ElementTree as ET

import pytest
import requests

from harness import Reader, wait_until
from retrovue_air import config
from test_tuner_service import tiny_png

# Non-Latin-1 in the host, the path and the query, an escape already made (%20), a fragment.
IRI_LOGO = "https://例え.テスト/ロゴ/é%20ü.png?size=大&x=1#frag"
URI_LOGO = "https://xn--r8jz45g.xn--zckzah/%E3%83%AD%E3%82%B4/%C3%A9%20%C3%BC.png?size=%E5%A4%A7&x=1#frag"


def logo_channel(channel_id: str, logo: str) -> str:
    return (f'\n[[channel]]\nid = "{channel_id}"\nname = "Logo {channel_id}"\nsource = "test-pattern"\n'
            f'logo = "{logo}"\nwidth = 320\nheight = 180\n')


def raw_get(service, target: str, timeout: float = 5.0) -> bytes:
    """GET target on a fresh connection; everything until the server closes (AssertionError if it does not)."""
    with socket.create_connection(("127.0.0.1", service.port), timeout=timeout) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: tv.example:8000\r\n\r\n".encode())
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except socket.timeout:
            raise AssertionError(f"GET {target}: no complete answer within {timeout} s; got {out[:200]!r}") from None
        except ConnectionResetError:
            raise AssertionError(f"GET {target}: connection reset; got {out[:200]!r}") from None
        return out


def status_and_headers(response: bytes) -> tuple[int, dict[str, str]]:
    head = response.partition(b"\r\n\r\n")[0].decode("latin-1")
    status_line, *lines = head.split("\r\n")
    assert status_line.startswith("HTTP/1.1 "), f"not a response: {response[:200]!r}"
    return int(status_line.split()[1]), {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}


def healthy(service) -> None:
    assert requests.get(service.url("/healthz"), timeout=5).text == "ok\n"


# Remote logos

def test_a_logo_url_with_non_latin1_characters_is_redirected_to_its_percent_encoded_uri(service_factory):
    service = service_factory(extra=logo_channel("intl", IRI_LOGO))
    front, fds = service.front.pid, service.fd_counts()

    status, headers = status_and_headers(raw_get(service, "/logos/intl.png"))
    assert (status, headers["location"]) == (302, URI_LOGO)
    playlist = requests.get(service.url("/channels/intl.m3u"), timeout=5).text
    assert f'tvg-logo="{URI_LOGO}"' in playlist
    guide = ET.fromstring(requests.get(service.url("/xmltv.xml"), timeout=10).content)
    assert [c.find("icon").get("src") for c in guide.iter("channel") if c.get("id") == "intl"] == [URI_LOGO]

    healthy(service)
    assert service.front.pid == front, "the front was restarted"
    assert not any("Traceback" in line for line in service.lines)
    wait_until(lambda: service.fd_counts() == fds, 5, f"descriptors back at {fds}")


# Local logos, and what another user may plant in their folder

@pytest.fixture
def shared_logos(tmp_path):
    """A logo folder anyone may write, as a careless operator leaves it, with three real logos."""
    folder = tmp_path / "logos"
    folder.mkdir()
    folder.chmod(0o777)
    for name in ("fifo", "link", "big", "dir"):
        (folder / f"{name}.png").write_bytes(tiny_png())
    return folder


def unblock(fifo) -> None:
    """Give a reader stuck on the FIFO its EOF (the unchanged front blocks in open())."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass  # no reader is waiting: nothing is stuck


def test_a_fifo_planted_at_a_logo_path_is_a_404_at_once_and_viewers_keep_receiving(service_factory, shared_logos):
    logo = shared_logos / "fifo.png"
    service = service_factory(extra=logo_channel("fifo", logo))
    front, fds = service.front.pid, service.fd_counts()
    assert requests.get(service.url("/logos/fifo.png"), timeout=5).content == tiny_png()
    watcher = Reader(service, "1")
    watcher.start()
    wait_until(lambda: watcher.count > 16 * 1024, 20, "the viewer of channel 1 receiving")
    logo.unlink()
    os.mkfifo(logo)  # as another user would, with no writer: an open() for reading waits for one
    mark = service.log_mark()
    try:
        started = time.monotonic()
        status, _ = status_and_headers(raw_get(service, "/logos/fifo.png"))
        took = time.monotonic() - started
        assert status == 404
        assert took < 2.0, f"the 404 took {took:.2f} s"
        healthy(service)
        service.wait_for_log(r"WARNING .*channel fifo: cannot serve its logo .*fifo\.png: is not a regular file",
                             start=mark)
        before = watcher.count
        wait_until(lambda: watcher.count > before + 16 * 1024, 10, "the viewer of channel 1 still receiving")
        assert watcher.longest_gap < 2.0, f"the viewer went {watcher.longest_gap:.2f} s without bytes"
    finally:
        unblock(logo)
        watcher.finish()
    assert service.front.pid == front, "the front was restarted"
    service.wait_idle(10)
    wait_until(lambda: service.fd_counts() == fds, 5, f"descriptors back at {fds}")


def test_a_link_a_directory_or_an_oversized_file_at_a_logo_path_is_a_404_and_a_log_line(service_factory,
                                                                                      shared_logos, tmp_path):
    service = service_factory(extra="".join(logo_channel(name, shared_logos / f"{name}.png")
                                            for name in ("link", "big", "dir")))
    front, fds = service.front.pid, service.fd_counts()
    elsewhere = tmp_path / "secret.png"  # what the link points at: readable by the service, not meant to be served
    elsewhere.write_bytes(tiny_png())
    (shared_logos / "link.png").unlink()
    (shared_logos / "link.png").symlink_to(elsewhere)
    (shared_logos / "big.png").write_bytes(tiny_png() + bytes(config.MAX_LOGO_BYTES))
    (shared_logos / "dir.png").unlink()
    (shared_logos / "dir.png").mkdir()
    mark = service.log_mark()
    for name, why in (("link", "is a symbolic link"), ("big", "is larger than"), ("dir", "is not a regular file")):
        status, _ = status_and_headers(raw_get(service, f"/logos/{name}.png"))
        assert status == 404, name
        service.wait_for_log(rf"WARNING .*channel {name}: cannot serve its logo .*{name}\.png: {why}", start=mark)
    # Asked again and again, it is said once (then at most every few seconds, with a count).
    for _ in range(20):
        assert status_and_headers(raw_get(service, "/logos/link.png"))[0] == 404
    assert sum("channel link: cannot serve its logo" in line for line in service.lines[mark:]) == 1
    healthy(service)
    assert service.front.pid == front, "the front was restarted"
    wait_until(lambda: service.fd_counts() == fds, 5, f"descriptors back at {fds}")


# The configuration reads the logo the same way: a FIFO there must not stop a start or a reload

def test_a_fifo_named_as_a_logo_in_the_config_is_refused_at_once(tmp_path):
    fifo = tmp_path / "logo.png"
    os.mkfifo(fifo)

    class Blocked(BaseException):  # not an OSError: the config's own error handling must not swallow it
        pass

    def stuck(*_):
        raise Blocked("reading the config blocked on the FIFO for 3 s")

    previous = signal.signal(signal.SIGALRM, stuck)
    signal.alarm(3)
    try:
        with pytest.raises(config.ConfigError) as e:
            config.parse('[[channel]]\nid = "1"\nname = "One"\nsource = "test-pattern"\nlogo = "logo.png"\n',
                         str(tmp_path / "t.toml"))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        unblock(fifo)
    assert "t.toml:5: logo:" in str(e.value) and "is not a regular file" in str(e.value)
