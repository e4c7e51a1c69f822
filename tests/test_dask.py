"""Jobs on a real Dask cluster: a scheduler and two workers as separate processes.

The cluster is started once for the module with Dask's own command-line programs (as users
start one on several machines): worker ``gpu`` offers the resource ``GPU=1``, worker ``cpu``
offers none. Each worker runs under a nanny, so a worker killed by a test comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

distributed = pytest.importorskip("distributed")

from meow_async import (  # noqa: E402
    ConfigError,
    FilePattern,
    Runner,
    RunnerConfig,
    load_workflow,
    read_meta,
)
from meow_async.conductors.forkserver import start_time_of  # noqa: E402
from meow_async.conductors.process_log import last_attempt  # noqa: E402

from .conftest import WAIT, Workspace, poll_until, py_recipe, sh_recipe, wait_until_sync  # noqa: E402


class Cluster:
    def __init__(self, address: str, procs: list[subprocess.Popen[bytes]], workers: dict[str, str]):
        self.address = address
        self.procs = procs
        self.workers = workers  # name -> address


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with tempfile.TemporaryDirectory(prefix="meow-dask-") as tmp:
        d = Path(tmp)
        sched_file = d / "scheduler.json"
        procs = [
            _start(
                [
                    "distributed.cli.dask_scheduler",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--no-dashboard",
                    "--scheduler-file",
                    str(sched_file),
                ],
                d / "scheduler.log",
            )
        ]
        try:
            wait_until_sync(lambda: sched_file.exists() and sched_file.stat().st_size > 0)
            address = json.loads(sched_file.read_text())["address"]
            for name, extra in (("gpu", ["--resources", "GPU=1"]), ("cpu", [])):
                procs.append(
                    _start(
                        [
                            "distributed.cli.dask_worker",
                            address,
                            "--name",
                            name,
                            "--nthreads",
                            "2",
                            "--nworkers",
                            "1",
                            "--host",
                            "127.0.0.1",
                            "--no-dashboard",
                            *extra,
                        ],
                        d / f"worker-{name}.log",
                    )
                )
            workers = _workers(address, 2)
            yield Cluster(address, procs, workers)
        finally:
            for p in reversed(procs):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()


def _workers(address: str, n: int) -> dict[str, str]:
    """Wait until ``n`` workers have joined; their names and addresses."""

    async def ask() -> dict[str, str]:
        async with distributed.Client(address, asynchronous=True, set_as_default=False) as c:
            await c.wait_for_workers(n, timeout=WAIT)
            info = await c.scheduler.identity()
            return {w["name"]: a for a, w in info["workers"].items()}

    return asyncio.run(ask())


def dask_runner(ws: Workspace, cluster: Cluster, patterns: Any, recipes: Any, **kw: Any) -> Runner:
    settings = {"dask": {"address": cluster.address}, "conductor": "dask", **kw}
    return ws.runner(patterns, recipes, **settings)


async def run_files(
    ws: Workspace, cluster: Cluster, patterns: Any, recipes: Any, files: dict[str, str]
) -> list[dict[str, Any]]:
    """Write ``files`` under the watched folder and wait for one finished job each."""
    async with dask_runner(ws, cluster, patterns, recipes) as runner:
        await runner.wait_ready()
        for rel, text in files.items():
            ws.write(rel, text)
        async with asyncio.timeout(2 * WAIT):
            await runner.wait_for(lambda s: s.finished >= len(files))
    return ws.jobs_list()


async def test_jobs_run_on_workers_and_are_recorded_as_local_jobs_are(
    ws: Workspace, cluster: Cluster
) -> None:
    recipes = [
        py_recipe("py", "import os, sys\nprint('py', input_file, os.getpid())\nsys.exit(0)\n"),
        sh_recipe("sh", 'echo "sh $input_file"; exit 3\n'),
    ]
    patterns = [
        FilePattern(name="p", glob="in/*.py.txt", recipe="py"),
        FilePattern(name="s", glob="in/*.sh.txt", recipe="sh"),
    ]
    files = {f"in/{i}.py.txt": "x" for i in range(3)} | {"in/x.sh.txt": "x"}
    jobs = await run_files(ws, cluster, patterns, recipes, files)
    assert len(jobs) == 4
    for job in jobs:
        assert job["worker"]["address"] in cluster.workers.values(), job
        assert job["worker"]["host"]
        assert job["start"] == "spawn"  # workers have no fork server
        attempt = last_attempt(Path(job["dir"]))
        assert attempt is not None
        assert attempt.mode == "dask"
        assert attempt.worker == job["worker"]["address"]
        out = (Path(job["dir"]) / "stdout.txt").read_text()
        if job["rule"] == "p":
            assert job["state"] == "done"
            assert job["exit_code"] == 0
            assert out.startswith("py ")
            assert job["event"]["path"] in out
        else:
            assert job["state"] == "failed"
            assert job["exit_code"] == 3
            assert "exit code 3" in job["error"]
            assert out.startswith("sh ")


async def test_resources_route_jobs_and_impossible_ones_fail_clearly(
    ws: Workspace, cluster: Cluster
) -> None:
    recipes = [
        py_recipe("gpu", "print('gpu job')\n", resources={"GPU": 1}),
        py_recipe("tpu", "print('never')\n", resources={"TPU": 1}),
    ]
    patterns = [
        FilePattern(name="g", glob="in/*.gpu", recipe="gpu"),
        FilePattern(name="t", glob="in/*.tpu", recipe="tpu"),
    ]
    files = {f"in/{i}.gpu": "x" for i in range(6)} | {"in/x.tpu": "x"}
    jobs = {j["event"]["path"]: j for j in await run_files(ws, cluster, patterns, recipes, files)}
    for i in range(6):
        job = jobs[str(ws.base / f"in/{i}.gpu")]
        assert job["state"] == "done"
        assert job["worker"]["address"] == cluster.workers["gpu"]
    tpu = jobs[str(ws.base / "in/x.tpu")]
    assert tpu["state"] == "failed"
    assert "no Dask worker offers the resources {'TPU': 1.0}" in tpu["error"]
    assert "GPU" in tpu["error"]  # what the workers do offer


async def test_env_and_max_output_hold_on_a_worker_too(
    ws: Workspace, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's job gets what its recipe's env: keeps of the worker's environment, and its
    output is cut to max_output there."""
    monkeypatch.setenv("TEST_SECRET_TOKEN", "on the runner")  # not on the workers anyway
    script = (
        "import json, os, sys\n"
        "json.dump(dict(os.environ), open('env.json', 'w'))\n"
        "sys.stdout.write(''.join(f'{i:09d}\\n' for i in range(20000)))\n"
    )
    recipes = [py_recipe("r", script, env=["PATH"], max_output=10_000)]
    patterns = [FilePattern(name="p", glob="in/*", recipe="r")]
    (job,) = await run_files(ws, cluster, patterns, recipes, {"in/a": "x"})
    assert job["state"] == "done", job["error"]
    env = json.loads((Path(job["dir"]) / "env.json").read_text())
    assert set(env) - {"LC_CTYPE"} == {"PATH", "MEOW_PROCESS_LOG", *job["env"]}
    cut = job["output_cut"]["stdout.txt"]
    assert cut["size"] == 200_000
    assert cut["kept_head"] + cut["kept_tail"] <= 10_000
    out = (Path(job["dir"]) / "stdout.txt").read_text().splitlines()
    assert out[0] == "000000000"
    assert out[-1] == "000019999"
    assert sum(line.startswith("[meow_async:") for line in out) == 1


