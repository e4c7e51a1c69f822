"""``python -m perf listing``: ``meow-async jobs`` (and ``show PATH``, ``status``) on 100,000
job folders, timed as a user runs them.

The folders are realistic: a real Runner first runs a few jobs of each kind (a file rule, a
sweep of 4 points, a failing rule, a network message), and their ``job.json`` files, exactly as
the runner wrote them, are the templates for the 100,000 clones (ids, paths, times and states
changed; written in ``write_meta``'s format). Each folder's mtime is set to its job's last
record, as the runner's rename of ``job.json`` leaves it. Only ``job.json`` and, for jobs that
started, ``process.log`` are written: nothing else in a job folder is read by the listing.

Each command is the real CLI in a subprocess (interpreter start and imports included), its
stdout read through a pipe, run once untimed (warm page cache) and then ``repeats`` times; the
median is reported.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from meow_async import (
    BashRecipe,
    FilePattern,
    NetworkPattern,
    Pattern,
    Runner,
    RunnerConfig,
    iter_jobs,
)
from meow_async.cli.send import send
from meow_async.conductors.process_log import PROCESS_LOG
from meow_async.model.jobs import META_FILE, job_id_for

#: The budget the issue sets for ``meow-async jobs`` on 100,000 jobs.
BUDGET_S = 2.0

#: Share of the jobs made from each template (the rest of the mix is states, below).
MIX = (("convert", 0.50), ("fit", 0.30), ("check", 0.05), ("ingest", 0.15))


async def _templates(root: Path) -> dict[str, list[dict[str, Any]]]:
    """One real job (or sweep of jobs) per rule kind, as the runner records them."""
    base, jobs = root / "data", root / "jobs"
    for sub in ("in", "sweep", "bad"):
        (base / sub).mkdir(parents=True)
    patterns: list[Pattern] = [
        FilePattern(name="convert", glob="in/*.txt", recipe="ok"),
        FilePattern(
            name="fit",
            glob="sweep/*.txt",
            recipe="ok",
            sweep={
                "a": {"start": 0, "stop": 1, "jump": 1},
                "b": {"start": 0.5, "stop": 1.0, "jump": 0.5},
            },
        ),
        FilePattern(name="check", glob="bad/*.txt", recipe="bad"),
        NetworkPattern(name="ingest", port=0, recipe="ok", ack=True),
    ]
    recipes = [
        BashRecipe(name="ok", script='echo "$input_file"\n'),
        BashRecipe(name="bad", script='echo "no header in $input_file" >&2\nexit 3\n'),
    ]
    cfg = RunnerConfig(base_dir=base, jobs_dir=jobs, spool_dir=root / "spool")
    async with Runner(patterns, recipes, config=cfg) as runner:
        (base / "in" / "a.txt").write_text("a")
        (base / "sweep" / "b.txt").write_text("b")
        (base / "bad" / "c.txt").write_text("c")
        await send("127.0.0.1", runner.ports()["ingest"], b"hello", ack=True)
        async with asyncio.timeout(60):
            await runner.wait_for(lambda s: s.finished >= 7)
    out: dict[str, list[dict[str, Any]]] = {}
    for meta in iter_jobs(jobs):
        out.setdefault(str(meta["rule"]), []).append(meta)
    return out


def make_jobs(root: Path, n: int, *, seed: int = 1) -> dict[str, Any]:
    """``n`` job folders under ``root / "jobs"``; returns where they are and what to ask for."""
    tmpl = asyncio.run(_templates(root / "templates"))
    jobs, base = root / "jobs", root / "data"
    jobs.mkdir(parents=True)
    rng = random.Random(seed)
    now = time.time()
    step = 7 * 86400 / n  # a week of jobs, evenly
    counts: dict[str, int] = {}
    sweep_input = ""
    i = 0
    while i < n:
        rule = rng.choices([r for r, _ in MIX], [w for _, w in MIX])[0]
        group = tmpl[rule] if rule == "fit" else tmpl[rule][:1]
        created = now - 7 * 86400 + i * step
        msg_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime(created)) + f"-{i:012x}"
        path = (
            str(base / "in" / f"f{i:06d}.txt")
            if rule != "fit"
            else str(base / "sweep" / f"s{i:06d}.txt")
        )
        for t in group[: n - i]:
            meta = copy.deepcopy(t)
            event = meta["event"]
            if rule == "ingest":
                key = f"net:{msg_id}"
                event.update(
                    message_id=msg_id, peer=f"10.0.{i % 250}.{i % 7 + 1}:{40000 + i % 20000}"
                )
            else:
                key = f"file:{path}:{i}"
                event["path"] = path
            point = meta.get("sweep") or {}
            job_id = job_id_for(key, rule, point)
            job_dir = jobs / job_id
            state = _state(rng, str(meta["state"]))
            took = rng.uniform(0.002, 2.0)
            event.update(key=key, time=created, base=str(base))
            meta.update(id=job_id, dir=str(job_dir), created=created)
            if rule == "ingest":
                event["path"] = str(job_dir / f"{msg_id}.msg")
                meta["parameters"]["input_file"] = event["path"]
            else:
                meta["parameters"]["input_file"] = path
            last = created
            if state in ("done", "failed"):
                meta.update(state=state, started=created + 0.003, finished=created + 0.003 + took)
                for a in meta.get("attempts") or []:
                    a.update(started=meta["started"], finished=meta["finished"])
                last = meta["finished"]
            elif state == "skipped":
                meta.update(state="skipped", started=None, finished=created + 0.001, exit_code=None)
                meta.update(error=f"the triggering file {path} vanished before the job started")
                last = meta["finished"]
            else:  # queued, or running (queued in job.json; process.log says it started)
                meta.update(state="queued", started=None, finished=None, exit_code=None)
                meta.update(error=None, attempts=[])
            os.mkdir(job_dir)
            with open(job_dir / META_FILE, "wb") as f:
                f.write((json.dumps(meta) + "\n").encode())
            if meta["started"] is not None or state == "running":
                started = meta["started"] or created + 0.003
                log = f"start 1 {started} spawn\npid {100000 + i % 30000} 123 {started}\n"
                if state != "running":
                    log += f"exit {meta['exit_code'] or 0} {meta['finished']}\n"
                (job_dir / PROCESS_LOG).write_text(log)
            os.utime(job_dir, (last, last))
            counts[state] = counts.get(state, 0) + 1
            if rule == "fit" and not sweep_input:
                sweep_input = path
            i += 1
    return {"jobs": jobs, "base": base, "counts": counts, "sweep_input": sweep_input}


def _state(rng: random.Random, real: str) -> str:
    """The template's end (done, or failed for ``check``), mostly; a few of each other state."""
    x = rng.random()
    if x < 0.005:
        return "skipped"
    if x < 0.008:
        return "queued"
    if x < 0.010:
        return "running"
    return real


