"""Dask jobs through faults of the cluster and of the runner, with real processes.

Each test starts its own scheduler and workers with Dask's command-line programs (as users
start them), since it breaks them: the scheduler goes away and comes back on the same port,
or the runner (the real CLI) is killed with SIGKILL and started again. The jobs record every
run of themselves in their folder, and each run first checks that no earlier run is still
alive: a job never runs twice at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

distributed = pytest.importorskip("distributed")

from meow_async import FilePattern  # noqa: E402
from meow_async.conductors import DaskConductor  # noqa: E402
from meow_async.conductors.process_log import PROCESS_LOG, last_attempt  # noqa: E402

from .conftest import WAIT, Workspace, poll_until, py_recipe, wait_until_sync  # noqa: E402
from .test_cli import MeowRun, job_metas, write_workflow  # noqa: E402

#: A job that checks, as it starts, that no earlier run of it is still alive (else it leaves
#: ``overlap``), then adds its pid and kernel start time to ``runs.txt`` in its folder. The first
#: run of a ``*.long`` file's job waits for ``release`` in its folder and exits with the code in
#: it; any other run ends at once.
JOB = """\
import os, sys, time
from pathlib import Path


def started(pid):
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return None if f[0] == "Z" else f[19]  # a zombie is dead


runs = Path("runs.txt")
earlier = [line.split() for line in runs.read_text().splitlines()] if runs.exists() else []
for pid, start in earlier:
    if started(int(pid)) == start:
        Path("overlap").write_text(f"{pid} {start} still alive when {os.getpid()} started")
with runs.open("a") as f:
    f.write(f"{os.getpid()} {started(os.getpid())}\\n")
if earlier or not input_file.endswith(".long"):  # input_file: the recipe's parameter
    print("run", len(earlier) + 1)
    sys.exit(0)
release = Path("release")
deadline = time.monotonic() + 120
while not release.exists() and time.monotonic() < deadline:
    time.sleep(0.02)
sys.exit(int(release.read_text() or 0) if release.exists() else 9)
"""


def _stat_start(pid: int) -> str | None:
    """A live (not zombie) process's kernel start time, or None."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return None if f[0] == "Z" else f[19]


def runs_of(job_dir: Path) -> list[tuple[int, str]]:
    """The runs a job recorded: (pid, kernel start time), in order."""
    try:
        text = (job_dir / "runs.txt").read_text()
    except FileNotFoundError:
        return []
    return [(int(p), s) for p, s in (line.split() for line in text.splitlines())]


def alive(run: tuple[int, str]) -> bool:
    return _stat_start(run[0]) == run[1]


def starts_in_log(job_dir: Path) -> list[list[str]]:
    """The ``start`` and ``pid`` lines of a job's ``process.log``."""
    try:
        text = (job_dir / PROCESS_LOG).read_text()
    except FileNotFoundError:
        return []
    return [
        f for f in (line.split() for line in text.splitlines()) if f and f[0] in ("start", "pid")
    ]


def hosts_in_log(job_dir: Path) -> list[str]:
    """The host of each attempt's worker, from the ``worker ADDRESS HOST`` lines."""
    text = (job_dir / PROCESS_LOG).read_text()
    return [f[2] for f in (line.split() for line in text.splitlines()) if f and f[0] == "worker"]


def assert_ran_alone(job: dict[str, Any], runs: int) -> None:
    """The job ran ``runs`` times, each process recorded in ``process.log``, never two at once."""
    job_dir = Path(job["dir"])
    assert not (job_dir / "overlap").exists(), (job_dir / "overlap").read_text()
    recorded = runs_of(job_dir)
    assert len(recorded) == runs, (job["id"], recorded)
    pids = [int(f[1]) for f in starts_in_log(job_dir) if f[0] == "pid"]
    assert pids == [pid for pid, _ in recorded], (pids, recorded)


#: Runs a command with its own host name: ``[*RENAMED, NAME, program, args...]``.
RENAMED = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"']


@functools.cache
def can_rename_host() -> bool:
    """Whether this test may start a process with another host name (root, Linux)."""
    try:
        done = subprocess.run([*RENAMED, "elsewhere", "true"], capture_output=True, timeout=WAIT)
    except OSError:
        return False
    return done.returncode == 0


