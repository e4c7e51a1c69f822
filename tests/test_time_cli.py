"""Time patterns through the command line, in real time: a runner SIGKILLed and restarted
makes one job per tick and catches up as each rule says; and across Europe/Copenhagen's DST
changes under libfaketime (Debian's ``faketime``), running at an accelerated rate."""

from __future__ import annotations

import glob
import os
import signal
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from meow_async import iter_jobs
from meow_async.monitors.time import STATE_FILE, TickState

from .conftest import wait_until_sync
from .test_cli import MeowRun

# Preloaded straight into the runner (faketime's wrapper forks, and a test could only stop
# the wrapper); the fork server and jobs inherit it, so they see the same clock.
FAKETIME = next(iter(sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))), None)
ONE_LOOP = pytest.mark.skipif(
    os.environ.get("MEOW_TEST_LOOP") == "uvloop",
    reason="a CLI subprocess test: the test's own loop does not matter, run it once",
)


def workflow(tmp: Path, patterns: str) -> Path:
    (tmp / "data").mkdir(exist_ok=True)
    path = tmp / "workflow.yaml"
    path.write_text(
        "runner:\n"
        "  base_dir: data\n"
        "  shutdown_timeout: 5\n"
        "recipes:\n"
        "  tick:\n"
        "    kind: python\n"
        "    script: |\n"
        "      print(scheduled_time)\n"
        f"patterns:\n{patterns}"
    )
    return path


def jobs(tmp: Path) -> list[dict[str, Any]]:
    return list(iter_jobs(tmp / ".meow" / "jobs"))


def ticks(tmp: Path, rule: str) -> list[str]:
    return sorted(j["parameters"]["scheduled_time"] for j in jobs(tmp) if j["rule"] == rule)


def seconds(names: list[str]) -> list[int]:
    return [int(datetime.fromisoformat(n).timestamp()) for n in names]


@ONE_LOOP
def test_every_second_across_a_sigkill_and_restart(tmp_path: Path) -> None:
    path = workflow(
        tmp_path,
        "  all: {every: 1s, catch_up: all, recipe: tick}\n"
        "  latest: {every: 1s, catch_up: latest, recipe: tick}\n"
        "  none: {every: 1s, catch_up: none, recipe: tick}\n",
    )
    with MeowRun(path, cwd=tmp_path) as first:
        first.wait_for("runner started", stream="stderr")
        wait_until_sync(lambda: len(ticks(tmp_path, "none")) >= 3)
        first.proc.kill()  # SIGKILL: no graceful anything
        first.wait_exit()
    record = TickState(tmp_path / ".meow" / "jobs" / STATE_FILE, durable=False)
    record.load()
    killed_at = {rule: record.last[rule] for rule in ("all", "latest", "none")}
    time.sleep(2.5)  # down for at least two ticks
    with MeowRun(path, cwd=tmp_path) as second:
        second.wait_for("runner started", stream="stderr")
        restarted = time.time()
        wait_until_sync(lambda: len(ticks(tmp_path, "none")) >= 6)
        second.signal(signal.SIGINT)
        assert second.wait_exit() == 0, second.report()
    everything = jobs(tmp_path)
    keys = [j["event"]["key"] for j in everything]
    assert len(keys) == len(set(keys)), "a tick made two jobs"
    # done, or made and left queued by the graceful stop (the next start runs them)
    assert {j["state"] for j in everything} <= {"done", "queued"}, [j["state"] for j in everything]
    for rule in ("all", "latest", "none"):
        got = seconds(ticks(tmp_path, rule))
        last = int(datetime.fromisoformat(killed_at[rule]).timestamp())
        assert last in got, (rule, last, got)  # a tick accepted before the kill got its job
        before, after = [s for s in got if s <= last], [s for s in got if s > last]
        assert before == list(range(before[0], last + 1)), (rule, got)
        # The ticks made by the restart's catch-up say so; which second the restart fell in
        # is the runner's to know, not the test's.
        caught = seconds(
            sorted(
                j["parameters"]["scheduled_time"]
                for j in everything
                if j["rule"] == rule and j["event"].get("catch_up")
            )
        )
        live = [s for s in after if s not in caught]
        assert live, (rule, got)
        missed = [s for s in range(last + 1, live[0]) if s not in got]
        if rule == "all":  # every tick made while down, and none since skipped
            assert got == list(range(got[0], got[-1] + 1)), got
            assert len(caught) >= 2, (got, caught)
        elif rule == "latest":  # only the newest missed tick
            assert len(caught) == 1, (got, caught)
            assert caught[0] == live[0] - 1, (got, caught)
            assert missed, (got, restarted)
        else:
            assert caught == [], (got, caught)
            assert len(missed) >= 2, (got, restarted)
        assert live == list(range(live[0], live[-1] + 1)), (rule, got)  # none skipped since
    flagged = {j["rule"] for j in everything if j["event"].get("catch_up")}
    assert flagged == {"all", "latest"}


