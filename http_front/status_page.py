"""GET / (a small status page).

The page is one HTML document with inline CSS: no framework, no external asset, no
JavaScript; it reloads itself every few seconds. Every text that comes from the
configuration, a media file or a process (names, titles, file names, errors) goes through
_e: its control characters dropped, then html.escape.
"""

from __future__ import annotations

import html
import os
import time

from retrovue_air.config import MediaFiles, Relay, TestPattern
from retrovue_air.url_secrets import host_of

from .plain_text import printable

REFRESH_SECONDS = 5
MIN_RATE_SECONDS = 3.0  # a rate over less stream than this says more about buffering than bitrate

STATE_LABELS = {
    "idle": "Off air",
    "starting": "Warming up",
    "live": "On air",
    "stopping": "Signing off",
    "failed": "No signal",
}

CSS = """
:root { color-scheme: dark; --bg: #14110f; --cabinet: #3b2a1e; --wood: #5a3d27; --glass: #0d1a14;
  --phosphor: #9dffb0; --dim: #5f9e6d; --amber: #ffbf47; --red: #ff5a4e; --text: #e9e1d3; --muted: #a89a86; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; background: var(--bg); color: var(--text);
  font: 16px/1.45 ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, "Liberation Mono", monospace;
  background-image: radial-gradient(ellipse at top, #2a211a 0%, var(--bg) 70%); min-height: 100vh; }
a { color: var(--amber); }
a:hover, a:focus { color: #ffe0a0; }
header, main, footer { max-width: 1100px; margin: 0 auto; padding: 0 16px; }
header { padding-top: 20px; display: flex; flex-wrap: wrap; align-items: baseline; gap: 8px 20px; }
h1 { margin: 0; font-size: 1.9rem; letter-spacing: .08em; text-transform: uppercase; color: var(--amber);
  text-shadow: 0 0 8px rgba(255, 191, 71, .55); }
h1 small { display: block; font-size: .8rem; letter-spacing: .3em; color: var(--muted); text-shadow: none; }
.summary { color: var(--muted); margin: 0; }
.summary b { color: var(--text); }
.links { margin: 10px 0 18px; display: flex; flex-wrap: wrap; gap: 8px; }
.button { display: inline-block; padding: 6px 12px; border: 1px solid #6b5039; border-radius: 6px;
  background: linear-gradient(#4a3626, #33251a); color: var(--amber); text-decoration: none; font-size: .9rem;
  box-shadow: inset 0 1px 0 rgba(255, 255, 255, .08); }
.button:hover, .button:focus { border-color: var(--amber); }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 18px; padding-bottom: 12px;
  align-items: start; }
.tv { background: linear-gradient(160deg, var(--wood), var(--cabinet)); border-radius: 18px; padding: 14px;
  box-shadow: 0 10px 24px rgba(0, 0, 0, .5), inset 0 1px 0 rgba(255, 255, 255, .12); }
.screen { position: relative; overflow: hidden; border-radius: 28px / 22px; padding: 14px 16px 12px;
  background: radial-gradient(ellipse at center, #12261c 0%, var(--glass) 75%);
  border: 3px solid #1d1510; box-shadow: inset 0 0 26px rgba(0, 0, 0, .85); color: var(--phosphor);
  text-shadow: 0 0 5px rgba(157, 255, 176, .45); }
.screen::after { content: ""; position: absolute; inset: 0; pointer-events: none;
  background: repeating-linear-gradient(to bottom, rgba(0, 0, 0, .22) 0 1px, transparent 1px 3px); }
.tv.off .screen { color: var(--dim); text-shadow: none; background: radial-gradient(ellipse at center, #161a18 0%, #0b0d0c 75%); }
.tv.failed .screen { color: #ffb0a8; text-shadow: 0 0 5px rgba(255, 90, 78, .4); }
.top { display: flex; align-items: center; gap: 12px; }
.number { flex: none; min-width: 3.1rem; padding: 2px 8px; border-radius: 8px; text-align: center; font-size: 1.5rem;
  font-weight: bold; color: var(--amber); background: #1b1410; border: 1px solid #4d3828;
  text-shadow: 0 0 6px rgba(255, 191, 71, .6); overflow-wrap: anywhere; max-width: 45%; }
.name { margin: 0; font-size: 1.15rem; line-height: 1.2; overflow-wrap: anywhere; }
.state { display: inline-flex; align-items: center; gap: 6px; margin-top: 3px; font-size: .8rem;
  letter-spacing: .12em; text-transform: uppercase; }
.lamp { width: 10px; height: 10px; border-radius: 50%; background: #444; box-shadow: inset 0 0 2px #000; }
.live .lamp { background: var(--red); box-shadow: 0 0 8px var(--red); }
.starting .lamp, .stopping .lamp { background: var(--amber); box-shadow: 0 0 6px var(--amber); }
.failed .lamp { background: #a23; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 3px 12px; margin: 12px 0 4px; font-size: .92rem; }
dt { color: var(--dim); }
.tv.live dt { color: #7fcf90; }
dd { margin: 0; overflow-wrap: anywhere; }
.note { color: var(--dim); font-size: .8rem; }
.error { margin: 10px 0 0; padding: 6px 8px; border-left: 3px solid var(--red); background: rgba(255, 90, 78, .1);
  color: #ffc2bb; font-size: .85rem; white-space: pre-wrap; overflow-wrap: anywhere; text-shadow: none; }
.controls { display: flex; flex-wrap: wrap; gap: 8px; margin-top: 12px; align-items: center; }
.knob { width: 22px; height: 22px; border-radius: 50%; margin-left: auto;
  background: radial-gradient(circle at 35% 35%, #8a6a4c, #2b1d13); box-shadow: 0 2px 3px rgba(0, 0, 0, .6); }
footer { color: var(--muted); font-size: .8rem; padding-bottom: 24px; }
@media (max-width: 480px) {
  body { font-size: 15px; }
  h1 { font-size: 1.5rem; }
  .grid { grid-template-columns: 1fr; }
  .tv { padding: 10px; border-radius: 14px; }
}
"""