def needs_another_host(host: str | None) -> None:
    if host is not None and not can_rename_host():
        pytest.skip("a worker on another host needs unshare --uts (root)")


class Dask:
    """A scheduler and workers as `python -m distributed.cli.*` processes, each in its own
    session (a worker's nanny and worker process share one), all killed at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[subprocess.Popen[bytes]] = []
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.address = ""

    def _start(
        self, args: list[str], name: str, prefix: list[str] | None = None
    ) -> subprocess.Popen[bytes]:
        with open(self.root / f"{name}.log", "wb") as out:
            proc = subprocess.Popen(
                [*(prefix or []), sys.executable, "-m", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def _launch_scheduler(self, port: int) -> tuple[subprocess.Popen[bytes], Path, str]:
        name = f"scheduler-{len(self.procs)}"
        where = self.root / f"{name}.json"
        proc = self._start(
            [
                "distributed.cli.dask_scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-dashboard",
                "--scheduler-file",
                str(where),
            ],
            name,
        )
        self.scheduler = proc
        return proc, where, name

    @staticmethod
    def _written(where: Path) -> str | None:
        """The address in a scheduler file, once it is all there."""
        with contextlib.suppress(OSError, ValueError, KeyError):
            return str(json.loads(where.read_text())["address"])
        return None

    def _started(self, proc: subprocess.Popen[bytes], where: Path, name: str) -> str:
        assert proc.poll() is None, self.log(name)
        self.address = self._written(where) or ""
        return self.address

    def start_scheduler(self, port: int = 0) -> str:
        """A scheduler on 127.0.0.1 (``port`` 0: one the OS hands out); its address."""
        proc, where, name = self._launch_scheduler(port)
        wait_until_sync(lambda: self._written(where) is not None or proc.poll() is not None)
        return self._started(proc, where, name)

    async def astart_scheduler(self, port: int = 0) -> str:
        """The same, without blocking the event loop (the runner runs on it)."""
        proc, where, name = self._launch_scheduler(port)
        await poll_until(lambda: self._written(where) is not None or proc.poll() is not None)
        return self._started(proc, where, name)

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    def kill_scheduler(self) -> None:
        assert self.scheduler is not None
        os.killpg(self.scheduler.pid, signal.SIGKILL)
        self.scheduler.wait()

    def start_worker(self, nthreads: int = 1, host: str | None = None) -> subprocess.Popen[bytes]:
        """A worker (under its nanny); ``host``: as if on another machine, i.e. with its own
        host name (a UTS namespace), but this machine's processes and files."""
        n = len(self.procs)
        return self._start(
            [
                "distributed.cli.dask_worker",
                self.address,
                "--name",
                f"w{n}",
                "--nthreads",
                str(nthreads),
                "--host",
                "127.0.0.1",
                "--no-dashboard",
                "--local-directory",
                str(self.root / f"w{n}"),
            ],
            f"worker-{n}",
            prefix=None if host is None else [*RENAMED, host],
        )

    async def wait_for_workers(self, n: int) -> None:
        async with distributed.Client(self.address, asynchronous=True, set_as_default=False) as c:
            await c.wait_for_workers(n, timeout=WAIT)

    def wait_for_workers_sync(self, n: int) -> None:
        asyncio.run(self.wait_for_workers(n))

    def close(self) -> None:
        for p in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


@pytest.fixture
def dask(tmp_path: Path) -> Iterator[Dask]:
    d = tmp_path / "dask"
    d.mkdir()
    cluster = Dask(d)
    try:
        yield cluster
    finally:
        cluster.close()


