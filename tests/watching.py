"""A FileMonitor run in the background for tests, its events on a queue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager, ExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from meow_async import Change, Event, FileMonitor, FilePattern, Workflow

from .conftest import WAIT, py_recipe


class Watch:
    def __init__(self, base: Path, monitor: FileMonitor) -> None:
        self.base = base
        self.monitor = monitor
        self.events: asyncio.Queue[Event] = asyncio.Queue()

    async def next(self) -> Event:
        async with asyncio.timeout(WAIT):
            return await self.events.get()

    async def until(self, path: Path) -> list[Event]:
        """Every event up to the batch that holds the first one for ``path``.

        A batch is put on the queue without yielding, so once the sentinel is out its whole
        batch is already queued; changes made before the sentinel are in that batch or earlier.
        """
        got: list[Event] = []
        while not got or got[-1].path != str(path):
            got.append(await self.next())
        while not self.events.empty():
            got.append(self.events.get_nowait())
        return got


@asynccontextmanager
async def watching(
    base: Path,
    *patterns: FilePattern,
    ignore: tuple[Path, ...] = (),
    starting: AbstractContextManager[None] | None = None,
    watcher: Any = "auto",
) -> AsyncIterator[Watch]:
    """The monitor, live; ``starting`` is held from its start until it is ready."""
    recipes = [py_recipe(name) for name in {p.recipe for p in patterns}]
    monitor = FileMonitor(base, Workflow(patterns, recipes), ignore=ignore, watcher=watcher)
    w = Watch(base, monitor)
    stop = asyncio.Event()
    held = ExitStack()
    if starting is not None:
        held.enter_context(starting)
    task = asyncio.create_task(monitor.run(w.events, stop))
    try:
        try:
            async with asyncio.timeout(WAIT):
                await monitor.ready.wait()
        finally:
            held.close()
        yield w
    finally:
        stop.set()
        async with asyncio.timeout(WAIT):
            await task


def pat(name: str, glob: str, *changes: Change, **kw: Any) -> FilePattern:
    if changes:
        kw["changes"] = frozenset(changes)
    return FilePattern(name=name, glob=glob, recipe="r", **kw)
