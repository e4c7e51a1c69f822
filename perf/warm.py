"""Warm jobs and what their recipes import: the fork server learning it, or not, against direct.

Another process writes N files at once for N Python jobs (``max_jobs`` at a time), for three
recipes: ``pass``, ``import numpy``, and the one users write (read the input with pathlib,
write a result file). None names ``preload``. Each goes through a ``Runner`` three ways:

- ``learning``: a fresh runner and jobs folder; the fork server learns the imports during the
  burst (after 3 jobs of the recipe) and swaps in a new generation part-way;
- ``learned``: a restart of that runner on the same jobs folder (a new data folder), as a
  runner that has run for a while finds it: warm for the learned imports from its first job;
- ``not learning``: ``learn_preload: false``, what every job paid before;

then the floor: the same script (a real input, a result file) spawned directly with the same
concurrency on asyncio's loop. Times run from the writer's first file to the last job
recorded; "first job" is how long after its file the first job started, and its code (see
``files.own_start``). CPU is that of this process's children once they have ended (the fork
servers, and so the jobs they reaped; the writer; the directly spawned scripts): much less
noisy than wall time on a shared machine, and it includes each runner's fixed costs (its fork
servers' imports, the writer). Every variant's folders stay until the suite ends (on ext4,
thousands of files just deleted slow the next variant's file creations for minutes: see
perf/files.py).
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

from meow_async import FilePattern, PythonRecipe, Runner, RunnerConfig, iter_jobs
from meow_async.conductors.learned_preload import LEARNED_FILE

from .files import own_start, written_burst
from .loops import loop_factory
from .tables import table

#: The recipes: what the job runs, and the modules learning should find for it.
SCRIPTS = {
    "pass": ("pass\n", ()),
    "numpy": ("import numpy\n", ("numpy",)),
    "pathlib": (
        "from pathlib import Path\n"
        "text = Path(input_file).read_text()\n"
        'Path("result.txt").write_text(str(len(text)))\n',
        ("pathlib",),
    ),
}
VARIANTS = ("learning", "learned", "not learning")


async def burst(
    base: Path, jobs: Path, n: int, max_jobs: int, script: str, *, learn: bool
) -> dict[str, Any]:
    """N files at once -> N warm Python jobs through a Runner."""
    base.mkdir(parents=True)
    cfg = RunnerConfig(
        base_dir=base, jobs_dir=jobs, max_jobs=max_jobs, queue_size=max(n, 1), learn_preload=learn
    )
    recipe = PythonRecipe(name="r", script=script)
    cpu0 = _children_cpu()
    async with Runner([FilePattern(name="p", glob="*.txt", recipe="r")], [recipe], config=cfg) as r:
        written, took = await written_burst(r, base, n)
        done = r.stats.done
    cpu = _children_cpu() - cpu0  # the fork servers have been reaped: their jobs count
    metas = [m for m in iter_jobs(jobs) if m["event"]["path"] in written]
    first = min(metas, key=lambda m: m["started"])
    record = jobs / LEARNED_FILE
    learned = json.loads(record.read_text()).get("learned", []) if record.exists() else []
    return {
        "jobs_s": took,
        "cpu_ms_per_job": cpu / n * 1000,
        "done": done,
        "first_job_start_ms": (first["started"] - written[first["event"]["path"]]) * 1000,
        "first_job_code_ms": (own_start(first) - written[first["event"]["path"]]) * 1000,
        "learned": learned,
    }


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


async def direct(root: Path, n: int, max_jobs: int, script: str) -> tuple[float, float]:
    """The floor: the same script spawned N times, ``max_jobs`` at once, on a real input."""
    root.mkdir(parents=True)
    data = root / "input.txt"
    data.write_text("x")
    (root / "floor.py").write_text(f"input_file = {str(data)!r}\n" + script)
    sem = asyncio.Semaphore(max_jobs)

    async def one() -> None:
        async with sem:
            p = await asyncio.create_subprocess_exec(sys.executable, "floor.py", cwd=root)
            if await p.wait():
                raise RuntimeError(f"the floor's script failed in {root}")

    t0, cpu0 = time.perf_counter(), _children_cpu()
    await asyncio.gather(*(one() for _ in range(n)))
    return time.perf_counter() - t0, (_children_cpu() - cpu0) / n * 1000


def point(
    r: asyncio.Runner, d: Path, n: int, max_jobs: int, script: str, learning_first: bool
) -> dict[str, Any]:
    """One round of one recipe: the learning runner then its restart, and the runner that
    does not learn, in turns (``learning_first`` says which leads), then the floor."""
    res: dict[str, Any] = {}

    def learning() -> None:
        jobs = d / "learning-jobs"
        res["learning"] = r.run(burst(d / "learning", jobs, n, max_jobs, script, learn=True))
        res["learned"] = r.run(burst(d / "learned", jobs, n, max_jobs, script, learn=True))

    def not_learning() -> None:
        res["not learning"] = r.run(
            burst(d / "off", d / "off-jobs", n, max_jobs, script, learn=False)
        )

    for step in (learning, not_learning) if learning_first else (not_learning, learning):
        step()
    with asyncio.Runner() as floor_loop:
        res["floor_s"], res["floor_cpu_ms_per_job"] = floor_loop.run(
            direct(d / "floor", n, max_jobs, script)
        )
    for v in VARIANTS:
        res[v]["ratio"] = res[v]["jobs_s"] / res["floor_s"]
        res[v]["cpu_ratio"] = res[v]["cpu_ms_per_job"] / res["floor_cpu_ms_per_job"]
    res["learning_first"] = learning_first
    return res


def run(
    n: int, repeats: int, max_jobs: int, loop: str, scratch: Path, log: Any = print
) -> list[dict[str, Any]]:
    out = []
    with asyncio.Runner(loop_factory=loop_factory(loop)) as r:
        for i in range(repeats):
            for kind, (script, _) in SCRIPTS.items():
                st = point(r, scratch / f"warm-{kind}-{i}", n, max_jobs, script, i % 2 == 0)
                st.update(kind=kind, n=n, max_jobs=max_jobs, loop=loop)
                out.append(st)
                log(
                    f"warm {kind:<7} {n} files -> jobs (max_jobs={max_jobs}), direct "
                    f"{st['floor_s']:.2f} s, CPU {st['floor_cpu_ms_per_job']:.1f} ms/job; "
                    + "; ".join(
                        f"{v} {st[v]['jobs_s']:.2f} s = {st[v]['ratio']:.3f}x, CPU "
                        f"{st[v]['cpu_ms_per_job']:.1f} ms/job = {st[v]['cpu_ratio']:.3f}x, "
                        f"first job {st[v]['first_job_start_ms']:.1f} ms (its code "
                        f"{st[v]['first_job_code_ms']:.1f} ms)"
                        for v in VARIANTS
                    )
                    + f"; learned: {', '.join(st['learned']['learned']) or 'nothing'}"
                )
    return out


def section(points: list[dict[str, Any]]) -> list[str]:
    """Markdown: per recipe, each variant's ratio to direct (range over rounds)."""
    rows = []
    for kind in SCRIPTS:
        mine = [p for p in points if p["kind"] == kind]
        if not mine:
            continue
        row = [kind, str(mine[0]["n"]), _range([p["floor_s"] for p in mine], " s", 2)]
        row += [
            _range([p[v]["ratio"] for p in mine], "x", 3)
            + " (CPU "
            + _range([p[v]["cpu_ratio"] for p in mine], "x)", 3)
            for v in VARIANTS
        ]
        row.append(
            _range([p["learned"]["first_job_start_ms"] for p in mine], " ms", 1)
            + " (its code "
            + _range([p["learned"]["first_job_code_ms"] for p in mine], " ms)", 1)
        )
        rows.append(row)
    head = ["recipe", "jobs", "direct spawn", *(f"{v} / direct (CPU)" for v in VARIANTS)]
    return ["## Warm jobs and learned imports", "", *table([*head, "first job (learned)"], rows)]


def _range(values: list[float], unit: str, digits: int) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.{digits}f}-{hi:.{digits}f}{unit}" if lo != hi else f"{lo:.{digits}f}{unit}"
