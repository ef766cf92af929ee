"""Which request asks for what: pure functions from (method, target) to a Route."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from retrovue_air.config import CHANNEL_ID

from .hls_segments import segment_name


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
    hls: bool = False  # list the channels' HLS playlists instead of their TS streams


@dataclass(frozen=True)
class HlsPlaylist:
    channel: str
    head_only: bool


@dataclass(frozen=True)
class HlsSegment:
    channel: str
    stream: int
    seq: int
    head_only: bool


@dataclass(frozen=True)
class Guide:
    head_only: bool


@dataclass(frozen=True)
class TunerPage:
    page: str  # one of TUNER_PAGES, without the slash
    head_only: bool


@dataclass(frozen=True)
class Logo:
    channel: str
    head_only: bool


@dataclass(frozen=True)
class WatchPage:
    channel: str
    head_only: bool


@dataclass(frozen=True)
class GuideGrid:
    head_only: bool


@dataclass(frozen=True)
class StaticFile:
    name: str  # one of STATIC_FILES
    head_only: bool


@dataclass(frozen=True)
class Refuse:
    status: int
    text: str
    headers: tuple[tuple[str, str], ...] = ()


Route = (Watch | ChannelList | Health | StatusPage | Metrics | Playlist | Guide | TunerPage | Logo
         | HlsPlaylist | HlsSegment | WatchPage | GuideGrid | StaticFile | Refuse)

ALLOWED = (("Allow", "GET, HEAD"),)
TUNER_PAGES = ("/discover.json", "/lineup.json", "/lineup_status.json", "/device.xml")
SCAN = "/lineup.post"  # Plex POSTs ?scan=start: answered, and nothing to do
ONLY_POST = (("Allow", "POST"),)
STATIC_FILES = ("hls.min.js", "LICENSE")  # in http_front/static: hls.js, vendored, and its licence


def route(method: bytes, target: bytes, channel_ids: frozenset[str] | set[str],
          guide_numbers: Mapping[str, str] | None = None) -> Route:
    """guide_numbers maps a guide number ("4.1") to its channel id, for the tuner's /auto/v4.1.

    A query string never changes where a request goes: Jellyfin and Plex append
    ?transcode=…&duration=… to a tuner's stream URLs, and Plex ?scan=start to lineup.post.
    """
    try:
        split = urlsplit(target.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return Refuse(400, "bad request target")
    raw_path = split.path
    try:
        path = unquote(raw_path, errors="strict") if "%" in raw_path else raw_path
    except UnicodeDecodeError:
        return Refuse(400, "bad request target")
    if "\0" in path:
        return Refuse(400, "bad request target")
    is_stream = path.startswith("/channels/") and path.endswith(".ts")
    is_playlist = path.startswith("/channels/") and path.endswith(".m3u")
    is_hls = path.startswith("/channels/") and (path.endswith(".m3u8") or path.count("/") == 3 and path.endswith(".ts"))
    is_watch_page = path.startswith("/watch/")
    is_static = path.startswith("/static/")
    known = (path in ("/", "/channels", "/channels.m3u", "/healthz", "/metrics", "/guide") or is_stream
             or is_playlist or is_hls or is_watch_page or is_static)
    presented = presentation_route(method, path, channel_ids, guide_numbers or {})
    if presented is not None:
        return presented
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
        return Playlist(None, head_only, hls=parse_qs(split.query).get("format") == ["hls"])
    if path == "/guide":
        return GuideGrid(head_only)
    if is_watch_page:
        channel = path[len("/watch/"):]
        if CHANNEL_ID.match(channel) and channel in channel_ids:
            return WatchPage(channel, head_only)
        return Refuse(404, "no such channel")
    if is_static:
        name = path[len("/static/"):]
        return StaticFile(name, head_only) if name in STATIC_FILES else Refuse(404, "not found")
    if is_hls:
        return hls_route(path[len("/channels/"):], channel_ids, head_only)
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


def hls_route(rest: str, channel_ids, head_only: bool) -> Route:
    """{id}.m3u8, or {id}/{stream}-{seq}.ts: an unknown channel is a 404, a malformed segment name a 400."""
    if rest.endswith(".m3u8") and "/" not in rest:
        channel = rest[:-len(".m3u8")]
        if CHANNEL_ID.match(channel) and channel in channel_ids:
            return HlsPlaylist(channel, head_only)
        return Refuse(404, "no such channel")
    channel, _, name = rest.partition("/")
    if not (CHANNEL_ID.match(channel) and channel in channel_ids):
        return Refuse(404, "no such channel")
    parsed = segment_name(name[:-len(".ts")]) if name.endswith(".ts") else None
    if parsed is None:
        return Refuse(400, "bad segment name")
    return HlsSegment(channel, *parsed, head_only)


def presentation_route(method: bytes, path: str, channel_ids, guide_numbers: Mapping[str, str]) -> Route | None:
    """The guide, the playlist, the logos and the HDHomeRun tuner; None for any other path."""
    head_only = method == b"HEAD"
    if path == SCAN:
        return TunerPage(SCAN[1:], False) if method == b"POST" else Refuse(405, "method not allowed", ONLY_POST)
    is_tune = path.startswith("/auto/v")
    is_logo = path.startswith("/logos/") and path.endswith(".png")
    if not (path in TUNER_PAGES or path in ("/xmltv.xml", "/playlist.m3u") or is_tune or is_logo):
        return None
    if method not in (b"GET", b"HEAD"):
        return Refuse(405, "method not allowed", ALLOWED)
    if path in TUNER_PAGES:
        return TunerPage(path[1:], head_only)
    if path == "/xmltv.xml":
        return Guide(head_only)
    if path == "/playlist.m3u":
        return Playlist(None, head_only)
    if is_tune:
        channel = guide_numbers.get(path[len("/auto/v"):])
        return Watch(channel, head_only) if channel in channel_ids else Refuse(404, "no such channel")
    channel = path[len("/logos/"):-len(".png")]
    if CHANNEL_ID.match(channel) and channel in channel_ids:
        return Logo(channel, head_only)
    return Refuse(404, "no such channel")
