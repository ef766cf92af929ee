"""Which instance of the service this is: a name two instances sharing a cache directory never share.

Two services may share one cache (an entry is the same for the same file and format) while each
has its own state directory and configuration. What each keeps there for itself alone (its ingest
progress, its temporaries) carries this name. A random id is made once per state directory and
kept there, so that two machines or containers with the same paths are still two; it is mixed
with the configuration's path, so that two configurations served from one state directory are
two instances too. Neither a pid nor a start time is in it: a restarted service is the same one.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import secrets

from retrovue_air import safe_files

log = logging.getLogger("instance")

ID_FILE = "instance-id"
ID = re.compile(rb"[0-9a-f]{32}\n?\Z")


@functools.lru_cache(maxsize=16)
def name(state_dir: str, config_path: str) -> str:
    """16 hex digits, the same for this state directory and configuration file every time."""
    key = f"{state_id(state_dir)}\0{os.path.realpath(config_path)}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def state_id(state_dir: str) -> str:
    """The id kept in state_dir, made there the first time.

    A state directory that cannot be written (or holds something else at the name) must not stop
    ingest: the id is then derived from the directory's path, stable though not unique across
    machines, and the log says so."""
    path = os.path.join(state_dir, ID_FILE)
    for _ in range(2):
        try:
            data = safe_files.read_regular(path, 64)
            if ID.match(data):
                return data.decode().strip()
            raise safe_files.UnsafeFile(0, "does not hold an instance id", path)
        except FileNotFoundError:
            pass
        except OSError as e:
            return _fallback(state_dir, f"{path} {e.strerror or e}")
        try:
            _create(path)
        except FileExistsError:
            continue  # another process of ours made it first: read theirs
        except OSError as e:
            return _fallback(state_dir, f"cannot make {path}: {e.strerror}")
    return _fallback(state_dir, f"{path} keeps changing")


def _create(path: str) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = safe_files.create_temporary(directory, ID_FILE, str(os.getpid()))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_hex(16).encode() + b"\n")
        os.link(tmp, path)  # unlike rename, fails if a racing process made one first
    finally:
        os.unlink(tmp)


def _fallback(state_dir: str, why: str) -> str:
    derived = hashlib.sha256(os.path.realpath(state_dir).encode()).hexdigest()[:32]
    log.warning("%s: naming this instance by its state directory's path instead", why)
    return derived
