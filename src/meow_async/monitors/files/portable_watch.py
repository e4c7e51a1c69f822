"""The portable watcher: watchfiles' notifier (FSEvents, kqueue, polling...) for platforms
without inotify, or where ``file_watcher: watchfiles`` asks for it.

watchfiles reports that a path changed, not that its writer finished, so this is the one
heuristic left: a batch closes once ``step_ms`` pass without a change, and a file is handed on
in the state it has then. A writer that pauses longer than that mid-file makes one event per
burst of writes (``settle`` holds those back), and a kernel queue overflow is guessed from a
large batch, since watchfiles does not pass the overflow flag on.
"""

from __future__ import annotations

import asyncio
import os
import stat
from typing import TYPE_CHECKING

import watchfiles
from watchfiles._rust_notify import RustNotify

from ...model.patterns import Change
from .changes import FileChange, FileState, chronological, state_of

if TYPE_CHECKING:
    from .monitor import FileMonitor

__all__ = ["PortableWatch"]


class PortableWatch:
    """``base_dir`` through watchfiles' Rust notifier, a batch per ``watch()`` call."""

    def __init__(
        self, monitor: FileMonitor, step_ms: int, debounce_ms: int, rescan_after: int
    ) -> None:
        self._m = monitor
        self.step_ms = step_ms
        self.debounce_ms = debounce_ms
        self.rescan_after = rescan_after
        self._notify: RustNotify | None = None
        self._dirs: set[str] = set()  # folders seen, so their deletion is not a file's
        self._stopped = False  # read by the watcher thread: a plain flag is enough

    def is_set(self) -> bool:
        """The notifier's stop_event: asked by its thread every ``step_ms``."""
        return self._stopped

    async def start(self) -> None:
        # RustNotify sets its (recursive) watches when made: after this, no change is missed.
        # awatch would hide that moment, which the monitor's ``ready`` needs.
        self._notify = await asyncio.to_thread(
            RustNotify, [self._m.base], False, False, 300, True, False
        )

    def stop(self) -> None:
        self._stopped = True

    def close(self) -> None:
        if self._notify is not None:
            self._notify.close()

    def held_since(self) -> float | None:
        return None  # nothing is held here: a batch is handed on as it is

    def still_open(self, found: list[tuple[str, float]]) -> list[FileChange]:
        return []  # scans are not asked to probe for writers here

    async def changes(self) -> list[FileChange] | None:
        assert self._notify is not None  # noqa: S101 - started first
        while True:
            try:
                result = await asyncio.to_thread(
                    self._notify.watch, self.debounce_ms, self.step_ms, 0, self
                )
            except asyncio.CancelledError:
                self._stopped = True  # the watcher thread returns within step_ms
                raise
            if result == "stop":
                return None
            if isinstance(result, str):  # 'signal' or 'timeout': nothing changed
                continue
            batch = {(watchfiles.Change(raw), p) for raw, p in result if self._m.filter(p)}
            if batch:
                return await asyncio.to_thread(self._classify, batch)

    # -- in a worker thread --------------------------------------------------------------------

    def _classify(self, batch: set[tuple[watchfiles.Change, str]]) -> list[FileChange]:
        kinds: dict[str, set[watchfiles.Change]] = {}
        for kind, path in batch:
            kinds.setdefault(path, set()).add(kind)
        out: list[FileChange] = []
        gone: dict[FileState, str] = {}  # the last state of vanished known files -> path
        present: list[tuple[str, os.stat_result]] = []
        for path, ks in kinds.items():
            try:
                st = os.stat(path)
            except OSError:
                seen = self._m.forget(path)
                if path in self._dirs:
                    self._dirs.discard(path)  # a folder went: folders do not trigger
                elif seen is not None:
                    gone[seen] = path
                elif watchfiles.Change.added not in ks:
                    out.append(FileChange(Change.deleted, path))  # existed before we started
                continue
            if stat.S_ISDIR(st.st_mode):
                self._dirs.add(path)
                if watchfiles.Change.added in ks:
                    # Files made in a new folder before its watch was set up are not
                    # reported by the notifier: look for them.
                    out.extend(self._m.scan(path, dirs=self._dirs))
            elif stat.S_ISREG(st.st_mode):
                present.append((path, st))
        for path, st in present:
            before = self._m.seen(path)
            state = state_of(st)
            if before == state:
                continue  # the same file as when it last triggered: no new change
            # A rename keeps inode, size and mtime; a new file that got a freed inode does not.
            src = gone.pop(state, None)
            if src is not None:
                out.append(FileChange(Change.moved, path, src, state, st.st_ctime))
            elif before is None or (before.ino, before.dev) != (st.st_ino, st.st_dev):
                new = watchfiles.Change.added in kinds[path] or before is not None
                change = Change.created if new else Change.modified
                out.append(FileChange(change, path, None, state, st.st_ctime))
            else:
                out.append(FileChange(Change.modified, path, None, state, st.st_ctime))
            self._m.remember(path, state)
        out.extend(FileChange(Change.deleted, p) for p in gone.values())
        if len(batch) >= self.rescan_after:
            # A batch this large is when the kernel's queue can have overflowed, which
            # watchfiles does not report: look again at every folder it touched.
            touched = {os.path.dirname(p) for _, p in batch}
            for folder in sorted(touched):
                if os.path.isdir(folder):
                    out.extend(self._m.scan(folder, recurse=False, dirs=self._dirs))
        return chronological(out)
