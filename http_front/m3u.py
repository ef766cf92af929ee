"""GET /channels.m3u, /playlist.m3u and /channels/{id}.m3u: extended M3U for IPTV players.

The attributes are the ones TiviMate, Jellyfin, Emby and Channels DVR read: tvg-id is the
XMLTV channel id (the guide is url-tvg), tvg-chno the guide number. Every value is forced
onto one line, without a control character, and out of the quotes, so a channel name cannot
add an entry.
"""

from __future__ import annotations

from collections.abc import Iterable

from retrovue_air.config import Channel

from .plain_text import one_line
from .public_urls import guide_url, hls_url, logo_url, stream_url

CONTENT_TYPE = "audio/x-mpegurl"


def _m3u_text(value: str) -> str:
    """One line, and safe inside a quoted attribute of #EXTINF."""
    return one_line(value).replace('"', "'")


def render(channels: Iterable[Channel], base: str, hls: bool = False) -> bytes:
    guide = guide_url(base)
    lines = [f'#EXTM3U url-tvg="{guide}" x-tvg-url="{guide}"']
    for c in channels:
        name = _m3u_text(c.name)
        attributes = {"tvg-id": c.id, "tvg-chno": c.number, "tvg-name": name,
                      "tvg-logo": logo_url(base, c) or "", "group-title": c.group or "", "channel-id": c.id}
        extinf = " ".join(f'{key}="{_m3u_text(value)}"' for key, value in attributes.items())
        lines += [f"#EXTINF:-1 {extinf},{name}", hls_url(base, c) if hls else stream_url(base, c)]
    return ("\n".join(lines) + "\n").encode()
