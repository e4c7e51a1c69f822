"""Time patterns: schedules, DST, catch-up, clock steps and restarts, on an injected clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from meow_async import ConfigError, Runner, WorkflowFileError, load_workflow
from meow_async.model.events import Event
from meow_async.model.patterns import TimePattern
from meow_async.model.schedule import parse_interval
from meow_async.model.workflow import Workflow
from meow_async.monitors.time import STATE_FILE, TickState, TimeMonitor, plan

from .conftest import WAIT, Workspace, py_recipe

CPH = ZoneInfo("Europe/Copenhagen")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def ticks(p: TimePattern, start: str, n: int) -> list[str]:
    out, t = [], at(start)
    for _ in range(n):
        nxt = p.schedule.after(t)
        assert nxt is not None
        out.append(nxt.astimezone(p.schedule.zone).isoformat())
        t = nxt
    return out


def timed(**kw: object) -> TimePattern:
    return TimePattern(name=str(kw.pop("name", "t")), recipe="py", **kw)  # type: ignore[arg-type]


# -- schedules -------------------------------------------------------------------------------


def test_intervals_parse() -> None:
    assert parse_interval("500ms") == 0.5
    assert parse_interval("10s") == 10
    assert parse_interval("5m") == 300
    assert parse_interval("1h30m") == 5400
    assert parse_interval("1d") == 86400
    assert parse_interval(2) == 2
    for bad in ("0s", "10", "5x", "", "1.0005s", True, None, "50ms"):
        with pytest.raises(ValueError):  # noqa: PT011 - the message is checked at load below
            parse_interval(bad)


def test_every_ticks_on_whole_multiples_since_the_epoch_or_anchor() -> None:
    p = timed(every="10s")
    assert ticks(p, "2024-01-01T00:00:03+00:00", 2) == [
        "2024-01-01T00:00:10+00:00",
        "2024-01-01T00:00:20+00:00",
    ]
    # the same tick from anywhere inside the interval: a restart names it alike
    assert ticks(p, "2024-01-01T00:00:09.999+00:00", 1) == ["2024-01-01T00:00:10+00:00"]
    anchored = timed(every="1h", anchor="2024-01-01T00:15:00", timezone="Europe/Copenhagen")
    assert ticks(anchored, "2024-06-01T12:00:00+00:00", 2) == [
        "2024-06-01T14:15:00+02:00",
        "2024-06-01T15:15:00+02:00",
    ]


def test_cron_follows_debian_cron_across_copenhagen_dst() -> None:
    nightly = timed(cron="30 2 * * *", timezone="Europe/Copenhagen")
    # Spring: 02:00 jumps to 03:00; the skipped 02:30 runs once, at the jump.
    assert ticks(nightly, "2024-03-29T12:00:00+01:00", 3) == [
        "2024-03-30T02:30:00+01:00",
        "2024-03-31T03:00:00+02:00",
        "2024-04-01T02:30:00+02:00",
    ]
    # Autumn: 02:00-03:00 comes twice; 02:30 runs once.
    assert ticks(nightly, "2024-10-26T12:00:00+02:00", 2) == [
        "2024-10-27T02:30:00+02:00",
        "2024-10-28T02:30:00+01:00",
    ]
    # Inside the repeated hour, after the first 02:30: not again that night.
    assert ticks(nightly, "2024-10-27T02:10:00+01:00", 1) == ["2024-10-28T02:30:00+01:00"]
    # Hourly is finer than Debian's special case: both 02:00s are ticks (distinct instants).
    hourly = timed(cron="0 * * * *", timezone="Europe/Copenhagen")
    assert ticks(hourly, "2024-10-27T01:30:00+02:00", 3) == [
        "2024-10-27T02:00:00+02:00",
        "2024-10-27T02:00:00+01:00",
        "2024-10-27T03:00:00+01:00",
    ]


def test_six_fields_mean_seconds_first() -> None:
    p = timed(cron="*/15 * * * * *")
    assert ticks(p, "2024-01-01T00:00:01+00:00", 2) == [
        "2024-01-01T00:00:15+00:00",
        "2024-01-01T00:00:30+00:00",
    ]


def test_bad_time_patterns_are_config_errors_naming_the_field() -> None:
    cases: dict[str, dict[str, Any]] = {
        "every": {"every": "0s"},
        "cron": {"cron": "61 * * * *"},
        "timezone": {"every": "1s", "timezone": "Europe/Atlantis"},
        "catch_up": {"every": "1s", "catch_up": "some"},
        "max_catch_up": {"every": "1s", "catch_up": "all", "max_catch_up": 0},
        "anchor": {"every": "1s", "anchor": "yesterday"},
    }
    for field, kw in cases.items():
        with pytest.raises(ConfigError) as e:
            timed(**kw)
        assert e.value.field == field, (field, e.value)
    with pytest.raises(ConfigError, match="either cron"):
        timed(cron="* * * * *", every="1s")
    with pytest.raises(ConfigError, match="needs cron or every"):
        timed()


def test_workflow_file_errors_have_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(
        "recipes:\n"
        "  py: {kind: python, script: pass}\n"
        "patterns:\n"
        "  beat:\n"
        "    every: 0s\n"
        "    recipe: py\n"
        "  nightly:\n"
        '    cron: "30 2 * *"\n'
        "    timezone: Mars/Olympus\n"
        "    recipe: py\n"
        "  both:\n"
        "    every: 1s\n"
        "    glob: '*.txt'\n"
        "    recipe: py\n"
    )
    with pytest.raises(WorkflowFileError) as e:
        load_workflow(path)
    text = str(e.value)
    assert f"{path}:5:12: patterns.beat.every: the interval must be at least 100ms" in text
    assert f"{path}:8:11: patterns.nightly.cron: expected 5 fields" in text
    assert f"{path}:9:15: patterns.nightly.timezone: unknown time zone 'Mars/Olympus'" in text
    assert "patterns.both.every: a pattern has either 'glob' (files) or 'every'" in text


def test_an_unquoted_yaml_time_is_an_anchor(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(
        "recipes:\n  py: {kind: python, script: pass}\n"
        "patterns:\n  beat: {every: 1h, anchor: 2024-01-01T00:20:00Z, recipe: py}\n"
    )
    (p,) = load_workflow(path).patterns
    assert isinstance(p, TimePattern)
    assert ticks(p, "2024-05-05T10:00:00+00:00", 1) == ["2024-05-05T10:20:00+00:00"]


# -- catch-up ----------------------------------------------------------------------------------


def test_plan_catch_up_policies() -> None:
    last, now = at("2024-01-01T00:00:00+00:00"), at("2024-01-01T00:00:10.5+00:00")

    def names(ts: list[datetime]) -> list[str]:
        return [t.strftime("%S") for t in ts]

    none = plan(timed(every="1s", catch_up="none"), last, now, now)
    assert (none.fire, none.skipped, none.newest) == ([], 10, at("2024-01-01T00:00:10+00:00"))
    latest = plan(timed(every="1s", catch_up="latest"), last, now, now)
    assert (names(latest.fire), latest.skipped) == (["10"], 9)
    every = plan(timed(every="1s", catch_up="all"), last, now, now)
    assert (names(every.fire), every.skipped) == ([f"{i:02d}" for i in range(1, 11)], 0)
    bounded = plan(timed(every="1s", catch_up="all", max_catch_up=3), last, now, now)
    assert (names(bounded.fire), bounded.skipped) == (["08", "09", "10"], 7)
    assert (bounded.oldest, bounded.newest_skipped) == (
        at("2024-01-01T00:00:01+00:00"),
        at("2024-01-01T00:00:07+00:00"),
    )
    # While running: ticks less late than missed_before are due, never "missed".
    running = plan(timed(every="1s", catch_up="none"), last, now, at("2024-01-01T00:00:08+00:00"))
    assert (names(running.fire), running.skipped) == (["08", "09", "10"], 7)


def test_plan_after_a_long_downtime_stays_bounded() -> None:
    p = timed(every="100ms", catch_up="all", max_catch_up=5)
    last, now = at("2024-01-01T00:00:00+00:00"), at("2024-03-01T00:00:00.05+00:00")
    got = plan(p, last, now, now)
    assert len(got.fire) == 5
    assert got.more
    assert got.skipped >= 99_995
    assert got.fire[-1] == got.newest == at("2024-03-01T00:00:00+00:00")


# -- the monitor, on an injected clock ----------------------------------------------------------


class FakeClock:
    """Wall time the test sets; waits end when the test moves the clock (or on ``wake``)."""

    def __init__(self, start: str) -> None:
        self.t = at(start).timestamp()
        self.mono = 1000.0
        self._moves = 0  # times the test moved the clock
        self._seen = 0  # moves the monitor has woken for
        self._moved = asyncio.Event()

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.mono

    def set(self, when: str) -> None:
        """Time passes (the monotonic clock too)."""
        t = at(when).timestamp()
        self.mono += max(0.0, t - self.t)
        self.jump(when)

    def jump(self, when: str) -> None:
        """The wall clock alone moves: a suspend, an NTP step."""
        self.t = at(when).timestamp()
        self._moves += 1
        self._moved.set()

    async def wait(self, wake: asyncio.Event, seconds: float) -> None:
        if self._moves == self._seen:
            self._moved.clear()
            moved = asyncio.ensure_future(self._moved.wait())
            woken = asyncio.ensure_future(wake.wait())
            await asyncio.wait([moved, woken], return_when=asyncio.FIRST_COMPLETED)
            moved.cancel()
            woken.cancel()
        self._seen = self._moves


class Ticking:
    def __init__(self, tmp: Path, patterns: list[TimePattern], clock: FakeClock) -> None:
        self.workflow = Workflow(patterns, [py_recipe()])
        self.state = tmp / STATE_FILE
        self.monitor = TimeMonitor(self.workflow, self.state, base_dir=tmp, clock=clock)
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.stop = asyncio.Event()
        self.seen: list[str] = []

    async def __aenter__(self) -> Ticking:
        self.task = asyncio.create_task(self.monitor.run(self.events, self.stop))
        async with asyncio.timeout(WAIT):
            await self.monitor.ready.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        await self.task

    async def settle(self) -> list[str]:
        """Ticks queued since the last call, each released as a handled event would be."""
        for _ in range(20):
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)  # the tick record is written in a thread hop
        for _ in range(20):
            await asyncio.sleep(0)
        got = []
        while not self.events.empty():
            e = self.events.get_nowait()
            got.append(f"{e.rule.name}@{e.extras['scheduled_time']}")
            if e.release is not None:
                e.release()
        self.seen += got
        return got


async def test_each_tick_fires_once_and_a_clock_stepped_back_fires_none_twice(
    tmp_path: Path,
) -> None:
    clock = FakeClock("2024-01-01T00:00:00.5+00:00")
    async with Ticking(tmp_path, [timed(name="beat", every="1s")], clock) as t:
        assert await t.settle() == []
        clock.set("2024-01-01T00:00:01.001+00:00")
        assert await t.settle() == ["beat@2024-01-01T00:00:01+00:00"]
        clock.set("2024-01-01T00:00:01.5+00:00")
        assert await t.settle() == []
        # NTP steps the clock back over the tick just fired: it waits for 00:00:02, not 01 again
        clock.jump("2024-01-01T00:00:00.2+00:00")
        assert await t.settle() == []
        clock.set("2024-01-01T00:00:01.9+00:00")
        assert await t.settle() == []
        clock.set("2024-01-01T00:00:02+00:00")
        assert await t.settle() == ["beat@2024-01-01T00:00:02+00:00"]


async def test_a_clock_stepped_forward_a_little_fires_each_tick_and_far_follows_catch_up(
    tmp_path: Path,
) -> None:
    clock = FakeClock("2024-01-01T00:00:00.5+00:00")
    patterns = [
        timed(name="none", every="1s", catch_up="none"),
        timed(name="latest", every="1s", catch_up="latest"),
    ]
    async with Ticking(tmp_path, patterns, clock) as t:
        clock.set("2024-01-01T00:00:03.2+00:00")  # a short stall: late, not missed
        got = await t.settle()
        assert sorted(got) == sorted(
            f"{n}@2024-01-01T00:00:0{i}+00:00" for n in ("none", "latest") for i in (1, 2, 3)
        )
        clock.jump("2024-01-01T02:00:00.5+00:00")  # a suspend: two hours missed
        got = await t.settle()
        assert got == ["latest@2024-01-01T02:00:00+00:00"]
        assert t.monitor.skipped == {"none": 7197, "latest": 7196}
        clock.jump("2024-01-01T02:00:30.5+00:00")  # an NTP step forward: the same
        assert await t.settle() == ["latest@2024-01-01T02:00:30+00:00"]


async def test_rules_added_updated_and_removed_at_run_time_tick_from_then_on(
    tmp_path: Path,
) -> None:
    clock = FakeClock("2024-01-01T00:00:00.5+00:00")
    async with Ticking(tmp_path, [], clock) as t:
        clock.set("2024-01-01T00:00:10.5+00:00")
        t.workflow.add_pattern(timed(name="late", every="1s"))
        assert await t.settle() == []  # nothing before it was added
        assert t.monitor.next_ticks()["late"] == at("2024-01-01T00:00:11+00:00")
        clock.set("2024-01-01T00:00:11.1+00:00")
        assert await t.settle() == ["late@2024-01-01T00:00:11+00:00"]
        t.workflow.update_pattern(timed(name="late", every="5s"))
        clock.set("2024-01-01T00:00:14.9+00:00")
        assert await t.settle() == []  # no catch-up for a change: 12, 13, 14 are not its ticks
        clock.set("2024-01-01T00:00:15+00:00")
        assert await t.settle() == ["late@2024-01-01T00:00:15+00:00"]
        t.workflow.remove_pattern("late")
        clock.set("2024-01-01T00:00:30+00:00")
        assert await t.settle() == []
        assert t.monitor.next_ticks() == {}


async def test_a_tick_accepted_before_a_kill_is_made_at_the_next_start_then_catch_up(
    tmp_path: Path,
) -> None:
    clock = FakeClock("2024-01-01T00:00:00.5+00:00")
    beat = timed(name="beat", every="1s", catch_up="all")
    async with Ticking(tmp_path, [beat], clock) as t:
        clock.set("2024-01-01T00:00:01+00:00")
        await asyncio.sleep(0.2)  # recorded and queued, never handled: the runner dies here
        assert t.events.qsize() == 1
    record = TickState(t.state, durable=False)
    record.load()
    assert record.last == {"beat": "2024-01-01T00:00:01+00:00"}
    assert record.pending == {"beat": ["2024-01-01T00:00:01+00:00"]}
    clock.set("2024-01-01T00:00:04.5+00:00")  # restarted 3.5 s later
    async with Ticking(tmp_path, [beat], clock) as again:
        got = await again.settle()
    assert got == [f"beat@2024-01-01T00:00:0{i}+00:00" for i in (1, 2, 3, 4)]
    record = TickState(t.state, durable=False)
    record.load()
    assert record.pending == {"beat": []}


async def test_catch_up_latest_after_downtime_and_a_first_start_catches_nothing(
    tmp_path: Path,
) -> None:
    clock = FakeClock("2024-03-31T00:10:00+01:00")
    nightly = timed(name="nightly", cron="30 2 * * *", timezone="Europe/Copenhagen")
    async with Ticking(tmp_path, [nightly], clock) as t:
        assert await t.settle() == []  # a first start: nothing before it is owed
        clock.set("2024-03-31T03:00:00.01+02:00")  # 02:30 does not exist today: at the jump
        assert await t.settle() == ["nightly@2024-03-31T03:00:00+02:00"]
    clock.set("2024-04-03T12:00:00+02:00")  # down for three nights
    async with Ticking(tmp_path, [nightly], clock) as t:
        assert await t.settle() == ["nightly@2024-04-03T02:30:00+02:00"]
        assert t.monitor.skipped == {"nightly": 2}


async def test_a_filter_on_ticks(tmp_path: Path) -> None:
    clock = FakeClock("2024-01-05T23:59:59+00:00")  # a Friday
    weekdays = timed(
        name="weekdays",
        cron="0 0 * * *",
        when='scheduled_time.getDayOfWeek("Europe/Copenhagen") in [1, 2, 3, 4, 5]',
    )
    async with Ticking(tmp_path, [weekdays], clock) as t:
        for day in ("06", "07", "08"):  # Saturday, Sunday, Monday
            clock.set(f"2024-01-{day}T00:00:00.1+00:00")
            await t.settle()
        assert t.seen == ["weekdays@2024-01-08T00:00:00+00:00"]
        assert t.monitor.filtering.filtered == {"weekdays": 2}


async def test_time_jobs_get_their_times_and_kind(ws: Workspace) -> None:
    recipe = py_recipe(script="print(scheduled_time, fire_time, when)\n")
    p = TimePattern(
        name="beat", recipe="py", every="200ms", variable="when", timezone="Europe/Copenhagen"
    )
    async with ws.runner([p], [recipe]) as runner:
        async with asyncio.timeout(WAIT):
            await runner.wait_for(lambda s: s.finished >= 2)
    jobs = [j for j in ws.jobs_list() if j["state"] == "done"]
    job = jobs[0]
    assert job["event"]["kind"] == "time"
    scheduled = job["parameters"]["scheduled_time"]
    assert job["parameters"]["when"] == scheduled
    assert datetime.fromisoformat(scheduled).utcoffset() is not None
    assert datetime.fromisoformat(scheduled).tzinfo is not None
    assert scheduled.endswith(("+01:00", "+02:00"))
    assert job["event"]["key"] == f"time:beat:{scheduled}"
    fire = datetime.fromisoformat(job["parameters"]["fire_time"])
    assert fire >= datetime.fromisoformat(scheduled)
    out = (Path(job["dir"]) / "stdout.txt").read_text().split()
    assert out[0] == out[2] == scheduled
    # one job per tick, named from it
    names = [j["event"]["key"] for j in ws.jobs_list()]
    assert len(names) == len(set(names))


def test_runner_with_time_patterns_has_a_time_monitor() -> None:
    runner = Runner([timed(every="1s")], [py_recipe()])
    assert runner.monitor("time").next_ticks()["t"] > datetime.now(UTC)
