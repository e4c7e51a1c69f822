"""``process.log``: a job's process, as it started and ended, written without the runner.

One line per fact, appended (so no rename and no rewrite of ``job.json`` while a job runs):

    start ATTEMPT TIME MODE   the intent, written before any process exists (fork, spawn, dask)
    worker ADDRESS HOST       where it runs, for jobs run on a Dask worker
    pid PID PID_START TIME [CGROUP]
                              the process, written by it (fork server) or right after spawning
                              it; CGROUP: the cgroup it joined first (see containment.py)
    exit CODE TIME            written by the job's process itself as it ends
    cancel TIME               written by ``meow-async jobs cancel`` before it signals the job

``job.json`` is written when a job is made and when its end is recorded; in between, this file
says whether it is running. While the job's process lives it holds the file open, so a
restart asks the kernel (a read-lease probe) whether an attempt is still alive, rather than
trusting a pid.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..monitors.files.writing import being_written
from .containment import kill_tree, stop_cgroup, tree
from .forkserver import PROCESS_LOG, start_time_of

logger = logging.getLogger("meow_async.recovery")

__all__ = [
    "PROCESS_LOG",
    "Attempt",
    "cancel_note",
    "current",
    "last_attempt",
    "outcome",
    "stop_orphan",
]

#: The error of a job stopped by ``meow-async jobs cancel`` (then how its process ended).
CANCELLED = "cancelled (meow-async jobs cancel)"


def cancel_note(job_dir: Path) -> None:
    """Say in ``process.log`` that the attempt under way is being cancelled, before it is
    signalled: whoever records its end (this runner, or the next start) then knows."""
    fd = os.open(job_dir / PROCESS_LOG, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    try:
        os.write(fd, f"cancel {time.time():.6f}\n".encode())
    finally:
        os.close(fd)


@dataclass(slots=True)
class Attempt:
    """The last attempt in a job's ``process.log``."""

    number: int
    started: float
    mode: str = ""
    pid: int | None = None
    pid_start: int | None = None
    #: When its process was there, about to run the job (a warm job: once in its cgroup).
    pid_time: float | None = None
    exit_code: int | None = None
    finished: float | None = None
    worker: str | None = None
    host: str | None = None
    cgroup: str | None = None
    #: When ``meow-async jobs cancel`` asked this attempt to stop: its end is no failure to
    #: retry or rerun.
    cancelled: float | None = None

    @property
    def reached_the_script(self) -> bool:
        """Its process existed: the script may have run (part of) its course."""
        return self.pid is not None


def last_attempt(job_dir: Path) -> Attempt | None:
    """The last attempt recorded in ``job_dir``'s ``process.log``; None if it never started."""
    try:
        text = (job_dir / PROCESS_LOG).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    last: Attempt | None = None
    for line in text.splitlines():
        f = line.split()
        try:
            if f[0] == "start":
                mode = f[3] if len(f) > 3 else ""
                last = Attempt(number=int(f[1]), started=float(f[2]), mode=mode)
            elif last is None:
                continue
            elif f[0] == "worker":
                last.worker, last.host = f[1], f[2]
            elif f[0] == "pid":
                last.pid = int(f[1])
                last.pid_start = int(f[2]) if f[2] != "None" else None
                if len(f) > 3:
                    last.pid_time = float(f[3])
                if len(f) > 4:
                    last.cgroup = line.split(None, 4)[4]  # a path: it may hold spaces
            elif f[0] == "cancel":
                last.cancelled = float(f[1])
            elif f[0] == "exit":
                last.exit_code = int(f[1])
                last.finished = float(f[2]) if len(f) > 2 and f[2] else None
        except (IndexError, ValueError):
            continue  # a line cut short by a crash: what it would have said is unknown
    return last


