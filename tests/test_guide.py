"""The guide (XMLTV, checked by xmllint against Debian's DTD), the M3U playlist and the tuner's
JSON, rendered from airings built here; and the config keys they read."""

from __future__ import annotations

import json
import os
import subprocess
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

import pytest

from harness import require_tool
from http_front import m3u, presentation, routes, tuner, xmltv
from retrovue_air import config, device_id
from retrovue_air.schedule import Airing, Programme

DTD = Path("/usr/share/xmltv/xmltv.dtd")
NOW = datetime(2026, 3, 14, 20, 13, 7, tzinfo=timezone.utc).timestamp()
BASE = "http://tv.example.net:8123"


def channel(cid: str, name: str, **keys) -> config.Channel:
    keys.setdefault("number", cid)
    return config.Channel(id=cid, name=name, source=config.TestPattern(440), **keys)


def xmllint_valid(data: bytes, tmp_path: Path) -> None:
    xmllint = require_tool("xmllint")
    if not DTD.exists():
        message = f"{DTD} is missing (apt-get install xmltv-util)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    path = tmp_path / "guide.xml"
    path.write_bytes(data)
    result = subprocess.run([xmllint, "--noout", "--dtdvalid", str(DTD), str(path)], capture_output=True, text=True)
    assert result.returncode == 0 and not result.stderr, result.stderr


class Schedule:
    """A schedule as the guide sees one: airings(start, end)."""

    def __init__(self, airings: list[Airing]):
        self.all = airings
        self.asked: list[tuple[float, float]] = []

    def airings(self, start: float, end: float) -> list[Airing]:
        self.asked.append((start, end))
        return [a for a in self.all if a.end > start and a.start < end]


SHOW = Programme("/m/a.mkv", 1800, "The Retro Hour", episode=2, season=1, description="Pilot, part two.",
                 category="Comedy")
FILM = Programme("/m/b.mkv", 5400, "Night <Film> & \"Co\"\x01", description="No episode here.")
SPECIAL = Programme("/m/c.mkv", 600, "Interlude", episode=7)


def airings_around(now: float) -> list[Airing]:
    start = now - 3 * 3600  # one that ended before the guide's two hours, then back to back
    out, t = [], start
    for programme in [FILM, SHOW, SPECIAL, SHOW, FILM] * 12:
        out.append(Airing(programme, t, t + programme.duration, block="Prime Time" if programme is SHOW else None))
        t += programme.duration
    return out


def programmes_of(root: ET.Element, channel_id: str) -> list[ET.Element]:
    return [p for p in root.iter("programme") if p.get("channel") == channel_id]


def as_time(text: str) -> float:
    return datetime.strptime(text, "%Y%m%d%H%M%S %z").timestamp()


# XMLTV

def test_guide_validates_against_the_xmltv_dtd_and_lists_exactly_the_airings_of_its_window(tmp_path):
    movies = channel("movies", "Movie Night", number="4.1", logo="https://img.example/m.png", group="Films")
    pattern = channel("1", "RetroVue One")
    schedule = Schedule(airings_around(NOW))
    start, end = xmltv.window(NOW, 48)
    data = xmltv.render(xmltv.listings([movies, pattern], {"movies": schedule}, start, end), BASE)
    xmllint_valid(data, tmp_path)

    assert schedule.asked == [(NOW - 2 * 3600, NOW + 48 * 3600)]
    root = ET.fromstring(data)
    expected = [a for a in schedule.all if a.end > NOW - 2 * 3600 and a.start < NOW + 48 * 3600]
    got = programmes_of(root, "movies")
    assert [(as_time(p.get("start")), as_time(p.get("stop")), p.findtext("title")) for p in got] == \
           [(a.start, a.end, a.programme.title.replace("\x01", "")) for a in expected]
    assert expected[0].start < NOW - 2 * 3600 < expected[0].end, "the airing on at the window's start is listed"


