"""``meow-async jobs rerun|cancel|logs ID``: act on one job, with or without its runner.

- ``cancel`` stops a running job the way the runner stops one: SIGTERM to its process group,
  SIGKILL if it is still there ``--kill-after`` seconds later. The process is found from
  ``process.log`` and checked by its kernel start time, so a reused pid is never signalled; a
  ``cancel`` line written there first tells whoever records the end (the runner, or the next
  start) that it was cancelled, not failed: it is recorded ``failed`` with
  ``cancelled: true`` and neither retried nor rerun. A queued job is recorded cancelled at once
  when no runner runs, or is told to its runner through ``runner.http``.
- ``rerun`` queues a finished job again: through ``runner.http`` (``POST /jobs/ID/rerun``) a
  running runner starts it at once; without one it is marked queued on disk and the next start
  runs it.
- ``logs`` prints a job's stdout and stderr (to stdout and stderr); ``-f`` follows them until
  the job ends, reading what was added every ``FOLLOW_EVERY`` seconds (a client: a stat per
  file per turn).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sqlite3
import sys
import time
from pathlib import Path
from typing import IO, Any

from ..conductors.forkserver import start_time_of
from ..conductors.process_log import CANCELLED, Attempt, cancel_note, current, last_attempt
from ..exceptions import MeowError
from ..model.index import INDEX_FILE, STALE_FILE, JobIndex
from ..model.jobs import (
    FINISHED,
    META_FILE,
    STDERR_FILE,
    STDOUT_FILE,
    JobState,
    queued_again,
    read_meta,
    write_meta,
)
from ..runner.live import Live, read_live
from .listing import find_one
from .runner_http import post_json
from .urls import DOCS_URL

__all__ = ["ACTIONS", "FOLLOW_EVERY", "add_jobs_option", "job_action", "parser"]

ACTIONS = ("rerun", "cancel", "logs")

#: Each action's section of the docs (--help ends with it).
_PAGES = {"rerun": "cli/#jobs-rerun", "cancel": "cli/#jobs-cancel", "logs": "cli/#jobs-logs"}

#: Seconds between looks at a followed job's output and state.
FOLLOW_EVERY = 0.2

#: Seconds to wait for runner.http.
HTTP_TIMEOUT = 5.0


def parser() -> argparse.ArgumentParser:
    """``meow-async jobs ACTION ...`` (``jobs`` alone lists jobs: see cli/main.py)."""
    p = argparse.ArgumentParser(
        prog="meow-async jobs",
        description="Act on one job. (`meow-async jobs [WHERE]` without an action lists jobs.)",
    )
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    helps = {
        "rerun": (
            "queue a finished job again",
            "Queue a finished (done, failed or skipped) job again, its earlier attempts kept as "
            "its history. A runner with runner.http starts it at once; otherwise the next start "
            "runs it.",
        ),
        "cancel": (
            "stop a running job, or one not started yet",
            "Stop a running job: SIGTERM to its process group, then SIGKILL after --kill-after "
            "seconds. It is recorded failed with cancelled: true (not retried, not rerun). A "
            "queued job is recorded cancelled without starting (told to a running runner "
            "through its runner.http).",
        ),
        "logs": (
            "print a job's output; -f follows it",
            "Print a job's stdout (to stdout) and stderr (to stderr); with -f, go on printing "
            "what it adds until it ends (or Ctrl+C). ID may be a rule's name: its newest job.",
        ),
    }
    for action, (short, long) in helps.items():
        a = sub.add_parser(action, help=short, description=long)
        a.add_argument(
            "job",
            help="job id (or a unique start of one), a job folder, or the file or message id "
            "that triggered it"
            + (", or a rule's name (its newest job)" if action == "logs" else ""),
        )
        add_jobs_option(a)
        if action == "logs":
            a.add_argument(
                "-f", "--follow", action="store_true", help="follow the output until the job ends"
            )
        if action == "cancel":
            a.add_argument(
                "--kill-after",
                type=float,
                default=5.0,
                metavar="SECONDS",
                help="SIGKILL the job's process group if SIGTERM has not ended it by then "
                "(default: 5)",
            )
        a.epilog = f"docs: {DOCS_URL}{_PAGES[action]}"
    return p


def add_jobs_option(p: argparse.ArgumentParser) -> None:
    """``--jobs WHERE``, as ``show`` and each action take it."""
    p.add_argument(
        "--jobs",
        type=Path,
        default=Path(".meow/jobs"),
        metavar="WHERE",
        help="jobs folder or workflow file (default: ./.meow/jobs)",
    )


def job_action(args: argparse.Namespace, root: Path, token: str | None = None) -> int:
    """Run ``args.action`` on the job ``args.job`` under the jobs folder ``root``; ``token``:
    runner.http's bearer token, when the workflow file (``--jobs``) names one."""
    if args.action == "logs":
        return logs(find_one(root, args.job), follow=args.follow)
    folder = _folder(root, args.job)
    if args.action == "rerun":
        return rerun(root, folder, token)
    if not args.kill_after >= 0:
        raise MeowError(f"--kill-after: expected seconds, 0 or more, got {args.kill_after}")
    return cancel(root, folder, args.kill_after, token)