# -- the scheduler goes away and comes back -----------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "host", "client_gives_up"),
    [
        ("rerun", None, True),
        ("fail", None, True),
        ("rerun", "elsewhere", True),
        ("rerun", None, False),
    ],
    ids=["rerun", "fail", "rerun-another-host", "rerun-dask-client-reconnects"],
)
async def test_the_scheduler_goes_away_and_comes_back(
    ws: Workspace,
    dask: Dask,
    caplog: pytest.LogCaptureFixture,
    policy: Literal["rerun", "fail"],
    host: str | None,
    client_gives_up: bool,
) -> None:
    """One job runs, one waits on Dask's side (submitted, no free thread), two wait in the
    runner's queue; the scheduler is killed, then started again on the same port. With
    ``host``, the first worker runs as if on another machine: only it can stop its job.
    ``client_gives_up``: the scheduler stays away longer than ``connect_timeout``, so the
    runner makes a new client; else Dask's client reconnects by itself."""
    needs_another_host(host)
    caplog.set_level(logging.INFO, logger="meow_async")
    address = await dask.astart_scheduler()
    first_worker = dask.start_worker(nthreads=1, host=host)
    await dask.wait_for_workers(1)
    recipes = [py_recipe("job", JOB)]
    patterns = [
        FilePattern(name="long", glob="in/*.long", recipe="job", on_restart=policy),
        FilePattern(name="quick", glob="in/*.quick", recipe="job", on_restart=policy),
    ]
    runner = ws.runner(
        patterns,
        recipes,
        conductor="dask",
        dask={"address": address, "connect_timeout": 1 if client_gives_up else WAIT},
        max_jobs=2,
    )
    conductor = runner.conductor
    assert isinstance(conductor, DaskConductor)
    async with runner:
        await runner.wait_ready()
        ws.write("in/a.long")
        await poll_until(
            lambda: len(ws.jobs_list()) == 1 and bool(runs_of(_dir(ws.jobs_list()[0])))
        )
        (long_job,) = ws.jobs_list()
        long_dir = _dir(long_job)
        (first_run,) = runs_of(long_dir)
        assert hosts_in_log(long_dir) == [host or socket.gethostname()]
        for i in range(3):
            ws.write(f"in/{i}.quick")
        # All made; one of them submitted to Dask (max_jobs 2), waiting for the busy thread.
        await poll_until(lambda: len(ws.jobs_list()) == 4 and runner.stats.running == 2)
        client = conductor.client
        assert client is not None
        await _until_async(lambda: _scheduler_tasks(client), 2)
        quick_dirs = [_dir(j) for j in ws.jobs_list() if j["rule"] == "quick"]

        lost_at = time.monotonic()
        dask.kill_scheduler()
        await poll_until(lambda: f"lost the Dask scheduler at {address}" in caplog.text)
        # What ran is stopped where it ran: its worker lost the scheduler, so its result
        # could never arrive.
        await poll_until(lambda: not alive(first_run), timeout=10)
        killed_after = time.monotonic() - lost_at
        if policy == "fail":
            await poll_until(lambda: _meta(long_dir)["state"] == "failed", timeout=10)
        # Nothing else started while the scheduler was away.
        assert all(not runs_of(d) for d in quick_dirs)

        if client_gives_up:
            await poll_until(lambda: client.status == "closed", timeout=10)
        await dask.astart_scheduler(port=dask.port)
        assert dask.address == address
        dask.start_worker(nthreads=2)  # the first one does not come back (see below)
        async with asyncio.timeout(WAIT):
            await runner.wait_for(lambda s: s.finished >= 4)
        assert (conductor.client is client) is not client_gives_up
        stopping = time.monotonic()
    stop_took = time.monotonic() - stopping

    assert "reconnected to the Dask scheduler" in caplog.text
    assert killed_after < 5, killed_after
    assert stop_took < 5, stop_took
    # The first worker lost its scheduler and closed for good: Dask workers do not reconnect.
    await poll_until(lambda: first_worker.poll() is not None, timeout=10)

    jobs = {j["event"]["path"]: j for j in ws.jobs_list()}
    long_job = jobs[str(ws.base / "in/a.long")]
    first_try = long_job["attempts"][0]
    assert "lost the Dask scheduler" in first_try["error"], first_try
    if policy == "rerun":
        assert long_job["state"] == "done", long_job
        assert len(long_job["attempts"]) == 2
        assert (long_dir / "stdout.txt").read_text() == "run 2\n"
        assert_ran_alone(long_job, runs=2)
        # Another host's worker alone could stop the first run: the second ran here.
        assert hosts_in_log(long_dir) == [host or socket.gethostname(), socket.gethostname()]
    else:
        assert long_job["state"] == "failed", long_job
        assert "lost the Dask scheduler" in long_job["error"]
        assert len(long_job["attempts"]) == 1
        assert_ran_alone(long_job, runs=1)
    # Queued jobs, in the runner's queue or submitted to Dask, were not lost and ran once.
    for i in range(3):
        job = jobs[str(ws.base / f"in/{i}.quick")]
        assert job["state"] == "done", job
        assert len(job["attempts"]) == 1, job["attempts"]
        assert [f[0] for f in starts_in_log(_dir(job))] == ["start", "pid"]
        assert_ran_alone(job, runs=1)


