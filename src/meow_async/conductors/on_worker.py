"""What runs on a Dask worker: one job's process, started, waited for and stopped there.

These functions are sent to workers by reference, so workers need meow_async installed (the
same version as the runner). They only touch the job's folder, which must be on a file system
the runner and every worker share: the results travel back as small dicts, the job's files
stay where the runner reads them.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..model.jobs import read_meta
from .forkserver import start_time_of
from .output import STREAMS, compact, punch
from .process_log import last_attempt
from .spawn import NotStarted, Vanished, spawn

__all__ = ["batch_job", "run_job", "signal_attempt"]

#: Seconds between looks at the worker while its job runs.
_WATCH = 0.2
#: Seconds between looks at ``job.json`` while no runner waits for the job (its runner died).
_LOOK = 1.0
#: The worker's states (``distributed.core.Status`` names) in which it is going away.
_GOING = frozenset({"closing", "closed", "failed"})


def run_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one attempt of a job to its end (in a worker's thread, which it blocks).

    The job dies with this thread (Linux): a worker killed mid-job leaves nothing running.
    A worker that closes (it lost its scheduler, or is being shut down) kills its job with
    SIGKILL as it does: the job's result could not reach the runner, which settles the job
    by its rule's ``on_restart``. A job whose runner died runs on (it may end while no runner
    watches, and is then recorded as it ended) until a restarted runner records this attempt
    as cut off: then it is killed too. Its recipe's timeout is enforced here, next to the
    process: SIGTERM to its group, then SIGKILL after ``kill_timeout``.
    """
    worker = _worker()
    key = worker.get_current_task() if worker is not None else None
    where = {
        "worker": str(worker.address) if worker is not None else "",
        "host": socket.gethostname(),
    }
    batch = batch_job()
    if batch is not None:
        where["batch_job"] = batch
    job_dir = Path(spec["dir"])
    if not job_dir.is_dir():
        return {
            **where,
            "error": f"worker {where['worker']} on {where['host']} cannot see the job folder "
            f"{job_dir}: job folders must be on a file system the runner and every worker "
            "share (see the scale-out docs)",
        }
    attempt = int(spec["attempt"])
    last = last_attempt(job_dir)
    if last is not None and last.number >= attempt:
        # Dask ran this task before, on a worker that died: not a second run.
        if last.exit_code is not None:
            return {**where, "exit_code": last.exit_code, "started": last.started, "pid": last.pid}
        return {
            **where,
            "interrupted": f"its worker {last.worker or '(unknown)'} on {last.host or '?'} "
            "died while the job was running",
        }
    if _closing(worker):
        raise _reschedule()  # not started here: to another worker, or after a reconnection
    try:
        popen, started = spawn(
            job_dir,
            spec["argv"],
            spec["env"],
            attempt,
            python=bool(spec["python"]),
            check=spec.get("check"),
            mode="dask",
            note=("worker", where["worker"] or "-", where["host"]),
            die_with_caller=True,
            keep=spec.get("env_keep"),
        )
    except Vanished as e:
        return {**where, "skipped": str(e)}
    except NotStarted as e:
        return {**where, "error": f"{e} (on worker {where['worker']}, host {where['host']})"}
    out: dict[str, Any] = {**where, "started": started, "pid": popen.pid, "timed_out": False}
    try:
        with _exit_watch(popen) as ended:
            _watch(popen, ended, spec, job_dir, out, worker, key)
    finally:
        limit = spec.get("max_output")
        if isinstance(limit, int) and limit > 0:  # ended: its output cut here, where it is
            with contextlib.suppress(OSError):
                cut = compact(job_dir, limit)
                if cut:
                    out["output_cut"] = cut
    return out


