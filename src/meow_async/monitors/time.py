"""Time triggers: a tick of a ``cron:`` or ``every:`` pattern becomes an event.

One loop serves every time rule. It sleeps on the loop's monotonic clock, never longer than
``NAP`` seconds, and reads the wall clock again on each wake, so a clock stepped back waits
for the tick's wall-clock time again and a clock stepped forward (NTP, a suspend) is seen at
once. A tick is fired only after the last one fired for its rule, so none fires twice.

Each tick is recorded in ``.meow-ticks.log`` (the jobs folder) before its event is queued:
per rule, the last tick accepted and the accepted ticks whose jobs are not made yet. A runner
killed at a tick makes that tick's job at the next start (its job id is named from the tick,
so a job made before is not made again); ticks that fell while no runner ran are what the
rule's ``catch_up`` says.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

from ..model.events import Event
from ..model.filters import Facts
from ..model.jobs import fsync_dir
from ..model.patterns import TimePattern
from ..model.rules import Rule
from ..model.schedule import tick_name
from ..model.workflow import Workflow
from .filtering import Filtering
from .spool import json_lines

__all__ = ["SystemClock", "TickState", "TimeMonitor", "plan"]

logger = logging.getLogger("meow_async.monitors.time")

#: Longest sleep (seconds) before the wall clock is read again.
NAP = 1.0
#: Ticks in wall-clock time that passed without the monotonic clock (the machine slept, the
#: clock was stepped forward), less this slack, were missed: the rule's ``catch_up`` decides,
#: as after downtime. Ticks the loop was merely late for (it was busy) all fire.
SLACK = 0.25
#: Missed ticks looked at, at most, to say how many were skipped.
COUNT_LIMIT = 100_000
STATE_FILE = ".meow-ticks.log"


class Clock(Protocol):
    """**Protocol:** the wall clock, the monotonic one, and a wait on the monotonic one
    (tests inject theirs)."""

    def now(self) -> float: ...

    def monotonic(self) -> float: ...

    async def wait(self, wake: asyncio.Event, seconds: float) -> None:
        """Return when ``wake`` is set or ``seconds`` have passed."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def wait(self, wake: asyncio.Event, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await wake.wait()
        except TimeoutError:
            pass


@dataclass(slots=True)
class Plan:
    """What to do with one rule's ticks up to now: fire ``fire``; ``skipped`` missed ticks
    were left out (``more``: at least that many), from ``oldest`` to ``newest_skipped``;
    ``newest`` is the newest tick up to now, fired or not (handled from then on)."""

    newest: datetime
    fire: list[datetime] = field(default_factory=list)
    skipped: int = 0
    more: bool = False
    oldest: datetime | None = None
    newest_skipped: datetime | None = None


def plan(pattern: TimePattern, last: datetime, now: datetime, missed_before: datetime) -> Plan:
    """The ticks after ``last`` up to ``now``: those from ``missed_before`` on are due and all
    fire; earlier ones were missed, and the pattern's ``catch_up`` picks which of them fire."""
    schedule = pattern.schedule
    keep = {"none": 0, "latest": 1, "all": pattern.max_catch_up}[pattern.catch_up]
    # How many were missed, and where the ones kept begin: walked back from the newest.
    out = Plan(newest=last)
    count, start = 0, last
    for t in schedule.back(missed_before):
        if t <= last:
            break
        if count >= COUNT_LIMIT:
            out.more = True
            break
        count += 1
        out.oldest = t
        if count == 1:
            out.newest = t
        if count == keep + 1:
            start = out.newest_skipped = t
    # The kept and the due ones, walked forward from there (exact across DST changes).
    missed: list[datetime] = []
    due: list[datetime] = []
    tick = schedule.after(start)
    while tick is not None and tick <= now:
        (missed if tick < missed_before else due).append(tick)
        tick = schedule.after(tick)
    kept = missed[len(missed) - keep :] if keep else []
    out.skipped = max(0, count - len(kept))
    out.fire = [*kept, *due]
    if out.fire:
        out.newest = max(out.newest, out.fire[-1])
    return out


