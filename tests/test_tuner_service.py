"""The guide, the playlists and the HDHomeRun tuner, fetched from the running service as Plex,
Jellyfin and IPTV players fetch them."""

from __future__ import annotations

import socket
import struct
import xml.etree.ElementTree as ET
import zlib

import pytest
import requests

from harness import Reader, assert_aligned_ts, wait_until
from http_front import discovery
from retrovue_air import device_id
from test_discovery import JELLYFIN_REQUEST, m_search, parse_reply, tags_of
from test_guide import xmllint_valid


def tiny_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0\xff\x80\0")) \
        + chunk(b"IEND", b"")


def guide_config(tmp_path, top: str = "") -> dict:
    (tmp_path / "movies.png").write_bytes(tiny_png())
    extra = ('\n[[channel]]\nid = "movies"\nname = "Movie Night"\nsource = "test-pattern"\nnumber = "4.1"\n'
             'logo = "movies.png"\ngroup = "Films"\nwidth = 320\nheight = 180\n')
    top = f'state_dir = "{tmp_path / "state"}"\nguide_hours = 3\nfriendly_name = "Den TV"\n{top}'
    return {"extra_top": top, "extra": extra}


def get(service, path: str, **kwargs) -> requests.Response:
    response = requests.get(service.url(path), timeout=10, **kwargs)
    assert response.status_code == 200, (path, response.status_code, response.text)
    return response


def test_every_guide_playlist_and_tuner_endpoint_answers_without_starting_a_channel(service_factory, tmp_path):
    service = service_factory(**guide_config(tmp_path))
    host = "tv.example.net:8123"
    base = f"http://{host}"

    guide = get(service, "/xmltv.xml", headers={"Host": host})
    assert guide.headers["content-type"] == "application/xml; charset=utf-8"
    xmllint_valid(guide.content, tmp_path)
    root = ET.fromstring(guide.content)
    assert [c.get("id") for c in root.iter("channel")] == ["1", "2", "movies"]
    assert {p.findtext("title") for p in root.iter("programme")} == {"Test pattern"}
    assert {p.get("channel") for p in root.iter("programme")} == {"1", "2", "movies"}

    playlist = get(service, "/channels.m3u", headers={"Host": host})
    assert playlist.headers["content-type"] == "audio/x-mpegurl"
    assert get(service, "/playlist.m3u", headers={"Host": host}).text == playlist.text
    lines = playlist.text.splitlines()
    assert lines[0] == f'#EXTM3U url-tvg="{base}/xmltv.xml" x-tvg-url="{base}/xmltv.xml"'
    assert lines[5] == (f'#EXTINF:-1 tvg-id="movies" tvg-chno="4.1" tvg-name="Movie Night" '
                        f'tvg-logo="{base}/logos/movies.png" group-title="Films" channel-id="movies",Movie Night')
    assert lines[6] == f"{base}/channels/movies.ts"
    assert [line.split('tvg-id="')[1].split('"')[0] for line in lines[1::2]] == ["1", "2", "movies"]
    assert "/channels/2.ts" not in get(service, "/channels/1.m3u").text

    found = get(service, "/discover.json", headers={"Host": host}).json()
    assert {k: type(v) for k, v in found.items()} == {
        "FriendlyName": str, "Manufacturer": str, "ModelNumber": str, "FirmwareName": str, "FirmwareVersion": str,
        "DeviceID": str, "DeviceAuth": str, "BaseURL": str, "LineupURL": str, "TunerCount": int}
    assert (found["FriendlyName"], found["ModelNumber"], found["FirmwareName"], found["TunerCount"]) == \
           ("Den TV", "HDTC-2US", "hdhomeruntc_atsc", 16)
    assert (found["BaseURL"], found["LineupURL"]) == (base, f"{base}/lineup.json")
    assert device_id.is_valid(found["DeviceID"])
    assert (tmp_path / "state" / device_id.FILE_NAME).read_text().strip() == found["DeviceID"]

    lineup = get(service, "/lineup.json").json()
    assert [(c["GuideNumber"], c["GuideName"], c["URL"]) for c in lineup] == [
        ("1", "Test One", f"{service.base}/auto/v1"), ("2", "Test Two", f"{service.base}/auto/v2"),
        ("4.1", "Movie Night", f"{service.base}/auto/v4.1")]
    assert all((c["HD"], c["VideoCodec"], c["AudioCodec"]) == (0, "H264", "AAC") for c in lineup)
    assert get(service, "/lineup_status.json").json() == {"ScanInProgress": 0, "ScanPossible": 1,
                                                           "Source": "Cable", "SourceList": ["Cable"]}
    device = ET.fromstring(get(service, "/device.xml").content)
    ns = {"u": "urn:schemas-upnp-org:device-1-0"}
    assert device.findtext("u:URLBase", namespaces=ns) == service.base
    assert device.findtext("u:device/u:UDN", namespaces=ns).startswith("uuid:")
    scan = requests.post(service.url("/lineup.post?scan=start&source=Cable"), timeout=10)
    assert scan.status_code == 200
    assert requests.get(service.url("/lineup.post?scan=start"), timeout=10).status_code == 405

    logo = get(service, "/logos/movies.png")
    assert logo.headers["content-type"] == "image/png" and logo.content == tiny_png()
    assert requests.get(service.url("/logos/1.png"), timeout=10).status_code == 404

    assert {c["state"] for c in service.channels().values()} == {"idle"}, "nothing here starts a channel"
    assert not service.ffmpegs()
    assert not any("discovery" in line for line in service.lines), "discovery is off unless asked for"