def test_the_guide_made_in_pieces_is_one_document_indented_as_a_whole(monkeypatch):
    monkeypatch.setattr(xmltv, "PROGRAMMES_PER_PIECE", 7)  # pieces cut inside channels and lists
    chans = [channel(str(n), f"Channel {n}", logo="/l.png") for n in range(1, 10)]
    start, end = xmltv.window(NOW, 12)
    listing = xmltv.listings(chans, {"1": Schedule(airings_around(NOW))}, start, end)
    pieces = list(xmltv.document(listing, BASE))
    assert len(pieces) > 10
    root = ET.fromstring(b"".join(pieces))
    ET.indent(root, space=" ")
    assert b"".join(pieces) == (xmltv.HEADER + ET.tostring(root, encoding="unicode") + "\n").encode()


def test_guide_channels_carry_the_m3u_tvg_id_three_display_names_and_an_icon():
    movies = channel("movies", "Movie Night", number="4.1", logo="/srv/logos/m.png")
    root = ET.fromstring(xmltv.render([(movies, [])], BASE))
    element = root.find("channel")
    assert element.get("id") == "movies"
    assert [d.text for d in element.findall("display-name")] == ["4.1 Movie Night", "4.1", "Movie Night"]
    assert element.find("icon").get("src") == f"{BASE}/logos/movies.png"
    playlist = m3u.render([movies], BASE).decode()
    assert 'tvg-id="movies"' in playlist


def test_programme_children_come_in_the_dtds_order_with_both_episode_numbers():
    [(c, airings)] = xmltv.listings([channel("m", "M")], {"m": Schedule([Airing(SHOW, NOW, NOW + 1800)])},
                                    NOW - 60, NOW + 60)
    p = ET.fromstring(xmltv.render([(c, airings)], BASE)).find("programme")
    assert [child.tag for child in p] == ["title", "sub-title", "desc", "category", "episode-num", "episode-num"]
    assert p.findtext("title") == "The Retro Hour" and p.findtext("sub-title") == "Episode 2"
    assert p.findtext("desc") == "Pilot, part two." and p.findtext("category") == "Comedy"
    assert {e.get("system"): e.text for e in p.findall("episode-num")} == {"xmltv_ns": "0.1.", "onscreen": "S01E02"}


@pytest.mark.parametrize("season, episode, expected", [
    (1, 2, [("xmltv_ns", "0.1."), ("onscreen", "S01E02")]),
    (12, 105, [("xmltv_ns", "11.104."), ("onscreen", "S12E105")]),
    (None, 7, [("xmltv_ns", ".6."), ("onscreen", "E07")]),
    (3, None, [("xmltv_ns", "2..")]),
    (None, None, []),
    (0, 0, []),  # not a number we can count from
])
def test_episode_numbers_are_zero_based_in_xmltv_ns_and_as_printed_onscreen(season, episode, expected):
    assert xmltv.episode_numbers(Programme("p", 1, "t", episode=episode, season=season)) == expected


def test_times_are_compact_with_a_numeric_offset():
    assert xmltv.xmltv_time(NOW) == "20260314201307 +0000"
    assert xmltv.xmltv_time(NOW + 0.9) == "20260314201307 +0000"
    from zoneinfo import ZoneInfo
    assert xmltv.xmltv_time(NOW, ZoneInfo("America/New_York")) == "20260314161307 -0400"


@pytest.mark.parametrize("t, shown", [
    (1e12 * 1.0, "99991230000000 +0000"),  # year 33,688
    (float("inf"), "99991230000000 +0000"),
    (-1e12, "19700102000000 +0000"),
    (float("nan"), "19700102000000 +0000"),
    (0.0, "19700102000000 +0000"),
])
def test_times_outside_the_years_xmltv_carries_are_shown_at_the_nearest_it_can(t, shown):
    assert xmltv.xmltv_time(t) == shown
    from zoneinfo import ZoneInfo
    for zone in ("Pacific/Kiritimati", "Etc/GMT+12"):  # +14:00 and -12:00
        assert "1970" <= xmltv.xmltv_time(t, ZoneInfo(zone))[:4] <= "9999"


