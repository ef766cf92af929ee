"""Relays: an origin encodes each channel once, edges pass it on, HAProxy routes viewers by channel.

Every tier is the real service; HAProxy runs deploy/haproxy.cfg with the test's ports.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import types

import psutil
import pytest

from harness import (ROOT, HAProxy, RawViewer, Reader, cluster_demo_module, free_port, relay_config,
                     require_tool, wait_until)
from test_late_join import JOIN_BYTES, assert_clean_join

from air_worker.ffmpeg_command import build_command, cold_burst_seconds
from air_worker.worker import RELAY_UP_SECONDS, AirWorker
from retrovue_air import config
from retrovue_air.config import Channel, Config, ConfigError, Relay
from retrovue_air.ffmpeg.binary import ffmpeg_binary, ffmpeg_options

VIEWERS_PER_CHANNEL = 10


# The pure parts: config, loops, the command line, the outage rule, HAProxy's config

def load(tmp_path, text: str) -> Config:
    path = tmp_path / "edge.toml"
    path.write_text(textwrap.dedent(text))
    return config.load(str(path))


def load_error(tmp_path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, text)
    return e.value


def relay_channel(channel_id: str, url: str) -> str:
    return f'\n[[channel]]\nid = "{channel_id}"\nname = "R"\nsource = "relay"\nurl = "{url}"\n'


def test_a_relay_channel_is_its_url_and_follows_no_redirect_unless_told():
    c = config.parse('[[channel]]\nid = "1"\nname = "R"\nsource = "relay"\nurl = "http://origin:8000/channels/1.ts"\n',
                     "edge.toml")
    assert c.channels[0].source == Relay("http://origin:8000/channels/1.ts")
    assert c.channels[0].source.line == 5 and not c.channels[0].source.follow_redirects
    told = config.parse('[[channel]]\nid = "1"\nname = "R"\nsource = "relay"\nurl = "http://o/1.ts"\n'
                        'follow_redirects = true\n', "edge.toml")
    assert told.channels[0].source.follow_redirects


@pytest.mark.parametrize("body, key, words", [
    ('source = "relay"', "url", "needs url"),
    ('source = "relay"\nurl = "ftp://origin/1.ts"', "url", "expected http://"),
    ('source = "relay"\nurl = "http://origin:port/1.ts"', "url", "not a URL"),
    ('source = "relay"\nurl = 7', "url", "must be str"),
    ('source = "relay"\nurl = "http://o/1.ts"\nwidth = 640', "width", "the origin encodes"),
    ('source = "relay"\nurl = "http://o/1.ts"\ntranscode = false', "transcode", "the origin encodes"),
    ('source = "test-pattern"\nurl = "http://o/1.ts"', "url", "only for source = \"relay\""),
    ('source = "test-pattern"\nremux = true', "remux", "only for source = \"relay\""),
    ('source = "relay"\nurl = "http://o/1.ts"\nremux = "yes"', "remux", "must be bool"),
    ('source = "relay"\nurl = "http://o/1.ts"\nfollow_redirects = 1', "follow_redirects", "must be bool"),
    ('source = "files"\nfile = "/x.ts"\nfollow_redirects = true', "follow_redirects", "only for source = \"relay\""),
])
def test_a_bad_relay_names_file_line_and_key(tmp_path, body, key, words):
    e = load_error(tmp_path, f'[[channel]]\nid = "1"\nname = "R"\n{body}\n')
    assert e.key == key and words in e.message
    lines = f'[[channel]]\nid = "1"\nname = "R"\n{body}'.splitlines()
    # The key's own line; a missing key is reported at its channel's [[channel]].
    assert e.line == next((n for n, line in enumerate(lines, 1) if line.startswith(f"{key} =")), 1)


@pytest.mark.parametrize("listen, url", [
    ("127.0.0.1:8000", "http://127.0.0.1:8000/channels/1.ts"),
    ("127.0.0.1:8000", "http://localhost:8000/channels/1.ts"),
    ("0.0.0.0:8000", "http://127.0.0.1:8000/channels/1.ts"),
    ("localhost:8000", "http://[::1]:8000/channels/1.ts?x=1"),
    ("127.0.0.1:80", "http://127.0.0.1/auto/v1"),
    ("10.1.2.3:8000", "http://10.1.2.3:8000/channels/1.ts"),
])
def test_a_relay_of_itself_is_a_loop(tmp_path, listen, url):
    e = load_error(tmp_path, f'listen = "{listen}"\n' + relay_channel("1", url))
    assert (e.key, e.line) == ("url", 7) and "relay loop" in e.message
    assert str(e).startswith(f"{tmp_path / 'edge.toml'}:7: url: relay loop")


def test_relays_that_lead_back_to_each_other_are_a_loop_and_each_is_named(tmp_path):
    e = load_error(tmp_path, 'listen = "127.0.0.1:8000"\n'
                   + relay_channel("a", "http://127.0.0.1:8000/channels/b.ts")
                   + relay_channel("b", "http://localhost:8000/channels/a.ts"))
    assert [(x.line, x.key) for x in [e, *e.others]] == [(7, "url"), (13, "url")]
    assert "(a -> b -> a)" in e.message


def test_a_relay_of_its_own_tuner_url_by_guide_number_is_a_loop(tmp_path):
    e = load_error(tmp_path, 'listen = "127.0.0.1:8000"\n' + relay_channel("news", "http://127.0.0.1:8000/auto/v4.1")
                   + 'number = "4.1"\n')
    assert (e.key, e.line) == ("url", 7) and "leads back to channel 'news'" in e.message


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8001/channels/1.ts",  # another instance on this machine
    "http://origin:8000/channels/1.ts",  # another machine
    "http://127.0.0.1:8000/channels/2.ts",  # this instance's own encoded channel 2: a chain, no loop
])
def test_a_relay_of_another_instance_or_channel_is_no_loop(tmp_path, url):
    c = load(tmp_path, 'listen = "127.0.0.1:8000"\n' + relay_channel("1", url)
             + '\n[[channel]]\nid = "2"\nname = "T"\nsource = "test-pattern"\n')
    assert c.channels[0].source.url == url


def test_check_config_and_listen_refuse_a_relay_loop(tmp_path):
    path = tmp_path / "edge.toml"
    path.write_text(relay_channel("1", "http://127.0.0.1:8123/channels/1.ts"))
    ok = subprocess.run([sys.executable, "-m", "supervisor", "--check-config", str(path)], cwd=ROOT,
                        capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr  # the file listens on 8000 by default
    # The same file served on the port it pulls from would pull from itself.
    looped = subprocess.run([sys.executable, "-m", "supervisor", "--config", str(path), "--listen",
                             "127.0.0.1:8123"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert looped.returncode == 2
    assert f"{path}:6: url: relay loop" in looped.stderr


def test_a_reload_that_would_make_a_relay_loop_is_refused(service_factory, tmp_path):
    edge = service_factory(config_text=relay_config("http://127.0.0.1:1", channel_ids=("1",)))
    path = tmp_path / "retrovue-air-0.toml"  # the factory's first config file
    path.write_text(relay_config(edge.base, channel_ids=("1",)))  # served on edge.port by --listen
    mark = edge.log_mark()
    edge.proc.send_signal(signal.SIGHUP)
    edge.wait_for_log(r"SIGHUP: configuration refused, keeping the running one: .*:8: url: relay loop", start=mark)


def test_a_relay_passes_the_bytes_on_with_http_pull_at_most_its_joiners_burst_ahead():
    cmd = build_command(Channel("1", "R", Relay("http://origin:8000/channels/1.ts")), "ffmpeg")
    # The origin's joiner burst (join_burst_seconds from a keyframe, a GOP of at most 2 s more)
    # is this channel's cold start: it passes at once, and then the stream goes at its own rate.
    assert cmd == [sys.executable, "-m", "air_worker.http_pull", "--ahead", "8", "http://origin:8000/channels/1.ts"]
    live = build_command(Channel("1", "R", Relay("http://origin:8000/channels/1.ts"), join="live"), "ffmpeg")
    assert live[live.index("--ahead") + 1] == "2"


def test_a_remuxed_relay_copies_without_re_encoding_at_the_streams_rate_after_the_joiners_burst():
    relay = Channel("1", "R", Relay("http://origin:8000/channels/1.ts", remux=True))
    binary = ffmpeg_binary(cold_burst=cold_burst_seconds(relay) > 0)
    cmd = build_command(relay, binary)
    assert cmd[cmd.index("-i") + 1] == "http://origin:8000/channels/1.ts"
    assert cmd[cmd.index("-c") + 1] == "copy" and "libx264" not in cmd
    assert cmd[cmd.index("-readrate") + 1] == "1" and cmd[cmd.index("-readrate_initial_burst") + 1] == "8"
    if "-readrate_catchup" in ffmpeg_options(binary):
        assert cmd[cmd.index("-readrate_catchup") + 1] == "10"  # a stalled pull catches up at once
    assert cmd.index("-readrate") < cmd.index("-i")
    assert cmd[cmd.index("-reconnect") + 1] == "1" and "-rw_timeout" in cmd
    assert cmd[cmd.index("-muxpreload") + 1] == "0" and cmd[-1] == "pipe:1"
    assert cmd[cmd.index("-max_redirects") + 1] == "0"  # ffmpeg follows 8 by default
    told = build_command(Channel("1", "R", Relay("http://o/1.ts", remux=True, follow_redirects=True)), "ffmpeg")
    assert told[told.index("-max_redirects") + 1] == "5"


def test_a_pulled_relay_keeps_its_url_off_the_command_line_when_given_a_file_for_it():
    relay = Channel("1", "R", Relay("http://u:pw@o/1.ts?token=t", follow_redirects=True))
    cmd = build_command(relay, "ffmpeg", url_file="/dev/fd/7")
    assert cmd[-4:] == ["8", "--follow-redirects", "--url-from", "/dev/fd/7"]
    assert not [arg for arg in cmd if "pw" in arg or "token" in arg]


def test_a_relay_keeps_retrying_through_an_outage_up_to_the_restart_window():
    cfg = Config(path="x", restart_window_seconds=60, restart_limit=2)
    worker = AirWorker(Channel("1", "R", Relay("http://o/1.ts")), cfg, 1, None)
    worker.started_at = 0.0
    assert not worker.relay_gives_up(RELAY_UP_SECONDS + 100)  # it was streaming: the outage begins
    outage = worker.outage_since
    for t in range(1, 60, 3):  # each reconnect fails at once; restart_limit does not apply
        worker.started_at = outage + t - 0.01
        assert not worker.relay_gives_up(outage + t)
    worker.started_at = outage + 60.5
    assert worker.relay_gives_up(outage + 61)
    worker.started_at = outage + 62  # a later ffmpeg streamed long enough: a new outage
    assert not worker.relay_gives_up(outage + 62 + RELAY_UP_SECONDS)


def test_haproxy_accepts_the_shipped_config_and_the_rendered_one(tmp_path):
    haproxy = require_tool("haproxy")
    shipped = ROOT / "deploy" / "haproxy.cfg"
    rendered = tmp_path / "h.cfg"
    rendered.write_text(cluster_demo_module().haproxy_config(
        shipped.read_text(), "127.0.0.1:1", [("a", "127.0.0.1:2"), ("b", "127.0.0.1:3"), ("c", "127.0.0.1:4")],
        str(tmp_path / "s.sock")))
    for path in (shipped, rendered):
        check = subprocess.run([haproxy, "-c", "-f", str(path)], capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
    text = rendered.read_text()
    assert "server c 127.0.0.1:4" in text and "10.0.0.11" not in text
    assert "balance uri path-only" in text and "hash-type consistent" in text


# The tree, for real

@pytest.fixture
def haproxy_factory(tmp_path):
    started: list[HAProxy] = []

    def start(edges) -> HAProxy:
        proxy = HAProxy(tmp_path, edges)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


def carriers(edges, channel_id: str) -> list:
    return [e for e in edges if e.channels()[channel_id]["viewers"]]


def test_many_viewers_through_haproxy_cost_the_origin_one_pull_per_channel_per_edge(service_factory,
                                                                                     haproxy_factory):
    ffmpeg = require_tool("ffmpeg")
    origin = service_factory()
    edges = [service_factory(config_text=relay_config(origin.base)) for _ in range(2)]
    proxy = haproxy_factory(edges)
    baseline = [s.fd_counts() for s in (origin, *edges)]
    readers = [Reader(proxy, channel) for channel in ("1", "2") for _ in range(VIEWERS_PER_CHANNEL)]
    for r in readers:
        r.start()
    wait_until(lambda: all(r.count > 64 * 1024 for r in readers), 30, "every viewer receiving the stream")

    on_origin = origin.channels()
    for channel_id in ("1", "2"):
        carrying = carriers(edges, channel_id)
        # HAProxy sends all of a channel's viewers to one edge, and that edge pulls it once.
        assert len(carrying) == 1, f"channel {channel_id} is on {len(carrying)} edges"
        assert carrying[0].channels()[channel_id]["viewers"] == VIEWERS_PER_CHANNEL
        assert on_origin[channel_id]["viewers"] == len(carrying) == 1
        pull = psutil.Process(carrying[0].channels()[channel_id]["ffmpeg_pid"])
        assert "air_worker.http_pull" in pull.cmdline() and not carrying[0].ffmpegs()  # no encoding
    assert len(origin.ffmpegs()) == 2  # one encoder per channel for the whole tree

    for channel_id in ("1", "2"):  # a late joiner through HAProxy and an edge starts clean
        joiner = RawViewer(proxy, channel_id)
        assert_clean_join(joiner.read_body(JOIN_BYTES), ffmpeg)
        joiner.close()

    for r in readers:
        r.finish()
    for edge in edges:
        edge.wait_idle(timeout=10)
    origin.wait_idle(timeout=10)  # the edges' pulls were its only viewers
    for service, fds in zip((origin, *edges), baseline):
        try:
            wait_until(lambda: service.fd_counts() == fds, 5, f"fds of :{service.port} back to {fds}")
        except AssertionError:
            for pid in (service.supervisor.pid, service.front.pid):
                print("fds of pid", pid, sorted(os.readlink(f"/proc/{pid}/fd/{f}") for f in os.listdir(f"/proc/{pid}/fd")))
            print("baseline", fds, "now", service.fd_counts())
            raise
    assert all(r.count > 64 * 1024 for r in readers)


def test_a_killed_edge_sends_new_viewers_to_the_other_edge(service_factory, haproxy_factory):
    origin = service_factory()
    edges = [service_factory(config_text=relay_config(origin.base)) for _ in range(2)]
    proxy = haproxy_factory(edges)
    first = RawViewer(proxy, "1")
    first.read_body(32 * 1024)
    [doomed] = carriers(edges, "1")
    [survivor] = [e for e in edges if e is not doomed]
    doomed_name = next(n for n, e in proxy.names.items() if e is doomed)

    os.kill(doomed.supervisor.pid, signal.SIGKILL)
    wait_until(lambda: doomed_name not in proxy.up_servers(), 20, "HAProxy marking the killed edge down")
    first.sock.settimeout(10)
    while first.sock.recv(65536):  # its viewer was cut with it
        pass
    first.close()

    second = Reader(proxy, "1")
    second.start()
    wait_until(lambda: second.count > 32 * 1024, 20, "a new viewer streaming from the other edge")
    assert survivor.channels()["1"]["viewers"] == 1
    # The dead edge's pull died with it (PDEATHSIG): the origin serves only the survivor.
    wait_until(lambda: origin.channels()["1"]["viewers"] == 1, 10, "the origin left with one pull")
    second.finish()
    survivor.wait_idle(timeout=10)
    origin.wait_idle(timeout=10)


def test_an_origin_restart_is_survived_by_the_edges_viewers(service_factory):
    origin = service_factory()
    edge = service_factory(config_text=relay_config(origin.base, extra_top="restart_backoff_seconds = 0.2"))
    viewer = Reader(edge, "1")
    viewer.viewer.sock.settimeout(120)  # a player waits out the outage, longer than RawViewer's 15 s
    viewer.start()
    wait_until(lambda: viewer.count > 32 * 1024, 20, "the edge's viewer streaming")
    edge_worker = edge.channels()["1"]["worker_pid"]

    mark = edge.log_mark()
    assert origin.stop() == 0
    # Longer than ffmpeg's own reconnects: the worker takes over, the viewer still waits.
    edge.wait_for_log(r"channel 1: the relay pull exited .*Connection refused; reconnecting to", 30, start=mark)
    restarted = service_factory(port=origin.port)
    wait_until(lambda: restarted.channels()["1"]["viewers"] == 1, 30, "the edge pulling from the new origin")
    before = viewer.count
    wait_until(lambda: viewer.count > before + 64 * 1024, 20, "the edge's viewer getting bytes again")
    assert viewer.is_alive(), "the edge's viewer was disconnected"
    info = edge.channels()["1"]
    assert info["state"] == "live" and info["worker_pid"] == edge_worker  # the same pull, reconnected
    edge.wait_for_log(r"channel 1: ffmpeg was restarted; its viewers continue", start=mark)
    assert not [line for line in edge.lines[mark:] if re.search(r"; giving up|closing \d+ viewers", line)]

    joiner = RawViewer(edge, "1")  # and the stream after the restart is clean for a joiner
    assert_clean_join(joiner.read_body(JOIN_BYTES), require_tool("ffmpeg"))
    joiner.close()
    viewer.finish()
    edge.wait_idle(timeout=10)
    restarted.wait_idle(timeout=10)


def test_a_remuxing_relay_gives_late_joiners_a_clean_start_too(service_factory):
    ffmpeg = require_tool("ffmpeg")
    origin = service_factory()
    edge = service_factory(config_text=relay_config(origin.base, channel_ids=("1",)) + "remux = true\n")
    keeper = Reader(edge, "1")
    keeper.start()
    wait_until(lambda: keeper.count > 64 * 1024, 20, "the remuxed relay streaming")
    assert edge.ffmpegs() and origin.channels()["1"]["viewers"] == 1
    joiner = RawViewer(edge, "1")
    assert_clean_join(joiner.read_body(JOIN_BYTES), ffmpeg)
    joiner.close()
    keeper.finish()
    edge.wait_idle(timeout=10)
    origin.wait_idle(timeout=10)


def test_a_relay_whose_origin_is_down_answers_503_with_the_reason(service_factory):
    dead = free_port()
    edge = service_factory(config_text=relay_config(f"http://127.0.0.1:{dead}"))
    viewer = RawViewer(edge, "1")
    head = viewer.read_head()
    assert head.startswith(b"HTTP/1.1 503")
    viewer.sock.settimeout(10)
    body = viewer.body + b"".join(iter(lambda: viewer.sock.recv(65536), b""))
    assert b"Connection refused" in body
    viewer.close()
    edge.wait_idle()


def test_cluster_demo_starts_the_tree_and_stops_it_all_on_ctrl_c(tmp_path):
    require_tool("haproxy")
    ports = [free_port() for _ in range(4)]
    demo = subprocess.Popen([sys.executable, "deploy/cluster_demo.py", "--port", str(ports[0]), "--origin-port",
                             str(ports[1]), "--edge-ports", f"{ports[2]},{ports[3]}"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert "ready" in demo.stdout.readline()
        tree = psutil.Process(demo.pid).children(recursive=True)
        [haproxy] = [p for p in tree if p.name() == "haproxy"]
        workdir = os.path.dirname(haproxy.cmdline()[-1])  # haproxy -db -f WORKDIR/haproxy.cfg
        viewer = RawViewer(types.SimpleNamespace(port=ports[0]), "2")
        assert viewer.read_body(32 * 1024)[0] == 0x47
        viewer.close()
        tree = psutil.Process(demo.pid).children(recursive=True)
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=30) == 0
        assert "stopping" in demo.stdout.read()
        wait_until(lambda: not [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], 10,
                   "every process of the demo gone")
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        demo.stdout.close()
    assert "retrovue-air-cluster-" in workdir and not os.path.exists(workdir)
