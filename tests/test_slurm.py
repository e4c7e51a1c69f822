"""Jobs on a real Slurm, through dask-jobqueue: ``runner.dask: {jobqueue: slurm, ...}``.

Slurm is the single-node one ``scripts/slurm-single-node.sh start`` runs (``.ci/run`` starts
it; ``SLURM_CONF`` names its configuration). The runner's Dask workers are Slurm batch jobs,
which ``sacct`` lists; meow_async's jobs run on them. The watched folder is polled every five
minutes, so each next stage can only have been started by the job-end scan. Without a Slurm
these tests skip, saying how to start one; on CI they must run.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("dask_jobqueue")

from meow_async import FilePattern, Runner

from .conftest import Workspace, poll_until, py_recipe, sh_recipe

pytestmark = pytest.mark.skipif(
    os.environ.get("MEOW_TEST_LOOP") == "uvloop",
    reason="each test starts Slurm batch jobs (~10 s); the loop does not matter to them",
)

DEFAULT_CONF = "/tmp/meow-slurm/etc/slurm.conf"  # scripts/slurm-single-node.sh's


def _slurm_conf() -> str:
    """SLURM_CONF of a Slurm that answers, or skip (fail on CI) saying why."""
    conf = os.environ.get("SLURM_CONF") or DEFAULT_CONF
    why = None
    if shutil.which("sbatch") is None:
        why = "Slurm is not installed"
    elif not os.path.exists(conf):
        why = f"no Slurm configuration at {conf}"
    else:
        done = subprocess.run(
            ["sinfo", "-h", "-o", "%t"],
            env={**os.environ, "SLURM_CONF": conf},
            capture_output=True,
            text=True,
            timeout=30,
        )
        if done.returncode != 0 or not done.stdout.strip():
            why = f"Slurm does not answer: {done.stderr.strip() or 'no node'}"
    if why is not None:
        message = f"{why}: start one with `sudo scripts/slurm-single-node.sh start`"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Slurm tests: {message}")
        pytest.skip(message)
    return conf


@pytest.fixture
def slurm(monkeypatch: pytest.MonkeyPatch) -> str:
    conf = _slurm_conf()
    monkeypatch.setenv("SLURM_CONF", conf)  # sbatch, scancel and sacct read it
    return conf


def sacct(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """Batch job id -> (name, state), as Slurm's accounting has them."""
    done = subprocess.run(
        ["sacct", "-n", "-P", "-X", "-j", ",".join(job_ids), "-o", "JobID,JobName,State"],
        capture_output=True,
        text=True,
        check=True,
    )
    out = {}
    for line in done.stdout.splitlines():
        job_id, name, state = line.split("|")
        out[job_id] = (name, state.split()[0])
    return out


