"""``python -m perf history``: what months of history cost a restart and the CLI.

Builds ``--history-jobs`` finished jobs (100,000 by default; 1,000,000 with ``--history-jobs
1000000``) through the project's own code: the runner's ``Handler`` makes each job's folder and
index row from a real event (a batch of events per thread hop, as a burst is made), then each
end is written by ``Records``' own function (``job.json``, the index row, empty output files
removed), with the ``process.log`` and output a job leaves. The jobs are spread over 30 days
(the handler's clock is moved along), 97% done, 3% failed.

Then, on the same history, each of these is timed for this tree's code and for the code of
another commit (``--history-base``, default the branch point ``HEAD~N`` named below, checked
out with ``git archive`` into the scratch folder and run with ``PYTHONPATH``): the older code
reads the flat layout it wrote, so the job folders are moved (renamed, no copy) between the two:

- ``meow-async run`` from its start to the banner (printed once the runner has started), and
  its RSS then; the same on an empty jobs folder (no history) for both;
- ``meow-async jobs --tail 20``, ``jobs --state failed``, ``status`` (no runner), and
  ``--version`` (the CLI's own start-up), each once untimed, then ``--repeats`` times.

Disk: bytes (``du``) and files (``find | wc -l``) per job for both layouts' folders.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from meow_async import BashRecipe, FilePattern, Rule
from meow_async.conductors.base import _write_all
from meow_async.handlers import Handler
from meow_async.model import jobs as jobs_model
from meow_async.model.events import Event
from meow_async.model.index import INDEX_FILE, JobIndex
from meow_async.model.patterns import Change

from .cli import HISTORY_BASE
from .listing import time_command
from .procs import ROOT

#: The commit before the index: what "before" means in docs/performance.md.
BASE = HISTORY_BASE

DAYS = 30
#: Trivial jobs a real runner makes for the disk measurement.
DISK_JOBS = 200
#: Rows of the index-only measurement, beside the history's own size.
INDEX_ONLY = 1_000_000
FAILED = 0.03
BATCH = 500

_WORKFLOW = """\
runner: {base_dir: data, jobs_dir: jobs, max_jobs: 2}
recipes:
  ok: {kind: bash, script: 'echo "$input_file"'}
  bad: {kind: bash, script: 'echo "no header in $input_file" >&2; exit 3'}
patterns:
  convert: {glob: 'in/*.txt', recipe: ok}
  check: {glob: 'bad/*.txt', recipe: bad}
"""


class _Clock:
    """The handler's clock, moved along the history."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


def build(root: Path, n: int, *, seed: int = 7, log: Any = print) -> dict[str, int]:
    """``n`` finished jobs under ``root / "jobs"``, made as the runner makes and ends them."""
    rng = random.Random(seed)
    base, jobs = root / "data", root / "jobs"
    (base / "in").mkdir(parents=True)
    (base / "bad").mkdir(parents=True)
    jobs.mkdir(parents=True)
    (root / "workflow.yaml").write_text(_WORKFLOW)
    rules = {
        "convert": Rule(
            pattern=FilePattern(name="convert", glob="in/*.txt", recipe="ok"),
            recipe=BashRecipe(name="ok", script='echo "$input_file"'),
        ),
        "check": Rule(
            pattern=FilePattern(name="check", glob="bad/*.txt", recipe="bad"),
            recipe=BashRecipe(name="bad", script='echo "no header in $input_file" >&2; exit 3'),
        ),
    }
    index, _ = JobIndex.open(jobs)
    clock = _Clock(time.time() - DAYS * 86400)
    handler = Handler(jobs, index=index, clock=clock.time)
    step = DAYS * 86400 / n
    counts: dict[str, int] = {}
    t0 = time.monotonic()
    try:
        i = 0
        while i < n:
            events = []
            for _ in range(min(BATCH, n - i)):
                rule = rules["check" if rng.random() < FAILED else "convert"]
                sub = "bad" if rule.name == "check" else "in"
                path = str(base / sub / f"f{i:07d}.txt")
                events.append(
                    Event(
                        kind="file",
                        path=path,
                        base=str(base),
                        rule=rule,
                        change=Change.created,
                        time=clock.now,
                        key=f"file:{path}:2049:{1000 + i}:2:{int(clock.now * 1e9)}",
                    )
                )
                i += 1
            made = handler._make_many(events)
            ended = []
            for result in made:
                if isinstance(result, Exception):
                    raise result
                for job in result:
                    ok = job.rule == "convert"
                    start = clock.now + 0.003
                    took = rng.uniform(0.002, 0.05)
                    code = 0 if ok else 3
                    with open(job.dir / "process.log", "w") as f:
                        f.write(f"start 1 {start:.6f} fork\npid {10000 + i % 30000} 1 {start}\n")
                        f.write(f"exit {code} {start + took:.6f}\n")
                    out = "stdout.txt" if ok else "stderr.txt"
                    (job.dir / out).write_text(f"{job.meta['event']['path']}\n")
                    (job.dir / ("stderr.txt" if ok else "stdout.txt")).touch()
                    error = None if ok else f"exit code 3: no header in {job.meta['event']['path']}"
                    job.meta.update(
                        state="done" if ok else "failed",
                        started=start,
                        finished=start + took,
                        exit_code=code,
                        error=error,
                        attempts=[
                            {
                                "started": start,
                                "finished": start + took,
                                "exit_code": code,
                                "error": error,
                            }
                        ],
                    )
                    counts[job.meta["state"]] = counts.get(job.meta["state"], 0) + 1
                    ended.append(job)
                clock.now += step
            for err in _write_all(ended):
                if err is not None:
                    raise err
            if i % 50_000 < BATCH:
                log(f"history: {i} jobs made ({time.monotonic() - t0:.0f} s)")
    finally:
        index.close()
    return counts


