"""File events: file closed -> event latency, and a burst of N files -> N events -> N jobs.

Each measurement runs the real Runner on a temporary folder (``--dir``; the disk matters:
say where it was). Latencies use wall-clock times recorded on both sides of the watch, from
the moment the writer's close returned.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meow_async import FilePattern, PythonRecipe, Runner, RunnerConfig, Workflow, iter_jobs
from meow_async.conductors.process_log import last_attempt
from meow_async.monitors.files.monitor import FileMonitor

from .loops import loop_factory
from .sizes import Sizes
from .stats import line, summary

#: (watcher, step, debounce in ms): the default (inotify on the loop: no batching step), then the
#: portable watchfiles backend at our default, at watchfiles' own defaults, and others.
SETTINGS: tuple[tuple[str, int, int], ...] = (
    ("inotify", 0, 0),
    ("watchfiles", 5, 50),
    ("watchfiles", 50, 1600),
    ("watchfiles", 10, 100),
    ("watchfiles", 2, 20),
)


def _finished_at_least(k: int) -> Callable[[Any], bool]:
    return lambda s: s.finished >= k


def own_start(meta: dict[str, Any]) -> float:
    """When the job's own process was there to run its code: the time on the ``pid`` line of
    its process.log, which a warm job writes once it is in its cgroup. The job's ``started``
    is the fork server's ``start`` line, before the fork and the cgroup's join."""
    attempt = last_attempt(Path(meta["dir"]))
    if attempt is None or attempt.pid_time is None:
        return float(meta["started"])
    return attempt.pid_time


#: Seconds between one file's job ending and the next file: an instrument's files come with
#: pauses, and some costs are paid only after one (a cgroup join waits for an RCU grace period
#: when none has run for a while: docs/performance.md, Job containment).
PAUSE = 0.3


async def latency(
    root: Path, n: int, watcher: str, step_ms: int, debounce_ms: int
) -> dict[str, Any]:
    """One file at a time, after a pause: time from its close to the event, to the job's
    start, and to its code (``own_start``)."""
    base, jobs = root / "data", root / "jobs"
    base.mkdir()
    steps = {"watch_step_ms": step_ms, "watch_debounce_ms": debounce_ms} if step_ms else {}
    cfg = RunnerConfig(base_dir=base, jobs_dir=jobs, file_watcher=watcher, **steps)  # type: ignore[arg-type]
    pattern = FilePattern(name="p", glob="*.txt", recipe="r")
    recipe = PythonRecipe(name="r", script="pass\n")  # warm: a fork of the fork server
    written: dict[str, float] = {}
    async with Runner([pattern], [recipe], config=cfg) as runner:
        for i in range(n):
            path = base / f"{i}.txt"
            path.write_text("x")
            written[str(path)] = time.time()  # the close has returned
            async with asyncio.timeout(30):
                await runner.wait_for(_finished_at_least(i + 1))
            await asyncio.sleep(PAUSE)
    to_event, to_start, to_code = [], [], []
    for meta in iter_jobs(jobs):
        t0 = written[meta["event"]["path"]]
        to_event.append(meta["event"]["time"] - t0)
        to_start.append(meta["started"] - t0)
        to_code.append(own_start(meta) - t0)
    return {
        "watcher": watcher,
        "step_ms": step_ms,
        "debounce_ms": debounce_ms,
        "change_to_event": summary(to_event),
        "change_to_job_start": summary(to_start),
        "change_to_job_code": summary(to_code),
    }


async def burst(root: Path, n: int, max_jobs: int) -> dict[str, Any]:
    """N files written at once: time to N events (the monitor alone). Their jobs through a
    whole runner are ``startup``'s measurement."""
    out: dict[str, Any] = {"n": n}
    # Monitor alone: events on the queue.
    base = root / "burst-monitor"
    base.mkdir()
    recipe = PythonRecipe(name="r", script="pass\n")
    wf = Workflow([FilePattern(name="p", glob="*.txt", recipe="r")], [recipe])
    monitor = FileMonitor(base, wf)
    events: asyncio.Queue[Any] = asyncio.Queue()
    stop = asyncio.Event()
    task = asyncio.create_task(monitor.run(events, stop))
    await monitor.ready.wait()
    t0 = time.perf_counter()
    for i in range(n):
        (base / f"{i}.txt").write_text("x")
    t_written = time.perf_counter()
    seen = 0
    async with asyncio.timeout(60):
        while seen < n:
            await events.get()
            seen += 1
    out["events_s"] = time.perf_counter() - t0
    out["write_s"] = t_written - t0
    stop.set()
    await task
    return out


