"""How the service's processes set themselves up: the user they run as, and what every one
it forks does first (take a name, die with its parent)."""

from __future__ import annotations

import logging
import os
import signal
import sys

import prctl

from . import logs

log = logging.getLogger("child_process")


def drop_privileges(user: str) -> None:
    """Become `user` for good: the port is bound, and nothing after this needs root."""
    import pwd

    if os.geteuid() != 0:
        log.warning("not root: cannot switch to user %r; running as uid %d", user, os.geteuid())
        return
    entry = pwd.getpwnam(user)
    # The user's supplementary groups come along: media often sits behind a group.
    os.initgroups(entry.pw_name, entry.pw_gid)
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    log.info("running as user %s (uid %d)", user, entry.pw_uid)


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
