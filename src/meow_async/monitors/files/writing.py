"""Is anyone writing this file? Asked of the kernel, not guessed from sizes or times.

A read lease (``fcntl(F_SETLEASE, F_RDLCK)``) is refused with EAGAIN exactly when the file is
open for writing anywhere on the machine. The probe takes one and gives it back at once, so
a writer opening the file in those microseconds waits that long and no more (we set no
F_SETOWN, so no signal is sent). Leases need Linux, a local filesystem and the file's owner
(or CAP_LEASE): where the kernel cannot say, the answer is ``None``, and the caller decides.
"""

from __future__ import annotations

import errno
import fcntl
import os

__all__ = ["being_written"]

_F_SETLEASE = getattr(fcntl, "F_SETLEASE", None)


def being_written(path: str) -> bool | None:
    """True if some process has ``path`` open for writing, False if none, None if unknown."""
    if _F_SETLEASE is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_RDLCK)
    except OSError as e:
        return True if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK) else None
    else:
        fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_UNLCK)
        return False
    finally:
        os.close(fd)
