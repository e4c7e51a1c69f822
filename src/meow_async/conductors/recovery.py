"""What a restart finds: jobs a killed runner left queued or started, and where it had got to.

The job folders are the record: ``job.json`` and, once a job has started, ``process.log``.
A job not started runs; a job that finished while no runner watched is recorded with its
exit code; a job cut off has its process group killed (if it is still the same process),
then the rule's ``on_restart`` policy decides: ``rerun`` queues it again, ``fail`` records it
failed with the reason.

A job settled here (failed, or recorded from its own exit) is marked ``settled_at_start`` and,
if its pattern's ``notify`` asks for that end, ``notify_pending`` until every destination has
had its message ("found after a restart"): the next start files it again if a runner died
before that, so it is notified at least once, and not again once the mark is gone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..model.index import JobIndex, read_folder
from ..model.jobs import (
    NOTIFY_PENDING,
    Job,
    JobState,
    ended_text,
    fsync_dir,
    iter_jobs,
    read_meta,
    write_meta,
)
from ..model.notify import Notify
from ..model.rules import Rule
from .base import stderr_tail
from .forkserver import start_time_of as process_start_time
from .process_log import CANCELLED, Attempt, last_attempt, outcome

__all__ = ["Recovered", "RunnerState", "clear_notify_mark", "recover_jobs"]

logger = logging.getLogger("meow_async.recovery")

STATE_FILE = ".meow-runner.json"


@dataclass(slots=True)
class Recovered:
    to_run: list[Job] = field(default_factory=list)
    rerun: int = 0
    failed: int = 0
    killed: int = 0
    finished: int = 0  # ended while no runner watched: recorded, not run again
    #: Jobs settled at start (now, or by a runner that died before notifying) to notify.
    to_notify: list[dict[str, Any]] = field(default_factory=list)
    half_made: int = 0  # being made when the runner died: removed, made again by the trigger


def recover_jobs(
    jobs_root: Path,
    rules: dict[str, Rule],
    *,
    durable: bool = False,
    index: JobIndex | None = None,
) -> Recovered:
    """Queued jobs to run again, and jobs a dead runner had started, settled.

    A started job's ``process.log`` says how far it got: an attempt whose process recorded
    its exit is recorded with that exit code and never runs again; one whose process never
    began is simply queued; one cut off (its process killed with the runner, or still alive
    and killed now) is settled by its rule's ``on_restart``.

    With an ``index``, only the jobs it has as unfinished are read (what a restart costs
    follows the open work, not the history); a row whose folder has no ``job.json`` was
    being made when the runner died: both go, and the trigger makes the job again.
    """
    out = Recovered()
    written: list[tuple[dict[str, Any], str]] = []
    for meta in _open_jobs(jobs_root, index, out):
        state = meta.get("state")
        job_dir = Path(meta["dir"])
        if state == JobState.queued:
            attempt = last_attempt(job_dir)
            if attempt is None or attempt.number <= len(meta.get("attempts") or []):
                out.to_run.append(_job(meta, durable, index))  # not started since its record
                continue
            attempt, cut_off, killed = outcome(job_dir, attempt)
            out.killed += killed
            if attempt.cancelled is not None and (cut_off or attempt.exit_code):
                _record_cancelled(meta, attempt, rules, durable)
                written.append((meta, meta["dir"]))
                out.finished += 1
                _to_notify(meta, out)
            elif attempt.exit_code is not None:
                _record_exit(meta, attempt, rules, durable)
                written.append((meta, meta["dir"]))
                out.finished += 1
                _to_notify(meta, out)
            elif cut_off:
                meta["started"] = attempt.started
                _settle(meta, rules, out, durable, index)
                written.append((meta, meta["dir"]))
            else:
                out.to_run.append(_job(meta, durable, index))  # it never began
        elif state == JobState.running:  # written by meow_async before process.log
            if _kill_orphan(meta):
                out.killed += 1
            _settle(meta, rules, out, durable, index)
            written.append((meta, meta["dir"]))
        else:
            written.append((meta, meta["dir"]))  # ended, though the index did not know
            _to_notify(meta, out)  # settled by an earlier start that died before notifying
    if index is not None:
        index.put_metas(written)
    return out


def _open_jobs(jobs_root: Path, index: JobIndex | None, out: Recovered) -> Iterator[dict[str, Any]]:
    """The metadata of every job that may be unfinished, and of every finished one whose
    restart notification is still owed (``notify_pending``): from the index's rows of those,
    or (no index) from every folder."""
    if index is None:
        for meta in iter_jobs(jobs_root):
            if meta.get("state") in (JobState.queued, JobState.running) or meta.get(NOTIFY_PENDING):
                yield meta
        return
    half_made = []
    seen: set[str] = set()
    for job_id, folder in [*index.unfinished(), *index.notify_pending()]:
        if job_id in seen:
            continue
        seen.add(job_id)
        job_dir = jobs_root / folder
        found = read_folder(str(job_dir))
        if found is None or found.get("id") != job_id:
            half_made.append(job_id)
            if found is None and job_dir.is_dir():
                shutil.rmtree(job_dir, ignore_errors=True)
            continue
        found["dir"] = str(job_dir)
        yield found
    if half_made:
        index.remove(half_made)
        out.half_made += len(half_made)


def _to_notify(meta: dict[str, Any], out: Recovered) -> None:
    if meta.get(NOTIFY_PENDING) and meta.get("state") in (JobState.done, JobState.failed):
        out.to_notify.append(meta)


def _mark(meta: dict[str, Any], rules: dict[str, Rule]) -> None:
    """Settled now: say so in job.json, with the notification still to send if one is due."""
    meta["settled_at_start"] = time.time()
    rule = rules.get(str(meta.get("rule")))
    notify = rule.pattern.notify if rule is not None else None
    if isinstance(notify, Notify) and meta.get("state") in notify.on:
        meta[NOTIFY_PENDING] = True


def clear_notify_mark(
    job_dir: Path, *, durable: bool = False, index: JobIndex | None = None
) -> None:
    """Every destination had the notification of a job settled at start (or none wants it
    any more): the next start does not send it again (``job.json``, then its index row)."""
    try:
        meta = read_meta(job_dir)
    except (OSError, ValueError):
        return
    if meta.pop(NOTIFY_PENDING, None) is None:
        return
    try:
        write_meta(job_dir, meta, durable=durable)
    except OSError as e:
        logger.warning(
            "job %s: could not record that it was notified (%s): the next start notifies it again",
            meta.get("id"),
            e.strerror or e,
        )
        return
    if index is not None:
        index.save([(meta, job_dir)])


def _settle(
    meta: dict[str, Any],
    rules: dict[str, Rule],
    out: Recovered,
    durable: bool,
    index: JobIndex | None,
) -> None:
    """A job cut off by a runner's death: ``on_restart`` reruns it or fails it."""
    rule = rules.get(str(meta.get("rule")))
    policy = rule.pattern.on_restart if rule is not None else "fail"
    attempt = {
        "started": meta.get("started"),
        "finished": time.time(),
        "exit_code": None,
        "error": "the runner died while the job was running",
    }
    meta["attempts"] = [*(meta.get("attempts") or []), attempt]
    if policy == "rerun":
        meta.update(state=JobState.queued.value, error=None, exit_code=None)
        write_meta(Path(meta["dir"]), meta, durable=durable)
        out.to_run.append(_job(meta, durable, index))
        out.rerun += 1
    else:
        why = "the runner died while the job was running" + (
            "" if rule is not None else " (and its rule no longer exists)"
        )
        meta.update(state=JobState.failed.value, error=why, finished=time.time())
        _mark(meta, rules)
        write_meta(Path(meta["dir"]), meta, durable=durable)
        out.failed += 1
        _to_notify(meta, out)


