"""A file's attributes as its filesystem's server (or FUSE daemon) has them now, not as this
machine's attribute cache remembers them: ``statx`` with ``AT_STATX_FORCE_SYNC``.

An NFS client answers ``stat`` from its cache for up to ``acregmax`` seconds, and a FUSE
mount for its ``attr_timeout``: a file a poll saw being written may keep its old size there
after its writer, on another machine, has finished. Where the job that wrote it has ended,
the job-end scan asks for the file as it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from typing import NamedTuple

__all__ = ["Fresh", "fresh_stat"]

_AT_FDCWD = -100
_AT_STATX_FORCE_SYNC = 0x2000
_STATX_BASIC_STATS = 0x7FF
_LAYOUT = struct.Struct("=IIQIIIHxxQQQQ16x16xqI4xqI4xIIII")  # struct statx up to stx_dev_minor


class Fresh(NamedTuple):
    mode: int
    ino: int
    dev: int
    size: int
    mtime_ns: int
    ctime: float


def _statx() -> object | None:
    if not hasattr(os, "makedev"):
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        fn = ctypes.CDLL(name, use_errno=True).statx
    except (OSError, AttributeError):
        return None  # no statx in this C library
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]
    fn.restype = ctypes.c_int
    return fn


_STATX = _statx()


def fresh_stat(path: str) -> Fresh:
    """``path``'s attributes, fetched from the filesystem itself where the kernel can (a plain
    ``stat`` elsewhere). Raises ``OSError`` as ``os.stat`` does."""
    if _STATX is not None:
        buf = ctypes.create_string_buffer(256)
        rc = _STATX(  # type: ignore[operator]
            _AT_FDCWD, os.fsencode(path), _AT_STATX_FORCE_SYNC, _STATX_BASIC_STATS, buf
        )
        if rc == 0:
            f = _LAYOUT.unpack_from(buf.raw)
            mode, ino, size = f[6], f[7], f[8]
            ctime_s, ctime_ns, mtime_s, mtime_ns = f[11], f[12], f[13], f[14]
            dev = os.makedev(f[17], f[18])
            return Fresh(mode, ino, dev, size, mtime_s * 10**9 + mtime_ns, ctime_s + ctime_ns / 1e9)
        err = ctypes.get_errno()
        if err not in (38, 95):  # ENOSYS, EOPNOTSUPP: ask stat instead
            raise OSError(err, os.strerror(err), path)
    st = os.stat(path)
    return Fresh(st.st_mode, st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime)
