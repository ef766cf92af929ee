"""The absolute URLs the guide, the playlists and the tuner hand out.

Players and media servers fetch them later, from elsewhere, so they must name the host the
client reached us by (its Host header), or `public_url` when a proxy stands in front. What
the configuration gives (public_url, a remote logo) may be an IRI: it goes out as a URI.
"""

from __future__ import annotations

from retrovue_air.config import Channel

from .iri import to_uri


def base_url(public_url: str | None, host: str) -> str:
    """host: already checked to be safe to echo (request_reader.safe_host), or authority()."""
    return to_uri(public_url) if public_url else f"http://{host}"


def authority(address: tuple) -> str:
    """HOST:PORT of a socket address (getsockname()), for a client that named no Host: the
    address it connected to is one it can reach, the port included."""
    host, port = address[:2]
    if host.startswith("::ffff:") and "." in host:  # an IPv4 client of a dual-stack listener
        host = host[len("::ffff:"):]
    if ":" in host:  # IPv6, its zone's "%" escaped as RFC 6874 says
        return f"[{host.replace('%', '%25')}]:{port}"
    return f"{host}:{port}"


def stream_url(base: str, channel: Channel) -> str:
    return f"{base}/channels/{channel.id}.ts"


def hls_url(base: str, channel: Channel) -> str:
    return f"{base}/channels/{channel.id}.m3u8"


def tuner_url(base: str, channel: Channel) -> str:
    return f"{base}/auto/v{channel.number}"


def remote_logo(channel: Channel) -> str | None:
    """The URI of a logo served elsewhere (an http(s) URL in the config); None for a local one or none."""
    if channel.logo is None or not channel.logo.startswith(("http://", "https://")):
        return None
    return to_uri(channel.logo)


def logo_url(base: str, channel: Channel) -> str | None:
    if channel.logo is None:
        return None
    return remote_logo(channel) or f"{base}/logos/{channel.id}.png"


def guide_url(base: str) -> str:
    return f"{base}/xmltv.xml"
