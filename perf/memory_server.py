"""The process whose memory is measured:
``python -m perf.memory_server MODE SCRATCH LOOP [FIELD=VALUE ...]``.

MODE is ``runner`` (a whole Runner with one network rule and a trivial Bash recipe),
``monitor`` (a NetworkMonitor whose events are released as soon as they are queued) or
``floor`` (the minimal asyncio server of perf/floor.py). Each FIELD=VALUE sets a field of the
NetworkPattern (runner and monitor), e.g. ``tls_cert=cert.pem max_waiting=100000``. It
prints ``port N`` once listening, then answers on stdin until stdin closes: ``count`` with
``count K`` (events so far), ``conns`` with ``conns K OPEN`` (connections the monitor holds,
handshaking ones included, and how many of them have a transport: past their TLS handshake;
``-1 -1`` for the floor, which does not count them). Diagnostics, for after a measurement:
``gc`` runs a full collection (``gc K``: unreachable objects found), ``trim`` asks glibc to
give free heap memory back to the OS (``trim 1`` if it did, ``trim 0`` if not, ``trim -1``
without glibc).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

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

Settings = dict[str, Any]


def _no_conns() -> tuple[int, int]:
    return -1, -1


def _conns_of(monitor: NetworkMonitor) -> Callable[[], tuple[int, int]]:
    def conns() -> tuple[int, int]:
        held = list(monitor.connections)
        return len(held), sum(c.transport is not None for c in held)

    return conns


def _trim() -> int:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return int(libc.malloc_trim(0))
    except (OSError, AttributeError):
        return -1


async def _commands(count: list[int], conns: Callable[[], tuple[int, int]] = _no_conns) -> None:
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        if line.strip() == "count":
            print(f"count {count[0]}", flush=True)
        elif line.strip() == "conns":
            held, open_ = conns()
            print(f"conns {held} {open_}", flush=True)
        elif line.strip() == "gc":
            print(f"gc {gc.collect()}", flush=True)
        elif line.strip() == "trim":
            print(f"trim {_trim()}", flush=True)


def _setting(text: str) -> tuple[str, Any]:
    """``FIELD=VALUE``: an int or a float when it reads as one, else the string."""
    name, _, value = text.partition("=")
    for kind in (int, float):
        try:
            return name, kind(value)
        except ValueError:
            pass
    return name, value


async def _runner(scratch: Path, settings: Settings) -> None:
    base = scratch / "base"
    base.mkdir(parents=True, exist_ok=True)
    cfg = RunnerConfig(base_dir=base, jobs_dir=scratch / "jobs", spool_dir=scratch / "spool")
    pattern = NetworkPattern(name="p", port=0, recipe="r", **settings)
    async with Runner([pattern], [BashRecipe(name="r", script="true\n")], config=cfg) as runner:
        print(f"port {runner.ports()['p']}", flush=True)
        count = [0]

        async def follow() -> None:
            while True:
                await runner.wait_for(lambda s: s.events > count[0])
                count[0] = runner.stats.events

        task = asyncio.create_task(follow())
        await _commands(count, _conns_of(runner.network))
        task.cancel()


async def _monitor(scratch: Path, settings: Settings) -> None:
    wf = Workflow(
        [NetworkPattern(name="p", port=0, recipe="r", **settings)],
        [BashRecipe(name="r", script="true\n")],
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
    await _commands(count, _conns_of(monitor))
    stop.set()
    await task
    consumer.cancel()


async def _floor(scratch: Path, settings: Settings) -> None:
    if settings:
        raise SystemExit(f"the floor takes no pattern settings: {settings}")
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
    settings = dict(_setting(a) for a in sys.argv[4:])
    scratch.mkdir(parents=True, exist_ok=True)
    serve = {"runner": _runner, "monitor": _monitor, "floor": _floor}[mode]
    with asyncio.Runner(loop_factory=loop_factory(loop)) as r:
        r.run(serve(scratch, settings))


if __name__ == "__main__":
    main()