def _record_exit(
    meta: dict[str, Any], attempt: Attempt, rules: dict[str, Rule], durable: bool
) -> None:
    """A job that ended while no runner watched: recorded as it ended, not run again."""
    code = attempt.exit_code
    finished = attempt.finished or time.time()
    error = None if code == 0 else ended_text(code) + stderr_tail(Path(meta["dir"]))
    meta["attempts"] = [
        *(meta.get("attempts") or []),
        {"started": attempt.started, "finished": finished, "exit_code": code, "error": error},
    ]
    meta.update(
        state=(JobState.done if code == 0 else JobState.failed).value,
        started=attempt.started,
        finished=finished,
        exit_code=code,
        error=error,
        pid=attempt.pid,
    )
    _mark(meta, rules)
    write_meta(Path(meta["dir"]), meta, durable=durable)


def _record_cancelled(
    meta: dict[str, Any], attempt: Attempt, rules: dict[str, Rule], durable: bool
) -> None:
    """A job ``meow-async jobs cancel`` stopped while no runner watched: failed, not rerun."""
    code = attempt.exit_code
    error = f"{CANCELLED}: " + ("killed" if code is None else ended_text(code))
    finished = attempt.finished or attempt.cancelled or time.time()
    meta["attempts"] = [
        *(meta.get("attempts") or []),
        {"started": attempt.started, "finished": finished, "exit_code": code, "error": error},
    ]
    meta.update(
        state=JobState.failed.value,
        started=attempt.started,
        finished=finished,
        exit_code=code,
        error=error,
        cancelled=True,
        pid=attempt.pid,
    )
    _mark(meta, rules)
    write_meta(Path(meta["dir"]), meta, durable=durable)


def _job(meta: dict[str, Any], durable: bool, index: JobIndex | None) -> Job:
    job = Job.from_meta(meta)
    job.durable = durable
    job.index = index
    return job


def _kill_orphan(meta: dict[str, Any]) -> bool:
    """SIGKILL the job's process group if its leader is still the process we started."""
    pid, started = meta.get("pid"), meta.get("pid_start")
    if not isinstance(pid, int) or started is None or process_start_time(pid) != started:
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
        logger.warning(
            "killed process group %d of job %s, left behind when its runner or fork server died",
            pid,
            meta.get("id"),
        )
        return True
    return False


class RunnerState:
    """A small file in the jobs folder: since when changes have been handled.

    ``watermark``: every file change before this time has made its jobs. A restart looks for
    files changed (ctime) after it, so what arrived while no runner watched triggers once.
    """

    def __init__(self, jobs_root: Path, *, durable: bool = False) -> None:
        self.path = jobs_root / STATE_FILE
        self.durable = durable
        self.watermark: float | None = None
        with contextlib.suppress(OSError, ValueError, TypeError):
            data = json.loads(self.path.read_text(encoding="utf-8"))
            self.watermark = float(data["watermark"])

    def save(self, watermark: float) -> None:
        if self.watermark is not None and watermark <= self.watermark:
            return
        self.watermark = watermark
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps({"watermark": watermark}) + "\n")
            if self.durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, self.path)
        if self.durable:
            fsync_dir(self.path.parent)
