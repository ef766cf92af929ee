"""GET /static/{name}: the files the pages need, from http_front/static, read once.

hls.min.js is a pinned hls.js release vendored from the npm registry (see the README); the
watch page asks for it with the version in its query, so a year's max-age cannot keep an
old copy past an upgrade.
"""

from __future__ import annotations

import functools
from pathlib import Path

from . import responses

HERE = Path(__file__).with_name("static")
TYPES = {"hls.min.js": "text/javascript; charset=utf-8", "LICENSE": "text/plain; charset=utf-8"}
CACHE = "public, max-age=31536000, immutable"


@functools.cache
def _data(name: str) -> bytes:
    return (HERE / name).read_bytes()


def answer(name: str, head_only: bool) -> bytes:
    data = _data(name)
    headers = [("Content-Type", TYPES[name]), ("Content-Length", str(len(data)))]
    return responses.head(200, headers, cache_control=CACHE) + (b"" if head_only else data)