def stop_orphan(job_dir: Path, attempt: Attempt) -> bool | None:
    """Kill what is left of an attempt whose runner (or fork server) died.

    True: a live process group was killed; False: nothing of it runs; None: it may still run
    (the kernel could not say and the pid alone does not prove it).
    """
    if attempt.host is not None and attempt.host != socket.gethostname():
        return None  # on another machine: the Dask conductor stops it through its worker
    killed = False
    if attempt.cgroup is not None and os.path.isdir(attempt.cgroup):
        # Everything the job started, wherever it went, and only that.
        n = stop_cgroup(attempt.cgroup)
        if n:
            killed = True
            logger.warning(
                "killed %d process(es) of job %s in its cgroup, left behind when its runner "
                "or fork server died",
                n,
                job_dir.name,
            )
    log = str(job_dir / PROCESS_LOG)
    held = being_written(log)
    pids: set[int] = set()
    if attempt.pid is not None and start_time_of(attempt.pid) == attempt.pid_start:
        pids.add(attempt.pid)
    if held:
        pids.update(_holders(log))  # e.g. spawned, then the runner died before the pid line
    groups: set[int] = set()  # the job and a child holding process.log share one: kill it once
    for pid in sorted(pids):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            group = os.getpgid(pid)
            if group in groups:
                continue
            if group == os.getpgrp():  # never our own group (a fork server mid-start)
                os.kill(pid, signal.SIGKILL)
            else:
                # A job that is its own subreaper (containment: subreaper) still has all it
                # started below it, whatever session they moved to: found first, killed after
                # its group (so the job cannot see a child die and record an exit).
                below = tree(pid)
                os.killpg(group, signal.SIGKILL)
                groups.add(group)
                kill_tree(below)
            killed = True
            logger.warning(
                "killed process group %d of job %s, left behind when its runner or fork "
                "server died",
                group,
                job_dir.name,
            )
    if held and not pids:
        return None
    return killed


def _holders(path: str) -> set[int]:
    """Our processes that have ``path`` open (their descriptors' links in /proc)."""
    found: set[int] = set()
    me = os.getpid()
    with contextlib.suppress(OSError), os.scandir("/proc") as procs:
        for entry in procs:
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            with contextlib.suppress(OSError), os.scandir(f"/proc/{entry.name}/fd") as fds:
                for fd in fds:
                    with contextlib.suppress(OSError):
                        if os.readlink(fd.path) == path:
                            found.add(int(entry.name))
                            break
    return found


def current(meta: dict[str, Any]) -> dict[str, Any]:
    """A job's metadata as of now: ``job.json`` says ``queued`` until the end is recorded,
    ``process.log`` says whether it has started since (for listings; a copy, not written)."""
    if meta.get("state") != "queued" or "dir" not in meta:
        return meta
    attempt = last_attempt(Path(meta["dir"]))
    if attempt is None or attempt.number <= len(meta.get("attempts") or []):
        return meta
    now = {**meta, "started": attempt.started, "pid": attempt.pid, "state": "running"}
    if attempt.exit_code is not None:  # ended; the runner records it (or the next one will)
        now.update(
            state="done" if attempt.exit_code == 0 else "failed",
            exit_code=attempt.exit_code,
            finished=attempt.finished,
        )
    return now


def outcome(job_dir: Path, attempt: Attempt) -> tuple[Attempt, bool, bool]:
    """What became of an attempt whose supervisor (runner or fork server) died: whatever of
    it still runs is killed first, then ``process.log`` is read again, since the process may
    have written its exit in between (and, killed, can write nothing more).

    Returns the attempt as read last; whether it was cut off (so ``on_restart`` decides;
    else it ended, see ``exit_code``, or never began); whether a live process was killed.
    """
    if attempt.exit_code is not None:
        return attempt, False, bool(stop_orphan(job_dir, attempt))  # what its group left
    stopped = stop_orphan(job_dir, attempt)
    attempt = last_attempt(job_dir) or attempt
    if attempt.exit_code is not None:
        return attempt, False, bool(stopped)
    # Killed now, or gone without an exit line (a signal, exec, the machine), or still held
    # by a process we could not find (None): cut off, unless it never reached its pid line
    # and nothing of it was running.
    cut_off = attempt.reached_the_script or stopped is not False
    return attempt, cut_off, bool(stopped)
