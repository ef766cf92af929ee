"""GET /guide: a TV guide grid, channels down and time across, from now for a few hours.

The same listing as /xmltv.xml (xmltv.listed_airings, short airings grouped by
programme_groups), but only GRID_HOURS of it: one page's work is bounded by the channels
and a few hours, whatever the schedules hold. Each programme is a block placed by its
start and length as percentages of the grid, so the grid reflows on a phone's width
without JavaScript; a vertical line marks now. Pure: channels and schedules in, HTML out.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

from retrovue_air.config import Channel

from . import xmltv
from .plain_text import printable
from .watch_page import clock

GRID_HOURS = 3
SLOT_SECONDS = 1800
MAX_PER_ROW = 200  # programmes drawn per channel: the grouping keeps a real row far below this

CSS = """
:root { color-scheme: dark; }
* { box-sizing: border-box; }
body { margin: 0; background: #111; color: #eee; font: 15px/1.3 system-ui, sans-serif; }
header { padding: 10px 12px; display: flex; flex-wrap: wrap; gap: 8px 16px; align-items: baseline; }
h1 { margin: 0; font-size: 1.3rem; }
header a { color: #ffbf47; }
.guide { overflow-x: auto; padding: 0 12px 16px; }
.grid { min-width: 560px; }
.row { display: flex; border-bottom: 1px solid #333; min-height: 3.2rem; }
.channel { flex: none; width: 7.5rem; padding: 6px; background: #1c1c1c; position: sticky; left: 0; z-index: 2;
  overflow-wrap: anywhere; }
.channel a { color: #eee; text-decoration: none; }
.channel .number { color: #ffbf47; display: block; font-weight: bold; }
.track { position: relative; flex: 1; }
.programme { position: absolute; top: 2px; bottom: 2px; overflow: hidden; padding: 4px 6px; background: #26313a;
  border: 1px solid #3a4a57; border-radius: 4px; color: #eee; text-decoration: none; white-space: nowrap;
  text-overflow: ellipsis; font-size: .85rem; }
.programme.now { background: #2f4a33; border-color: #4f7a55; }
.programme small { color: #aaa; display: block; }
.row.times { min-height: 1.6rem; }
.times .track span { position: absolute; top: 0; padding: 4px; color: #aaa; font-size: .8rem; }
.nowline { position: absolute; top: 0; bottom: 0; width: 2px; background: #ff5a4e; z-index: 1; }
@media (max-width: 600px) { .channel { width: 5rem; font-size: .85rem; } .grid { min-width: 480px; } }
"""


def _e(value: object) -> str:
    return html.escape(printable(str(value)), quote=True)


def window(now: float) -> tuple[float, float]:
    """From the half hour now is in, GRID_HOURS on."""
    start = math.floor(now / SLOT_SECONDS) * SLOT_SECONDS
    return start, start + GRID_HOURS * 3600


def _percent(t: float, start: float, end: float) -> float:
    return min(100.0, max(0.0, (t - start) * 100 / (end - start)))


def _row(channel: Channel, schedule, start: float, end: float, now: float) -> str:
    cid = _e(channel.id)
    blocks = []
    for i, airing in enumerate(xmltv.listed_airings(channel, schedule, start, end)):
        if i >= MAX_PER_ROW or airing.start >= end:
            break
        left, right = _percent(airing.start, start, end), _percent(airing.end, start, end)
        on = airing.start <= now < airing.end
        title = _e(airing.programme.title)
        blocks.append(f'<a class="programme{" now" if on else ""}" href="/watch/{cid}" '
                      f'style="left:{left:.3f}%;width:{right - left:.3f}%" title="{title}" '
                      f'data-start="{airing.start:.0f}">{title}'
                      f'<small>{clock(airing.start)}\u2013{clock(airing.end)}</small></a>')
    nowline = f'<span class=nowline style="left:{_percent(now, start, end):.3f}%"></span>'
    return (f'<div class=row data-channel="{cid}"><div class=channel><a href="/watch/{cid}">'
            f'<span class=number>{_e(channel.number)}</span>{_e(channel.name)}</a></div>'
            f'<div class=track>{nowline}{"".join(blocks)}</div></div>')


def render(channels: Sequence[Channel], schedules: Mapping[str, object], now: float) -> bytes:
    start, end = window(now)
    marks = "".join(f'<span style="left:{_percent(t, start, end):.3f}%">{clock(t)}</span>'
                    for t in range(int(start), int(end), SLOT_SECONDS))
    rows = "\n".join(_row(c, schedules.get(c.id), start, end, now) for c in channels)
    page = f"""<!doctype html>
<html lang=en>
<head>
<meta charset=utf-8>
<meta name=viewport content="width=device-width, initial-scale=1">
<title>Guide \u2014 RetroVue Air</title>
<style>{CSS}</style>
</head>
<body>
<header><h1>Guide</h1><span>{clock(start)}\u2013{clock(end)}</span><a href="/">Status</a>
<a href="/xmltv.xml">XMLTV</a></header>
<div class=guide><div class=grid>
<div class="row times"><div class=channel></div><div class=track>{marks}</div></div>
{rows}
</div></div>
</body>
</html>
"""
    return page.encode("utf-8")
