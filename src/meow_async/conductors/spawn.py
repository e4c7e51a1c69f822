"""Starting a job as a new process: the same on the runner's machine and on a Dask worker.

Blocking (call it from a thread): it opens files and forks. The job gets its own session, its
folder as cwd, stdin from /dev/null, stdout/stderr in files, and ``process.log`` open for its
whole life (the start line is written before the process exists, the pid line right after).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..model.jobs import STDERR_FILE, STDOUT_FILE
from ..model.recipes import environment
from .forkserver import SPAWN_BOOT, die_with, log_line, start_time_of
from .process_log import PROCESS_LOG

__all__ = ["NotStarted", "Vanished", "program", "spawn", "spawn_argv"]


class Vanished(Exception):
    """The file that triggered the job is gone: the job is skipped, not failed."""


class NotStarted(Exception):
    """The job's process could not be started (a missing program, an unwritable folder)."""


def spawn(
    job_dir: Path,
    argv: Sequence[str],
    env: Mapping[str, str],
    attempt: int,
    *,
    python: bool,
    check: str | None = None,
    mode: str = "spawn",
    note: Sequence[object] = (),
    die_with_caller: bool = False,
    keep: Sequence[str] | None = None,
) -> tuple[subprocess.Popen[bytes], float]:
    """The job's process, started, and its start in ``process.log``.

    ``env``: the job's own variables, on top of this process's environment, all of it or
    (``keep``) only the variables those names match (a recipe's ``env:``).

    ``python``: a script run by a Python interpreter, which then records its own exit;
    ``note``: one more line for ``process.log`` after the start line (e.g. the worker);
    ``die_with_caller``: Linux kills the job when the calling thread dies (a Dask worker
    killed mid-job must not leave its job running unsupervised).
    """
    if check is not None and not os.path.exists(check):
        raise Vanished(f"the triggering file {check} vanished before the job started")
    log_path = job_dir / PROCESS_LOG
    argv = spawn_argv(argv, python=python)
    preexec = None
    if die_with_caller:
        # util-linux's setpriv asks for the signal and execs the job: a preexec function
        # would make Python fork the whole (large, threaded) caller instead of vfork (20 ms).
        if _SETPRIV is not None:
            argv = [_SETPRIV, "--pdeathsig", "KILL", "--", *argv]
        else:
            preexec = die_with(os.getpid(), 137) if sys.platform.startswith("linux") else None
    try:
        log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o666)
    except OSError as e:
        raise NotStarted(f"cannot write {log_path}: {e.strerror or e}") from None
    try:
        started = time.time()
        log_line(log, "start", attempt, f"{started:.6f}", mode)
        if note:
            log_line(log, *note)
        with open(job_dir / STDOUT_FILE, "wb") as out, open(job_dir / STDERR_FILE, "wb") as err:
            try:
                popen = subprocess.Popen(
                    argv,
                    cwd=job_dir,
                    env=environment(os.environ, {**env, "MEOW_PROCESS_LOG": str(log_path)}, keep),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    # Own process group: a terminal's Ctrl+C reaches the runner, which
                    # decides, and stopping a job stops whatever it started too.
                    start_new_session=True,
                    # Held open for the process's life: a restart asks the kernel whether
                    # anyone still has it open, i.e. whether the job still runs.
                    pass_fds=(log,),
                    preexec_fn=preexec,
                )
            except OSError as e:
                raise NotStarted(f"could not start {argv[0]}: {e.strerror or e}") from None
        try:
            log_line(log, "pid", popen.pid, start_time_of(popen.pid), f"{time.time():.6f}")
        except BaseException:
            # Not recorded, a restart would have to search for it: it must not outlive this.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()
            raise
    finally:
        os.close(log)
    return popen, started


def spawn_argv(argv: Sequence[str], *, python: bool) -> list[str]:
    """The argv that runs a job's command as a new process: a Python script through the
    bootstrap that records its own exit."""
    if python and len(argv) >= 2 and not argv[1].startswith("-"):
        return [argv[0], "-c", SPAWN_BOOT, *argv[1:]]
    return list(argv)


_found: dict[tuple[str, str | None], str] = {}


def program(name: str) -> str:
    """The absolute path of a job's program (an interpreter, a shell), found on the runner's
    PATH as Popen would find it; NotStarted if there is none."""
    key = (name, os.environ.get("PATH"))
    found = _found.get(key)
    if found is None:
        found = shutil.which(name)
        if found is None:
            raise NotStarted(f"could not start {name}: No such file or directory")
        _found[key] = found = os.path.abspath(found)
    return found


_SETPRIV = shutil.which("setpriv") if sys.platform.startswith("linux") else None
