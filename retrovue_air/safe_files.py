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
