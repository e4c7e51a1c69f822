"""``python -m perf``: run benchmarks and print (and optionally save) their results."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from meow_async import __version__
from meow_async.loops import loop_factory

from . import files, network
from .stats import line


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m perf",
        description="meow_async benchmarks. Numbers depend on the machine and above all the "
        "disk: compare variants within one run.",
    )
    p.add_argument(
        "suite",
        choices=["files", "network"],
        help="files: file-event latency and bursts; network: TCP intake by chunk size",
    )
    p.add_argument("-n", type=int, default=200, help="files per burst (default 200)")
    p.add_argument("--latency-n", type=int, default=50, help="single-file samples (default 50)")
    p.add_argument("--max-jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    p.add_argument("--dir", help="where scratch folders go (default: the system temp dir)")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = p.parse_args(argv)
    root = files.scratch(args.dir)
    results: dict[str, Any] = {
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "scratch": files.fs_of(root),
            "loop": args.loop,
            "meow_async": __version__,
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    }
    try:
        with asyncio.Runner(loop_factory=loop_factory(args.loop)) as r:
            if args.suite == "network":
                results["network"] = _network(r, root)
                return _save(args, results)
            for step, debounce in ((50, 1600), (10, 100), (5, 50), (2, 20)):
                d = root / f"lat-{step}"
                d.mkdir()
                res = r.run(files.latency(d, args.latency_n, step, debounce))
                results.setdefault("latency", []).append(res)
                print(line(f"step {step} ms: change -> event", res["change_to_event"]))
                print(line(f"step {step} ms: change -> job start", res["change_to_job_start"]))
            d = root / "burst"
            d.mkdir()
            b = r.run(files.burst(d, args.n, args.max_jobs))
            results["burst"] = b
            print(
                f"burst of {b['n']} files: written in {b['write_s'] * 1000:.1f} ms, all events "
                f"{b['events_s'] * 1000:.1f} ms; {b['jobs_done']} jobs done in "
                f"{b['jobs_s'] * 1000:.0f} ms vs {b['floor_s'] * 1000:.0f} ms for the same "
                f"subprocesses launched directly: {b['overhead_per_job_ms']:.2f} ms/job overhead "
                f"(max_jobs={args.max_jobs})"
            )
    finally:
        files.cleanup(root)
    return _save(args, results)


def _network(r: asyncio.Runner, root: Path) -> list[dict[str, Any]]:
    out = []
    for size, n, repeats in ((1000, 1000, 5), (4_000_000, 20, 3)):
        for chunk in (2048, 16384, 65536, 262144):
            d = root / f"net-{size}-{chunk}"
            d.mkdir()
            res = r.run(network.intake(d, n, size, chunk, repeats))
            out.append(res)
            t = res["total"]
            print(
                f"{n} messages of {size} B, chunk {chunk:>6}: median {t['p50_ms']:8.1f} ms "
                f"(min {t['min_ms']:.1f}), {t['p50_ms'] / n:.3f} ms per message"
            )
    return out


def _save(args: argparse.Namespace, results: dict[str, Any]) -> int:
    m = results["machine"]
    print(f"scratch: {m['scratch']}; python {m['python']}, {m['cpus']} CPUs, loop {m['loop']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0
