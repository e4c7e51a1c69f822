"""The runner's own HTTP endpoints (``runner.http``): ``/healthz``, ``/metrics``, ``/jobs``,
``/status``, and ``POST /jobs/{id}/rerun`` and ``/jobs/{id}/cancel`` for ``meow-async jobs``;
``GET /`` and ``/view/...`` are the live view's (``view.py``).

Views of a running runner for operators and their tools, and two requests that change a job.
Metrics are collected when scraped, from counters the runner keeps anyway: nothing is added to
the path of an event. With a token (``runner.http.token_env`` / ``token_file``) every path but
``/healthz`` needs it as a bearer token, the two POSTs included; ``/healthz`` stays open for
load balancers and says only "ok" or not. Without one, the POSTs are accepted from this
machine only (a loopback address).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from ..conductors.process_log import current
from ..exceptions import MeowError
from ..model.config import RunnerConfig
from ..model.index import JobIndex, Select
from ..model.jobs import Job, JobState, iter_jobs, read_meta
from ..model.rules import Rule
from ..model.schedule import tick_name
from ..model.triggers import trigger_text
from ..model.workflow import Workflow
from ..monitors import HttpMonitor, Monitor, NetworkMonitor, TimeMonitor
from ..monitors.connection import peer_log
from ..monitors.filtering import Filtering
from ..monitors.http_server import http_log
from .bookkeeping import BUCKETS, Durations, RunnerStats
from .feed import Feed
from .live import LiveFile
from .reload import Outcome, Reloads

if TYPE_CHECKING:
    from .view import LiveView

__all__ = ["Durations", "Endpoints", "Observed", "trigger_text"]

#: Why the runner closes connections (``meow_connections_closed_total``'s ``reason``).
CLOSE_REASONS = ("cap", "tls", "hello", "idle", "header", "body")


class Observed(Protocol):
    """**Protocol:** what the endpoints read of the runner they serve (a ``Runner``)."""

    config: RunnerConfig
    jobs_dir: Path
    stats: RunnerStats
    events_by: Counter[tuple[str, str]]
    durations: Durations
    jobs_running: dict[str, tuple[Job, float]]
    monitors: list[Monitor]
    network: NetworkMonitor
    http: HttpMonitor
    time: TimeMonitor
    filtering: Filtering
    live: LiveFile
    started: asyncio.Event
    index: JobIndex | None
    feed: Feed
    workflow: Workflow
    reloads: Reloads | None

    @property
    def stopping(self) -> bool: ...

    @property
    def rules(self) -> dict[str, Rule]: ...

    def ports(self) -> dict[str, int]: ...

    def queues(self) -> dict[str, asyncio.Queue[Any]]: ...

    async def rerun(self, job_id: str) -> dict[str, Any]: ...

    async def cancel_queued(self, job_id: str) -> None: ...

    async def reload(self, why: str = ...) -> Outcome: ...


class _Collector:
    def __init__(self, runner: Observed) -> None:
        self.runner = runner

    def collect(self) -> Iterator[Metric]:
        r, s = self.runner, self.runner.stats
        events = CounterMetricFamily(
            "meow_events", "Events handled, by monitor and rule", labels=["monitor", "rule"]
        )
        for (monitor, rule), n in sorted(r.events_by.items()):
            events.add_metric([monitor, rule], n)
        yield events
        filtered = CounterMetricFamily(
            "meow_events_filtered",
            "Events a rule's when: filter rejected (or failed on), by rule: they made no job",
            labels=["rule"],
        )
        for rule, n in sorted(r.filtering.filtered.items()):
            filtered.add_metric([rule], n)
        yield filtered
        ticks = GaugeMetricFamily(
            "meow_schedule_next_tick_seconds",
            "Seconds until each time rule's next tick",
            labels=["rule"],
        )
        now = time.time()
        for rule, tick in sorted(r.time.next_ticks().items()):
            ticks.add_metric([rule], max(0.0, tick.timestamp() - now))
        yield ticks
        jobs = CounterMetricFamily("meow_jobs_ended", "Jobs ended, by state", labels=["state"])
        for state in ("done", "failed", "skipped"):
            jobs.add_metric([state], getattr(s, state))
        yield jobs
        yield CounterMetricFamily("meow_jobs_made", "Job folders made", value=s.jobs)
        if r.index is not None:
            kept = GaugeMetricFamily(
                "meow_jobs_kept",
                "Jobs in the jobs folder (all runs, less those retention removed), by rule and "
                "the state their job.json last recorded (a running job counts as queued)",
                labels=["rule", "state"],
            )
            with contextlib.suppress(sqlite3.Error):
                for (rule, state), n in sorted(r.index.counts().items()):
                    kept.add_metric([rule, state], n)
            yield kept
        yield GaugeMetricFamily("meow_jobs_running", "Jobs running now", value=s.running)
        yield CounterMetricFamily("meow_job_retries", "Failed jobs queued again", value=s.retries)
        yield CounterMetricFamily(
            "meow_jobs_removed", "Finished jobs removed by runner.retention", value=s.removed
        )
        yield CounterMetricFamily(
            "meow_handler_errors", "Events that could not make their jobs", value=s.handler_errors
        )
        depth = GaugeMetricFamily("meow_queue_depth", "Items waiting, by queue", labels=["queue"])
        for name, queue in r.queues().items():
            depth.add_metric([name], queue.qsize())
        waiting, size = r.network.backlog()
        depth.add_metric(["backlog"], waiting)  # accepted messages waiting in the journal
        yield depth
        yield GaugeMetricFamily(
            "meow_backlog_bytes",
            "Bytes of the accepted messages waiting in the spool journal for the events queue",
            value=size,
        )
        buckets, total = [], 0
        for bound, n in zip([*map(str, BUCKETS), "+Inf"], r.durations.counts, strict=True):
            total += n
            buckets.append((bound, total))
        yield HistogramMetricFamily(
            "meow_job_duration_seconds",
            "Time from a job's start to its end",
            buckets=buckets,
            sum_value=r.durations.sum,
        )
        yield CounterMetricFamily(
            "meow_spooled_bytes",
            "Bytes of accepted network messages and HTTP request bodies",
            value=r.network.spooled_bytes,
        )
        closed = CounterMetricFamily(
            "meow_connections_closed",
            "Network and HTTP connections closed by the runner, by why: cap (over a network "
            "listener's max_waiting, or an HTTP server's max_connections), tls (handshake "
            "failed), hello (TLS on a plain port), idle (idle_timeout), header (HTTP "
            "header_timeout), body (HTTP body_timeout or body_min_rate)",
            labels=["reason"],
        )
        for reason in CLOSE_REASONS:
            closed.add_metric([reason], peer_log.counts[reason] + http_log.counts[reason])
        yield closed
        answered = CounterMetricFamily(
            "meow_http_responses",
            "Requests to HTTP patterns, by the status they were answered",
            labels=["status"],
        )
        for status, n in sorted(r.http.responses.items()):
            answered.add_metric([str(status)], n)
        yield answered
        notified = CounterMetricFamily(
            "meow_notifications",
            "Notification messages (webhook or email) by outcome: sent, failed (given up after "
            "retries), dropped (queue full or shutdown)",
            labels=["outcome"],
        )
        for outcome in ("sent", "failed", "dropped"):
            notified.add_metric([outcome], getattr(s, f"notifications_{outcome}"))
        yield notified


class Endpoints:
    """The answers to ``GET /healthz``, ``/metrics``, ``/jobs``, ``/jobs/{id}`` and ``/status``,
    served by the HTTP monitor on ``runner.http``'s host and port (alone there, or beside HTTP
    patterns' routes on the same server)."""

    PATHS = ("/healthz", "/metrics", "/jobs", "/status", "/reload")
    #: ``POST /jobs/{id}/<action>``.
    ACTIONS = ("rerun", "cancel")

    def __init__(self, runner: Observed, token: str | None = None) -> None:
        self.runner = runner
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Collector(runner))
        self._token = None if token is None else token.encode()
        self._view: LiveView | None = None

    @property
    def needs_token(self) -> bool:
        """Whether a request needs runner.http's token (the live view's pages too)."""
        return self._token is not None

    @property
    def view(self) -> LiveView:
        """The live view, made at its first page: its modules (and Jinja2, at its first
        render) are not imported by a runner nobody looks at, nor by ``validate``."""
        if self._view is None:
            from .view import LiveView

            self._view = LiveView(self.runner, self._token, trigger_text)
        return self._view

    async def answer(self, request: web.BaseRequest) -> web.StreamResponse | None:
        """The answer to an operator's request; None for a path that is not one of ours."""
        path = request.path
        if path == "/" or path.startswith("/view/"):
            return await self.view.answer(request)
        if path not in self.PATHS and not path.startswith("/jobs/"):
            return None
        action = path.rpartition("/")[2]
        if path.startswith("/jobs/") and path.count("/") == 3 and action in self.ACTIONS:
            return await self.job_action(request, path.split("/")[2], action)
        if path == "/reload":
            return await self.reload(request)
        if request.method != "GET":
            return web.json_response(
                {"error": f"{request.method} is not allowed on {path}"},
                status=405,
                headers={"Allow": "GET"},
            )
        if path == "/healthz":
            return self.healthz()
        refused = self.allowed(request, changes=False)
        if refused is not None:
            return refused
        if path == "/metrics":
            return self.metrics()
        if path == "/jobs":
            return await self.jobs(request)
        if path == "/status":
            return web.json_response(self.status())
        return await self.job(path.removeprefix("/jobs/"))

    def allowed(self, request: web.BaseRequest, *, changes: bool = True) -> web.Response | None:
        """Whether ``request`` may be answered: None if so, else the refusal. The one check
        every request but ``/healthz`` passes. With runner.http's token, the request must
        carry it (``Authorization: Bearer``), from wherever it comes; without one, views are
        open and a request that ``changes`` a job must come from this machine (a loopback
        address)."""
        if self._token is not None:
            if self._authorized(request):
                return None
            return web.json_response(
                {"error": f"{request.path} needs runner.http's bearer token"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="meow_async runner"'},
            )
        if not changes:
            return None
        peer = request.transport.get_extra_info("peername") if request.transport else None
        host = peer[0] if isinstance(peer, tuple) and peer else ""
        if isinstance(host, str) and (
            host.startswith("127.") or host in ("::1", "::ffff:127.0.0.1")
        ):
            return None
        return web.json_response(
            {"error": "jobs can be rerun or cancelled from the runner's own machine only"},
            status=403,
        )

    async def job_action(self, request: web.BaseRequest, job_id: str, action: str) -> web.Response:
        """``POST /jobs/{id}/rerun``: queue a finished job again; ``/cancel``: a queued job
        is recorded cancelled instead of started (a running one is signalled by the CLI)."""
        if request.method != "POST":
            return web.json_response(
                {"error": f"{request.method} is not allowed on {request.path}"},
                status=405,
                headers={"Allow": "POST"},
            )
        refused = self.allowed(request)
        if refused is not None:
            return refused
        try:
            if action == "rerun":
                meta = await self.runner.rerun(job_id)
                return web.json_response({"id": job_id, "state": meta.get("state")}, status=202)
            await self.runner.cancel_queued(job_id)
            return web.json_response({"id": job_id, "cancelled": True}, status=202)
        except KeyError:
            return web.json_response({"error": f"no job {job_id}"}, status=404)
        except MeowError as e:
            return web.json_response({"error": str(e)}, status=409)

    async def reload(self, request: web.BaseRequest) -> web.Response:
        """``POST /reload``: read the workflow file again (``meow-async reload``); 200 with
        what changed, or 409 with the problems when it is refused."""
        if request.method != "POST":
            return web.json_response(
                {"error": f"{request.method} is not allowed on {request.path}"},
                status=405,
                headers={"Allow": "POST"},
            )
        refused = self.allowed(request)
        if refused is not None:
            return refused
        try:
            outcome = await self.runner.reload("meow-async reload")
        except MeowError as e:
            return web.json_response({"error": str(e)}, status=409)
        return web.json_response(
            outcome.as_json(), status=409 if outcome.result == "refused" else 200
        )

    def monitors(self) -> dict[str, str]:
        """What each monitor does now: ``live`` (watching for its rules), ``idle`` (no rule
        of its kind: nothing to watch) or ``starting`` (a watch or port not live yet)."""
        out = {}
        for m in self.runner.monitors:
            active = getattr(m, "active", None)
            if active is not None and not active():
                out[m.name] = "idle"
            else:
                out[m.name] = "live" if m.ready.is_set() else "starting"
        return out

    def _authorized(self, request: web.BaseRequest) -> bool:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        token = self._token
        return (
            token is not None
            and scheme.lower() == "bearer"
            and hmac.compare_digest(value.strip().encode(), token)
        )

    def healthz(self) -> web.Response:
        r = self.runner
        live = self.monitors()
        ok = r.started.is_set() and not r.stopping and "starting" not in live.values()
        status = "ok" if ok else ("stopping" if r.stopping else "starting")
        return web.json_response({"status": status, "monitors": live}, status=200 if ok else 503)

    def status(self) -> dict[str, Any]:
        """What the runner is doing now, in one answer, from what it keeps in memory (no job
        folder is read): ``meow-async status`` shows it."""
        from .. import __version__  # the package is imported by now; at module level, a cycle

        r, s = self.runner, self.runner.stats
        now = time.time()
        live = self.monitors()
        ok = r.started.is_set() and not r.stopping and "starting" not in live.values()
        by_rule: dict[str, int] = {}
        by_monitor: dict[str, int] = {}
        for (monitor, rule), n in r.events_by.items():
            by_rule[rule] = by_rule.get(rule, 0) + n
            by_monitor[monitor] = by_monitor.get(monitor, 0) + n
        ports = r.ports()
        ticks = r.time.next_ticks()
        running = []
        for job, handed in sorted(r.jobs_running.values(), key=lambda jt: jt[1]):
            started = job.meta.get("started")
            since = started if isinstance(started, int | float) else handed
            running.append({"id": job.id, "rule": job.rule, "started": since, "age": now - since})
        started_at = r.live.started
        return {
            "status": "ok" if ok else ("stopping" if r.stopping else "starting"),
            "pid": os.getpid(),
            "version": __version__,
            "started": started_at,
            "uptime": None if started_at is None else now - started_at,
            "base_dir": str(r.config.base_dir.absolute()),
            "jobs_dir": str(r.jobs_dir),
            "max_jobs": r.config.max_jobs,
            "workflow": None if r.reloads is None else r.reloads.state(),
            "monitors": live,
            "rules": [
                {
                    "name": name,
                    "trigger": trigger_text(rule.pattern, ports.get(name)),
                    "recipe": rule.recipe.name,
                    "recipe_kind": rule.recipe.kind,
                    **(_tick(ticks[name], now) if name in ticks else {}),
                }
                for name, rule in r.rules.items()
            ],
            "events": {
                "total": s.events,
                "by_rule": by_rule,
                "by_monitor": by_monitor,
                "filtered": dict(sorted(r.filtering.filtered.items())),
            },
            "jobs": {
                "made": s.jobs,
                "running": s.running,
                "done": s.done,
                "failed": s.failed,
                "skipped": s.skipped,
                "retries": s.retries,
                "left_queued": s.left_queued,
                "handler_errors": s.handler_errors,
            },
            "running": running,
            "queues": {
                **{name: q.qsize() for name, q in r.queues().items()},
                "backlog": r.network.backlog()[0],
            },
            "kept": self._kept(),
        }

    def _kept(self) -> dict[str, int] | None:
        """The jobs folder's jobs by state, all runs (the index's counts: microseconds)."""
        index = self.runner.index
        if index is None:
            return None
        out: dict[str, int] = {}
        with contextlib.suppress(sqlite3.Error):
            for (_, state), n in index.counts().items():
                out[state] = out.get(state, 0) + n
        return dict(sorted(out.items()))

    def metrics(self) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def jobs(self, request: web.BaseRequest) -> web.Response:
        q = request.query
        state, rule = q.get("state"), q.get("rule")
        if state is not None and state not in {s.value for s in JobState}:
            return web.json_response(
                {"error": f"unknown state {state!r}: one of {', '.join(JobState)}"}, status=400
            )
        try:
            limit = int(q["limit"]) if "limit" in q else None
        except ValueError:
            return web.json_response({"error": "limit must be a whole number"}, status=400)

        def read() -> list[dict[str, Any]]:
            return _listed(self.runner.jobs_dir, state, rule, limit)

        return web.json_response({"jobs": await asyncio.to_thread(read)})

    async def job(self, job_id: str) -> web.Response:
        if not job_id or "/" in job_id or job_id.startswith("."):
            return web.json_response({"error": f"no job {job_id}"}, status=404)
        jobs_dir = self.runner.jobs_dir

        def read() -> dict[str, Any] | None:
            index = JobIndex.read(jobs_dir)
            folder = None
            downstream: list[str] = []
            if index is not None:
                try:
                    folder = next((f for i, f in index.find(job_id) if i == job_id), None)
                    downstream = [r.id for r in index.downstream(job_id)]
                finally:
                    index.close()
            path = jobs_dir / (folder or job_id)
            try:
                meta = current({**read_meta(path), "dir": str(path)})
            except (OSError, ValueError):
                return None
            # Lineage: the job that declared its trigger, and the jobs its outputs triggered.
            cause = meta.get("caused_by")
            meta["upstream"] = [cause["job"]] if isinstance(cause, dict) and "job" in cause else []
            meta["downstream"] = downstream
            return meta

        meta = await asyncio.to_thread(read)
        if meta is None:
            return web.json_response({"error": f"no job {job_id}"}, status=404)
        return web.json_response(meta)


def _tick(tick: datetime, now: float) -> dict[str, Any]:
    return {"next_tick": tick_name(tick), "next_tick_in": tick.timestamp() - now}


def _listed(
    jobs_dir: Path, state: str | None, rule: str | None, limit: int | None
) -> list[dict[str, Any]]:
    """``/jobs``: each job's record as of now, oldest first (the newest ``limit``): the rows
    from the index, then only those rows' folders read."""
    index = JobIndex.read(jobs_dir)
    if index is None:
        out = []
        for meta in iter_jobs(jobs_dir):
            meta = current(meta)
            if (state is None or meta.get("state") == state) and (
                rule is None or meta.get("rule") == rule
            ):
                out.append(meta)
        return out[-limit:] if limit else out
    try:
        sel = Select(rules=frozenset([rule]) if rule else frozenset())
        if state in (None, JobState.skipped):  # a job.json in these states is as it is
            rows = index.select(
                replace(sel, states=frozenset([state]) if state else sel.states, tail=limit)
            )
        else:  # a queued job may have started or ended since: see its process.log
            direct = {state} - {JobState.queued, JobState.running}
            rows = index.select(sel, only=direct) if direct else []
            rows += index.select(sel, only=(JobState.queued, JobState.running))
            rows.sort(key=lambda r: (r.created, r.id))
    finally:
        index.close()
    out = []
    for r in rows:
        path = jobs_dir / r.folder
        try:
            meta = current({**read_meta(path), "dir": str(path)})
        except (OSError, ValueError):
            continue  # removed since (prune, retention)
        if state is None or meta.get("state") == state:
            out.append(meta)
    return out[-limit:] if limit else out
