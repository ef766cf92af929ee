"""Control characters in names, groups, titles and errors never reach a playlist line or the status page.

A channel's name comes from the operator's TOML, a title from a media file's tags, an error from
ffmpeg's stderr: any of them may hold ESC, BEL, NUL, DEL, a C1 control or a Unicode line
separator. In an M3U line a line break starts a new entry and the rest are garbage to players;
in HTML they are parse errors (and an ESC sequence reaches the terminal of whoever curls the page).
"""

from __future__ import annotations

import re

import pytest
import requests

from harness import wait_until
from http_front import plain_text

# Every C0 control, DEL, every C1 control, and U+2028/U+2029, which some parsers take as line breaks.
CONTROLS = "".join(map(chr, [*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029]))
HOSTILE_NAME = "Bell\a ESC\x1b[31m red\0 nul\x7f DEL\x85 NEL\x9b CSI\u2028\n#EXTINF:-1,evil\r\nhttp://evil.example/x.ts"


def toml_string(text: str) -> str:
    """A TOML basic string that holds text exactly (every control written as an escape)."""
    return '"' + "".join(f"\\u{ord(c):04X}" if c in CONTROLS or c in '"\\' else c for c in text) + '"'


# The pure part

def test_one_line_makes_every_control_and_line_break_a_single_space():
    assert plain_text.one_line(HOSTILE_NAME) == "Bell ESC [31m red nul DEL NEL CSI #EXTINF:-1,evil http://evil.example/x.ts"
    assert plain_text.one_line("  a\t\tb  ") == "a b"
    assert not set(plain_text.one_line(CONTROLS + "x" + CONTROLS)) & set(CONTROLS)


def test_printable_drops_controls_but_keeps_tabs_and_line_breaks():
    assert plain_text.printable("ffmpeg:\x1b[1;31m error\x1b[0m\r\n\tat 0:01\x07\x85") == "ffmpeg:[1;31m error[0m\n\tat 0:01"
    assert plain_text.printable(CONTROLS) == "\t\n"
    assert plain_text.printable("Caf\u00e9 \u2603 \U0001f4fa") == "Caf\u00e9 \u2603 \U0001f4fa"


def test_a_lone_surrogate_from_a_broken_tag_becomes_the_replacement_character():
    assert plain_text.printable("a\udcffb") == plain_text.one_line("a\udcffb") == "a\ufffdb"
    plain_text.printable("\ud800").encode("utf-8")  # encodable: no exception


# The running service

@pytest.fixture
def hostile_service(service_factory):
    extra = (f'\n[[channel]]\nid = "odd"\nname = {toml_string(HOSTILE_NAME)}\nsource = "test-pattern"\n'
             f'group = {toml_string("Films" + chr(0x1b) + "]0;pwned" + chr(7))}\nwidth = 320\nheight = 180\n')
    return service_factory(extra=extra)


def assert_no_controls(text: str, allowed: str = "\n") -> None:
    found = sorted({f"U+{ord(c):04X}" for c in text if c in CONTROLS and c not in allowed})
    assert not found, f"control characters {found} in {text[:300]!r}"


def test_the_playlists_hold_no_control_character_and_a_name_cannot_add_an_entry(hostile_service):
    service = hostile_service
    front, fds = service.front.pid, service.fd_counts()
    for path in ("/channels.m3u", "/channels/odd.m3u"):
        text = requests.get(service.url(path), timeout=5).content.decode()
        assert_no_controls(text)
        lines = text.split("\n")
        assert lines[-1] == "" and all(line.startswith("#EXT") or line.startswith("http://") for line in lines[:-1])
        entries = [line for line in lines if line.startswith("#EXTINF")]
        assert len(entries) == (3 if path == "/channels.m3u" else 1)
        assert "http://evil.example/x.ts" not in lines
    odd = next(line for line in entries if 'tvg-id="odd"' in line)
    assert odd.endswith(",Bell ESC [31m red nul DEL NEL CSI #EXTINF:-1,evil http://evil.example/x.ts")
    assert 'group-title="Films ]0;pwned"' in odd
    assert service.front.pid == front
    wait_until(lambda: service.fd_counts() == fds, 5, f"descriptors back at {fds}")


def test_the_status_page_holds_no_control_character(hostile_service):
    service = hostile_service
    front, fds = service.front.pid, service.fd_counts()
    page = requests.get(service.url("/"), timeout=5).content.decode()
    assert_no_controls(page)
    [name] = re.findall(r'id="channel-odd".*?<h2 class=name>(.*?)</h2>', page, re.S)
    assert name == "Bell ESC[31m red nul DEL NEL CSI\n#EXTINF:-1,evil\nhttp://evil.example/x.ts"
    assert service.front.pid == front
    wait_until(lambda: service.fd_counts() == fds, 5, f"descriptors back at {fds}")