async def direct(root: Path, n: int, max_jobs: int, script_text: str = "pass\n") -> float:
    """The floor: the same N subprocesses launched directly, same concurrency (seconds)."""
    sem = asyncio.Semaphore(max_jobs)
    script = root / "floor.py"
    script.write_text(script_text)

    async def one() -> None:
        async with sem:
            p = await asyncio.create_subprocess_exec(sys.executable, str(script))
            await p.wait()

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return time.perf_counter() - t0


#: The job start path: plain Python jobs, and jobs that import numpy, as scientists' jobs do.
#: Each line of the script is what the job runs; the warm recipe preloads the modules.
STARTUP_SCRIPTS = {"python": ("pass\n", ()), "numpy": ("import numpy\n", ("numpy",))}


#: Writes N files, each closed before the next, and prints when each close returned.
WRITER = """
import json, sys, time
base, n, written = sys.argv[1], int(sys.argv[2]), {}
start = time.time()
for i in range(n):
    path = f"{base}/{i}.txt"
    with open(path, "w") as f:
        f.write("x")
    written[path] = time.time()
print(json.dumps({"start": start, "written": written}))
"""


async def written_burst(runner: Runner, base: Path, n: int) -> tuple[dict[str, float], float]:
    """Another process writes ``n`` files into ``base``, as an instrument or a user would (the
    loop stays free): when each was written, and the seconds from its first write until
    ``n`` jobs finished."""
    writer = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WRITER, str(base), str(n), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await writer.communicate()
    report = json.loads(out)
    async with asyncio.timeout(600):
        await runner.wait_for(_finished_at_least(n))
    return report["written"], time.time() - report["start"]


async def startup(
    root: Path, n: int, max_jobs: int, script_text: str, *, warm: bool, preload: tuple[str, ...]
) -> dict[str, Any]:
    """N files at once -> N Python jobs through a Runner: from the first write to the last job
    finished, and how long after its file the first job started. ``warm``: forked from the
    fork server (the default); else spawned as new interpreters (``fork: false``)."""
    base, jobs = root / "startup-runner", root / "startup-jobs"
    base.mkdir()
    cfg = RunnerConfig(base_dir=base, jobs_dir=jobs, max_jobs=max_jobs, queue_size=max(n, 1))
    recipe = PythonRecipe(name="r", script=script_text, fork=warm, preload=preload if warm else ())
    async with Runner([FilePattern(name="p", glob="*.txt", recipe="r")], [recipe], config=cfg) as r:
        written, took = await written_burst(r, base, n)
        done = r.stats.done
    metas = list(iter_jobs(jobs))
    first = min(metas, key=lambda m: m["started"])
    return {
        "n": n,
        "jobs_s": took,
        "jobs_done": done,
        "first_job_start_ms": (first["started"] - written[first["event"]["path"]]) * 1000,
        "first_job_code_ms": (own_start(first) - written[first["event"]["path"]]) * 1000,
    }


def _startup_point(
    r: asyncio.Runner,
    d: Path,
    sizes: Sizes,
    max_jobs: int,
    text: str,
    preload: tuple[str, ...],
    warm_first: bool,
) -> dict[str, Any]:
    """Warm runner and spawning runner (on ``r``'s loop, in turns: ``warm_first`` says which
    leads), then the direct-spawn baseline on asyncio's own loop, on the same disk.

    Their folders stay until the whole suite ends: on ext4, thousands of files just deleted
    make the next variant's file creations several times slower for minutes, which would
    favour whichever variant ran first (a jobs folder in use grows; it is not emptied
    between bursts)."""
    st: dict[str, Any] = {}
    for warm in (True, False) if warm_first else (False, True):
        sub = d / ("warm" if warm else "spawn")
        sub.mkdir(parents=True)
        res = r.run(startup(sub, sizes.burst_n, max_jobs, text, warm=warm, preload=preload))
        prefix = "" if warm else "spawn_"
        st.update({f"{prefix}{k}": v for k, v in res.items() if k != "n" or warm})
    with asyncio.Runner() as floor_loop:
        st["floor_s"] = floor_loop.run(direct(d, sizes.burst_n, max_jobs, text))
    st["ratio"] = st["jobs_s"] / st["floor_s"]
    st["spawn_ratio"] = st["spawn_jobs_s"] / st["floor_s"]
    st["overhead_per_job_ms"] = (st["spawn_jobs_s"] - st["floor_s"]) / st["n"] * 1000
    st["warm_first"] = warm_first
    return st


