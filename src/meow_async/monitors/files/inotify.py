"""Linux inotify, read on the event loop: the kernel's own words for when a file is complete.

watchfiles' Python API does not pass on ``IN_CLOSE_WRITE``, rename cookies or
``IN_Q_OVERFLOW``, and it needs a thread that wakes every few ms. This is the few system
calls the file monitor needs, through ctypes, with a non-blocking descriptor the loop reads
when the kernel says there is something to read.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import sys
from typing import NamedTuple

__all__ = ["Inotify", "Record", "available"]

# <sys/inotify.h>
IN_CLOSE_WRITE = 0x0000_0008
IN_MOVED_FROM = 0x0000_0040
IN_MOVED_TO = 0x0000_0080
IN_CREATE = 0x0000_0100
IN_DELETE = 0x0000_0200
IN_DELETE_SELF = 0x0000_0400
IN_MOVE_SELF = 0x0000_0800
IN_UNMOUNT = 0x0000_2000
IN_Q_OVERFLOW = 0x0000_4000
IN_IGNORED = 0x0000_8000
IN_ONLYDIR = 0x0100_0000
IN_DONT_FOLLOW = 0x0200_0000
IN_EXCL_UNLINK = 0x0400_0000
IN_ISDIR = 0x4000_0000

#: What a watched folder reports: a writer closed a file, names came or went, and (for the
#: watched folder itself) that it went away. Not IN_MODIFY: every write() would be a record.
FOLDER_MASK = (
    IN_CLOSE_WRITE
    | IN_CREATE
    | IN_DELETE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
    | IN_DONT_FOLLOW
    | IN_EXCL_UNLINK
)

_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (struct inotify_event)
_READ_SIZE = 64 * 1024


class Record(NamedTuple):
    wd: int
    mask: int
    cookie: int
    name: str


class _Libc:
    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.init1 = libc.inotify_init1
        self.init1.argtypes = [ctypes.c_int]
        self.init1.restype = ctypes.c_int
        self.add_watch = libc.inotify_add_watch
        self.add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self.add_watch.restype = ctypes.c_int
        self.rm_watch = libc.inotify_rm_watch
        self.rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
        self.rm_watch.restype = ctypes.c_int


_libc: _Libc | None = None


def available() -> bool:
    """Whether this platform has inotify (Linux with a libc that exports it)."""
    global _libc  # loaded once, on first use
    if _libc is None and sys.platform.startswith("linux"):
        try:
            _libc = _Libc()
        except (OSError, AttributeError):
            return False
    return _libc is not None


class Inotify:
    """One inotify instance: a non-blocking, close-on-exec descriptor and its watches."""

    def __init__(self) -> None:
        if not available():
            raise OSError(errno.ENOSYS, "inotify is not available on this platform")
        assert _libc is not None  # noqa: S101 - available() loaded it
        self._libc = _libc
        fd = _libc.init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self.fd = fd

    def add_watch(self, path: str, mask: int = FOLDER_MASK) -> int:
        """Watch a folder; the same folder (inode) watched twice keeps one descriptor."""
        wd: int = self._libc.add_watch(self.fd, os.fsencode(path), mask)
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
        return wd

    def rm_watch(self, wd: int) -> None:
        self._libc.rm_watch(self.fd, wd)  # fails only for a watch already gone: fine

    def read(self, limit: int = 4) -> tuple[list[Record], bool]:
        """The records the kernel has for us now (at most ``limit`` reads), and whether that
        was all of them."""
        out: list[Record] = []
        for _ in range(limit):
            try:
                data = os.read(self.fd, _READ_SIZE)
            except BlockingIOError:
                return out, True
            out.extend(_parse(data))
        return out, False

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _parse(data: bytes) -> list[Record]:
    out: list[Record] = []
    at, end, size = 0, len(data), _HEADER.size
    unpack = _HEADER.unpack_from
    while at < end:
        wd, mask, cookie, length = unpack(data, at)
        at += size
        name = os.fsdecode(data[at : at + length].rstrip(b"\0")) if length else ""
        at += length
        out.append(Record(wd, mask, cookie, name))
    return out