def _watch(
    popen: subprocess.Popen[bytes],
    ended: Callable[[float], int],
    spec: dict[str, Any],
    job_dir: Path,
    out: dict[str, Any],
    worker: Any,
    key: Any,
) -> None:
    """Wait for the job's process (its exit code into ``out``), stopping it as its timeout,
    its worker or a restarted runner says; meanwhile keep its output near ``max_output``."""
    where = {"worker": out["worker"], "host": out["host"]}
    attempt = int(spec["attempt"])
    limit = spec.get("max_output")
    limit = limit if isinstance(limit, int) and limit > 0 else 0
    outputs = [str(job_dir / name) for name in STREAMS] if limit else []
    timeout = spec.get("timeout")
    deadline = None if timeout is None else time.monotonic() + float(timeout)
    look = 0.0  # when to look at job.json next, while no runner waits for this attempt
    while True:
        left = _WATCH if deadline is None else deadline - time.monotonic()
        try:
            out["exit_code"] = ended(max(0.0, min(_WATCH, left)))
        except subprocess.TimeoutExpired:
            pass
        else:
            return
        for path in outputs:
            with contextlib.suppress(OSError):
                size = os.stat(path).st_size
                if size > limit:
                    punch(path, limit // 2, size - (limit - limit // 2))
        if _closing(worker):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(popen.pid, signal.SIGKILL)
            out["exit_code"] = popen.wait()
            out["interrupted"] = (
                f"its worker {where['worker']} on {where['host']} closed while the job was "
                "running (it lost its scheduler, or was shut down)"
            )
            return
        if _unwanted(worker, key) and time.monotonic() >= look:
            look = time.monotonic() + _LOOK
            if _recorded(job_dir, attempt):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(popen.pid, signal.SIGKILL)
                out["exit_code"] = popen.wait()
                out["interrupted"] = "a restarted runner recorded it as cut off"
                return
        if deadline is not None and time.monotonic() >= deadline:
            out["timed_out"] = True
            out["exit_code"] = _stop(popen, float(spec["kill_timeout"]))
            return


@contextlib.contextmanager
def _exit_watch(popen: subprocess.Popen[bytes]) -> Iterator[Callable[[float], int]]:
    """``wait(timeout)`` for the job's process that returns the moment it exits.

    ``Popen.wait(timeout)`` polls, sleeping up to 50 ms between looks, so a short job's end
    was seen up to 50 ms late (most of a Dask job's cost over a local one): the process's
    pidfd (Linux 5.3+) is readable when it exits, and ``poll`` sleeps until then."""
    try:
        fd = os.pidfd_open(popen.pid)
    except (AttributeError, OSError):  # not Linux, or an old kernel: wait as before
        yield popen.wait
        return
    poller = select.poll()
    poller.register(fd, select.POLLIN)

    def wait(timeout: float) -> int:
        if not poller.poll(timeout * 1000):
            raise subprocess.TimeoutExpired(popen.args, timeout)
        return popen.wait()

    try:
        yield wait
    finally:
        os.close(fd)


#: Where batch systems put the id of the batch job a worker runs in (Slurm, PBS, LSF, SGE).
_BATCH_IDS = ("SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "JOB_ID")


def batch_job() -> str | None:
    """The batch job this worker runs in (dask-jobqueue workers), for the job's record."""
    return next((os.environ[k] for k in _BATCH_IDS if os.environ.get(k)), None)


def signal_attempt(job_dir: str, attempt: int, sig: int, host: str | None = None) -> bool:
    """Signal the process group of a job's attempt if it runs here (``Client.run`` sends this
    to the worker that runs it, or to every worker when that is unknown)."""
    if host is not None and host != socket.gethostname():
        return False
    last = last_attempt(Path(job_dir))
    if last is None or last.number != attempt or last.pid is None or last.exit_code is not None:
        return False
    if last.host is not None and last.host != socket.gethostname():
        return False
    if start_time_of(last.pid) != last.pid_start:
        return False  # ended, and the pid may be someone else's by now
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(last.pid, sig)
        return True
    return False


def _stop(popen: subprocess.Popen[bytes], kill_timeout: float) -> int | None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, sig)
        try:
            return popen.wait(kill_timeout)
        except subprocess.TimeoutExpired:
            continue
    return None


def _worker() -> Any:
    """The Dask worker running this task (None outside one)."""
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):
        return None


def _closing(worker: Any) -> bool:
    """Whether the worker is going away: it lost its scheduler (Dask workers then close
    rather than reconnect), or it is being shut down."""
    return worker is not None and getattr(worker.status, "name", "") in _GOING


def _unwanted(worker: Any, key: Any) -> bool:
    """Whether nobody waits for this task's result: its client (the runner) went away, so
    the scheduler cancelled it (a running task's thread cannot be stopped)."""
    if worker is None or key is None:
        return False
    task = worker.state.tasks.get(key)
    return task is None or task.state in ("cancelled", "released", "forgotten")


def _recorded(job_dir: Path, attempt: int) -> bool:
    """Whether ``job.json`` records this attempt's end: a restarted runner settled it."""
    try:
        meta = read_meta(job_dir)
    except (OSError, ValueError):
        return False
    return len(meta.get("attempts") or []) >= attempt


def _reschedule() -> Exception:
    from distributed import Reschedule

    return Reschedule()
