"""Delivery in the background: one outbox per destination, with its rate limit, digest, queue
and retries; the ``Notifier`` files each job's end with the outboxes its pattern names."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import quote

from ..model.jobs import NOTIFY_PENDING, Job, JobState
from ..model.notify import Email, Notify, Webhook
from .message import Message, summary

if TYPE_CHECKING:  # imported at the first notification: no command but `run` loads them
    import aiohttp

    from .senders import Sender

__all__ = [
    "DIGEST_MAX",
    "GRACE",
    "QUEUE_SIZE",
    "RATE_LIMITED_WAITS",
    "RETRY_AFTER_MAX",
    "Notifier",
    "NotifyStats",
]

logger = logging.getLogger("meow_async.notify")

#: Messages waiting per destination; past that, new ones are dropped and counted.
QUEUE_SIZE = 100
#: Jobs a digest lists; any more are only counted in it.
DIGEST_MAX = 1000
#: Seconds pending notifications get at shutdown (never more than ``shutdown_timeout``).
GRACE = 5.0
#: A service's ``Retry-After`` (HTTP 429) is waited for up to this many seconds at a time, and
#: at most ``RATE_LIMITED_WAITS`` times per message; those waits are not failed attempts.
RETRY_AFTER_MAX = 60.0
RATE_LIMITED_WAITS = 10


class Counts(Protocol):
    """Where the notifier counts (``RunnerStats`` has these)."""

    notifications_sent: int
    notifications_failed: int
    notifications_dropped: int


@dataclass(slots=True)
class NotifyStats:
    """Messages sent, given up after their retries, and dropped (queue full or shutdown)."""

    notifications_sent: int = 0
    notifications_failed: int = 0
    notifications_dropped: int = 0


class Outbox:
    """One destination: its rate limit and digest, its queue, and the task that sends."""

    def __init__(self, notifier: Notifier, sender: Sender, notify: Notify) -> None:
        self.notifier = notifier
        self.sender = sender
        self.label = sender.label
        self.limit, self.window = notify.limit, notify.window
        self.retries, self.backoff = notify.retries, notify.retry_backoff
        self.queue: asyncio.Queue[Message] = asyncio.Queue(notifier.queue_size)
        self.task: asyncio.Task[None] | None = None
        self.busy = False  # a message is being delivered (or waits to be retried)
        self.window_end = float("-inf")  # loop time
        self.opened = 0.0  # wall time the window opened, for the digest
        self.in_window = 0
        self.held: list[dict[str, Any]] = []
        self.held_count = 0
        self.held_tally: Counter[str] = Counter()
        self.held_marks: list[str] = []
        self.timer: asyncio.TimerHandle | None = None
        self.failing = False  # since the last success: log once, count the rest
        self.gave_up = 0
        self.dropping = 0

    def offer(self, record: dict[str, Any], mark: str | None = None) -> None:
        """File one job's end: a message of its own within the limit, else into the digest.
        ``mark``: the job waits for its message to be delivered or given up."""
        marks = [mark] if mark is not None else []
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now >= self.window_end:
            self.flush()  # the timer does it; this covers a late timer
            self.window_end, self.opened, self.in_window = now + self.window, time.time(), 0
        if self.in_window < self.limit:
            self.in_window += 1
            self.put(Message("job", [record], marks=marks))
            return
        self.held_count += 1
        self.held_marks += marks
        self.held_tally[str(record.get("outcome"))] += 1
        if len(self.held) < DIGEST_MAX:
            self.held.append(summary(record))
        if self.timer is None:
            self.timer = loop.call_at(self.window_end, self.flush)

    def flush(self) -> None:
        """Send what the window held back as one digest."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.held_count:
            message = Message(
                "digest",
                self.held,
                count=self.held_count,
                since=self.opened,
                until=time.time(),
                limit=self.limit,
                window=self.window,
                tally=self.held_tally,
                marks=self.held_marks,
            )
            self.held, self.held_count, self.held_tally, self.held_marks = [], 0, Counter(), []
            self.put(message)

    def put(self, message: Message) -> None:
        if self.notifier.closed:
            self.notifier.count("dropped")
            logger.debug("%s: a notification after shutdown, dropped", self.label)
            return
        if self.task is None:
            self.task = asyncio.create_task(self.run(), name=f"notify: {self.label}")
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.dropping += 1
            self.notifier.count("dropped")
            if self.dropping == 1:
                logger.warning(
                    "%s: %d notifications wait already: dropping new ones until they are sent "
                    "(counted, and logged when it drains)",
                    self.label,
                    self.queue.qsize(),
                )
            return
        if self.dropping:
            logger.warning("%s: %d notification(s) were dropped", self.label, self.dropping)
            self.dropping = 0

    async def run(self) -> None:
        while True:
            message = await self.queue.get()
            self.busy = True
            try:
                await self.deliver(message)
            except Exception:  # a bug here must not end this destination's deliveries
                logger.exception("%s: could not deliver a notification", self.label)
            finally:
                self.busy = False
                self.queue.task_done()

    async def deliver(self, message: Message) -> None:
        from .senders import Permanent, RateLimited, describe

        closing = self.notifier.closing
        attempt = waits = 0
        while True:
            attempt += 1
            last_chance = closing.is_set()  # at shutdown: one attempt, no retry
            try:
                async with asyncio.timeout(self.sender.timeout):
                    await self.sender.send(message, self.notifier)
            except RateLimited as e:
                if not last_chance and waits < RATE_LIMITED_WAITS:
                    # The service's own pace, not a failure: wait as it asks, then try again.
                    waits += 1
                    attempt -= 1
                    delay = min(e.delay, RETRY_AFTER_MAX)
                    logger.info("%s: rate-limited (%s); sending again in %gs", self.label, e, delay)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await closing.wait()  # shutdown cuts the wait short
                    continue
                error: Exception = e
            except Exception as e:
                error = e
            else:
                self.notifier.count("sent")
                self.notifier.settled(message.marks)
                if self.failing:
                    logger.info(
                        "%s: notifications are delivered again (%d given up meanwhile)",
                        self.label,
                        self.gave_up,
                    )
                    self.failing, self.gave_up = False, 0
                return
            why = describe(error, self.sender.timeout)
            what = (
                f"job {message.jobs[0].get('id')}"
                if message.kind == "job"
                else f"a digest of {message.count} job(s)"
            )
            final = isinstance(error, Permanent) or attempt > self.retries or last_chance
            if not self.failing:
                self.failing = True
                logger.warning(
                    "%s: cannot deliver the notification for %s: %s%s",
                    self.label,
                    what,
                    why,
                    "" if final else f"; retrying up to {self.retries - attempt + 1} time(s)",
                )
            if final:
                self.gave_up += 1
                self.notifier.count("failed")
                if isinstance(error, Permanent) or attempt > self.retries:
                    # Given up for good: not tried again at the next start. (Cut short by
                    # a shutdown instead, a job settled at start is tried at the next.)
                    self.notifier.settled(message.marks)
                # Once per burst: the first message given up is logged, the rest are counted.
                level = logging.WARNING if self.gave_up == 1 else logging.DEBUG
                logger.log(
                    level,
                    "%s: gave up on the notification for %s after %d attempt(s): %s%s",
                    self.label,
                    what,
                    attempt,
                    why,
                    " (later ones given up are counted, not logged, until one is delivered)"
                    if self.gave_up == 1
                    else "",
                )
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.backoff * 2 ** (attempt - 1)):
                    await closing.wait()  # shutdown cuts the wait short