def flatten(jobs: Path) -> None:
    """The day folders' jobs moved to the jobs folder itself (the layout before the index),
    and the index set aside."""
    for day in sorted(p for p in jobs.iterdir() if p.is_dir() and len(p.name) == 10):
        for job in os.scandir(day):
            os.rename(job.path, jobs / job.name)
        day.rmdir()
    aside = jobs.parent / "index-aside"
    aside.mkdir(exist_ok=True)
    for f in jobs.glob(INDEX_FILE + "*"):
        f.rename(aside / f.name)


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"the history suite needs {name}")
    return found


def checkout(commit: str, into: Path) -> Path:
    """``src/`` of ``commit``, extracted with ``git archive`` (no worktree); returns its path."""
    into.mkdir(parents=True, exist_ok=True)
    archive = into / "src.tar"
    subprocess.run(
        [_tool("git"), "archive", "--format=tar", "-o", str(archive), commit, "src"],
        cwd=ROOT,
        check=True,
    )
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


@contextlib.contextmanager
def _runner(root: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """``meow-async run`` in ``root`` (this code or the base's, by ``env``), from its
    banner's last line (printed once the runner has started) until SIGTERM at the end."""
    with tempfile.TemporaryFile("w+") as err:  # a file, not a pipe: no one reads it meanwhile
        proc = subprocess.Popen(
            [sys.executable, "-m", "meow_async", "run", "-q", "workflow.yaml"],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith("Then:"):
                    break
            else:
                proc.wait()
                err.seek(0)
                raise RuntimeError(f"the runner did not start: {err.read()}")
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=120)


def start(root: Path, env: dict[str, str]) -> tuple[float, int]:
    """``meow-async run`` until its banner's last line: (seconds, RSS in kB then)."""
    t0 = time.perf_counter()
    with _runner(root, env) as proc:
        took = time.perf_counter() - t0
        with open(f"/proc/{proc.pid}/status") as f:
            rss = next(int(x.split()[1]) for x in f if x.startswith("VmRSS:"))
    return took, rss


def _starts(root: Path, env: dict[str, str], repeats: int) -> dict[str, Any]:
    start(root, env)  # warm the page cache, as a restart of a machine that ran finds it
    runs = [start(root, env) for _ in range(repeats)]
    return {
        "median_s": statistics.median(t for t, _ in runs),
        "samples_s": [t for t, _ in runs],
        "rss_mb": statistics.median(r for _, r in runs) / 1024,
    }


def disk(jobs: Path, n: int) -> dict[str, float]:
    """Bytes (``du``) and files (``find``) per job folder, the index apart."""
    du = subprocess.run(
        [_tool("du"), "-s", "--block-size=1", "--exclude", INDEX_FILE + "*", str(jobs)],
        capture_output=True,
        text=True,
        check=True,
    )
    files = subprocess.run(
        [_tool("find"), str(jobs), "-type", "f", "-not", "-name", INDEX_FILE + "*"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.count("\n")
    index_bytes = sum(p.stat().st_size for p in jobs.glob(INDEX_FILE + "*"))
    return {
        "bytes_per_job": int(du.stdout.split()[0]) / n,
        "files_per_job": files / n,
        "index_bytes_per_job": index_bytes / n,
    }


def real_disk(root: Path, env: dict[str, str], n: int) -> dict[str, float]:
    """A real runner (this code or the base's) makes and runs ``n`` trivial Bash jobs (one
    ``echo``): what its job folders take on disk."""
    (root / "data" / "in").mkdir(parents=True)
    (root / "data" / "bad").mkdir(parents=True)
    (root / "workflow.yaml").write_text(_WORKFLOW)
    with _runner(root, env):
        for i in range(n):
            (root / "data" / "in" / f"{i}.txt").write_text(f"{i}\n")
        deadline = time.monotonic() + 300
        while _done(root / "jobs") < n:
            if time.monotonic() > deadline:
                raise RuntimeError("the jobs did not finish")
            time.sleep(0.2)
    for f in ("spool",):
        shutil.rmtree(root / f, ignore_errors=True)
    return disk(root / "jobs", n)


def _done(jobs: Path) -> int:
    n = 0
    for meta in jobs_model.iter_jobs(jobs):  # either layout
        n += meta.get("state") == "done"
    return n


COMMANDS = (
    ["--version"],
    ["jobs", "JOBS", "--tail", "20"],
    ["jobs", "JOBS", "--state", "failed"],
    ["status", "JOBS"],
)


def _cli(root: Path, env: dict[str, str], repeats: int, log: Any, name: str) -> list[Any]:
    out = []
    jobs = str(root / "jobs")
    for args in COMMANDS:
        old = os.environ.copy()
        os.environ.clear()
        os.environ.update(env)
        try:
            r = time_command([jobs if a == "JOBS" else a for a in args], repeats, root)
        finally:
            os.environ.clear()
            os.environ.update(old)
        r["command"] = "meow-async " + " ".join(args)
        out.append(r)
        log(
            f"history {name:<6} {r['command']:<40} median {r['median_s'] * 1000:7.0f} ms "
            f"(min {r['min_s'] * 1000:.0f}, max {r['max_s'] * 1000:.0f}; {r['lines']} lines)"
        )
    return out


def commit_cost(folder: Path, n: int = 300, rounds: int = 4) -> dict[str, Any]:
    """What one index commit (one job's row, as the handler writes it) costs with
    ``synchronous=NORMAL`` (the default) and ``FULL`` (``durable: true``), taking turns."""
    from meow_async.model.index import _SCHEMA, _UPSERT, row_of

    out: dict[str, list[float]] = {"NORMAL": [], "FULL": []}
    for r in range(rounds):
        for mode in ("NORMAL", "FULL") if r % 2 == 0 else ("FULL", "NORMAL"):
            path = folder / f"commit-{mode}-{r}.sqlite3"
            conn = sqlite3.connect(path, isolation_level=None)
            conn.executescript(_SCHEMA)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {mode}")
            samples = []
            for i in range(n):
                row = row_of({"id": f"r-{i:016x}", "rule": "r", "created": time.time()}, "d/x")
                t0 = time.perf_counter()
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(_UPSERT, row)
                conn.execute("COMMIT")
                samples.append(time.perf_counter() - t0)
            conn.close()
            out[mode].append(statistics.median(samples) * 1e6)
    return {mode: {"median_us": statistics.median(v), "rounds_us": v} for mode, v in out.items()}


def index_queries(folder: Path, n: int, repeats: int = 5) -> dict[str, Any]:
    """The index alone at ``n`` rows (no folders: rows as the handler writes them, 3% failed,
    spread over 30 days): how long opening it and each query a command makes take, in-process
    (the CLI's start-up apart). Medians of ``repeats``."""
    from meow_async.model.index import _SCHEMA, _UPSERT, Select, row_of

    folder.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(folder / INDEX_FILE, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(_SCHEMA)
    rng = random.Random(3)
    start = time.time() - DAYS * 86400
    conn.execute("BEGIN")
    batch = []
    for i in range(n):
        failed = rng.random() < FAILED
        created = start + i * DAYS * 86400 / n
        meta: dict[str, Any] = {
            "id": f"{'check' if failed else 'convert'}-{i:016x}",
            "rule": "check" if failed else "convert",
            "state": "failed" if failed else "done",
            "created": created,
            "started": created + 0.003,
            "finished": created + 0.01,
            "exit_code": 3 if failed else 0,
            "attempts": [{}],
            "event": {"kind": "file", "path": f"/data/in/f{i:07d}.txt", "base": "/data"},
        }
        batch.append(row_of(meta, f"{jobs_model.day_of(created)}/{meta['id']}"))
        if len(batch) == 10_000:
            conn.executemany(_UPSERT, batch)
            batch = []
    conn.executemany(_UPSERT, batch)
    conn.execute("INSERT INTO meta VALUES ('last_commit', ?), ('open', 0)", (time.time(),))
    conn.execute("COMMIT")
    conn.close()
    size = sum(p.stat().st_size for p in folder.glob(INDEX_FILE + "*"))

    def timed(fn: Any) -> float:
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
        return statistics.median(samples) * 1000

    def read(q: Select) -> None:
        index = JobIndex.read(folder)
        assert index is not None
        try:
            index.select(q)
        finally:
            index.close()

    def counts() -> None:
        index = JobIndex.read(folder)
        assert index is not None
        try:
            index.counts()
            index.select(Select(), only=("queued", "running"))
        finally:
            index.close()

    def start_open() -> None:
        # No reconciliation: there are no folders here (it would find every day gone); with
        # folders, a start after a clean stop lists none of them either.
        index, _ = JobIndex.open(folder, repair=False)
        index.unfinished()
        index.close()

    out = {
        "n": n,
        "index_bytes_per_job": size / n,
        "tail_20_ms": timed(lambda: read(Select(tail=20))),
        "state_failed_ms": timed(lambda: read(Select(states=frozenset({"failed"})))),
        "status_counts_ms": timed(counts),
        "open_and_unfinished_ms": timed(start_open),
    }
    index = JobIndex.read(folder)
    assert index is not None
    try:
        out["rows"] = index.count()
        out["failed"] = len(index.select(Select(states=frozenset({"failed"}))))
    finally:
        index.close()
    return out


def run(n: int, repeats: int, scratch: Path, base: str = BASE, log: Any = print) -> dict[str, Any]:
    root = scratch / "history"
    empty = scratch / "history-empty"
    root.mkdir()
    costs = commit_cost(root)
    log(
        "history: one index commit (one row): synchronous=NORMAL "
        f"{costs['NORMAL']['median_us']:.0f} us, FULL {costs['FULL']['median_us']:.0f} us "
        f"(median of {len(costs['NORMAL']['rounds_us'])} rounds' medians)"
    )
    (empty / "data" / "in").mkdir(parents=True)
    (empty / "data" / "bad").mkdir(parents=True)
    (empty / "workflow.yaml").write_text(_WORKFLOW)
    (root / "data").mkdir()
    t0 = time.monotonic()
    counts = build(root, n, log=log)
    shutil.rmtree(root / "data" / "in")  # nothing to catch up on: the files are long gone
    (root / "data" / "in").mkdir()
    log(f"history: {n} jobs built in {time.monotonic() - t0:.0f} s: {counts}")
    old_src = checkout(base, scratch / "history-base")
    env_new = {**os.environ}
    env_old = {**os.environ, "PYTHONPATH": str(old_src)}
    out: dict[str, Any] = {"n": n, "repeats": repeats, "counts": counts, "base": base}
    out["commit_us"] = costs
    for size in sorted({n, INDEX_ONLY}):
        q = out.setdefault("index_only", {})[size] = index_queries(
            scratch / f"history-index-{size}", size
        )
        log(
            f"history: the index alone at {size} rows: open+unfinished "
            f"{q['open_and_unfinished_ms']:.1f} ms, tail 20 {q['tail_20_ms']:.1f} ms, state "
            f"failed {q['state_failed_ms']:.1f} ms, status {q['status_counts_ms']:.1f} ms, "
            f"{q['index_bytes_per_job']:.0f} bytes per job"
        )
        shutil.rmtree(scratch / f"history-index-{size}", ignore_errors=True)
    out["disk_history"] = disk(root / "jobs", n)
    for name, env in (("new", env_new), ("old", env_old)):
        if name == "old":
            flatten(root / "jobs")
        shutil.rmtree(empty / "jobs", ignore_errors=True)
        out[f"start_empty_{name}"] = _starts(empty, env, repeats)
        out[f"start_{name}"] = _starts(root, env, repeats)
        for k in (f"start_empty_{name}", f"start_{name}"):
            log(
                f"history {name:<6} {k:<22} median {out[k]['median_s']:.2f} s, "
                f"RSS {out[k]['rss_mb']:.0f} MB"
            )
        out[f"cli_{name}"] = _cli(root, env, repeats, log, name)
    shutil.rmtree(root, ignore_errors=True)
    for name, env in (("new", env_new), ("old", env_old)):
        d = out[f"disk_{name}"] = real_disk(scratch / f"history-disk-{name}", env, DISK_JOBS)
        log(
            f"history {name:<6} {DISK_JOBS} trivial jobs by a real runner: "
            f"{d['bytes_per_job']:.0f} bytes and {d['files_per_job']:.2f} files per job "
            f"(index {d['index_bytes_per_job']:.0f} bytes per job)"
        )
    return out
