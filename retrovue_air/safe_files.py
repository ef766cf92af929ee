"""Opening files that someone else may control: never follow a planted link, never block, never read without end.

The front reads files that live in folders other local users may be able to write (a shared
cache, a logo folder). A FIFO planted there would block the one loop every viewer depends on; a
symlink would turn a read or a write of ours into one of a file the planter chose; a device or a
huge file would make one request cost without bound. So: O_NOFOLLOW, O_NONBLOCK, a regular file
checked on the descriptor itself (not the name, which can change between a stat and an open),
and a cap on what is read. Writers create their files new (O_EXCL), so a name planted before
them fails instead of being written through.
"""

from __future__ import annotations

import os
import stat
import tempfile

READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafeFile(OSError):
    """The path is not a regular file we may read (a FIFO, a link, a device), or it is over the cap."""


def read_regular(path: str, max_bytes: int) -> bytes:
    """The whole of the regular file at path, at most max_bytes; UnsafeFile (an OSError) for anything else.

    Raises UnsafeFile when path is a symlink, a FIFO, a socket, a device or a directory, or holds
    more than max_bytes; other OSErrors (missing, unreadable) as open() raises them."""
    try:
        fd = os.open(path, READ_FLAGS)
    except OSError as e:
        if e.errno == 40:  # ELOOP: O_NOFOLLOW met a symlink
            raise UnsafeFile(e.errno, "is a symbolic link", path) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(0, "is not a regular file", path)
        if st.st_size > max_bytes:
            raise UnsafeFile(0, f"is larger than {max_bytes} bytes", path)
        chunks, left = [], max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > max_bytes:  # grew since the fstat
            raise UnsafeFile(0, f"is larger than {max_bytes} bytes", path)
        return data
    finally:
        os.close(fd)


def create_new(path: str, mode: int = 0o644) -> int:
    """A descriptor for writing a file that did not exist: FileExistsError if anything (a link too) is there."""
    return os.open(path, CREATE_FLAGS, mode)


def create_temporary(directory: str, name: str, tag: str) -> tuple[int, str]:
    """A new file for writing, `.{name}.{tag}.XXXXXXXX.part` in directory: (descriptor, path).

    Its random part makes it a name nobody could have planted a link at beforehand, and
    mkstemp opens it O_EXCL | O_NOFOLLOW (mode 0600) to make sure. `tag` says whose it is,
    so that its maker can tell its own leftovers from anyone else's (temporary_of)."""
    if "." in tag or "/" in tag:
        raise ValueError(f"a temporary's tag has no dot or slash: {tag!r}")
    return tempfile.mkstemp(dir=directory, prefix=f".{name}.{tag}.", suffix=".part")


def temporary_of(name: str) -> tuple[str, str] | None:
    """(the name it is for, its tag) of a name create_temporary made, else None."""
    if not (name.startswith(".") and name.endswith(".part")):
        return None
    parts = name[1:-len(".part")].rsplit(".", 2)
    if len(parts) != 3 or not all(parts):
        return None
    return parts[0], parts[1]


def replace_whole(path: str, data: bytes, tag: str) -> None:
    """Make data the content of path at once: written to a new temporary beside it, renamed over it.

    rename() replaces whatever is at path, a planted link included, and never writes through
    it; a reader sees the old file or the new one, never half of one."""
    fd, tmp = create_temporary(os.path.dirname(path) or ".", os.path.basename(path), tag)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def private_directory_problem(path: str, uid: int) -> str | None:
    """What lets someone other than uid (and root) change what is in directory path, or None.

    Decided as ssh decides for a key: the directory must be owned by uid or root and writable by
    neither its group nor others; each directory above it owned by uid or root and writable by
    others only with the sticky bit (as /tmp is: then nobody can rename away what is not theirs);
    each symbolic link on the way owned by uid or root. A directory not made yet is judged by the
    one it will be made in. The answer names the directory, its mode, and the command that fixes it.
    """
    given = os.path.abspath(path)
    real = os.path.realpath(given)
    itself = real if _lstat(real) is not None else None
    seen: set[str] = set()
    # The directory itself first (the usual mistake), then what is above it, nearest first.
    for candidate in [itself, *_parents(real), *_parents(given), given]:
        if candidate is None or candidate in seen:
            continue
        seen.add(candidate)
        try:
            st = _lstat(candidate)
        except OSError as e:
            return f"cannot check {candidate}: {e.strerror}"
        if st is None:
            continue
        if stat.S_ISLNK(st.st_mode):
            if st.st_uid not in (uid, 0):
                return (f"{candidate} is a symbolic link owned by {_user(st.st_uid)}, who can point it anywhere: "
                        f"name the directory it leads to instead, or `chown -h {_user(uid)} {candidate}`")
            continue
        if not stat.S_ISDIR(st.st_mode):
            return f"{candidate} is not a directory"
        if st.st_uid not in (uid, 0):
            return (f"{candidate} is owned by {_user(st.st_uid)}, not {_user(uid)}: whoever owns it decides "
                    f"what is in it; fix it with `chown {_user(uid)} {candidate}`")
        loose = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if not loose:
            continue
        who = "others" if st.st_mode & stat.S_IWOTH else "its group"
        mode = stat.S_IMODE(st.st_mode)
        if candidate == itself:
            return (f"{candidate} is writable by {who} (mode {mode:04o}): whoever can write it decides what "
                    f"the channels play; fix it with `chmod go-w {candidate}`")
        if not st.st_mode & stat.S_ISVTX:
            return (f"{candidate}, above {real}, is writable by {who} (mode {mode:04o}) without the sticky bit: "
                    f"they can put a directory of their own in its place; fix it with `chmod go-w {candidate}`")
    return None


def _parents(path: str) -> list[str]:
    out = []
    while (parent := os.path.dirname(path)) != path:
        out.append(parent)
        path = parent
    return out


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _user(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
