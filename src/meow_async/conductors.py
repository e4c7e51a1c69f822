"""Conductors run jobs. The local one runs each as a subprocess, watched from the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from typing import Protocol

from .jobs import STDERR_FILE, STDOUT_FILE, Job, JobState

__all__ = ["Conductor", "LocalConductor", "process_start_time"]

logger = logging.getLogger("meow_async.conductors")

_TAIL_BYTES = 2048


class Conductor(Protocol):
    """**Protocol:** runs one job to its end and records it; cancellation stops the job."""

    async def execute(self, job: Job) -> JobState: ...


class _Vanished(Exception):
    pass


class _NotStarted(Exception):
    pass


class _Child:
    """A started job process and a future for its exit code (make it on the loop's thread).

    Where the kernel has pidfds (Linux 5.3+) the loop watches the process's pidfd, so no
    thread waits for it; elsewhere one thread per process waits, as asyncio's default child
    watcher on Python 3.11 would.
    """

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen
        self.pid = popen.pid
        loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[int] = loop.create_future()
        try:
            fd = os.pidfd_open(popen.pid)
        except (AttributeError, OSError):
            threading.Thread(target=self._wait_in_thread, args=(loop,), daemon=True).start()
            return
        loop.add_reader(fd, self._on_exit, loop, fd)

    def _on_exit(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        loop.remove_reader(fd)
        os.close(fd)
        self._set(self.popen.wait())  # it has exited: this reaps it at once

    def _wait_in_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        code = self.popen.wait()
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(self._set, code)

    def _set(self, code: int) -> None:
        if not self.exited.done():
            self.exited.set_result(code)


class LocalConductor:
    """Runs jobs as local subprocesses, in the job's directory, output captured to files.

    A failing script is data: the job is recorded as failed and the runner goes on. A job
    over its recipe's ``timeout``, or whose task is cancelled (shutdown), gets SIGTERM on its
    process group, then SIGKILL after ``kill_timeout`` seconds, and is recorded with why.
    """

    def __init__(self, *, kill_timeout: float = 5.0) -> None:
        self.kill_timeout = kill_timeout

    async def execute(self, job: Job) -> JobState:
        # One thread hop checks the trigger, opens the outputs, starts the process and records
        # it as running: neither the disk nor fork/exec runs on the loop's thread.
        starting = asyncio.ensure_future(asyncio.to_thread(self._start, job))
        try:
            proc = _Child(await asyncio.shield(starting))
        except _Vanished as e:
            return await asyncio.to_thread(self._finish, job, None, str(e), JobState.skipped)
        except _NotStarted as e:
            return await asyncio.to_thread(self._finish, job, None, str(e))
        except asyncio.CancelledError:
            # Stopped while starting: let the start end, then stop what it started.
            try:
                proc = _Child(await starting)
            except Exception:
                self._finish(job, None, "stopped: the runner shut down before the job started")
            else:
                self._finish(job, await self._stop(proc), "stopped: the runner shut down first")
            raise
        limit = job.meta.get("timeout")
        try:
            async with asyncio.timeout(limit):
                code: int | None = await asyncio.shield(proc.exited)
        except TimeoutError:
            code = await self._stop(proc)
            why = f"timed out after {limit:g}s"
            return await asyncio.to_thread(self._finish, job, code, why, JobState.failed, True)
        except asyncio.CancelledError:
            self._finish(job, await self._stop(proc), "stopped: the runner shut down first")
            raise
        return await asyncio.to_thread(self._finish, job, code, None)

    def _start(self, job: Job) -> subprocess.Popen[bytes]:
        """In a worker thread: the job's process, started and recorded as running."""
        event = job.meta.get("event") or {}
        if event.get("kind") == "file" and event.get("change") != "deleted":
            path = event.get("path")
            if isinstance(path, str) and not os.path.exists(path):
                raise _Vanished(f"the triggering file {path} vanished before the job started")
        with open(job.dir / STDOUT_FILE, "wb") as out, open(job.dir / STDERR_FILE, "wb") as err:
            try:
                popen = subprocess.Popen(
                    job.argv,
                    cwd=job.dir,
                    env={**os.environ, **job.env},
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    # Own process group: a terminal's Ctrl+C reaches the runner, which decides,
                    # and stopping a job stops whatever it started too.
                    start_new_session=True,
                )
            except OSError as e:
                raise _NotStarted(f"could not start {job.argv[0]}: {e.strerror or e}") from None
        try:
            # One write for 'running', with the process's identity, so a restart can find it.
            job.update(
                state=JobState.running.value,
                started=time.time(),
                finished=None,
                pid=popen.pid,
                pid_start=process_start_time(popen.pid),
            )
        except BaseException:
            # Not recorded, a restart could not find it: it must not outlive this error.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()
            raise
        return popen

    async def _stop(self, proc: _Child) -> int | None:
        """SIGTERM the job's process group, then SIGKILL if it is still there."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                async with asyncio.timeout(self.kill_timeout):
                    return await asyncio.shield(proc.exited)
            except TimeoutError:
                logger.warning("job process %d ignored %s", proc.pid, sig.name)
        return proc.popen.returncode

    def _finish(
        self,
        job: Job,
        code: int | None,
        error: str | None,
        state: JobState | None = None,
        timed_out: bool = False,
    ) -> JobState:
        if error is None and code != 0:
            error = f"exit code {code}" + _last_line(job)
        if state is None:
            state = JobState.done if error is None else JobState.failed
        now = time.time()
        attempt = {
            "started": job.meta.get("started"),
            "finished": now,
            "exit_code": code,
            "error": error,
        }
        if timed_out:
            attempt["timed_out"] = True
        attempts = [*(job.meta.get("attempts") or []), attempt]
        job.update(
            state=state.value,
            finished=now,
            exit_code=code,
            error=error,
            timed_out=timed_out,
            attempts=attempts,
        )
        return state


def process_start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot): with the pid, it tells
    a job's process from a later one that reused its number."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # Fields after the command name, which is in parentheses and may hold spaces.
    fields = stat[stat.rfind(b")") + 2 :].split()
    return int(fields[19]) if len(fields) > 19 else None


def _last_line(job: Job) -> str:
    """The end of stderr, which is where scripts say why they failed."""
    try:
        with open(job.dir / STDERR_FILE, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - _TAIL_BYTES))
            lines = f.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return ""
    return f": {lines[-1].strip()}" if lines else ""