def _pid_from(path: Path) -> int:
    return int(path.read_text().split()[0])


def _alive(pid: int, start: int | None) -> bool:
    return start is not None and start_time_of(pid) == start


async def test_a_timeout_kills_the_job_s_process_on_its_worker(
    ws: Workspace, cluster: Cluster
) -> None:
    script = "import os, time\nopen('pid.txt', 'w').write(str(os.getpid()))\ntime.sleep(120)\n"
    recipes = [py_recipe("slow", script, timeout=1.0)]
    patterns = [FilePattern(name="s", glob="in/*", recipe="slow")]
    (job,) = await run_files(ws, cluster, patterns, recipes, {"in/a": "x"})
    assert job["state"] == "failed"
    assert job["timed_out"] is True
    assert job["error"] == "timed out after 1s"
    assert job["exit_code"] == -signal.SIGTERM
    pid = _pid_from(Path(job["dir"]) / "pid.txt")
    assert start_time_of(pid) is None  # gone from this machine (the workers run here)


@pytest.mark.parametrize("policy", ["rerun", "fail"])
async def test_a_worker_killed_mid_job_is_survived_per_on_restart(
    ws: Workspace, cluster: Cluster, policy: Literal["rerun", "fail"]
) -> None:
    script = (
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "marker = Path('ran.marker')  # in the job folder, the same for a rerun\n"
        "if marker.exists():\n"
        "    print('second run'); sys.exit(0)\n"
        "marker.write_text('')\n"
        "open('pid.txt', 'w').write(str(os.getpid()))\n"
        "time.sleep(120)\n"
    )
    recipes = [py_recipe("victim", script)]
    patterns = [FilePattern(name="v", glob="in/*", recipe="victim", on_restart=policy)]
    async with dask_runner(ws, cluster, patterns, recipes) as runner:
        await runner.wait_ready()
        ws.write("in/a")
        await poll_until(lambda: any((Path(j["dir"]) / "pid.txt").exists() for j in ws.jobs_list()))
        (job,) = ws.jobs_list()
        pid = _pid_from(Path(job["dir"]) / "pid.txt")
        start = start_time_of(pid)
        first = last_attempt(Path(job["dir"]))
        assert first is not None
        assert first.worker is not None
        # Kill the worker process that runs it (not its nanny, which starts a new one).
        worker_pids = await _worker_pids(cluster.address)
        os.kill(worker_pids[first.worker], signal.SIGKILL)
        async with asyncio.timeout(WAIT):
            await runner.wait_for(lambda s: s.finished >= 1)
        await poll_until(lambda: not _alive(pid, start))  # the job died with its worker
    (job,) = ws.jobs_list()
    first_try = job["attempts"][0]
    assert "died while the job was running" in first_try["error"] or "died" in first_try["error"]
    if policy == "rerun":
        assert job["state"] == "done", job
        assert len(job["attempts"]) == 2
        assert (Path(job["dir"]) / "stdout.txt").read_text() == "second run\n"
    else:
        assert job["state"] == "failed", job
        assert len(job["attempts"]) == 1
        assert "died" in job["error"]
    cluster.workers = await _workers_back(cluster.address, 2)  # a new address for the new one


