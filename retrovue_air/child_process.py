"""What every process the service forks does first: take a name, die with its parent."""

from __future__ import annotations

import os
import signal
import sys

import prctl

from . import logs


def become(title: str, role: str, parent_pid: int) -> None:
    """Turn a freshly forked process into one of the service's children."""
    logs.set_role(role)
    # PDEATHSIG fires when the parent *thread* exits; the supervisor and workers are
    # single-threaded, so that is the parent process.
    prctl.set_pdeathsig(signal.SIGKILL)
    # The parent may have died between fork and prctl: then nothing will signal us.
    if os.getppid() != parent_pid:
        os._exit(1)
    prctl.set_proctitle(f"retrovue-air: {title}")
    prctl.set_name(title[:15])
    # Ctrl-C reaches the whole foreground process group; only the supervisor decides
    # what it means, and tells its children with SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def exec_guard(parent_pid: int):
    """A preexec_fn for subprocess: the exec'd program (ffmpeg) dies with its parent too."""
    def guard() -> None:
        prctl.set_pdeathsig(signal.SIGKILL)
        if os.getppid() != parent_pid:
            os._exit(1)
    return guard


def finish(code: int) -> None:
    """Leave a forked child without running the parent's atexit handlers or finalizers."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def process_exists(pid: int) -> bool:
    """Whether a process with this pid runs (as any user): signal 0 checks without sending."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
