"""What every conductor shares: the protocol, and how a job's end is recorded in ``job.json``."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Protocol

from ..model.jobs import STDERR_FILE, STDOUT_FILE, Indexed, Job, JobState, ended_text, stderr_lines
from .output import compact
from .process_log import CANCELLED, last_attempt

__all__ = [
    "PYTHON_KINDS",
    "Conductor",
    "JobInterrupted",
    "Records",
    "stderr_tail",
    "trigger_to_check",
]

logger = logging.getLogger("meow_async.conductors")

_TAIL_BYTES = 2048

#: Recipe kinds whose jobs run ``python SCRIPT ...``, so a spawned job records its own exit.
PYTHON_KINDS = ("python", "notebook")


class Conductor(Protocol):
    """**Protocol:** runs one job to its end and records it; cancellation stops the job."""

    async def execute(self, job: Job) -> JobState: ...


class JobInterrupted(Exception):
    """The job's process was lost with what supervised it; the rule's ``on_restart`` decides,
    as after a runner that died."""


class Records:
    """Job ends written to ``job.json``: under a burst, many in one thread hop."""

    def __init__(self) -> None:
        self._pending: list[tuple[Job, asyncio.Future[None]]] = []
        self._writing: asyncio.Task[None] | None = None

    async def finish(
        self,
        job: Job,
        code: int | None,
        error: str | None,
        state: JobState | None = None,
        timed_out: bool = False,
    ) -> JobState:
        state = _ended(job, code, error, state, timed_out)
        fut = asyncio.get_running_loop().create_future()
        self._pending.append((job, fut))
        if self._writing is None:
            self._writing = asyncio.ensure_future(self._write())
        await fut
        return state

    def finish_now(self, job: Job, code: int | None, error: str) -> None:
        """On the loop's thread, at shutdown, when no thread may be waited for."""
        _ended(job, code, error, None, False)
        _cut_output(job)
        drop_empty_output(job.dir)
        job.update()

    async def _write(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                errors = await asyncio.to_thread(_write_all, [job for job, _ in batch])
                for (_, fut), err in zip(batch, errors, strict=True):
                    if fut.done():
                        continue
                    if err is None:
                        fut.set_result(None)
                    else:
                        fut.set_exception(err)
        finally:
            self._writing = None


def _write_all(jobs: list[Job]) -> list[Exception | None]:
    """Each job's ``job.json``, then the index rows of those written, in one commit: the
    folders first, so a reader never finds an end in the index that its folder lacks."""
    errors: list[Exception | None] = []
    by_index: dict[int, tuple[Indexed, list[int]]] = {}
    for i, job in enumerate(jobs):
        try:
            _cut_output(job)
            drop_empty_output(job.dir)
            job.save()
        except Exception as e:
            errors.append(e)
            continue
        errors.append(None)
        if job.index is not None:
            by_index.setdefault(id(job.index), (job.index, []))[1].append(i)
    for index, which in by_index.values():
        try:
            index.put([jobs[i] for i in which])
        except Exception as e:  # the ends are on disk, and the next start indexes them
            logger.warning("could not write %d job end(s) to the job index: %s", len(which), e)
    return errors


def _ended(
    job: Job, code: int | None, error: str | None, state: JobState | None, timed_out: bool
) -> JobState:
    """The end of the job's attempt, in its metadata (not yet on disk)."""
    if error is None and code != 0:
        error = ended_text(code) + stderr_tail(job.dir)
        last = last_attempt(job.dir)  # a failed end only: one more small read
        if last is not None and last.cancelled is not None:
            error = f"{CANCELLED}: {ended_text(code)}"
            job.meta["cancelled"] = True
        if job.meta.get("recipe_kind") == "notebook":
            job.meta["notebook_error"] = _notebook_error(job.dir)
    if state is None:
        state = JobState.done if error is None else JobState.failed
    now = time.time()
    attempt: dict[str, Any] = {
        "started": job.meta.get("started"),
        "finished": now,
        "exit_code": code,
        "error": error,
    }
    if timed_out:
        attempt["timed_out"] = True
    job.meta.update(
        state=state.value,
        finished=now,
        exit_code=code,
        error=error,
        timed_out=timed_out,
        attempts=[*(job.meta.get("attempts") or []), attempt],
    )
    return state


def _cut_output(job: Job) -> None:
    """The ended attempt's output files cut to ``max_output`` (head and tail), and said so
    in ``output_cut`` (which the conductor cleared when the attempt started)."""
    limit = job.meta.get("max_output")
    if not isinstance(limit, int) or limit <= 0:
        return
    try:
        cut = compact(job.dir, limit)
    except OSError as e:
        logger.warning("job %s: could not cut its output to max_output: %s", job.id, e)
        return
    if cut:
        job.meta["output_cut"] = {**(job.meta.get("output_cut") or {}), **cut}
        logger.warning(
            "job %s wrote more than max_output (%d bytes per stream): %s",
            job.id,
            limit,
            ", ".join(f"{c['cut']} bytes cut from the middle of {name}" for name, c in cut.items()),
        )


def drop_empty_output(job_dir: Path) -> None:
    """Remove ``stdout.txt``/``stderr.txt`` if the job wrote nothing to them: two files (and
    two disk blocks' worth of inodes and entries) fewer per quiet job. A file that is missing
    simply means the job printed nothing there."""
    for name in (STDOUT_FILE, STDERR_FILE):
        path = os.path.join(job_dir, name)
        try:
            if os.stat(path).st_size == 0:
                os.unlink(path)
        except FileNotFoundError:
            pass


def trigger_to_check(job: Job) -> str | None:
    """The file whose disappearance makes the job pointless (a file job not about a delete)."""
    event = job.meta.get("event") or {}
    if event.get("kind") == "file" and event.get("change") != "deleted":
        path = event.get("path")
        if isinstance(path, str):
            return path
    return None


def _notebook_error(job_dir: Path) -> dict[str, Any] | None:
    """The failing cell, as the notebook job wrote it (see notebook_job.py)."""
    try:
        found: dict[str, Any] = json.loads((job_dir / "notebook-error.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return found


def stderr_tail(job_dir: Path) -> str:
    """The end of stderr, which is where scripts say why they failed."""
    lines = stderr_lines(job_dir, 1, _TAIL_BYTES)
    return f": {lines[-1].strip()}" if lines else ""
