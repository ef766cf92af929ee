"""The answer to a guide, playlist, logo or tuner request, as response bytes.

Everything here is read from the configuration and the schedules, never from the front's
live state, so the front only routes the request here and sends what comes back.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from retrovue_air import device_id as device_ids
from retrovue_air import safe_files
from retrovue_air.config import MAX_LOGO_BYTES, Config, image_type
from retrovue_air.logs import RepeatedLine

from . import m3u, responses, routes, tuner, xmltv
from .answer_failures import answer_failed
from .public_urls import base_url, remote_logo

log = logging.getLogger("http_front")

XML = "application/xml; charset=utf-8"
PRESENTATION_ROUTES = (routes.Guide, routes.Playlist, routes.TunerPage, routes.Logo)


def guide_numbers(config: Config) -> dict[str, str]:
    """Guide number -> channel id, for routes.route."""
    return {c.number: c.id for c in config.channels}


def device(config: Config) -> tuner.Device:
    return tuner.Device(config.device_id or device_ids.load_or_create(config.state_dir),
                        config.friendly_name, config.max_active_channels)


def answer(r: routes.Route, config: Config, schedules: Mapping[str, object], host: str, now: float) -> bytes:
    """schedules: channel id -> its Schedule (anything with airings(start, end)); a channel
    missing from it is listed with hour-long placeholders. now: unix time."""
    base = base_url(config.public_url, host)
    if isinstance(r, routes.Guide):  # made at once: the front makes it in steps instead (guide.Guide)
        start, end = xmltv.window(now, config.guide_hours)
        try:
            data = xmltv.render(xmltv.listings(config.channels, schedules, start, end), base)
        except Exception:  # a schedule's bug must cost the guide, not the front and its viewers
            return answer_failed("the guide", r.head_only)
        return responses.body(200, XML, data, r.head_only)
    if isinstance(r, routes.Playlist):
        chosen = [config.channel(r.channel)] if r.channel else config.channels
        return responses.body(200, m3u.CONTENT_TYPE, m3u.render(chosen, base, r.hls), r.head_only)
    if isinstance(r, routes.TunerPage):
        return tuner_page(r, config, base)
    if isinstance(r, routes.Logo):
        return logo(r, config)
    raise TypeError(f"not a presentation route: {r!r}")


def tuner_page(r: routes.TunerPage, config: Config, base: str) -> bytes:
    if r.page == "lineup.post":
        return responses.body(200, "text/plain; charset=utf-8", b"")
    if r.page == "discover.json":
        return responses.json_body(200, tuner.discover(device(config), base), r.head_only)
    if r.page == "lineup.json":
        return responses.json_body(200, tuner.lineup(config.channels, base), r.head_only)
    if r.page == "lineup_status.json":
        return responses.json_body(200, tuner.lineup_status(), r.head_only)
    return responses.body(200, XML, tuner.device_xml(device(config), base), r.head_only)


def logo(r: routes.Logo, config: Config) -> bytes:
    channel = config.channel(r.channel)
    if channel is None or channel.logo is None:
        return responses.text(404, f"channel {r.channel} has no logo", head_only=r.head_only)
    elsewhere = remote_logo(channel)
    if elsewhere:
        return responses.head(302, [("Location", elsewhere), ("Content-Length", "0")])
    # Its folder may be writable by others: what is there now may be a FIFO, a link or a huge file.
    try:
        data = safe_files.read_regular(channel.logo, MAX_LOGO_BYTES)
    except OSError as e:
        return _no_logo(r, channel.logo, e.strerror)
    kind = image_type(data[:16])
    if kind is None:
        return _no_logo(r, channel.logo, "is no longer an image we serve")
    return responses.body(200, kind, data, r.head_only)


# One line per channel and cause, not per request: a client may ask for a broken logo in a loop.
_LOGO_TROUBLE: dict[tuple[str, str], RepeatedLine] = {}


def _no_logo(r: routes.Logo, path: str, why: str) -> bytes:
    said = _LOGO_TROUBLE.setdefault((r.channel, why), RepeatedLine(log, logging.WARNING))
    said.say(f"channel {r.channel}: cannot serve its logo {path}: {why}")
    return responses.text(404, f"channel {r.channel}'s logo is unavailable", head_only=r.head_only)
