"""GET /metrics and the status page (in a real headless Chromium)."""

from __future__ import annotations

import selectors
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from harness import ROOT, Reader, require_tool, wait_until
from http_front import metrics, status_page
from http_front.channel_lifecycle import ChannelLifecycle, State
from http_front.answers import FrontState
from http_front.channel import Channel
from retrovue_air import config

ARTIFACTS = ROOT / "test-artifacts"


# Helpers


class Metrics:
    """One scrape of /metrics, parsed by prometheus-client's own parser."""

    def __init__(self, text: str):
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}

    def samples(self, name: str, **labels) -> list:
        family_name = name.removesuffix("_total")
        for suffix in ("_bucket", "_count", "_sum"):
            if family_name not in self.families and family_name.endswith(suffix):
                family_name = family_name.removesuffix(suffix)
        family = self.families.get(family_name)
        assert family is not None, f"no metric family {family_name!r} in:\n{self.text}"
        return [s for s in family.samples
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]

    def value(self, name: str, **labels) -> float:
        found = self.samples(name, **labels)
        assert len(found) == 1, f"{len(found)} samples of {name}{labels}"
        return found[0].value


def scrape(service) -> Metrics:
    response = requests.get(service.url("/metrics"), timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return Metrics(response.text)


def watching(service, channel: str = "1") -> Reader:
    """A viewer on the channel, live and past its first bytes, read in the background."""
    reader = Reader(service, channel)
    reader.start()
    wait_until(lambda: reader.count > 16 * 1024, 10, "the viewer receiving")
    return reader


class Cards(HTMLParser):
    """Each channel card (<article data-channel=…>) of the status page: its attributes, text and links."""

    def __init__(self):
        super().__init__()
        self.cards: dict[str, dict] = {}
        self.links: list[str] = []
        self.meta: list[dict] = []
        self._current: dict | None = None
        self._depth = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "meta":
            self.meta.append(attrs)
        if tag == "a" and "href" in attrs:
            self.links.append(attrs["href"])
            if self._current is not None:
                self._current["links"].append(attrs["href"])
        if tag == "article" and "data-channel" in attrs:
            self._current = {"attrs": attrs, "text": [], "links": []}
            self.cards[attrs["data-channel"]] = self._current
            self._depth = 0
        if self._current is not None and tag == "article":
            self._depth += 1

    def handle_endtag(self, tag):
        if self._current is not None and tag == "article":
            self._depth -= 1
            if self._depth == 0:
                self._current["text"] = " ".join(" ".join(self._current["text"]).split())
                self._current = None

    def handle_data(self, data):
        if self._current is not None:
            self._current["text"].append(data)


def parse_page(page: str) -> Cards:
    parser = Cards()
    parser.feed(page)
    parser.close()
    return parser


def chromium_command(tmp_path: Path, *args: str) -> list[str]:
    return [require_tool("chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={tmp_path / 'chromium-profile'}", *args]


def png_facts(data: bytes) -> tuple[int, int, int]:
    """(width, height, distinct byte values of the decompressed image data) of a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, width, height, idat = 8, 0, 0, bytearray()
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", chunk[:8])
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    return width, height, len(set(zlib.decompress(bytes(idat))))


def fake_front(*channels: Channel) -> FrontState:
    return FrontState(config.load_default(), channels, 0)


def channel(cid: str, name: str, source=config.TestPattern(440), **kwargs) -> Channel:
    return Channel(config.Channel(id=cid, name=name, source=source, **kwargs),
                   ChannelLifecycle(cid, next_stream=iter(range(1, 99)).__next__), selectors.DefaultSelector())


def vanished_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()  # reaped: nothing has this pid any more
    return proc.pid


# /metrics against the real service


def test_metrics_follow_a_viewer_through_a_channel_life(service):
    drain = watching(service)
    first = scrape(service)

    assert first.value("retrovue_air_viewers", channel="1") == 1
    assert first.value("retrovue_air_viewers", channel="2") == 0
    out = first.value("retrovue_air_bytes_out_total", channel="1")
    assert out > 0
    assert first.value("retrovue_air_bytes_in_total", channel="1") >= out > 0
    assert first.value("retrovue_air_streams_started_total", channel="1") == 1
    assert first.value("retrovue_air_streams_started_total", channel="2") == 0
    assert first.value("retrovue_air_stream_restarts_total", channel="1") == 0
    assert first.value("retrovue_air_viewers_dropped_slow_total", channel="1") == 0
    assert first.value("retrovue_air_time_to_first_byte_seconds_count", channel="1") == 1
    assert first.value("retrovue_air_time_to_first_byte_seconds_bucket", channel="1", le="+Inf") == 1
    assert first.value("retrovue_air_time_to_first_byte_seconds_sum", channel="1") > 0
    assert first.value("retrovue_air_teardown_seconds_count", channel="1") == 0
    states = {s.labels["state"]: s.value for s in first.samples("retrovue_air_state", channel="1")}
    assert states == {"idle": 0, "starting": 0, "live": 1, "stopping": 0, "failed": 0}
    assert first.value("retrovue_air_state", channel="2", state="idle") == 1
    assert first.value("retrovue_air_connections") >= 1
    assert first.value("retrovue_air_open_fds") >= 5  # listener, control, inbox, stream, viewer at least

    info = service.channels()["1"]
    rss = {(s.labels["role"], s.labels["channel"]): s.value
           for s in first.samples("retrovue_air_resident_memory_bytes")}
    assert set(rss) == {("supervisor", ""), ("http_front", ""), ("air_worker", "1"), ("ffmpeg", "1")}
    assert all(v > 1024 * 1024 for v in rss.values()), rss
    assert info["worker_pid"] is not None and info["ffmpeg_pid"] is not None

    # The counter grows while the viewer keeps reading.
    wait_until(lambda: scrape(service).value("retrovue_air_bytes_out_total", channel="1") > out + 16 * 1024,
               10, "bytes_out growing")

    drain.finish()
    service.wait_idle()
    after = scrape(service)
    assert after.value("retrovue_air_viewers", channel="1") == 0
    assert after.value("retrovue_air_teardown_seconds_count", channel="1") == 1
    assert after.value("retrovue_air_teardown_seconds_bucket", channel="1", le="+Inf") == 1
    assert after.value("retrovue_air_state", channel="1", state="idle") == 1
    assert after.value("retrovue_air_state", channel="1", state="live") == 0
    # A counter never goes down: the bytes of a viewer who left are still counted.
    assert after.value("retrovue_air_bytes_out_total", channel="1") > out + 16 * 1024
    assert after.value("retrovue_air_streams_started_total", channel="1") == 1
    roles = {s.labels["role"] for s in after.samples("retrovue_air_resident_memory_bytes")}
    assert roles == {"supervisor", "http_front"}


def test_metrics_render_skips_vanished_processes_and_keeps_counters_separate():
    one, two = channel("1", "One"), channel("two", "Two")
    one.lifecycle.state = State.LIVE
    one.lifecycle.worker_pid = vanished_pid()
    one.lifecycle.ffmpeg_pid = vanished_pid()
    one.stats.bytes_in = 1234
    one.stats.viewers_dropped_slow = 3
    one.stats.time_to_first_byte.observe(0.3)
    two.stats.teardown.observe(0.02)
    two.stats.teardown.observe(7.0)
    content_type, data = metrics.render(fake_front(one, two))
    assert content_type.startswith("text/plain")
    m = Metrics(data.decode())
    assert m.value("retrovue_air_bytes_in_total", channel="1") == 1234
    assert m.value("retrovue_air_bytes_in_total", channel="two") == 0
    assert m.value("retrovue_air_viewers_dropped_slow_total", channel="1") == 3
    assert m.value("retrovue_air_time_to_first_byte_seconds_bucket", channel="1", le="0.25") == 0
    assert m.value("retrovue_air_time_to_first_byte_seconds_bucket", channel="1", le="0.5") == 1
    assert m.value("retrovue_air_teardown_seconds_bucket", channel="two", le="0.025") == 1
    assert m.value("retrovue_air_teardown_seconds_bucket", channel="two", le="2.5") == 1
    assert m.value("retrovue_air_teardown_seconds_count", channel="two") == 2
    assert m.value("retrovue_air_teardown_seconds_sum", channel="two") == pytest.approx(7.02)
    assert m.value("retrovue_air_state", channel="1", state="live") == 1
    assert m.value("retrovue_air_connections") == 0
    roles = {s.labels["role"] for s in m.samples("retrovue_air_resident_memory_bytes")}
    assert roles == {"supervisor", "http_front"}, "a vanished worker or ffmpeg must be skipped, not fail"
    # A fresh registry per scrape: rendering twice gives the same numbers, not doubled ones.
    assert metrics.render(fake_front(one, two))[1].count(b"retrovue_air_bytes_in_total{") == 2


# The status page


def test_status_page_escapes_and_shows_what_is_on(tmp_path):
    files = channel("movies", "Movies <script>alert(1)</script>",
                    config.MediaFiles(("/srv/secret/dir/a&b.mkv", "/srv/secret/dir/c.mp4")))
    files.lifecycle.state = State.FAILED
    files.lifecycle.failure = "ffmpeg exited with status 1: <Invalid data>"
    tone = channel("1", "Tone", config.TestPattern(660), video_kbps=600, audio_kbps=64)
    page = status_page.render(fake_front(files, tone), "tv.example:8000").decode()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "/srv/secret" not in page, "only file names, never their folders"
    cards = parse_page(page)
    movies, one = cards.cards["movies"], cards.cards["1"]
    assert movies["attrs"]["data-state"] == "failed"
    assert "a&b.mkv" in movies["text"] and "c.mp4" in movies["text"]
    assert "Last error: ffmpeg exited with status 1: <Invalid data>" in movies["text"]
    assert "660 Hz" in one["text"] and "664 kb/s" in one["text"] and "idle" in one["text"]
    assert "Last error" not in one["text"]
    assert set(one["links"]) == {"/watch/1", "/channels/1.ts", "/channels/1.m3u"}
    assert "/channels.m3u" in cards.links
    assert {"http-equiv": "refresh", "content": "5"} in cards.meta
    assert any(m.get("name") == "viewport" for m in cards.meta)
    assert "<script" not in page.replace("&lt;script", ""), "no JavaScript needed"
    assert "http://" not in page and "https://" not in page, "no external assets"


def test_status_page_in_headless_chromium_shows_a_live_channel(service, tmp_path):
    require_tool("chromium")
    drain = watching(service)
    wait_until(lambda: service.channels()["1"]["viewers"] == 1, 5, "one viewer on channel 1")

    dom = subprocess.run(chromium_command(tmp_path, "--dump-dom", service.url("/")),
                         capture_output=True, text=True, timeout=90)
    assert dom.returncode == 0, dom.stderr[-2000:]
    cards = parse_page(dom.stdout)
    assert set(cards.cards) == {"1", "2"}, dom.stdout[:2000]
    one, two = cards.cards["1"], cards.cards["2"]
    assert one["attrs"]["data-state"] == "live" and one["attrs"]["data-viewers"] == "1"
    assert "Test One" in one["text"] and "State live" in one["text"] and "Viewers 1" in one["text"]
    assert "kb/s" in one["text"] and "440 Hz" in one["text"]
    assert two["attrs"]["data-state"] == "idle" and "Viewers 0" in two["text"]

    shot = tmp_path / "status-page.png"
    result = subprocess.run(chromium_command(tmp_path, f"--screenshot={shot}", "--window-size=1024,768",
                                             service.url("/")),
                            capture_output=True, text=True, timeout=90)
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    data = shot.read_bytes()
    width, height, distinct = png_facts(data)
    assert (width, height) == (1024, 768)
    assert len(data) > 20 * 1024 and distinct > 64, "the screenshot looks blank"
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(shot, ARTIFACTS / "status-page.png")

    assert drain.is_alive() and drain.count > 0, "the viewer kept watching throughout"
    drain.finish()
    service.wait_idle()

