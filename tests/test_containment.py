"""What a job starts ends with it: daemons, ``nohup``, double forks, ``setsid`` included.

Each job runs in a cgroup of its own (where this machine lets the runner make one) or under a
child subreaper; either way what it left behind is killed when its process ends, when it
times out, when the runner stops, and when a restart settles it after a SIGKILL. The jobs
here start processes that leave their process group and record their pids; the tests look at
those processes in /proc.

Real runners, real processes; every wait is on a condition with a timeout.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from meow_async import FilePattern, Recipe, read_meta
from meow_async.conductors.containment import Cgroups, own_cgroup
from meow_async.conductors.zygote import fork_supported

from .conftest import WAIT, Workspace, poll_until, py_recipe, sh_recipe, wait_until_sync
from .test_job_start import alive, cli_runner

pytestmark = pytest.mark.skipif(not fork_supported(), reason="containment needs Linux")

#: Three processes that leave the job's process group, each recording its pid in escaped.txt:
#: setsid, a double fork (through a subshell that ends), nohup with setsid. Then the job ends
#: (``how`` = end) or runs on.
ESCAPES_SH = """\
setsid sleep 300 & echo $! >> escaped.txt
( setsid sh -c 'echo $$ >> escaped.txt; exec sleep 301' & )
nohup setsid sh -c 'echo $$ >> escaped.txt; exec sleep 302' > /dev/null 2>&1 &
while [ "$(wc -l < escaped.txt 2>/dev/null || echo 0)" -lt 3 ]; do sleep 0.01; done
[ "$how" = end ] && exit 0
sleep 120
"""

#: The same from a warm Python job: a setsid child, and a daemon made by a double fork.
ESCAPES_PY = """\
import os, subprocess, time
from pathlib import Path

child = subprocess.Popen(["setsid", "sleep", "303"])
with open("escaped.txt", "a") as f:
    f.write(f"{child.pid}\\n")
first = os.fork()
if first == 0:
    os.setsid()
    if os.fork() == 0:
        with open("escaped.txt", "a") as f:
            f.write(f"{os.getpid()}\\n")
        time.sleep(304)
    os._exit(0)
os.waitpid(first, 0)
while len(Path("escaped.txt").read_text().split()) < 2:
    time.sleep(0.01)
if how != "end":
    time.sleep(120)