def run(sizes: Sizes, scratch: Path, loop: str, max_jobs: int, log: Any = print) -> dict[str, Any]:
    out: dict[str, Any] = {"latency": [], "bursts": [], "startup": []}
    settings = SETTINGS if sizes.name == "full" else SETTINGS[:3]
    with asyncio.Runner(loop_factory=loop_factory(loop)) as r:
        for watcher, step, debounce in settings:
            d = scratch / f"files-lat-{watcher}-{step}"
            d.mkdir()
            try:
                res = r.run(latency(d, sizes.file_latency_n, watcher, step, debounce))
            finally:
                shutil.rmtree(d, ignore_errors=True)
            out["latency"].append(res)
            name = f"{watcher} {step}/{debounce} ms" if step else watcher
            log(line(f"files {name}: closed -> event", res["change_to_event"]))
            log(line(f"files {name}: closed -> job start", res["change_to_job_start"]))
            log(line(f"files {name}: closed -> its code", res["change_to_job_code"]))
        for i in range(sizes.jobs_repeats):
            d = scratch / f"files-burst-{i}"
            d.mkdir()
            try:
                b = r.run(burst(d, sizes.burst_n, max_jobs))
            finally:
                shutil.rmtree(d, ignore_errors=True)
            for kind, (text, preload) in STARTUP_SCRIPTS.items():
                d = scratch / "files-startup" / f"{kind}-{i}"
                st = _startup_point(r, d, sizes, max_jobs, text, preload, warm_first=i % 2 == 0)
                st["kind"] = kind
                out["startup"].append(st)
                log(
                    f"files -> {kind} jobs: {st['jobs_done']} of {st['n']} done in "
                    f"{st['jobs_s'] * 1000:.0f} ms warm, {st['spawn_jobs_s'] * 1000:.0f} ms "
                    f"spawned, vs {st['floor_s'] * 1000:.0f} ms spawning the same script "
                    f"directly: warm {st['ratio']:.3f}x, spawned {st['spawn_ratio']:.2f}x "
                    f"({st['overhead_per_job_ms']:.2f} ms/job over direct); first job started "
                    f"{st['first_job_start_ms']:.1f} ms (warm; its code "
                    f"{st['first_job_code_ms']:.1f} ms), {st['spawn_first_job_start_ms']:.1f} ms "
                    f"(spawned; {st['spawn_first_job_code_ms']:.1f} ms) after its file "
                    f"(max_jobs={max_jobs})"
                )
                if kind == "python":  # the burst's jobs: the same measurement (spawned)
                    b.update({"jobs_s": st["spawn_jobs_s"], "jobs_done": st["spawn_jobs_done"]})
                    b.update(floor_s=st["floor_s"], overhead_per_job_ms=st["overhead_per_job_ms"])
            out["bursts"].append(b)
            log(
                f"files burst of {b['n']}: written in {b['write_s'] * 1000:.1f} ms, all events "
                f"{b['events_s'] * 1000:.1f} ms; {b['jobs_done']} jobs done in "
                f"{b['jobs_s'] * 1000:.0f} ms vs {b['floor_s'] * 1000:.0f} ms for the same "
                f"subprocesses launched directly: {b['overhead_per_job_ms']:.2f} ms/job overhead "
                f"(max_jobs={max_jobs})"
            )
    shutil.rmtree(scratch / "files-startup", ignore_errors=True)
    return out
