"""The polling watcher and the job-end scan: what a look costs on a large tree, and how soon a
chain's next job starts when only the job's end can tell the runner.

1. ``looks``: 100,000 files in 1,000 folders. The first look (the index built from nothing),
   quiet looks (folder mtimes unchanged: one ``stat`` per folder), a full look (every file),
   and a look after 100 new files in 10 folders; CPU seconds each (the look runs in one
   thread, so CPU time is its cost), the index on disk, and the Python memory the watcher
   holds (tracemalloc) against a dict of every file's state, the obvious alternative.
2. ``handoff``: a two-stage chain, one chain at a time: stage one's job (started by a TCP
   message) writes its declared output and ends, stage two's job starts. Variants take turns:
   ``poll`` every 300 s (only the job-end scan can see the output) and ``inotify`` (the
   kernel reports the writer's close; no job-end scan is made on a local folder). Time from stage
   one's end (the ``exit`` line its process wrote in process.log) to stage two's start.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meow_async import (
    FilePattern,
    NetworkPattern,
    PythonRecipe,
    Runner,
    RunnerConfig,
    Workflow,
    iter_jobs,
)
from meow_async.monitors.files.changes import FileState
from meow_async.monitors.files.monitor import FileMonitor
from meow_async.monitors.files.poll_watch import PollWatch

from .loops import loop_factory
from .stats import line, summary


def _tree(base: Path, folders: int, per_folder: int) -> None:
    for d in range(folders):
        folder = base / f"run{d // 100:02d}" / f"f{d:04d}"
        folder.mkdir(parents=True)
        for i in range(per_folder):
            (folder / f"frame{i:03d}.dat").write_bytes(b"x" * 16)


def _look(watch: PollWatch) -> dict[str, float | int]:
    watch._look_locked(False)
    return dict(watch.last_look)


def looks(scratch: Path, folders: int = 1000, per_folder: int = 100) -> dict[str, Any]:
    root = scratch / "poll-looks"
    base = root / "data"
    base.mkdir(parents=True)
    t0 = time.monotonic()
    _tree(base, folders, per_folder)
    made = time.monotonic() - t0
    print(f"  {folders * per_folder:,} files in {folders:,} folders made in {made:.1f} s")
    pattern = FilePattern(name="p", glob="**/*.dat", recipe="r")
    monitor = FileMonitor(
        base, Workflow([pattern], [PythonRecipe(name="r", script="pass\n")]), watcher="poll"
    )
    index = root / "poll-index.sqlite"
    watch = PollWatch(monitor, interval=1.0, settle=2.0, index=index, full_interval=3600)
    out: dict[str, Any] = {"files": folders * per_folder, "folders": folders}
    # CPU first, without tracemalloc (it slows every allocation); memory after, with it.
    t0, c0 = time.monotonic(), time.process_time()
    watch._open_and_look()
    out["first"] = {"seconds": time.monotonic() - t0, "cpu_seconds": time.process_time() - c0}
    quiet = [_look(watch) for _ in range(5)]
    out["quiet"] = quiet
    for d in range(0, folders, folders // 10):  # 10 folders get 10 new files each
        folder = base / f"run{d // 100:02d}" / f"f{d:04d}"
        for i in range(10):
            (folder / f"new{i}.dat").write_bytes(b"y" * 16)
    out["changed"] = _look(watch)
    watch._last_full = -1e9  # the next look is a full one
    out["full"] = _look(watch)
    tracemalloc.start()
    watch._close_db()
    watch._open_and_look()  # the index as a restart finds it: the folders are read back
    out["held_bytes"] = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    _look(watch)
    out["quiet_peak_bytes"] = tracemalloc.get_traced_memory()[1]
    watch._last_full = -1e9
    tracemalloc.reset_peak()
    _look(watch)
    out["full_peak_bytes"] = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    watch.close()
    out["index_bytes"] = sum(
        p.stat().st_size for p in root.iterdir() if p.name.startswith(index.name)
    )
    with sqlite3.connect(index) as db:
        out["index_rows"] = db.execute("SELECT count(*) FROM files").fetchone()[0]
    # The alternative: every file's state in a dict.
    tracemalloc.start()
    states = {
        os.path.join(dirpath, n): FileState(1, 2, 16, time.time_ns())
        for dirpath, _, names in os.walk(base)
        for n in names
    }
    out["dict_bytes"] = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del states
    q = sorted(float(x["cpu_seconds"]) for x in quiet)[len(quiet) // 2]
    print(
        f"  first look {out['first']['seconds']:.2f} s ({out['first']['cpu_seconds']:.2f} s CPU); "
        f"quiet look {q * 1000:.1f} ms CPU ({quiet[-1]['folders_listed']} folders listed); "
        f"100 new files {float(out['changed']['cpu_seconds']) * 1000:.1f} ms CPU "
        f"({out['changed']['folders_listed']} listed, {out['changed']['changes']} changes); "
        f"full look {float(out['full']['cpu_seconds']):.2f} s CPU"
    )
    print(
        f"  index {out['index_bytes'] / 1e6:.1f} MB on disk ({out['index_rows']:,} rows); "
        f"the watcher holds {out['held_bytes'] / 1e6:.2f} MB in Python (peak in a quiet look "
        f"{out['quiet_peak_bytes'] / 1e6:.2f} MB, in a full look "
        f"{out['full_peak_bytes'] / 1e6:.2f} MB); a dict of every file's state: "
        f"{out['dict_bytes'] / 1e6:.1f} MB"
    )
    return out


WRITE = """
from pathlib import Path
Path(out).write_text("result")
"""


async def _handoff(root: Path, watcher: str, n: int) -> list[float]:
    """``n`` chains one after the other (no queueing between them): a message over TCP
    starts stage one, whose job writes its declared output and ends."""
    base, jobs = root / "data", root / "jobs"
    (base / "out").mkdir(parents=True)
    settings: dict[str, Any] = {"poll_interval": 300} if watcher == "poll" else {}
    cfg = RunnerConfig(base_dir=base, jobs_dir=jobs, file_watcher=watcher, **settings)  # type: ignore[arg-type]
    one = NetworkPattern(
        name="one", port=0, recipe="write", outputs={"out": "{BASE}/out/{JOB}.txt"}
    )
    two = FilePattern(name="two", glob="out/*.txt", recipe="noop")
    recipes = [
        PythonRecipe(name="write", script=WRITE),
        PythonRecipe(name="noop", script="pass\n"),
    ]
    async with Runner([one, two], recipes, config=cfg) as runner:
        port = runner.ports()["one"]
        for i in range(n):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"x")
            writer.close()
            await writer.wait_closed()
            async with asyncio.timeout(30):
                await runner.wait_for(_finished(2 * (i + 1)))
    metas = list(iter_jobs(jobs))
    ends = {m["parameters"]["out"]: _exited(Path(m["dir"])) for m in metas if m["rule"] == "one"}
    return [m["started"] - ends[m["event"]["path"]] for m in metas if m["rule"] == "two"]


def _exited(job_dir: Path) -> float:
    """When the job's process ended: the time on the ``exit`` line it wrote itself."""
    lines = (job_dir / "process.log").read_text().splitlines()
    return float(next(ln for ln in reversed(lines) if ln.startswith("exit ")).split()[2])


def _finished(k: int) -> Callable[[Any], bool]:
    return lambda s: bool(s.finished >= k)


def handoff(scratch: Path, loop: str, n: int = 100, rounds: int = 3) -> dict[str, Any]:
    out: dict[str, list[float]] = {"poll": [], "inotify": []}
    for r in range(rounds):
        for watcher in out:  # variants take turns
            root = scratch / f"handoff-{watcher}-{r}"
            with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
                out[watcher] += runner.run(_handoff(root, watcher, n))
    result = {w: summary(samples) for w, samples in out.items()}
    for w, s in result.items():
        print("  " + line(f"job end -> next start ({w})", s))
    return result


def run(scratch: Path, loop: str, size: str) -> dict[str, Any]:
    small = size == "small"
    return {
        "looks": looks(scratch),
        "handoff": handoff(scratch, loop, n=50 if small else 200, rounds=3 if small else 5),
    }