def slurm_settings(ws: Workspace, jobs: int) -> dict[str, Any]:
    """The runner.dask settings docs/scale-out.md shows, for this one-node Slurm."""
    return {
        "jobqueue": "slurm",
        "cores": 1,
        "memory": "1GB",
        "queue": "debug",
        "walltime": "00:10:00",
        "jobs": jobs,
        "log_directory": str(ws.root / "slurm-logs"),
        # Everything on 127.0.0.1: the scheduler in the runner, the workers in batch jobs.
        "scheduler_options": {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"},
        "worker_extra_args": ["--host", "127.0.0.1"],
    }


def runner_on_slurm(ws: Workspace, patterns: list[FilePattern], recipes: list[Any]) -> Runner:
    return ws.runner(
        patterns,
        recipes,
        conductor="local",
        dask=slurm_settings(ws, jobs=2),
        file_watcher="poll",
        poll_interval=300,  # no look after the first: only job ends move the chain on
        max_jobs=4,
        shutdown_timeout=10,
    )


# The middle stage, on Slurm: its output says which batch job ran it.
ON_SLURM = """
from pathlib import Path
import os
Path(out).parent.mkdir(exist_ok=True)
Path(out).write_text(Path(input_file).read_text() + " slurm:" + os.environ["SLURM_JOB_ID"])
"""


async def test_a_chain_whose_middle_stage_runs_as_slurm_jobs(ws: Workspace, slurm: str) -> None:
    """Files in; stage one runs here, stage two on Slurm (its jobs run in the runner's Dask
    workers, which are Slurm batch jobs that sacct lists), and each stage two's end starts
    stage three here at once (the poll never looks)."""
    (ws.base / "in").mkdir()
    for i in range(3):
        (ws.base / "in" / f"s{i}.txt").write_text(f"sample {i}")
    patterns = [
        FilePattern(
            name="one",
            glob="in/*.txt",
            recipe="copy",
            retroactive=True,
            settle=0.2,
            outputs={"out": "{BASE}/one/{PREFIX}.txt"},
        ),
        FilePattern(
            name="two",
            glob="one/*.txt",
            recipe="on_slurm",
            outputs={"out": "{BASE}/two/{PREFIX}.txt"},
        ),
        FilePattern(name="three", glob="two/*.txt", recipe="report"),
    ]
    recipes = [
        sh_recipe("copy", 'mkdir -p "$(dirname "$out")"; cp "$input_file" "$out"\n'),
        py_recipe("on_slurm", ON_SLURM, conductor="dask", fork=False),
        sh_recipe("report", 'cat "$input_file" > result.txt\n'),
    ]
    async with runner_on_slurm(ws, patterns, recipes) as runner:
        async with asyncio.timeout(60):
            await runner.wait_for(lambda s: s.finished >= 9)
        assert runner.stats.done == 9
    jobs = {(j["rule"], Path(j["event"]["path"]).stem): j for j in ws.jobs_list()}
    assert len(jobs) == 9 == len(ws.jobs_list())  # one per stage per sample
    batch = set()
    for i in range(3):
        two = jobs["two", f"s{i}"]
        worker = two["worker"]
        batch.add(worker["batch_job"])
        result = (Path(jobs["three", f"s{i}"]["dir"]) / "result.txt").read_text()
        assert result == f"sample {i} slurm:{worker['batch_job']}"
        assert jobs["one", f"s{i}"].get("worker") is None  # stage one ran here
        # Stage three began right after stage two's end, not at a poll five minutes away.
        assert jobs["three", f"s{i}"]["created"] - two["finished"] < 5
    # Accounting lags: slurmctld sends a job's record to slurmdbd on its own time, and until
    # then sacct names the job "allocation".
    await poll_until(
        lambda: [name for name, _ in sacct(sorted(batch)).values()] == ["dask-worker"] * len(batch),
        timeout=30,
    )
    accounted = sacct(sorted(batch))
    assert set(accounted) == batch
    assert {state for _, state in accounted.values()} <= {"RUNNING", "COMPLETED", "CANCELLED"}


# Sleeps on its first attempt (long enough to be cancelled), not on a rerun.
SLEEPY = """
import os, time
from pathlib import Path
marker = Path(os.environ["MEOW_JOB_DIR"]) / "first-attempt-batch-job"
if not marker.exists():
    marker.write_text(os.environ["SLURM_JOB_ID"])
    time.sleep(60)
Path("ran-on.txt").write_text(os.environ["SLURM_JOB_ID"])
"""


async def test_a_slurm_job_cancelled_mid_run_is_rerun_by_on_restart(
    ws: Workspace, slurm: str
) -> None:
    """``scancel`` of the batch job whose worker runs a job: the worker goes, the job's
    process with it, and ``on_restart: rerun`` runs it again on the other batch job."""
    ws.write("x.txt")
    patterns = [
        FilePattern(
            name="long",
            glob="*.txt",
            recipe="sleepy",
            retroactive=True,
            settle=0.2,
            on_restart="rerun",
        )
    ]
    recipes = [py_recipe("sleepy", SLEEPY, conductor="dask", fork=False)]
    async with runner_on_slurm(ws, patterns, recipes) as runner:
        await poll_until(lambda: _marker(ws) is not None, timeout=60)
        first = _marker(ws)
        assert first is not None
        subprocess.run(["scancel", first], check=True)
        async with asyncio.timeout(60):
            await runner.wait_for(lambda s: s.finished >= 1)
        assert runner.stats.retries == 1
    [job] = ws.jobs_list()
    assert job["state"] == "done"
    second = (Path(job["dir"]) / "ran-on.txt").read_text()
    assert second != first
    assert job["worker"]["batch_job"] == second
    assert len(job["attempts"]) == 2
    assert "worker" in job["attempts"][0]["error"]  # its worker died or closed mid-job
    await poll_until(lambda: sacct([first])[first][1] == "CANCELLED", timeout=30)


def _marker(ws: Workspace) -> str | None:
    for j in ws.jobs_list():
        f = Path(j["dir"]) / "first-attempt-batch-job"
        if f.exists() and f.read_text():
            return f.read_text()
    return None