async def _scheduler_tasks(client: Any) -> int:
    def count(dask_scheduler: Any) -> int:
        return len(dask_scheduler.tasks)

    n: int = await client.run_on_scheduler(count)
    return n


async def _until_async(ask: Any, want: Any) -> None:
    deadline = time.monotonic() + WAIT
    while (got := await ask()) != want:
        assert time.monotonic() < deadline, f"{got} after {WAIT}s, not {want}"
        await asyncio.sleep(0.02)


def _dir(job: dict[str, Any]) -> Path:
    return Path(job["dir"])


def _meta(job_dir: Path) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads((job_dir / "job.json").read_text())
    return meta


# -- the runner is killed and started again -----------------------------------------------------

#: Three jobs, cut off by the runner's death or not: settled per on_restart at the next start.
WORKFLOW = """\
runner: {{base_dir: data, jobs_dir: jobs, shutdown_timeout: 5, kill_timeout: 1, max_jobs: 4}}
recipes:
  job: {{kind: python, script: {script}}}
patterns:
  rerun: {{glob: "in/*.rerun.long", recipe: job, on_restart: rerun}}
  fail: {{glob: "in/*.fail.long", recipe: job, on_restart: fail}}
  ends: {{glob: "in/*.ends.long", recipe: job, on_restart: rerun}}
"""


@pytest.mark.parametrize("host", [None, "elsewhere"], ids=["this-host", "another-host"])
def test_a_runner_killed_while_dask_jobs_run_settles_them_at_the_next_start(
    tmp_path: Path, dask: Dask, host: str | None
) -> None:
    """`meow-async run --dask` is SIGKILLed while three jobs run on a worker. One of them ends
    while no runner watches; the next start records it as it ended, and settles the two cut
    off by their ``on_restart``: each killed first, never two processes of a job at once.

    On this host the restart itself finds and kills what is left (``process.log``'s holders);
    on another host it cannot, and the worker there stops what the restart settled."""
    needs_another_host(host)
    address = dask.start_scheduler()
    dask.start_worker(nthreads=3, host=host)
    dask.wait_for_workers_sync(1)
    root = tmp_path / "wf"
    root.mkdir()
    write_workflow(root, WORKFLOW.format(script=json.dumps(JOB)))
    (root / "data" / "in").mkdir()
    jobs_dir = root / "jobs"
    loop = ["--loop", "uvloop"] if os.environ.get("MEOW_TEST_LOOP") == "uvloop" else []
    args = ["workflow.yaml", "--dask", address, *loop]

    def job(rule: str) -> dict[str, Any]:
        (meta,) = [m for m in job_metas(jobs_dir) if m["rule"] == rule]
        return meta

    with MeowRun(*args, cwd=root) as first:
        first.wait_ready()
        for rule in ("rerun", "fail", "ends"):
            (root / "data" / "in" / f"a.{rule}.long").write_text(rule)
        wait_until_sync(
            lambda: (
                len(job_metas(jobs_dir)) == 3
                and all(len(runs_of(Path(m["dir"]))) == 1 for m in job_metas(jobs_dir))
            )
        )
        first.proc.kill()
        first.wait_exit()
    dirs = {rule: Path(job(rule)["dir"]) for rule in ("rerun", "fail", "ends")}
    first_runs = {rule: runs_of(d)[0] for rule, d in dirs.items()}
    assert {h for d in dirs.values() for h in hosts_in_log(d)} == {host or socket.gethostname()}
    # Dask cannot stop a task's thread: the jobs run on without a runner...
    assert all(alive(r) for r in first_runs.values())
    # ...and one of them ends while no runner watches.
    (dirs["ends"] / "release").write_text("3")
    wait_until_sync(lambda: _exit_code(dirs["ends"]) == 3 and not alive(first_runs["ends"]))
    assert alive(first_runs["rerun"])
    assert alive(first_runs["fail"])

    with MeowRun(*args, cwd=root) as second:
        second.wait_ready()
        killed = 2 if host is None else 0  # another host's processes are not probed here
        assert (
            f"recovered 1 job(s) to run (2 were cut off: 1 to rerun, 1 failed; {killed} "
            "orphaned process group(s) killed); 1 finished while no runner watched"
        ) in second.stderr, second.report()
        if host is None:  # killed before anything ran again
            assert not alive(first_runs["rerun"])
            assert not alive(first_runs["fail"])
        wait_until_sync(lambda: job("rerun")["state"] == "done", 10)
        # The failed one is not left running either (on another host: stopped by its worker).
        wait_until_sync(lambda: not alive(first_runs["fail"]), 10)
        second.signal(signal.SIGTERM)
        assert second.wait_exit() == 0, second.report()
    assert "Traceback" not in second.stderr, second.report()

    rerun, failed, ended = job("rerun"), job("fail"), job("ends")
    died = "the runner died while the job was running"
    assert [a["error"] for a in rerun["attempts"]] == [died, None], rerun
    assert (dirs["rerun"] / "stdout.txt").read_text() == "run 2\n"
    assert rerun["worker"]["address"].startswith("tcp://127.0.0.1:")
    assert_ran_alone(rerun, runs=2)
    assert failed["state"] == "failed", failed
    assert failed["error"] == died
    assert len(failed["attempts"]) == 1
    assert_ran_alone(failed, runs=1)
    assert ended["state"] == "failed", ended
    assert ended["exit_code"] == 3
    assert ended["error"].startswith("exit code 3")
    assert len(ended["attempts"]) == 1
    assert_ran_alone(ended, runs=1)  # recorded as it ended, not run again


