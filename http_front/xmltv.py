"""GET /xmltv.xml: the guide, as XMLTV that validates against Debian's xmltv.dtd.

Built with ElementTree, so a title can never close an element or open one; characters XML 1.0
cannot carry at all (control characters, lone surrogates from undecodable file names) are
dropped first. Child elements follow the DTD's order, which strict readers enforce. Times are
"YYYYMMDDhhmmss +HHMM": Jellyfin ignores the other offset forms the format allows, and a
time a schedule gives outside the years that form can carry is shown at the nearest it can.

The document is made in pieces (document()): the front makes it between the rounds of its
loop, a few dozen programmes at a time, and what the programmes are is lazy too, so that
no piece costs more than a few milliseconds however large the guide.
"""

from __future__ import annotations

import itertools
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timezone, tzinfo

from retrovue_air.config import Channel, TestPattern
from retrovue_air.schedule import Airing, Programme

from . import programme_groups
from .public_urls import logo_url

PAST_SECONDS = 2 * 3600  # the guide keeps the last two hours, for "started 40 minutes ago"
PLACEHOLDER_SECONDS = 3600
GENERATOR = "retrovue-air"
# No DOCTYPE: a relative SYSTEM "xmltv.dtd" sends validating readers looking for a file beside
# the URL; the DTD is given to the validator instead (xmllint --dtdvalid).
HEADER = '<?xml version="1.0" encoding="UTF-8"?>\n'
NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# Four-digit years, a day inside either end so that no UTC offset takes a time out of them.
EARLIEST = 86400.0  # 1970-01-02T00:00:00Z
LATEST = 253402128000.0  # 9999-12-30T00:00:00Z
# The window the front serves moves in steps of this, so that one guide made serves every
# request until it moves: it lists up to this much more of the past, and of the future.
WINDOW_STEP_SECONDS = 300
PROGRAMMES_PER_PIECE = 25


def window(now: float, guide_hours: float) -> tuple[float, float]:
    return now - PAST_SECONDS, now + guide_hours * 3600


def stepped_window(now: float, guide_hours: float) -> tuple[float, float]:
    """window(now), its start moved back to a multiple of WINDOW_STEP_SECONDS and its end on by a step:
    the same for every now in one step, and never shorter than window(now)."""
    start = math.floor((now - PAST_SECONDS) / WINDOW_STEP_SECONDS) * WINDOW_STEP_SECONDS
    return start, start + WINDOW_STEP_SECONDS + PAST_SECONDS + guide_hours * 3600


def placeholder_airings(channel: Channel, start: float, end: float) -> list[Airing]:
    """Hour-long entries, on the hour, for a channel without a schedule (a test pattern)."""
    if isinstance(channel.source, TestPattern):
        programme = Programme(path="", duration=PLACEHOLDER_SECONDS, title="Test pattern",
                              description=f"A moving test pattern and a {channel.source.tone_hz} Hz tone.")
    else:
        programme = Programme(path="", duration=PLACEHOLDER_SECONDS, title=channel.name)
    first = math.floor(start / PLACEHOLDER_SECONDS) * PLACEHOLDER_SECONDS
    return [Airing(programme, t, t + PLACEHOLDER_SECONDS)
            for t in range(int(first), int(math.ceil(end)), PLACEHOLDER_SECONDS)]


def listings(channels: Iterable[Channel], schedules, start: float, end: float) -> list[tuple[Channel, list[Airing]]]:
    """Each channel and what the guide lists of [start, end): from its schedule (schedules maps
    channel id to an object with airings(start, end)), or hour-long placeholders if it has none."""
    return [(channel, list(listed_airings(channel, schedules.get(channel.id), start, end))) for channel in channels]


def listed_airings(channel: Channel, schedule, start: float, end: float) -> Iterator[Airing]:
    """What the guide lists of the channel in [start, end), made as it is read.

    A schedule with airings_from(t) (retrovue_air.schedule.Schedule) is read only as far as the
    window and its short airings are grouped without a look at each (programme_groups); any
    other is asked for airings(start, end) once."""
    if schedule is None:
        airings_from = programme_groups.airings_from_list(placeholder_airings(channel, start, end))
    else:
        airings_from = getattr(schedule, "airings_from", None) or \
            programme_groups.airings_from_list(schedule.airings(start, end))
    yield from programme_groups.listed(airings_from, start, end)


def xmltv_time(t: float, tz: tzinfo = timezone.utc) -> str:
    t = min(max(t, EARLIEST), LATEST) if t == t else EARLIEST  # t != t: NaN
    return datetime.fromtimestamp(math.floor(t), tz).strftime("%Y%m%d%H%M%S %z")


