"""Job directories on disk: layout, atomic metadata, and reading them back."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

__all__ = [
    "META_FILE",
    "NOTIFY_PENDING",
    "Job",
    "JobState",
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
        """Change the metadata and rewrite it atomically (call from a worker thread)."""
        self.meta.update(changes)
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
    """Every readable job's metadata under ``jobs_root``, oldest first."""
    try:
        entries = list(os.scandir(jobs_root))
    except FileNotFoundError:
        return
    metas = []
    for entry in entries:
        if not entry.is_dir():
            continue
        try:
            meta = read_meta(Path(entry.path))
        except (OSError, ValueError):
            continue  # being made, or not a job folder
        meta["dir"] = entry.path
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
