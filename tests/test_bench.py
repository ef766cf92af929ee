"""The bench's own parts: Icecast's config and source command, the load client, the report.

The bench itself is run by `make bench`, not here; these check that what it measures
with is right: that Icecast gets our channel's exact ffmpeg command, that the load
client tells a refused viewer from a streaming one and counts only stream bytes.
"""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET

from harness import wait_until

from air_worker.ffmpeg_command import build_command, font_file
from bench import icecast, report, side_by_side
from bench.load_client import STREAMING, LoadClient
from retrovue_air import config
from retrovue_air.ffmpeg.binary import ffmpeg_binary


def test_icecast_config_raises_the_limits_and_escapes_the_password():
    text = icecast.icecast_config(port=8123, directory="/tmp/x", password="a<b&c", clients=10100,
                                  queue_size=1064700, burst_size=65536)
    root = ET.fromstring(text)
    assert root.findtext("limits/clients") == "10100"
    assert root.findtext("limits/queue-size") == "1064700"
    assert root.findtext("limits/burst-size") == "65536"
    assert root.findtext("authentication/source-password") == "a<b&c"
    assert root.findtext("listen-socket/port") == "8123"
    assert root.findtext("listen-socket/bind-address") == "127.0.0.1"
    assert root.findtext("paths/logdir") == "/tmp/x"


def test_icecast_is_fed_our_test_pattern_channels_own_ffmpeg_command():
    toml = side_by_side.channel_toml(1000)
    ours = build_command(config.parse(toml, "<t>").channels[0], ffmpeg_binary(), font=font_file())
    source = icecast.source_command(toml, 8123, "pw")
    assert ours[-1] == "pipe:1"
    assert source[: len(ours) - 1] == ours[:-1]
    assert source[len(ours) - 1:] == ["-content_type", "video/mp2t", "icecast://source:pw@127.0.0.1:8123/bench.ts"]


def test_channel_limits_admit_every_bench_viewer():
    c = config.parse(side_by_side.channel_toml(10000), "<t>")
    assert min(c.max_connections, c.max_connections_per_address, c.max_viewers_per_channel) > 10000


def test_load_client_streams_counts_stream_bytes_and_names_a_refusal():
    with socket.create_server(("127.0.0.1", 0), backlog=16) as listener:
        listener.setblocking(False)
        port = listener.getsockname()[1]
        client = LoadClient("127.0.0.1", port, "/x.ts", count=4, window=2)
        served: list[socket.socket] = []

        def serve() -> bool:
            client.run_for(0.02)
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                return len(served) == 4
            conn.setblocking(True)
            assert conn.recv(4096).startswith(b"GET /x.ts HTTP/1.1\r\n")
            if not served:
                conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
            else:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\n\r\n" + b"G" * 1880)
            served.append(conn)
            return False

        try:
            wait_until(serve, 10, "four viewers served, two at a time")
            wait_until(lambda: client.run_for(0.02) or client.streaming() == 3, 10, "three viewers streaming")
            assert client.losses() == {"refused 503": 1}
            assert sorted(client.body_bytes()) == [0, 1880, 1880, 1880]
            assert all(v.first_byte is not None and v.first_byte <= v.first_body_byte
                       for v in client.viewers if v.state == STREAMING)
            served[1].close()
            wait_until(lambda: client.run_for(0.02) or client.streaming() == 2, 10, "a closed viewer seen")
            assert client.losses() == {"refused 503": 1, "closed": 1}
        finally:
            client.close()
            for conn in served:
                conn.close()


def run_row(server: str, **over) -> dict:
    row = {"server": server, "viewers": 1000, "cpu_s_per_gb": 0.4, "cpu_cores": 0.1, "rss_mb": 30.0,
           "below_95pct": 0, "dropped": 0, "listen_overflows": 0, "first_byte_p50_ms": 5,
           "first_byte_p99_ms": 9, "first_media_p50_ms": 5, "first_media_p99_ms": 9, "source_kbps": 2100,
           "viewer_rate_median_kbps": 2090}
    return row | over


def test_summary_takes_the_median_cost_and_the_worst_losses():
    row = side_by_side.summarise([run_row("icecast2", cpu_s_per_gb=5.0, dropped=0),
                                  run_row("icecast2", cpu_s_per_gb=6.0, dropped=40)])
    assert row["cpu_s_per_gb"] == 5.5 and row["dropped"] == 40 and row["rounds"] == 2
    assert row["source_kbps"] == 2100 and row["viewer_rate_median_kbps"] == 2090
    assert row["holds"] is False  # 40 of 1000 is over the 1 % it may lose


def test_markdown_has_one_row_per_server_and_count_and_says_who_did_not_hold():
    summary = [side_by_side.summarise([run_row("retrovue-air")]),
               side_by_side.summarise([run_row("icecast2", below_95pct=300)])]
    text = report.markdown({"when": "now", "machine": "box", "cpus": 2, "note": "shared/noisy box",
                            "side_by_side": {"channel_kbps": 2028, "seconds": 10, "rounds": 1,
                                             "summary": summary, "runs": [],
                                             "icecast_stopped_holding_at": 1000}})
    rows = [line for line in text.splitlines() if line.startswith("| retrovue") or line.startswith("| Icecast")]
    assert len(rows) == 2
    assert rows[1].split("|")[6].strip() == "300" and rows[1].rstrip(" |").endswith("**no**")
    assert "shared/noisy box" in text and "stopped holding at 1000" in text


def test_markdown_shows_the_fast_relays_memory_and_rate():
    text = report.markdown({"when": "now", "machine": "box", "cpus": 2, "relay_rss": {
        "channels": 4, "channel_kbps": 2028, "seconds": 10.0, "origin": "a 4 s .ts looped",
        "front_rss_idle_mb": 23.5, "front_rss_peak_mb": 54.4, "front_rss_end_mb": 54.4,
        "viewer_stream_seconds": [15.4, 15.9], "viewer_real_time_after_3s": [1.0, 1.01], "viewers_dropped": 0}})
    assert "## 4 relays of an origin faster than real time (a 4 s .ts looped), one viewer each, 10 s" in text
    assert "| 23.5 | 54.4 | 54.4 | 15.4 / 15.9 | 1.0 / 1.01 | 0 |" in text


def test_markdown_shows_what_one_channel_transcoding_live_costs_per_source():
    text = report.markdown({"when": "now", "machine": "box", "cpus": 2, "transcode_cpu": {
        "channel_format": "640x360 25 fps", "cores_per_channel": {
            "dvd": {"source": "DVD", "cores": 0.269, "decoder_cores": 0.097, "encoder_cores": 0.171},
            "hd": {"source": "1080p", "cores": 0.526, "decoder_cores": 0.352, "encoder_cores": 0.173}}}})
    assert "## One channel transcoding live (640x360 25 fps)" in text
    assert "| DVD | 0.269 | 0.097 | 0.171 |" in text and "| 1080p | 0.526 | 0.352 | 0.173 |" in text