def _e(value: object) -> str:
    return html.escape(printable(str(value)), quote=True)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{days}d {clock}" if days else clock


def on_now(config) -> str:
    """What the channel plays, in words (file names only, never their folders)."""
    source = config.source
    if isinstance(source, TestPattern):
        return f"Test pattern with a {source.tone_hz} Hz tone"
    if isinstance(source, MediaFiles) and getattr(source, "schedule", None) is not None:
        airing = source.schedule.airing_at(time.time())
        left = max(0, int(airing.end - time.time()))
        return f"{airing.programme.title} ({left // 60}:{left % 60:02d} left)"
    if isinstance(source, MediaFiles):
        names = [os.path.basename(p) for p in source.paths]
        return " \u2192 ".join(names) + (" (looped)" if names else "")
    if isinstance(source, Relay):
        return f"Relay of {host_of(source.url)}"  # its URL may hold a password or a token
    return type(source).__name__


def _live_seconds(channel, now: float) -> float | None:
    since = channel.stats.live_since
    if channel.lifecycle.state.shown != "live" or since is None:
        return None
    return max(0.0, now - since)


def _bitrate(channel, live_for: float | None) -> str:
    cfg = channel.config
    configured = f"configured {cfg.video_kbps + cfg.audio_kbps} kb/s"
    if live_for is None:
        return f"\u2014<br><span class=note>{_e(configured)}</span>"
    if live_for < MIN_RATE_SECONDS:
        return f"measuring\u2026<br><span class=note>{_e(configured)}</span>"
    # The current stream's bytes (its buffer counts from 0); bytes_in spans every stream so far.
    buffer = channel.buffer
    received = buffer.end if buffer is not None else channel.stats.bytes_in
    kbps = received * 8 / live_for / 1000
    return f"{kbps:,.0f} kb/s <span class=note>average</span><br><span class=note>{_e(configured)}</span>"


def _tune_in(stats) -> str:
    """Request to first byte, as the front saw it: joining live, and starting the channel."""
    parts = []
    for label, histogram in (("join", stats.join), ("cold start", stats.cold_start)):
        p50, p99 = histogram.percentile(50), histogram.percentile(99)
        if p50 is not None:
            parts.append(f"{label} {p50 * 1000:,.0f} / {p99 * 1000:,.0f} ms")
    return _e(" \u00b7 ".join(parts)) + " <span class=note>p50 / p99</span>" if parts else "\u2014"