async def _worker_pids(address: str) -> dict[str, int]:
    async with distributed.Client(address, asynchronous=True, set_as_default=False) as c:
        pids: dict[str, int] = await c.run(os.getpid)
        return pids


async def _workers_back(address: str, n: int) -> dict[str, str]:
    async with distributed.Client(address, asynchronous=True, set_as_default=False) as c:
        await c.wait_for_workers(n, timeout=WAIT)
        info = await c.scheduler.identity()
        return {w["name"]: a for a, w in info["workers"].items()}


async def test_stopping_the_runner_stops_the_job_on_its_worker(
    ws: Workspace, cluster: Cluster
) -> None:
    script = "import os, time\nopen('pid.txt', 'w').write(str(os.getpid()))\ntime.sleep(120)\n"
    recipes = [py_recipe("long", script)]
    patterns = [FilePattern(name="l", glob="in/*", recipe="long")]
    runner = dask_runner(ws, cluster, patterns, recipes, shutdown_timeout=0.1)
    task = asyncio.create_task(runner.run())
    await runner.wait_ready()
    ws.write("in/a")
    await poll_until(lambda: any((Path(j["dir"]) / "pid.txt").exists() for j in ws.jobs_list()))
    (job,) = ws.jobs_list()
    pid = _pid_from(Path(job["dir"]) / "pid.txt")
    start = start_time_of(pid)
    runner.stop()
    async with asyncio.timeout(WAIT):
        await task
    assert not _alive(pid, start)
    meta = read_meta(Path(job["dir"]))
    assert meta["state"] == "failed"
    assert meta["error"] == "stopped: the runner shut down first"


async def test_a_local_recipe_runs_here_in_a_dask_runner(ws: Workspace, cluster: Cluster) -> None:
    recipes = [py_recipe("here", "print('here')\n", conductor="local")]
    patterns = [FilePattern(name="h", glob="in/*", recipe="here")]
    (job,) = await run_files(ws, cluster, patterns, recipes, {"in/a": "x"})
    assert job["state"] == "done"
    assert "worker" not in job
    attempt = last_attempt(Path(job["dir"]))
    assert attempt is not None
    assert attempt.mode in ("fork", "spawn")


