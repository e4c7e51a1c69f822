"""What someone running the shipped example meets: `send` given the workflow file finds a
port-0 listener, two runs of the example on one machine do not clash, and Ctrl+C at a terminal
(SIGINT to the whole process group, fork server included) stops gracefully."""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import sys
from pathlib import Path

import pytest

from meow_async.live import LIVE_FILE

from .conftest import wait_until_sync
from .test_cli import (
    RUNNER,
    SHORT,
    MeowRun,
    copy_example,
    finished_jobs,
    job_metas,
    meow,
    write_workflow,
)


def test_the_shipped_example_asks_for_a_free_port() -> None:
    """So two people running it on one machine do not clash (the README's promise)."""
    text = (Path(__file__).resolve().parent.parent / "examples/linked/workflow.yaml").read_text()
    assert re.search(r"^\s+port: 0\b", text, re.M)
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "send --ack examples/linked/workflow.yaml -" in readme


def test_two_runs_of_the_example_and_send_by_workflow_file(tmp_path: Path) -> None:
    one, two = copy_example(tmp_path / "one"), copy_example(tmp_path / "two")
    with MeowRun("workflow.yaml", cwd=one) as run1, MeowRun("workflow.yaml", cwd=two) as run2:
        run1.wait_ready()
        run2.wait_ready()
        ports = [re.findall(r"tcp 127\.0\.0\.1:(\d+)", r.stdout) for r in (run1, run2)]
        assert [len(p) for p in ports] == [1, 1], run1.report() + run2.report()
        assert ports[0] != ports[1]
        live = json.loads((one / ".meow" / "jobs" / LIVE_FILE).read_text())
        assert live["ports"]["from_network"] == int(ports[0][0])

        # From another folder, by a relative path: the port comes from that runner's file.
        (tmp_path / "msg.txt").write_text("sent by workflow file")
        for root in (one, two):
            sent = meow("send", "--ack", root / "workflow.yaml", tmp_path / "msg.txt", cwd=tmp_path)
            assert sent.returncode == 0, sent.stderr
            wait_until_sync(functools.partial(reported, root, sent.stdout.strip()), SHORT)
        for run in (run1, run2):
            run.signal(signal.SIGINT)
            assert run.wait_exit() == 0, run.report()
    # Gone with its runner: a later send says so instead of trying a port nobody holds.
    assert not (one / ".meow" / "jobs" / LIVE_FILE).exists()
    res = meow("send", "workflow.yaml", "-", cwd=one)
    assert res.returncode == 1
    assert "no runner of this workflow is running" in res.stderr
    assert "meow-async run workflow.yaml" in res.stderr
    assert "Traceback" not in res.stderr


def reported(root: Path, msg_id: str) -> bool:
    """The example's second stage has summarised message ``msg_id``."""
    report = root / "data" / "report" / "summary.txt"
    return report.is_file() and msg_id in report.read_text()


def test_a_live_file_left_by_a_killed_runner_is_not_believed(tmp_path: Path) -> None:
    root = copy_example(tmp_path)
    jobs = root / ".meow" / "jobs"
    jobs.mkdir(parents=True)
    dead = {"pid": 2**22 + 1, "started": 1.0, "ports": {"from_network": 9}}
    (jobs / LIVE_FILE).write_text(json.dumps(dead))
    res = meow("send", "workflow.yaml", "-", cwd=root)
    assert res.returncode == 1
    assert "no runner of this workflow is running" in res.stderr