def time_command(args: list[str], repeats: int, cwd: Path) -> dict[str, Any]:
    """The real CLI's wall time (and CPU time, its children's too: steadier on a shared
    machine): once untimed (warm cache), then ``repeats`` times. Its stdout is read as
    ``| wc -l`` would: in chunks, counting lines."""
    argv = [sys.executable, "-m", "meow_async", *args]
    samples, cpu, lines = [], [], 0
    for i in range(repeats + 1):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        with subprocess.Popen(
            argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        ) as proc:
            out, errs = proc.stdout, proc.stderr
            assert out is not None
            assert errs is not None
            lines = 0
            while chunk := out.read(1 << 20):
                lines += chunk.count(b"\n")
            err = errs.read()
            code = proc.wait()
        took = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if code not in (0, 3):
            raise RuntimeError(f"{' '.join(args)}: exit {code}: {err.decode()}")
        if i:
            samples.append(took)
            cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return {
        "command": "meow-async " + " ".join(args),  # with JOBS for the jobs folder
        "median_s": statistics.median(samples),
        "min_s": min(samples),
        "max_s": max(samples),
        "cpu_s": statistics.median(cpu),
        "samples_s": samples,
        "lines": lines,
    }


def run(n: int, repeats: int, scratch: Path, log: Any = print) -> dict[str, Any]:
    root = scratch / "listing"
    t0 = time.monotonic()
    made = make_jobs(root, n)
    log(f"listing: made {n} job folders in {time.monotonic() - t0:.0f} s: {made['counts']}")
    jobs = made["jobs"]
    rel_input = os.path.relpath(made["sweep_input"], made["base"])
    commands = [
        ["jobs", "JOBS"],
        ["jobs", "JOBS", "--tail", "20"],
        ["jobs", "JOBS", "--state", "failed"],
        ["jobs", "JOBS", "--input", rel_input],  # from the watched folder
        ["jobs", "JOBS", "--rule", "ingest", "--since", "1d"],
        ["jobs", "JOBS", "--json"],
        ["show", "--jobs", "JOBS", rel_input],
        ["status", "JOBS"],
    ]
    results = []
    try:
        for args in commands:
            r = time_command([str(jobs) if a == "JOBS" else a for a in args], repeats, root)
            r["command"] = "meow-async " + " ".join(args)
            results.append(r)
            verdict = (
                "" if args[0] != "jobs" else ("  ok" if r["median_s"] < BUDGET_S else "  OVER")
            )
            log(
                f"listing {r['command']:<56} median "
                f"{r['median_s']:.2f} s (min {r['min_s']:.2f}, max {r['max_s']:.2f}; CPU "
                f"{r['cpu_s']:.2f} s; {r['lines']} lines){verdict}"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {
        "n": n,
        "repeats": repeats,
        "counts": made["counts"],
        "commands": results,
        "jobs_dir": "JOBS: a jobs folder of n jobs, made fresh under --dir",
    }
