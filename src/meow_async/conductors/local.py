"""Conductors run jobs. The local one runs each as a process, watched from the event loop.

Python jobs start as forks of a warm interpreter (the fork server, ``zygote.py``); other jobs,
and Python jobs with their own interpreter or ``fork: false``, are spawned. Either way the job
gets its own session, its folder as cwd, stdout/stderr in files, and writes ``process.log``
(start, pid, exit), so ``job.json`` is written only when the job is made and when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..exceptions import ConfigError
from ..model.jobs import Job, JobState
from ..model.precompiled import ENV as PRECOMPILED_ENV
from ..model.recipes import environment
from .base import PYTHON_KINDS, JobInterrupted, Records, trigger_to_check
from .learned_preload import LearnedPreload
from .output import OutputWatch
from .process_log import PROCESS_LOG, last_attempt, outcome
from .spawn import NotStarted, Vanished, program, spawn, spawn_argv
from .zygote import ForkServer, ForkServerDied, StartRefused, fork_supported

__all__ = ["LocalConductor"]

logger = logging.getLogger("meow_async.conductors")

#: A fork server that dies this many times within _DEATH_WINDOW seconds is given up on.
_MAX_DEATHS = 3
_DEATH_WINDOW = 60.0


class _Process:
    """A started job process and a future for its exit code (make it on the loop's thread)."""

    def __init__(self, pid: int, started: float, exited: asyncio.Future[int]) -> None:
        self.pid = pid
        self.started = started
        self.exited = exited

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)


class _Forked(_Process):
    """Started by the fork server: forked (a warm Python job) or forked and exec'd."""

    def __init__(
        self, server: ForkServer, pid: int, started: float, exited: asyncio.Future[int]
    ) -> None:
        super().__init__(pid, started, exited)
        self.server = server

    def signal(self, sig: int) -> None:
        self.server.kill(self.pid, sig)

    def end(self) -> dict[str, Any]:
        """How the server saw its end: how it was contained, what it left running."""
        return self.server.ends.pop(self.pid, {"contained": self.server.containment})


