"""The Linux watcher: inotify read on the event loop, one change per complete write.

A file is handed on when its writer closes it (``IN_CLOSE_WRITE``) or when a finished file is
renamed or linked into place, never at an intermediate size. Renames pair by the kernel's
cookie, not by inode. A kernel queue overflow is reported by the kernel (``IN_Q_OVERFLOW``) and
answered with a rescan of what changed since the queue was last read empty. No thread waits:
the loop reads the descriptor when the kernel says it is readable; only walks of new folders
take a thread hop.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from ...exceptions import MonitorError
from ...model.patterns import Change, FilePattern
from .changes import FileChange, Seen, state_of
from .inotify import (
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_DELETE_SELF,
    IN_IGNORED,
    IN_ISDIR,
    IN_MOVE_SELF,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_Q_OVERFLOW,
    Inotify,
    Record,
)
from .writing import being_written

__all__ = ["InotifyWatch"]

logger = logging.getLogger("meow_async.monitors.files")

#: Seconds an ``IN_MOVED_FROM`` waits for its ``IN_MOVED_TO``. The kernel queues both halves
#: inside the one rename call, so the second is at most a read away; a lone first half is a
#: move out of the watched folder.
PAIR_WAIT = 0.05
#: Seconds subtracted from the last moment the queue was read empty when an overflow makes
#: us look again (the kernel's file clock can lag time.time() by a tick).
_CLOCK_SLACK = 1.0
#: Records read but not yet translated, at most; then they are dropped and a rescan made, as
#: the kernel does past fs.inotify.max_queued_events (16384 by default).
_BUFFERED = 65536
#: Seconds between two warnings about overflows (each says how many there were).
_WARN_EVERY = 60.0
#: A file held because the probe found it open for writing is probed again this long after,
#: then after twice as long each time, until it has been held ``_REPROBE_FOR`` seconds (12
#: probes); after that only its writer's close hands it on. The kernel queues a writer's
#: ``IN_CLOSE_WRITE`` before it stops counting that writer (``__fput`` notifies before the
#: filesystem's release and ``put_write_access``), so a probe right after the close can still
#: see it, and no record would come again; a writer through another name (a hard link
#: outside the watched folder) closes with no record here at all.
_REPROBE_FIRST = 0.01
_REPROBE_FOR = 60.0


@dataclass(slots=True, eq=False)
class _Open:
    """A file someone is writing: what its close will be reported as."""

    change: Change | None  # None: decided at the close (created or modified)
    src: str | None
    ctime: float
    path: str = ""  # where it is now (kept up to date by moves)
    #: Held because a probe said so: when (monotonic), when it is probed next (None: no more,
    #: its close decides), and the wait after that.
    held: float | None = None
    due: float | None = None
    wait: float = _REPROBE_FIRST


class InotifyWatch:
    """``base_dir``'s folders on one inotify descriptor, turned into complete-file changes."""

    def __init__(self, monitor: Seen) -> None:
        self._m = monitor
        self._ino = Inotify()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._folders: dict[int, str] = {}  # watch descriptor -> folder path
        self._open: dict[str, _Open] = {}  # made or changed, waiting for the writer's close
        self._probing: set[_Open] = set()  # held by a probe, to be probed again (due set)
        self._moves: dict[int, tuple[str, bool, float]] = {}  # cookie -> (src, is_dir, deadline)
        self._records: deque[Record] = deque()  # read, not yet translated
        self._dropping = False  # past _BUFFERED: dropped until the rescan marker is taken
        self._readable = asyncio.Event()
        self._stopped = False
        self._synced_at = 0.0  # when the kernel's queue was last read empty, nothing dropped
        self._overflows = 0
        self._warned = -_WARN_EVERY

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Watch every folder; once this returns, no complete write is missed."""
        try:
            self._adopt(await asyncio.to_thread(self._watch_tree, self._m.base))
        except BaseException:
            self._ino.close()
            raise
        self._synced_at = time.time()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._ino.fd, self._on_readable)

    def stop(self) -> None:
        self._stopped = True
        self._readable.set()

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self._ino.fd)
        self._ino.close()

    def held_since(self) -> float | None:
        """The oldest file (its ctime) that a rule wants and whose writer has not closed it."""
        rules = [r.pattern for r in self._m.rules() if isinstance(r.pattern, FilePattern)]
        cut = len(self._m.base) + 1
        return min(
            (o.ctime for p, o in self._open.items() if any(f.matches(p[cut:]) for f in rules)),
            default=None,
        )

    def still_open(self, found: list[tuple[str, float]]) -> list[FileChange]:
        """Files a scan found open for writing: wait for their close (asked again here, on the
        loop, so a close between the scan and now is not missed)."""
        found_now = (
            self._complete(path, Change.created, None, ctime=ctime, why="found by a scan")
            for path, ctime in found
        )
        return [c for c in found_now if c is not None]

    # -- reading -------------------------------------------------------------------------------

    async def changes(self) -> list[FileChange] | None:
        """The next changes, in the order the kernel reported them; None once stopped."""
        while not self._stopped:
            out: list[FileChange] = []
            if self._records:
                records, self._records = self._records, deque()
                out = await self._translate(records)
            now = time.monotonic()
            out.extend(self._moved_out(now))
            out.extend(self._probed_again(now))
            if out:
                return out
            if self._records or self._stopped:  # either may have come while translating
                continue
            timeout = None
            deadlines = [d for _, _, d in self._moves.values()]
            deadlines += [o.due for o in self._probing if o.due is not None]
            if deadlines:
                timeout = max(0.0, min(deadlines) - time.monotonic())
            self._readable.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._readable.wait()
            except TimeoutError:
                pass
        return None

    def _on_readable(self) -> None:
        """Read what the kernel has, whenever it has something, even while the monitor waits
        for room on a full event queue: a reader left pending would make a level-triggered
        loop spin, and removing and re-adding it races uvloop's deferred handle close.

        After a kernel overflow, or past ``_BUFFERED`` unread records, what comes is dropped
        until the monitor takes the one rescan marker queued for it: a single rescan covers
        every drop until then."""
        while True:
            records, drained = self._ino.read()
            for r in records:
                if self._dropping:
                    break
                if r.mask & IN_Q_OVERFLOW or len(self._records) >= _BUFFERED:
                    self._dropping = True
                    self._records.append(Record(-1, IN_Q_OVERFLOW, 0, ""))
                else:
                    self._records.append(r)
            if drained:
                if not self._dropping:
                    self._synced_at = time.time()
                break
        self._readable.set()

    async def _translate(self, records: deque[Record]) -> list[FileChange]:
        out: list[FileChange] = []
        for r in records:
            m = r.mask
            if m & IN_Q_OVERFLOW:
                since = self._synced_at - _CLOCK_SLACK  # every record before it was read
                self._dropping = False  # what comes from now on is kept again
                out.extend(await self._rescan(since))
                continue
            folder = self._folders.get(r.wd)
            if folder is None:
                continue  # a watch already dropped
            if m & IN_IGNORED:
                self._drop(r.wd)
                continue
            if m & (IN_DELETE_SELF | IN_MOVE_SELF):
                if folder == self._m.base:
                    logger.error(
                        "the watched folder %s was removed or moved away: no file events "
                        "until it is back and the runner is restarted",
                        folder,
                    )
                continue
            path = os.path.join(folder, r.name)
            if not self._m.filter(path):
                continue
            c: FileChange | None = None
            is_dir = bool(m & IN_ISDIR)
            if m & IN_CLOSE_WRITE:
                c = self._closed(path)
            elif m & IN_CREATE:
                if is_dir:
                    out.extend(await self._new_folder(path))
                else:
                    c = self._created(path)
            elif m & IN_MOVED_FROM:
                self._moves[r.cookie] = (path, is_dir, time.monotonic() + PAIR_WAIT)
            elif m & IN_MOVED_TO:
                src = self._moves.pop(r.cookie, (None, False, 0.0))[0]
                if is_dir:
                    if src is None:
                        out.extend(await self._new_folder(path))
                    else:
                        out.extend(await self._folder_moved(src, path))
                else:
                    c = self._moved_in(path, src)
            elif m & IN_DELETE and not is_dir:
                c = self._deleted(path)
            if c is not None:
                out.append(c)
        return out

    # -- files ---------------------------------------------------------------------------------

    def _created(self, path: str) -> FileChange | None:
        try:
            st = os.lstat(path)
        except OSError:
            return None  # gone already: its deletion follows
        if stat.S_ISLNK(st.st_mode) or (stat.S_ISREG(st.st_mode) and st.st_nlink > 1):
            # A link to a file is made in one step; its writer, if any, is elsewhere.
            return self._complete(path, Change.created, None, probe=False)
        if stat.S_ISREG(st.st_mode):
            self._open[path] = _Open(Change.created, None, st.st_ctime, path)
        return None

    def _closed(self, path: str) -> FileChange | None:
        was = self._open.pop(path, None)
        if was is None:
            return self._complete(path, None, None, why="closed")
        return self._complete(path, was.change, was.src, ctime=was.ctime, why="closed")

    def _moved_in(self, path: str, src: str | None) -> FileChange | None:
        if src is None:  # from outside the folder
            return self._complete(path, Change.created, None, why="moved in")
        self._m.forget(src)
        was = self._open.pop(src, None)
        # Renamed before its writer closed it: the close decides. Unless it was held only
        # by a probe and no one writes it now: it was complete before the rename.
        if was is not None and (was.held is None or being_written(path)):
            was.path = path
            self._open[path] = was
            return None
        return self._complete(path, Change.moved, src, why="moved here")

    def _deleted(self, path: str) -> FileChange | None:
        was = self._open.pop(path, None)
        seen = self._m.forget(path)
        if was is not None and was.change is Change.created and seen is None:
            return None  # made and removed before it was ever complete
        return FileChange(Change.deleted, path)

    def _complete(
        self,
        path: str,
        change: Change | None,
        src: str | None,
        *,
        probe: bool = True,
        ctime: float | None = None,
        why: str = "",
    ) -> FileChange | None:
        """The file at ``path`` as one change, if no one is still writing it and it is not
        exactly as it was when it last triggered (``why``: what made us look, for the log)."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        if probe:
            if being_written(path):
                # Another writer still has it open (or the one that renamed it here): its
                # close is the moment. Keep the earliest ctime: the watermark must not pass it.
                # Probed again meanwhile, in case that writer was already gone (see
                # _REPROBE_FIRST).
                now = time.monotonic()
                held = _Open(change, src, min(st.st_ctime, ctime or st.st_ctime), path, now)
                held.due = now + held.wait
                self._open[path] = held
                self._probing.add(held)
                logger.debug(
                    "holding %s (%s): open for writing when %s; probed again in %.2f s, "
                    "or handed on at its writer's close",
                    path,
                    (change or "created or modified") if src is None else f"{change} from {src}",
                    why,
                    held.wait,
                )
                return None
            try:  # its writer may have closed it between the stat and the probe
                st = os.stat(path)
            except OSError:
                return None
        state = state_of(st)
        before = self._m.seen(path)
        if before == state:
            return None
        if change is None:  # a writer opened an existing path, wrote and closed
            replaced = before is not None and (before.ino, before.dev) != (st.st_ino, st.st_dev)
            change = Change.created if replaced else Change.modified
        self._m.remember(path, state)
        return FileChange(change, path, src, state, st.st_ctime)

    def _probed_again(self, now: float) -> list[FileChange]:
        """Files held by a probe whose next probe is due: handed on if no one writes them now.
        Costs follow the files held, never the files seen."""
        out: list[FileChange] = []
        for held in [o for o in self._probing if o.due is not None and o.due <= now]:
            if self._open.get(held.path) is not held:  # closed, deleted or moved out since
                self._probing.discard(held)
                continue
            if being_written(held.path):
                held.wait *= 2
                if held.held is not None and now + held.wait - held.held <= _REPROBE_FOR:
                    held.due = now + held.wait
                else:
                    held.due = None
                    self._probing.discard(held)
                    logger.debug(
                        "%s: still open for writing after %.0f s held; handed on at its "
                        "writer's close only",
                        held.path,
                        now - (held.held or now),
                    )
                continue
            self._probing.discard(held)
            del self._open[held.path]
            logger.debug(
                "%s: no writer any more %.3f s after it was held: handed on",
                held.path,
                now - (held.held or now),
            )
            # Not probed again: no one wrote it just now, and its state is read after that.
            c = self._complete(held.path, held.change, held.src, probe=False)
            if c is not None:
                out.append(c)
        return out

    def _moved_out(self, now: float) -> list[FileChange]:
        """Renames whose second half never came: the source left the watched folder."""
        out: list[FileChange] = []
        for cookie, (path, is_dir, deadline) in list(self._moves.items()):
            if deadline > now:
                continue
            del self._moves[cookie]
            if is_dir:
                for wd, folder in list(self._folders.items()):
                    if folder == path or folder.startswith(path + os.sep):
                        self._ino.rm_watch(wd)
                        self._drop(wd)
                self._open = {
                    p: o for p, o in self._open.items() if not p.startswith(path + os.sep)
                }
                out.extend(FileChange(Change.deleted, p) for p in self._m.forget_below(path))
            elif (c := self._deleted(path)) is not None:
                out.append(c)
        return out

    # -- folders -------------------------------------------------------------------------------

    async def _new_folder(self, path: str) -> list[FileChange]:
        """A folder made or moved in: watch it, then hand on the files already in it (made
        before its watch existed); those still being written wait for their close."""
        added, found, still = await asyncio.to_thread(self._watch_and_scan, path, None)
        self._adopt(added)
        return found + self.still_open(still)

    async def _folder_moved(self, src: str, dst: str) -> list[FileChange]:
        """A folder renamed inside the watched one: its watches follow it (they are on the
        inode); every file below it is ``moved``."""
        for wd, folder in list(self._folders.items()):
            if folder == src or folder.startswith(src + os.sep):
                self._folders[wd] = dst + folder[len(src) :]
        for p in [p for p in self._open if p.startswith(src + os.sep)]:
            held = self._open[dst + p[len(src) :]] = self._open.pop(p)
            held.path = dst + p[len(src) :]
        moved = await asyncio.to_thread(self._m.forget_below, src)
        added, found, still = await asyncio.to_thread(self._watch_and_scan, dst, None)
        self._adopt(added)
        out = []
        for c in found + self.still_open(still):
            old = src + c.path[len(dst) :]
            if old in moved:
                c = c._replace(change=Change.moved, src=old)
            out.append(c)
        return out

    async def _rescan(self, since: float) -> list[FileChange]:
        """The kernel's queue overflowed and changes were lost: look again at every file
        changed since the queue was last read empty, and at every file remembered."""
        self._overflows += 1
        now = time.monotonic()
        if now - self._warned >= _WARN_EVERY:
            self._warned = now
            logger.warning(
                "file events were dropped (%d inotify queue overflow(s) so far; raise "
                "fs.inotify.max_queued_events): looking again at %s",
                self._overflows,
                self._m.base,
            )
        added, found, still = await asyncio.to_thread(self._watch_and_scan, self._m.base, since)
        self._adopt(added)
        gone = await asyncio.to_thread(self._m.forget_missing)
        return found + self.still_open(still) + [FileChange(Change.deleted, p) for p in gone]

    def _adopt(self, added: list[tuple[int, str]]) -> None:
        self._folders.update(added)

    def _drop(self, wd: int) -> None:
        self._folders.pop(wd, None)

    # -- in a worker thread --------------------------------------------------------------------

    def _watch_and_scan(
        self, top: str, since: float | None
    ) -> tuple[list[tuple[int, str]], list[FileChange], list[tuple[str, float]]]:
        added = self._watch_tree(top)
        still: list[tuple[str, float]] = []
        found = self._m.scan(top, changed_since=since, still_open=still)
        return added, found, still

    def _watch_tree(self, top: str) -> list[tuple[int, str]]:
        """Watch ``top`` and every folder below it that is not ignored. Each folder is
        watched before it is listed, so a folder made meanwhile is listed or reported."""
        out: list[tuple[int, str]] = []
        stack = [top]
        while stack:
            folder = stack.pop()
            try:
                wd = self._ino.add_watch(folder)
            except OSError as e:
                if e.errno == errno.ENOSPC:
                    raise MonitorError(
                        "files",
                        f"cannot watch {folder}: the kernel's limit of inotify watches is "
                        f"reached (fs.inotify.max_user_watches = {_watch_limit()}); raise it, "
                        "e.g. sysctl fs.inotify.max_user_watches=524288",
                    ) from None
                if e.errno not in (errno.ENOENT, errno.ENOTDIR):
                    logger.warning("cannot watch %s: %s", folder, e.strerror)
                continue
            out.append((wd, folder))
            try:
                with os.scandir(folder) as entries:
                    stack.extend(
                        e.path
                        for e in entries
                        if e.is_dir(follow_symlinks=False) and self._m.filter(e.path)
                    )
            except OSError:
                continue
        return out


def _watch_limit() -> str:
    try:
        return Path("/proc/sys/fs/inotify/max_user_watches").read_text().strip()
    except OSError:
        return "?"
