"""What a URL may carry that is nobody else's business: a password (userinfo) and tokens (query values).

A relay's URL comes from the config and may hold both (`http://user:pass@origin/1.ts?token=…`).
The origin gets them, as HTTP basic auth and the request target; everything we show (pages,
JSON, 503 texts, log lines, command lines) gets the URL with them replaced by ***.
"""

from __future__ import annotations

import base64
import re
from urllib.parse import unquote, urlsplit

HIDDEN = "***"
# A URL in free text (ffmpeg's stderr, our own messages): a scheme, ://, then anything up to a
# space or a quote. What ends a sentence after it (a colon before the reason) is not part of it.
_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
_TRAILING = ".,;:)!?"
_AUTHORITY = re.compile(r"([^/?#]*)(.*)", re.S)  # as urlsplit() tells the authority from the path


def redacted(url: str) -> str:
    """The URL with its password and query values hidden: http://user:***@host/path?token=***.

    A user name without a password is hidden too (it is often the token itself). The fragment,
    never sent, is dropped."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, tail = _AUTHORITY.match(rest).groups()
    userinfo, at, host = netloc.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:{HIDDEN}@{host}" if colon and user else f"{HIDDEN}@{host}"
    path, question, query = tail.partition("#")[0].partition("?")
    if question:
        path += "?" + "&".join(_hidden_value(item) for item in query.split("&"))
    return f"{scheme}://{netloc}{path}"


def _hidden_value(item: str) -> str:
    key, eq, value = item.partition("=")
    if eq:
        return f"{key}={HIDDEN}" if value else item
    return HIDDEN if item else item  # a bare item (?s3cr3t) may be the token itself


def redact_urls(text: str) -> str:
    """Every URL in the text redacted(): for messages that quote a URL (ffmpeg's among them)."""
    def one(m: re.Match) -> str:
        url = m.group()
        kept = len(url.rstrip(_TRAILING))
        return redacted(url[:kept]) + url[kept:]
    return _URL_IN_TEXT.sub(one, text)


def host_of(url: str) -> str:
    """Where the URL points, as people say it: host, or host:port when the port is given."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "?"
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}" if port else host


def basic_auth(url: str) -> str | None:
    """The Authorization header value for the URL's userinfo (RFC 7617); None without one."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.username is None:
        return None
    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    return "Basic " + base64.b64encode(pair.encode()).decode("ascii")


def origin_of(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port): credentials for one origin are never sent to another."""
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port
