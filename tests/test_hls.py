"""HLS from the ring, on the real service: ffmpeg plays it, its segments decode alone, its
clients are leases that keep the channel on air and let it go."""

from __future__ import annotations

import gc
import re
import subprocess
import threading
import time

import requests

from harness import Reader, require_tool, wait_until
from ts_packets_check import decoder_complaints, first_video_frame_is_key, packet_pids, pmt_pid_of

IDLE = 3.0  # hls_idle_seconds in the tests that wait for a lease to run out


def parse_playlist(text: str) -> dict:
    """The tags and segments of a media playlist (the m3u8 package is not a dependency of ours)."""
    assert text.startswith("#EXTM3U\n"), text[:100]
    playlist = {"segments": [], "tags": {}}
    segment: dict = {}
    for line in text.splitlines()[1:]:
        if line.startswith("#EXTINF:"):
            segment["duration"] = float(line[len("#EXTINF:"):].rstrip(","))
        elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            segment["program_date_time"] = line.split(":", 1)[1]
        elif line == "#EXT-X-DISCONTINUITY":
            segment["discontinuity"] = True
        elif line.startswith("#"):
            name, _, value = line[1:].partition(":")
            playlist["tags"][name] = value
        elif line:
            playlist["segments"].append({**segment, "uri": line})
            segment = {}
    playlist["media_sequence"] = int(playlist["tags"]["EXT-X-MEDIA-SEQUENCE"])
    return playlist


def get_playlist(session, service, channel: str = "1") -> tuple[requests.Response, dict]:
    response = session.get(service.url(f"/channels/{channel}.m3u8"), timeout=15)
    assert response.status_code == 200, response.text
    return response, parse_playlist(response.text)


def segment_url(service, channel: str, uri: str) -> str:
    return service.url(f"/channels/{uri}")


def test_a_cold_playlist_lists_three_segments_at_once_and_ffmpeg_plays_it_without_an_error(service):
    ffmpeg = require_tool("ffmpeg")
    started = time.monotonic()
    response, playlist = get_playlist(requests, service)
    waited = time.monotonic() - started
    assert waited < 3.0, f"cold playlist after {waited:.2f} s"
    assert len(playlist["segments"]) >= 3
    assert playlist["tags"]["EXT-X-TARGETDURATION"] == "1"
    assert "EXT-X-INDEPENDENT-SEGMENTS" in playlist["tags"] and playlist["tags"]["EXT-X-VERSION"] == "6"
    assert all("program_date_time" in s for s in playlist["segments"])
    assert response.headers["Content-Type"] == "application/vnd.apple.mpegurl"
    assert response.headers["Cache-Control"] == "no-cache"  # half of a 1 s target is under max-age's second
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    print(f"cold playlist with {len(playlist['segments'])} segments after {waited:.2f} s")
    result = subprocess.run([ffmpeg, "-v", "error", "-i", service.url("/channels/1.m3u8"), "-t", "8",
                             "-f", "null", "-"], capture_output=True, timeout=60)
    assert result.returncode == 0 and result.stderr == b"", result.stderr.decode(errors="replace")


def test_each_segment_starts_at_pat_pmt_and_a_keyframe_and_decodes_alone(service):
    ffmpeg = require_tool("ffmpeg")
    with requests.Session() as session:
        _, playlist = get_playlist(session, service)
        for segment in playlist["segments"]:
            response = session.get(segment_url(service, "1", segment["uri"]), timeout=10)
            assert response.status_code == 200
            assert response.headers["Content-Type"] == "video/mp2t"
            assert response.headers["Cache-Control"] == "max-age=60, immutable"
            assert response.headers["Access-Control-Allow-Origin"] == "*"
            body = response.content
            assert len(body) % 188 == 0 and int(response.headers["Content-Length"]) == len(body)
            pids = packet_pids(body)
            assert pids[0] == 0 and pids[1] == pmt_pid_of(body), pids[:4]
            assert first_video_frame_is_key(body)
            assert decoder_complaints(ffmpeg, body) == ""
            assert 0.9 <= segment["duration"] <= 1.1


def test_the_media_sequence_moves_on_and_a_segment_just_off_the_playlist_is_still_served(service):
    with requests.Session() as session:  # one kept-alive connection, as a player's
        _, first = get_playlist(session, service)
        oldest = first["segments"][0]["uri"]
        kept = session.get(segment_url(service, "1", oldest), timeout=10).content
        sequences = [first["media_sequence"]]

        def moved_past():
            _, playlist = get_playlist(session, service)
            sequences.append(playlist["media_sequence"])
            return oldest not in [s["uri"] for s in playlist["segments"]]

        wait_until(moved_past, 10, "the oldest segment leaving the playlist", interval=0.5)
        assert sequences == sorted(sequences) and sequences[-1] > sequences[0]
        again = session.get(segment_url(service, "1", oldest), timeout=10)
        assert again.status_code == 200 and again.content == kept


