"""The sd_notify protocol, spoken directly: readiness, status, reload, stop and watchdog.

systemd (Type=notify) passes NOTIFY_SOCKET, the address of a Unix datagram socket: a
filesystem path, or "@name" for the abstract namespace. Each notification is one
datagram of newline-separated KEY=VALUE assignments (READY=1, STATUS=..., WATCHDOG=1).
With WatchdogSec= it also passes WATCHDOG_USEC (and WATCHDOG_PID): the service must send
WATCHDOG=1 more often than that, or systemd kills and restarts it.

Only the supervisor speaks. Its children are forked, not exec'd, so NOTIFY_SOCKET stays in
their environment (and in ffmpeg's, which ignores it); it is deliberately not unset, since
unsetting it changes nothing for a forked child that already holds a Notifier. Instead a
Notifier remembers the pid that made it and is a no-op in any other process, and the unit
has NotifyAccess=main, so systemd would drop a stray child's datagram anyway.

Without NOTIFY_SOCKET (run by hand, or by the tests) every method is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("supervisor")

SEND_TIMEOUT_SECONDS = 1.0


class Notifier:
    """Notifications to the service manager; build it with Notifier.from_environ(os.environ)."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None):
        self.address = address
        self._watchdog_usec = watchdog_usec
        self._pid = os.getpid()
        self._sock: socket.socket | None = None
        self._failed = False
        self._last_ping: float | None = None
        self._target: str | None = None
        if address:
            if address.startswith("@"):
                self._target = "\0" + address[1:]
            elif address.startswith("/"):
                self._target = address
            else:
                log.warning("NOTIFY_SOCKET=%r is neither a path nor @abstract: not notifying systemd", address)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> "Notifier":
        address = environ.get("NOTIFY_SOCKET") or None
        watchdog_usec = None
        pid = environ.get("WATCHDOG_PID")
        if pid is None or (pid.isdigit() and int(pid) == os.getpid()):
            try:
                value = int(environ.get("WATCHDOG_USEC", ""))
            except ValueError:
                value = 0
            watchdog_usec = value if value > 0 else None
        return cls(address, watchdog_usec)

    # What the supervisor tells systemd

    @property
    def enabled(self) -> bool:
        return self._target is not None

    @property
    def watchdog_interval(self) -> float | None:
        """How often to send WATCHDOG=1, in seconds: half of WATCHDOG_USEC; None without a watchdog."""
        if not self.enabled or self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def ready(self, status: str | None = None) -> None:
        """Startup (or a reload) is complete: the service is serving."""
        self._send("READY=1" + (f"\nSTATUS={_one_line(status)}" if status is not None else ""))

    def reloading(self) -> None:
        """A reload has begun; send ready() when it is done (systemd >= 253 wants MONOTONIC_USEC)."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        """Shutdown has begun."""
        self._send("STOPPING=1")

    def status(self, text: str) -> None:
        """A one-line status for `systemctl status`."""
        self._send(f"STATUS={_one_line(text)}")

    def watchdog(self) -> None:
        """The loop is alive."""
        self._last_ping = time.monotonic()
        self._send("WATCHDOG=1")

    def keepalive(self, now: float | None = None) -> float | None:
        """Send WATCHDOG=1 if it is due; return the seconds until the next one is, or None.

        Meant to be called once per turn of an event loop, its result bounding the
        loop's select() timeout: the first call pings at once.
        """
        interval = self.watchdog_interval
        if interval is None or os.getpid() != self._pid:
            return None
        now = time.monotonic() if now is None else now
        if self._last_ping is None or now - self._last_ping >= interval:
            self._send("WATCHDOG=1")
            self._last_ping = now
        return max(0.0, self._last_ping + interval - now)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # The wire

    def _send(self, message: str) -> None:
        if self._target is None or os.getpid() != self._pid:
            return  # not under systemd, or a forked child: only the supervisor speaks
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # Blocking like libsystemd's sd_notify, but a wedged manager cannot wedge the loop.
                self._sock.settimeout(SEND_TIMEOUT_SECONDS)
            self._sock.sendto(message.encode(), self._target)
        except OSError as e:
            if not self._failed:
                self._failed = True
                log.warning("cannot notify systemd at %s: %s (further failures are not logged)",
                            self.address, e)


def _one_line(text: str) -> str:
    return " ".join(text.splitlines())
