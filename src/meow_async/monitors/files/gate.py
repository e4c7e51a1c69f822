"""Holding file events back until a file is complete, or a burst is over.

Per pattern: ``settle`` (no change for that many seconds), ``min_age`` (the file's mtime is at
least that old), ``sentinel`` (another file, named by a template such as ``{PATH}.done``,
exists), and ``coalesce`` (events of the rule within that many seconds of each other make one,
for the latest file). Each held trigger waits on a timer or on the sentinel's arrival, never
by polling; a new change to the same file restarts its wait. The polling watcher's changes
get a default ``settle`` where the pattern has no check of its own; the end of the job that
wrote the file cuts that guess short (``hurry``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ...model.events import Event
from ...model.patterns import Change, FilePattern
from ...model.templates import expand, keyword_values

__all__ = ["Gate"]


@dataclass(eq=False)
class _Held:
    event: Event
    first_seen: float
    changed: float  # monotonic time of the latest change
    sentinel: str | None = None
    settle: float = 0.0  # the pattern's, or the watcher's default for polled files
    default_settle: bool = False  # the settle is the watcher's guess, not the pattern's word
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    hurried: asyncio.Event = field(default_factory=asyncio.Event)
    count: int = 1
    task: asyncio.Task[None] | None = None


class Gate:
    """Decides when a file event may go on to the handlers."""

    def __init__(self, put: Callable[[Event], Awaitable[None]]) -> None:
        self._put = put
        self._files: dict[tuple[str, str], _Held] = {}  # (rule, path) waiting to be complete
        self._bursts: dict[str, _Held] = {}  # rule -> its latest event, while coalescing
        self._sentinels: dict[str, set[tuple[str, str]]] = {}

    @staticmethod
    def needed(pattern: FilePattern) -> bool:
        return bool(pattern.settle or pattern.min_age or pattern.sentinel or pattern.coalesce)

    def oldest(self) -> float | None:
        """When the oldest held trigger happened (its file's ctime), if any is held."""
        times = [
            h.event.changed_at or h.first_seen
            for h in (*self._files.values(), *self._bursts.values())
        ]
        return min(times, default=None)

    def held(self) -> int:
        return len(self._files) + len(self._bursts)

    def noticed(self, path: str) -> None:
        """Any path that changed: it may be a sentinel someone waits for."""
        for key in self._sentinels.get(path, ()):
            held = self._files.get(key)
            if held is not None:
                held.arrived.set()

    @staticmethod
    def default_settle(pattern: FilePattern, settle: float) -> float:
        """The settle a watcher's default gives this pattern: none where the pattern has its
        own completeness check (settle, min_age, sentinel)."""
        return 0.0 if pattern.settle or pattern.min_age or pattern.sentinel else settle

    def offer(self, event: Event, *, settle: float = 0.0) -> None:
        """Hold ``event`` until its file is complete; ``settle`` is the watcher's default for
        patterns without a check of their own (polled files), 0 for none."""
        pattern = event.rule.pattern
        assert isinstance(pattern, FilePattern)  # noqa: S101 - only file events are gated
        default = self.default_settle(pattern, settle)
        key = (event.rule.name, event.path)
        held = self._files.get(key)
        if held is None and not (pattern.settle or pattern.min_age or pattern.sentinel or default):
            self._coalesce(event)
            return
        if held is not None:  # changed again while waiting: the latest state, a fresh wait
            if (held.event.changed_at or 0) > (event.changed_at or 0):
                event = held.event  # an older view (an attribute cache): the newer one stays
            elif held.event.change is Change.created and event.change is Change.modified:
                event = _with(event, change=Change.created)  # never triggered: still new
            held.event, held.changed, held.count = event, time.monotonic(), held.count + 1
            if held.default_settle and not default:
                self._hurry(held)  # found complete now (a job's end): no more guessing
            return
        held = _Held(event, time.time(), time.monotonic())
        held.settle, held.default_settle = pattern.settle or default, bool(default)
        if pattern.sentinel:
            values = keyword_values(event.path, event.base, "")
            held.sentinel = os.path.normpath(
                os.path.join(event.base, expand(pattern.sentinel, values))
            )
            self._sentinels.setdefault(held.sentinel, set()).add(key)
        self._files[key] = held
        held.task = asyncio.create_task(self._wait_complete(key, held))

    def withdraw(self, rule: str, path: str) -> None:
        """Stop holding ``rule``'s trigger for ``path``, if one is held (its file changed into
        a state the rule's filter rejects)."""
        held = self._files.pop((rule, path), None)
        if held is not None and held.task is not None:
            held.task.cancel()

    def holds(self, rule: str, path: str) -> bool:
        """Whether a trigger of ``rule`` for ``path`` waits here (a new state joins it)."""
        return (rule, path) in self._files

    def holds_path(self, path: str) -> bool:
        """Whether any rule's trigger for ``path`` waits here."""
        return any(held_path == path for _, held_path in self._files)

    @staticmethod
    def _hurry(held: _Held) -> None:
        held.settle, held.default_settle = 0.0, False
        held.hurried.set()

    def close(self) -> None:
        """Stop waiting: held triggers are found again at the next start (catch-up)."""
        for held in (*self._files.values(), *self._bursts.values()):
            if held.task is not None:
                held.task.cancel()
        self._files.clear()
        self._bursts.clear()
        self._sentinels.clear()

    async def _wait_complete(self, key: tuple[str, str], held: _Held) -> None:
        pattern = held.event.rule.pattern
        assert isinstance(pattern, FilePattern)  # noqa: S101
        try:
            if held.sentinel is not None:
                while True:
                    held.arrived.clear()  # before looking: an arrival after is not missed
                    if await asyncio.to_thread(os.path.exists, held.sentinel):
                        break
                    await held.arrived.wait()
            while True:
                held.hurried.clear()  # before looking: a hurry from now on is not missed
                try:
                    mtime = (await asyncio.to_thread(os.stat, held.event.path)).st_mtime
                except OSError:
                    return  # gone before it was complete: nothing to run
                wait = max(
                    held.changed + held.settle - time.monotonic(),
                    mtime + pattern.min_age - time.time(),
                )
                if wait <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await held.hurried.wait()
        finally:
            # Withdrawn, then offered again before this ran: the new hold is not ours to end.
            now = self._files.get(key)
            if now is held:
                del self._files[key]
            if held.sentinel is not None and (
                now is held or now is None or now.sentinel != held.sentinel
            ):
                waiting = self._sentinels.get(held.sentinel, set())
                waiting.discard(key)
                if not waiting:
                    self._sentinels.pop(held.sentinel, None)
        event = held.event
        if held.count > 1:
            event = _with(event, changes_seen=held.count)
        if pattern.coalesce:
            self._coalesce(event)
        else:
            await self._put(event)

    def _coalesce(self, event: Event) -> None:
        name = event.rule.name
        burst = self._bursts.get(name)
        if burst is not None:
            burst.event, burst.changed, burst.count = event, time.monotonic(), burst.count + 1
            return
        burst = _Held(event, time.time(), time.monotonic())
        self._bursts[name] = burst
        burst.task = asyncio.create_task(self._wait_quiet(name, burst))

    async def _wait_quiet(self, name: str, burst: _Held) -> None:
        pattern = burst.event.rule.pattern
        assert isinstance(pattern, FilePattern)  # noqa: S101
        try:
            # A timer whose deadline each new event of the burst moves, not a poll.
            while (wait := burst.changed + pattern.coalesce - time.monotonic()) > 0:  # noqa: ASYNC110
                await asyncio.sleep(wait)
        finally:
            with contextlib.suppress(KeyError):
                if self._bursts[name] is burst:
                    del self._bursts[name]
        await self._put(_with(burst.event, coalesced=burst.count))


def _with(event: Event, change: Change | None = None, **extras: object) -> Event:
    return Event(
        kind=event.kind,
        path=event.path,
        base=event.base,
        rule=event.rule,
        change=change or event.change,
        time=event.time,
        id=event.id,
        extras={**event.extras, **extras},
        release=event.release,
        key=event.key,
        changed_at=event.changed_at,
    )