def test_the_stepped_window_is_one_for_a_whole_step_and_covers_every_moment_of_it():
    step = xmltv.WINDOW_STEP_SECONDS
    first = 1_773_519_000.0  # a multiple of the step
    windows = {xmltv.stepped_window(first + 7200 + dt, 48) for dt in (0, 1, 150.5, step - 0.001)}
    assert len(windows) == 1
    for dt in (0, 1, 150.5, step - 0.001):
        start, end = xmltv.window(first + 7200 + dt, 48)
        stepped = xmltv.stepped_window(first + 7200 + dt, 48)
        assert stepped[0] <= start and stepped[1] >= end and stepped[1] - end <= step
    assert xmltv.stepped_window(first + 7200 + step, 48)[0] == first + step


def test_titles_cannot_inject_markup_and_control_characters_are_dropped(tmp_path):
    evil = Programme("x", 60, '</title><title>pwned</title>\x00\x1b\ud800', description="a]]>b<!--",
                     category='"><script>')
    odd = channel("x", 'News & "Views" <live>\x07')
    data = xmltv.render([(odd, [Airing(evil, NOW, NOW + 60)])], BASE)
    xmllint_valid(data, tmp_path)
    root = ET.fromstring(data)
    assert root.find("programme").findtext("title") == "</title><title>pwned</title>"
    assert root.find("programme").findtext("desc") == "a]]>b<!--"
    assert root.find("channel").findtext("display-name") == 'x News & "Views" <live>'
    assert len(root.findall("programme/title")) == 1


def test_test_pattern_channels_get_hour_long_test_pattern_entries_covering_the_window(tmp_path):
    start, end = xmltv.window(NOW, 6)
    listing = xmltv.listings([channel("1", "RetroVue One")], {}, start, end)
    data = xmltv.render(listing, BASE)
    xmllint_valid(data, tmp_path)
    got = programmes_of(ET.fromstring(data), "1")
    times = [(as_time(p.get("start")), as_time(p.get("stop"))) for p in got]
    assert all(p.findtext("title") == "Test pattern" for p in got)
    assert all(b - a == 3600 and a % 3600 == 0 for a, b in times)
    assert all(times[i][1] == times[i + 1][0] for i in range(len(times) - 1)), "no gap between entries"
    assert times[0][0] <= start and times[-1][1] >= end and len(times) == 9


def test_a_schedule_that_fails_costs_the_guide_a_500_not_the_front():
    class Broken:
        def airings(self, start, end):
            raise RuntimeError("boom")
    cfg = config.parse('[[channel]]\nid = "m"\nname = "M"\nsource = "test-pattern"\n', "t.toml")
    data = presentation.answer(routes.Guide(False), cfg, {"m": Broken()}, "h:1", NOW)
    assert data.startswith(b"HTTP/1.1 500 ")


# M3U

def test_m3u_has_the_guide_url_and_every_attribute_per_channel():
    chans = [channel("1", "RetroVue One", group="Test"),
             channel("movies", "Movie Night", number="4.1", logo="/srv/m.png", group="Films")]
    lines = m3u.render(chans, BASE).decode().splitlines()
    assert lines[0] == f'#EXTM3U url-tvg="{BASE}/xmltv.xml" x-tvg-url="{BASE}/xmltv.xml"'
    assert lines[1:] == [
        '#EXTINF:-1 tvg-id="1" tvg-chno="1" tvg-name="RetroVue One" tvg-logo="" group-title="Test" '
        'channel-id="1",RetroVue One', f"{BASE}/channels/1.ts",
        '#EXTINF:-1 tvg-id="movies" tvg-chno="4.1" tvg-name="Movie Night" '
        f'tvg-logo="{BASE}/logos/movies.png" group-title="Films" channel-id="movies",Movie Night',
        f"{BASE}/channels/movies.ts"]


