"""Job directories on disk: layout, atomic metadata, and reading them back."""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

__all__ = ["META_FILE", "Job", "JobState", "iter_jobs", "new_job_id", "read_meta", "write_meta"]

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

    @property
    def rule(self) -> str:
        return str(self.meta.get("rule", ""))

    def update(self, **changes: Any) -> None:
        """Change the metadata and rewrite it atomically (call from a worker thread)."""
        self.meta.update(changes)
        write_meta(self.dir, self.meta)


def write_meta(job_dir: Path, meta: Mapping[str, Any]) -> None:
    """Write-then-rename, so a reader never sees half a file."""
    tmp = job_dir / f".{META_FILE}.tmp"
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, job_dir / META_FILE)


def read_meta(job_dir: Path) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads((job_dir / META_FILE).read_text(encoding="utf-8"))
    return meta


def iter_jobs(jobs_root: Path) -> Iterator[dict[str, Any]]:
    """Every readable job's metadata under ``jobs_root``, oldest first."""
    try:
        entries = sorted(os.scandir(jobs_root), key=lambda e: e.name)
    except FileNotFoundError:
        return
    for entry in entries:
        if not entry.is_dir():
            continue
        try:
            meta = read_meta(Path(entry.path))
        except (OSError, ValueError):
            continue
        meta.setdefault("dir", entry.path)
        yield meta
