"""Which request asks for what: pure functions from (method, target) to a Route."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from retrovue_air.config import CHANNEL_ID


@dataclass(frozen=True)
class Watch:
    channel: str
    head_only: bool


@dataclass(frozen=True)
class ChannelList:
    head_only: bool


@dataclass(frozen=True)
class Health:
    head_only: bool


@dataclass(frozen=True)
class StatusPage:
    head_only: bool


@dataclass(frozen=True)
class Metrics:
    head_only: bool


@dataclass(frozen=True)
class Playlist:
    channel: str | None  # None: every channel
    head_only: bool


@dataclass(frozen=True)
class Refuse:
    status: int
    text: str
    headers: tuple[tuple[str, str], ...] = ()


Route = Watch | ChannelList | Health | StatusPage | Metrics | Playlist | Refuse

ALLOWED = (("Allow", "GET, HEAD"),)


def route(method: bytes, target: bytes, channel_ids: frozenset[str] | set[str]) -> Route:
    try:
        raw_path = urlsplit(target.decode("ascii")).path
    except (UnicodeDecodeError, ValueError):
        return Refuse(400, "bad request target")
    try:
        path = unquote(raw_path, errors="strict") if "%" in raw_path else raw_path
    except UnicodeDecodeError:
        return Refuse(400, "bad request target")
    if "\0" in path:
        return Refuse(400, "bad request target")
    is_stream = path.startswith("/channels/") and path.endswith(".ts")
    is_playlist = path.startswith("/channels/") and path.endswith(".m3u")
    known = path in ("/", "/channels", "/channels.m3u", "/healthz", "/metrics") or is_stream or is_playlist
    if method not in (b"GET", b"HEAD"):
        return Refuse(405, "method not allowed", ALLOWED) if known else Refuse(404, "not found")
    head_only = method == b"HEAD"
    if path == "/healthz":
        return Health(head_only)
    if path == "/channels":
        return ChannelList(head_only)
    if path == "/":
        return StatusPage(head_only)
    if path == "/metrics":
        return Metrics(head_only)
    if path == "/channels.m3u":
        return Playlist(None, head_only)
    if is_playlist:
        channel = path[len("/channels/"):-len(".m3u")]
        if CHANNEL_ID.match(channel) and channel in channel_ids:
            return Playlist(channel, head_only)
        return Refuse(404, "no such channel")
    if is_stream:
        channel = path[len("/channels/"):-len(".ts")]
        if CHANNEL_ID.match(channel) and channel in channel_ids:
            return Watch(channel, head_only)
        return Refuse(404, "no such channel")
    return Refuse(404, "not found")