def _folder(root: Path, text: str) -> Path:
    folder = Path(text)
    if (folder / META_FILE).is_file():
        return folder
    return find_one(root, text, newest=False)


def _meta(folder: Path) -> dict[str, Any]:
    return current({**read_meta(folder), "dir": str(folder)})


def _live(root: Path) -> Live | None:
    live = read_live(root)
    return live if live is not None and live.alive is not False else None


def _post(live: Live, path: str, token: str | None) -> dict[str, Any]:
    """POST to the runner's runner.http (with its bearer token, if given); its JSON answer
    (raises MeowError with its error)."""
    return post_json(
        live,
        path,
        token,
        HTTP_TIMEOUT,
        unauthorized="give the workflow file with --jobs: its runner.http names the token",
    )


def _indexed(root: Path, meta: dict[str, Any], folder: Path) -> None:
    """A job's ``job.json`` changed here (no runner was told): its index row too, so that the
    next start, which reads the index's unfinished rows only, sees it as it is now. An index
    that cannot be written is marked to be made again from the folders at the next start."""
    if not (root / INDEX_FILE).exists() or (root / STALE_FILE).exists():
        return  # none yet, or already to be made again: the next start makes it
    try:
        index, _ = JobIndex.open(root, repair=False)  # beside a runner, as prune does
    except (OSError, sqlite3.Error):
        index = None
    if index is not None:
        try:
            index.save([(meta, folder)])
            return
        finally:
            index.close()
    with contextlib.suppress(OSError):
        (root / STALE_FILE).touch()


# -- rerun ------------------------------------------------------------------------------------


def rerun(root: Path, folder: Path, token: str | None = None) -> int:
    meta = _meta(folder)
    job_id = str(meta.get("id") or folder.name)
    state = meta.get("state")
    if state not in FINISHED:
        raise MeowError(f"job {job_id} is {state}: only a finished job can be rerun")
    live = _live(root)
    if live is not None and live.http is not None:
        _post(live, f"/jobs/{job_id}/rerun", token)
        print(f"job {job_id} queued again: the runner (pid {live.pid}) runs it now")
        return 0
    meta = queued_again(meta)
    write_meta(folder, meta)
    _indexed(root, meta, folder)
    if live is not None:
        print(
            f"job {job_id} queued again on disk; the runner (pid {live.pid}) has no runner.http "
            "to be told, so it runs at its next start (add runner.http to rerun at once)"
        )
    else:
        print(f"job {job_id} queued again: it runs when the workflow's runner next starts")
    return 0


# -- cancel -----------------------------------------------------------------------------------


def cancel(root: Path, folder: Path, kill_after: float, token: str | None = None) -> int:
    meta = _meta(folder)
    job_id = str(meta.get("id") or folder.name)
    state = meta.get("state")
    if state in FINISHED:
        raise MeowError(f"job {job_id} has ended ({state}): nothing to cancel")
    attempt = last_attempt(folder)
    started = attempt is not None and attempt.number > len(meta.get("attempts") or [])
    if state == JobState.queued.value and not started:
        return _cancel_queued(root, folder, meta, job_id, token)
    assert attempt is not None  # noqa: S101 - it started
    return _cancel_running(folder, attempt, job_id, kill_after)


