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
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "DAY_FOLDER",
    "META_FILE",
    "NOTIFY_PENDING",
    "Job",
    "JobState",
    "day_of",
    "ended_text",
    "exit_text",
    "iter_jobs",
    "new_job_id",
    "queued_again",
    "read_meta",
    "stderr_lines",
    "write_meta",
]

META_FILE = "job.json"
PARAMS_FILE = "params.json"
STDOUT_FILE = "stdout.txt"
STDERR_FILE = "stderr.txt"
#: In job.json: settled by a starting runner, its notification not yet delivered.
NOTIFY_PENDING = "notify_pending"


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


def exit_text(code: int | None) -> str:
    """An exit code as people read it: ``0``, ``3``, or the signal that killed the process
    (``SIGTERM`` for -15, as ``subprocess`` reports it); ``-`` for none."""
    if code is None:
        return "-"
    if code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return str(code)


def ended_text(code: int | None) -> str:
    """How a process ended, for an error line: ``exit code 3`` or ``killed by SIGTERM``."""
    if code is not None and code < 0:
        return f"killed by {exit_text(code)}"
    return f"exit code {code}"


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
    #: A spawned Python job's script compiled by the handler that wrote it (precompiled.py);
    #: in memory only: a job read back from its folder compiles its script itself.
    precompiled: bytes | None = field(default=None, repr=False, compare=False)

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


def queued_again(meta: Mapping[str, Any]) -> dict[str, Any]:
    """A finished job's record made ``queued`` again (``meow-async jobs rerun``): its end
    cleared, its retries given back, its earlier attempts kept as its history."""
    out = {**meta, "state": JobState.queued.value, "reruns": int(meta.get("reruns") or 0) + 1}
    for key in ("finished", "exit_code", "error", "pid", "started", "notebook_error"):
        out[key] = None
    out.update(timed_out=False, cancelled=False, retried=0)
    # Its new end is notified as any job's: not again as one settled at start.
    for key in (NOTIFY_PENDING, "settled_at_start"):
        out.pop(key, None)
    return out


def stderr_lines(job_dir: Path, count: int, max_bytes: int) -> list[str]:
    """The last ``count`` non-blank lines of the job's stderr, from at most its last
    ``max_bytes``: where scripts say why they failed."""
    try:
        with open(job_dir / STDERR_FILE, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    if size > max_bytes and len(lines) > 1:
        lines = lines[1:]  # the first is probably cut
    return [line for line in lines if line.strip()][-count:]
