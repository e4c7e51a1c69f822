"""`meow-async jobs cancel|rerun|logs ID` against a real runner, its jobs and runner.http."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

from .conftest import PYTHON, WAIT, wait_until_sync
from .test_cli import MeowRun, finished_jobs, job_metas, meow, write_workflow

#: A job that says it started, then waits for its go-file (or 60 s), then ends as told.
WAITER = """\
import os, sys, time
from pathlib import Path
print("started", input_file, flush=True)
go = Path(input_file + ".go")
deadline = time.monotonic() + 60
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.02)
print("going on", flush=True)
print("a warning", file=sys.stderr, flush=True)
sys.exit(int(go.read_text() or 0) if go.exists() else 9)
"""


def workflow(
    root: Path,
    *,
    http: bool = False,
    retries: int = 0,
    max_jobs: int = 2,
    token_file: str | None = None,
) -> None:
    token = f", token_file: {token_file}" if token_file else ""
    server = f", http: {{host: 127.0.0.1, port: 0{token}}}" if http else ""
    script = "\n".join("      " + line for line in WAITER.splitlines())
    write_workflow(
        root,
        f"runner: {{base_dir: data, jobs_dir: jobs, max_jobs: {max_jobs}, kill_timeout: 1"
        f"{server}}}\nrecipes:\n  wait:\n    kind: python\n    script: |\n{script}\n"
        f"patterns:\n  w: {{glob: '*.txt', recipe: wait, retries: {retries}}}\n",
    )


def running(root: Path, name: str) -> dict[str, Any]:
    """Wait until the job for data/NAME has printed that it started; its job.json."""

    def started() -> bool:
        return any(
            (Path(m["dir"]) / "stdout.txt").exists()
            and "started" in (Path(m["dir"]) / "stdout.txt").read_text()
            for m in job_metas(root / "jobs")
            if m["event"]["path"].endswith(name)
        )

    wait_until_sync(started)
    (meta,) = [m for m in job_metas(root / "jobs") if m["event"]["path"].endswith(name)]
    return meta


def test_cancel_a_running_job_records_it_cancelled_not_retried(tmp_path: Path) -> None:
    workflow(tmp_path, retries=2)
    with MeowRun("workflow.yaml", cwd=tmp_path) as run:
        run.wait_ready()
        (tmp_path / "data" / "a.txt").write_text("x")
        job = running(tmp_path, "a.txt")
        res = meow("jobs", "cancel", job["id"][:12], "--jobs", "workflow.yaml", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith(f"job {job['id']} cancelled: its process group ")
        wait_until_sync(lambda: len(finished_jobs(tmp_path / "jobs")) == 1)
        (done,) = finished_jobs(tmp_path / "jobs")
        assert done["state"] == "failed"
        assert done["cancelled"] is True
        assert done["exit_code"] == -15
        assert done["error"] == "cancelled (meow-async jobs cancel): killed by SIGTERM"
        assert len(done["attempts"]) == 1  # retries: 2, yet not retried
        table = meow("jobs", "workflow.yaml", cwd=tmp_path).stdout
        assert "  SIGTERM  " in table, table
        shown = meow("show", job["id"], "--jobs", "workflow.yaml", cwd=tmp_path).stdout
        assert "state     failed  (killed by SIGTERM)\n" in shown, shown
        again = meow("jobs", "cancel", job["id"], "--jobs", "workflow.yaml", cwd=tmp_path)
        assert again.returncode == 1
        assert f"job {job['id']} has ended (failed): nothing to cancel" in again.stderr
        run.signal(signal.SIGINT)
        assert run.wait_exit() == 0, run.report()
        assert "Traceback" not in run.stderr


def test_logs_follow_a_job_to_its_end(tmp_path: Path) -> None:
    workflow(tmp_path)
    with MeowRun("workflow.yaml", cwd=tmp_path) as run:
        run.wait_ready()
        (tmp_path / "data" / "b.txt").write_text("x")
        running(tmp_path, "b.txt")
        follow = subprocess.Popen(
            [PYTHON, "-m", "meow_async", "jobs", "logs", "-f", "w", "--jobs", "jobs"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert follow.stdout is not None
            assert follow.stdout.readline().startswith("started ")  # what was there already
            (tmp_path / "data" / "b.txt.go").write_text("3")
            out, err = follow.communicate(timeout=WAIT)  # ends with the job
        finally:
            follow.kill()
        assert follow.returncode == 0, err
        assert out == "going on\n"
        assert err == "a warning\n"
        (done,) = finished_jobs(tmp_path / "jobs")
        assert (done["state"], done["exit_code"]) == ("failed", 3)
        res = meow("jobs", "logs", done["id"], "--jobs", "jobs", cwd=tmp_path)  # no -f: at once
        assert res.stdout.endswith("going on\n")
        assert res.stderr == "a warning\n"
        run.signal(signal.SIGINT)
        assert run.wait_exit() == 0, run.report()


def test_rerun_through_runner_http_and_cancel_a_queued_job(tmp_path: Path) -> None:
    workflow(tmp_path, http=True, max_jobs=1)
    data = tmp_path / "data"
    with MeowRun("workflow.yaml", cwd=tmp_path) as run:
        run.wait_ready()
        (data / "c.txt.go").write_text("0")
        (data / "c.txt").write_text("x")
        wait_until_sync(lambda: len(finished_jobs(tmp_path / "jobs")) == 1)
        (first,) = finished_jobs(tmp_path / "jobs")
        # one job holds the only slot; the next waits, queued
        (data / "d.txt").write_text("x")
        running(tmp_path, "d.txt")
        (data / "e.txt").write_text("x")
        wait_until_sync(lambda: len(job_metas(tmp_path / "jobs")) == 3)
        (queued,) = [
            m for m in job_metas(tmp_path / "jobs") if m["event"]["path"].endswith("e.txt")
        ]
        res = meow("jobs", "cancel", queued["id"], "--jobs", "jobs", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        assert "records it instead of starting it" in res.stdout
        res = meow("jobs", "rerun", queued["id"], "--jobs", "jobs", cwd=tmp_path)
        assert res.returncode == 1
        assert f"job {queued['id']} is queued: only a finished job can be rerun" in res.stderr
        busy = meow("jobs", "rerun", first["id"], "--jobs", "jobs", cwd=tmp_path)
        assert busy.returncode == 0, busy.stderr
        assert busy.stdout.startswith(f"job {first['id']} queued again: the runner (pid ")
        (data / "d.txt.go").write_text("0")
        wait_until_sync(lambda: len(finished_jobs(tmp_path / "jobs")) == 3)
        metas = {m["id"]: m for m in finished_jobs(tmp_path / "jobs")}
        assert metas[queued["id"]]["state"] == "failed"
        assert (
            metas[queued["id"]]["error"] == "cancelled (meow-async jobs cancel) before it started"
        )
        assert not (Path(queued["dir"]) / "process.log").exists()  # never started
        rerun = metas[first["id"]]
        assert (rerun["state"], rerun["reruns"], len(rerun["attempts"])) == ("done", 1, 2)
        assert (Path(first["dir"]) / "stdout.txt").read_text().count("started") == 1
        run.signal(signal.SIGINT)
        assert run.wait_exit() == 0, run.report()


def test_rerun_and_cancel_send_the_token_the_workflow_names(tmp_path: Path) -> None:
    """With runner.http's token, `jobs rerun|cancel --jobs workflow.yaml` read it from where
    the workflow names it and send it; given the jobs folder they cannot, and say what to give."""
    (tmp_path / "operator.token").write_text("file-token\n")
    workflow(tmp_path, http=True, max_jobs=1, token_file="operator.token")  # noqa: S106
    data = tmp_path / "data"
    with MeowRun("workflow.yaml", cwd=tmp_path) as run:
        run.wait_ready()
        (data / "c.txt.go").write_text("0")
        (data / "c.txt").write_text("x")
        wait_until_sync(lambda: len(finished_jobs(tmp_path / "jobs")) == 1)
        (first,) = finished_jobs(tmp_path / "jobs")
        res = meow("jobs", "rerun", first["id"], "--jobs", "jobs", cwd=tmp_path)
        assert res.returncode == 1
        assert "needs runner.http's bearer token" in res.stderr
        assert "give the workflow file with --jobs" in res.stderr
        res = meow("jobs", "rerun", first["id"], "--jobs", "workflow.yaml", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith(f"job {first['id']} queued again: the runner (pid ")
        wait_until_sync(lambda: any(m.get("reruns") == 1 for m in finished_jobs(tmp_path / "jobs")))
        # one job holds the only slot; the next waits, queued, and is cancelled with the token
        (data / "d.txt").write_text("x")
        running(tmp_path, "d.txt")
        (data / "e.txt").write_text("x")
        wait_until_sync(lambda: len(job_metas(tmp_path / "jobs")) == 3)
        (queued,) = [
            m for m in job_metas(tmp_path / "jobs") if m["event"]["path"].endswith("e.txt")
        ]
        res = meow("jobs", "cancel", queued["id"], "--jobs", "jobs", cwd=tmp_path)
        assert res.returncode == 1
        assert "needs runner.http's bearer token" in res.stderr
        res = meow("jobs", "cancel", queued["id"], "--jobs", "workflow.yaml", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        assert "records it instead of starting it" in res.stdout
        (data / "d.txt.go").write_text("0")
        wait_until_sync(lambda: len(finished_jobs(tmp_path / "jobs")) == 3)
        metas = {m["id"]: m for m in finished_jobs(tmp_path / "jobs")}
        assert metas[queued["id"]]["cancelled"] is True
        run.signal(signal.SIGINT)
        assert run.wait_exit() == 0, run.report()


def test_rerun_without_a_runner_runs_at_the_next_start(tmp_path: Path) -> None:
    workflow(tmp_path)
    data = tmp_path / "data"
    (data / "f.txt.go").write_text("0")
    with MeowRun("workflow.yaml", cwd=tmp_path) as run:
        run.wait_ready()
        (data / "f.txt").write_text("x")
        wait_until_sync(lambda: len(finished_jobs(tmp_path / "jobs")) == 1)
        run.signal(signal.SIGINT)
        assert run.wait_exit() == 0, run.report()
    (done,) = finished_jobs(tmp_path / "jobs")
    record = Path(done["dir"]) / "job.json"
    res = meow("jobs", "rerun", "w", "--jobs", "jobs", cwd=tmp_path)  # the rule's only job
    assert res.returncode == 0, res.stderr
    assert res.stdout == (
        f"job {done['id']} queued again: it runs when the workflow's runner next starts\n"
    )
    assert json.loads(record.read_text())["state"] == "queued"
    with MeowRun("workflow.yaml", cwd=tmp_path) as run:
        run.wait_ready()
        wait_until_sync(lambda: json.loads(record.read_text())["state"] == "done")
        run.signal(signal.SIGINT)
        assert run.wait_exit() == 0, run.report()
    again = json.loads(record.read_text())
    assert (again["reruns"], len(again["attempts"])) == (1, 2)
    res = meow("jobs", "rerun", "w", "--jobs", "jobs", "--jobs", "jobs", cwd=tmp_path)
    assert res.returncode == 0  # done again: it may be rerun again


def test_logs_of_a_job_that_printed_nothing(tmp_path: Path) -> None:
    """A job that wrote nothing keeps no stdout.txt or stderr.txt (they are removed at its
    end): `jobs logs` prints nothing and succeeds, with -f too (it has ended)."""
    write_workflow(
        tmp_path,
        "runner: {base_dir: data, jobs_dir: jobs}\n"
        "recipes:\n  quiet: {kind: bash, script: 'true'}\n"
        "patterns:\n  q: {glob: '*.txt', recipe: quiet}\n",
    )
    with MeowRun("workflow.yaml", cwd=tmp_path) as run:
        run.wait_ready()
        (tmp_path / "data" / "a.txt").write_text("x")
        wait_until_sync(lambda: len(finished_jobs(tmp_path / "jobs")) == 1)
        run.signal(signal.SIGINT)
        assert run.wait_exit() == 0, run.report()
    (done,) = finished_jobs(tmp_path / "jobs")
    folder = Path(done["dir"])
    assert folder.parent.parent == tmp_path / "jobs"  # its day folder
    assert not (folder / "stdout.txt").exists()
    assert not (folder / "stderr.txt").exists()
    for follow in ([], ["-f"]):
        res = meow("jobs", "logs", *follow, done["id"], "--jobs", "jobs", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        assert (res.stdout, res.stderr) == ("", "")