def _cancel_queued(
    root: Path, folder: Path, meta: dict[str, Any], job_id: str, token: str | None
) -> int:
    live = _live(root)
    if live is None:
        meta.update(
            state=JobState.failed.value,
            finished=time.time(),
            error=f"{CANCELLED} before it started",
            cancelled=True,
        )
        write_meta(folder, meta)
        _indexed(root, meta, folder)
        print(f"job {job_id} cancelled before it started")
        return 0
    if live.http is None:
        raise MeowError(
            f"job {job_id} is queued and its runner (pid {live.pid}) may start it at any "
            "moment; it has no runner.http to be told, so cancel it once it runs, or stop "
            "the runner first"
        )
    _post(live, f"/jobs/{job_id}/cancel", token)
    print(f"job {job_id} cancelled: its runner (pid {live.pid}) records it instead of starting it")
    return 0


def _cancel_running(folder: Path, attempt: Attempt, job_id: str, kill_after: float) -> int:
    if attempt.host is not None and attempt.host != socket.gethostname():
        raise MeowError(
            f"job {job_id} runs on Dask worker {attempt.worker} on {attempt.host}: cancel it "
            "there (its process group is in process.log)"
        )
    pid = attempt.pid
    if pid is None or start_time_of(pid) != attempt.pid_start:
        raise MeowError(
            f"job {job_id} has no process running here (it is starting, or has just ended): "
            "try again in a moment"
        )
    cancel_note(folder)  # before the signal: its end is recorded as cancelled
    for sig, wait in ((signal.SIGTERM, kill_after), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        except PermissionError as e:
            raise MeowError(f"cannot signal job {job_id}'s process group {pid}: {e}") from None
        deadline = time.monotonic() + wait
        while start_time_of(pid) == attempt.pid_start and time.monotonic() < deadline:
            time.sleep(0.02)
        if start_time_of(pid) != attempt.pid_start:
            break
        print(f"meow-async: note: job {job_id} ignored {sig.name}", file=sys.stderr)
    else:
        raise MeowError(f"job {job_id}'s process {pid} is still there after SIGKILL")
    print(
        f"job {job_id} cancelled: its process group {pid} has ended (recorded as failed, cancelled)"
    )
    return 0


# -- logs -------------------------------------------------------------------------------------


def logs(folder: Path, *, follow: bool) -> int:
    streams: list[tuple[Path, IO[bytes]]] = [
        (folder / STDOUT_FILE, sys.stdout.buffer),
        (folder / STDERR_FILE, sys.stderr.buffer),
    ]
    offsets = [0, 0]

    def pump() -> None:
        for i, (path, out) in enumerate(streams):
            try:
                if path.stat().st_size <= offsets[i]:
                    continue
                with open(path, "rb") as f:
                    f.seek(offsets[i])
                    data = f.read()
            except OSError:
                continue
            offsets[i] += len(data)
            out.write(data)
            out.flush()

    pump()
    if not follow:
        return 0
    try:
        while True:
            ended = _has_ended(folder)  # before the last read: nothing written is missed
            pump()
            if ended:
                return 0
            time.sleep(FOLLOW_EVERY)
    except KeyboardInterrupt:
        return 0


def _has_ended(folder: Path) -> bool:
    """The job has ended, or its process is gone and nobody is left to record it."""
    try:
        meta = _meta(folder)
    except (OSError, ValueError):
        return False  # being rewritten this moment
    if meta.get("state") in FINISHED:
        return True
    if meta.get("state") != JobState.running.value:
        return False  # queued: it may start yet
    attempt = last_attempt(folder)
    if attempt is None or attempt.pid is None:
        return False
    if attempt.host is not None and attempt.host != socket.gethostname():
        return False  # on a Dask worker: its end reaches job.json
    return start_time_of(attempt.pid) != attempt.pid_start
