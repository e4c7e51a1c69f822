"""End to end: N network events -> N finished jobs, against the same N subprocesses run directly.

A Runner with one network rule (port 0) and a trivial recipe (Bash ``true``, Python ``pass``);
a separate sender process sends N messages, each its own connection. Timed from the sender's
first connect until the runner counts N finished jobs. The floor, in the same run and
alternating with it: the same interpreter on the same one-line script, N times, with the
same concurrency (``max_jobs``), launched straight from asyncio. Overhead per job = (runner -
floor) / N. The runner's own CPU time per job (this process, threads included, children
excluded) is reported too: it is much less noisy than wall time on a shared machine.

With ``baseline`` (another checkout's ``src``, ``--baseline-src``), each round runs this tree
and the baseline each in a process of its own (``python -m perf.jobs``, the tree first on
``PYTHONPATH``), taking turns with the floor, so that old and new code meet the same machine
in the same minutes.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from meow_async import BashRecipe, NetworkPattern, PythonRecipe, Runner, RunnerConfig

from .loops import loop_factory
from .sender import Plan
from .sender_process import SenderProcess

#: Bash and spawned Python measure the scheduler's own overhead per job; warm Python (forked
#: from the fork server, the default for Python recipes) against the same spawned floor shows
#: what skipping the interpreter's start buys.
RECIPES = {
    "bash": ("true\n", ".sh"),
    "python": ("pass\n", ".py"),
    "python-warm": ("pass\n", ".py"),
}


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def through_runner(root: Path, kind: str, n: int, max_jobs: int) -> dict[str, Any]:
    script = RECIPES[kind][0]
    recipe = (
        BashRecipe(name="r", script=script)
        if kind == "bash"
        else PythonRecipe(name="r", script=script, fork=kind == "python-warm")
    )
    base = root / "base"
    base.mkdir(parents=True)
    cfg = RunnerConfig(
        base_dir=base,
        jobs_dir=root / "jobs",
        spool_dir=root / "spool",
        max_jobs=max_jobs,
        queue_size=max(n, 1),
    )
    sender = await SenderProcess.start()
    try:
        async with Runner(
            [NetworkPattern(name="p", port=0, recipe="r")], [recipe], config=cfg
        ) as r:
            plan = Plan([r.ports()["p"]], n, 32, concurrency=100)
            cpu0 = _cpu_s()
            sending = asyncio.create_task(sender.round(plan))
            async with asyncio.timeout(600):
                await r.wait_for(lambda s: s.finished >= n)
            end = time.monotonic()
            cpu = _cpu_s() - cpu0
            sent = await sending
            done, failed = r.stats.done, r.stats.failed
    finally:
        await sender.close()
    return {
        "total_s": end - sent.started,
        "cpu_s": cpu,
        "done": done,
        "failed": failed,
        "send_errors": len(sent.errors),
    }


async def direct(root: Path, kind: str, n: int, max_jobs: int) -> dict[str, Any]:
    script_text, suffix = RECIPES[kind]
    script = root / f"floor{suffix}"
    script.write_text(script_text)
    argv = ["bash", str(script)] if kind == "bash" else [sys.executable, str(script)]
    sem = asyncio.Semaphore(max_jobs)
    failed = 0

    async def one() -> None:
        nonlocal failed
        async with sem:
            p = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            if await p.wait():
                failed += 1

    cpu0 = _cpu_s()
    t0 = time.monotonic()
    await asyncio.gather(*(one() for _ in range(n)))
    return {"total_s": time.monotonic() - t0, "cpu_s": _cpu_s() - cpu0, "failed": failed}


def run(
    n: int,
    repeats: int,
    max_jobs: int,
    loop: str,
    scratch: Path,
    log: Any = print,
    baseline: Path | None = None,
    kinds: list[str] | None = None,
) -> list[dict[str, Any]]:
    out = []
    for kind in kinds or list(RECIPES):
        runs: list[dict[str, Any]] = []
        base_runs: list[dict[str, Any]] = []
        floors: list[dict[str, Any]] = []
        for i in range(repeats):
            folder = scratch / f"jobs-{kind}-{i}"
            folder.mkdir(parents=True)
            try:
                if baseline is None:
                    with asyncio.Runner(loop_factory=loop_factory(loop)) as r:
                        runs.append(r.run(through_runner(folder / "runner", kind, n, max_jobs)))
                else:
                    trees = [(_here(), runs, "runner"), (baseline, base_runs, "baseline")]
                    for src, into, name in trees if i % 2 == 0 else trees[::-1]:
                        into.append(_elsewhere(src, folder / name, kind, n, max_jobs, loop))
                # The baseline always spawns from asyncio's own loop: uvloop spawns slower,
                # and moving the baseline with --loop would flatter the runner's overhead.
                with asyncio.Runner() as r:
                    floors.append(r.run(direct(folder, kind, n, max_jobs)))
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        res = summarize(kind, n, max_jobs, loop, runs, floors)
        if base_runs:
            res["baseline"] = summarize(kind, n, max_jobs, loop, base_runs, floors)
            res["baseline_src"] = str(baseline)
        out.append(res)
        log(
            f"jobs {kind:<11} {n} events -> {res['done']} done: runner {res['runner_s']:.2f} s, "
            f"same subprocesses direct {res['floor_s']:.2f} s (max_jobs={max_jobs}): overhead "
            f"{res['overhead_ms_per_job']:.2f} ms/job wall, runner CPU "
            f"{res['runner_cpu_ms_per_job']:.2f} ms/job vs {res['floor_cpu_ms_per_job']:.2f}"
        )
        if base_runs:
            b = res["baseline"]
            log(
                f"jobs {kind:<11} baseline {b['runner_s']:.2f} s: overhead "
                f"{b['overhead_ms_per_job']:.2f} ms/job wall, runner CPU "
                f"{b['runner_cpu_ms_per_job']:.2f} ms/job; this / baseline: time "
                f"{res['runner_s'] / b['runner_s']:.2f}x, overhead "
                f"{_ratio(res['overhead_ms_per_job'], b['overhead_ms_per_job'])}, runner CPU "
                f"{res['runner_cpu_ms_per_job'] / b['runner_cpu_ms_per_job']:.2f}x"
            )
    return out


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "-"


def _here() -> Path:
    return Path(__file__).resolve().parent.parent / "src"


def _elsewhere(
    src: Path, folder: Path, kind: str, n: int, max_jobs: int, loop: str
) -> dict[str, Any]:
    """One runner round in a process of its own, with ``src``'s meow_async."""
    perf_root = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join([str(src), perf_root, os.environ.get("PYTHONPATH", "")])
    res = subprocess.run(
        [sys.executable, "-m", "perf.jobs", kind, str(folder), str(n), str(max_jobs), loop],
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if res.returncode != 0:
        raise RuntimeError(f"perf.jobs with {src}: exit {res.returncode}: {res.stderr[-2000:]}")
    found: dict[str, Any] = json.loads(res.stdout.splitlines()[-1])
    return found


def summarize(
    kind: str,
    n: int,
    max_jobs: int,
    loop: str,
    runs: list[dict[str, Any]],
    floors: list[dict[str, Any]],
) -> dict[str, Any]:
    runner_s = statistics.median(r["total_s"] for r in runs)
    floor_s = statistics.median(f["total_s"] for f in floors)
    per_pair = [(r["total_s"] - f["total_s"]) / n * 1000 for r, f in zip(runs, floors, strict=True)]
    return {
        "kind": kind,
        "n": n,
        "max_jobs": max_jobs,
        "loop": loop,
        "baseline_loop": "asyncio",
        "done": min(r["done"] for r in runs),
        "failed": max(r["failed"] for r in runs),
        "runner_s": runner_s,
        "floor_s": floor_s,
        "overhead_ms_per_job": (runner_s - floor_s) / n * 1000,
        "overhead_ms_per_job_each": per_pair,
        "runner_cpu_ms_per_job": statistics.median(r["cpu_s"] for r in runs) / n * 1000,
        "floor_cpu_ms_per_job": statistics.median(f["cpu_s"] for f in floors) / n * 1000,
        "runs": runs,
        "floors": floors,
    }


if __name__ == "__main__":  # one runner round, for run(baseline=...): KIND DIR N MAX_JOBS LOOP
    kind_, folder_, n_, max_jobs_, loop_ = sys.argv[1:6]
    with asyncio.Runner(loop_factory=loop_factory(loop_)) as r_:
        print(json.dumps(r_.run(through_runner(Path(folder_), kind_, int(n_), int(max_jobs_)))))
