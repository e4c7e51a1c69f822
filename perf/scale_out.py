"""Local vs Dask conductors: the same burst of N short jobs, jobs/s and cost per job.

N files are written (by another process) before the runner starts; a retroactive rule makes
one job per file, so the runner starts with the whole burst queued. Timed from the runner's
``started`` (the LocalCluster, when there is one, is up by then) until N jobs are finished.
Variants take turns in each round: the local conductor (warm Python forks, spawned Python,
Bash), and a Dask LocalCluster of ``workers`` processes on this machine (spawned Python, Bash;
no fork server on workers), with ``max_jobs`` as given and with more jobs in flight than
worker slots, which is how a cluster is meant to be fed.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from meow_async import BashRecipe, FilePattern, PythonRecipe, Runner, RunnerConfig

from .loops import loop_factory


def _variants(max_jobs: int, workers: int) -> dict[str, dict[str, Any]]:
    dask = {"conductor": "dask", "dask": {"local_workers": workers}}
    return {
        "local python (warm fork)": {"kind": "python-warm", "max_jobs": max_jobs},
        "local python (spawned)": {"kind": "python", "max_jobs": max_jobs},
        "local bash": {"kind": "bash", "max_jobs": max_jobs},
        f"dask python, {max_jobs} in flight": {"kind": "python", "max_jobs": max_jobs, **dask},
        f"dask python, {8 * workers} in flight": {
            "kind": "python",
            "max_jobs": 8 * workers,
            **dask,
        },
        f"dask bash, {8 * workers} in flight": {"kind": "bash", "max_jobs": 8 * workers, **dask},
    }


def _write_files(folder: Path, n: int) -> None:
    """From another process, so the runner's process does no setup work."""
    code = (
        "import sys, pathlib\n"
        "d = pathlib.Path(sys.argv[1]); d.mkdir(parents=True)\n"
        "for i in range(int(sys.argv[2])): (d / f'{i:05d}.txt').write_text('x')\n"
    )
    subprocess.run([sys.executable, "-c", code, str(folder), str(n)], check=True)


async def _one(root: Path, n: int, variant: dict[str, Any]) -> dict[str, Any]:
    kind = variant["kind"]
    recipe = (
        BashRecipe(name="r", script="true\n")
        if kind == "bash"
        else PythonRecipe(name="r", script="pass\n", fork=kind == "python-warm")
    )
    base = root / "data"
    _write_files(base / "in", n)
    config = RunnerConfig(
        base_dir=base,
        jobs_dir=root / "jobs",
        max_jobs=variant["max_jobs"],
        queue_size=max(1000, n),
        **{k: v for k, v in variant.items() if k in ("conductor", "dask")},
    )
    pattern = FilePattern(name="p", glob="in/*.txt", recipe="r", retroactive=True)
    runner = Runner([pattern], [recipe], config=config)
    task = asyncio.create_task(runner.run())
    await runner.started.wait()
    t0 = time.perf_counter()
    async with asyncio.timeout(600):
        stats = await runner.wait_for(lambda s: s.finished >= n)
    took = time.perf_counter() - t0
    runner.stop()
    await task
    return {"s": took, "jobs_per_s": n / took, "ms_per_job": took * 1000 / n, "done": stats.done}


def run(
    n: int, repeats: int, max_jobs: int, workers: int, loop: str, scratch: Path
) -> dict[str, Any]:
    variants = _variants(max_jobs, workers)
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for r in range(repeats):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in order:
            root = scratch / f"dask-{r}-{len(samples[name])}-{abs(hash(name)) % 10**6}"
            root.mkdir(parents=True)
            with asyncio.Runner(loop_factory=loop_factory(loop)) as lr:
                got = lr.run(_one(root, n, variants[name]))
            samples[name].append(got)
            print(
                f"  {name:32s} {got['jobs_per_s']:7.0f} jobs/s  {got['ms_per_job']:6.2f} ms/job"
                f"  ({got['done']}/{n} done)"
            )
    base = statistics.median(g["ms_per_job"] for g in samples["local python (spawned)"])
    summary: dict[str, dict[str, float]] = {}
    for name, runs in samples.items():
        ms: float = statistics.median(g["ms_per_job"] for g in runs)
        summary[name] = {
            "ms_per_job": round(ms, 3),
            "jobs_per_s": round(1000 / ms, 1),
            "vs_local_spawned": round(ms / base, 2),
        }
    print(f"  N = {n} jobs, {workers} Dask workers x 1 thread, cpus {os.cpu_count()}")
    for name, line in summary.items():
        print(f"  {name:32s} median {line['ms_per_job']:6.2f} ms/job ({line['vs_local_spawned']}x)")
    return {
        "n": n,
        "workers": workers,
        "max_jobs": max_jobs,
        "summary": summary,
        "samples": samples,
    }
