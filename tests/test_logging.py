"""Logging: the CLI's JSON lines for log shippers, and a library that stays quiet when the
application embedding it configures no logging."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import textwrap
import time
import urllib.parse
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


FORGED = "01:02:03 INFO    job forged-0000000000000000 done in 0.01s (rule good)"
LINE = re.compile(r"\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) +\S")


def forge_lines(tmp_path: Path, *log_format: str) -> MeowRun:
    """A route part with ``%0A`` sent by curl, and a file whose name holds a newline and an
    escape sequence, each carrying a whole forged log line after the newline."""
    write_workflow(
        tmp_path,
        "runner: {base_dir: data, jobs_dir: jobs}\n"
        "recipes:\n  r: {kind: bash, script: 'cat \"$input_file\"'}\n"
        "patterns:\n"
        "  h: {route: '/in/{part}', port: 0, recipe: r}\n"
        "  f: {glob: 'in/*', recipe: r}\n",
    )
    (tmp_path / "data" / "in").mkdir()
    exe = shutil.which("curl")
    assert exe is not None, "curl is not installed (.ci/run installs it)"
    with MeowRun(*log_format, "workflow.yaml", cwd=tmp_path) as run:
        if "json" in log_format:  # no plain banner on stdout: its record is on stderr
            run.wait_for('"rules": [', stream="stderr")
            run.wait_for('"message": "runner started', stream="stderr")
            banner = run.stderr
        else:
            run.wait_ready()
            banner = run.stdout
        port = re.search(r"http://127\.0\.0\.1:(\d+)/in/", banner).group(1)  # type: ignore[union-attr]
        part = "x%0A" + urllib.parse.quote(FORGED) + "%1B%5B2J"
        done = subprocess.run(
            [exe, "-sS", "--data-binary", "x", f"http://127.0.0.1:{port}/in/{part}"],
            capture_output=True,
            timeout=WAIT,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert b'"jobs"' in done.stdout, done.stdout
        (tmp_path / "data" / "in" / f"y\n{FORGED}\x1b[2J").write_text("x")
        wait_until_sync(lambda: len(finished_jobs(tmp_path / "jobs")) == 2)
        run.signal(signal.SIGINT)
        assert run.wait_exit() == 0, run.report()
    return run


def test_a_forged_line_in_a_route_part_or_a_file_name_stays_in_its_line(tmp_path: Path) -> None:
    """Every line of the text log is one record (a time and a level first); each trigger is
    in exactly one line, its newline and escape sequence written as \\n and \\x1b. Before the
    change each forged text started a line of its own."""
    run = forge_lines(tmp_path)
    lines = run.stderr.splitlines()
    assert all(LINE.match(line) for line in lines), run.stderr
    assert not any(line.startswith(FORGED[:9]) for line in lines)
    assert "\x1b" not in run.stderr
    mentions = [line for line in lines if "forged-0000000000000000" in line]
    assert len(mentions) == 2, run.stderr  # the request's line and the file's
    assert all(f"\\n{FORGED}\\x1b[2J" in line for line in mentions), mentions


def test_json_log_lines_escape_control_characters_too(tmp_path: Path) -> None:
    run = forge_lines(tmp_path, "--log-format", "json")
    records = [json.loads(line) for line in run.stderr.splitlines()]
    mentions = [r["message"] for r in records if "forged-0000000000000000" in r["message"]]
    assert len(mentions) == 2, run.stderr
    for message in mentions:
        assert "\n" not in message
        assert "\x1b" not in message
        assert f"\\n{FORGED}\\x1b[2J" in message


def test_printable_escapes_what_could_end_or_rewrite_a_line() -> None:
    from meow_async.model.printable import printable

    assert printable("plain text, C:\\path, ünïcode") == "plain text, C:\\path, ünïcode"
    assert printable("a\nb\rc\td\x00e\x1bf\x7fg") == "a\\nb\\rc\\td\\x00e\\x1bf\\x7fg"
    assert printable("\x85\u2028\u2029\u202e\u2066") == "\\x85\\u2028\\u2029\\u202e\\u2066"
