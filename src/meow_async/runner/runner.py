"""The Runner: monitors, handlers and conductors as tasks of one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import socket
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from ..conductors import Conductor, JobInterrupted, LocalConductor
from ..conductors.learned_preload import LEARNED_FILE
from ..conductors.process_log import CANCELLED, current
from ..conductors.recovery import clear_notify_mark, recover_jobs
from ..exceptions import ConfigError, MeowError, MonitorError, RunnerStopped
from ..handlers import Handler, Refused
from ..model.config import RunnerConfig, http_limits, http_token
from ..model.events import Event
from ..model.index import JobIndex
from ..model.jobs import FINISHED, META_FILE, Job, JobState, queued_again, read_meta, write_meta
from ..model.notify import Notify
from ..model.patterns import FilePattern, Pattern
from ..model.printable import printable
from ..model.recipes import Recipe
from ..model.retention import SLICE as RETENTION_SLICE
from ..model.retention import Pruned, describe, prune_slice
from ..model.rules import Rule
from ..model.workflow import Workflow
from ..model.workflow_file import WorkflowSpec, load_workflow
from ..monitors import KINDS, FileMonitor, HttpMonitor, Monitor, NetworkMonitor, TimeMonitor
from ..monitors.filtering import Filtering
from ..notify import GRACE as NOTIFY_GRACE
from ..notify import Notifier
from .bookkeeping import Durations, Retries, RunnerStats, Watermark
from .feed import Feed
from .live import LiveFile, read_live
from .reload import Outcome, Reloads

if TYPE_CHECKING:  # aiohttp and Prometheus: loaded only for runner.http
    from .endpoints import Endpoints

__all__ = ["Runner", "RunnerStats"]

logger = logging.getLogger("meow_async.runner")

#: Seconds a reload's outcome waits for listeners bound again to be written with their ports.
RELOAD_PORTS_WAIT = 5.0


class Runner:
    """Runs a workflow until stopped.

    ``await runner.run()`` runs until :meth:`stop` or cancellation; ``async with Runner(...)``
    starts it in the background for embedding. Patterns and recipes can be added, updated and
    removed while it runs; monitors follow.

    Example:
        ```py
        async with Runner(patterns=[...], recipes=[...]) as runner:
            async with asyncio.timeout(30):
                await runner.wait_for(lambda s: s.finished >= 1)
        ```
    """

    def __init__(
        self,
        patterns: Iterable[Pattern] = (),
        recipes: Iterable[Recipe] = (),
        *,
        config: RunnerConfig | None = None,
        conductor: Conductor | None = None,
        version: str | None = None,
    ) -> None:
        self.config = config or RunnerConfig()
        self.workflow = Workflow(patterns, recipes, version)
        self.jobs_dir = self.config.jobs_dir.absolute()
        assert self.config.spool_dir is not None  # noqa: S101 - set by RunnerConfig
        self.spool_dir = self.config.spool_dir.absolute()
        self.conductor = conductor or _conductor(self.config, self.workflow.recipes.values())
        self.handler = Handler(
            self.jobs_dir, durable=self.config.durable, max_output=self.config.max_output
        )
        self.watermark = Watermark(self.jobs_dir, durable=self.config.durable)
        self._handling = 0  # events a handler has taken and not finished
        #: Each rule's ``when:`` filter, applied by every monitor (counts for /metrics).
        self.filtering = Filtering()
        self.monitors: list[Monitor] = []
        for make in KINDS.values():  # one of each kind, whatever the patterns now
            self.monitors.append(make(self))
        # The runner's own bookkeeping needs these by name (watermark, spool journal,
        # runner.http, the next ticks it shows); everything else goes through the Monitor
        # protocol.
        self.files: FileMonitor = self.monitor("files")
        self.network: NetworkMonitor = self.monitor("network")
        self.http: HttpMonitor = self.monitor("http")
        self.time: TimeMonitor = self.monitor("time")
        for m in self.monitors:
            check = getattr(m, "check", None)
            if check is not None:
                check()  # e.g. patterns that share a port must agree on its settings
        self.stats = RunnerStats()
        self.retries = Retries(self.stats)
        self.notifier = Notifier(self.stats, self._notify)  # sends in the background
        self._unmarking: set[asyncio.Task[None]] = set()  # job.json: notified after a restart
        self.events_by: Counter[tuple[str, str]] = Counter()  # (monitor, rule): for /metrics
        self.durations = Durations()
        #: Jobs whose process runs now, and when each was handed to the conductor (/status).
        self.jobs_running: dict[str, tuple[Job, float]] = {}
        #: Queued jobs cancelled through runner.http: recorded, not started, when their turn
        #: comes.
        self.cancelled: set[str] = set()
        self.live = LiveFile(self.jobs_dir)  # for `meow-async status`
        #: Job state changes for the live view's open pages (nothing without a viewer).
        self.feed = Feed()
        #: The jobs folder's index, open while ``run`` runs.
        self.index: JobIndex | None = None
        self._queues: dict[str, asyncio.Queue[Any]] = {}
        http = self.config.http
        self.endpoints: Endpoints | None = None
        if http:
            from .endpoints import Endpoints

            self.endpoints = Endpoints(self, http_token(http))
            self.http.serve_operator(
                http["host"], http["port"], self.endpoints.answer, http_limits(http)
            )
        self.started = asyncio.Event()
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._tick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(self.config.max_jobs)  # job processes at once
        self._ran = False
        self._finished = False  # run() returned or raised: wait_for gives up
        #: The workflow file it runs, followed and reloadable (None: rules made in code).
        self.reloads: Reloads | None = None

    @classmethod
    def from_spec(cls, spec: WorkflowSpec, **overrides: Any) -> Self:
        """A runner for a loaded workflow file; ``overrides`` replace runner settings."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        config = dataclasses.replace(spec.config, **changes) if changes else spec.config
        runner = cls(spec.patterns, spec.recipes, config=config, version=spec.version or None)
        runner.reloads = Reloads(
            spec,
            runner.workflow,
            functools.partial(_check_recipes, config),
            runner._reloaded,
        )
        return runner

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **overrides: Any) -> Self:
        """A runner for a workflow file (https://meow-async.github.io/meow_async/workflow-file/)."""
        return cls.from_spec(load_workflow(path), **overrides)

    # -- the workflow, changeable while running ------------------------------------------------

    @property
    def rules(self) -> dict[str, Rule]:
        return self.workflow.rules

    def queues(self) -> dict[str, asyncio.Queue[Any]]:
        """The events and jobs queues, while running (their depth is in /metrics)."""
        return dict(self._queues)

    @property
    def http_port(self) -> int | None:
        """The port ``runner.http`` serves on, once started (it may ask for port 0)."""
        return self.http.operator_port()

    def ports(self) -> dict[str, int]:
        """The TCP port of each network and HTTP rule, once started (patterns may ask for
        port 0)."""
        out: dict[str, int] = {}
        for m in self.monitors:
            ports = getattr(m, "ports", None)
            if ports is not None:
                out.update(ports())
        return out

    def monitor(self, name: str) -> Any:
        """The runner's monitor called ``name`` (``files``, ``network``, ``http``, ``time``)."""
        for m in self.monitors:
            if m.name == name:
                return m
        raise KeyError(f"no monitor {name!r}: the runner has {[m.name for m in self.monitors]}")

    def add_pattern(self, pattern: Pattern) -> None:
        self.workflow.add_pattern(pattern)

    def update_pattern(self, pattern: Pattern) -> None:
        self.workflow.update_pattern(pattern)

    def remove_pattern(self, name: str) -> None:
        self.workflow.remove_pattern(name)

    def add_recipe(self, recipe: Recipe) -> None:
        self.workflow.add_recipe(recipe)

    def update_recipe(self, recipe: Recipe) -> None:
        self.workflow.update_recipe(recipe)

    def remove_recipe(self, name: str) -> None:
        self.workflow.remove_recipe(name)

    async def reload(self, why: str = "asked") -> Outcome:
        """Read the workflow file again and apply it, or refuse it and change nothing
        (``meow-async reload``, SIGHUP, an edit of the file).

        Raises:
            MeowError: the runner was not made from a workflow file.
        """
        if self.reloads is None:
            raise MeowError("this runner was not made from a workflow file: nothing to reload")
        return await self.reloads.reload(why)

    async def _reloaded(self) -> None:
        """Say the outcome in the live file, with the ports: a rule a reload added with port 0
        is found there by ``status`` and ``send WORKFLOW``, as one the start opened."""
        if self.reloads is None:
            return
        await asyncio.to_thread(self.live.update, workflow=self.reloads.state(), ports=self.ports())
        if self.started.is_set():  # a listener whose settings changed is bound again by _sync
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RELOAD_PORTS_WAIT):
                    await self.wait_ready()
            ports = self.ports()
            if ports != self.live.ports():
                await asyncio.to_thread(self.live.update, ports=ports)

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self, *, force: bool = False) -> None:
        """Stop gracefully; a second call (or ``force``) stops running jobs at once.

        Graceful: monitors stop, accepted events still become job directories, running jobs
        get ``shutdown_timeout`` seconds, queued jobs stay queued on disk.
        """
        if force or self._stop.is_set():
            self._force.set()
        self._stop.set()
        self.feed.close()

    async def wait_for(self, predicate: Callable[[RunnerStats], bool]) -> RunnerStats:
        """Wait until ``predicate(stats)`` holds; bound it with ``asyncio.timeout``.

        Raises:
            RunnerStopped: the runner stopped before the condition held.
        """
        while not predicate(self.stats):
            if self._finished:
                raise RunnerStopped(self.stats)
            await self._tick.wait()
        return self.stats

    async def run(self) -> None:
        if self._ran:
            raise RuntimeError("a Runner runs once; make a new one")
        self._ran = True
        try:
            await self._run()
        finally:
            self.live.remove()
            self._finished = True
            self._notify()

    async def _run(self) -> None:
        await asyncio.to_thread(self._preflight)
        for m in self.monitors:
            bind = getattr(m, "bind", None)
            if bind is not None:
                bind()  # a port in use is an error here, before anything starts
        # What a previous run left: accepted messages, queued and running jobs, file changes
        # since its watermark (found by the file monitor once its watch is live).
        recovered_events = await asyncio.to_thread(self.network.recover)
        self.index = await asyncio.to_thread(self._open_index)
        self.handler.index = self.index
        try:
            await self._run_indexed(recovered_events)
        finally:
            await asyncio.to_thread(self.index.close)

    def _open_index(self) -> JobIndex:
        """The jobs folder's index, made again from the folders if it cannot be trusted."""
        try:
            index, opened = JobIndex.open(self.jobs_dir, durable=self.config.durable)
        except (OSError, sqlite3.Error) as e:
            raise MeowError(
                f"cannot open the job index in {self.jobs_dir} (.meow-index.sqlite3): {e}; "
                "it can be deleted, and is then made again from the job folders"
            ) from None
        if opened.rebuilt is not None:
            logger.info(
                "job index made again from the job folders (%s): %d job(s) in %.2fs",
                opened.rebuilt,
                opened.jobs,
                opened.took,
            )
        elif opened.added or opened.dropped:
            logger.info(
                "job index brought up to date with the job folders: %d added, %d gone "
                "(%d folder(s) looked at, %.2fs)",
                opened.added,
                opened.dropped,
                opened.looked_at,
                opened.took,
            )
        return index

    async def _run_indexed(self, recovered_events: list[Event]) -> None:
        recovered = await asyncio.to_thread(
            recover_jobs,
            self.jobs_dir,
            self.workflow.rules,
            durable=self.config.durable,
            index=self.index,
        )
        if recovered.half_made:
            logger.info(
                "%d job(s) were being made when the runner stopped: removed; their triggers "
                "make them again",
                recovered.half_made,
            )
        if recovered.to_run or recovered.failed or recovered.finished:
            logger.info(
                "recovered %d job(s) to run (%d were cut off: %d to rerun, %d failed; %d "
                "orphaned process group(s) killed); %d finished while no runner watched",
                len(recovered.to_run),
                recovered.rerun + recovered.failed,
                recovered.rerun,
                recovered.failed,
                recovered.killed,
                recovered.finished,
            )
        self.notifier.links = self._links()
        if recovered.to_notify:  # with the job index (issue 22), from its query
            logger.info(
                "%d settled job(s) to notify (found after a restart)", len(recovered.to_notify)
            )
            for meta in recovered.to_notify:
                self._notify_settled(meta)
        cfg = self.config
        events: asyncio.Queue[Event] = asyncio.Queue(maxsize=cfg.queue_size)
        jobs: asyncio.Queue[Job] = asyncio.Queue(maxsize=max(cfg.queue_size, 2 * cfg.max_jobs))
        self._queues = {"events": events, "jobs": jobs}
        try:
            await self._serve(events, jobs, recovered_events, recovered.to_run)
        finally:
            self.network.close_journal()  # cancelled too: no open file left behind
            await self.notifier.close(min(NOTIFY_GRACE, self.config.shutdown_timeout))
            await asyncio.gather(*self._unmarking)
            close = getattr(self.conductor, "close", None)
            if close is not None:
                await close()
        await asyncio.to_thread(self.watermark.save_at_stop)
        self.stats.left_queued += jobs.qsize()  # not started: still queued on disk
        self._notify()
        s = self.stats
        logger.info(
            "runner stopped: %d event(s), %d job(s): %d done, %d failed, %d skipped, "
            "%d left queued",
            s.events,
            s.jobs,
            s.done,
            s.failed,
            s.skipped,
            s.left_queued,
        )

    async def _serve(
        self,
        events: asyncio.Queue[Event],
        jobs: asyncio.Queue[Job],
        recovered_events: list[Event],
        recovered_jobs: list[Job],
    ) -> None:
        """Monitors, handlers and conductors, until stopped and drained."""
        cfg = self.config
        async with asyncio.TaskGroup() as tg:
            monitors = [
                tg.create_task(m.run(events, self._stop), name=f"monitor:{m.name}")
                for m in self.monitors
            ]
            workers = [
                tg.create_task(self._handle(events, jobs), name=f"handler:{i}")
                for i in range(cfg.handlers)
            ]
            workers += [
                tg.create_task(self._conduct(jobs), name=f"conductor:{i}")
                # Twice the slots: a job whose process has ended gives its slot to the next
                # while its end is still being written.
                for i in range(2 * cfg.max_jobs)
            ]
            prepare = getattr(self.conductor, "prepare", None)
            if prepare is not None:  # e.g. start the fork server before the first job
                await prepare(self.workflow.recipes.values())
            tg.create_task(self._requeue(events, jobs, recovered_events, recovered_jobs))
            await self._monitors_ready(monitors)
            http, http_port = cfg.http, self.http_port
            self.live.write(  # before started: a banner printed then can be relied on
                base_dir=cfg.base_dir.absolute(),
                jobs_dir=self.jobs_dir,
                http=None if http is None or http_port is None else (http["host"], http_port),
                ports=self.ports(),
                workflow=None if self.reloads is None else self.reloads.state(),
            )
            tg.create_task(self.live.keep(self._stop), name="live-file")
            if self.reloads is not None:
                tg.create_task(self.reloads.follow(self._stop), name="workflow-file")
            if cfg.retention:
                tg.create_task(self._retain(dict(cfg.retention)), name="retention")
            self.started.set()
            logger.info(
                "runner started: watching %s, jobs in %s, up to %d at once",
                cfg.base_dir.absolute(),
                self.jobs_dir,
                cfg.max_jobs,
            )
            await self._stop.wait()
            logger.info("stopping: no new events; running jobs get %.0fs", cfg.shutdown_timeout)
            self.watermark.held_at_stop = self.files.oldest_held()  # found again at the next start
            await asyncio.wait(monitors)
            # Accepted events all become job directories. Jobs they make are not started now,
            # and must not wait for a conductor slot to be put down: drain them as we go.
            drain = asyncio.create_task(self._leave_queued(jobs))
            await events.join()
            drain.cancel()
            force = asyncio.create_task(self._force.wait())
            drained = asyncio.create_task(jobs.join())
            await asyncio.wait(
                [force, drained], timeout=cfg.shutdown_timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not drained.done():
                logger.warning("stopping %d running job(s)", self.stats.running)
            for t in (force, drained, *workers, *self.retries.waiting):
                t.cancel()

    async def _retain(self, keep: dict[str, float]) -> None:
        """Remove finished jobs past ``runner.retention``, a slice (``SLICE`` jobs, one thread
        hop) every few seconds while there is a backlog, then once a minute."""
        assert self.index is not None  # noqa: S101 - open while running
        index, pruned = self.index, Pruned()
        while not self._stop.is_set():
            try:
                done = await asyncio.to_thread(prune_slice, index, keep, into=Pruned())
            except (OSError, sqlite3.Error) as e:
                logger.warning("retention: could not remove old jobs: %s", e)
                done = Pruned()
            for state, n in done.removed.items():
                pruned.removed[state] = pruned.removed.get(state, 0) + n
            self.stats.removed += done.total
            busy = done.total >= RETENTION_SLICE
            if not busy and pruned.total:
                logger.info("retention: removed %d old job(s): %s", pruned.total, describe(pruned))
                pruned = Pruned()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RETENTION_BUSY if busy else RETENTION_IDLE):
                    await self._stop.wait()

    async def _requeue(
        self,
        events: asyncio.Queue[Event],
        jobs: asyncio.Queue[Job],
        recovered_events: list[Event],
        recovered_jobs: list[Job],
    ) -> None:
        for job in recovered_jobs:
            self.stats.jobs += 1
            await jobs.put(job)
        for event in recovered_events:
            await events.put(event)

    async def wait_ready(self) -> None:
        """Wait until every monitor is live, e.g. after adding the first file rule at run time.

        A change made right after ``add_pattern`` can otherwise fall before the watch starts.
        """
        for m in self.monitors:
            await m.ready.wait()

    async def _monitors_ready(self, tasks: list[asyncio.Task[None]]) -> None:
        ready = asyncio.create_task(self.wait_ready())
        await asyncio.wait([ready, *tasks], return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()  # a monitor that failed instead: the TaskGroup raises its error

    def _preflight(self) -> None:
        """Fail before starting anything, with a message that says what to fix."""
        base = self.config.base_dir.absolute()
        if not base.is_dir() and any(
            isinstance(p, FilePattern) for p in self.workflow.patterns.values()
        ):
            raise MonitorError(
                "files", f"the watched folder {base} does not exist (make it: mkdir -p {base})"
            )
        try:
            self.jobs_dir.mkdir(parents=True, exist_ok=True)
            probe = self.jobs_dir / ".meow-write-test"
            probe.touch()
            probe.unlink()
        except OSError as e:
            raise MeowError(
                f"cannot write job directories in {self.jobs_dir}: {e.strerror or e}"
            ) from None
        other = read_live(self.jobs_dir)
        if other is not None and other.pid != os.getpid() and other.alive is not False:
            # Its running jobs would look like a dead runner's orphans here, and be killed.
            on = f" on {other.host}" if other.alive is None else ""
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(other.started))
            raise MeowError(
                f"another runner runs on {self.jobs_dir}: pid {other.pid}{on}, since {since}; "
                "stop it first (meow-async status shows it)"
            )
        try:
            self.spool_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise MeowError(
                f"cannot write received messages in {self.spool_dir}: {e.strerror or e}"
            ) from None
        self.files.catch_up_since = self.watermark.load()

    async def _handle(self, events: asyncio.Queue[Event], jobs: asyncio.Queue[Job]) -> None:
        at_once = 1
        while True:
            # The events waiting now (a burst) make their jobs in one thread hop. The first of
            # a burst goes alone, so its job starts at once; then 2, 4, ... while more wait.
            batch = [await events.get()]
            while len(batch) < at_once and not events.empty():
                batch.append(events.get_nowait())
            self._handling += len(batch)
            try:
                self.stats.events += len(batch)
                made = await self.handler.handle_many(batch)
            except BaseException:
                self._handling -= len(batch)
                for _ in batch:
                    events.task_done()
                raise
            at_once = min(2 * at_once, _HANDLE_AT_ONCE) if not events.empty() else 1
            for event, result in zip(batch, made, strict=True):
                try:
                    if isinstance(result, Refused):
                        self._refused(event, result)
                        continue
                    if isinstance(result, Exception):
                        self._not_handled(event, result)
                        continue
                    self.stats.jobs += len(result)
                    self.events_by[event.kind, event.rule.name] += 1
                    if logger.isEnabledFor(logging.INFO):
                        logger.info(
                            "%s -> rule %s: %s",
                            _what(event),
                            event.rule.name,
                            "job " + ", ".join(j.id for j in result)
                            if result
                            else "jobs made before",
                            extra={
                                "rule": event.rule.name,
                                "event": event.kind,
                                "jobs": [j.id for j in result],
                            },
                        )
                    for job in result:
                        self.feed.publish(job.id, job.meta, JobState.queued)
                        await jobs.put(job)
                    if event.release is not None:
                        event.release()
                finally:
                    self._handling -= 1
                    events.task_done()
                    self.watermark.checkpoint(
                        # Nothing seen is still on its way to becoming a job.
                        settled=events.empty() and not self._handling and self.files.ready.is_set(),
                        oldest_held=self.files.oldest_held(),
                    )
                    self._notify()

    def _not_handled(self, event: Event, error: Exception) -> None:
        """A disk error must not stop other rules. Not handled: the watermark stays before it
        and a network message stays spooled and journaled, so the next start tries again."""
        self.stats.handler_errors += 1
        self.watermark.event_failed(event.changed_at or event.time)
        logger.error(
            "%s (rule %s): could not make its job, kept for the next start: %s",
            _what(event),
            event.rule.name,
            error,
        )

    def _refused(self, event: Event, error: Refused) -> None:
        """An event its input keeps from ever becoming a job: said once, and not kept, so the
        watermark moves past it and later inputs trigger as ever."""
        self.stats.handler_errors += 1
        logger.error(
            "%s (rule %s): refused, its job cannot be made (not tried again): %s",
            _what(event),
            event.rule.name,
            printable(str(error)),  # it may quote the input
        )
        if event.release is not None:
            event.release()

    async def _conduct(self, jobs: asyncio.Queue[Job]) -> None:
        while True:
            job = await jobs.get()
            try:
                if not self._stop.is_set():
                    try:
                        await self._slots.acquire()
                    except asyncio.CancelledError:
                        self.stats.left_queued += 1  # stopped at once: it stays queued
                        raise
                    job.on_end = _once(functools.partial(self._process_ended, job))
                if self._stop.is_set():
                    self.stats.left_queued += 1  # stays queued on disk
                    continue
                if job.id in self.cancelled:
                    await self._cancelled_before_start(job)
                    continue
                await self._execute(job, jobs)
            finally:
                job.process_ended()  # the slot, if the conductor has not given it back yet
                job.on_end = None
                jobs.task_done()
                self._notify()

    async def _cancelled_before_start(self, job: Job) -> None:
        self.cancelled.discard(job.id)
        self.stats.failed += 1
        now = time.time()
        await asyncio.to_thread(
            job.update,
            state=JobState.failed.value,
            finished=now,
            error=f"{CANCELLED} before it started",
            cancelled=True,
        )
        logger.warning("job %s cancelled before it started (rule %s)", job.id, job.rule)
        self._job_ended(job, JobState.failed)

    # -- operator's requests (runner.http) -----------------------------------------------------

    async def rerun(self, job_id: str) -> dict[str, Any]:
        """Queue a finished job again (``meow-async jobs rerun``); its record as queued.

        Raises:
            MeowError: no such job, or it has not finished, or the runner is not running.
        """
        jobs = self._queues.get("jobs")
        if jobs is None or not self.started.is_set() or self.stopping:
            raise MeowError("the runner is not running jobs now")
        if job_id in self.jobs_running:
            raise MeowError(f"job {job_id} is running")
        job = await asyncio.to_thread(self._queue_again, job_id)
        self.cancelled.discard(job_id)
        self.feed.publish(job.id, job.meta, JobState.queued)
        await jobs.put(job)
        logger.info("job %s queued again (rerun, rule %s)", job.id, job.rule, extra=_fields(job))
        return job.meta

    def _queue_again(self, job_id: str) -> Job:
        folder = self._job_folder(job_id)
        meta = current({**read_meta(folder), "dir": str(folder)})
        if meta.get("state") not in FINISHED:
            raise MeowError(f"job {job_id} is {meta.get('state')}: only a finished job reruns")
        meta = queued_again(meta)
        write_meta(folder, meta, durable=self.config.durable)
        job = Job.from_meta(meta)
        job.durable = self.config.durable
        job.index = self.index
        if self.index is not None:
            self.index.put([job])  # queued again, and its restart notification no longer owed
        return job

    async def cancel_queued(self, job_id: str) -> None:
        """Mark a queued job cancelled: when its turn comes it is recorded, not started.

        Raises:
            MeowError: no such job, or it is not queued (a running one is signalled by
                ``meow-async jobs cancel`` itself).
        """
        if job_id in self.jobs_running:
            raise MeowError(f"job {job_id} is running")
        folder = self._job_folder(job_id)
        meta = await asyncio.to_thread(lambda: current({**read_meta(folder), "dir": str(folder)}))
        if meta.get("state") != JobState.queued.value:
            raise MeowError(f"job {job_id} is {meta.get('state')}, not queued")
        self.cancelled.add(job_id)
        logger.info("job %s cancelled: it will not start", job_id)

    def _job_folder(self, job_id: str) -> Path:
        """The folder of job ``job_id``: in its day folder (the index says which), or in the
        flat layout of earlier versions. KeyError if there is none."""
        if not job_id or "/" in job_id or job_id.startswith("."):
            raise KeyError(job_id)
        where = self.index.folder_of(job_id) if self.index is not None else None
        folder = self.jobs_dir / (where or job_id)
        if not (folder / META_FILE).is_file():
            raise KeyError(job_id)
        return folder

    def _process_ended(self, job: Job) -> None:
        """The job's process is gone (here or on a worker): its slot goes to the next job, and
        what it declared is complete, so the next stage need not wait for a watcher (the
        end is recorded in job.json meanwhile)."""
        self._slots.release()
        self.files.job_ended(job.dir, job.meta.get("outputs") or {})

    async def _leave_queued(self, jobs: asyncio.Queue[Job]) -> None:
        while True:
            await jobs.get()
            self.stats.left_queued += 1  # it stays queued on disk
            jobs.task_done()

    async def _execute(self, job: Job, jobs: asyncio.Queue[Job]) -> None:
        self.stats.running += 1
        self.jobs_running[job.id] = (job, time.time())
        self.feed.publish(job.id, job.meta, JobState.running)
        self._notify()
        t0 = time.monotonic()
        try:
            state = await self.conductor.execute(job)
        except asyncio.CancelledError:
            self.stats.failed += 1  # the conductor recorded why
            logger.warning("job %s stopped (rule %s)", job.id, job.rule, extra=_fields(job))
            self._job_ended(job, JobState.failed)
            raise
        except JobInterrupted as e:
            rule = self.workflow.rules.get(job.rule)
            if (
                await self.retries.interrupted(job, rule, jobs, str(e), stopping=self.stopping)
                is not None
            ):
                self.stats.failed += 1
                logger.warning(
                    "job %s failed (rule %s): %s", job.id, job.rule, e, extra=_fields(job)
                )
                self._job_ended(job, JobState.failed)
            return
        except Exception as e:  # e.g. metadata unwritable; record what we can and go on
            state = JobState.failed
            job.meta["error"] = f"conductor error: {e}"
            logger.exception(
                "job %s (rule %s) could not be run", job.id, job.rule, extra=_fields(job)
            )
        finally:
            self.stats.running -= 1
            self.jobs_running.pop(job.id, None)
        took = time.monotonic() - t0
        self.durations.observe(took)
        if state is JobState.done:
            self.stats.done += 1
            logger.info(
                "job %s done in %.2fs (rule %s)", job.id, took, job.rule, extra=_fields(job)
            )
        elif state is JobState.failed and self.retries.retry(
            job, self.workflow.rules.get(job.rule), jobs, stopping=self.stopping
        ):
            self.feed.publish(job.id, job.meta, JobState.queued)
            return  # not its end yet
        elif state is JobState.skipped:
            self.stats.skipped += 1
            logger.warning(
                "job %s skipped (rule %s): %s",
                job.id,
                job.rule,
                printable(str(job.meta["error"])),
                extra=_fields(job),
            )
        else:
            self.stats.failed += 1
            logger.warning(
                "job %s %s in %.2fs (rule %s): %s",
                job.id,
                state.value,
                took,
                job.rule,
                printable(str(job.meta.get("error"))),
                extra=_fields(job),
            )
        self._job_ended(job, state)

    def _job_ended(self, job: Job, state: JobState) -> None:
        """Tell whoever the job's pattern names in ``notify``, and the live view's pages;
        files it and returns at once."""
        self.feed.publish(job.id, job.meta, state)
        rule = self.workflow.rules.get(job.rule)
        notify = rule.pattern.notify if rule is not None else None
        if isinstance(notify, Notify):
            self.notifier.job_ended(job, state, notify)

    def _notify_settled(self, meta: dict[str, Any]) -> None:
        """A job settled at start: notified once ("found after a restart"); its job.json's
        mark goes once every destination has had the message, so a runner that dies before
        leaves it to the next start (at least once)."""
        rule = self.workflow.rules.get(str(meta.get("rule")))
        notify = rule.pattern.notify if rule is not None else None
        job_dir = Path(meta["dir"])

        def notified() -> None:
            task = asyncio.create_task(
                asyncio.to_thread(
                    clear_notify_mark, job_dir, durable=self.config.durable, index=self.index
                )
            )
            self._unmarking.add(task)
            task.add_done_callback(self._unmarking.discard)

        if not isinstance(notify, Notify) or not self.notifier.settled_at_start(
            meta, notify, notified
        ):
            notified()  # its rule no longer asks for it

    def view_url(self) -> str | None:
        """Where people open the live view (runner.http's ``/``), once it serves."""
        base = self._links()
        return None if base is None else base.rstrip("/") + "/"

    def _links(self) -> str | None:
        """Where people open runner.http: its ``public_url``, else the address it is bound to."""
        http, port = self.config.http, self.http_port
        if http is None:
            return None
        if http.get("public_url"):
            return str(http["public_url"])
        if port is None:
            return None
        host = str(http["host"])
        if host in ("", "0.0.0.0", "::"):  # noqa: S104 - every address: name this machine
            host = socket.gethostname()
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    def _notify(self) -> None:
        tick, self._tick = self._tick, asyncio.Event()
        tick.set()

    # -- embedding -----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self.run(), name="meow_async.Runner.run")
        started = asyncio.create_task(self.started.wait())
        await asyncio.wait([self._task, started], return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        if self._task.done():
            self._task.result()  # raise what stopped it from starting
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._task is not None  # noqa: S101
        self.stop(force=exc is not None)
        await self._task


#: Seconds between retention slices while old jobs are left to remove, and after a pass that
#: found none left: a slice is one thread hop, never a pause of the loop.
RETENTION_BUSY = 2.0
RETENTION_IDLE = 60.0

#: Events a handler task makes jobs for in one thread hop, at most: fewer hops in a burst,
#: while the first job of a burst waits for no more than a few folders to be made.
_HANDLE_AT_ONCE = 8


def _check_recipes(config: RunnerConfig, recipes: Iterable[Recipe]) -> None:
    """ConfigError for a recipe the runner's conductor cannot run (Dask without a cluster)."""
    if config.dask is None:
        for r in recipes:
            if r.conductor == "dask":
                raise ConfigError(
                    "the recipe runs on Dask, but the runner has no cluster: set runner.dask "
                    "(address or local_workers) or run with --dask",
                    where=f"recipe {r.name!r}",
                    field="conductor",
                    value="dask",
                )


def _conductor(config: RunnerConfig, recipes: Iterable[Recipe]) -> Conductor:
    """The conductor the settings ask for: local, or Dask with local jobs routed through it."""
    local = LocalConductor(
        kill_timeout=config.kill_timeout,
        containment=config.containment,
        learn=config.learn_preload,
        learned=config.jobs_dir.absolute() / LEARNED_FILE,
    )
    if config.dask is None:
        _check_recipes(config, recipes)
        return local
    from ..conductors.dask import DaskConductor  # imports distributed: only when asked for

    settings = dict(config.dask)
    if "jobqueue" in settings:  # the batch system's settings go to dask-jobqueue as they are
        timeout = settings.pop("connect_timeout", 30.0)
        settings = {"jobqueue": settings, "connect_timeout": timeout}
    return DaskConductor(
        **settings, kill_timeout=config.kill_timeout, default=config.conductor, local=local
    )


def _once(release: Callable[[], None]) -> Callable[[], None]:
    done = False

    def once() -> None:
        nonlocal done
        if not done:
            done = True
            release()

    return once


def _fields(job: Job) -> dict[str, Any]:
    """What a log line about a job carries as fields (``--log-format json``)."""
    return {"job": job.id, "rule": job.rule}


def _what(event: Event) -> str:
    """An event in a log line: the file, or the message (what came from outside escaped, for
    an embedding application's own log format too)."""
    if event.kind == "network":
        return f"message {event.extras.get('message_id')} from {event.extras.get('peer')}"
    if event.kind == "http":
        x = event.extras
        what = f"{x.get('method')} {printable(str(x.get('request_path')))}"
        return f"{what} ({x.get('message_id')}) from {x.get('peer')}"
    if event.kind == "time":
        return f"tick {event.extras.get('scheduled_time')}"
    return f"{event.change or event.kind} {printable(event.rel_path)}"