def test_the_device_id_survives_a_restart(service_factory, tmp_path):
    config = guide_config(tmp_path)
    first = service_factory(**config)
    made = get(first, "/discover.json").json()["DeviceID"]
    assert first.stop() == 0
    second = service_factory(**config)
    assert get(second, "/discover.json").json()["DeviceID"] == made


def test_a_configured_device_id_and_public_url_are_what_the_tuner_says(service_factory, tmp_path):
    service = service_factory(**guide_config(tmp_path, 'device_id = "12345674"\npublic_url = "https://tv.example/air"'))
    found = get(service, "/discover.json").json()
    assert (found["DeviceID"], found["BaseURL"]) == ("12345674", "https://tv.example/air")
    assert get(service, "/lineup.json").json()[0]["URL"] == "https://tv.example/air/auto/v1"
    assert not (tmp_path / "state").exists()


def watch_raw(service, target: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", service.port), timeout=15)
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nUser-Agent: Lavf/59\r\n\r\n".encode())
    return sock


def read_response(sock: socket.socket, body_bytes: int) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < body_bytes:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def test_a_tuner_url_with_jellyfins_transcode_query_streams_the_channel(service_factory, tmp_path):
    service = service_factory(**guide_config(tmp_path))
    sock = watch_raw(service, "/auto/v4.1?transcode=heavy&duration=3600")
    try:
        head, body = read_response(sock, 188 * 64)
        assert head.startswith(b"HTTP/1.1 200 OK") and b"Content-Type: video/mp2t" in head
        assert_aligned_ts(body[: 188 * 64])
        assert service.channels()["movies"] == {**service.channels()["movies"], "state": "live", "viewers": 1}
    finally:
        sock.close()
    service.wait_idle()


def test_when_every_tuner_is_busy_a_new_channel_gets_503_with_hdhomerun_error_805(service_factory, tmp_path):
    service = service_factory(**guide_config(tmp_path, "max_active_channels = 1"))
    assert get(service, "/discover.json").json()["TunerCount"] == 1
    watcher = Reader(service, "1")
    watcher.start()
    try:
        wait_until(lambda: watcher.count > 0, 15, "channel 1 streaming")
        refused = requests.get(service.url("/auto/v2?transcode=native"), timeout=10)
        assert refused.status_code == 503
        assert refused.headers["X-HDHomeRun-Error"] == "805 All Tuners In Use"
        assert "too many channels on air (1)" in refused.text
        sock = watch_raw(service, "/auto/v1")  # the channel on air takes no other tuner
        try:
            head, _ = read_response(sock, 188)
            assert head.startswith(b"HTTP/1.1 200 OK")
        finally:
            sock.close()
    finally:
        watcher.finish()
    service.wait_idle()


def udp_port_free(port: int, reuse: bool = False) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        if reuse:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False


def test_discovery_answers_jellyfin_and_ssdp_on_the_standard_ports(service_factory, tmp_path):
    if not udp_port_free(discovery.HDHOMERUN_PORT) or not udp_port_free(discovery.SSDP_PORT, reuse=True):
        pytest.skip("UDP 65001 or 1900 is taken on this machine")
    service = service_factory(**guide_config(tmp_path, "discovery = true"))
    service.wait_for_log(r"discovery: answering hdhomerun on UDP 0\.0\.0\.0:65001")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(10)
        client.sendto(JELLYFIN_REQUEST, ("127.0.0.1", discovery.HDHOMERUN_PORT))
        reply, _ = client.recvfrom(4096)
        base = tags_of(reply)[discovery.TAG_BASE_URL].decode()
        assert base == service.base
        found = get(service, "/discover.json").json()
        assert bytes.fromhex(found["DeviceID"]) == tags_of(reply)[discovery.TAG_DEVICE_ID]
        assert tags_of(reply)[discovery.TAG_TUNER_COUNT] == bytes([found["TunerCount"]])

        client.sendto(m_search(discovery.MEDIA_SERVER), ("127.0.0.1", discovery.SSDP_PORT))
        location = parse_reply(client.recvfrom(4096)[0])["LOCATION"]
        assert location == f"{service.base}/device.xml"
        assert b"MediaServer" in requests.get(location, timeout=10).content
