"""Network intake: N messages over short-lived TCP connections -> N events on the queue.

Timing follows the report (section 4.1): it starts after the monitor is listening, just
before sending, and ends when every event is on the queue. Senders run in this process (the
report's variant) unless a separate sender process is asked for.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from meow_async import Event, NetworkMonitor, NetworkPattern, PythonRecipe, Workflow

from .stats import summary


async def _send(port: int, payload: bytes) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    writer.write_eof()
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def intake(
    spool: Path, n: int, size: int, chunk_size: int, repeats: int, concurrency: int = 100
) -> dict[str, Any]:
    """``repeats`` runs of n messages of ``size`` bytes; returns total-time samples."""
    wf = Workflow(
        [NetworkPattern(name="p", port=0, recipe="r")], [PythonRecipe(name="r", script="pass")]
    )
    monitor = NetworkMonitor(wf, spool, chunk_size=chunk_size)
    events: asyncio.Queue[Event] = asyncio.Queue()
    stop = asyncio.Event()
    task = asyncio.create_task(monitor.run(events, stop))
    await monitor.ready.wait()
    port = monitor.ports()["p"]
    payload = b"x" * size
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with sem:
            await _send(port, payload)

    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        senders = asyncio.gather(*(one() for _ in range(n)))
        for _ in range(n):
            ev = await events.get()
            assert ev.release is not None
            ev.release()
        await senders
        samples.append(time.perf_counter() - t0)
    stop.set()
    await task
    return {"n": n, "size": size, "chunk_size": chunk_size, "total": summary(samples)}
