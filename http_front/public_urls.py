"""The absolute URLs the guide, the playlists and the tuner hand out.

Players and media servers fetch them later, from elsewhere, so they must name the host the
client reached us by (its Host header), or `public_url` when a proxy stands in front.
"""

from __future__ import annotations

from retrovue_air.config import Channel


def base_url(public_url: str | None, host: str) -> str:
    """host: already checked to be safe to echo (channel.host_of)."""
    return public_url or f"http://{host}"


def stream_url(base: str, channel: Channel) -> str:
    return f"{base}/channels/{channel.id}.ts"


def tuner_url(base: str, channel: Channel) -> str:
    return f"{base}/auto/v{channel.number}"


def logo_url(base: str, channel: Channel) -> str | None:
    if channel.logo is None or channel.logo.startswith(("http://", "https://")):
        return channel.logo
    return f"{base}/logos/{channel.id}.png"


def guide_url(base: str) -> str:
    return f"{base}/xmltv.xml"
