"""meow_async in the network tests: NetworkMonitor(s) feeding one asyncio.Queue, no runner.

As in the report, the monitors are tested alone: the events are taken straight off the queue
the runner would read. One monitor per "monitor", one port-0 NetworkPattern per "listener".
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from meow_async import Event, NetworkMonitor, NetworkPattern, PythonRecipe, Workflow

from .rounds import Arrival


def _noop() -> None:
    pass


class MeowAsyncIntake:
    def __init__(self, spool: Path) -> None:
        self.spool = spool
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._monitors: list[NetworkMonitor] = []

    async def start(self, monitors: int, listeners: int) -> list[int]:
        recipe = PythonRecipe(name="r", script="pass\n")
        ports: list[int] = []
        for m in range(monitors):
            patterns = [
                NetworkPattern(name=f"p{m}_{i}", port=0, recipe="r") for i in range(listeners)
            ]
            # Each monitor its own spool folder, as each runner has its own.
            monitor = NetworkMonitor(Workflow(patterns, [recipe]), self.spool / f"m{m}")
            self._monitors.append(monitor)
            task = asyncio.create_task(monitor.run(self._queue, self._stop))
            self._tasks.append(task)
            ready = asyncio.create_task(monitor.ready.wait())
            await asyncio.wait([ready, task], return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                task.result()  # raise why it did not start
            ports.extend(monitor.ports().values())
        return ports

    async def next(self) -> Arrival:
        event = await self._queue.get()
        t = time.monotonic()
        return Arrival(event.path, t, event.release or _noop)

    async def stop(self) -> None:
        self._stop.set()
        if self._tasks:
            await asyncio.gather(*self._tasks)
        while not self._queue.empty():
            event = self._queue.get_nowait()
            if event.release is not None:
                event.release()
        for monitor in self._monitors:
            close = getattr(monitor, "close_journal", None)  # newer src keeps a journal
            if close is not None:
                close()