async def test_a_worker_that_cannot_see_the_job_folder_fails_it_naming_both(
    cluster: Cluster, tmp_path: Path
) -> None:
    from meow_async.conductors.on_worker import run_job

    missing = tmp_path / "not-shared" / "job-1"
    async with distributed.Client(cluster.address, asynchronous=True, set_as_default=False) as c:
        spec = {"dir": str(missing), "argv": ["true"], "env": {}, "attempt": 1, "python": False}
        result = await c.submit(run_job, spec, pure=False)
    assert result["worker"] in cluster.workers.values()
    assert (
        f"worker {result['worker']} on {result['host']} cannot see the job folder"
        in result["error"]
    )
    assert str(missing) in result["error"]


async def test_a_local_cluster_starts_and_stops_with_the_runner(ws: Workspace) -> None:
    recipes = [py_recipe("py", "import os\nprint(os.getppid())\n")]
    patterns = [FilePattern(name="p", glob="in/*", recipe="py")]
    before = _children()
    runner = ws.runner(patterns, recipes, conductor="dask", dask={"local_workers": 2})
    async with runner:
        await runner.wait_ready()
        during = _children() - before
        assert len(during) >= 2  # the worker processes (with their nannies' helpers)
        for i in range(4):
            ws.write(f"in/{i}")
        async with asyncio.timeout(WAIT):
            await runner.wait_for(lambda s: s.finished >= 4)
    jobs = ws.jobs_list()
    assert {j["state"] for j in jobs} == {"done"}
    assert all(j["worker"]["address"].startswith("tcp://127.0.0.1:") for j in jobs)
    await poll_until(lambda: not (_children() - before))  # nothing left behind


def _children() -> set[int]:
    """Our descendant processes (from /proc), alive and not zombies; not multiprocessing's
    resource tracker, which serves this test process until it exits."""
    me = os.getpid()
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        try:
            cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes()
        except OSError:
            continue
        if fields[0] != "Z" and b"resource_tracker" not in cmdline:
            parents[int(entry.name)] = int(fields[1])
    out: set[int] = set()
    for pid in parents:
        p = pid
        while p in parents and p not in (0, 1):
            p = parents[p]
            if p == me:
                out.add(pid)
                break
    return out


def test_dask_settings_are_checked_when_made(ws: Workspace) -> None:
    with pytest.raises(ConfigError, match="give one of address"):
        RunnerConfig(dask={"address": "tcp://127.0.0.1:1", "local_workers": 2})
    # Batch jobs through dask-jobqueue: the system, cores and memory; its own keys pass.
    slurm = {"jobqueue": "slurm", "cores": 2, "memory": "4GB"}
    assert RunnerConfig(dask=slurm).dask == {**slurm, "jobs": 1}
    with pytest.raises(ConfigError, match=r"dask\.jobqueue: expected one of slurm, pbs"):
        RunnerConfig(dask={**slurm, "jobqueue": "torque"})
    with pytest.raises(ConfigError, match=r"dask\.memory: a batch job's memory must be given"):
        RunnerConfig(dask={"jobqueue": "slurm", "cores": 2})
    with pytest.raises(ConfigError, match=r"runner\.dask: give one of address .* or jobqueue"):
        RunnerConfig(dask={**slurm, "local_workers": 2})
    with pytest.raises(ConfigError, match=r"either jobs .* or adapt"):
        RunnerConfig(dask={**slurm, "jobs": 2, "adapt": {"maximum_jobs": 4}})
    with pytest.raises(ConfigError, match="minimum_jobs is more than maximum_jobs"):
        RunnerConfig(dask={**slurm, "adapt": {"minimum_jobs": 4, "maximum_jobs": 2}})
    with pytest.raises(ConfigError, match=r"dask\.worker_extra_args: expected a list of strings"):
        RunnerConfig(dask={**slurm, "worker_extra_args": "--nthreads 4"})
    with pytest.raises(
        ConfigError, match=r"dask\.cores: batch-job settings .*need jobqueue: slurm"
    ):
        RunnerConfig(dask={"address": "tcp://127.0.0.1:1", "cores": 2})
    with pytest.raises(ConfigError, match=r"dask\.adapt\.maxjobs: unknown setting"):
        RunnerConfig(dask={**slurm, "adapt": {"maxjobs": 4}})
    with pytest.raises(ConfigError, match="say which cluster"):
        RunnerConfig(conductor="dask")
    with pytest.raises(ConfigError, match=r"runner\.conductor: expected one of local, dask"):
        RunnerConfig(conductor="slurm")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="the runner has no cluster"):
        ws.runner([], [py_recipe("d", conductor="dask")])
    with pytest.raises(ConfigError, match="resources route jobs to Dask workers"):
        py_recipe("l", conductor="local", resources={"GPU": 1})
    with pytest.raises(ConfigError, match=r"recipe 'r'\.resources: expected names with amounts"):
        py_recipe("r", resources={"GPU": "one"})
    with pytest.raises(ConfigError, match=r"dask\.threads_per_worker: threads are set on the work"):
        RunnerConfig(dask={"address": "tcp://127.0.0.1:1", "threads_per_worker": 4})
    # YAML 1.1 (PyYAML) reads 16e9, a float without a dot, as a string: the docs' example loads.
    (ws.root / "train.py").write_text("pass\n")
    wf = ws.root / "workflow.yaml"
    wf.write_text(
        "runner: {dask: {local_workers: 1, resources: {GPU: 1, MEM: 16e9}}}\n"
        "recipes:\n  train: {kind: python, file: train.py, resources: {GPU: 1, MEM: 16e9}}\n"
        "patterns:\n  p: {glob: '*.txt', recipe: train}\n"
    )
    spec = load_workflow(wf)
    assert spec.recipes[0].resources == {"GPU": 1.0, "MEM": 16e9}
    assert spec.config.dask == {"local_workers": 1, "resources": {"GPU": 1.0, "MEM": 16e9}}