def test_m3u_names_stay_on_one_line():
    odd = channel("x", 'Late\nNight "Movies"\r\n#EXTINF:-1,evil', group='a"b\nc')
    lines = m3u.render([odd], "http://h:1").decode().splitlines()
    assert len(lines) == 3 and lines[2] == "http://h:1/channels/x.ts"
    assert lines[1].endswith(",Late Night 'Movies' #EXTINF:-1,evil")
    assert 'group-title="a\'b c"' in lines[1]


# The tuner's JSON

DEVICE = tuner.Device(device_id.with_checksum(0x1234567), "RetroVue Air", 3)


def test_discover_json_has_every_field_with_the_types_clients_parse():
    d = tuner.discover(DEVICE, BASE)
    assert d == {"FriendlyName": "RetroVue Air", "Manufacturer": "Silicondust", "ModelNumber": "HDTC-2US",
                 "FirmwareName": "hdhomeruntc_atsc", "FirmwareVersion": d["FirmwareVersion"],
                 "DeviceID": DEVICE.device_id, "DeviceAuth": d["DeviceAuth"], "BaseURL": BASE,
                 "LineupURL": f"{BASE}/lineup.json", "TunerCount": 3}
    assert type(d["TunerCount"]) is int and isinstance(d["FirmwareVersion"], str) and d["FirmwareVersion"]
    assert isinstance(d["DeviceAuth"], str) and len(d["DeviceAuth"]) == 24
    assert device_id.is_valid(d["DeviceID"])


def test_lineup_json_lists_every_channel_at_its_auto_url():
    chans = [channel("1", "RetroVue One"), channel("hd", "HD", number="4.1", width=1280, height=720)]
    assert json.loads(json.dumps(tuner.lineup(chans, BASE))) == [
        {"GuideNumber": "1", "GuideName": "RetroVue One", "URL": f"{BASE}/auto/v1", "HD": 0,
         "VideoCodec": "H264", "AudioCodec": "AAC"},
        {"GuideNumber": "4.1", "GuideName": "HD", "URL": f"{BASE}/auto/v4.1", "HD": 1,
         "VideoCodec": "H264", "AudioCodec": "AAC"}]


def test_device_xml_is_a_upnp_media_server_with_url_base_and_udn():
    root = ET.fromstring(tuner.device_xml(DEVICE, BASE))
    ns = {"u": "urn:schemas-upnp-org:device-1-0"}
    assert root.findtext("u:URLBase", namespaces=ns) == BASE
    assert root.findtext("u:device/u:deviceType", namespaces=ns) == "urn:schemas-upnp-org:device:MediaServer:1"
    assert root.findtext("u:device/u:UDN", namespaces=ns) == DEVICE.udn and DEVICE.udn.startswith("uuid:")
    assert root.findtext("u:device/u:friendlyName", namespaces=ns) == "RetroVue Air"


# Routes

IDS = frozenset({"1", "movies"})
NUMBERS = {"1": "1", "4.1": "movies"}


@pytest.mark.parametrize("method, target, expected", [
    (b"GET", b"/xmltv.xml", routes.Guide(False)),
    (b"HEAD", b"/xmltv.xml?x=1", routes.Guide(True)),
    (b"GET", b"/playlist.m3u", routes.Playlist(None, False)),
    (b"GET", b"/channels.m3u", routes.Playlist(None, False)),
    (b"GET", b"/channels/movies.m3u", routes.Playlist("movies", False)),
    (b"GET", b"/discover.json", routes.TunerPage("discover.json", False)),
    (b"GET", b"/lineup.json", routes.TunerPage("lineup.json", False)),
    (b"HEAD", b"/lineup_status.json", routes.TunerPage("lineup_status.json", True)),
    (b"GET", b"/device.xml", routes.TunerPage("device.xml", False)),
    (b"POST", b"/lineup.post?scan=start&source=Cable", routes.TunerPage("lineup.post", False)),
    (b"GET", b"/auto/v4.1", routes.Watch("movies", False)),
    (b"GET", b"/auto/v4.1?transcode=heavy", routes.Watch("movies", False)),
    (b"GET", b"/auto/v1?duration=3600&transcode=internet540", routes.Watch("1", False)),
    (b"HEAD", b"/auto/v1", routes.Watch("1", True)),
    (b"GET", b"/channels/1.ts?transcode=mobile", routes.Watch("1", False)),
    (b"GET", b"/logos/movies.png", routes.Logo("movies", False)),
])
def test_guide_playlist_and_tuner_paths_route_with_any_query_ignored(method, target, expected):
    assert routes.route(method, target, IDS, NUMBERS) == expected


