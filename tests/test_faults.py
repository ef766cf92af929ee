"""Faults: every failure is contained, reported, and leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess

import psutil
import requests

from harness import RawViewer, assert_aligned_ts, wait_until, zombies_under



def receive_more(viewer: RawViewer, n: int) -> bytes:
    return viewer.read_body(len(viewer.body) + n)


def test_a_killed_ffmpeg_is_restarted_and_its_viewers_stay_connected(service_factory):
    service = service_factory(extra_top="restart_backoff_seconds = 0.1")
    viewer = RawViewer(service)
    receive_more(viewer, 32 * 1024)
    old = service.channels()["1"]
    mark = service.log_mark()
    os.kill(old["ffmpeg_pid"], signal.SIGKILL)
    service.wait_for_log(r"channel 1: ffmpeg killed by SIGKILL.*restarting it", start=mark)
    service.wait_for_log(r"channel 1: ffmpeg was restarted; its viewers continue", start=mark)
    receive_more(viewer, 64 * 1024)  # still streaming, same connection
    assert_aligned_ts(bytes(viewer.body))  # the half packet a killed ffmpeg leaves is dropped
    new = service.channels()["1"]
    assert new["worker_pid"] == old["worker_pid"] and new["ffmpeg_pid"] != old["ffmpeg_pid"]
    assert psutil.Process(new["ffmpeg_pid"]).ppid() == new["worker_pid"]
    assert not zombies_under(service.supervisor)
    viewer.close()
    service.wait_idle()


def test_too_many_restarts_fail_the_channel_with_the_reason_and_refuse_viewers(service_factory):
    service = service_factory(extra_top="restart_backoff_seconds = 0.05\nrestart_limit = 2\nfailed_retry_seconds = 60")
    viewer = RawViewer(service)
    receive_more(viewer, 16 * 1024)
    for _ in range(3):
        pid = service.channels()["1"]["ffmpeg_pid"]
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: service.channels()["1"]["ffmpeg_pid"] != pid, 10, "ffmpeg replaced or channel failed")
    viewer.sock.settimeout(10)
    while viewer.sock.recv(65536):  # its viewers are closed
        pass
    info = service.channels()["1"]
    assert info["state"] == "failed"
    assert "killed by SIGKILL" in info["error"] and "2 restarts" in info["error"]
    assert "stderr_tail" in info
    refused = requests.get(service.url("/channels/1.ts"), timeout=10)
    assert refused.status_code == 503 and "Retry-After" in refused.headers
    assert "killed by SIGKILL" in refused.text
    service.wait_idle()
    other = RawViewer(service, "2")  # other channels are unharmed
    assert_aligned_ts(other.read_body(8 * 1024))
    other.close()


def test_a_killed_air_worker_takes_its_ffmpeg_and_viewers_get_the_next_stream(service):
    viewer = RawViewer(service)
    receive_more(viewer, 16 * 1024)
    old = service.channels()["1"]
    worker, ffmpeg = psutil.Process(old["worker_pid"]), psutil.Process(old["ffmpeg_pid"])
    os.kill(worker.pid, signal.SIGKILL)
    wait_until(lambda: not psutil.pid_exists(worker.pid) and not psutil.pid_exists(ffmpeg.pid), 5,
               "worker and its ffmpeg gone and reaped")
    receive_more(viewer, 64 * 1024)  # the same connection, fed by a new stream
    assert_aligned_ts(bytes(viewer.body))
    new = service.channels()["1"]
    assert new["state"] == "live" and new["worker_pid"] not in (None, worker.pid)
    assert not zombies_under(service.supervisor)
    viewer.close()
    service.wait_idle()


def test_a_killed_front_is_restarted_on_the_same_port_and_workers_stop(service):
    viewer = RawViewer(service)
    receive_more(viewer, 16 * 1024)
    family = [psutil.Process(service.channels()["1"][k]) for k in ("worker_pid", "ffmpeg_pid")]
    mark = service.log_mark()
    old_front = service.front
    old_front.kill()
    viewer.sock.settimeout(10)
    while viewer.sock.recv(65536):  # its viewers lose the connection...
        pass
    new_pid = int(service.wait_for_log(r"started http_front pid (\d+)", start=mark).group(1))
    assert new_pid != old_front.pid
    service.front = psutil.Process(new_pid)
    wait_until(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in family), 5,
               "the old streams' worker and ffmpeg stopped")
    again = RawViewer(service)  # ...and reconnect to the same port
    assert_aligned_ts(again.read_body(16 * 1024))
    again.close()
    assert not zombies_under(service.supervisor)
    service.wait_idle()


def test_after_sigkill_of_the_supervisor_the_port_is_free_for_a_restart(service_factory):
    service = service_factory()
    viewer = RawViewer(service)
    receive_more(viewer, 8 * 1024)
    family = service.descendants()
    service.proc.kill()
    wait_until(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in family), 2,
               "every process of the service gone")
    viewer.close()
    again = service_factory(port=service.port)
    assert requests.get(again.url("/healthz"), timeout=5).status_code == 200


def test_sigterm_closes_viewers_reaps_everything_and_exits_zero(service):
    viewers = [RawViewer(service, c) for c in "12"]
    for v in viewers:
        receive_more(v, 8 * 1024)
    family = service.descendants()
    assert service.stop() == 0
    assert not [p for p in family if psutil.pid_exists(p.pid)]
    for v in viewers:
        v.sock.settimeout(5)
        while v.sock.recv(65536):
            pass
        v.close()


def test_an_ffmpeg_that_never_writes_times_out_with_503_and_is_cleaned_up(service_factory, tmp_path):
    fake = tmp_path / "bin" / "ffmpeg"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n# an encoder that hangs before its first byte\nexec sleep 600\n")
    fake.chmod(0o755)
    service = service_factory(env={"PATH": f"{fake.parent}:{os.environ['PATH']}"},
                              extra_top="start_timeout_seconds = 1")
    sup_fds, front_fds = service.fd_counts()
    response = requests.get(service.url("/channels/1.ts"), timeout=15)
    assert response.status_code == 503 and "no stream within 1 s" in response.text
    service.wait_idle()
    assert service.channels()["1"]["state"] == "failed"
    assert not [p for p in service.descendants() if "sleep" in p.name()]
    wait_until(lambda: service.fd_counts() == (sup_fds, front_fds), 3, "fds back to baseline")


def test_started_as_root_with_a_user_it_runs_every_process_as_that_user(service_factory):
    if os.geteuid() != 0:
        import pytest
        pytest.skip("needs root")
    service = service_factory(extra_top='user = "nobody"')
    viewer = RawViewer(service)
    receive_more(viewer, 8 * 1024)
    nobody = int(subprocess.run(["id", "-u", "nobody"], capture_output=True, text=True).stdout)
    processes = [service.supervisor] + service.descendants()
    assert len(processes) == 4
    assert {p.uids().effective for p in processes} == {nobody}
    worker = psutil.Process(service.channels()["1"]["worker_pid"])
    with open(f"/proc/{worker.pid}/status") as f:
        assert "NoNewPrivs:\t1" in f.read()
    viewer.close()
    service.wait_idle()
