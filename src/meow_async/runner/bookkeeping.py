"""What the runner keeps account of besides its tasks: jobs to run again (a rule's ``retries``,
a job cut off with its supervisor and ``on_restart``), and how far file changes have become
jobs (the watermark the next start's catch-up scan looks from)."""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..conductors.recovery import RunnerState
from ..model.jobs import Job, JobState
from ..model.rules import Rule

__all__ = ["BUCKETS", "Durations", "Retries", "RunnerStats", "Watermark"]

logger = logging.getLogger("meow_async.runner")

#: Seconds of slack for changes still in the watcher's batch when the watermark is taken.
MARGIN = 2.0
#: The watermark is written at most this often (seconds) while running.
CHECKPOINT_EVERY = 5.0
#: Upper bounds (seconds) of the job duration histogram's buckets.
BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 1800.0, 3600.0)


class Durations:
    """How long jobs took: counts per bucket and the sum, as a Prometheus histogram wants
    (here, not beside /metrics, so that a runner without runner.http loads no Prometheus)."""

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds


@dataclass(slots=True)
class RunnerStats:
    """Counters since the runner started; ``Runner.wait_for`` waits on them."""

    events: int = 0
    jobs: int = 0
    running: int = 0
    done: int = 0
    failed: int = 0
    left_queued: int = 0
    handler_errors: int = 0
    skipped: int = 0
    retries: int = 0
    #: Finished jobs removed by ``runner.retention`` (folder and index row).
    removed: int = 0
    #: Notifications (docs/notifications.md): delivered, given up, dropped.
    notifications_sent: int = 0
    notifications_failed: int = 0
    notifications_dropped: int = 0

    @property
    def finished(self) -> int:
        return self.done + self.failed + self.skipped


class _Counts(Protocol):
    """Where retries are counted (``RunnerStats`` has it)."""

    retries: int


class Retries:
    """Jobs put back on the jobs queue: failed ones after their backoff, cut-off ones at once.

    ``waiting`` holds the tasks sleeping out a backoff; the runner cancels them at stop (their
    jobs are ``queued`` on disk by then, so the next start runs them).
    """

    def __init__(self, stats: _Counts) -> None:
        self.stats = stats
        self.waiting: set[asyncio.Task[None]] = set()

    def retry(
        self, job: Job, rule: Rule | None, jobs: asyncio.Queue[Job], *, stopping: bool
    ) -> bool:
        """Queue a failed job again after its backoff, if its rule allows another attempt."""
        retried = int(job.meta.get("retried") or 0)  # counted here, whatever the conductor
        cancelled = bool(job.meta.get("cancelled"))  # meow-async jobs cancel: not a failure
        if rule is None or retried >= rule.pattern.retries or stopping or cancelled:
            return False
        attempts = retried + 1
        job.meta["retried"] = attempts
        delay = rule.pattern.retry_backoff * 2 ** (attempts - 1)
        self.stats.retries += 1
        logger.warning(
            "job %s failed (attempt %d of %d, rule %s): %s; again in %.1fs",
            job.id,
            attempts,
            rule.pattern.retries + 1,
            job.rule,
            job.meta.get("error"),
            delay,
        )
        self._later(job, delay, jobs)
        return True

    async def interrupted(
        self, job: Job, rule: Rule | None, jobs: asyncio.Queue[Job], why: str, *, stopping: bool
    ) -> JobState | None:
        """A job cut off with what supervised its process: its rule's ``on_restart`` decides,
        as after a restart. None: queued again."""
        attempt = {
            "started": job.meta.get("started"),
            "finished": time.time(),
            "exit_code": None,
            "error": why,
        }
        attempts = [*(job.meta.get("attempts") or []), attempt]
        if rule is not None and rule.pattern.on_restart == "rerun" and not stopping:
            job.meta.update(attempts=attempts, error=None, exit_code=None)
            logger.warning(
                "job %s interrupted (%s): running it again (on_restart: rerun)", job.id, why
            )
            self.stats.retries += 1
            self._later(job, 0, jobs)
            return None
        await asyncio.to_thread(
            job.update,
            state=JobState.failed.value,
            error=why,
            finished=time.time(),
            attempts=attempts,
        )
        return JobState.failed

    def _later(self, job: Job, delay: float, jobs: asyncio.Queue[Job]) -> None:
        task = asyncio.create_task(self._put_back(job, delay, jobs))
        self.waiting.add(task)
        task.add_done_callback(self.waiting.discard)

    async def _put_back(self, job: Job, delay: float, jobs: asyncio.Queue[Job]) -> None:
        await asyncio.to_thread(job.update, state=JobState.queued.value)  # a restart runs it
        await asyncio.sleep(delay)
        await jobs.put(job)


class Watermark:
    """The moment before which every file change seen has become jobs, saved in the jobs
    folder (``.meow-runner.json``) so the next start's catch-up scan looks from there.

    It advances only while nothing seen is still on its way: the events queue empty, no
    handler mid-event, no trigger held by the gate, no event that failed to make its job.
    """

    def __init__(self, jobs_dir: Path, *, durable: bool) -> None:
        self.jobs_dir = jobs_dir
        self.durable = durable
        self.state = RunnerState(jobs_dir, durable=durable)  # read again by load()
        self.watching_since: float | None = None
        self.held_at_stop: float | None = None
        self.unhandled: float | None = None  # the oldest event that failed to make its job
        self._last = 0.0

    def load(self) -> float | None:
        """Read the saved watermark (at start, once the jobs folder exists)."""
        self.state = RunnerState(self.jobs_dir, durable=self.durable)
        return self.state.watermark

    def watch_started(self, since: float) -> None:
        """The file watch is live (and the catch-up scan queued) from ``since`` on."""
        self.watching_since = since
        if self.state.watermark is None:
            self.state.save(since)  # a first run: nothing before this was ever promised

    def event_failed(self, when: float) -> None:
        """An event could not make its job: the watermark stays before it."""
        self.unhandled = min(self.unhandled or when, when)

    def checkpoint(self, *, settled: bool, oldest_held: float | None) -> None:
        """Advance the watermark, at most every few seconds, when ``settled`` (nothing seen
        is waiting to become a job)."""
        now = time.time()
        if self.watching_since is None or not settled or now - self._last < CHECKPOINT_EVERY:
            return
        self._last = now
        # Changes inside the watcher's current batch are not in the queue yet: keep a margin.
        # Triggers held back until their files are complete are not either.
        mark = max(self.watching_since, now - MARGIN)
        for since in (oldest_held, self.unhandled):
            if since is not None:
                mark = min(mark, since - MARGIN)
        try:
            self.state.save(mark)
        except OSError as e:  # an unwritable jobs folder is logged by the handler already
            logger.debug("could not save the runner's state: %s", e)

    def save_at_stop(self) -> None:
        """At a graceful stop: if every change seen was drained into jobs, the next start
        looks from here on (blocking: call it in a thread)."""
        if self.watching_since is None or self.held_at_stop is not None or self.unhandled:
            return
        try:
            self.state.save(time.time() - MARGIN)
        except OSError as e:
            logger.warning("could not save the runner's state in %s: %s", self.jobs_dir, e)
