"""`meow-async init`: a workflow a newcomer can run at once, and never one written over."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import jsonschema
import yaml

from meow_async.cli.urls import DOCS_URL
from meow_async.model.schema import workflow_schema

from .conftest import wait_until_sync
from .test_cli import MeowRun, finished_jobs, meow
from .test_mistakes import Yaml12Loader


def test_init_writes_a_workflow_that_runs_as_it_is(tmp_path: Path) -> None:
    res = meow("init", "project", cwd=tmp_path)
    assert (res.returncode, res.stderr) == (0, ""), res.stderr
    project = tmp_path / "project"
    text = (project / "workflow.yaml").read_text()
    assert text.startswith(f"# yaml-language-server: $schema={DOCS_URL}workflow.schema.json\n")
    assert "cd project && meow-async run workflow.yaml" in res.stdout
    keys = [ln for ln in text.splitlines() if re.match(r"  {1,4}\w+:", ln)]  # not the script's
    assert len(keys) >= 8
    assert all(" # " in ln for ln in keys), "a comment on every key"
    doc = yaml.load(text, Yaml12Loader)  # noqa: S506
    assert list(jsonschema.Draft202012Validator(workflow_schema()).iter_errors(doc)) == []
    res = meow("validate", "--json", "workflow.yaml", cwd=project)
    assert json.loads(res.stdout)["valid"] is True, res.stdout
    assert json.loads(res.stdout)["warnings"] == []
    with MeowRun("workflow.yaml", cwd=project) as run:
        run.wait_ready()
        (project / "data" / "incoming" / "hello.txt").write_text("hello big world\n")
        wait_until_sync(lambda: len(finished_jobs(project / ".meow" / "jobs")) == 1)
        run.signal(signal.SIGINT)
        assert run.wait_exit() == 0, run.report()
    (job,) = finished_jobs(project / ".meow" / "jobs")
    assert job["state"] == "done", job
    assert (project / "data" / "counted" / "hello.txt").read_text() == "3 words\n"


def test_init_never_replaces_a_workflow(tmp_path: Path) -> None:
    (tmp_path / "workflow.yaml").write_text("mine\n")
    res = meow("init", cwd=tmp_path)
    assert res.returncode == 1
    assert res.stderr == (
        "meow-async: error: workflow.yaml exists already: init writes a new workflow and never "
        "replaces one (give another folder: meow-async init NEW_FOLDER)\n"
    )
    assert (tmp_path / "workflow.yaml").read_text() == "mine\n"
    assert not (tmp_path / "data").exists()