def _exit_code(job_dir: Path) -> int | None:
    last = last_attempt(job_dir)
    return None if last is None else last.exit_code


# -- a job that ends as its scheduler dies ------------------------------------------------------

#: Records its run, says it waits, and ends (exit 0) once released.
ENDS = """\
import os, time
from pathlib import Path

with open("runs.txt", "a") as f:
    f.write(f"{os.getpid()}\\n")
Path("waiting").touch()
while not Path("release").exists():
    time.sleep(0.01)
"""


def _parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


async def test_a_job_that_ended_as_its_scheduler_died_is_recorded_not_rerun(
    ws: Workspace, dask: Dask, caplog: pytest.LogCaptureFixture
) -> None:
    """The job writes its exit and ends, but its result never reaches the runner: its worker
    is frozen (SIGSTOP) from before the end until the scheduler has been SIGKILLed. The runner
    reads process.log, as a restart would, and records the job done instead of running it
    again (``on_restart: rerun``)."""
    caplog.set_level(logging.INFO, logger="meow_async")
    address = await dask.astart_scheduler()
    dask.start_worker(nthreads=1)
    await dask.wait_for_workers(1)
    pattern = FilePattern(name="p", glob="in/*", recipe="job", on_restart="rerun")
    runner = ws.runner(
        [pattern],
        [py_recipe("job", ENDS)],
        conductor="dask",
        dask={"address": address, "connect_timeout": 1},
    )
    async with runner:
        await runner.wait_ready()
        ws.write("in/a")
        await poll_until(lambda: any(ws.jobs.glob("*/*/waiting")))
        job_dir = next(ws.jobs.glob("*/*/waiting")).parent
        last = last_attempt(job_dir)
        assert last is not None
        assert last.pid is not None
        job_pid, job_start = last.pid, str(last.pid_start)
        worker = _parent_of(job_pid)  # the worker process spawned it (setpriv execs)
        os.kill(worker, signal.SIGSTOP)
        try:
            (job_dir / "release").touch()
            await poll_until(lambda: _exit_code(job_dir) == 0 and not alive((job_pid, job_start)))
            dask.kill_scheduler()
            await poll_until(lambda: f"lost the Dask scheduler at {address}" in caplog.text)
        finally:
            os.kill(worker, signal.SIGCONT)
        await poll_until(lambda: _meta(job_dir)["state"] == "done", timeout=10)
    meta = _meta(job_dir)
    assert (meta["exit_code"], meta["error"]) == (0, None)
    assert [a["error"] for a in meta["attempts"]] == [None]
    assert len((job_dir / "runs.txt").read_text().split()) == 1  # not run again
    assert "recorded from its process.log, not run again" in caplog.text
