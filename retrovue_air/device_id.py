"""The HDHomeRun device id the tuner emulation answers with: 8 hex digits, stable across restarts.

libhdhomerun (hdhomerun_discover_validate_device_id) ignores a device whose id fails its
checksum, and Plex and Jellyfin remember a tuner by its id, so an id is either configured
(and checked here) or made once, with a valid checksum, and kept in the state directory.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import secrets
import socket
import zlib

log = logging.getLogger("device_id")

FORMAT = re.compile(r"[0-9A-Fa-f]{8}\Z")
FILE_NAME = "hdhomerun-device-id"
# libhdhomerun's table: the odd nibbles go through it, the even ones are XORed as they are.
_LOOKUP = (0xA, 0x5, 0xF, 0x6, 0x7, 0xC, 0x1, 0xB, 0x9, 0x2, 0x8, 0xD, 0x4, 0x3, 0xE, 0x0)


def _checksum(value: int) -> int:
    total = 0
    for shift in (28, 20, 12, 4):
        total ^= _LOOKUP[(value >> shift) & 0xF] ^ (value >> (shift - 4)) & 0xF
    return total


def is_valid(device_id: str) -> bool:
    return bool(FORMAT.match(device_id)) and _checksum(int(device_id, 16)) == 0


def with_checksum(first_seven: int) -> str:
    """The device id whose first seven hex digits are these, with the last one that makes it valid."""
    value = (first_seven & 0x0FFFFFFF) << 4
    return f"{value | _checksum(value):08X}"


def make() -> str:
    # Never FFFFFFFF or 00000000 (the wildcard and "none" in the discovery protocol).
    while True:
        device_id = with_checksum(secrets.randbits(28))
        if device_id not in ("FFFFFFFF", "00000000"):
            return device_id


@functools.lru_cache(maxsize=4)
def load_or_create(state_dir: str) -> str:
    """The id kept in state_dir, made and saved there the first time.

    A state directory that cannot be written (a read-only home, no StateDirectory= under
    systemd) must not take the tuner down: the id is then derived from the host name,
    stable though not unique, and the log says so.

    Remembered per state_dir for the life of the process, so that a discovery packet or a
    tuner page costs no file read and no log line: a front forgets it (cache_clear) on reload.
    """
    path = os.path.join(state_dir, FILE_NAME)
    try:
        with open(path) as f:
            saved = f.read().strip()
        if is_valid(saved):
            return saved.upper()
        log.warning("%s: %r is not a valid HDHomeRun device id; making a new one", path, saved)
    except FileNotFoundError:
        pass
    except OSError as e:
        log.warning("cannot read %s: %s", path, e.strerror)
    device_id = make()
    try:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(device_id + "\n")
        os.replace(tmp, path)  # two fronts racing both write a valid id; the last one stays
    except OSError as e:
        device_id = with_checksum(zlib.crc32(socket.gethostname().encode()))
        log.warning("cannot keep the HDHomeRun device id in %s (%s): using %s, derived from the host name",
                    state_dir, e.strerror, device_id)
    return device_id
