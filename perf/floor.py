"""The floor for network intake: the least an asyncio server can do with the same connections.

An ``asyncio.Protocol`` per connection opens a file at the first data (as meow_async does,
in a folder per monitor, as meow_async's monitors have), writes what arrives, closes it at EOF
and puts the path on a queue, then closes the connection: no journal, no message ids, no
timeouts, no limits. Run on the stdlib loop and on uvloop, in the same run as meow_async.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from pathlib import Path
from typing import IO

from .rounds import Arrival


class _Spooler(asyncio.Protocol):
    def __init__(self, folder: Path, queue: asyncio.Queue[str], ids: itertools.count[int]) -> None:
        self._folder = folder
        self._queue = queue
        self._ids = ids
        self._file: IO[bytes] | None = None
        self._path = ""

    def _open(self) -> IO[bytes]:
        self._path = str(self._folder / f"{next(self._ids)}.msg")
        self._file = open(self._path, "wb")  # noqa: SIM115 - closed at EOF or loss
        return self._file

    def data_received(self, data: bytes) -> None:
        (self._file or self._open()).write(data)

    def eof_received(self) -> bool:
        (self._file or self._open()).close()
        self._file = None
        self._queue.put_nowait(self._path)
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        if self._file is not None:  # lost before EOF: nothing kept
            self._file.close()
            self._file = None
            os.unlink(self._path)


class FloorIntake:
    def __init__(self, spool: Path) -> None:
        self.spool = spool
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._servers: list[asyncio.Server] = []
        self._ids = itertools.count()

    async def start(self, monitors: int, listeners: int) -> list[int]:
        loop = asyncio.get_running_loop()
        for m in range(monitors):
            # A folder per monitor, as meow_async's monitors (each a runner's) have: the same
            # directory work on the disk.
            folder = self.spool / f"m{m}"
            folder.mkdir(parents=True, exist_ok=True)
            for _ in range(listeners):
                await self._serve(loop, folder)
        return [s.sockets[0].getsockname()[1] for s in self._servers]

    async def _serve(self, loop: asyncio.AbstractEventLoop, folder: Path) -> None:
        server = await loop.create_server(
            lambda: _Spooler(folder, self._queue, self._ids),
            "127.0.0.1",
            0,
            backlog=4096,
        )
        self._servers.append(server)

    async def next(self) -> Arrival:
        path = await self._queue.get()
        t = time.monotonic()
        return Arrival(path, t, lambda: os.unlink(path))

    async def stop(self) -> None:
        for s in self._servers:
            s.close()
        for s in self._servers:
            await s.wait_closed()
        while not self._queue.empty():
            os.unlink(self._queue.get_nowait())