def test_a_ts_viewer_and_an_hls_client_of_one_channel_share_one_ffmpeg(service):
    watcher = Reader(service)
    watcher.start()
    wait_until(lambda: service.channels()["1"]["state"] == "live", 10, "channel 1 live")
    before = service.channels()["1"]
    get_playlist(requests, service)
    after = service.channels()["1"]
    assert after["viewers"] == 2
    assert (after["worker_pid"], after["ffmpeg_pid"]) == (before["worker_pid"], before["ffmpeg_pid"])
    assert len(service.ffmpegs()) == 1
    assert len(re.findall(r"channel 1: starting stream", "\n".join(service.lines))) == 1
    watcher.finish()


def poll(service, seconds: float) -> str:
    """Play channel 1 as a player does for that long: its playlist and newest segment every half
    second, on one kept connection, asserting that it stays live with one viewer. Its last segment's URI."""
    with requests.Session() as session:
        until = time.monotonic() + seconds
        while True:
            playlist = get_playlist(session, service)[1]
            segment = playlist["segments"][-1]["uri"]
            assert session.get(segment_url(service, "1", segment), timeout=10).status_code == 200
            assert (service.channels()["1"]["state"], service.channels()["1"]["viewers"]) == ("live", 1)
            if time.monotonic() >= until:
                return segment
            time.sleep(0.5)


def test_an_hls_client_keeps_the_channel_live_and_when_it_stops_polling_the_channel_stops(service_factory):
    service = service_factory(extra_top=f"hls_idle_seconds = {IDLE}")
    baseline = service.fd_counts()
    segment = poll(service, 2 * IDLE)  # longer than a lease lasts
    stopped_polling = time.monotonic()
    gc.collect()  # a requests Response holds its kept connection open until it is collected
    wait_until(lambda: service.channels()["1"]["state"] == "idle", IDLE + 3, "channel 1 idle")
    took = time.monotonic() - stopped_polling
    assert took <= IDLE + 1.0, f"stopped {took:.2f} s after the last request"
    print(f"channel stopped {took:.2f} s after the last request (hls_idle_seconds = {IDLE:g})")
    service.wait_idle()
    wait_until(lambda: service.fd_counts() == baseline, 5, f"fds back at {baseline}")
    # Its ring went with it: the segment is no longer anyone's bytes.
    assert requests.get(segment_url(service, "1", segment), timeout=5).status_code == 404


def test_bad_hls_requests_are_refused_without_starting_anything(service):
    assert requests.get(service.url("/channels/9.m3u8"), timeout=5).status_code == 404
    assert requests.get(service.url("/channels/9/1000000001-0.ts"), timeout=5).status_code == 404
    assert requests.get(service.url("/channels/1/1000000001-0.ts"), timeout=5).status_code == 404  # no ring
    for name in ("abc", "1-", "1-2-3", "x-1"):
        assert requests.get(service.url(f"/channels/1/{name}.ts"), timeout=5).status_code == 400
    assert service.channels()["1"]["state"] == "idle" and not service.ffmpegs()
    _, playlist = get_playlist(requests, service)
    stream = playlist["segments"][0]["uri"].split("/")[1].split("-")[0]
    gone = requests.get(service.url(f"/channels/1/{stream}-999999.ts"), timeout=5)
    assert gone.status_code == 404
    other = requests.get(service.url(f"/channels/1/{int(stream) + 1}-{playlist['media_sequence']}.ts"), timeout=5)
    assert other.status_code == 404  # a listed number, but another stream's name: never these bytes


def test_a_storm_of_playlist_requests_on_a_cold_channel_starts_one_encoder(service):
    answers: list[int] = []

    def ask(k: int):
        response = requests.get(service.url("/channels/2.m3u8"), headers={"User-Agent": f"player-{k}"}, timeout=15)
        answers.append(response.status_code)

    threads = [threading.Thread(target=ask, args=(k,)) for k in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [200] * 30
    assert len(re.findall(r"channel 2: starting stream", "\n".join(service.lines))) == 1
    assert len(service.ffmpegs()) == 1
    assert service.channels()["2"]["viewers"] == 30  # one lease per client


def test_the_m3u_lists_hls_urls_when_asked(service):
    assert "/channels/1.ts" in requests.get(service.url("/channels.m3u"), timeout=5).text
    hls = requests.get(service.url("/channels.m3u?format=hls"), timeout=5).text
    assert "/channels/1.m3u8" in hls and ".ts" not in hls
