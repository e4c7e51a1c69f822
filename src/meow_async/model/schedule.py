"""When a time pattern ticks: a cron expression (cronsim, Debian cron's rules) or a fixed
interval since an anchor, in an IANA time zone.

A tick is an instant, handled in UTC (two aware times in one zone compare by their wall
clocks, which a repeated hour makes equal). Its identity is that instant written in the
pattern's zone (ISO 8601 with its offset), so the same tick has the same name before and after
a restart, and the two 02:00s of an autumn night are two names when a schedule has both.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

__all__ = [
    "Cron",
    "Every",
    "Schedule",
    "check_cron",
    "parse_anchor",
    "parse_interval",
    "tick_name",
    "time_zone",
]

#: How far back a repeated (autumn) hour can lie and still matter: the longest DST step.
_REPEATS = timedelta(hours=3)
_ZERO = timedelta(0)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
#: The shortest ``every:``: a job is a process, and shorter would start more of them than a
#: machine runs.
MIN_INTERVAL = 0.1


class Schedule(Protocol):
    """**Protocol:** the ticks of a time pattern."""

    @property
    def zone(self) -> ZoneInfo: ...

    def after(self, t: datetime) -> datetime | None:
        """The first tick strictly after instant ``t``, in UTC (None: there is none)."""
        ...

    def back(self, t: datetime) -> Iterator[datetime]:
        """The ticks strictly before instant ``t``, the newest first, in UTC."""
        ...

    def describe(self) -> str: ...


def time_zone(name: object) -> ZoneInfo:
    """The IANA zone ``name``; ValueError names what was wrong."""
    if not isinstance(name, str) or not name:
        raise ValueError("expected an IANA time zone name such as Europe/Copenhagen or UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}: use an IANA name such as Europe/Copenhagen or UTC"
        ) from None


def parse_interval(value: object) -> float:
    """Seconds in ``500ms``, ``10s``, ``5m``, ``1h30m``, ``1d`` or a plain number of seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip().replace(" ", "")
        parts = list(_PART.finditer(text))
        if "".join(m.group(0) for m in parts) != text:
            raise ValueError(
                f"cannot read {value!r} as a duration: write e.g. 500ms, 10s, 5m, 1h30m or 1d"
            )
        seconds = sum(float(m.group(1)) * _UNITS[m.group(2)] for m in parts)
    else:
        raise ValueError("expected a duration such as 500ms, 10s, 5m, 1h or 1d")
    if not math.isfinite(seconds) or seconds < MIN_INTERVAL:
        raise ValueError(f"the interval must be at least {MIN_INTERVAL * 1000:.0f}ms")
    if abs(seconds * 1000 - round(seconds * 1000)) > 1e-6:
        raise ValueError("the interval must be a whole number of milliseconds")
    return seconds


def tick_name(t: datetime) -> str:
    """A tick as ISO 8601 with its offset, to the millisecond only when it has some."""
    return t.isoformat(timespec="milliseconds" if t.microsecond else "seconds")


