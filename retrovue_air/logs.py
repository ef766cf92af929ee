"""One log format for every process of the service: level, role, message, one line per event, on stderr.

Under systemd, stderr goes to the journal, which stamps each line with the time and reads
a leading "<N>" as the line's syslog priority. So when stderr *is* that journal stream
(JOURNAL_STREAM names its device and inode) a line is "<6>INFO    supervisor: ...", without a
timestamp of our own; a message of several lines (ffmpeg's stderr tail, a traceback) gets
the same prefix on every line, because the journal makes each line an entry of its own.
Anywhere else: "2024-01-01 12:00:00,000 INFO    supervisor: ...".
"""

from __future__ import annotations

import logging
import os
import sys

_ROLE = {"role": "supervisor"}

LINE = "%(levelname)-7s %(role)s: %(message)s"


def syslog_priority(levelno: int) -> int:
    """DEBUG 7, INFO 6, WARNING 4, ERROR 3, CRITICAL 2 (levels in between round down)."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


class _RoleFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.role = _ROLE["role"]
        return True


class JournalFormatter(logging.Formatter):
    """'<N>LEVEL role: message', and every further line of the message as '<N>LEVEL role:   line'."""

    def __init__(self) -> None:
        super().__init__(LINE)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prefix = f"<{syslog_priority(record.levelno)}>"
        first, *rest = text.splitlines() or [""]
        if not rest:
            return prefix + first
        head = f"{prefix}{record.levelname:<7} {record.role}:   "
        return "\n".join([prefix + first] + [head + line for line in rest])


def stderr_is_journal(environ=os.environ, stream=None) -> bool:
    """True when stderr is the journal stream systemd connected (JOURNAL_STREAM=device:inode).

    Comparing with stderr's own device and inode, as systemd.exec(5) advises, keeps a
    redirected stderr (a pipe, a file, a terminal under `systemd-run --pty`) in the plain format.
    """
    value = environ.get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not (sep and dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RoleFilter())
    if stderr_is_journal():
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s " + LINE))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def set_role(role: str) -> None:
    """Called first thing in a forked child, so its lines say which process wrote them."""
    _ROLE["role"] = role


class RepeatedLine:
    """A log line that can come in a flood (accept failing while out of fds): said at once,
    then at most once per `every` seconds, with how often it happened in between."""

    def __init__(self, logger: logging.Logger, level: int, every: float = 10.0):
        self.logger, self.level, self.every = logger, level, every
        self.said_at: float | None = None
        self.unsaid = 0

    def say(self, message: str, now: float | None = None) -> bool:
        """Log message unless it was said within `every` seconds; True if it was logged."""
        import time

        now = time.monotonic() if now is None else now
        if self.said_at is not None and now - self.said_at < self.every:
            self.unsaid += 1
            return False
        if self.unsaid:
            message += f" (and {self.unsaid} more times in the last {now - self.said_at:.0f} s)"
        self.logger.log(self.level, message)
        self.said_at, self.unsaid = now, 0
        return True
