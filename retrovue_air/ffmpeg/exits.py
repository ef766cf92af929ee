"""How the service tells of a child's exit: in the same words whichever process saw it (the
supervisor's log, a worker's 503, the ingester's report), so that one search finds them all."""

from __future__ import annotations

import os
import signal

# ffmpeg's last words are in its last lines; its whole stderr can be megabytes of one warning.
TAIL_BYTES = 2000


def exit_wording(returncode: int) -> str:
    """A Popen returncode (minus the signal when killed) as "killed by SIGKILL" or "exited with status 1"."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:  # a real-time signal has no name of its own
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


def wait_status_wording(status: int) -> str:
    """The same words for a status from os.waitpid."""
    return exit_wording(os.waitstatus_to_exitcode(status))


def exit_reason(who: str, returncode: int, last_lines: list[str]) -> str:
    """`ffmpeg exited with status 1: <its last line>`: what a viewer's 503 and the log say."""
    return f"{who} {exit_wording(returncode)}: {last_lines[-1] if last_lines else 'no error output'}"


def stderr_tail(fd: int) -> list[str]:
    """The last lines of an exited process's stderr, kept in a memfd (read where it ends, not moved)."""
    size = os.fstat(fd).st_size
    return os.pread(fd, TAIL_BYTES, max(0, size - TAIL_BYTES)).decode(errors="replace").strip().splitlines()
