"""Text from configs, media tags and processes, made fit for a playlist line or an HTML page.

A channel name, a title or ffmpeg's last words may hold any character TOML or a tag allows. A
control (C0, DEL, C1) or a Unicode line separator is invisible where it lands, or worse: in an
M3U line a line break starts an entry of its own, in HTML a control is a parse error, and an
ESC sequence reaches the terminal of whoever curls the page. A lone surrogate (a tag that was
not UTF-8) cannot even be encoded, and would fail the whole answer.
"""

from __future__ import annotations

import re

_CONTROLS = [*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029]
_TO_SPACE = {c: " " for c in _CONTROLS}
_DROPPED = {c: None for c in _CONTROLS if c not in (0x09, 0x0A)}
_SURROGATE = re.compile("[\ud800-\udfff]")


def one_line(text: str) -> str:
    """text on one line: every control and line break a space, runs of spaces one, none at the ends."""
    return " ".join(_SURROGATE.sub("\ufffd", text).translate(_TO_SPACE).split())


def printable(text: str) -> str:
    """text without its controls, except tabs and line feeds (an error's lines stay lines)."""
    return _SURROGATE.sub("\ufffd", text).translate(_DROPPED)
