"""Logging: the CLI's JSON lines for log shippers, and a library that stays quiet when the
application embedding it configures no logging."""

from __future__ import annotations

import json
import signal
import subprocess
import textwrap
import time
from pathlib import Path

from .conftest import PYTHON, WAIT, wait_until_sync
from .test_cli import MeowRun, finished_jobs, write_workflow

WORKFLOW = """\
runner:
  base_dir: data
  jobs_dir: jobs
recipes:
  ok: {kind: bash, script: "true"}
  bad: {kind: bash, script: "exit 3"}
patterns:
  good: {glob: "*.ok", recipe: ok}
  failing: {glob: "*.bad", recipe: bad}
  yearly: {cron: "0 0 1 1 *", catch_up: none, recipe: ok}
"""


def test_log_format_json_gives_one_object_per_line(tmp_path: Path) -> None:
    write_workflow(tmp_path, WORKFLOW)
    with MeowRun("--log-format", "json", "workflow.yaml", cwd=tmp_path) as run:
        run.wait_for('"message": "runner started', stream="stderr")
        (tmp_path / "data" / "a.ok").write_text("x")
        (tmp_path / "data" / "b.bad").write_text("x")
        wait_until_sync(lambda: len(finished_jobs(tmp_path / "jobs")) == 2)
        run.signal(signal.SIGINT)
        assert run.wait_exit() == 0, run.report()
    assert run.stdout == "", run.report()  # no plain banner: a shipper reads every line
    lines = [json.loads(line) for line in run.stderr.splitlines() if line.strip()]
    assert lines, run.report()
    (banner,) = [x for x in lines if "rules" in x]
    assert banner["message"].endswith("running workflow.yaml (loop: auto), 3 rule(s)")
    assert banner["workflow"] == "workflow.yaml"
    assert banner["base_dir"] == str(tmp_path / "data")
    assert banner["rules"] == [
        {"name": "good", "trigger": "*.ok", "recipe": "ok", "recipe_kind": "bash"},
        {"name": "failing", "trigger": "*.bad", "recipe": "bad", "recipe_kind": "bash"},
        {
            "name": "yearly",
            "trigger": "cron 0 0 1 1 *",
            "recipe": "ok",
            "recipe_kind": "bash",
            "next_tick": f"{time.gmtime().tm_year + 1}-01-01T00:00:00+00:00",
        },
    ]
    assert "http" not in banner  # no runner.http: no field (as for any None)
    for line in lines:
        assert {"time", "level", "logger", "message"} <= set(line), line
        assert line["time"].endswith("Z")
        assert line["logger"].startswith("meow_async")
    done = [x for x in lines if x["message"].startswith("job ") and " done " in x["message"]]
    failed = [x for x in lines if x["level"] == "warning" and "exit code 3" in x["message"]]
    assert [(x["rule"], x["level"]) for x in done] == [("good", "info")]
    assert [x["rule"] for x in failed] == ["failing"]
    assert done[0]["job"].startswith("good-")
    made = [x for x in lines if x.get("jobs")]
    assert sorted(x["rule"] for x in made) == ["failing", "good"]


def test_an_embedding_app_without_logging_gets_no_log_lines(tmp_path: Path) -> None:
    """A failing job logs a warning; an app that configured no logging must not see it (no
    last-resort handler writing to its stderr)."""
    (tmp_path / "data").mkdir()
    app = textwrap.dedent(
        f"""
        import asyncio
        from meow_async import BashRecipe, FilePattern, Runner, RunnerConfig

        async def main():
            data, jobs = {str(tmp_path / "data")!r}, {str(tmp_path / "jobs")!r}
            cfg = RunnerConfig(base_dir=data, jobs_dir=jobs)
            rules = [FilePattern(name="p", glob="*.bad", recipe="r")]
            async with Runner(rules, [BashRecipe(name="r", script="exit 3")], config=cfg) as r:
                open({str(tmp_path / "data" / "a.bad")!r}, "w").close()
                async with asyncio.timeout(30):
                    await r.wait_for(lambda s: s.failed >= 1)
            print("failed:", r.stats.failed)

        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [PYTHON, "-c", app], capture_output=True, text=True, timeout=WAIT, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "failed: 1\n"
    assert done.stderr == ""
