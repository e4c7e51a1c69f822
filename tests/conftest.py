"""Shared fixtures: a workspace on disk, runners with short timeouts, condition waits."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from meow_async import (
    BashRecipe,
    JobState,
    Pattern,
    PythonRecipe,
    Recipe,
    Runner,
    RunnerConfig,
    iter_jobs,
    read_meta,
)
from meow_async.model.index import JobIndex

# Generous: these bound a wait for a condition, they are not a timing claim.
WAIT = 30.0


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Mapping[str, Any]:
    """MEOW_TEST_LOOP=uvloop runs every async test on uvloop (the nox `tests_uvloop` session)."""
    if os.environ.get("MEOW_TEST_LOOP") == "uvloop":
        import uvloop

        return {"uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


@dataclass
class Workspace:
    root: Path
    base: Path
    jobs: Path

    def config(self, **overrides: Any) -> RunnerConfig:
        settings: dict[str, Any] = {
            "base_dir": self.base,
            "jobs_dir": self.jobs,
            "shutdown_timeout": 5.0,
            "kill_timeout": 2.0,
        }
        settings.update(overrides)
        return RunnerConfig(**settings)

    def runner(
        self, patterns: Iterable[Pattern] = (), recipes: Iterable[Recipe] = (), **overrides: Any
    ) -> Runner:
        return Runner(patterns, recipes, config=self.config(**overrides))

    def jobs_list(self) -> list[dict[str, Any]]:
        return list(iter_jobs(self.jobs))

    def as_killed(self, job_dir: Path) -> None:
        """The index row of ``job_dir`` as its ``job.json`` now says: what a runner killed at
        that moment leaves (a test that rewrites a job's files by hand calls this)."""
        index, _ = JobIndex.open(self.jobs, repair=False)
        try:
            index.put_metas([(read_meta(job_dir), job_dir)])
        finally:
            index.close()

    def write(self, rel: str, text: str = "x") -> Path:
        path = self.base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    base = tmp_path / "data"
    base.mkdir()
    return Workspace(root=tmp_path, base=base, jobs=tmp_path / "jobs")


def py_recipe(name: str = "py", script: str = "print(input_file)\n", **kw: Any) -> PythonRecipe:
    return PythonRecipe(name=name, script=script, **kw)


def sh_recipe(name: str = "sh", script: str = 'echo "$input_file"\n', **kw: Any) -> BashRecipe:
    return BashRecipe(name=name, script=script, **kw)


def finished(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [j for j in jobs if j["state"] in (JobState.done, JobState.failed)]


async def poll_until(
    predicate: Callable[[], bool], timeout: float = WAIT, interval: float = 0.02
) -> None:
    """Wait for a condition we can only observe from outside (files, another process)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def wait_until_sync(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    """The same for synchronous tests (subprocess CLI tests)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        time.sleep(0.02)


PYTHON = sys.executable
