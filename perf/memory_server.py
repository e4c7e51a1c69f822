"""The process whose memory is measured: ``python -m perf.memory_server MODE SCRATCH LOOP``.

MODE is ``runner`` (a whole Runner with one network rule and a trivial Bash recipe),
``monitor`` (a NetworkMonitor whose events are released as soon as they are queued) or
``floor`` (the minimal asyncio server of perf/floor.py). It prints ``port N`` once listening,
then answers ``count`` on stdin with ``count K`` (events so far) until stdin closes.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from meow_async import (
    BashRecipe,
    Event,
    NetworkMonitor,
    NetworkPattern,
    Runner,
    RunnerConfig,
    Workflow,
)

from .floor import FloorIntake
from .limits import raise_nofile
from .loops import loop_factory


async def _commands(count: list[int]) -> None:
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        if line.strip() == "count":
            print(f"count {count[0]}", flush=True)


async def _runner(scratch: Path) -> None:
    base = scratch / "base"
    base.mkdir(parents=True, exist_ok=True)
    cfg = RunnerConfig(base_dir=base, jobs_dir=scratch / "jobs", spool_dir=scratch / "spool")
    pattern = NetworkPattern(name="p", port=0, recipe="r")
    async with Runner([pattern], [BashRecipe(name="r", script="true\n")], config=cfg) as runner:
        print(f"port {runner.ports()['p']}", flush=True)
        count = [0]

        async def follow() -> None:
            while True:
                await runner.wait_for(lambda s: s.events > count[0])
                count[0] = runner.stats.events

        task = asyncio.create_task(follow())
        await _commands(count)
        task.cancel()


async def _monitor(scratch: Path) -> None:
    wf = Workflow(
        [NetworkPattern(name="p", port=0, recipe="r")], [BashRecipe(name="r", script="true\n")]
    )
    monitor = NetworkMonitor(wf, scratch / "spool")
    events: asyncio.Queue[Event] = asyncio.Queue(maxsize=1000)
    stop = asyncio.Event()
    task = asyncio.create_task(monitor.run(events, stop))
    await monitor.ready.wait()
    print(f"port {monitor.ports()['p']}", flush=True)
    count = [0]

    async def consume() -> None:
        while True:
            event = await events.get()
            if event.release is not None:
                event.release()
            count[0] += 1

    consumer = asyncio.create_task(consume())
    await _commands(count)
    stop.set()
    await task
    consumer.cancel()


async def _floor(scratch: Path) -> None:
    intake = FloorIntake(scratch / "spool")
    (port,) = await intake.start(1, 1)
    print(f"port {port}", flush=True)
    count = [0]

    async def consume() -> None:
        while True:
            arrival = await intake.next()
            arrival.done()
            count[0] += 1

    consumer = asyncio.create_task(consume())
    await _commands(count)
    consumer.cancel()
    await intake.stop()


def main() -> None:
    raise_nofile()
    mode, scratch, loop = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    scratch.mkdir(parents=True, exist_ok=True)
    serve = {"runner": _runner, "monitor": _monitor, "floor": _floor}[mode]
    with asyncio.Runner(loop_factory=loop_factory(loop)) as r:
        r.run(serve(scratch))


if __name__ == "__main__":
    main()
