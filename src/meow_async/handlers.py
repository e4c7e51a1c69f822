"""Handlers turn an event into job directories: parameters, rendered script, metadata."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .model.config import DEFAULT_MAX_OUTPUT
from .model.events import Event
from .model.index import JobIndex
from .model.jobs import (
    META_FILE,
    PARAMS_FILE,
    Job,
    JobState,
    day_of,
    fsync_dir,
    job_id_for,
    new_job_id,
    read_meta,
    write_meta,
)
from .model.precompiled import precompile
from .model.recipes import JobEnv
from .model.templates import expand, keyword_values

__all__ = ["Handler", "Refused"]


class Refused(Exception):
    """An event that can never become a job: the input itself is at fault (not the disk), so
    trying again at the next start would fail the same way. It is refused once."""


class Handler:
    """Writes one job directory per sweep point of the event's rule, under ``jobs_root``.

    All the file writing for one event (or a burst of them) happens in one worker thread, so
    the event loop never blocks on the disk and pays one thread hop per burst rather than one
    per file. The jobs' index rows ride the same hop: committed once for the burst, before
    any folder is made (see ``model/index.py`` for why that order).
    """

    def __init__(
        self,
        jobs_root: Path,
        *,
        durable: bool = False,
        max_output: int = DEFAULT_MAX_OUTPUT,
        index: JobIndex | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.jobs_root = jobs_root
        self.durable = durable
        self.max_output = max_output  # for recipes that set none
        self.index = index
        #: When a job is made (its ``created``, and so its day folder).
        self.clock = clock
        self._making: set[str] = set()
        self._lock = threading.Lock()
        self._days: set[str] = set()  # day folders known to exist

    async def handle(self, event: Event) -> list[Job]:
        """The jobs this event makes; none for a trigger whose jobs already exist."""
        return await asyncio.to_thread(self.make_jobs, event)

    async def handle_many(self, events: list[Event]) -> list[list[Job] | Exception]:
        """Each event's jobs, or the error that kept them from being made: a burst's events
        in one thread hop."""
        return await asyncio.to_thread(self._make_many, events)

    def make_jobs(self, event: Event) -> list[Job]:
        (result,) = self._make_many([event])
        if isinstance(result, Exception):
            raise result
        return result

    def _make_many(self, events: list[Event]) -> list[list[Job] | Exception]:
        plans: list[list[_Plan] | Exception] = []
        for event in events:
            try:
                plans.append(self._plan(event))
            except Exception as e:  # one event's error must not stop the others
                plans.append(e)
        todo = [p for ps in plans if not isinstance(ps, Exception) for p in ps]
        try:
            if self.index is not None and todo:
                self.index.put_metas([(p.meta, p.dir) for p in todo], new=True)
        except Exception as e:  # the index cannot be written: make nothing, keep the events
            self._release(todo)
            return [e for _ in events]
        out: list[list[Job] | Exception] = []
        for ps in plans:
            if isinstance(ps, Exception):
                out.append(ps)
                continue
            made: list[Job] = []
            try:
                for i, plan in enumerate(ps):
                    try:
                        job = self._write_job(plan)
                    except BaseException:
                        self._forget(ps[i:])
                        raise
                    if job is not None:
                        made.append(job)
            except Exception as e:
                out.append(e)
            else:
                out.append(made)
            finally:
                self._release(ps)
        return out

    def _plan(self, event: Event) -> list[_Plan]:
        """The event's jobs not made yet, each with its folder and metadata (nothing written)."""
        plans: list[_Plan] = []
        cause = self._cause(event)
        try:
            for point in event.rule.pattern.sweep_points():
                plan = self._plan_job(event, point, cause)
                if plan is not None:
                    plans.append(plan)
        except BaseException:
            self._release(plans)
            raise
        return plans

    def _cause(self, event: Event) -> dict[str, str] | None:
        """The job that declared this event's file among its outputs (lineage), if the index
        can say so exactly: one lookup by path."""
        if self.index is None or event.kind != "file":
            return None
        found = self.index.declared_by(event.path, event.changed_at or event.time)
        return None if found is None else {"job": found[0], "rule": found[1]}

    def _plan_job(
        self, event: Event, point: dict[str, int | float], cause: dict[str, str] | None
    ) -> _Plan | None:
        rule = event.rule
        job_id = job_id_for(event.key, rule.name, point) if event.key else new_job_id()
        with self._lock:
            if job_id in self._making:
                return None  # the same trigger is being handled right now
            self._making.add(job_id)
        try:
            if self._made_before(job_id):
                with self._lock:
                    self._making.discard(job_id)
                return None
            try:
                return self._meta(event, point, job_id, cause)
            except OSError:
                raise  # the disk: the event is kept and tried again at the next start
            except Exception as e:  # the input itself: trying again would fail the same way
                raise Refused(f"{type(e).__name__}: {e}") from e
        except BaseException:
            with self._lock:
                self._making.discard(job_id)
            raise

    def _made_before(self, job_id: str) -> bool:
        """The index knows the job (then the runner stopped, or a scan saw its trigger again),
        or, with no index, its folder is in today's day folder or the flat layout's."""
        if self.index is not None:
            return self.index.folder_of(job_id) is not None
        today = self.jobs_root / day_of(self.clock()) / job_id
        return (today / META_FILE).exists() or (self.jobs_root / job_id / META_FILE).exists()

    def _meta(
        self,
        event: Event,
        point: dict[str, int | float],
        job_id: str,
        cause: dict[str, str] | None = None,
    ) -> _Plan:
        rule = event.rule
        pattern, recipe = rule.pattern, rule.recipe
        created = self.clock()
        day = day_of(created)
        job_dir = self.jobs_root / day / job_id
        path, rel_to = event.path, event.base
        trigger: str = path
        if event.kind in ("network", "http"):
            # The job keeps its own link to the message: the spool file can go as soon as
            # every rule has its jobs, and the job folder stays a complete record.
            # (linked there when the folder is made, in _write_job)
            path, rel_to = str(job_dir / Path(event.path).name), str(job_dir)
            trigger = path
        elif event.kind == "time":
            # No file: the tick's time is what triggered it; its folder stands in for a path.
            path = rel_to = str(job_dir)
            trigger = str(event.extras.get("scheduled_time"))
        keywords = keyword_values(path, event.base, job_id, rel_to=rel_to)
        outputs: dict[str, Any] = expand(dict(pattern.outputs), keywords)
        params: dict[str, Any] = {
            **expand(dict(recipe.parameters), keywords),
            **expand(dict(pattern.parameters), keywords),
            # From the request (route parts, query, headers): data, never templates.
            **(event.extras.get("parameters") or {}),
            **outputs,
            **point,
            pattern.variable: trigger,
        }
        script = job_dir / f"script{recipe.suffix}"
        params_file = job_dir / PARAMS_FILE
        argv = recipe.command(script)
        policy = JobEnv.of(recipe.env)
        env = {
            **{k: str(v) for k, v in (policy.set if policy is not None else {}).items()},
            "MEOW_JOB_ID": job_id,
            "MEOW_JOB_DIR": str(job_dir),
            "MEOW_PARAMS": str(params_file),
            "MEOW_EVENT_PATH": path,
            "MEOW_BASE": event.base,
            "MEOW_PYTHON": sys.executable,
            "MEOW_RULE": rule.name,
        }
        meta: dict[str, Any] = {
            "id": job_id,
            "dir": str(job_dir),
            "rule": rule.name,
            "pattern": pattern.name,
            "recipe": recipe.name,
            "recipe_kind": recipe.kind,
            # What it was made under: a reload later changes neither (its script is written).
            "workflow_version": rule.version,
            "recipe_hash": recipe.digest,
            "event": event.to_dict()
            if event.kind not in ("network", "http")
            # The spool copy is gone once handled: point at the job's own.
            else {**event.to_dict(), "path": path, "received_as": event.path},
            "parameters": params,
            "outputs": outputs,
            "sweep": point,
            "argv": argv,
            "state": JobState.queued.value,
            "created": created,
            "started": None,
            "finished": None,
            "exit_code": None,
            "error": None,
            "attempts": [],
            "timeout": recipe.timeout,
            "max_output": recipe.max_output or self.max_output,
            "env": env,
            # What of the runner's environment it gets besides: all (null), or these names.
            "env_keep": None if policy is None or policy.inherit else list(policy.keep),
            # How its process starts: a fork of the warm interpreter, or a new one.
            "start": "fork" if getattr(recipe, "warm", False) else "spawn",
            "preload": list(getattr(recipe, "preload", None) or ()),
            # Whether its process reports what it imported, for the fork server to learn.
            "learn_imports": bool(getattr(recipe, "learns", False)),
            "conductor": recipe.conductor,
            "resources": dict(recipe.resources),
            # The earlier job that declared this job's trigger among its outputs (lineage).
            "caused_by": cause,
        }
        return _Plan(
            event=event,
            dir=job_dir,
            day=day,
            meta=meta,
            script=script,
            params=params,
        )

    def _write_job(self, plan: _Plan) -> Job | None:
        job_dir = plan.dir
        if plan.day not in self._days:
            (self.jobs_root / plan.day).mkdir(parents=True, exist_ok=True)
            if self.durable:
                fsync_dir(self.jobs_root)
            self._days.add(plan.day)
        try:
            try:
                job_dir.mkdir()
            except FileNotFoundError:  # its day folder emptied and removed by retention
                job_dir.parent.mkdir(parents=True, exist_ok=True)
                job_dir.mkdir()
        except FileExistsError:
            if (job_dir / META_FILE).exists():
                # Made before, though the index did not know it: keep what the folder says.
                if self.index is not None:
                    with contextlib.suppress(OSError, ValueError):
                        self.index.put_metas([(read_meta(job_dir), job_dir)])
                return None
            shutil.rmtree(job_dir)  # half made when a runner was killed: make it again
            job_dir.mkdir()
        event = plan.event
        try:
            if event.kind in ("network", "http"):
                _adopt(Path(event.path), job_dir)
            # Rendered here, not when planned: a sweep of 100,000 points holds no 100,000
            # scripts. A file name that is not UTF-8 is a str with surrogate escapes (as
            # os.listdir gives it): in a Bash script's literal it goes back to its own bytes.
            script = event.rule.recipe.render(plan.params).encode("utf-8", "surrogateescape")
            _write(plan.script, script, self.durable)
            _write(job_dir / PARAMS_FILE, (json.dumps(plan.params) + "\n").encode(), self.durable)
            write_meta(job_dir, plan.meta, durable=self.durable)  # last: its presence: "made"
        except OSError:
            raise  # the disk: the event is kept and tried again at the next start
        except Exception as e:  # the input itself: refused once (its index row goes too)
            shutil.rmtree(job_dir, ignore_errors=True)  # half made
            raise Refused(f"{type(e).__name__}: {e}") from e
        if self.durable:
            fsync_dir(job_dir.parent)  # the job folder's own entry
        meta, env = plan.meta, plan.meta["env"]
        return Job(
            id=meta["id"],
            dir=job_dir,
            argv=meta["argv"],
            env=env,
            meta=meta,
            durable=self.durable,
            index=self.index,
            precompiled=precompile(script, str(plan.script)) if _spawned_here(meta) else None,
        )

    def _forget(self, plans: list[_Plan]) -> None:
        """These jobs were not made (a disk error): their rows go, the event is kept."""
        if self.index is not None and plans:
            with contextlib.suppress(Exception):
                self.index.remove([str(p.meta["id"]) for p in plans])

    def _release(self, plans: list[_Plan]) -> None:
        with self._lock:
            for p in plans:
                self._making.discard(str(p.meta["id"]))


@dataclass(slots=True, kw_only=True)
class _Plan:
    """A job about to be made: everything decided, nothing written yet."""

    event: Event
    dir: Path
    day: str
    meta: dict[str, Any]
    script: Path
    params: dict[str, Any]


def _adopt(payload: Path, job_dir: Path) -> Path:
    """Hard-link (or, across file systems, copy) a received message into the job folder."""
    local = job_dir / payload.name
    try:
        os.link(payload, local)
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        shutil.copyfile(payload, local)
    return local


def _spawned_here(meta: dict[str, Any]) -> bool:
    """A Python job that starts as a new interpreter, this runner's own (a warm one is forked
    from an interpreter that has compiled before; another Python has other bytecode)."""
    return (
        meta["recipe_kind"] == "python"
        and (meta["start"] == "spawn" or meta["env_keep"] is not None)
        and meta["conductor"] in (None, "local")
        and meta["argv"][0] == sys.executable
    )


def _write(path: Path, data: bytes, durable: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        while data:
            data = data[os.write(fd, data) :]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
