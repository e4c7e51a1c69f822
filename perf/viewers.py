"""The live view's cost: a burst of N file jobs with V open event streams against none.

Each round starts a runner (a file rule, Bash ``true``, runner.http on port 0); with viewers,
a separate process (``python -m perf.viewers PORT V``, as browsers would be) opens V
``/view/events`` streams and reads them. Browsers mostly run on other machines: on a 2-CPU
machine the viewers' own CPU time would be counted against the runner, so their process runs
at ``nice 19`` (it still gets any CPU the runner leaves; its CPU time is reported). Then N
files are written and the burst is timed from the first write until the runner counts N
finished jobs. The two variants take turns, so the machine's drift falls on both. Also
counted: the messages each viewer got (one per job change: queued, running, done = 3 per
job) and the runner's CPU time per job.
"""

from __future__ import annotations

import asyncio
import json
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from meow_async import BashRecipe, FilePattern, Runner, RunnerConfig
from meow_async.runner.feed import Feed

from .loops import loop_factory


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def one_round(root: Path, n: int, viewers: int) -> dict[str, Any]:
    base = root / "base"
    base.mkdir(parents=True)
    cfg = RunnerConfig(
        base_dir=base, jobs_dir=root / "jobs", http={"port": 0}, queue_size=max(n, 1)
    )
    rule = FilePattern(name="p", glob="*.dat", recipe="r")
    async with Runner([rule], [BashRecipe(name="r", script="true\n")], config=cfg) as r:
        proc = None
        if viewers:
            proc = await asyncio.create_subprocess_exec(
                "nice",
                "-n",
                "19",
                sys.executable,
                "-m",
                "perf.viewers",
                str(r.http_port),
                str(viewers),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            assert proc.stdout is not None
            assert (await proc.stdout.readline()).strip() == b"ready"
        cpu0 = _cpu_s()
        t0 = time.monotonic()
        for i in range(n):
            (base / f"{i:05d}.dat").write_bytes(b"x")
        async with asyncio.timeout(600):
            await r.wait_for(lambda s: s.finished >= n)
        took = time.monotonic() - t0
        cpu = _cpu_s() - cpu0
        got: list[int] = []
        viewers_cpu = 0.0
        if proc is not None:
            assert proc.stdin is not None
            assert proc.stdout is not None
            # The last changes are written at the next flush (FLUSH, 50 ms) and then read:
            # the counts say whether every message arrived.
            await asyncio.sleep(0.5)
            proc.stdin.close()
            got = json.loads(await proc.stdout.readline())
            viewers_cpu = json.loads(await proc.stdout.readline())
            await proc.wait()
        return {
            "viewers": viewers,
            "total_s": took,
            "cpu_ms_per_job": cpu / n * 1000,
            "done": r.stats.done,
            "messages_per_viewer": got,
            "viewers_cpu_s": viewers_cpu,
            "dropped": r.feed.dropped,
        }


async def publish_cost(viewers: int, changes: int = 100_000) -> float:
    """Microseconds the runner spends per job change with ``viewers`` open (the message made
    once, queued to each; their writes are the viewers' tasks, counted in the burst)."""
    feed = Feed()
    joined = [feed.join() for _ in range(viewers)]
    meta = {"rule": "p", "event": {"path": "/data/incoming/00001.dat", "base": "/data"}}
    t0 = time.perf_counter()
    for i in range(changes):
        feed.publish(f"p-{i:016x}", meta, "running")
        if i % 1000 == 999:
            for v in joined:
                v.waiting.clear()  # they read
    return (time.perf_counter() - t0) / changes * 1e6


def run(n: int, repeats: int, loop: str, scratch: Path, viewers: int = 10) -> dict[str, Any]:
    rounds: dict[int, list[dict[str, Any]]] = {0: [], viewers: []}
    for i in range(repeats):
        for v in (0, viewers) if i % 2 == 0 else (viewers, 0):
            folder = scratch / f"viewers-{v}-{i}"
            try:
                with asyncio.Runner(loop_factory=loop_factory(loop)) as r:
                    rounds[v].append(r.run(one_round(folder, n, v)))
            finally:
                shutil.rmtree(folder, ignore_errors=True)
    none_s = statistics.median(x["total_s"] for x in rounds[0])
    with_s = statistics.median(x["total_s"] for x in rounds[viewers])
    res = {
        "n": n,
        "viewers": viewers,
        "loop": loop,
        "without_s": none_s,
        "with_s": with_s,
        "ratio": with_s / none_s,
        "spread_without": [x["total_s"] for x in rounds[0]],
        "spread_with": [x["total_s"] for x in rounds[viewers]],
        "cpu_ms_per_job_without": statistics.median(x["cpu_ms_per_job"] for x in rounds[0]),
        "cpu_ms_per_job_with": statistics.median(x["cpu_ms_per_job"] for x in rounds[viewers]),
        "messages_per_viewer": [x["messages_per_viewer"] for x in rounds[viewers]],
        "viewers_cpu_s": statistics.median(x["viewers_cpu_s"] for x in rounds[viewers]),
        "dropped": sum(x["dropped"] for x in rounds[viewers]),
        "rounds": rounds,
    }
    with asyncio.Runner(loop_factory=loop_factory(loop)) as r:
        res["publish_us"] = {v: r.run(publish_cost(v)) for v in (0, 1, viewers)}
    print(
        f"viewers: {n} file jobs, {viewers} viewers vs none, {repeats} rounds each, taking "
        f"turns: {with_s:.2f} s vs {none_s:.2f} s (ratio {res['ratio']:.3f}; without "
        f"{', '.join(f'{t:.2f}' for t in res['spread_without'])}; with "
        f"{', '.join(f'{t:.2f}' for t in res['spread_with'])}); runner CPU "
        f"{res['cpu_ms_per_job_with']:.2f} vs {res['cpu_ms_per_job_without']:.2f} ms/job "
        f"(the viewers' process: {res['viewers_cpu_s']:.2f} s); "
        f"messages per viewer {res['messages_per_viewer']} (3 changes per job); dropped "
        f"{res['dropped']}; per change: "
        + ", ".join(f"{v} viewers {us:.2f} µs" for v, us in res["publish_us"].items())
    )
    return res


async def _view(port: int, n: int) -> None:
    """The viewers' process: N streams read to their end; prints ``ready`` once each has
    its hello, then each one's count of job messages when stdin closes."""
    import aiohttp

    counts = [0] * n
    ready = asyncio.Event()
    hellos = 0

    async def viewer(i: int, session: aiohttp.ClientSession) -> None:
        # Counted by the chunk, as a browser's parser (C++) would take them: a Python loop
        # per line would make the viewers, not the runner, the cost on a 2-CPU machine.
        nonlocal hellos
        async with session.get(f"http://127.0.0.1:{port}/view/events") as resp:
            carry, greeted = b"", False
            async for chunk in resp.content.iter_any():
                data = carry + chunk
                if not greeted and b"event: hello\n" in data:
                    greeted = True
                    hellos += 1
                    if hellos == n:
                        ready.set()
                counts[i] += data.count(b"event: job\n") - carry.count(b"event: job\n")
                carry = data[-10:]  # a message's name cut between two chunks

    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
        tasks = [asyncio.create_task(viewer(i, session)) for i in range(n)]
        await ready.wait()
        print("ready", flush=True)
        await loop.run_in_executor(None, sys.stdin.read)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps(counts), flush=True)
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps(cpu.ru_utime + cpu.ru_stime), flush=True)


if __name__ == "__main__":
    asyncio.run(_view(int(sys.argv[1]), int(sys.argv[2])))
