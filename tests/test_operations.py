"""Running it like a service: systemd's notify protocol and watchdog, and SIGHUP reloads."""

from __future__ import annotations

import signal
import socket

from harness import RawViewer, assert_aligned_ts, wait_until


def notifications(sock: socket.socket, until: str, limit: int = 200) -> list[str]:
    """Datagrams from the service, up to and including the first containing `until`."""
    got = []
    for _ in range(limit):
        got.append(sock.recv(4096).decode())
        if until in got[-1]:
            return got
    raise AssertionError(f"no {until} in {got}")


def test_the_service_speaks_sd_notify_in_order_and_pings_the_watchdog_while_healthy(service_factory, tmp_path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(tmp_path / "notify"))
        notify.settimeout(20)
        service = service_factory(env={"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "1000000"})
        first = notifications(notify, "READY=1")
        assert "READY=1" in first[-1] and "STATUS=serving 2 channels" in first[-1]
        assert not any("WATCHDOG=1" in m for m in first[:-1]), "watchdog pinged before the front answered"
        notifications(notify, "WATCHDOG=1")
        notifications(notify, "WATCHDOG=1")

        # A front that stops answering stops the watchdog pings: systemd would restart us.
        mark = service.log_mark()
        service.front.suspend()
        service.wait_for_log(r"http_front has not answered", start=mark)
        service.front.resume()
        notifications(notify, "WATCHDOG=1")

        service.proc.send_signal(signal.SIGHUP)
        reload = notifications(notify, "READY=1")
        assert any(m.startswith("RELOADING=1\nMONOTONIC_USEC=") for m in reload)
        assert service.stop() == 0
        assert any("STOPPING=1" in m for m in notifications(notify, "STOPPING=1"))


def test_sighup_adds_removes_and_keeps_channels_without_a_gap(service_factory, tmp_path):
    service = service_factory()
    config = tmp_path / "retrovue-air.toml"
    keeper, leaver = RawViewer(service, "1"), RawViewer(service, "2")
    keeper.read_body(16 * 1024)
    leaver.read_body(8 * 1024)
    old_ffmpeg = service.channels()["1"]["ffmpeg_pid"]
    text = config.read_text()
    removed = text[: text.index('[[channel]]\nid = "2"')]
    config.write_text(removed + '[[channel]]\nid = "3"\nname = "Three"\nsource = "test-pattern"\n'
                      'video_kbps = 400\nwidth = 320\nheight = 180\n')
    mark = service.log_mark()
    service.proc.send_signal(signal.SIGHUP)
    service.wait_for_log(r"configuration reloaded", start=mark)
    service.wait_for_log(r"channel 2: removed", start=mark)
    leaver.sock.settimeout(10)
    while leaver.sock.recv(65536):  # the removed channel's viewers are closed
        pass
    keeper.read_body(len(keeper.body) + 64 * 1024)  # the unchanged channel goes on
    assert_aligned_ts(bytes(keeper.body))
    wait_until(lambda: set(service.channels()) == {"1", "3"}, 5, "channels 1 and 3")
    assert service.channels()["1"]["ffmpeg_pid"] == old_ffmpeg, "the unchanged channel was restarted"
    new = RawViewer(service, "3")
    assert_aligned_ts(new.read_body(8 * 1024))
    for v in (keeper, leaver, new):
        v.close()

    config.write_text("this is [ not toml")
    mark = service.log_mark()
    service.proc.send_signal(signal.SIGHUP)
    service.wait_for_log(r"SIGHUP: configuration refused, keeping the running one: .*retrovue-air.toml:1", start=mark)
    assert set(service.channels()) == {"1", "3"}
    service.wait_idle()