def episode_numbers(programme: Programme) -> list[tuple[str, str]]:
    """(system, text) pairs: xmltv_ns counts from zero ("0.1." is S01E02), onscreen does not."""
    season = programme.season if programme.season and programme.season >= 1 else None
    episode = programme.episode if programme.episode and programme.episode >= 1 else None
    if season is None and episode is None:
        return []
    ns = f"{'' if season is None else season - 1}.{'' if episode is None else episode - 1}."
    numbers = [("xmltv_ns", ns)]
    if episode is not None:
        numbers.append(("onscreen", f"{'' if season is None else f'S{season:02d}'}E{episode:02d}"))
    return numbers


def _text(value: object) -> str:
    return NOT_XML.sub("", str(value))


def _child(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    element = ET.SubElement(parent, tag, {k.replace("_", "-"): _text(v) for k, v in attrib.items()})
    if text is not None:
        element.text = _text(text)
    return element


def display_names(channel: Channel) -> list[str]:
    # Plex and Jellyfin match a guide channel to a tuner channel by number or by name,
    # and some by "number name": give all three.
    return [f"{channel.number} {channel.name}", channel.number, channel.name]


def render(listing: Sequence[tuple[Channel, Iterable[Airing]]], base: str, tz: tzinfo = timezone.utc) -> bytes:
    return b"".join(document(listing, base, tz))


def document(listing: Sequence[tuple[Channel, Iterable[Airing]]], base: str,
             tz: tzinfo = timezone.utc, pause: Callable[[], bool] = lambda: False) -> Iterator[bytes]:
    """The guide, one piece per next(): at most PROGRAMMES_PER_PIECE elements, fewer if pause()
    says so after one (a group of short airings can take milliseconds to list).

    The bytes are exactly ET.indent's of the whole tree: each piece is a batch of the root's
    children, indented and written under a stand-in root whose own tags are cut off."""
    tv = ET.Element("tv", {"source-info-url": _text(base), "source-info-name": GENERATOR,
                           "generator-info-name": GENERATOR})
    if not listing:
        yield (HEADER + ET.tostring(tv, encoding="unicode") + "\n").encode("utf-8")
        return
    opening = ET.tostring(tv, encoding="unicode", short_empty_elements=False)[:-len("</tv>")]
    yield (HEADER + opening).encode("utf-8")
    for batch in _batches((c for c, _ in listing), PROGRAMMES_PER_PIECE):
        yield _children([_channel(channel, base) for channel in batch])
    for channel, airings in listing:
        batch = []
        for airing in airings:
            batch.append(_programme(channel, airing, tz))
            if len(batch) == PROGRAMMES_PER_PIECE or pause():
                yield _children(batch)
                batch = []
        if batch:
            yield _children(batch)
    yield b"\n</tv>\n"


def _batches(items: Iterable, size: int) -> Iterator[list]:
    items = iter(items)
    while batch := list(itertools.islice(items, size)):
        yield batch


def _children(elements: list[ET.Element]) -> bytes:
    """Elements as they are written as children of the root: each after a newline and an indent."""
    stand_in = ET.Element("tv")
    stand_in.extend(elements)
    ET.indent(stand_in, space=" ")
    text = ET.tostring(stand_in, encoding="unicode")
    return text[len("<tv>"):-len("\n</tv>")].encode("utf-8")


def _channel(channel: Channel, base: str) -> ET.Element:
    element = ET.Element("channel", {"id": _text(channel.id)})
    for name in display_names(channel):
        _child(element, "display-name", name)
    logo = logo_url(base, channel)
    if logo:
        _child(element, "icon", src=logo)
    return element


def _programme(channel: Channel, airing: Airing, tz: tzinfo) -> ET.Element:
    p = airing.programme
    element = ET.Element("programme", {"start": xmltv_time(airing.start, tz), "stop": xmltv_time(airing.end, tz),
                                       "channel": _text(channel.id)})
    # In the DTD's order: title, sub-title, desc, category, episode-num.
    _child(element, "title", p.title or "Untitled")
    numbers = episode_numbers(p)
    sub_title = getattr(p, "sub_title", "") or (f"Episode {p.episode}" if numbers and p.episode else "")
    if sub_title:
        _child(element, "sub-title", sub_title)
    if p.description:
        _child(element, "desc", p.description)
    if p.category:
        _child(element, "category", p.category)
    for system, text in numbers:
        _child(element, "episode-num", text, system=system)
    return element