@dataclass(frozen=True, slots=True)
class Every:
    """Ticks on whole multiples of ``interval`` since ``anchor`` (the Unix epoch by default):
    the same instants whenever the runner starts."""

    interval: float
    zone: ZoneInfo
    anchor: datetime = datetime(1970, 1, 1, tzinfo=UTC)

    def after(self, t: datetime) -> datetime | None:
        step_ms = round(self.interval * 1000)
        anchor_ms = _ms(self.anchor)
        since = _ms(t) - anchor_ms
        k = since // step_ms + 1  # strictly after t, in whole milliseconds
        return _from_ms(anchor_ms + k * step_ms)

    def back(self, t: datetime) -> Iterator[datetime]:
        step_ms = round(self.interval * 1000)
        anchor_ms = _ms(self.anchor)
        k = -((anchor_ms - _ms(t)) // step_ms) - 1  # the last multiple strictly before t
        if _from_ms(anchor_ms + (k + 1) * step_ms) < t:
            k += 1  # t had sub-millisecond digits past that multiple
        while True:
            yield _from_ms(anchor_ms + k * step_ms)
            k -= 1

    def describe(self) -> str:
        return f"every {_duration(self.interval)}"


class Cron:
    """A five-field cron expression (or six, seconds first), evaluated by cronsim as Debian's
    cron does: a time in the hour DST skips runs once at the jump, one in the hour DST repeats
    runs once, and schedules finer than an hour run in both halves of a repeated hour."""

    __slots__ = ("_walk", "expression", "zone")

    def __init__(self, expression: str, zone: ZoneInfo) -> None:
        self.expression = expression
        self.zone = zone
        CronSim(expression, datetime.now(zone))  # CronSimError now, at load time
        #: The last tick named and the walk that named it: cronsim walks wall-clock time and
        #: knows which half of a repeated hour it is in only while it keeps walking.
        self._walk: tuple[datetime, Iterator[datetime]] | None = None

    def after(self, t: datetime) -> datetime | None:
        walk = self._walk
        if walk is not None and walk[0] == t:
            it = walk[1]
        else:
            local = t.astimezone(self.zone)
            start = local
            earlier = (t - _REPEATS).astimezone(self.zone)
            if (earlier.utcoffset() or _ZERO) > (local.utcoffset() or _ZERO):
                start = earlier  # a repeated hour lies just behind t: walk through it again
            it = _bounded(CronSim(self.expression, start.replace(microsecond=0)))
        # cronsim may name a time that is earlier as an instant (inside a repeated hour):
        # those are skipped, so nothing runs twice.
        for tick in it:
            instant = tick.astimezone(UTC)
            if instant > t:
                self._walk = (instant, it)
                return instant
        self._walk = None
        return None

    def back(self, t: datetime) -> Iterator[datetime]:
        it = CronSim(self.expression, _ceil_second(t).astimezone(self.zone), reverse=True)
        newest = t
        while True:
            try:
                tick = next(it).astimezone(UTC)
            except StopIteration:
                return
            if tick < newest:  # strictly older instants only (a repeated hour)
                newest = tick
                yield tick

    def describe(self) -> str:
        return f"cron {self.expression}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Cron) and (self.expression, str(self.zone)) == (
            other.expression,
            str(other.zone),
        )

    def __hash__(self) -> int:
        return hash((self.expression, str(self.zone)))

    def __repr__(self) -> str:
        return f"Cron({self.expression!r}, {str(self.zone)!r})"


def check_cron(expression: object, zone: ZoneInfo) -> Cron:
    """A Cron, or ValueError saying what cronsim found wrong."""
    if not isinstance(expression, str) or not expression.strip():
        raise ValueError('expected a cron expression such as "30 2 * * *"')
    fields = expression.split()
    if len(fields) not in (5, 6):
        raise ValueError(
            f"expected 5 fields (minute hour day month weekday), or 6 with seconds first; "
            f"got {len(fields)}"
        )
    try:
        return Cron(" ".join(fields), zone)
    except CronSimError as e:
        raise ValueError(f"invalid cron expression {expression!r}: {e}") from None


def parse_anchor(value: object, zone: ZoneInfo) -> datetime:
    """An ISO 8601 time; without an offset it is read in ``zone``."""
    if isinstance(value, datetime):
        t = value
    elif isinstance(value, str):
        try:
            t = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"cannot read {value!r} as a time: write ISO 8601, e.g. 2024-01-01T02:30:00+01:00"
            ) from None
    else:
        raise ValueError(  # noqa: TRY004 - a setting's value, reported as ConfigError
            "expected an ISO 8601 time, e.g. 2024-01-01T02:30:00+01:00"
        )
    return t if t.tzinfo is not None else t.replace(tzinfo=zone)


def _ceil_second(t: datetime) -> datetime:
    """``t``, or the next whole second when it has a fraction (cronsim counts seconds)."""
    return t if not t.microsecond else t.replace(microsecond=0) + timedelta(seconds=1)


def _bounded(it: CronSim) -> Iterator[datetime]:
    while True:  # cronsim itself ends after 50 years without a tick
        try:
            yield next(it)
        except StopIteration:
            return


def _ms(t: datetime) -> int:
    delta = t - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _from_ms(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{round(seconds * 1000)}ms"
