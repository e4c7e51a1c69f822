"""Conductors run jobs. The local one runs each as a subprocess of the runner's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from typing import IO, Protocol

from .jobs import STDERR_FILE, STDOUT_FILE, Job, JobState

__all__ = ["Conductor", "LocalConductor"]

logger = logging.getLogger("meow_async.conductors")

_TAIL_BYTES = 2048


class Conductor(Protocol):
    """**Protocol:** runs one job to its end and records it; cancellation stops the job."""

    async def execute(self, job: Job) -> JobState: ...


class LocalConductor:
    """Runs jobs as local subprocesses, in the job's directory, output captured to files.

    A failing script is data: the job is recorded as failed and the runner goes on. When the
    task running a job is cancelled (shutdown), the job's process group gets SIGTERM, then
    SIGKILL after ``kill_timeout`` seconds, and the job is recorded as failed with the reason.
    """

    def __init__(self, *, kill_timeout: float = 5.0) -> None:
        self.kill_timeout = kill_timeout

    async def execute(self, job: Job) -> JobState:
        opening = asyncio.ensure_future(asyncio.to_thread(self._open_outputs, job))
        try:
            out, err = await asyncio.shield(opening)
        except asyncio.CancelledError:
            # Stopped between 'running' and the start: close what opened, record why.
            with contextlib.suppress(Exception):
                for f in await opening:
                    f.close()
            self._finish(job, None, "stopped: the runner shut down before the job started")
            raise
        try:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *job.argv,
                    cwd=job.dir,
                    env={**os.environ, **job.env},
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    # Own process group: a terminal's Ctrl+C reaches the runner, which decides,
                    # and stopping a job stops whatever it started too.
                    start_new_session=True,
                )
            except OSError as e:
                await asyncio.to_thread(
                    self._finish, job, None, f"could not start {job.argv[0]}: {e.strerror or e}"
                )
                return JobState.failed
        finally:
            out.close()
            err.close()
        try:
            code = await proc.wait()
        except asyncio.CancelledError:
            self._finish(
                job, await self._stop(proc), "stopped: the runner shut down before the job finished"
            )
            raise
        return await asyncio.to_thread(self._finish, job, code, None)

    def _open_outputs(self, job: Job) -> tuple[IO[bytes], IO[bytes]]:
        job.update(state=JobState.running.value, started=time.time())
        return open(job.dir / STDOUT_FILE, "wb"), open(job.dir / STDERR_FILE, "wb")

    async def _stop(self, proc: asyncio.subprocess.Process) -> int | None:
        """SIGTERM the job's process group, then SIGKILL if it is still there."""
        for sig, wait in ((signal.SIGTERM, self.kill_timeout), (signal.SIGKILL, self.kill_timeout)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                async with asyncio.timeout(wait):
                    return await asyncio.shield(proc.wait())
            except TimeoutError:
                logger.warning("job process %d ignored %s", proc.pid, sig.name)
        return proc.returncode

    def _finish(self, job: Job, code: int | None, error: str | None) -> JobState:
        if error is None and code != 0:
            error = f"exit code {code}" + _last_line(job)
        state = JobState.done if error is None else JobState.failed
        job.update(state=state.value, finished=time.time(), exit_code=code, error=error)
        return state


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