def test_send_by_workflow_file_says_what_is_wrong(tmp_path: Path) -> None:
    write_workflow(
        tmp_path,
        RUNNER + "recipes:\n  r: {kind: bash, script: 'true'}\n"
        "patterns:\n"
        "  a: {port: 7301, recipe: r, framing: delimiter}\n"
        "  b: {port: 7302, recipe: r}\n"
        "  t: {glob: '*.txt', recipe: r}\n",
    )
    res = meow("send", "workflow.yaml", "-", cwd=tmp_path)
    assert res.returncode == 1
    assert "2 network patterns (a, b); choose one with --rule NAME" in res.stderr
    res = meow("send", "--rule", "t", "workflow.yaml", "-", cwd=tmp_path)
    assert res.returncode == 1
    assert "no network pattern 't' (network patterns: a, b)" in res.stderr
    res = meow("send", "--rule", "a", "127.0.0.1:7301", "-", cwd=tmp_path)
    assert res.returncode == 1
    assert "--rule goes with a workflow file" in res.stderr
    res = meow("send", "missing.yaml", "-", cwd=tmp_path)
    assert res.returncode == 1
    assert "missing.yaml" in res.stderr
    write_workflow(
        tmp_path,
        RUNNER + "recipes:\n  r: {kind: bash, script: 'true'}\n"
        "patterns:\n  t: {glob: '*.txt', recipe: r}\n",
        name="files.yaml",
    )
    res = meow("send", "files.yaml", "-", cwd=tmp_path)
    assert res.returncode == 1
    assert "files.yaml: no network pattern to send to" in res.stderr
    assert "Traceback" not in res.stderr


def test_send_by_workflow_file_uses_the_patterns_framing(tmp_path: Path) -> None:
    """A pattern's framing and delimiter go with its address: one message, as sent."""
    write_workflow(
        tmp_path,
        RUNNER + 'recipes:\n  r: {kind: bash, script: \'cat "$msg" > "$MEOW_JOB_DIR/got"\'}\n'
        "patterns:\n"
        "  lines: {port: 0, recipe: r, variable: msg, framing: delimiter, delimiter: ';',"
        " ack: true}\n",
    )
    with MeowRun("workflow.yaml", cwd=tmp_path) as run:
        run.wait_ready()
        (tmp_path / "m").write_text("one message")
        sent = meow("send", "--ack", "workflow.yaml", "m", cwd=tmp_path)
        assert sent.returncode == 0, sent.stderr
        wait_until_sync(lambda: len(finished_jobs(tmp_path / "jobs")) == 1, SHORT)
        run.signal(signal.SIGINT)
        assert run.wait_exit() == 0, run.report()
    (job,) = job_metas(tmp_path / "jobs")
    assert job["state"] == "done"
    assert (tmp_path / "jobs" / job["id"] / "got").read_text() == "one message"


@pytest.mark.skipif(sys.platform != "linux", reason="warm starts (the fork server): Linux")
def test_ctrl_c_at_a_terminal_lets_a_warm_job_finish(tmp_path: Path) -> None:
    """A terminal sends Ctrl+C's SIGINT to the whole foreground process group: the runner
    and its fork server. Only the runner may act on it (a graceful stop); the fork server
    dying of it used to fail every running Python job at the first Ctrl+C."""
    write_workflow(
        tmp_path,
        RUNNER + "recipes:\n  slow:\n    kind: python\n    script: |\n"
        "      import os, pathlib, time\n"
        "      pathlib.Path(os.environ['MEOW_JOB_DIR'], 'started').touch()\n"
        "      time.sleep(1.5)\n"
        "      print('finished')\n"
        "patterns:\n  p: {glob: '*.txt', recipe: slow}\n",
    )
    # Its own process group, as a shell's foreground job is.
    with MeowRun("workflow.yaml", cwd=tmp_path, preexec_fn=os.setpgrp) as run:
        run.wait_ready()
        assert "fork server" in run.stderr, run.report()
        (tmp_path / "data" / "go.txt").write_text("go\n")
        wait_until_sync(lambda: any((tmp_path / "jobs").glob("*/started")), SHORT)
        os.killpg(run.proc.pid, signal.SIGINT)  # Ctrl+C
        run.wait_for("SIGINT: stopping gracefully", stream="stderr")
        assert run.wait_exit() == 0, run.report()
    (job,) = job_metas(tmp_path / "jobs")
    assert job["state"] == "done", run.report()
    assert (tmp_path / "jobs" / job["id"] / "stdout.txt").read_text() == "finished\n"
    assert "1 job(s): 1 done, 0 failed" in run.stderr
    assert "Traceback" not in run.stderr
    assert "fork server" not in run.stderr.split("SIGINT: stopping gracefully")[1]
