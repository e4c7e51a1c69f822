"""``python -m perf <suite>``: run benchmarks, print them, save JSON, Markdown and plots."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import (
    boot,
    burst,
    chunks,
    files,
    http,
    jobs,
    listing,
    memory,
    output,
    poll,
    report_tests,
    scale_out,
    schedules,
    startup,
    viewers,
    warm,
)
from .limits import raise_nofile
from .loops import LOOPS
from .machine import describe
from .sizes import SIZES

SUITES = {
    "network": "the report's tests a, b, c (section 4.1) and per-event latency, against the "
    "floor and meow_base",
    "files": "file change -> event / job start latency; a burst of files -> events -> jobs",
    "jobs": "network events -> finished jobs (Bash, Python) against the same subprocesses",
    "warm": "a burst of files -> warm Python jobs (pass, import numpy, a pathlib recipe) while "
    "the fork server learns their imports, after it learned them (a restart), and with "
    "learn_preload: false, against spawning the same script directly",
    "memory": "peak RSS under 10,000 idle connections, under a flood, and under TLS (idle "
    "connections, stalled handshakes)",
    "chunks": "network intake time by chunk size",
    "http": "HTTP intake: requests/s and request -> event latency (plain and HMAC-signed) "
    "against a bare aiohttp handler writing the same spool files",
    "dask": "a burst of 1000 short jobs: local conductor vs a Dask LocalCluster (jobs/s, "
    "ms per job)",
    "listing": "meow-async jobs (and show PATH, status) on 100,000 job folders, the real CLI",
    "filters": "a when: filter's cost per event (2 kB JSON body, two clauses) against none",
    "ticks": "every: ticks -> warm Python job start, p50/p99",
    "poll": "the polling watcher on 100,000 files in 1,000 folders (CPU per look, memory of "
    "the index), and job end -> next job start through the job-end scan",
    "viewers": "the live view: a burst of 1000 file jobs with 10 open SSE viewers against none "
    "(taking turns), and the messages each viewer got",
    "burst": "20,000 small POSTs, --concurrency in flight (200 is the issue's), against a real "
    "runner with default settings: answers by status, requests/s, RSS",
    "boot": "a spawned Python job's own start: python script.py against the bootstrap "
    "compiling the script and given the runner's compiled code",
    "startup": "the wall clock of --version, send, validate, jobs and status (a new process "
    "each), this tree against --baseline-src, beside python -c pass",
    "history": "restart, RSS, jobs --tail/--state and status over N finished jobs (100,000; "
    "--history-jobs 1000000), this tree against --history-base; disk per job",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m perf",
        description="meow_async benchmarks. The machine and above all the disk set the numbers: "
        "compare variants within one run, as ratios.",
        epilog="suites: " + "; ".join(f"{k}: {v}" for k, v in SUITES.items()),
    )
    p.add_argument("suite", choices=[*SUITES, "all"])
    p.add_argument(
        "--size",
        choices=list(SIZES),
        default="small",
        help="small (default): minutes; full: the report's sizes and 50 repeats",
    )
    p.add_argument("--repeats", type=int, help="rounds per network point (default: by --size)")
    p.add_argument("--json", type=Path, help="write every sample, the machine and versions here")
    p.add_argument("--markdown", type=Path, help="write tables here")
    p.add_argument("--plots", type=Path, help="write PNG plots into this folder")
    p.add_argument(
        "--loop",
        choices=LOOPS,
        default="asyncio",
        help="meow_async's event loop (network: the in-process variants; with a separate sender "
        "meow_async runs on both loops; jobs, files: the direct-spawn baseline always runs on "
        "asyncio's loop)",
    )
    p.add_argument(
        "--dir",
        type=Path,
        help="scratch folders go under here (default: the "
        "system temp dir); the disk matters, so say where it was",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=100,
        help="connections the sender keeps in flight (default 100)",
    )
    p.add_argument("--payload", type=int, default=32, help="bytes per message (default 32)")
    p.add_argument(
        "--max-jobs",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="jobs at once, runner and direct (default: usable CPUs)",
    )
    p.add_argument("--no-meow-base", action="store_true", help="skip meow_base")
    p.add_argument(
        "--tests",
        default="a,b,c,paced",
        help="network suite: which of the report's tests a, b, c and the paced latency test "
        "to run, comma-separated (default: all)",
    )
    p.add_argument(
        "--memory-loads",
        default=",".join(memory.LOADS),
        help="memory suite: which loads to run, comma-separated, of "
        f"{', '.join(memory.LOADS)} (default: all; tls needs trustme)",
    )
    p.add_argument(
        "--baseline-src",
        type=Path,
        metavar="DIR",
        help="http, startup, jobs suites: also run the meow_async found in DIR (another "
        "checkout's "
        "src/, e.g. from `git archive`), taking turns with this one, each point in its own "
        "process",
    )
    p.add_argument(
        "--jobs-kinds",
        metavar="KINDS",
        help=f"jobs suite: which recipe kinds, comma-separated, of {', '.join(jobs.RECIPES)} "
        "(default: all)",
    )
    p.add_argument(
        "--history-jobs",
        type=int,
        default=100_000,
        help="history suite: finished jobs to build (default 100,000; the issue's 1,000,000)",
    )
    p.add_argument(
        "--history-base",
        default=HISTORY_BASE,
        help=f"history suite: the commit to compare with (default {HISTORY_BASE}, before the "
        "job index)",
    )
    p.add_argument(
        "--from-json",
        type=Path,
        help="do not measure: render --markdown/--plots from a saved --json",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.from_json:
        _write(args, json.loads(args.from_json.read_text()))
        return 0
    loads = _loads(args.memory_loads)
    raise_nofile()
    sizes = SIZES[args.size]
    if args.repeats:
        sizes = dataclasses.replace(sizes, repeats=args.repeats, jobs_repeats=args.repeats)
    if args.dir:
        args.dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="meow-perf-", dir=args.dir))
    results: dict[str, Any] = {"machine": describe(scratch, args.loop), "size": sizes.name}
    m = results["machine"]
    print(
        f"{m['cpus']} CPUs, Python {m['python']}, loop {args.loop}, size {sizes.name}; scratch "
        f"{scratch} on {m['scratch'].get('device', '?')} ({m['scratch'].get('fs', '?')})"
    )
    meow_base = not args.no_meow_base and m["versions"].get("meow_base") is not None
    if not args.no_meow_base and not meow_base:
        print("meow_base is not installed (pip install -e '.[perf]'): skipping it")
    steps: dict[str, Callable[[], Any]] = {
        "network": lambda: report_tests.run(
            report_tests.Options(
                sizes=sizes,
                repeats=sizes.repeats,
                loop=args.loop,
                concurrency=args.concurrency,
                payload=args.payload,
                meow_base=meow_base,
                scratch=scratch,
                tests=_tests(args.tests),
            )
        ),
        "files": lambda: files.run(sizes, scratch, args.loop, args.max_jobs),
        "jobs": lambda: jobs.run(
            sizes.jobs_n,
            sizes.jobs_repeats,
            args.max_jobs,
            args.loop,
            scratch,
            baseline=args.baseline_src,
            kinds=args.jobs_kinds.split(",") if args.jobs_kinds else None,
        ),
        "warm": lambda: warm.run(
            sizes.burst_n, sizes.jobs_repeats, args.max_jobs, args.loop, scratch
        ),
        "memory": lambda: memory.run(sizes, scratch, args.loop, loads=loads),
        "chunks": lambda: chunks.run(min(sizes.repeats, 5), scratch, args.loop),
        "http": lambda: http.run(
            sizes.jobs_n * 20,
            max(3, sizes.jobs_repeats * 2),
            scratch,
            args.loop,
            args.concurrency,
            args.payload,
            baseline=args.baseline_src,
        ),
    }
    steps["burst"] = lambda: burst.run(
        2000 if sizes.name == "small" else 20_000, args.concurrency, scratch
    )
    steps["boot"] = lambda: boot.run(args.repeats or 100, scratch)
    steps["startup"] = lambda: startup.run(
        args.repeats or (15 if sizes.name == "small" else 50), scratch, args.baseline_src
    )
    steps["poll"] = lambda: poll.run(scratch, args.loop, sizes.name)
    steps["listing"] = lambda: listing.run(100_000, args.repeats or 5, scratch)
    steps["history"] = lambda: _history(args, scratch)
    steps["dask"] = lambda: scale_out.run(
        1000, 1 if sizes.name == "small" else 3, args.max_jobs, 2, args.loop, scratch
    )
    steps["viewers"] = lambda: viewers.run(1000, args.repeats or 5, args.loop, scratch)
    steps["filters"] = lambda: schedules.run_filters(5000, args.repeats or 7)
    steps["ticks"] = lambda: schedules.run_ticks(
        60 if sizes.name == "small" else 400, scratch, args.loop
    )
    chosen = list(SUITES) if args.suite == "all" else [args.suite]
    try:
        for name in chosen:
            t0 = time.monotonic()
            print(f"--- {name}: {SUITES[name]}")
            try:
                results[name] = steps[name]()
            except Exception as e:  # keep the other suites' results
                traceback.print_exc()
                results.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}"
            results.setdefault("took_s", {})[name] = round(time.monotonic() - t0, 1)
            print(f"--- {name} took {time.monotonic() - t0:.0f} s")
            if args.json:
                output.write_json(results, args.json)  # after each suite: a crash keeps the rest
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _write(args, results)
    return 0


#: The commit before the job index (``perf/history.py`` compares with it by default).
HISTORY_BASE = "951a90c"


def _history(args: argparse.Namespace, scratch: Path) -> Any:
    # Imported here: the other suites also run against older trees (PYTHONPATH), which have
    # no job index.
    from . import history

    return history.run(args.history_jobs, args.repeats or 3, scratch, args.history_base)


def _tests(text: str) -> tuple[str, ...]:
    chosen = tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = sorted(set(chosen) - {"a", "b", "c", "paced"})
    if unknown or not chosen:
        raise SystemExit(f"--tests: unknown {', '.join(unknown) or 'empty'}: use a, b, c, paced")
    return chosen


def _loads(text: str) -> tuple[str, ...]:
    chosen = tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = sorted(set(chosen) - set(memory.LOADS))
    if unknown or not chosen:
        raise SystemExit(
            f"--memory-loads: unknown {', '.join(unknown) or 'empty'}: use "
            + ", ".join(memory.LOADS)
        )
    return chosen


def _write(args: argparse.Namespace, results: dict[str, Any]) -> None:
    if args.json:
        output.write_json(results, args.json)
        print(f"JSON: {args.json}")
    if args.markdown:
        output.write_markdown(results, args.markdown)
        print(f"Markdown: {args.markdown}")
    if args.plots:
        for path in output.write_plots(results, args.plots):
            print(f"plot: {path}")