def _ingest(status) -> str:
    """The Ingest row (issue 13): files in the cache, and the one being made."""
    if status is None:
        return "not started"
    text = f"{status.ingested} of {status.files} files"
    if status.current:
        text += f" \u00b7 {status.current} {status.percent} %"
    if status.failed:
        text += f" \u00b7 {status.failed} failed"
    return text


def _channel_card(channel, now: float, ingest=None) -> str:
    lc = channel.lifecycle
    state = lc.state.shown
    live_for = _live_seconds(channel, now)
    cid = _e(channel.id)
    looks = {"live": "live", "failed": "failed", "idle": "off"}.get(state, state)
    viewers = lc.viewer_count
    rows = [
        ("State", f"<span class=state-value>{_e(state)}</span>"),
        ("Viewers", f"<span class=viewers>{viewers}</span>"),
        ("Bitrate", _bitrate(channel, live_for)),
        ("Uptime", _e(_duration(live_for)) if live_for is not None else "\u2014"),
        ("On now", _e(on_now(channel.config))),
        ("Picture", _e(f"{channel.config.width}\u00d7{channel.config.height} @ {channel.config.fps} fps")),
        ("Tune-in", _tune_in(channel.stats)),
    ]
    if channel.config.ingest:
        rows.append(("Ingest", _e(_ingest(ingest and ingest.channels.get(channel.id)))))
    dl = "".join(f"<dt>{label}</dt><dd>{value}</dd>" for label, value in rows)
    error = f'<p class=error role=alert>Last error: {_e(lc.failure)}</p>' if lc.failure else ""
    return f"""<article class="tv {looks} {_e(state)}" id="channel-{cid}" data-channel="{cid}" data-state="{_e(state)}" data-viewers="{viewers}">
<div class=screen>
<div class=top><span class=number title="channel id">{cid}</span>
<div><h2 class=name>{_e(channel.config.name)}</h2>
<span class=state><span class=lamp></span>{_e(STATE_LABELS.get(state, state))}</span></div></div>
<dl>{dl}</dl>{error}
</div>
<div class=controls><a class=button href="/watch/{cid}" title="play it in the browser">&#9654; Watch</a>
<a class=button href="/channels/{cid}.ts" title="the live MPEG-TS stream">.ts</a>
<a class=button href="/channels/{cid}.m3u" title="an M3U playlist of this channel">Playlist</a><span class=knob></span></div>
</article>"""


def render(state, host: str) -> bytes:
    """The status page from a FrontState (http_front.answers)."""
    now = time.monotonic()
    channels = state.channels
    live = sum(1 for c in channels if c.lifecycle.state.shown == "live")
    watching = state.viewers
    cards = "\n".join(_channel_card(c, now, state.ingest) for c in channels)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    page = f"""<!doctype html>
<html lang=en>
<head>
<meta charset=utf-8>
<meta name=viewport content="width=device-width, initial-scale=1">
<meta http-equiv=refresh content="{REFRESH_SECONDS}">
<title>RetroVue Air \u2014 {live} on air</title>
<style>{CSS}</style>
</head>
<body>
<header>
<h1>RetroVue Air<small>live channel guide</small></h1>
<p class=summary><b>{len(channels)}</b> channels \u00b7 <b>{live}</b> on air \u00b7 <b>{watching}</b> watching</p>
</header>
<main>
<nav class=links>
<a class=button href="/channels.m3u">All channels (.m3u)</a>
<a class=button href="/guide">Guide</a>
<a class=button href="/xmltv.xml">Guide (XMLTV)</a>
<a class=button href="/discover.json">Tuner (HDHomeRun)</a>
<a class=button href="/channels">JSON</a>
<a class=button href="/metrics">Metrics</a>
</nav>
<section class=grid>
{cards}
</section>
</main>
<footer>Served by {_e(host)} \u00b7 {_e(stamp)} \u00b7 this page reloads every {REFRESH_SECONDS} s.
Open a channel&#39;s .ts or .m3u link in VLC, mpv or any IPTV player.</footer>
</body>
</html>
"""
    return page.encode("utf-8")