@pytest.mark.parametrize("target", [b"/auto/v9", b"/auto/v", b"/auto/v4_1", b"/auto/vmovies", b"/logos/nope.png",
                                    b"/logos/../x.png", b"/auto/v1/"])
def test_unknown_guide_numbers_and_logos_are_404_no_such_channel(target):
    assert routes.route(b"GET", target, IDS, NUMBERS) == routes.Refuse(404, "no such channel")


def test_lineup_post_takes_only_post_and_the_rest_only_get_and_head():
    assert routes.route(b"GET", b"/lineup.post", IDS, NUMBERS) == routes.Refuse(405, "method not allowed",
                                                                                (("Allow", "POST"),))
    for target in (b"/discover.json", b"/xmltv.xml", b"/auto/v1", b"/playlist.m3u", b"/logos/1.png"):
        r = routes.route(b"POST", target, IDS, NUMBERS)
        assert (r.status, r.headers) == (405, (("Allow", "GET, HEAD"),)), target


def test_without_guide_numbers_no_tuner_url_resolves():
    assert routes.route(b"GET", b"/auto/v1", IDS) == routes.Refuse(404, "no such channel")


# Config

def parse(text: str, path: str = "t.toml") -> config.Config:
    return config.parse(text, path)


def chan(cid: str, extra: str = "") -> str:
    return f'[[channel]]\nid = "{cid}"\nname = "N{cid}"\nsource = "test-pattern"\n{extra}\n'


def test_guide_numbers_default_to_a_numeric_id_else_the_position_and_are_unique():
    cfg = parse(chan("2") + chan("news") + chan("movies", 'number = "4.1"') + chan("music", "number = 7")
                + chan("x"))
    assert [c.number for c in cfg.channels] == ["2", "3", "4.1", "7", "5"]
    cfg = parse(chan("a") + chan("1"))
    assert [c.number for c in cfg.channels] == ["2", "1"], "a position taken by a numeric id moves on"
    assert presentation.guide_numbers(cfg) == {"2": "a", "1": "1"}


@pytest.mark.parametrize("extra, message", [
    ('number = "4_1"', "number: '4_1' is not a guide number"),
    ('number = "4.1.2"', "number: '4.1.2' is not a guide number"),
    ('number = ""', "number: '' is not a guide number"),
    ("number = 4.1", 'number: write it as a string: number = "4.1"'),
    ("number = true", "number: must be str, got bool"),
    ('logo = "/nonexistent/l.png"', "logo: cannot read the image /nonexistent/l.png"),
    ('group = "a\\nb"', "group: must be one non-empty line"),
])
def test_bad_guide_keys_name_the_file_line_and_key(extra, message):
    with pytest.raises(config.ConfigError) as e:
        parse(chan("1") + chan("b", extra), "/etc/t.toml")
    assert f"/etc/t.toml:10: {message}" in str(e.value)


def test_a_guide_number_used_twice_is_refused_at_the_later_channel():
    with pytest.raises(config.ConfigError) as e:
        parse(chan("1") + chan("b", 'number = "1"'))
    assert "t.toml:10: number: guide number 1 is taken by channel '1'" in str(e.value)


