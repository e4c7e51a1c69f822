"""Handlers turn an event into job directories: parameters, rendered script, metadata."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .model.events import Event
from .model.jobs import (
    META_FILE,
    PARAMS_FILE,
    Job,
    JobState,
    fsync_dir,
    job_id_for,
    new_job_id,
    write_meta,
)
from .model.templates import expand, keyword_values

__all__ = ["Handler"]


class Handler:
    """Writes one job directory per sweep point of the event's rule, under ``jobs_root``.

    All the file writing for one event happens in one worker thread, so the event loop never
    blocks on the disk and pays one thread hop per event rather than one per file.
    """

    def __init__(self, jobs_root: Path, *, durable: bool = False) -> None:
        self.jobs_root = jobs_root
        self.durable = durable
        self._making: set[str] = set()
        self._lock = threading.Lock()

    async def handle(self, event: Event) -> list[Job]:
        """The jobs this event makes; none for a trigger whose jobs already exist."""
        return await asyncio.to_thread(self.make_jobs, event)

    async def handle_many(self, events: list[Event]) -> list[list[Job] | Exception]:
        """Each event's jobs, or the error that kept them from being made: a burst's events
        in one thread hop."""
        return await asyncio.to_thread(self._make_many, events)

    def _make_many(self, events: list[Event]) -> list[list[Job] | Exception]:
        out: list[list[Job] | Exception] = []
        for event in events:
            try:
                out.append(self.make_jobs(event))
            except Exception as e:  # one event's disk error must not stop the others
                out.append(e)
        return out

    def make_jobs(self, event: Event) -> list[Job]:
        jobs = (self._make_job(event, point) for point in event.rule.pattern.sweep_points())
        return [job for job in jobs if job is not None]

    def _make_job(self, event: Event, point: dict[str, int | float]) -> Job | None:
        rule = event.rule
        job_id = job_id_for(event.key, rule.name, point) if event.key else new_job_id()
        with self._lock:
            if job_id in self._making:
                return None  # the same trigger is being handled right now
            self._making.add(job_id)
        try:
            return self._write_job(event, point, job_id)
        finally:
            with self._lock:
                self._making.discard(job_id)

    def _write_job(self, event: Event, point: dict[str, int | float], job_id: str) -> Job | None:
        rule = event.rule
        pattern, recipe = rule.pattern, rule.recipe
        job_dir = self.jobs_root / job_id
        try:
            job_dir.mkdir()
        except FileExistsError:
            if (job_dir / META_FILE).exists():
                return None  # made before (then the runner stopped, or a scan saw it again)
            shutil.rmtree(job_dir)  # half made when a runner was killed: make it again
            job_dir.mkdir()
        path, rel_to = event.path, event.base
        trigger: str = path
        if event.kind in ("network", "http"):
            # The job keeps its own link to the message: the spool file can go as soon as
            # every rule has its jobs, and the job folder stays a complete record.
            path, rel_to = str(_adopt(Path(event.path), job_dir)), str(job_dir)
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
        _write(script, recipe.render(params), self.durable)
        _write(params_file, json.dumps(params) + "\n", self.durable)  # one line: C encoder
        argv = recipe.command(script)
        env = {
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
            "event": event.to_dict()
            if event.kind not in ("network", "http")
            # The spool copy is gone once handled: point at the job's own.
            else {**event.to_dict(), "path": path, "received_as": event.path},
            "parameters": params,
            "outputs": outputs,
            "sweep": point,
            "argv": argv,
            "state": JobState.queued.value,
            "created": time.time(),
            "started": None,
            "finished": None,
            "exit_code": None,
            "error": None,
            "attempts": [],
            "timeout": recipe.timeout,
            "env": env,
            # How its process starts: a fork of the warm interpreter, or a new one.
            "start": "fork" if getattr(recipe, "warm", False) else "spawn",
            "preload": list(getattr(recipe, "preload", ())),
            "conductor": recipe.conductor,
            "resources": dict(recipe.resources),
        }
        write_meta(job_dir, meta, durable=self.durable)  # last: its presence means "made"
        if self.durable:
            fsync_dir(self.jobs_root)  # the job folder's own entry
        return Job(id=job_id, dir=job_dir, argv=argv, env=env, meta=meta, durable=self.durable)


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


def _write(path: Path, text: str, durable: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        data = text.encode()
        while data:
            data = data[os.write(fd, data) :]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
