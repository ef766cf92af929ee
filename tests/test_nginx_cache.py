"""deploy/nginx-hls.conf on Debian's nginx: many HLS viewers through it, each segment fetched
from the origin at most once; when they leave, the cache stops asking and the channel stops."""

from __future__ import annotations

import collections
import os
import subprocess
import threading
import time

import requests

from harness import ROOT, free_port, require_tool, wait_until
from test_hls import parse_playlist

IDLE = 3.0
VIEWERS = 20
WATCH_SECONDS = 8.0


def nginx_config(tmp, origin_port: int, port: int) -> str:
    """The shipped http-context file, pointed at the test's origin, port and directories."""
    shipped = (ROOT / "deploy" / "nginx-hls.conf").read_text()
    site = (shipped.replace("server 127.0.0.1:8000;", f"server 127.0.0.1:{origin_port};")
            .replace("listen 8080;", f"listen 127.0.0.1:{port};")
            .replace("/var/cache/nginx/retrovue-air", str(tmp / "cache"))
            .replace("/var/log/nginx/retrovue-air-origin.log", str(tmp / "origin.log")))
    assert str(origin_port) in site and str(port) in site
    temp = "".join(f"{kind}_temp_path {tmp / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    # Workers as root: the test's directories are not nobody's.
    user = "user root;\n" if os.getuid() == 0 else ""
    return (f"{user}daemon off;\npid {tmp / 'nginx.pid'};\nerror_log {tmp / 'error.log'} warn;\n"
            f"worker_processes 1;\nevents {{ worker_connections 512; }}\n"
            f"http {{\naccess_log off;\n{temp}{site}\n}}\n")


def watch(base: str, seen: dict, errors: list, stop: threading.Event) -> None:
    """One player: the playlist about twice a target duration, and every segment it lists, once."""
    with requests.Session() as session:
        got = set()
        while not stop.is_set():
            try:
                playlist = parse_playlist(session.get(f"{base}/channels/1.m3u8", timeout=15).text)
                for segment in playlist["segments"]:
                    if segment["uri"] not in got:
                        r = session.get(f"{base}/channels/{segment['uri']}", timeout=15)
                        if r.status_code != 200:
                            errors.append((segment["uri"], r.status_code))
                        got.add(segment["uri"])
                        seen[segment["uri"]] += 1
            except Exception as e:  # a viewer that fails is the test's failure, not a thread's traceback
                errors.append(repr(e))
                return
            time.sleep(0.5)


def test_twenty_viewers_through_nginx_fetch_each_segment_from_the_origin_at_most_once(service_factory, tmp_path):
    nginx = require_tool("nginx")
    service = service_factory(extra_top=f"hls_idle_seconds = {IDLE}")
    port = free_port()
    (tmp_path / "nginx.conf").write_text(nginx_config(tmp_path, service.port, port))
    proc = subprocess.Popen([nginx, "-c", str(tmp_path / "nginx.conf"), "-e", str(tmp_path / "error.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: _answers(base), 10, "nginx answering")
        seen: collections.Counter = collections.Counter()
        errors: list = []
        stop = threading.Event()
        players = [threading.Thread(target=watch, args=(base, seen, errors, stop)) for _ in range(VIEWERS)]
        for p in players:
            p.start()
        time.sleep(WATCH_SECONDS)
        stop.set()
        for p in players:
            p.join(30)
        left = time.monotonic()
        assert not errors, errors[:5]
        origin = collections.Counter(line.split()[1] for line in (tmp_path / "origin.log").read_text().splitlines())
        segments = {uri: n for uri, n in origin.items() if uri.endswith(".ts")}
        playlists = sum(n for uri, n in origin.items() if uri.endswith(".m3u8"))
        print(f"{len(seen)} segments, {sum(seen.values())} viewer fetches; from the origin: "
              f"{sum(segments.values())} segment fetches (most for one: {max(segments.values())}), {playlists} playlists")
        assert len(seen) >= 6 and all(n == VIEWERS for n in list(seen.values())[:-2])
        assert set(segments) <= {f"/channels/{uri}" for uri in seen}
        assert max(segments.values()) == 1, [u for u, n in segments.items() if n > 1]
        assert playlists <= WATCH_SECONDS + 2  # one a second of validity, of the viewers' forty
        assert service.channels()["1"]["viewers"] <= 1, "all of them are one lease at the origin"
        # Viewers gone: the cache stops asking, and the channel stops (one second of playlist validity).
        wait_until(lambda: service.channels()["1"]["state"] == "idle", IDLE + 1 + 1 - (time.monotonic() - left),
                   "the channel stopped within hls_idle_seconds + the playlist's validity + 1 s")
        print(f"channel idle {time.monotonic() - left:.2f} s after the last viewer left")
    finally:
        proc.terminate()
        proc.wait(10)


def _answers(base: str) -> bool:
    try:
        return requests.get(f"{base}/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False
