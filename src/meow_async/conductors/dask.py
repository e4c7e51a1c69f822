"""Jobs on a Dask cluster: submitted and awaited through Dask's async client, run on workers.

Each job is one Dask task (``on_worker.run_job``) that runs the job's script as a process in
its folder on the worker, so the job folder, ``process.log`` and outputs are the same as with
the local conductor. The folders must be on a file system the runner and the workers share.
Needs ``pip install 'meow-async[dask]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import time
from collections.abc import Iterable, Mapping
from typing import Any

from ..exceptions import ConfigError
from ..model.jobs import Job, JobState
from .base import PYTHON_KINDS, JobInterrupted, Records, trigger_to_check
from .batch import start_jobqueue
from .local import LocalConductor
from .on_worker import run_job, signal_attempt
from .process_log import last_attempt

try:
    from distributed import Client, LocalCluster
    from distributed.client import Future, FutureCancelledError
    from distributed.scheduler import KilledWorker
except ImportError as e:  # pragma: no cover - the extra is installed in the test suite
    raise ConfigError(
        f"the Dask conductor needs dask distributed ({e}): pip install 'meow-async[dask]'",
        where="runner",
        field="conductor",
        value="dask",
    ) from None

__all__ = ["DaskConductor"]

logger = logging.getLogger("meow_async.conductors")

#: Seconds between attempts to reach a scheduler that went away (doubling up to the last).
_RECONNECT = (0.5, 1.0, 2.0, 5.0, 10.0)
#: Seconds between looks at Dask's client while it reconnects by itself.
_WATCH = 0.1


class DaskConductor:
    """Runs jobs on a Dask cluster: ``address`` of a running scheduler, or ``local_workers``
    worker processes of a ``LocalCluster`` that starts and stops with the runner.

    Jobs whose recipe says ``conductor: local`` (or all jobs, with ``default="local"``) run on
    this machine through ``local`` instead. A recipe's ``resources`` become Dask worker
    resources: only workers that offer them run its jobs.
    """

    def __init__(
        self,
        *,
        address: str | None = None,
        local_workers: int | None = None,
        jobqueue: Mapping[str, Any] | None = None,
        threads_per_worker: int = 1,
        resources: Mapping[str, float] | None = None,
        kill_timeout: float = 5.0,
        connect_timeout: float = 30.0,
        default: str = "dask",
        local: LocalConductor | None = None,
    ) -> None:
        if [address, local_workers, jobqueue].count(None) != 2:
            raise ConfigError(
                "give one of 'address' (tcp://host:8786), 'local_workers' (a number) or "
                "'jobqueue' (batch-job settings: {'jobqueue': 'slurm', 'cores': ..., ...})",
                where="runner",
                field="dask",
                value={"address": address, "local_workers": local_workers, "jobqueue": jobqueue},
            )
        self.address = address
        self.local_workers = local_workers
        #: ``runner.dask`` with ``jobqueue``: workers started as batch jobs (dask-jobqueue).
        self.jobqueue = dict(jobqueue) if jobqueue is not None else None
        self.threads_per_worker = threads_per_worker
        self.worker_resources = dict(resources or {})
        self.kill_timeout = kill_timeout
        self.connect_timeout = connect_timeout
        self.default = default
        self.local = local or LocalConductor(kill_timeout=kill_timeout)
        self._cluster: Any = None  # a LocalCluster, or a dask-jobqueue JobQueueCluster
        self._client: Client | None = None
        self._up = asyncio.Event()
        self._reconnecting: asyncio.Task[None] | None = None
        self._closed = False
        self._records = Records()

    @property
    def client(self) -> Client | None:
        """The Dask client while connected (e.g. for the dashboard link)."""
        return self._client

    # -- the cluster ---------------------------------------------------------------------------

    async def prepare(self, recipes: Iterable[Any]) -> None:
        """Start the LocalCluster or connect to the scheduler before the first job."""
        recipes = list(recipes)
        await self.local.prepare(r for r in recipes if self._where(r) == "local")
        if self.local_workers is not None:
            self._cluster = await LocalCluster(
                n_workers=self.local_workers,
                threads_per_worker=self.threads_per_worker,
                processes=True,
                resources=self.worker_resources or None,
                # This machine only, and any free port for the scheduler's HTTP server (its
                # dashboard, if bokeh is installed): 8787 may be another cluster's.
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",
                asynchronous=True,
                silence_logs=logging.ERROR,
            )
            self.address = self._cluster.scheduler_address
            logger.info(
                "Dask LocalCluster started: %d worker(s), scheduler %s, dashboard %s",
                self.local_workers,
                self.address,
                self._cluster.dashboard_link,
            )
        elif self.jobqueue is not None:
            self._cluster = await start_jobqueue(self.jobqueue)
            self.address = self._cluster.scheduler_address
        try:
            self._client = await self._connect()
        except (OSError, TimeoutError) as e:
            raise ConfigError(
                f"cannot reach the Dask scheduler at {self.address}: {e}",
                where="runner",
                field="dask",
                value=self.address,
            ) from None
        self._up.set()

    async def close(self) -> None:
        """Disconnect, and stop the LocalCluster if the runner started it."""
        self._closed = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        client, self._client = self._client, None
        if client is not None:
            await client.close()
        cluster, self._cluster = self._cluster, None
        if cluster is not None:
            await cluster.close()  # an awaitable when asynchronous; cancels its batch jobs
        await self.local.close()

    async def _connect(self) -> Client:
        assert self.address is not None  # noqa: S101 - set in prepare
        client: Client = await Client(
            self.address,
            asynchronous=True,
            timeout=self.connect_timeout,
            set_as_default=False,
        )
        return client

    async def _ready(self) -> Client:
        """The client, once connected: jobs wait here (queued) while the scheduler is away."""
        while True:
            client = self._client
            if client is not None and client.status == "running":
                return client
            self._lost()
            await self._up.wait()

    def _lost(self) -> None:
        """The scheduler went away: say so once, and reconnect in the background."""
        client = self._client
        if self._closed or not self._up.is_set():
            return
        if client is not None and client.status == "running":
            return
        self._up.clear()
        logger.error(
            "lost the Dask scheduler at %s; jobs stay queued until it is back", self.address
        )
        self._reconnecting = asyncio.create_task(self._reconnect())

    async def _reconnect(self) -> None:
        """Wait for Dask's own reconnection; once it gives up, keep making new clients."""
        tries = 0
        while True:
            client = self._client
            if client is not None and client.status == "running":
                break
            if client is None or client.status in ("closing", "closed", "failed"):
                with contextlib.suppress(Exception):
                    if client is not None:
                        await client.close()
                try:
                    self._client = await self._connect()
                    continue
                except (OSError, TimeoutError):
                    pause = _RECONNECT[min(tries, len(_RECONNECT) - 1)]
                    tries += 1
            else:
                pause = _WATCH  # Dask's client is still reconnecting by itself
            await asyncio.sleep(pause)
        logger.warning("reconnected to the Dask scheduler at %s", self.address)
        self._up.set()

    # -- one job -------------------------------------------------------------------------------

    def _where(self, recipe_or_job: Any) -> str:
        meta = getattr(recipe_or_job, "meta", None)
        chosen = meta.get("conductor") if meta is not None else recipe_or_job.conductor
        return str(chosen or self.default)

    async def execute(self, job: Job) -> JobState:
        if self._where(job) == "local":
            return await self.local.execute(job)
        job.meta["start"] = "spawn"  # workers have no fork server: a new process each
        job.meta["containment"] = "none"  # the worker's host's to contain
        job.meta.pop("output_cut", None)  # an earlier attempt's
        attempt = len(job.meta.get("attempts") or []) + 1
        try:
            result = await self._run(job, attempt)
        finally:
            job.process_ended()
        if isinstance(result, JobState):
            return result
        return await self._record(job, result, attempt)

    async def _run(self, job: Job, attempt: int) -> dict[str, Any] | JobState:
        """Submit the attempt and wait for it; submitted again if the scheduler went away
        before the attempt began on a worker (a queued job stays queued)."""
        submitted = False
        while True:
            client = await self._ready()
            if submitted and await self._began(job, attempt):
                # Began as the link broke: it may even have ended, its result lost with it.
                return await self._cut_off(job, attempt, self._lost_while_running())
            await self._stop_earlier(client, job, attempt)
            resources = dict(job.meta.get("resources") or {})
            if resources and not await self._can_run(client, resources):
                offered = await self._offered(client)
                why = f"no Dask worker offers the resources {resources}{offered}"
                return await self._records.finish(job, None, why)
            spec = {
                "dir": str(job.dir),
                "argv": job.argv,
                "env": job.env,
                "env_keep": job.meta.get("env_keep"),
                "attempt": attempt,
                "python": job.meta.get("recipe_kind") in PYTHON_KINDS,
                "check": trigger_to_check(job),
                "timeout": job.meta.get("timeout"),
                "kill_timeout": self.kill_timeout,
                "max_output": job.meta.get("max_output"),
            }
            key = f"meow-{job.id}-{attempt}-{secrets.token_hex(3)}"
            future: Future[dict[str, Any]] = client.submit(
                run_job, spec, key=key, pure=False, resources=resources or None, retries=0
            )
            submitted = True
            job.meta.update(state=JobState.running.value, started=time.time())
            # One asyncio view of the Dask future, awaited here and by a stop, always retrieved.
            waiting: asyncio.Future[dict[str, Any]] = asyncio.ensure_future(future)
            waiting.add_done_callback(_retrieve)
            try:
                result: dict[str, Any] = await asyncio.shield(waiting)
            except FutureCancelledError as e:
                self._lost()
                if await self._began(job, attempt):
                    return await self._cut_off(job, attempt, self._lost_while_running())
                logger.debug("job %s had not begun (%s): it waits to be submitted again", job.id, e)
                continue
            except KilledWorker as e:
                why = f"Dask workers died while running it: {e}"
                return await self._cut_off(job, attempt, why)
            except asyncio.CancelledError:
                await self._cancel(client, future, waiting, job, attempt)
                raise
            except Exception as e:
                return await self._records.finish(job, None, f"Dask task failed: {e!r}")
            return result

    def _lost_while_running(self) -> str:
        return f"lost the Dask scheduler at {self.address} while the job was running"

    async def _cut_off(self, job: Job, attempt: int, why: str) -> JobState:
        """The attempt's result will never come (its scheduler or worker was lost): what its
        ``process.log`` says, as a restart reads it. A job that wrote its exit is recorded as
        it ended and not run again; otherwise JobInterrupted, and ``on_restart`` decides."""
        last = await asyncio.to_thread(last_attempt, job.dir)
        if last is None or last.number != attempt or last.exit_code is None:
            raise JobInterrupted(why)
        job.meta.update(started=last.started, pid=last.pid)
        if last.worker:
            job.meta["worker"] = {"address": last.worker, "host": last.host}
        logger.info(
            "job %s ended (exit code %d) as its result was lost (%s): recorded from its "
            "process.log, not run again",
            job.id,
            last.exit_code,
            why,
        )
        return await self._records.finish(job, last.exit_code, None)

    async def _began(self, job: Job, attempt: int) -> bool:
        """Whether the attempt's process was started on a worker (its ``start`` line)."""
        last = await asyncio.to_thread(last_attempt, job.dir)
        return last is not None and last.number >= attempt

    async def _record(self, job: Job, result: dict[str, Any], attempt: int) -> JobState:
        job.meta["worker"] = {"address": result.get("worker"), "host": result.get("host")}
        if result.get("batch_job"):
            job.meta["worker"]["batch_job"] = result["batch_job"]
        if result.get("output_cut"):  # cut on the worker, where the files are written
            job.meta["output_cut"] = result["output_cut"]
        if "started" in result:
            job.meta.update(started=result["started"], pid=result.get("pid"))
        if "interrupted" in result:
            return await self._cut_off(job, attempt, result["interrupted"])
        if "skipped" in result:
            return await self._records.finish(job, None, result["skipped"], JobState.skipped)
        if "error" in result:
            return await self._records.finish(job, None, result["error"])
        code = result.get("exit_code")
        if result.get("timed_out"):
            why = f"timed out after {job.meta.get('timeout'):g}s"
            return await self._records.finish(job, code, why, JobState.failed, True)
        return await self._records.finish(job, code, None)

    async def _cancel(
        self,
        client: Client,
        future: Future[dict[str, Any]],
        waiting: asyncio.Future[dict[str, Any]],
        job: Job,
        attempt: int,
    ) -> None:
        """Stopped by the runner: SIGTERM, then SIGKILL, to the job's process on its worker."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            await self._signal(client, job, attempt, sig)
            await asyncio.wait([waiting], timeout=self.kill_timeout)
            if waiting.done():
                break
        code = None
        if waiting.done() and not waiting.cancelled() and waiting.exception() is None:
            code = waiting.result().get("exit_code")
        else:
            waiting.cancel()
            with contextlib.suppress(Exception):
                await future.cancel()
        self._records.finish_now(job, code, "stopped: the runner shut down first")

    async def _signal(
        self, client: Client, job: Job, attempt: int, sig: int, *, anywhere: bool = False
    ) -> None:
        """Signal an attempt's process group on the worker that runs it (all workers if the
        attempt's ``process.log`` does not say which, or ``anywhere``)."""
        last = await asyncio.to_thread(last_attempt, job.dir)
        workers = None
        if not anywhere and last is not None and last.worker and last.worker != "-":
            workers = [last.worker]
        host = last.host if last is not None else None
        try:
            await client.run(signal_attempt, str(job.dir), attempt, int(sig), host, workers=workers)
        except Exception as e:  # the worker is gone: so is the job (it dies with it)
            logger.debug("could not signal job %s on %s: %s", job.id, workers or "workers", e)

    async def _stop_earlier(self, client: Client, job: Job, attempt: int) -> None:
        """An earlier attempt cut off (scheduler lost, runner restarted) may still run on a
        worker: kill it before this one starts, so the job never runs twice at once."""
        if attempt == 1:
            return  # no earlier one: attempts count from 1 (no thread hop per job for this)
        last = await asyncio.to_thread(last_attempt, job.dir)
        if last is None or last.mode != "dask" or last.number >= attempt:
            return
        if last.exit_code is None:
            await self._signal(client, job, last.number, signal.SIGKILL, anywhere=True)

    async def _can_run(self, client: Client, resources: dict[str, float]) -> bool:
        """Whether some worker offers ``resources``: asked of the scheduler when the client's
        cached list says no; with no workers at all, jobs wait for some to join (e.g. an
        adaptive cluster)."""
        workers = client.scheduler_info().get("workers") or {}
        if any(_offers(w.get("resources") or {}, resources) for w in workers.values()):
            return True
        if client.scheduler is not None:
            workers = (await client.scheduler.identity()).get("workers") or {}
        if not workers:
            return True
        return any(_offers(w.get("resources") or {}, resources) for w in workers.values())

    async def _offered(self, client: Client) -> str:
        if client.scheduler is None:
            return ""
        workers = ((await client.scheduler.identity()).get("workers") or {}).values()
        offered = sorted({str(w.get("resources") or {}) for w in workers})
        return f" (workers offer: {', '.join(offered)})" if offered else ""


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # seen: no "exception never retrieved" for a stopped job's task


def _offers(has: Mapping[str, float], wants: Mapping[str, float]) -> bool:
    return all(has.get(name, 0) >= amount for name, amount in wants.items())