@pytest.mark.parametrize("top, message", [
    ('public_url = "ftp://x"', "public_url: expected http(s)://HOST[:PORT][/PATH]"),
    ('public_url = "http://x/?a=b"', "public_url: expected"),
    ("guide_hours = 0", "guide_hours: must be greater than 0"),
    ("guide_hours = 400", "guide_hours: at most 336"),
    ('device_id = "12345"', "device_id: '12345' is not 8 hex digits"),
    ('device_id = "12345678"', "device_id: 12345678 fails the HDHomeRun checksum that tuner clients check; "
                               "12345674 passes"),
    ('discovery = "yes"', "discovery: must be bool, got str"),
    ('friendly_name = ""', "friendly_name: must be one non-empty line"),
])
def test_bad_tuner_keys_name_the_file_line_and_key(top, message):
    with pytest.raises(config.ConfigError) as e:
        parse(top + "\n" + chan("1"))
    assert f"t.toml:1: {message}" in str(e.value)


def test_tuner_keys_and_their_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/retrovue-air:/var/lib/other")
    cfg = parse(chan("1"))
    assert (cfg.public_url, cfg.guide_hours, cfg.device_id, cfg.friendly_name, cfg.discovery) == \
           (None, 48.0, None, "RetroVue Air", False)
    assert cfg.state_dir == "/var/lib/retrovue-air"
    monkeypatch.delenv("STATE_DIRECTORY")
    assert parse(chan("1")).state_dir == os.path.expanduser("~/.local/state/retrovue-air")
    logo = tmp_path / "logo.png"
    logo.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    cfg = parse('public_url = "https://tv.example.net/air/"\nguide_hours = 6\ndevice_id = "12345674"\n'
                'friendly_name = "Den"\ndiscovery = true\nstate_dir = "state"\n'
                + chan("1", 'logo = "logo.png"\ngroup = "Kids"'), str(tmp_path / "t.toml"))
    assert (cfg.public_url, cfg.guide_hours, cfg.device_id, cfg.friendly_name, cfg.discovery) == \
           ("https://tv.example.net/air", 6.0, "12345674", "Den", True)
    assert cfg.state_dir == str(tmp_path / "state")
    assert (cfg.channels[0].logo, cfg.channels[0].group) == (str(logo), "Kids")


def test_a_logo_that_is_not_an_image_is_refused(tmp_path):
    (tmp_path / "logo.png").write_text("not an image")
    with pytest.raises(config.ConfigError) as e:
        parse(chan("1", 'logo = "logo.png"'), str(tmp_path / "t.toml"))
    assert "t.toml:5: logo:" in str(e.value) and "is not a PNG, JPEG, GIF or WebP image" in str(e.value)


# The device id

def test_device_ids_made_here_pass_libhdhomeruns_checksum():
    # 12345674 is the valid id that starts 1234567; any other last digit fails.
    assert device_id.is_valid("1234567A") is False
    made = {device_id.make() for _ in range(200)}
    assert all(device_id.is_valid(d) and len(d) == 8 for d in made) and len(made) > 190
    for d in list(made)[:20]:
        wrong = d[:7] + format((int(d[7], 16) + 1) % 16, "X")
        assert not device_id.is_valid(wrong)


def test_the_device_id_is_made_once_and_kept(tmp_path):
    state = tmp_path / "state"
    first = device_id.load_or_create(str(state))
    assert device_id.is_valid(first)
    assert (state / device_id.FILE_NAME).read_text().strip() == first
    assert device_id.load_or_create(str(state)) == first


def test_an_unwritable_state_dir_still_gives_a_stable_valid_id(tmp_path, caplog):
    blocked = tmp_path / "file"
    blocked.write_text("")
    first = device_id.load_or_create(str(blocked / "state"))
    assert device_id.is_valid(first) and first == device_id.load_or_create(str(blocked / "state"))
    assert "cannot keep the HDHomeRun device id" in caplog.text
