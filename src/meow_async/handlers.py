"""Handlers turn an event into job directories: parameters, rendered script, metadata."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from .events import Event
from .jobs import PARAMS_FILE, Job, JobState, new_job_id, write_meta
from .templates import expand, keyword_values

__all__ = ["Handler"]


class Handler:
    """Writes one job directory per sweep point of the event's rule, under ``jobs_root``.

    All the file writing for one event happens in one worker thread, so the event loop never
    blocks on the disk and pays one thread hop per event rather than one per file.
    """

    def __init__(self, jobs_root: Path) -> None:
        self.jobs_root = jobs_root

    async def handle(self, event: Event) -> list[Job]:
        return await asyncio.to_thread(self.make_jobs, event)

    def make_jobs(self, event: Event) -> list[Job]:
        return [self._make_job(event, point) for point in event.rule.pattern.sweep_points()]

    def _make_job(self, event: Event, point: dict[str, int | float]) -> Job:
        rule = event.rule
        pattern, recipe = rule.pattern, rule.recipe
        job_id = new_job_id()
        job_dir = self.jobs_root / job_id
        job_dir.mkdir()
        path, rel_to = event.path, event.base
        if event.kind == "network":
            # The job keeps its own link to the message: the spool file can go as soon as
            # every rule has its jobs, and the job folder stays a complete record.
            path, rel_to = str(_adopt(Path(event.path), job_dir)), str(job_dir)
        keywords = keyword_values(path, event.base, job_id, rel_to=rel_to)
        outputs: dict[str, Any] = expand(dict(pattern.outputs), keywords)
        params: dict[str, Any] = {
            **expand(dict(recipe.parameters), keywords),
            **expand(dict(pattern.parameters), keywords),
            **outputs,
            **point,
            pattern.variable: path,
        }
        script = job_dir / f"script{recipe.suffix}"
        script.write_text(recipe.render(params), encoding="utf-8")
        params_file = job_dir / PARAMS_FILE
        params_file.write_text(json.dumps(params, indent=2) + "\n", encoding="utf-8")
        argv = recipe.command(script)
        meta: dict[str, Any] = {
            "id": job_id,
            "dir": str(job_dir),
            "rule": rule.name,
            "pattern": pattern.name,
            "recipe": recipe.name,
            "recipe_kind": recipe.kind,
            "event": event.to_dict(),
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
        }
        write_meta(job_dir, meta)
        env = {
            "MEOW_JOB_ID": job_id,
            "MEOW_JOB_DIR": str(job_dir),
            "MEOW_PARAMS": str(params_file),
            "MEOW_EVENT_PATH": path,
            "MEOW_BASE": event.base,
            "MEOW_PYTHON": sys.executable,
            "MEOW_RULE": rule.name,
        }
        return Job(id=job_id, dir=job_dir, argv=argv, env=env, meta=meta)


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
