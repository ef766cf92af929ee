"""GET /watch/{id}: a page that plays the channel's HLS in a <video> element.

Native HLS where the browser has it (Safari, iOS, recent Chrome); else hls.js, served by us
from http_front/static (a pinned release: no CDN, so the page works on a LAN without the
internet and nothing outside can change what runs in it). ?player=hlsjs forces hls.js, so
that both paths can be tried in one browser. On now and next come from the same listing as
/xmltv.xml (xmltv.listed_airings). Pure: channels and schedules in, HTML out; every text
from the configuration or a media file goes through _e.
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping, Sequence

from retrovue_air.config import Channel

from . import xmltv
from .plain_text import printable

HLS_JS = "/static/hls.min.js?v=1.6.19"  # the vendored release: a new one is a new URL
NEXT_SECONDS = 6 * 3600  # how far ahead "next" is looked for

CSS = """
:root { color-scheme: dark; }
* { box-sizing: border-box; }
body { margin: 0; background: #111; color: #eee; font: 16px/1.4 system-ui, sans-serif; }
main { max-width: 960px; margin: 0 auto; padding: 12px; }
video { width: 100%; aspect-ratio: 16 / 9; background: #000; display: block; }
h1 { font-size: 1.3rem; margin: 10px 0 4px; }
.number { color: #ffbf47; margin-right: .4em; }
.airings { margin: 4px 0; color: #ccc; }
.airings b { color: #eee; }
nav { display: flex; flex-wrap: wrap; gap: 8px; margin: 10px 0; }
nav a { color: #ffbf47; border: 1px solid #555; border-radius: 6px; padding: 6px 12px; text-decoration: none; }
.status { color: #999; font-size: .85rem; }
"""

# Plays the playlist named by the video's data-src; says what it uses in #player-status.
SCRIPT = """
(function () {
  var video = document.getElementById('player');
  var src = video.dataset.src, status = document.getElementById('player-status');
  var forced = /[?&]player=hlsjs(&|$)/.test(location.search);
  function say(text) { status.textContent = text; }
  function play() { var p = video.play(); if (p && p.catch) p.catch(function () {}); }
  if (!forced && video.canPlayType('application/vnd.apple.mpegurl')) {
    video.dataset.player = 'native'; say('native HLS');
    video.src = src; video.addEventListener('loadedmetadata', play); return;
  }
  var script = document.createElement('script');
  script.src = video.dataset.hlsjs;
  script.onload = function () {
    if (!window.Hls || !Hls.isSupported()) { video.dataset.player = 'none'; say('this browser cannot play HLS'); return; }
    video.dataset.player = 'hls.js'; say('hls.js ' + Hls.version);
    var hls = new Hls({ liveSyncDurationCount: 2 });
    hls.on(Hls.Events.ERROR, function (_, data) { if (data.fatal) say('playback error: ' + data.details); });
    hls.loadSource(src); hls.attachMedia(video);
    hls.on(Hls.Events.MANIFEST_PARSED, play);
  };
  document.head.appendChild(script);
})();
"""


def _e(value: object) -> str:
    return html.escape(printable(str(value)), quote=True)


def clock(t: float) -> str:
    return time.strftime("%H:%M", time.localtime(t))


def now_and_next(channel: Channel, schedule, now: float) -> tuple[object | None, object | None]:
    """The airing on at now and the one after it, as the guide lists them (short airings grouped)."""
    listed = xmltv.listed_airings(channel, schedule, now, now + NEXT_SECONDS)
    on_now = next(listed, None)
    return on_now, next(listed, None)


def _neighbours(channels: Sequence[Channel], index: int) -> tuple[Channel, Channel]:
    return channels[index - 1], channels[(index + 1) % len(channels)]


def render(channel_id: str, channels: Sequence[Channel], schedules: Mapping[str, object], now: float) -> bytes:
    """The page for channel_id (one of channels); now: unix time."""
    index = next(i for i, c in enumerate(channels) if c.id == channel_id)
    channel = channels[index]
    down, up = _neighbours(channels, index)
    on_now, up_next = now_and_next(channel, schedules.get(channel.id), now)
    cid = _e(channel.id)
    lines = []
    if on_now is not None:
        lines.append(f'<p class=airings id=on-now>Now: <b>{_e(on_now.programme.title)}</b> '
                     f'<span>{clock(on_now.start)}\u2013{clock(on_now.end)}</span></p>')
    if up_next is not None:
        lines.append(f'<p class=airings id=up-next>Next: <b>{_e(up_next.programme.title)}</b> '
                     f'<span>at {clock(up_next.start)}</span></p>')
    page = f"""<!doctype html>
<html lang=en>
<head>
<meta charset=utf-8>
<meta name=viewport content="width=device-width, initial-scale=1">
<title>{_e(channel.number)} {_e(channel.name)} \u2014 RetroVue Air</title>
<style>{CSS}</style>
</head>
<body>
<main>
<video id=player controls muted autoplay playsinline data-channel="{cid}" data-src="/channels/{cid}.m3u8" data-hlsjs="{HLS_JS}"></video>
<h1><span class=number>{_e(channel.number)}</span><span id=channel-name>{_e(channel.name)}</span></h1>
{"".join(lines)}
<nav>
<a id=channel-down href="/watch/{_e(down.id)}" title="{_e(down.name)}">&#9660; {_e(down.number)}</a>
<a id=channel-up href="/watch/{_e(up.id)}" title="{_e(up.name)}">&#9650; {_e(up.number)}</a>
<a href="/guide">Guide</a>
<a href="/">Status</a>
<a href="/channels/{cid}.m3u8">HLS playlist</a>
</nav>
<p class=status id=player-status></p>
</main>
<script>{SCRIPT}</script>
</body>
</html>
"""
    return page.encode("utf-8")
