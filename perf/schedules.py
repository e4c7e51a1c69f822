"""Time patterns and filters: what a ``when:`` filter costs per event, and how close to its
scheduled time a tick's job starts.

filters: the step a monitor takes for each event before it keeps anything (``Filtering.wanted``
on a GitHub-shaped 2 kB JSON body: parsed once, only the parts the filters read handed to CEL,
each rule's expression), against the same step with no filter, variants taking turns within
one run; CPU time per event (the machine may be shared).

ticks: a runner with an ``every:`` pattern and a warm Python recipe (forked from the fork
server); each job prints the wall clock as its first statement, and the suite reports that
time minus the tick's scheduled time, p50 and p99. In the same run, half-way between ticks, a
thread rewrites a file that a file rule with the same kind of recipe watches: its close ->
job start is the baseline (the file path's own target is p99 < 20 ms), under the same load.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from meow_async import (
    FilePattern,
    HttpPattern,
    PythonRecipe,
    Rule,
    Runner,
    RunnerConfig,
    iter_jobs,
)
from meow_async.model.filters import ABSENT, Later, parse_json
from meow_async.model.patterns import TimePattern
from meow_async.model.schedule import parse_interval
from meow_async.monitors.filtering import Filtering

from .loops import loop_factory

TWO_CLAUSES = 'headers["x-github-event"] == "push" && body.ref == "refs/heads/main"'


def github_push() -> bytes:
    """A push delivery's shape and size (about 2 kB)."""
    body = {
        "ref": "refs/heads/main",
        "before": "9" * 40,
        "after": "a" * 40,
        "repository": {
            "id": 123456789,
            "name": "instrument-analysis",
            "full_name": "lab/instrument-analysis",
            "private": False,
            "owner": {"login": "lab", "id": 987654, "type": "Organization"},
            "html_url": "https://github.com/lab/instrument-analysis",
            "description": "Analysis of the detector's nightly runs " * 3,
            "default_branch": "main",
        },
        "pusher": {"name": "someone", "email": "someone@example.org"},
        "commits": [
            {
                "id": f"{i:040d}",
                "message": "Calibrate the detector against the reference run " * 2,
                "author": {"name": "Someone", "email": "someone@example.org"},
                "added": [],
                "removed": [],
                "modified": ["calibration/detector.py"],
            }
            for i in range(4)
        ],
        "head_commit": {"id": "a" * 40, "message": "Calibrate the detector"},
    }
    return json.dumps(body).encode()


def _rules(when: str | None, n: int) -> list[Rule]:
    recipe = PythonRecipe(name="r", script="pass")
    return [
        Rule(
            pattern=HttpPattern(name=f"h{i}", route="/h", port=0, recipe="r", when=when),
            recipe=recipe,
        )
        for i in range(n)
    ]


def _per_event_us(rules: list[Rule], body: bytes, n: int) -> float:
    filtering = Filtering()
    headers = {"x-github-event": "push", "content-type": "application/json"}

    def parsed() -> Any:
        ok, value = parse_json(body)
        return value if ok else ABSENT

    def names() -> dict[str, Any]:  # as the HTTP monitor makes them (monitors/http.py)
        return {
            "body": Later(parsed),
            "headers": headers,
            "query": {},
            "route": {},
            "method": "POST",
            "identity": None,
        }

    t0 = time.process_time()  # CPU time: on a shared machine, wall time counts the others
    for _ in range(n):
        got = filtering.wanted(rules, "http", names)
    took = time.process_time() - t0
    assert len(got) == len(rules)  # every variant passes the event
    return took / n * 1e6


