"""The portable watcher: watchfiles' notifier (FSEvents, kqueue, polling...) for platforms
without inotify, or where ``file_watcher: watchfiles`` asks for it.

watchfiles reports that a path changed, not that its writer finished, so this is the one
heuristic left: a batch closes once ``step_ms`` pass without a change, and a file is handed on
in the state it has then. A writer that pauses longer than that mid-file makes one event per
burst of writes (``settle`` holds those back), and a kernel queue overflow is guessed from a
large batch, since watchfiles does not pass the overflow flag on.

Only watchfiles' public ``watch()`` is used. It sets its watches when first asked for a batch
and, with ``yield_on_timeout``, yields an empty one after ``rust_timeout``: the first yield,
empty or not, is the moment from which no change is missed, which the monitor's ``ready``
needs. Empty batches after that are passed over inside the worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import Generator

import watchfiles

from ...model.patterns import Change
from .changes import FileChange, FileState, Seen, chronological, state_of

__all__ = ["PortableWatch"]

#: Milliseconds watchfiles waits for a change before yielding an empty batch: the longest a new
#: watch takes to say it is live. Each later empty batch costs one wake-up of the worker
#: thread, not of the loop (50 a second while idle).
READY_MS = 20

_Raw = set[tuple[watchfiles.Change, str]]


class PortableWatch:
    """``base_dir`` through watchfiles' Rust notifier, a batch per ``watch()`` call."""

    def __init__(self, monitor: Seen, step_ms: int, debounce_ms: int, rescan_after: int) -> None:
        self._m = monitor
        self.step_ms = step_ms
        self.debounce_ms = debounce_ms
        self.rescan_after = rescan_after
        self._batches: Generator[_Raw, None, None] | None = None
        self._pending: _Raw | None = None  # what the first batch brought, if anything
        self._dirs: set[str] = set()  # folders seen, so their deletion is not a file's
        self._stopped = False  # read by the watcher thread: a plain flag is enough

    def is_set(self) -> bool:
        """The notifier's stop_event: asked by its thread every ``step_ms``."""
        return self._stopped

    async def start(self) -> None:
        self._batches = watchfiles.watch(
            self._m.base,
            watch_filter=None,  # the monitor's own filter is applied below
            debounce=self.debounce_ms,
            step=self.step_ms,
            stop_event=self,
            rust_timeout=READY_MS,
            yield_on_timeout=True,
            debug=False,
            raise_interrupt=False,
            force_polling=False,
            recursive=True,
            ignore_permission_denied=False,
        )
        self._pending = await asyncio.to_thread(next, self._batches, None) or None

    def stop(self) -> None:
        self._stopped = True

    def close(self) -> None:
        self._stopped = True
        if self._batches is not None:
            # A batch still being waited for in a worker thread ends within step_ms (the stop
            # flag), closing watchfiles' notifier as its generator returns.
            with contextlib.suppress(ValueError):  # "generator already executing"
                self._batches.close()

    def held_since(self) -> float | None:
        return None  # nothing is held here: a batch is handed on as it is

    def still_open(self, found: list[tuple[str, float]]) -> list[FileChange]:
        return []  # scans are not asked to probe for writers here

    async def changes(self) -> list[FileChange] | None:
        """The next batch, classified, in one thread hop; None once stopped."""
        try:
            return await asyncio.to_thread(self._next_batch)
        except asyncio.CancelledError:
            self._stopped = True  # the watcher thread returns within step_ms
            raise

    # -- in a worker thread --------------------------------------------------------------------

    def _next_batch(self) -> list[FileChange] | None:
        assert self._batches is not None  # noqa: S101 - started first
        while True:
            raw, self._pending = self._pending or next(self._batches, None), None
            if raw is None:
                return None  # stopped
            batch = {(kind, p) for kind, p in raw if self._m.filter(p)}
            if batch:
                return self._classify(batch)

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
