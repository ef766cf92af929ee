"""The /watch and /guide pages as renderers: channels and schedules in, HTML out."""

from __future__ import annotations

import re
from datetime import datetime, timezone

from http_front import guide_page, routes, static_files, watch_page
from retrovue_air import config
from retrovue_air.schedule import Airing, Programme

NOW = datetime(2026, 3, 14, 20, 13, 7, tzinfo=timezone.utc).timestamp()


def channel(cid: str, name: str) -> config.Channel:
    return config.Channel(id=cid, name=name, source=config.TestPattern(440), number=cid)


class Listed:
    """A schedule of back-to-back airings of the given (title, seconds) from `start`."""

    def __init__(self, start: float, *shows: tuple[str, float]):
        self.list, t = [], start
        for title, seconds in shows:
            self.list.append(Airing(Programme(path=f"/m/{title}", duration=seconds, title=title), t, t + seconds))
            t += seconds

    def airings(self, start: float, end: float) -> list[Airing]:
        return [a for a in self.list if a.end > start and a.start < end]


CHANNELS = (channel("1", "One <b>&"), channel("2", "Two"), channel("3", "Three"))
SCHEDULES = {"1": Listed(NOW - 600, ("Early <script>", 1200), ("Later & more", 1800), ("Last", 7200))}


def test_the_watch_page_plays_the_channels_hls_and_says_what_is_on_now_and_next():
    page = watch_page.render("1", CHANNELS, SCHEDULES, NOW).decode()
    assert 'data-src="/channels/1.m3u8"' in page
    assert "canPlayType('application/vnd.apple.mpegurl')" in page
    assert 'data-hlsjs="/static/hls.min.js?v=' in page
    assert "One &lt;b&gt;&amp;" in page and "<b>&" not in page
    assert "Early &lt;script&gt;" in page and "<script>Early" not in page
    assert re.search(r"id=on-now>Now: <b>Early &lt;script&gt;</b>", page)
    assert re.search(r"id=up-next>Next: <b>Later &amp; more</b>", page)


def test_the_watch_page_links_the_channels_either_side_and_wraps_around():
    first = watch_page.render("1", CHANNELS, SCHEDULES, NOW).decode()
    assert 'id=channel-down href="/watch/3"' in first and 'id=channel-up href="/watch/2"' in first
    last = watch_page.render("3", CHANNELS, {}, NOW).decode()
    assert 'id=channel-up href="/watch/1"' in last
    assert "Test pattern" in last  # a channel without a schedule: the guide's placeholder


def test_the_pages_load_nothing_from_elsewhere():
    for page in (watch_page.render("1", CHANNELS, SCHEDULES, NOW), guide_page.render(CHANNELS, SCHEDULES, NOW)):
        assert not re.search(rb"""(src|href)=["']?(https?:)?//""", page)


def test_the_guide_lists_every_channel_and_marks_what_is_on_now():
    page = guide_page.render(CHANNELS, SCHEDULES, NOW).decode()
    for c in CHANNELS:
        assert f'data-channel="{c.id}"' in page and f'href="/watch/{c.id}"' in page
    on_now = re.findall(r'<a class="programme now" href="/watch/(\d)"[^>]*>([^<]*)', page)
    assert ("1", "Early &lt;script&gt;") in on_now
    assert {cid for cid, _ in on_now} == {"1", "2", "3"}
    assert "class=nowline" in page and "@media (max-width" in page


def test_the_guide_draws_only_a_few_hours_however_long_the_schedule():
    endless = {"1": Listed(NOW - 60, *[(f"clip {i}", 30.0) for i in range(100_000)])}
    page = guide_page.render(CHANNELS[:1], endless, NOW).decode()
    assert page.count('class="programme') <= guide_page.MAX_PER_ROW
    start, end = guide_page.window(NOW)
    assert end - start == guide_page.GRID_HOURS * 3600 and start <= NOW < end


def test_watch_guide_and_static_routes():
    ids = {"1", "2"}
    assert routes.route(b"GET", b"/watch/1", ids) == routes.WatchPage("1", False)
    assert routes.route(b"GET", b"/watch/9", ids) == routes.Refuse(404, "no such channel")
    assert routes.route(b"HEAD", b"/guide", ids) == routes.GuideGrid(True)
    assert routes.route(b"GET", b"/static/hls.min.js?v=1", ids) == routes.StaticFile("hls.min.js", False)
    assert routes.route(b"GET", b"/static/../config.toml", ids).status == 404
    assert routes.route(b"POST", b"/guide", ids).status == 405


def test_the_vendored_hls_js_is_served_with_its_licence_and_a_long_max_age():
    data = static_files.answer("hls.min.js", False)
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"max-age=31536000" in head and b"text/javascript" in head
    assert len(body) > 100_000
    assert watch_page.HLS_JS.split("?v=")[1].encode() in body  # the page names the release it serves
    assert b"Apache License" in static_files.answer("LICENSE", False)