def run_filters(n: int, rounds: int) -> dict[str, Any]:
    body = github_push()
    variants = {
        "no filter": _rules(None, 1),
        "two-clause filter": _rules(TWO_CLAUSES, 1),
        "two rules, each two-clause": _rules(TWO_CLAUSES, 2),
    }
    for rules in variants.values():
        _per_event_us(rules, body, 200)  # warm up
    samples: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):  # variants take turns, so a busy moment hits them all
        for name, rules in variants.items():
            samples[name].append(_per_event_us(rules, body, n))
    out: dict[str, Any] = {"body_bytes": len(body), "events_per_round": n, "rounds": rounds}
    base = statistics.median(samples["no filter"])
    for name, us in samples.items():
        med = statistics.median(us)
        out[name] = {"median_us": round(med, 2), "added_us": round(med - base, 2)}
        print(f"  {name:<28} {med:8.2f} us/event CPU  (+{med - base:.2f} us over no filter)")
    return out


_FILE_JOB = """import time
started = time.time()
print(repr(started), open(input_file).read())
"""


def _writer(folder: Path, n: int, every: float, stop: threading.Event) -> None:
    """The baseline: a file written (in another thread) half-way between ticks, its content
    the time its writer began."""
    start = (time.time() // every + 1.5) * every
    for i in range(n):
        wait = start + i * every - time.time()
        if wait > 0 and stop.wait(wait):
            return
        # its content: when the write began (its close, the trigger, follows within µs)
        (folder / f"f{i}.txt").write_text(repr(time.time()))


async def _ticks(
    scratch: Path, n: int, interval: str
) -> tuple[list[float], list[float], list[float]]:
    base = scratch / "ticks"
    (base / "data").mkdir(parents=True, exist_ok=True)
    tick_job = PythonRecipe(
        name="stamp",
        script=(
            "import time\nstarted = time.time()\nprint(repr(started), scheduled_time, fire_time)\n"
        ),
    )
    pattern = TimePattern(name="beat", recipe="stamp", every=interval)
    files = FilePattern(name="files", glob="*.txt", recipe="file")
    config = RunnerConfig(base_dir=base / "data", jobs_dir=base / "jobs", max_jobs=2)
    every = pattern.schedule.after(datetime.now(UTC))
    step = parse_interval(interval)
    stop = threading.Event()
    recipes = [tick_job, PythonRecipe(name="file", script=_FILE_JOB)]
    async with Runner([pattern, files], recipes, config=config) as runner:
        writer = threading.Thread(target=_writer, args=(base / "data", n, step, stop))
        writer.start()
        try:
            await runner.wait_for(lambda s: s.finished >= 2 * n + 2)
        finally:
            stop.set()
            await asyncio.to_thread(writer.join)
    assert every is not None
    lat, woke, file_lat = [], [], []
    for job in iter_jobs(base / "jobs"):
        try:
            out = (Path(job["dir"]) / "stdout.txt").read_text().split()
        except FileNotFoundError:
            continue  # left queued by the stop
        if job["rule"] == "files" and len(out) == 2:
            file_lat.append((float(out[0]) - float(out[1])) * 1000)
        elif len(out) == 3:
            scheduled = datetime.fromisoformat(out[1]).timestamp()
            lat.append((float(out[0]) - scheduled) * 1000)
            woke.append((datetime.fromisoformat(out[2]).timestamp() - scheduled) * 1000)
    return sorted(lat)[:n], sorted(woke)[:n], sorted(file_lat)[:n]


def run_ticks(n: int, scratch: Path, loop: str, interval: str = "250ms") -> dict[str, Any]:
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        lat, woke, file_lat = runner.run(_ticks(scratch, n, interval))
    out: dict[str, Any] = {"ticks": len(lat), "interval": interval}
    for name, ms in (
        ("job start", lat),
        ("tick fired", woke),
        ("file closed -> its job start (baseline)", file_lat),
    ):
        p50, p99 = statistics.median(ms), ms[min(len(ms) - 1, int(len(ms) * 0.99))]
        print(
            f"  every {interval}, {len(ms)}: {'' if 'file' in name else 'scheduled time -> '}"
            f"{name}: p50 {p50:.2f} ms, "
            f"p99 {p99:.2f} ms, max {ms[-1]:.2f} ms"
        )
        out[name.replace(" ", "_")] = {"p50_ms": p50, "p99_ms": p99, "max_ms": ms[-1]}
    return out