class TickState:
    """``.meow-ticks.log``: per time rule, the last tick accepted and those accepted whose
    jobs are not made yet, as JSON lines appended (one ``write`` to the page cache: no rename
    on the way of a tick) and read back in order. A tick's line is written before its event
    is queued; a tick marked done goes with the next line, or at stop. The file is rewritten
    short at each start and when it has grown long."""

    def __init__(self, path: Path, *, durable: bool) -> None:
        self.path = path
        self.durable = durable
        self.last: dict[str, str] = {}
        self.pending: dict[str, list[str]] = {}
        self._lines: list[str] = []  # not written yet
        self._file: IO[str] | None = None
        self._written = 0

    def load(self) -> None:
        """Read the record back (blocking: call it in a thread), then write it short."""
        for entry in json_lines(self.path):  # a line cut short by a kill is skipped
            rule = entry.get("rule")
            if not isinstance(rule, str):
                continue
            if entry.get("forget"):
                self.last.pop(rule, None)
                self.pending.pop(rule, None)
                continue
            if isinstance(entry.get("last"), str):
                self.last[rule] = entry["last"]
            pending = self.pending.setdefault(rule, [])
            pending.extend(str(t) for t in entry.get("add") or [])
            if entry.get("done") in pending:
                pending.remove(entry["done"])
        self._compact()

    def accepted(self, rule: str, last: str, ticks: list[str]) -> None:
        self.last[rule] = last
        if ticks:
            self.pending.setdefault(rule, []).extend(ticks)
        self._lines.append(_line({"rule": rule, "last": last, "add": ticks}))

    def done(self, rule: str, tick: str) -> None:
        ticks = self.pending.get(rule)
        if ticks and tick in ticks:
            ticks.remove(tick)
            self._lines.append(_line({"rule": rule, "done": tick}))

    def forget(self, keep: set[str]) -> None:
        for name in [n for n in self.last if n not in keep]:
            self.last.pop(name, None)
            self.pending.pop(name, None)
            self._lines.append(_line({"rule": name, "forget": True}))

    def save(self) -> None:
        """Write the lines not written yet (one ``write``; with ``durable``, an fsync)."""
        if not self._lines:
            return
        if self._written > 4096 and self._written > 8 * (len(self.last) + 1):
            self._compact()
            return
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open
        text, self._lines = "".join(self._lines), []
        self._file.write(text)
        self._file.flush()
        if self.durable:
            os.fsync(self._file.fileno())
        self._written += text.count("\n")

    def close(self) -> None:
        self.save()
        if self._file is not None:
            self._file.close()
            self._file = None

    def _compact(self) -> None:
        """The whole record as one line per rule (temporary file, then rename)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._lines = []
        lines = [
            _line({"rule": r, "last": last, "add": self.pending.get(r, [])})
            for r, last in self.last.items()
        ]
        if not lines and not self.path.exists():
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("".join(lines))
            if self.durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, self.path)
        if self.durable:
            fsync_dir(self.path.parent)
        self._written = len(lines)


def _line(entry: dict[str, Any]) -> str:
    return json.dumps(entry, separators=(",", ":")) + "\n"


class TimeMonitor:
    """Fires the time rules' ticks as events (see the module's docstring)."""

    name = "time"

    def __init__(
        self,
        workflow: Workflow,
        state_path: Path,
        *,
        base_dir: Path,
        durable: bool = False,
        filtering: Filtering | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.workflow = workflow
        self.base = str(Path(base_dir).absolute())
        self.state = TickState(state_path, durable=durable)
        self.filtering = filtering or Filtering()
        self.clock: Clock = clock or SystemClock()
        self.ready = asyncio.Event()
        #: Per rule: its pattern as last seen, the last tick handled, and the next one.
        self._known: dict[str, TimePattern] = {}
        self._last: dict[str, datetime] = {}
        self._next: dict[str, datetime | None] = {}
        self._looked = self.clock.monotonic()  # when the wall clock was last read
        #: How many ticks each rule fired and skipped (missed ones), for tests and /status.
        self.fired: dict[str, int] = {}
        self.skipped: dict[str, int] = {}

    def rules(self) -> list[Rule]:
        return [r for r in self.workflow.rules.values() if isinstance(r.pattern, TimePattern)]

    def active(self) -> bool:
        """Ticking for some rule now (no time rule: nothing to keep time for)."""
        return bool(self.rules())

    def next_ticks(self) -> dict[str, datetime]:
        """Each time rule's next tick, as far as the monitor knows now, in its zone."""
        out: dict[str, datetime] = {}
        now = _utc(self.clock.now())
        for rule in self.rules():
            nxt = self._next.get(rule.name) if rule.name in self._known else None
            if nxt is None:
                got = rule.pattern.schedule.after(now)  # type: ignore[union-attr]
                if got is None:
                    continue
                nxt = got
            out[rule.name] = nxt.astimezone(rule.pattern.schedule.zone)  # type: ignore[union-attr]
        return out

    async def run(self, events: asyncio.Queue[Event], stop: asyncio.Event) -> None:
        await asyncio.to_thread(self.state.load)
        wake = asyncio.Event()
        unsubscribe = self.workflow.subscribe(wake.set)
        stopping = asyncio.create_task(stop.wait())
        stopping.add_done_callback(lambda _: wake.set())
        try:
            await self._start(events)
            self.ready.set()
            while not stop.is_set():
                wake.clear()
                self._follow()
                await self._fire_due(events)
                if stop.is_set():
                    break
                await self.clock.wait(wake, self._nap())
        finally:
            stopping.cancel()
            unsubscribe()
            if self.state.durable:
                await asyncio.to_thread(self.state.close)
            else:
                self.state.close()

    async def _start(self, events: asyncio.Queue[Event]) -> None:
        """Finish what a previous run accepted, then catch up on what it missed."""
        rules = {r.name: r for r in self.rules()}
        self.state.forget(set(rules))
        now = _utc(self.clock.now())
        recovered: list[Event] = []
        for name, rule in rules.items():
            pattern = rule.pattern
            assert isinstance(pattern, TimePattern)  # noqa: S101
            self._known[name] = pattern
            recovered.extend(
                self._event(rule, _parse(tick), now, recovered=True)
                for tick in self.state.pending.get(name, [])
            )
            last = self.state.last.get(name)
            if last is None:
                self._last[name] = now  # a first start: from now on
                self._next[name] = pattern.schedule.after(now)
                continue
            self._last[name] = _parse(last)
            self._next[name] = pattern.schedule.after(self._last[name])
        if recovered:
            logger.info("recovered %d accepted tick(s) whose jobs were not made", len(recovered))
            for event in recovered:
                await events.put(event)
        await self._fire_due(events, missed_before=now)

    def _follow(self) -> None:
        """Rules added, changed or removed since: new ones tick from now on, changed ones
        from now or their last tick, whichever is later; none catches up."""
        rules = {r.name: r for r in self.rules()}
        now = _utc(self.clock.now())
        for name in [n for n in self._known if n not in rules]:
            del self._known[name]
            self._last.pop(name, None)
            self._next.pop(name, None)
        self.state.forget(set(rules))
        for name, rule in rules.items():
            pattern = rule.pattern
            assert isinstance(pattern, TimePattern)  # noqa: S101
            if self._known.get(name) is pattern:
                continue
            self._known[name] = pattern
            since = max(self._last.get(name, now), now)
            self._last.setdefault(name, now)
            self._next[name] = pattern.schedule.after(since)

    def _nap(self) -> float:
        now = self.clock.now()
        soonest = min((t.timestamp() for t in self._next.values() if t is not None), default=None)
        if soonest is None:
            return 3600.0  # no time rule: a workflow change wakes us
        return max(0.0, min(NAP, soonest - now))

    async def _fire_due(
        self, events: asyncio.Queue[Event], missed_before: datetime | None = None
    ) -> None:
        now_ts, mono = self.clock.now(), self.clock.monotonic()
        now = _utc(now_ts)
        # What the wall clock did that the monotonic clock did not (a suspend, a step) is
        # missed; the time the loop itself took is not.
        looked, self._looked = self._looked, mono
        cutoff = missed_before or _utc(now_ts - (mono - looked) - SLACK)
        batch: list[Event] = []
        for name, pattern in list(self._known.items()):
            nxt = self._next.get(name)
            if nxt is None or nxt > now:
                continue
            rule = self.workflow.rules.get(name)
            if rule is None or rule.pattern is not pattern:
                continue
            todo = plan(pattern, self._last[name], now, cutoff)
            if todo.skipped:
                self.skipped[name] = self.skipped.get(name, 0) + todo.skipped
                logger.warning(
                    "rule %s: skipped %s%d missed tick(s)%s (catch_up: %s%s)",
                    name,
                    "at least " if todo.more else "",
                    todo.skipped,
                    _span(todo),
                    pattern.catch_up,
                    f", max_catch_up {pattern.max_catch_up}" if pattern.catch_up == "all" else "",
                )
            wanted = [t for t in todo.fire if self.filtering.passes(rule, _tick_facts(t))]
            self._last[name] = todo.newest
            self._next[name] = pattern.schedule.after(max(todo.newest, now))
            self.state.accepted(name, tick_name(todo.newest), [tick_name(t) for t in wanted])
            batch.extend(self._event(rule, t, now, missed=t < cutoff) for t in wanted)
            self.fired[name] = self.fired.get(name, 0) + len(wanted)
        # Recorded before queued: a runner killed now makes these jobs at its next start.
        # A line appended from the loop, as the spool journal's are (a thread hop costs
        # more), unless each write waits for the disk (durable).
        if self.state.durable:
            await asyncio.to_thread(self.state.save)
        else:
            self.state.save()
        for event in batch:
            await events.put(event)

    def _event(
        self,
        rule: Rule,
        tick: datetime,
        now: datetime,
        *,
        recovered: bool = False,
        missed: bool = False,
    ) -> Event:
        pattern = rule.pattern
        assert isinstance(pattern, TimePattern)  # noqa: S101
        scheduled = tick_name(tick.astimezone(pattern.schedule.zone))
        fired = now.astimezone(pattern.schedule.zone).isoformat(timespec="milliseconds")
        name = rule.name
        extras: dict[str, Any] = {
            "scheduled_time": scheduled,
            "fire_time": fired,
            "parameters": {"scheduled_time": scheduled, "fire_time": fired},
        }
        if recovered:
            extras["recovered"] = True  # accepted by a runner that died before its job
        if missed:
            extras["catch_up"] = True  # missed while no runner ran (or the machine slept)
        return Event(
            kind="time",
            path=self.base,
            base=self.base,
            rule=rule,
            time=now.timestamp(),
            extras=extras,
            key=f"time:{name}:{tick_name(tick.astimezone(pattern.schedule.zone))}",
            release=_done(self.state, name, tick_name(tick)),
        )


def _tick_facts(tick: datetime) -> Facts:
    return Facts("time", lambda: {"scheduled_time": tick})


def _span(todo: Plan) -> str:
    if todo.oldest is None:
        return ""
    newest = todo.newest_skipped or todo.newest
    if newest == todo.oldest:
        return f" at {tick_name(todo.oldest)}"
    return f" from {tick_name(todo.oldest)} to {tick_name(newest)}"


def _done(state: TickState, rule: str, tick: str) -> Callable[[], None]:
    return lambda: state.done(rule, tick)


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text)
