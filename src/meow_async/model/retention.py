"""Retention: how long finished jobs are kept, and removing the older ones in bounded slices.

``runner.retention: {done: 30d, failed: 180d, skipped: 7d}`` (default: keep everything). The
runner removes what is past it in the background, a slice at a time (``prune_slice``), and
``meow-async prune`` does the same by hand. The index says which jobs are old; each goes
**folder first, then row**: ``job.json`` is removed before the rest of the folder, so a kill
at any moment leaves either a folder the index still lists without its ``job.json``, or a row
whose folder is gone. Either way the day folder's mtime moved past the index's last commit,
and the next start's reconciliation (``JobIndex.open``) finishes the removal. The other order
would leave folders no row lists, found only by a rebuild.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..exceptions import ConfigError
from .index import JobIndex
from .jobs import FINISHED, META_FILE

__all__ = [
    "Pruned",
    "describe",
    "duration",
    "prune_slice",
    "remove_folders",
    "retention_settings",
    "would_prune",
]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")

#: Jobs removed per slice: at most this many folders per thread hop.
SLICE = 200


def duration(text: object) -> float | None:
    """``30d``, ``12h``, ``1h30m``, or a number of seconds -> seconds; None if it is neither."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text) if text >= 0 else None
    if not isinstance(text, str):
        return None
    t = text.strip().lower()
    if not _DURATION.fullmatch(t):
        return None
    return sum(float(n) * _UNITS[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([smhdw])", t))


def retention_settings(value: object) -> dict[str, float]:
    """``runner.retention``, checked: finished states to how long their jobs are kept."""
    states = sorted(s.value for s in FINISHED)
    if not isinstance(value, Mapping) or not value:
        raise ConfigError(
            f"expected a mapping of job states ({', '.join(states)}) to how long their jobs "
            "are kept, e.g. {done: 30d, failed: 180d}",
            where="runner",
            field="retention",
            value=value,
        )
    out: dict[str, float] = {}
    for state, keep in value.items():
        if state not in states:
            raise ConfigError(
                f"{state!r} is not a finished job state: use {', '.join(states)} (queued and "
                "running jobs are never removed)",
                where="runner",
                field=f"retention.{state}",
                value=keep,
            )
        seconds = duration(keep)
        if seconds is None or seconds <= 0:
            raise ConfigError(
                "expected how long to keep them: a duration (30d, 12h, 1w, 1h30m) or seconds "
                "above 0",
                where="runner",
                field=f"retention.{state}",
                value=keep,
            )
        out[str(state)] = seconds
    return out


@dataclass(slots=True)
class Pruned:
    """What a pass removed (or, dry, would remove)."""

    removed: dict[str, int] = field(default_factory=dict)
    oldest: float | None = None
    newest: float | None = None

    @property
    def total(self) -> int:
        return sum(self.removed.values())


def prune_slice(
    index: JobIndex,
    keep: Mapping[str, float],
    *,
    now: float | None = None,
    limit: int = SLICE,
    into: Pruned | None = None,
) -> Pruned:
    """Remove up to ``limit`` finished jobs older than ``keep`` says (by state: seconds since
    they finished), folder first, then row. Blocking: call it in a thread."""
    now = time.time() if now is None else now
    out = into if into is not None else Pruned()
    left = limit
    for state, seconds in sorted(keep.items()):
        if left <= 0:
            break
        rows = index.older_than(now - seconds, [state], left)
        for _, _, _, created in rows:
            out.oldest = created if out.oldest is None else min(out.oldest, created)
            out.newest = created if out.newest is None else max(out.newest, created)
        remove_folders(index.root, [folder for _, folder, _, _ in rows])
        index.remove([job_id for job_id, _, _, _ in rows])
        out.removed[state] = out.removed.get(state, 0) + len(rows)
        left -= len(rows)
    return out


def would_prune(index: JobIndex, keep: Mapping[str, float], *, now: float | None = None) -> Pruned:
    """What pruning with ``keep`` would remove now (``prune --dry-run``)."""
    now = time.time() if now is None else now
    out = Pruned()
    for state, seconds in sorted(keep.items()):
        n, oldest, newest = index.count_older(now - seconds, state)
        out.removed[state] = n
        if oldest is not None:
            out.oldest = oldest if out.oldest is None else min(out.oldest, oldest)
        if newest is not None:
            out.newest = newest if out.newest is None else max(out.newest, newest)
    return out


def remove_folders(root: Path, folders: Iterable[str]) -> None:
    """Remove job folders: ``job.json`` first (the folder stops being a job), then the rest."""
    days = set()
    for folder in folders:
        path = root / folder
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path / META_FILE)
        shutil.rmtree(path, ignore_errors=True)
        if path.parent != root:
            days.add(path.parent)
    for day in days:  # a day with nothing left goes too
        with contextlib.suppress(OSError):
            day.rmdir()


def describe(p: Pruned) -> str:
    """``3 done, 1 failed``."""
    return ", ".join(f"{n} {s}" for s, n in sorted(p.removed.items()) if n) or "none"
