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

from meow_async.runner.live import LIVE_FILE

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


@pytest.mark.skipif(sys.platform != "linux", reason="a killed runner's orphans: /proc")
def test_after_kill_9_send_says_the_runner_is_gone_and_a_restart_kills_its_job_once(
    tmp_path: Path,
) -> None:
    """`kill -9` leaves `.meow-live.json` and a job running alone. `send WORKFLOW` names the
    runner that is gone; the next `run` kills what is left of the job once, with one line
    (a job's shell and its child both hold process.log: the group was logged twice)."""
    write_workflow(
        tmp_path,
        RUNNER + "recipes:\n  slow: {kind: bash, script: 'sleep 60'}\n"
        "patterns:\n"
        "  wait: {glob: '*.txt', recipe: slow, on_restart: fail}\n"
        "  net: {port: 0, recipe: slow}\n",
    )
    jobs = tmp_path / "jobs"
    # The first run's block spans the restart: leaving it kills the jobs it adopted.
    with MeowRun("workflow.yaml", cwd=tmp_path) as run:
        run.wait_ready()
        (tmp_path / "data" / "x.txt").write_text("x")

        def started() -> bool:
            logs = list(jobs.glob("*/wait-*/process.log"))
            return bool(logs) and "\npid " in logs[0].read_text()

        wait_until_sync(started, SHORT)
        (job,) = job_metas(jobs)
        log = (Path(job["dir"]) / "process.log").read_text()
        group = int(log.split("\npid ")[1].split()[0])
        run.adopt_job(group)  # killed at the end if the test fails before the restart does
        wait_until_sync(lambda: len(group_members(group)) >= 2, SHORT)  # bash, and its sleep
        run.proc.kill()  # kill -9
        run.wait_exit()
        assert (jobs / LIVE_FILE).exists()
        assert len(group_members(group)) >= 2  # the job runs on alone

        res = meow("send", "workflow.yaml", "-", cwd=tmp_path)
        assert res.returncode == 1
        assert (
            f"no runner of this workflow is running (the one that wrote jobs/{LIVE_FILE}, "
            f"pid {run.proc.pid}, is gone)"
        ) in res.stderr, res.stderr
        assert "none has written" not in res.stderr

        with MeowRun("workflow.yaml", cwd=tmp_path) as again:
            again.wait_ready()
            again.signal(signal.SIGINT)
            assert again.wait_exit() == 0, again.report()
    killed = f"killed process group {group} of job {job['id']}, left behind"
    assert again.stderr.count(killed) == 1, again.report()
    assert "1 orphaned process group(s) killed" in again.stderr
    (meta,) = job_metas(jobs)
    assert meta["state"] == "failed"
    assert meta["error"] == "the runner died while the job was running"


def test_a_second_run_on_a_jobs_folder_in_use_stops_and_leaves_the_first_alone(
    tmp_path: Path,
) -> None:
    """Two terminals, the same workflow: the second `run` took the first's running job for a
    dead runner's orphan and killed it. Now it stops at once, naming the runner."""
    write_workflow(
        tmp_path,
        RUNNER + "recipes:\n  slow: {kind: bash, script: 'sleep 60'}\n"
        "patterns:\n  wait: {glob: '*.txt', recipe: slow}\n",
    )
    jobs = tmp_path / "jobs"
    with MeowRun("workflow.yaml", cwd=tmp_path) as run:
        run.wait_ready()
        (tmp_path / "data" / "x.txt").write_text("x")
        wait_until_sync(lambda: any("running" in r for r in job_rows(tmp_path)), SHORT)
        (job,) = job_metas(jobs)

        second = meow("run", "workflow.yaml", cwd=tmp_path)
        assert second.returncode == 1, second.stdout + second.stderr
        assert second.stderr.startswith(
            f"meow-async: error: another runner runs on {jobs}: pid {run.proc.pid}, since "
        ), second.stderr
        assert "stop it first" in second.stderr
        assert "killed process group" not in second.stderr
        assert second.stdout == ""  # no banner
        assert any("running" in r for r in job_rows(tmp_path))  # still the first's job
        assert (jobs / LIVE_FILE).exists()  # and still the first's file

        run.signal(signal.SIGINT)
        run.wait_for("SIGINT: stopping gracefully", stream="stderr")
        run.signal(signal.SIGINT)  # stop the job now
        assert run.wait_exit() == 0, run.report()
    (meta,) = job_metas(jobs)
    assert meta["id"] == job["id"]
    assert meta["error"] == "stopped: the runner shut down first"


def job_rows(root: Path) -> list[str]:
    res = meow("jobs", "workflow.yaml", cwd=root)
    assert res.returncode == 0, res.stderr
    return res.stdout.splitlines()[1:-1]


def group_members(group: int) -> list[int]:
    """The processes of a process group (from /proc: field 5 of each stat)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


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
    assert (Path(job["dir"]) / "got").read_text() == "one message"


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
        wait_until_sync(lambda: any((tmp_path / "jobs").glob("*/*/started")), SHORT)
        os.killpg(run.proc.pid, signal.SIGINT)  # Ctrl+C
        run.wait_for("SIGINT: stopping gracefully", stream="stderr")
        assert run.wait_exit() == 0, run.report()
    (job,) = job_metas(tmp_path / "jobs")
    assert job["state"] == "done", run.report()
    assert (Path(job["dir"]) / "stdout.txt").read_text() == "finished\n"
    assert "1 job(s): 1 done, 0 failed" in run.stderr
    assert "Traceback" not in run.stderr
    assert "fork server" not in run.stderr.split("SIGINT: stopping gracefully")[1]
