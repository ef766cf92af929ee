"""Socket activation: the listening sockets systemd passes (sd_listen_fds, spoken directly).

systemd passes LISTEN_FDS sockets as descriptors 3, 4, ... and sets LISTEN_PID to the pid
they are meant for, so that a process which merely inherited the environment (a child
that was exec'd without them) does not take them. The variables are always removed, as
sd_listen_fds(unset_environment=1) does, so no child, worker or ffmpeg inherits them.
"""

from __future__ import annotations

import os
import socket
from collections.abc import MutableMapping

SD_LISTEN_FDS_START = 3
VARIABLES = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


def listen_fds(environ: MutableMapping[str, str]) -> list[socket.socket]:
    """The sockets passed to this process, non-blocking and close-on-exec; [] if none."""
    fds = environ.get("LISTEN_FDS", "")
    pid = environ.get("LISTEN_PID", "")
    for name in VARIABLES:
        environ.pop(name, None)
    if not (fds.isdigit() and pid.isdigit()) or int(pid) != os.getpid():
        return []
    sockets = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(fds)):
        os.set_inheritable(fd, False)
        sock = socket.socket(fileno=fd)  # family, type and protocol are read from the descriptor
        sock.setblocking(False)
        sockets.append(sock)
    return sockets
