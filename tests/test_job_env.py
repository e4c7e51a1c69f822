"""What of the runner's environment a job gets: all of it by default, or what ``env:`` keeps.

The runner here has a "secret" in its environment; each job writes out what it sees, both
``os.environ`` (or ``env``) and the kernel's ``/proc/self/environ`` (what the process was
started with: a warm fork would still show the runner's there, which is why a recipe that
does not inherit starts as a new interpreter).

Real runners, real processes; every wait is on a condition with a timeout.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from meow_async import (
    ConfigError,
    FilePattern,
    NotebookRecipe,
    Recipe,
    WorkflowFileError,
    load_workflow,
)

from .conftest import WAIT, Workspace, py_recipe, sh_recipe

#: Writes what the job's process sees: its environment, and the one it was started with.
SEES_PY = """\
import json, os
started = dict(
    line.split("=", 1)
    for line in open("/proc/self/environ").read().split("\\0")
    if "=" in line
)
json.dump({"env": dict(os.environ), "started": started}, open("seen.json", "w"))
"""
SEES_SH = "env -0 > env.bin\n"

RESTRICTED = ["TEST_KEPT", "TEST_LC_*"]


def seen(job: dict[str, Any]) -> dict[str, Any]:
    """What the job saw; for a Python job, ``started`` is its /proc/self/environ (Python adds
    LC_CTYPE to its own environment where no locale is set: PEP 538)."""
    folder = Path(job["dir"])
    if (folder / "env.bin").exists():
        pairs = (v.split("=", 1) for v in (folder / "env.bin").read_text().split("\0") if v)
        env = dict(pairs)
        return {"env": env, "started": env}
    data: dict[str, Any] = json.loads((folder / "seen.json").read_text())
    return data


@pytest.fixture
def runner_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SECRET_TOKEN", "s3cret")
    monkeypatch.setenv("TEST_KEPT", "kept")
    monkeypatch.setenv("TEST_LC_A", "a")
    monkeypatch.setenv("TEST_LC_B", "b")


@pytest.mark.usefixtures("runner_env")
@pytest.mark.parametrize("containment", ["auto", "none"])
async def test_a_job_gets_the_runner_s_environment_or_what_its_recipe_keeps(
    ws: Workspace, containment: str
) -> None:
    restricted = {"inherit": False, "keep": RESTRICTED, "set": {"OMP_NUM_THREADS": 1}}
    recipes: list[Recipe] = [
        py_recipe("warm", SEES_PY),  # the default: everything
        py_recipe("warm_set", SEES_PY, env={"set": {"OMP_NUM_THREADS": 1}}),
        py_recipe("kept", SEES_PY, env=RESTRICTED),  # a list: only these
        py_recipe("kept_spawned", SEES_PY, env=restricted, fork=False),
        sh_recipe("sh_kept", SEES_SH, env=RESTRICTED),
        sh_recipe("sh", SEES_SH),
    ]
    patterns = [FilePattern(name=r.name, glob=f"*.{r.name}", recipe=r.name) for r in recipes]
    async with ws.runner(patterns, recipes, containment=containment, max_jobs=6) as r:
        for recipe in recipes:
            ws.write(f"a.{recipe.name}")
        async with asyncio.timeout(WAIT):
            await r.wait_for(lambda s: s.finished >= len(recipes))
    jobs = {j["rule"]: j for j in ws.jobs_list()}
    for name, job in jobs.items():
        assert job["state"] == "done", (name, job["error"])

    everything = {**os.environ, "TEST_SECRET_TOKEN": "s3cret"}
    for name in ("warm", "warm_set", "sh"):
        job = jobs[name]
        env = seen(job)["env"]
        assert env["TEST_SECRET_TOKEN"] == "s3cret", name  # noqa: S105 - a stand-in
        assert set(everything) <= set(env), name
        assert job["env_keep"] is None
    assert seen(jobs["warm_set"])["env"]["OMP_NUM_THREADS"] == "1"
    assert jobs["warm"]["start"] == jobs["warm_set"]["start"] == "fork"

    for name in ("kept", "kept_spawned", "sh_kept"):
        job = jobs[name]
        env = seen(job)["started"]
        own = set(job["env"]) | {"MEOW_PROCESS_LOG"}  # MEOW_*: what the job needs, always
        wanted = {"TEST_KEPT", "TEST_LC_A", "TEST_LC_B"} | own
        if name == "sh_kept":  # Bash itself sets a few (PWD, SHLVL, _) for what it runs
            wanted |= {"PWD", "SHLVL", "_"}
        if name == "kept_spawned":
            wanted.add("OMP_NUM_THREADS")
        if name != "sh_kept":  # a spawned Python job's code, compiled by the runner: its
            wanted.add("MEOW_BOOT_CODE")  # bootstrap takes it out before the script runs
            assert "MEOW_BOOT_CODE" not in seen(job)["env"], name
        assert set(env) == wanted, (name, sorted(set(env) ^ wanted))
        assert env["TEST_KEPT"] == "kept"
        assert job["env_keep"] == RESTRICTED
        assert job["start"] == "spawn", name  # a fork would carry the runner's in memory
    assert seen(jobs["kept_spawned"])["env"]["OMP_NUM_THREADS"] == "1"
    assert jobs["kept_spawned"]["env"]["OMP_NUM_THREADS"] == "1"  # recorded, unlike secrets


@pytest.mark.usefixtures("runner_env")
async def test_a_notebook_job_and_its_kernel_get_what_the_recipe_keeps(ws: Workspace) -> None:
    pytest.importorskip("papermill")
    source = json.dumps(
        {
            "cells": [
                {
                    "cell_type": "code",
                    "execution_count": None,
                    "id": "c0",
                    "metadata": {},
                    "outputs": [],
                    "source": SEES_PY,
                }
            ],
            "metadata": {"kernelspec": {"name": "python3", "language": "python"}},
            "nbformat": 4,
            "nbformat_minor": 5,
        }
    )
    recipe = NotebookRecipe(name="nb", script=source, env=[*RESTRICTED, "PATH", "HOME"])
    async with ws.runner([FilePattern(name="nb", glob="*.in", recipe="nb")], [recipe]) as r:
        ws.write("a.in")
        async with asyncio.timeout(2 * WAIT):
            await r.wait_for(lambda s: s.finished >= 1)
    (job,) = ws.jobs_list()
    assert job["state"] == "done", job["error"]
    env = seen(job)["env"]  # written by the kernel
    assert env["TEST_KEPT"] == "kept"
    assert "TEST_SECRET_TOKEN" not in env
    assert "TEST_SECRET_TOKEN" not in seen(job)["started"]


@pytest.mark.parametrize(
    ("env", "field", "message"),
    [
        ({"keep": ["A"]}, "env.keep", "needs inherit: false"),
        ({"inherit": "no"}, "env.inherit", "expected true or false"),
        (["NOT A NAME"], "env.keep", "not a variable name"),
        ({"set": {"MEOW_JOB_ID": "x"}}, "env.set", "cannot be set"),
        ({"set": {"A": [1]}}, "env.set.A", "a string or a number"),
        ({"pass": ["A"]}, "env", "unknown key 'pass'"),
        ("PATH", "env", "expected a list of variable names"),
    ],
)
def test_bad_env_settings_name_the_field(env: Any, field: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        py_recipe("r", "pass\n", env=env)
    assert info.value.field == field


def test_preload_needs_the_runner_s_environment(tmp_path: Path) -> None:
    (tmp_path / "workflow.yaml").write_text(
        "recipes:\n"
        "  r: {kind: python, script: 'pass', preload: [json], env: [PATH]}\n"
        "patterns:\n"
        "  p: {glob: '*.in', recipe: r}\n"
    )
    with pytest.raises(WorkflowFileError) as info:
        load_workflow(tmp_path / "workflow.yaml")
    (problem,) = info.value.problems
    assert "recipes.r.preload" in problem
    assert "new interpreter" in problem


def test_a_workflow_file_sets_env(tmp_path: Path) -> None:
    (tmp_path / "workflow.yaml").write_text(
        "recipes:\n"
        "  a: {kind: bash, script: 'true', env: [PATH, LC_*]}\n"
        "  b: {kind: bash, script: 'true', env: {inherit: false, keep: [HOME], "
        "set: {OMP_NUM_THREADS: 1}}}\n"
        "  c: {kind: bash, script: 'true', env: {keep: [HOME]}}\n"
        "patterns:\n"
        "  p: {glob: '*.a', recipe: a}\n"
        "  q: {glob: '*.b', recipe: b}\n"
        "  s: {glob: '*.c', recipe: c}\n"
    )
    with pytest.raises(WorkflowFileError) as info:
        load_workflow(tmp_path / "workflow.yaml")
    (problem,) = info.value.problems
    assert problem.startswith(f"{tmp_path / 'workflow.yaml'}:4:"), problem
    assert "recipes.c.env.keep" in problem
