"""The job-end scan: when a job ends, the files its pattern's ``outputs`` name, and the folders
they point into, are looked at at once.

A watcher learns of a file only when the kernel tells it (inotify, on this machine's own
writes) or at its next look (polling, for writes made elsewhere). A job the runner ran itself
needs neither: its end is known, so what it declared is looked at then, and the next stage
starts milliseconds after the job's end even when the job ran on another machine and wrote to
a network filesystem. (Where the kernel reports every write exactly, inotify on a local
filesystem, the monitor makes no such scan.) A declared file, and every file in a declared
folder, is complete when its job has ended; other new files in the folders declared files
point into may be another writer's, so they are complete only as the watcher would judge them
(a writer's close for inotify, the default ``settle`` for polled folders). A file the watcher
reports as well makes no second job: the monitor remembers the state each file triggered in,
and the job's id comes from that state.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ...model.events import Event
from ...model.patterns import Change
from .changes import FileChange, FileState, Seen, chronological
from .fresh_stat import fresh_stat

__all__ = ["OutputScan", "Target", "output_targets"]


@dataclass(frozen=True, slots=True)
class Target:
    """A declared output: a path below the watched folder (a file, or a folder of files)."""

    path: str


class Emits(Seen, Protocol):
    """**Protocol:** what the scan asks of the file monitor, beyond ``Seen``."""

    @property
    def exact(self) -> bool: ...

    async def emit_outputs(
        self,
        changes: list[FileChange],
        events: asyncio.Queue[Event],
        complete: dict[str, FileChange],
    ) -> None: ...

    def declared(self, path: str) -> None: ...


def output_targets(
    base: str, job_dir: Path, outputs: Mapping[str, Any], keep: Callable[[str], bool]
) -> list[Target]:
    """The declared outputs below ``base`` (relative ones are relative to the job's folder,
    where its process runs) that the monitor does not ignore."""
    values: list[str] = []
    for value in outputs.values():
        if isinstance(value, str):
            values.append(value)
        elif isinstance(value, list | tuple):
            values.extend(v for v in value if isinstance(v, str))
    out = []
    for value in values:
        if not value:
            continue
        path = os.path.normpath(os.path.join(job_dir, value))  # an absolute value stays as is
        if path.startswith(base + os.sep) and keep(path):
            out.append(Target(path))
    return out


class OutputScan:
    """Job ends waiting to be looked at, and the task that looks (in one thread hop for all
    the ends that came meanwhile)."""

    def __init__(self, monitor: Emits) -> None:
        self._m = monitor
        self._pending: list[Target] = []
        self._wake = asyncio.Event()
        self.scans = 0

    def add(self, targets: list[Target]) -> None:
        self._pending.extend(targets)
        self._wake.set()

    async def run(self, events: asyncio.Queue[Event], stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._wake.wait()
            self._wake.clear()
            targets, self._pending = self._pending, []
            if not targets:
                continue
            found, complete = await asyncio.to_thread(self._scan, targets)
            self.scans += 1
            await self._m.emit_outputs(found, events, complete)

    def _scan(self, targets: list[Target]) -> tuple[list[FileChange], dict[str, FileChange]]:
        """Files changed since they last triggered, and each declared file as it is now."""
        folders: set[str] = set()  # declared folders: every file below is complete
        beside: set[str] = set()  # folders declared files point into
        declared: set[str] = set()
        for t in targets:
            if os.path.isdir(t.path):
                folders.add(t.path)
            else:
                declared.add(t.path)
                beside.add(os.path.dirname(t.path))
        for folder in sorted(folders):
            for dirpath, dirnames, names in os.walk(folder):
                dirnames[:] = [d for d in dirnames if self._m.filter(os.path.join(dirpath, d))]
                declared.update(os.path.join(dirpath, n) for n in names)
        found: list[FileChange] = []
        complete: dict[str, FileChange] = {}
        for path in sorted(declared):
            now = self._declared(path)
            if now is None:
                continue
            change, new = now
            complete[path] = change
            if new:
                found.append(change)
        still: list[tuple[str, float]] = []  # being written: the watcher reports their close
        for folder in sorted(beside - folders):
            if os.path.isdir(folder):
                # Files still open for writing (inotify can tell): their close is reported.
                found.extend(
                    self._m.scan(folder, recurse=False, still_open=still if self._m.exact else None)
                )
        return chronological(found), complete

    def _declared(self, path: str) -> tuple[FileChange, bool] | None:
        """A declared file as it is now, and whether that state is new (it has not triggered
        in it). Looked at by name (a network filesystem's folder listing may lag), and past
        the attribute cache, which may still hold the size a poll saw mid-write."""
        if not self._m.filter(path):
            return None
        try:
            st = fresh_stat(path)
        except OSError:
            return None
        self._m.declared(path)
        if not stat.S_ISREG(st.mode):
            return None
        state = FileState(st.ino, st.dev, st.size, st.mtime_ns)
        known = self._m.seen(path)
        same = known is not None and (known.ino, known.dev) == (st.ino, st.dev)
        change = FileChange(
            Change.modified if same else Change.created, path, None, state, st.ctime
        )
        if known == state:
            return change, False  # triggered in this state already (the watcher was first)
        self._m.remember(path, state)
        return change, True
