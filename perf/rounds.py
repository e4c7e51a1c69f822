"""One round of a network test, as the report timed it, and a point (several rounds).

A round starts just before the sender's first connect (the monitors are already listening)
and ends when the last of the N events reaches the event queue. Afterwards (untimed) each
event's file is read to learn which message it carries: that gives the per-event latency
from the sender beginning to close that connection to the event reaching the queue, and
checks that every message arrived once.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .sender import Plan, Sent, message_index

#: After the sender reports failed connections, how long to wait for the rest.
GRACE_S = 3.0
#: After the sender has closed every connection, how long without an event means the rest
#: are lost (the sender's connect succeeded, but the server never accepted: meow_base's
#: listen(1) overflows, and SYN-cookie connections it drops are reset after the sender left).
QUIET_S = 10.0


@dataclass(frozen=True, slots=True)
class Arrival:
    path: str
    t: float  # time.monotonic() when the event reached the queue
    done: Callable[[], None]  # frees the event's file


class Intake(Protocol):
    """Something that turns connections into events: meow_async, the floor, meow_base."""

    async def start(self, monitors: int, listeners: int) -> list[int]: ...
    async def next(self) -> Arrival: ...
    async def stop(self) -> None: ...


class Sender(Protocol):
    name: str

    async def round(self, plan: Plan) -> Sent: ...
    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class PointSpec:
    """One row of a report table: test a, b or c at ``x`` (messages, listeners, monitors)."""

    test: str
    x: int
    n: int
    monitors: int
    listeners: int


@dataclass(slots=True)
class RoundResult:
    n: int
    delivered: int = 0
    total_s: float | None = None  # None unless every message arrived in time
    timed_out: bool = False
    gave_up: str = ""  # why the round ended before every message arrived
    send_errors: int = 0
    duplicates: int = 0
    stalls: int = 0  # connects that took a SYN retransmit (>= 0.9 s)
    max_connect_s: float = 0.0
    latency_ms: list[float] = field(default_factory=list)
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "delivered": self.delivered,
            "total_s": self.total_s,
            "timed_out": self.timed_out,
            "gave_up": self.gave_up,
            "send_errors": self.send_errors,
            "duplicates": self.duplicates,
            "stalls": self.stalls,
            "max_connect_s": round(self.max_connect_s, 6),
            "latency_ms": [round(v, 4) for v in self.latency_ms],
            "note": self.note,
        }


async def one_round(
    intake: Intake, sender: Sender, plan: Plan, cap_s: float, quiet_s: float = QUIET_S
) -> RoundResult:
    loop = asyncio.get_running_loop()
    end_by = loop.time() + cap_s
    arrivals: list[Arrival] = []

    async def collect() -> None:
        while len(arrivals) < plan.n:
            arrivals.append(await intake.next())

    sending = asyncio.create_task(sender.round(plan))
    collector = asyncio.create_task(collect())
    await asyncio.wait({collector, sending}, timeout=cap_s, return_when=asyncio.FIRST_COMPLETED)
    res = RoundResult(n=plan.n)
    if not collector.done() and sending.done():
        # Every connection is closed: what has not arrived is late or lost. Wait while
        # events keep coming, but not past QUIET_S of silence (GRACE_S if sends failed).
        failed = sending.exception() is not None or bool(sending.result().errors)
        quiet = min(GRACE_S, quiet_s) if failed else quiet_s
        while not collector.done():
            left = end_by - loop.time()
            if left <= 0:
                break
            had = len(arrivals)
            await asyncio.wait({collector}, timeout=min(left, quiet))
            if len(arrivals) == had and not collector.done():
                res.gave_up = f"no event for {quiet:.0f} s after the sender finished"
                break
    if not collector.done():
        collector.cancel()
        if not res.gave_up:
            res.timed_out = True
            res.gave_up = "the time cap was reached"
    with contextlib.suppress(asyncio.CancelledError):
        await collector
    sent: Sent | None = None
    if res.timed_out and not sending.done():
        sending.cancel()  # the caller aborts this sender
        res.note = "the sender was still connecting at the cap"
    else:
        try:
            async with asyncio.timeout(30):
                sent = await sending
        except Exception as e:  # e.g. the sender process died
            res.note = f"sender failed: {e!r}"
    _account(res, arrivals, sent)
    return res


def _account(res: RoundResult, arrivals: list[Arrival], sent: Sent | None) -> None:
    seen: set[int] = set()
    for a in arrivals:
        try:
            with open(a.path, "rb") as f:
                i = message_index(f.read(32))
        except (OSError, ValueError):
            i = -1
        finally:
            with contextlib.suppress(OSError):
                a.done()
        if i in seen:
            res.duplicates += 1
            continue
        seen.add(i)
        if sent is not None and 0 <= i < len(sent.closing) and not math.isnan(sent.closing[i]):
            res.latency_ms.append((a.t - sent.closing[i]) * 1000)
    res.delivered = len(seen - {-1})
    if sent is None:
        return
    res.send_errors = len(sent.errors)
    res.stalls = sent.stalls
    res.max_connect_s = max((c for c in sent.connect_s if not math.isnan(c)), default=0.0)
    if sent.errors and not res.note:
        res.note = sent.errors[0]
    if not res.timed_out and res.delivered == res.n and arrivals:
        res.total_s = max(a.t for a in arrivals) - sent.started


async def run_point(
    new_intake: Callable[[int], Intake],
    new_sender: Callable[[], Awaitable[Sender]],
    spec: PointSpec,
    *,
    repeats: int,
    cap_s: float,
    size: int,
    concurrency: int,
    interval_s: float = 0.0,
    quiet_s: float = QUIET_S,
    on_round: Callable[[RoundResult], None] | None = None,
) -> list[RoundResult]:
    """Start monitors, then ``repeats`` rounds on them, within ``cap_s`` in all.

    After a round that lost messages, the monitors are replaced by new ones on new ports, so
    a straggler cannot land in the next round.
    """
    loop = asyncio.get_running_loop()
    end_by = loop.time() + cap_s
    restarts = 0
    intake = new_intake(restarts)
    ports = await intake.start(spec.monitors, spec.listeners)
    sender = await new_sender()
    results: list[RoundResult] = []
    try:
        for _ in range(repeats):
            left = end_by - loop.time()
            if left <= 0:
                break
            plan = Plan(ports, spec.n, size, concurrency, interval_s=interval_s)
            res = await one_round(intake, sender, plan, left, quiet_s)
            results.append(res)
            if on_round is not None:
                on_round(res)
            if res.timed_out:
                break
            if res.gave_up:
                await intake.stop()
                restarts += 1
                intake = new_intake(restarts)
                ports = await intake.start(spec.monitors, spec.listeners)
    finally:
        await sender.close()
        await intake.stop()
    return results