"""

ESCAPED = {"sh": 3, "py": 2}


def cgroup_possible() -> bool:
    try:
        Cgroups.make(os.getpid()).close()
    except OSError:
        return False
    return True


def modes() -> list[Any]:
    return [
        pytest.param(
            "cgroup",
            marks=pytest.mark.skipif(
                own_cgroup() is None or not cgroup_possible(),
                reason="this machine lets no process make a cgroup v2 here",
            ),
        ),
        pytest.param("subreaper"),
    ]


def escaped(job_dir: Path) -> list[int]:
    try:
        return [int(p) for p in (job_dir / "escaped.txt").read_text().split()]
    except FileNotFoundError:
        return []


def all_escaped(ws: Workspace) -> bool:
    jobs = ws.jobs_list()
    return len(jobs) == 2 and all(len(escaped(Path(j["dir"]))) == ESCAPED[j["rule"]] for j in jobs)


def workload(how: str, **recipe: Any) -> tuple[list[FilePattern], list[Recipe]]:
    params = {"how": how}
    recipes: list[Recipe] = [
        sh_recipe("sh", ESCAPES_SH, parameters=params, **recipe),
        py_recipe("py", ESCAPES_PY, parameters=params, **recipe),
    ]
    patterns = [FilePattern(name=r.name, glob=f"*.{r.name}", recipe=r.name) for r in recipes]
    return patterns, recipes


def leftovers(ws: Workspace) -> list[int]:
    return [p for j in ws.jobs_list() for p in escaped(Path(j["dir"])) if alive(p)]


async def run_both(ws: Workspace, how: str, timeout: float | None = None, **runner: Any) -> None:
    """Both jobs, run to their ends, and nothing of them left running."""
    patterns, recipes = workload(how, timeout=timeout)
    async with ws.runner(patterns, recipes, **runner) as r:
        ws.write("a.sh")
        ws.write("a.py")
        async with asyncio.timeout(WAIT):
            await r.wait_for(lambda s: s.finished >= 2)
        await poll_until(lambda: not leftovers(ws))


@pytest.fixture(autouse=True)
def _no_strays(ws: Workspace) -> Any:
    """Whatever a failed test leaves running is killed."""
    yield
    for job in ws.jobs_list():
        for pid in escaped(Path(job["dir"])):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("mode", modes())
async def test_what_a_job_left_running_is_killed_when_it_ends(ws: Workspace, mode: str) -> None:
    await run_both(ws, "end", containment=mode)
    for job in ws.jobs_list():
        assert (job["state"], job["exit_code"]) == ("done", 0), job["error"]
        assert job["containment"] == mode
        assert len(escaped(Path(job["dir"]))) == ESCAPED[job["rule"]]
        if mode == "cgroup":  # a subreaper cannot tell whose they were if both ended at once
            assert job["left_running"] == ESCAPED[job["rule"]]


@pytest.mark.parametrize("mode", modes())
async def test_what_a_job_started_is_killed_at_its_timeout(ws: Workspace, mode: str) -> None:
    await run_both(ws, "run", timeout=1.0, containment=mode, kill_timeout=0.5)
    for job in ws.jobs_list():
        assert job["state"] == "failed"
        assert job["error"] == "timed out after 1s", job["error"]
        assert job["containment"] == mode
        assert len(escaped(Path(job["dir"]))) == ESCAPED[job["rule"]]


@pytest.mark.parametrize("mode", modes())
async def test_what_running_jobs_started_is_gone_when_the_runner_has_stopped(
    ws: Workspace, mode: str
) -> None:
    patterns, recipes = workload("run")
    async with ws.runner(patterns, recipes, containment=mode, shutdown_timeout=0.2) as r:
        ws.write("a.sh")
        ws.write("a.py")
        await poll_until(lambda: all_escaped(ws))
    # Stopped (run() has returned): nothing of the jobs is left, not even for a moment.
    assert leftovers(ws) == []
    assert r.stats.failed == 2
    for job in ws.jobs_list():
        assert job["error"] == "stopped: the runner shut down first"
        assert job["containment"] == mode


@pytest.mark.parametrize("mode", modes())
def test_what_a_killed_runner_s_jobs_started_is_killed_at_the_restart(
    ws: Workspace, mode: str
) -> None:
    """`meow-async run` is SIGKILLed while the jobs run (their fork server dies with it, they
    do not): the next start finds each job cut off and kills all it started."""
    root = ws.root
    _, recipes = workload("run")
    (root / "workflow.yaml").write_text(
        json.dumps(
            {
                "runner": {"base_dir": "data", "jobs_dir": "jobs", "containment": mode},
                "recipes": {
                    r.name: {"kind": r.kind, "script": r.script, "parameters": {"how": "run"}}
                    for r in recipes
                },
                "patterns": {
                    r.name: {"glob": f"*.{r.name}", "recipe": r.name, "on_restart": "fail"}
                    for r in recipes
                },
            }
        )
    )
    with cli_runner(root, "first") as (proc, _):
        ws.write("a.sh")
        ws.write("a.py")
        wait_until_sync(lambda: all_escaped(ws))
        proc.kill()
    assert len(leftovers(ws)) == 5  # the jobs do not die with their runner
    with cli_runner(root, "second") as (proc, err):
        text = err.read_text()  # recovery is done once the runner says it started
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=WAIT) == 0, err.read_text()
    assert leftovers(ws) == [], text
    assert "2 were cut off: 0 to rerun, 2 failed" in text, text
    for job in ws.jobs_list():
        meta = read_meta(Path(job["dir"]))
        assert meta["error"] == "the runner died while the job was running"
    if mode == "cgroup":
        assert "in its cgroup" in text, text
        cgroups = [c for j in ws.jobs_list() for c in _cgroups_of(Path(j["dir"]))]
        assert len(cgroups) == 2
        assert not any(os.path.exists(c) for c in cgroups)  # removed, not only emptied


def _cgroups_of(job_dir: Path) -> list[str]:
    lines = (job_dir / "process.log").read_text().splitlines()
    return [line.split(None, 4)[4] for line in lines if line.startswith("pid ")]


async def test_a_bash_job_has_sigpipe_as_a_shell_has_it(ws: Workspace) -> None:
    """The fork server's Python ignores SIGPIPE; a job it starts must not (``yes | head``
    ends quietly, as in a terminal)."""
    pattern = FilePattern(name="p", glob="*.in", recipe="sh")
    recipe = sh_recipe("sh", "yes | head -n 1\n")
    async with ws.runner([pattern], [recipe]) as r:
        ws.write("a.in")
        async with asyncio.timeout(WAIT):
            await r.wait_for(lambda s: s.finished >= 1)
    (job,) = ws.jobs_list()
    assert job["state"] == "done", job["error"]
    assert (Path(job["dir"]) / "stdout.txt").read_text() == "y\n"
    # Nothing on stderr (no "Broken pipe"): an empty stderr.txt is not kept (drop_empty_output).
    assert not (Path(job["dir"]) / "stderr.txt").exists()


#: The first attempt leaves a setsid child behind and fails; the retry leaves nothing.
ESCAPES_ONCE_SH = """\
if [ ! -e escaped.txt ]; then
  setsid sleep 300 & echo $! >> escaped.txt
  exit 1
fi
"""


@pytest.mark.parametrize("mode", modes()[:1])
async def test_left_running_describes_the_last_attempt_only(ws: Workspace, mode: str) -> None:
    """A retry (as a ``meow-async jobs rerun``) starts afresh: what an earlier attempt left
    running is not said of the attempt that ended last."""
    pattern = FilePattern(name="p", glob="*.in", recipe="sh", retries=1, retry_backoff=0)
    async with ws.runner([pattern], [sh_recipe("sh", ESCAPES_ONCE_SH)], containment=mode) as r:
        ws.write("a.in")
        async with asyncio.timeout(WAIT):
            await r.wait_for(lambda s: s.finished >= 1)
    (job,) = ws.jobs_list()
    assert job["state"] == "done", job["error"]
    assert len(job["attempts"]) == 2
    assert job["containment"] == mode
    assert "left_running" not in job
    assert [p for p in escaped(Path(job["dir"])) if alive(p)] == []
