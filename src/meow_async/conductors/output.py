"""Output limits: a job's ``stdout.txt`` and ``stderr.txt`` keep their head and their tail.

The files are the job's own descriptors 1 and 2, so no byte passes through the runner. While
the job runs, each file is looked at now and then (after a second, then as often as its growth
needs); once it is past ``max_output``, the part between the head and the tail is punched out
(``fallocate(PUNCH_HOLE)``: freed on disk while the job writes on at its offset). When the job
has ended the file is compacted: head, one line saying how much was cut, tail.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import os
import time
from pathlib import Path
from typing import Any

from ..model.jobs import STDERR_FILE, STDOUT_FILE

__all__ = ["OutputWatch", "compact", "punch"]

logger = logging.getLogger("meow_async.conductors")

STREAMS = (STDOUT_FILE, STDERR_FILE)

#: Seconds before a running job's output is first looked at, and at most between looks.
_FIRST = 0.1
_EVERY_MAX = 1.0
_EVERY_MIN = 0.05
#: Bytes around the cut points searched for a line end, so the head and tail are whole lines.
_ALIGN = 4096
#: Bytes over the limit a file may end with uncut (about the length of the line saying so).
_SLACK = 256
_CHUNK = 1 << 20

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02


def _halves(limit: int) -> tuple[int, int]:
    head = limit // 2
    return head, limit - head


# -- while the job runs ---------------------------------------------------------------------------


class OutputWatch:
    """Keeps a running job's output files near ``limit`` bytes each, from the event loop: a
    timer per job, a ``stat`` per file per look, a thread hop only to punch."""

    def __init__(self, job_dir: Path, limit: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.paths = [str(job_dir / name) for name in STREAMS]
        self.limit = limit
        self.seen = {p: (0, time.monotonic()) for p in self.paths}
        self.cannot = False  # the file system has no hole punching: compacted at the end only
        self.punching: asyncio.Future[bool] | None = None
        self.handle: asyncio.TimerHandle | None = self.loop.call_later(_FIRST, self._look)

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None

    async def stopped(self) -> None:
        """No more looks, and no punch under way (the job has ended: its end cuts it)."""
        self.stop()
        if self.punching is not None:
            with contextlib.suppress(OSError):
                await asyncio.shield(self.punching)

    def _look(self) -> None:
        now = time.monotonic()
        wait = _EVERY_MAX
        head, tail = _halves(self.limit)
        for path in self.paths:
            try:
                size = os.stat(path).st_size
            except OSError:
                continue
            was, then = self.seen[path]
            self.seen[path] = (size, now)
            rate = (size - was) / max(now - then, 1e-3)
            if size > self.limit + _SLACK and not self.cannot and self.punching is None:
                self.punching = self.loop.run_in_executor(None, punch, path, head, size - tail)
                self.punching.add_done_callback(self._punched)
            if rate > 0:  # look again before it can have grown by half the limit
                room = self.limit - size if size < self.limit else self.limit / 2
                wait = min(wait, max(_EVERY_MIN, room / rate / 2))
        self.handle = self.loop.call_later(wait, self._look)

    def _punched(self, fut: asyncio.Future[bool]) -> None:
        self.punching = None
        try:
            done = fut.result()
        except OSError as e:
            logger.warning("could not free the middle of a job's output (%s)", e.strerror or e)
            done = False
        if not done:
            self.cannot = True


def punch(path: str, start: int, end: int) -> bool:
    """Free ``[start, end)`` of the file (it reads as zeros until compacted); False where the
    file system cannot."""
    if end <= start:
        return True
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
        if _fallocate(fd, mode, start, end - start) != 0:
            err = ctypes.get_errno()
            if err in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                return False
            raise OSError(err, os.strerror(err), path)
    finally:
        os.close(fd)
    return True


def _load_fallocate() -> Any:
    try:
        f = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    f.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    f.restype = ctypes.c_int
    return f


_fallocate_fn = _load_fallocate()


def _fallocate(fd: int, mode: int, offset: int, length: int) -> int:
    if _fallocate_fn is None:
        ctypes.set_errno(errno.ENOSYS)
        return -1
    return int(_fallocate_fn(fd, mode, offset, length))


# -- once it has ended ----------------------------------------------------------------------------


def compact(job_dir: Path, limit: int) -> dict[str, dict[str, int]]:
    """Cut each output file longer than ``limit`` to its head, a line saying so, and its tail
    (both at line ends where there is one near). What was cut, by file, for ``job.json``."""
    out: dict[str, dict[str, int]] = {}
    for name in STREAMS:
        with contextlib.suppress(FileNotFoundError):
            cut = _compact(job_dir / name, limit)
            if cut is not None:
                out[name] = cut
    return out


def _compact(path: Path, limit: int) -> dict[str, int] | None:
    size = path.stat().st_size
    head, tail = _halves(limit)
    if size <= limit + _SLACK:
        return None  # cutting would save less than the line saying so
    with open(path, "r+b") as f:
        f.seek(head - min(_ALIGN, head))
        before = f.read(min(_ALIGN, head))
        end = before.rfind(b"\n")
        if end >= 0:
            head = head - len(before) + end + 1
        lead = "" if end >= 0 or head == 0 else "\n"  # the marker is a line of its own
        start = size - tail
        f.seek(start)
        after = f.read(min(_ALIGN, tail))
        nl = after.find(b"\n")
        if 0 <= nl < len(after) - 1:
            start += nl + 1
        cut = start - head
        marker = (
            f"{lead}[meow_async: {cut} bytes cut here; max_output keeps the first and the "
            f"last {limit // 2} bytes]\n"
        ).encode()
        f.seek(head)
        f.write(marker)
        dst = head + len(marker)
        src = start
        while src < size:  # forwards: dst stays below src, so nothing unread is overwritten
            f.seek(src)
            data = f.read(min(_CHUNK, size - src))
            f.seek(dst)
            f.write(data)
            src += len(data)
            dst += len(data)
        f.truncate(dst)
    return {"size": size, "kept_head": head, "kept_tail": size - start, "cut": cut}