def faketime_run(tmp: Path, start: str, rate: int, patterns: str) -> MeowRun:
    """The CLI under libfaketime: the clock starts at ``start`` (UTC) and runs ``rate`` times
    as fast, its sleeps too (libfaketime scales the loop's waits)."""
    assert FAKETIME is not None
    path = workflow(tmp, patterns)
    # A busy machine may take seconds (accelerated: many minutes) to start the runner: the
    # ticks it was too late for are made by its catch-up, named the same, from a tick record
    # saying where the rules stood at the start.
    rules = [line.split(":")[0].strip() for line in patterns.splitlines()]
    record = TickState(tmp / ".meow" / "jobs" / STATE_FILE, durable=False)
    record.path.parent.mkdir(parents=True)
    for rule in rules:
        record.accepted(rule, f"{start.replace(' ', 'T')}+00:00", [])
    record.close()
    env = {**os.environ, "TZ": "UTC", "LD_PRELOAD": FAKETIME, "FAKETIME": f"@{start} x{rate}"}
    return MeowRun(path, "--loop", "asyncio", cwd=tmp, env=env)


@ONE_LOOP
@pytest.mark.skipif(FAKETIME is None, reason="needs libfaketime: apt-get install faketime")
def test_spring_forward_in_copenhagen_runs_the_skipped_time_once_at_the_jump(
    tmp_path: Path,
) -> None:
    # 2024-03-31 01:00 UTC: 02:00 CET becomes 03:00 CEST; 02:30 does not exist that night.
    with faketime_run(
        tmp_path,
        "2024-03-31 00:40:00",
        300,
        "  nightly: {cron: '30 2 * * *', timezone: Europe/Copenhagen, catch_up: all, "
        "recipe: tick}\n"
        "  hourly: {cron: '0 * * * *', timezone: Europe/Copenhagen, catch_up: all, "
        "recipe: tick}\n"
        "  quarter: {cron: '*/15 * * * *', timezone: Europe/Copenhagen, catch_up: all, "
        "recipe: tick}\n",
    ) as run:
        run.wait_for("runner started", stream="stderr")
        # until 03:30 CEST (01:30 UTC): after the jump, past where a second run would be
        wait_until_sync(lambda: "2024-03-31T03:30:00+02:00" in ticks(tmp_path, "quarter"))
        run.signal(signal.SIGINT)
        assert run.wait_exit() == 0, run.report()
    assert ticks(tmp_path, "nightly") == ["2024-03-31T03:00:00+02:00"]
    assert ticks(tmp_path, "hourly") == ["2024-03-31T03:00:00+02:00"]
    quarters = ticks(tmp_path, "quarter")
    at = quarters.index("2024-03-31T01:45:00+01:00")  # the last quarter before the jump
    assert quarters[at:] == [
        "2024-03-31T01:45:00+01:00",
        "2024-03-31T03:00:00+02:00",
        "2024-03-31T03:15:00+02:00",
        "2024-03-31T03:30:00+02:00",
    ]


@ONE_LOOP
@pytest.mark.skipif(FAKETIME is None, reason="needs libfaketime: apt-get install faketime")
def test_fall_back_in_copenhagen_runs_a_fixed_time_once_and_hourly_twice(
    tmp_path: Path,
) -> None:
    # 2024-10-27 01:00 UTC: 03:00 CEST becomes 02:00 CET; 02:00-03:00 comes twice.
    with faketime_run(
        tmp_path,
        "2024-10-27 00:20:00",
        600,
        "  nightly: {cron: '50 2 * * *', timezone: Europe/Copenhagen, catch_up: all, "
        "recipe: tick}\n"
        "  hourly: {cron: '55 * * * *', timezone: Europe/Copenhagen, catch_up: all, "
        "recipe: tick}\n",
    ) as run:
        run.wait_for("runner started", stream="stderr")
        # 02:55 CET (01:55 UTC) comes after where nightly's second 02:50 would be
        wait_until_sync(lambda: "2024-10-27T02:55:00+01:00" in ticks(tmp_path, "hourly"))
        run.signal(signal.SIGINT)
        assert run.wait_exit() == 0, run.report()
    assert ticks(tmp_path, "nightly") == ["2024-10-27T02:50:00+02:00"]
    assert ticks(tmp_path, "hourly") == [
        "2024-10-27T02:55:00+01:00",
        "2024-10-27T02:55:00+02:00",
    ]
    # each job ran at or after its tick, by the faked clock; on time unless caught up
    for job in jobs(tmp_path):
        scheduled = datetime.fromisoformat(job["parameters"]["scheduled_time"])
        fired = datetime.fromisoformat(job["parameters"]["fire_time"])
        assert fired >= scheduled, job["parameters"]
        if not job["event"].get("catch_up"):
            assert fired - scheduled < timedelta(minutes=2), job["parameters"]
