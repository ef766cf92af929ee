"""/watch and /guide in headless Debian Chromium, driven by Playwright (no browser download)."""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET

import pytest
import requests

from harness import require_tool

playwright = pytest.importorskip("playwright.sync_api")

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


@pytest.fixture
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=require_tool("chromium"), args=ARGS)
        try:
            yield b
        finally:
            b.close()


def playback(page, seconds: float) -> dict:
    before = page.evaluate("() => { const q = document.getElementById('player').getVideoPlaybackQuality();"
                           " return [q.totalVideoFrames, q.droppedVideoFrames]; }")
    time.sleep(seconds)
    after = page.evaluate("() => { const q = document.getElementById('player').getVideoPlaybackQuality();"
                          " return [q.totalVideoFrames, q.droppedVideoFrames]; }")
    return {"decoded": after[0] - before[0], "dropped": after[1] - before[1]}


@pytest.mark.parametrize("player", ["", "?player=hlsjs"])
def test_watch_on_an_idle_channel_shows_a_moving_picture_within_5_s(service, browser, player, tmp_path):
    page = browser.new_page(viewport={"width": 800, "height": 640})
    h264 = page.evaluate("""() => MediaSource.isTypeSupported('video/mp4; codecs="avc1.42E01E,mp4a.40.2"')""")
    assert service.channels()["1"]["state"] == "idle"
    began = time.monotonic()
    page.goto(service.url("/watch/1" + player))
    page.wait_for_function("() => document.getElementById('player').currentTime > 0", timeout=5000)
    took = time.monotonic() - began
    used = page.evaluate("() => document.getElementById('player').dataset.player")
    quality = playback(page, 4.0)
    print(f"player {used} (H.264 in MSE: {h264}): currentTime > 0 after {took:.2f} s; "
          f"in 4 s {quality['decoded']} frames decoded, {quality['dropped']} dropped")
    page.screenshot(path=tmp_path / "watch.png")  # the README's, from a run of this test
    assert used == ("hls.js" if player else used)
    assert quality["decoded"] >= 75
    assert quality["dropped"] < 0.05 * quality["decoded"]
    assert page.text_content("#channel-name") == "Test One"
    assert page.get_attribute("#channel-up", "href") == "/watch/2"


def test_the_guide_lists_every_channel_and_the_programme_on_now_as_the_xmltv_does(service, browser, tmp_path):
    guide = ET.fromstring(requests.get(service.url("/xmltv.xml"), timeout=10).content)
    names = {c.get("id"): [n.text for n in c.iter("display-name")][-1] for c in guide.iter("channel")}
    now = time.strftime("%Y%m%d%H%M%S +0000", time.gmtime())
    on_now = {}
    for p in guide.iter("programme"):
        if p.get("start") <= now < p.get("stop"):
            on_now[p.get("channel")] = p.findtext("title")
    page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone
    page.goto(service.url("/guide"))
    page.screenshot(path=tmp_path / "guide.png")
    rows = page.eval_on_selector_all(".row[data-channel]", "rows => rows.map(r => [r.dataset.channel,"
                                     " r.querySelector('.channel').innerText,"
                                     " (r.querySelector('.programme.now') || {}).title])")
    assert len(rows) == len(names) == len(on_now)
    for cid, label, title in rows:
        assert label.splitlines()[-1] == names[cid]
        assert title == on_now[cid]
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390 + 1  # the grid scrolls inside
    link = page.get_attribute(".programme.now", "href")
    assert re.fullmatch(r"/watch/\w+", link)
