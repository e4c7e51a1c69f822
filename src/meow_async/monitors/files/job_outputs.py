"""The job-end scan: when a job ends, the files its pattern's ``outputs`` name, and the folders
they point into, are looked at at once.

A watcher learns of a file only when the kernel tells it (inotify, on this machine's own
writes) or at its next look (polling, for writes made elsewhere). A job the runner ran itself
needs neither: its end is known, so what it declared is looked at then, and the next stage
starts milliseconds after the job's end even when the job ran on another machine and wrote to
a network filesystem. A declared file, and every file in a declared folder, is complete when
its job has ended; other new files in the folders declared files point into may be another
writer's, so they are complete only as the watcher would judge them (a writer's close for
inotify, the default ``settle`` for polled folders). A file the watcher reports as well makes
no second job: the monitor remembers the state each file triggered in, and the job's id comes
from that state.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ...model.events import Event
from .changes import FileChange, Seen, chronological

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
        self, changes: list[FileChange], events: asyncio.Queue[Event], complete: frozenset[str]
    ) -> None: ...

    def hurry(self, paths: Iterable[str]) -> None: ...


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
            self._m.hurry(complete)

    def _scan(self, targets: list[Target]) -> tuple[list[FileChange], frozenset[str]]:
        """Files changed since they last triggered, and which of them the jobs declared."""
        folders: set[str] = set()  # declared folders: every file below is complete
        beside: set[str] = set()  # folders declared files point into
        files: set[str] = set()
        for t in targets:
            if os.path.isdir(t.path):
                folders.add(t.path)
            else:
                files.add(t.path)
                beside.add(os.path.dirname(t.path))
        found: list[FileChange] = []
        complete = set(files)
        still: list[tuple[str, float]] = []  # being written: the watcher reports their close
        for folder in sorted(folders):
            changes = self._m.scan(folder)
            complete.update(c.path for c in changes)
            found.extend(changes)
        for folder in sorted(beside - folders):
            if os.path.isdir(folder):
                # Files still open for writing (inotify can tell): their close is reported.
                found.extend(
                    self._m.scan(folder, recurse=False, still_open=still if self._m.exact else None)
                )
        return chronological(found), frozenset(complete)