class _Spawned(_Process):
    """Where the kernel has pidfds (Linux 5.3+) the loop watches the process's pidfd, so no
    thread waits for it; elsewhere one thread per process waits."""

    def __init__(self, popen: subprocess.Popen[bytes], started: float) -> None:
        loop = asyncio.get_running_loop()
        super().__init__(popen.pid, started, loop.create_future())
        self.popen = popen
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
    """Runs jobs as local processes, in the job's directory, output captured to files.

    A failing script is data: the job is recorded as failed and the runner goes on. A job
    over its recipe's ``timeout``, or whose task is cancelled (shutdown), gets SIGTERM on its
    process group, then SIGKILL after ``kill_timeout`` seconds, and is recorded with why.
    ``warm=False`` starts Python jobs as new interpreters. ``containment`` (``auto``,
    ``cgroup``, ``subreaper``, ``none``; see containment.py): what each job runs in, so that
    what it starts ends with it; every job then starts from the fork server.
    ``learn``: the fork server learns what warm jobs import and preloads it (see
    learned_preload.py), recorded in the file ``learned`` (None: not kept across runs).
    """

    def __init__(
        self,
        *,
        kill_timeout: float = 5.0,
        warm: bool = True,
        containment: str = "auto",
        learn: bool = True,
        learned: Path | None = None,
    ) -> None:
        self.kill_timeout = kill_timeout
        self.warm = warm and fork_supported()
        self.containment = containment if fork_supported() else "none"
        self._contain = self.containment != "none"
        self._server: ForkServer | None = None
        self._launching: asyncio.Task[ForkServer] | None = None
        self._deaths: list[float] = []
        self._reaping: set[asyncio.Future[None]] = set()
        self._records = Records()
        self.learning = LearnedPreload(learned) if learn and self.warm else None
        self._loaded = False
        #: What recipes name in ``preload:`` (every server generation imports it).
        self._explicit: set[str] = set()
        #: Recipe folders: their modules may change, so none is ever preloaded from there.
        self._exclude: set[str] = set()
        self._generation: asyncio.Task[None] | None = None
        self._again = False
        self._retiring: set[ForkServer] = set()

    # -- the fork server ----------------------------------------------------------------------

    async def prepare(self, recipes: Iterable[Any]) -> None:
        """Start the fork server before the first job, if any recipe starts warm or jobs are
        contained; fail if the containment asked for cannot be had."""
        warm = [r for r in recipes if getattr(r, "warm", False)] if self.warm else []
        self._exclude.update(_folders(warm))
        if not warm and not self._contain:
            return
        if self.learning is not None and not self._loaded:
            self._loaded = True
            await asyncio.to_thread(self.learning.load)
        server = await self._fork_server(sorted({m for r in warm for m in r.preload or ()}))
        got = server.containment if server is not None else "none"
        if self.containment in ("cgroup", "subreaper") and got != self.containment:
            why = server.containment_why if server is not None else "no fork server"
            raise ConfigError(
                f"jobs cannot be contained by a {self.containment} here ({why}); use auto",
                where="runner",
                field="containment",
                value=self.containment,
            )

    async def close(self) -> None:
        """Stop the fork server (running jobs go on; the runner has stopped them by now)."""
        starting = [t for t in (self._launching, self._generation) if t is not None]
        for task in starting:
            task.cancel()
        # A server they were starting is closed and reaped as they end.
        await asyncio.gather(*starting, return_exceptions=True)
        server, self._server = self._server, None
        servers = [*([server] if server is not None else []), *self._retiring]
        for s in servers:
            s.close()
        for s in servers:
            await s.wait_closed()

    async def _fork_server(self, preload: list[str]) -> ForkServer | None:
        """The live fork server, started (again) if need be; None: spawn instead."""
        server = self._server
        if server is None or server.dead is not None:
            if server is not None:
                self._server = None
                self._reap(server)
            now = time.monotonic()
            self._deaths = [t for t in self._deaths if now - t < _DEATH_WINDOW]
            if len(self._deaths) >= _MAX_DEATHS:
                return None
            if self._launching is None:
                self._launching = asyncio.ensure_future(self._launch(preload))
            launching = self._launching
            try:
                server = await asyncio.shield(launching)
            except (OSError, ForkServerDied, TimeoutError) as e:
                if self._launching is launching:
                    self._launching = None
                    self._deaths.append(time.monotonic())
                    logger.error(
                        "could not start the fork server: %s; spawning jobs", str(e) or repr(e)
                    )
                return None
            if self._launching is launching:
                self._launching = None
                self._server = server
                logger.info(
                    "fork server %d started (preloaded: %s); jobs contained by %s",
                    server.pid,
                    ", ".join(preload) or "nothing",
                    _containment(server),
                )
        self._explicit.update(preload)
        if preload and not server.preloaded.issuperset(preload):
            try:
                failed = await server.preload(preload)
            except ForkServerDied:
                return await self._fork_server(preload)
            for name, why in failed.items():
                logger.warning("fork server: preloading %s failed (%s)", name, why)
        return server

    async def _launch(self, preload: list[str]) -> ForkServer:
        """A new server generation: ``preload``, then what was learned (probed). One that a
        learned module left unfit to fork is closed, and another started without it."""
        while True:
            learned = self.learning.wanted() if self.learning is not None else []
            server = await ForkServer.launch(
                preload, self.containment, learned, sorted(self._exclude)
            )
            if self.learning is None or not learned:
                return server
            tried = [m for m in learned if m in server.preloaded]
            for name in self.learning.settle(tried, server.learned, server.refused):
                logger.warning("fork server: never preloading %s: %s", name, server.refused[name])
            if server.tainted is not None:
                await server.abandon()
                continue
            try:
                await asyncio.to_thread(self.learning.save)
            except BaseException:  # the runner stops: this server is nobody's
                await server.abandon()
                raise
            shown = ", ".join(server.learned[:8]) + (", ..." if len(server.learned) > 8 else "")
            logger.info(
                "fork server: now preloading %d modules learned from jobs (%s)",
                len(server.learned),
                shown or "none",
            )
            return server

    def _learn_from(self, job: Job, end: dict[str, Any]) -> None:
        """Count what the job imported; start a new server generation once a module has
        been seen often enough."""
        imports = end.get("imports")
        if not imports or self.learning is None:
            return
        recipe = f"{job.meta.get('recipe')}@{job.meta.get('recipe_hash')}"
        if not self.learning.seen(recipe, list(imports)):
            return
        if self._generation is None:
            self._generation = asyncio.ensure_future(self._new_generation())
        else:
            self._again = True

    async def _new_generation(self) -> None:
        """Start a server that preloads what was learned; once it is ready it starts every
        new job, and the one it replaces is retired (it closes after its last job)."""
        try:
            while True:
                self._again = False
                old = self._server
                if old is None or old.dead is not None or self._launching is not None:
                    return  # the next start launches one, with what was learned
                try:
                    new = await self._launch(sorted(self._explicit))
                except (OSError, ForkServerDied, TimeoutError) as e:
                    logger.warning("could not start a new fork server: %s", str(e) or repr(e))
                    return
                if self._server is not old or old.dead is not None:
                    await new.abandon()
                    return
                self._server = new
                self._retire(old)
                if not self._again:
                    return
        finally:
            self._generation = None

    def _retire(self, server: ForkServer) -> None:
        self._retiring.add(server)
        server.retire()

        async def reaped() -> None:
            await server.closed
            await server.wait_closed()
            self._retiring.discard(server)

        task = asyncio.ensure_future(reaped())
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)

    def _died(self, server: ForkServer) -> None:
        if self._server is server:
            self._server = None
            self._deaths.append(time.monotonic())
            logger.warning(
                "%s; its running jobs are settled as after a runner's death, "
                "and the next job starts a new one",
                server.dead,
            )
            self._reap(server)

    def _reap(self, server: ForkServer) -> None:
        task = asyncio.ensure_future(server.wait_closed())
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)

    # -- one job ------------------------------------------------------------------------------

    async def execute(self, job: Job) -> JobState:
        attempt = len(job.meta.get("attempts") or []) + 1
        server = None
        keep = job.meta.get("env_keep")
        fork = self.warm and job.meta.get("start") == "fork" and keep is None
        if fork or self._contain:
            server = await self._fork_server(list(job.meta.get("preload") or ()) if fork else [])
        learn = fork and self.learning is not None and job.meta.get("learn_imports", True)
        starting = asyncio.ensure_future(
            self._fork(job, server, attempt, fork, bool(learn))
            if server is not None
            else self._spawned(job, attempt)
        )
        try:
            proc = await asyncio.shield(starting)
        except Vanished as e:
            return await self._records.finish(job, None, str(e), JobState.skipped)
        except NotStarted as e:
            return await self._records.finish(job, None, str(e))
        except ForkServerDied:
            assert server is not None  # noqa: S101
            self._died(server)
            return await self._settle_orphan(job, attempt, server) or await self.execute(job)
        except asyncio.CancelledError:
            # Stopped while starting: let the start end, then stop what it started.
            try:
                proc = await starting
            except Exception:
                self._records.finish_now(
                    job, None, "stopped: the runner shut down before the job started"
                )
            else:
                self._records.finish_now(
                    job, await self._stop(proc), "stopped: the runner shut down first"
                )
            raise
        # Running: in memory only; process.log says so on disk.
        job.meta.update(state=JobState.running.value, started=proc.started, pid=proc.pid)
        job.meta["containment"] = server.containment if server is not None else "none"
        # An earlier attempt's (a retry's, or a run before `meow-async jobs rerun`).
        job.meta.pop("output_cut", None)
        job.meta.pop("left_running", None)
        max_output = job.meta.get("max_output")
        watch = OutputWatch(job.dir, max_output) if isinstance(max_output, int) else None
        try:
            return await self._run(job, proc, attempt, server, watch)
        finally:
            if watch is not None:
                watch.stop()

    async def _run(
        self,
        job: Job,
        proc: _Process,
        attempt: int,
        server: ForkServer | None,
        watch: OutputWatch | None,
    ) -> JobState:
        """The started job, to its end (its output no longer watched once it has ended, so
        that the end cuts it alone)."""
        limit = job.meta.get("timeout")
        try:
            async with asyncio.timeout(limit):
                code: int | None = await asyncio.shield(proc.exited)
        except TimeoutError:
            code = await self._stop(proc)
            job.process_ended()
            _ended(job, proc)
            await _unwatch(watch)
            why = f"timed out after {limit:g}s"
            return await self._records.finish(job, code, why, JobState.failed, True)
        except ForkServerDied:
            assert server is not None  # noqa: S101
            self._died(server)
            settled = await self._settle_orphan(job, attempt, server)
            assert settled is not None  # noqa: S101 - it had started
            return settled
        except asyncio.CancelledError:
            code = await self._stop(proc)
            _ended(job, proc)
            await _unwatch(watch)
            self._records.finish_now(job, code, "stopped: the runner shut down first")
            raise
        job.process_ended()
        self._learn_from(job, _ended(job, proc))
        await _unwatch(watch)
        return await self._records.finish(job, code, None)

    async def _fork(
        self, job: Job, server: ForkServer, attempt: int, fork: bool, learn: bool = False
    ) -> _Process:
        check = trigger_to_check(job)
        script = job.argv[1] if len(job.argv) > 1 else ""
        argv, env = None, job.env
        if not fork:  # a new program, exec'd by the fork server's child (after it is contained)
            python = job.meta.get("recipe_kind") in PYTHON_KINDS
            argv = spawn_argv([program(job.argv[0]), *job.argv[1:]], python=python)
            env = {**job.env, **_precompiled(job), "MEOW_PROCESS_LOG": str(job.dir / PROCESS_LOG)}
        keep = job.meta.get("env_keep")
        if keep is not None:  # only what the recipe's env: keeps of the runner's
            env = environment(os.environ, env, keep)
        try:
            pid, started, exited = await server.start(
                job.id,
                job.dir,
                script,
                env,
                attempt,
                check,
                argv,
                whole=keep is not None,
                learn=learn,
            )
        except StartRefused as e:
            raise (Vanished if e.vanished else NotStarted)(str(e)) from None
        return _Forked(server, pid, started, exited)

    async def _settle_orphan(self, job: Job, attempt: int, server: ForkServer) -> JobState | None:
        """The fork server died with this job's attempt under way: what became of it.

        None: its process never began (start it again); a state: it ended and is recorded;
        JobInterrupted: it was cut off, so ``on_restart`` decides.
        """
        read = await asyncio.to_thread(last_attempt, job.dir)
        if read is None or read.number != attempt:
            return None
        last, cut_off, _ = await asyncio.to_thread(outcome, job.dir, read)
        job.meta.update(started=last.started)
        if last.exit_code is not None:
            return await self._records.finish(job, last.exit_code, None)
        if not cut_off:
            return None
        raise JobInterrupted(f"{server.dead} while the job was running")

    async def _spawned(self, job: Job, attempt: int) -> _Spawned:
        popen, started = await asyncio.to_thread(self._spawn, job, attempt)
        return _Spawned(popen, started)

    def _spawn(self, job: Job, attempt: int) -> tuple[subprocess.Popen[bytes], float]:
        python = job.meta.get("recipe_kind") in PYTHON_KINDS
        check = trigger_to_check(job)
        keep = job.meta.get("env_keep")
        env = {**job.env, **_precompiled(job)}
        return spawn(job.dir, job.argv, env, attempt, python=python, check=check, keep=keep)

    async def _stop(self, proc: _Process) -> int | None:
        """SIGTERM the job's process group, then SIGKILL if it is still there."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            proc.signal(sig)
            try:
                async with asyncio.timeout(self.kill_timeout):
                    return await asyncio.shield(proc.exited)
            except TimeoutError:
                logger.warning("job process %d ignored %s", proc.pid, sig.name)
            except ForkServerDied:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                return None
        return None


def _precompiled(job: Job) -> dict[str, str]:
    """The spawned Python job's code, compiled by the runner when it wrote the script."""
    return {PRECOMPILED_ENV: job.precompiled.hex()} if job.precompiled is not None else {}


async def _unwatch(watch: OutputWatch | None) -> None:
    if watch is not None:
        await watch.stopped()


def _ended(job: Job, proc: _Process) -> dict[str, Any]:
    """What the job's end left behind, killed by its container, in its metadata and log;
    how the fork server saw its end."""
    if not isinstance(proc, _Forked):
        return {}
    end = proc.end()
    job.meta["containment"] = end.get("contained", "none")
    left = end.get("left")
    if left:
        job.meta["left_running"] = left
        logger.warning(
            "job %s left %d process(es) running when its own ended: killed (containment: %s)",
            job.id,
            left,
            job.meta["containment"],
        )
    return end


def _folders(recipes: Iterable[Any]) -> set[str]:
    """The folders of recipes' ``file:``s."""
    files = [r.file for r in recipes if getattr(r, "file", None) is not None]
    return {os.path.dirname(os.path.abspath(f)) for f in files}


def _containment(server: ForkServer) -> str:
    """How the fork server contains jobs, for a log line."""
    how = {"cgroup": "a cgroup each", "subreaper": "a child subreaper", "none": "nothing"}
    why = f" ({server.containment_why})" if server.containment_why else ""
    return how.get(server.containment, server.containment) + why
