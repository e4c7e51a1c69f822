"""Network intake by chunk size: how ``chunk_size`` (bytes per read) changes intake time.

N messages of one size over short-lived TCP connections -> N events on the queue, timed as
the report timed its tests (from just before sending until every event is queued). Senders
run in this process, 100 at a time.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

from meow_async import Event, NetworkMonitor, NetworkPattern, PythonRecipe, Workflow

from .loops import loop_factory
from .stats import summary

CHUNKS = (2048, 16384, 65536, 262144)


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


def run(repeats: int, scratch: Path, loop: str, log: Any = print) -> list[dict[str, Any]]:
    out = []
    with asyncio.Runner(loop_factory=loop_factory(loop)) as r:
        for size, n in ((1000, 1000), (4_000_000, 20)):
            for chunk in CHUNKS:
                d = scratch / f"chunks-{size}-{chunk}"
                d.mkdir()
                try:
                    res = r.run(intake(d, n, size, chunk, repeats))
                finally:
                    shutil.rmtree(d, ignore_errors=True)
                out.append(res)
                t = res["total"]
                log(
                    f"chunks: {n} messages of {size} B, chunk {chunk:>6}: median "
                    f"{t['p50_ms']:8.1f} ms (min {t['min_ms']:.1f}), "
                    f"{t['p50_ms'] / n:.3f} ms per message"
                )
    return out
