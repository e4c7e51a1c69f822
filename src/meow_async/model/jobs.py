"""Job directories on disk: layout, atomic metadata, and reading them back.

A job's folder is ``JOBS/DAY/ID``: one folder per day (UTC, of when the job was made), so that
no directory holds more than a day of jobs however long a runner runs (``ls``, ``find``,
backups and a restart's reconciliation list a day, never the whole history), and a day of
history is one folder to archive. Folders of earlier versions (``JOBS/ID``) stay where they
are and are read as before. Ids do not say the day (they are named from the trigger): the
index (``index.py``) says where a job is, and is made again from the folders when in doubt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "DAY_FOLDER",
    "META_FILE",
    "Job",
    "JobState",
    "day_of",
    "iter_jobs",
    "new_job_id",
    "read_meta",
    "write_meta",
]

META_FILE = "job.json"
PARAMS_FILE = "params.json"
STDOUT_FILE = "stdout.txt"
STDERR_FILE = "stderr.txt"


class JobState(StrEnum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"
    skipped = "skipped"


FINISHED = frozenset({JobState.done, JobState.failed, JobState.skipped})

#: The name of a day folder (``2026-12-07``).
DAY_FOLDER = r"\d{4}-\d{2}-\d{2}"


def day_of(created: float) -> str:
    """The day folder a job made at ``created`` goes in (UTC, so a clock change or a move
    between time zones never puts two days in one folder)."""
    return time.strftime("%Y-%m-%d", time.gmtime(created))


class Indexed(Protocol):
    """**Protocol:** where a job's metadata is also kept (the jobs folder's ``JobIndex``)."""

    def put(self, jobs: Sequence[Job]) -> None: ...


def job_id_for(event_key: str, rule: str, point: dict[str, int | float]) -> str:
    """The same trigger of the same rule at the same sweep point always gets the same id."""
    raw = json.dumps([event_key, rule, sorted(point.items())], separators=(",", ":"))
    return f"{rule}-{hashlib.sha256(raw.encode()).hexdigest()[:16]}"


def new_job_id() -> str:
    """Sortable by creation time (to the millisecond), unique by its random tail."""
    now = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    return f"{stamp}.{int(now * 1000) % 1000:03d}-{secrets.token_hex(4)}"


@dataclass(slots=True, kw_only=True)
class Job:
    """A job ready to run: its directory, command and metadata (kept current on disk)."""

    id: str
    dir: Path
    argv: list[str]
    env: dict[str, str]
    meta: dict[str, Any] = field(default_factory=dict)
    durable: bool = False
    #: Set by the runner while the job holds one of its ``max_jobs`` slots.
    on_end: Callable[[], None] | None = field(default=None, repr=False, compare=False)
    #: The index its row is kept in (set by the runner's handler and recovery).
    index: Indexed | None = field(default=None, repr=False, compare=False)

    @property
    def rule(self) -> str:
        return str(self.meta.get("rule", ""))

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Job:
        """A job read back from its ``job.json`` (to run it after a restart)."""
        return cls(
            id=str(meta["id"]),
            dir=Path(str(meta["dir"])),
            argv=[str(a) for a in meta["argv"]],
            env={str(k): str(v) for k, v in (meta.get("env") or {}).items()},
            meta=meta,
        )

    def process_ended(self) -> None:
        """The job's process is gone: its slot may start the next job while the end is
        being recorded. (Conductors call it; the runner does too once ``execute`` returns.)"""
        if self.on_end is not None:
            self.on_end()

    def update(self, **changes: Any) -> None:
        """Change the metadata and rewrite it atomically, then its index row (call from a
        worker thread): the folder first, so the index is never ahead of it."""
        self.meta.update(changes)
        self.save()
        if self.index is not None:
            self.index.put([self])

    def save(self) -> None:
        """Rewrite ``job.json`` only (a batch writes the index rows in one commit after)."""
        write_meta(self.dir, self.meta, durable=self.durable)


def write_meta(job_dir: Path, meta: Mapping[str, Any], *, durable: bool = False) -> None:
    """Write-then-rename, so a reader never sees half a file; ``durable`` also fsyncs, so
    the record survives a machine crash, not only the runner's.

    One line, unsorted: ``json`` has a C encoder only without ``indent`` (``meow-async show
    --json`` prints it indented).
    """
    tmp = job_dir / f".{META_FILE}.tmp"
    data = (json.dumps(meta) + "\n").encode()
    with open(tmp, "wb") as f:
        f.write(data)
        if durable:
            os.fsync(f.fileno())
    os.replace(tmp, job_dir / META_FILE)
    if durable:
        fsync_dir(job_dir)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_meta(job_dir: Path) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads((job_dir / META_FILE).read_text(encoding="utf-8"))
    return meta


def iter_jobs(jobs_root: Path) -> Iterator[dict[str, Any]]:
    """Every readable job's metadata under ``jobs_root`` (day folders, and the flat layout of
    earlier versions), oldest first. It reads every folder: the index answers faster."""
    try:
        entries = list(os.scandir(jobs_root))
    except FileNotFoundError:
        return
    folders = []
    for entry in entries:
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        if re.fullmatch(DAY_FOLDER, entry.name):
            with contextlib.suppress(FileNotFoundError), os.scandir(entry.path) as day:
                folders += [e.path for e in day if e.is_dir()]
        else:
            folders.append(entry.path)
    metas = []
    for folder in folders:
        try:
            meta = read_meta(Path(folder))
        except (OSError, ValueError):
            continue  # being made, or not a job folder
        meta["dir"] = folder
        metas.append(meta)
    metas.sort(key=lambda m: (m.get("created") or 0, str(m.get("id"))))
    yield from metas