def test_run_dask_from_the_command_line(tmp_path: Path, cluster: Cluster) -> None:
    from .test_cli import MeowRun

    (tmp_path / "data").mkdir()
    wf = tmp_path / "workflow.yaml"
    wf.write_text(
        "runner: {base_dir: data}\n"
        "recipes:\n  r: {kind: bash, script: 'echo \"on $(hostname)\"'}\n"
        "patterns:\n  p: {glob: '*.txt', recipe: r}\n"
    )
    with MeowRun(wf, "--dask", cluster.address, cwd=tmp_path) as run:
        run.wait_ready()
        (tmp_path / "data" / "a.txt").write_text("x")
        run.wait_for("done in", stream="stderr")
        run.signal(signal.SIGINT)
        assert run.wait_exit() == 0, run.report()
    (job,) = [json.loads(p.read_text()) for p in tmp_path.glob(".meow/jobs/*/*/job.json")]
    assert job["state"] == "done"
    assert job["worker"]["address"] in cluster.workers.values()


def test_run_dask_says_what_is_wrong(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    wf = tmp_path / "workflow.yaml"
    wf.write_text(
        "runner: {base_dir: data, dask: {address: tcp://127.0.0.1:9, connect_timeout: 1}}\n"
        "recipes:\n  r: {kind: bash, script: 'true', conductor: dask}\n"
        "patterns:\n  p: {glob: '*.txt', recipe: r}\n"
    )
    cmd = [sys.executable, "-m", "meow_async", "run", str(wf)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=WAIT, check=False)
    assert out.returncode == 1, out
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in out.stderr
    out = subprocess.run(
        [*cmd, "--dask", "local:0"], capture_output=True, text=True, timeout=WAIT, check=False
    )
    assert out.returncode == 1, out
    assert "--dask: expected local:N with N workers (at least 1), e.g. local:4; got 'local:0'" in (
        out.stderr
    )
    out = subprocess.run(
        [*cmd, "--dask", ""], capture_output=True, text=True, timeout=WAIT, check=False
    )
    assert out.returncode == 1, out  # not a silent run without Dask
    assert "--dask: expected a scheduler address (tcp://host:8786) or local:N; got ''" in out.stderr


async def test_a_notebook_job_runs_on_a_worker(ws: Workspace, cluster: Cluster) -> None:
    pytest.importorskip("papermill")
    from meow_async import NotebookRecipe

    from .test_notebook import ANALYSIS

    recipes = [NotebookRecipe(name="nb", script=ANALYSIS)]
    patterns = [FilePattern(name="n", glob="in/*.txt", recipe="nb")]
    (job,) = await run_files(ws, cluster, patterns, recipes, {"in/a.txt": "one two"})
    assert job["state"] == "done", job["error"]
    assert job["worker"]["address"] in cluster.workers.values()
    assert "words 2 threshold 1" in (Path(job["dir"]) / "stdout.txt").read_text()
    assert (Path(job["dir"]) / "output.ipynb").exists()