class Notifier:
    """Delivers the runner's notifications in the background; ``close`` at shutdown.

    ``stats`` gets ``notifications_sent``/``_failed``/``_dropped`` counted (``RunnerStats``
    has them), and ``changed`` is called after each count (the runner wakes its waiters).
    ``links``: runner.http's address as people reach it; each job's notification links to its
    ``/jobs/<id>`` there.
    """

    def __init__(
        self,
        stats: Counts | None = None,
        changed: Callable[[], None] | None = None,
        *,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self.stats: Counts = stats if stats is not None else NotifyStats()
        self._changed = changed
        self.queue_size = queue_size
        self.links: str | None = None
        self.closing = asyncio.Event()
        self.closed = False
        self._outboxes: dict[tuple[Any, ...], Outbox] = {}
        self._session: aiohttp.ClientSession | None = None
        self._hostname: str | None = None
        #: Jobs settled at start: destinations still to deliver (or give up), and what to call
        #: once none is left.
        self._marks: dict[str, tuple[int, Callable[[], None]]] = {}

    def job_ended(self, job: Job, state: JobState, notify: Notify) -> None:
        """File the notifications for a job that ended; returns at once, never raises."""
        try:
            timed_out = bool(job.meta.get("timed_out"))
            outcome = "timed_out" if state is JobState.failed and timed_out else state.value
            if outcome not in notify.on:
                return
            record = {**job.meta, "state": state.value, "timed_out": timed_out, "outcome": outcome}
            self._file(record, notify)
        except Exception:  # a notification must never fail a job
            logger.exception("could not file the notification for job %s", job.id)

    def settled_at_start(
        self, meta: dict[str, Any], notify: Notify, notified: Callable[[], None]
    ) -> bool:
        """File the notifications for a job the runner settled as it started (its record
        says ``after_restart``). ``notified`` is called once every destination has delivered
        its message or given up on it; not if one was dropped (the runner stopped first).
        False: ``on`` does not ask for this end, and nothing is filed."""
        outcome = str(meta.get("state"))
        if outcome not in notify.on:
            return False
        record = {k: v for k, v in meta.items() if k != NOTIFY_PENDING}
        record.update(timed_out=False, outcome=outcome, after_restart=True)
        job_id = str(meta.get("id"))
        self._marks[job_id] = (len(notify.destinations()), notified)
        self._file(record, notify, mark=job_id)
        return True

    def settled(self, marks: list[str]) -> None:
        """A message for these jobs was delivered or given up by one destination."""
        for job_id in marks:
            left, notified = self._marks.get(job_id, (0, None))
            if notified is None:
                continue
            if left > 1:
                self._marks[job_id] = (left - 1, notified)
                continue
            del self._marks[job_id]
            try:
                notified()
            except Exception:
                logger.exception("job %s: could not record its notification", job_id)

    def _file(self, record: dict[str, Any], notify: Notify, mark: str | None = None) -> None:
        if self.links is not None:
            record["link"] = f"{self.links}/jobs/{quote(str(record.get('id')), safe='')}"
        for spec in notify.destinations():
            self._outbox(spec, notify).offer(record, mark)

    def _outbox(self, spec: Webhook | Email, notify: Notify) -> Outbox:
        key = (spec.key(), notify.limit, notify.window, notify.retries, notify.retry_backoff)
        box = self._outboxes.get(key)
        if box is None:
            from .senders import EmailSender, WebhookSender

            sender: Sender = WebhookSender(spec) if isinstance(spec, Webhook) else EmailSender(spec)
            box = self._outboxes[key] = Outbox(self, sender, notify)
        return box

    def count(self, what: Literal["sent", "failed", "dropped"], n: int = 1) -> None:
        name = f"notifications_{what}"
        setattr(self.stats, name, getattr(self.stats, name) + n)
        if self._changed is not None:
            self._changed()

    def session(self) -> aiohttp.ClientSession:
        """One HTTP client for every webhook, made at the first one, closed by ``close``."""
        if self._session is None:
            import aiohttp

            self._session = aiohttp.ClientSession()
        return self._session

    async def local_hostname(self) -> str:
        """This host's name for SMTP's EHLO; looking it up may wait on DNS: not on the loop."""
        if self._hostname is None:
            self._hostname = await asyncio.to_thread(socket.getfqdn)
        return self._hostname

    async def close(self, grace: float) -> None:
        """Send what is pending for up to ``grace`` seconds (one attempt each, no retries),
        then drop the rest with a log line per destination."""
        if self.closed:
            return
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            grace = 0  # cancelled, not stopped: whoever cancels wants it over now
        self.closing.set()
        boxes = list(self._outboxes.values())
        try:
            for box in boxes:
                box.flush()  # a digest held for a window that would end after we are gone
            waiting = [b for b in boxes if b.busy or not b.queue.empty()]
            if waiting and grace > 0:
                joins = [asyncio.ensure_future(b.queue.join()) for b in waiting]
                try:
                    await asyncio.wait(joins, timeout=grace)
                finally:
                    for j in joins:
                        j.cancel()
        finally:
            self.closed = True
            tasks = []
            for box in boxes:
                left = box.queue.qsize() + box.busy
                if box.task is not None:
                    box.task.cancel()
                    tasks.append(box.task)
                if box.gave_up > 1:  # only the first was logged
                    logger.warning(
                        "%s: %d notification(s) given up since the last one delivered",
                        box.label,
                        box.gave_up,
                    )
                if left:
                    self.count("dropped", left)
                    logger.warning(
                        "%s: %d notification(s) not delivered within the %gs shutdown grace, "
                        "dropped",
                        box.label,
                        left,
                        grace,
                    )
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._session is not None:
                await self._session.close()
                self._session = None
