"""How jobs start and what their process.log lets a restart settle.

Python jobs start either as forks of the warm fork server or as new interpreters (spawned);
a job must not be able to tell which. Each attempt is written to ``process.log`` by the job's
own process (start, pid, exit), so a dead fork server or a runner killed at any point leaves
enough on disk to record what ended and to kill what is left, running no job twice.

Real runners, real processes and real files; every wait is on a condition with a timeout.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import json
import os
import re
import signal
import subprocess
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from meow_async import (
    ConfigError,
    Event,
    FilePattern,
    Handler,
    LocalConductor,
    Rule,
    Runner,
    WorkflowFileError,
    load_workflow,
    read_meta,
)
from meow_async.conductors.forkserver import start_time_of
from meow_async.conductors.process_log import last_attempt, stop_orphan
from meow_async.conductors.zygote import fork_supported
from meow_async.model.patterns import Change

from .conftest import (
    PYTHON,
    WAIT,
    Workspace,
    poll_until,
    py_recipe,
    sh_recipe,
    wait_until_sync,
)

NEEDS_FORK = pytest.mark.skipif(not fork_supported(), reason="the fork server needs Linux")


def start_modes() -> list[Any]:
    """Parameters ``fork`` (True: warm, a fork of the fork server; False: spawned)."""
    return [
        pytest.param(True, id="fork", marks=[NEEDS_FORK]),
        pytest.param(False, id="spawn"),
    ]


#: Bound for a wait on something that normally takes well under a second.
SHORT = 10.0


# -- helpers ------------------------------------------------------------------------------------


async def until(runner: Runner, n: int) -> None:
    async with asyncio.timeout(WAIT):
        await runner.wait_for(lambda s: s.finished >= n)


def log_lines(job_dir: Path) -> list[list[str]]:
    """``process.log`` as lists of fields."""
    try:
        text = (job_dir / "process.log").read_text()
    except FileNotFoundError:
        return []
    return [line.split() for line in text.splitlines()]


def kinds(job_dir: Path) -> list[str]:
    return [fields[0] for fields in log_lines(job_dir)]


def job_for(ws: Workspace, name: str) -> dict[str, Any]:
    """The only job triggered by the file called ``name``."""
    (meta,) = [j for j in ws.jobs_list() if Path(j["event"]["path"]).name == name]
    return meta


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie (an orphan may wait for a reaper)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def holds_open(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open (a link in /proc/PID/fd)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                return True
        except OSError:
            continue
    return False


def make_queued_job(ws: Workspace, pattern: FilePattern, recipe: Any, name: str) -> Path:
    """A job folder exactly as the handler makes it (job.json: queued), not started."""
    path = ws.write(name)
    event = Event(
        kind="file",
        path=str(path),
        base=str(ws.base),
        rule=Rule(pattern=pattern, recipe=recipe),
        change=Change.created,
        key=f"test:{name}",
    )
    ws.jobs.mkdir(parents=True, exist_ok=True)
    (job,) = Handler(ws.jobs.absolute()).make_jobs(event)
    assert read_meta(job.dir)["state"] == "queued"
    return job.dir


# -- one behaviour, two ways to start -----------------------------------------------------------

#: One script, what it does chosen by the name of its input file.
BEHAVIOUR = r'''"""Runs as a script would: python script.py."""
import atexit, json, os, sys
from pathlib import Path

atexit.register(print, "atexit ran")
case = Path(input_file).stem
if case.startswith("probe"):
    print(json.dumps({
        "env": dict(os.environ),
        "cwd": os.getcwd(),
        "name": __name__,
        "file": __file__,
        "argv": sys.argv,
        "path0": sys.path[0],
        "stdin": os.readlink("/proc/self/fd/0"),
        "stdin_read": sys.stdin.read(),
        "pid": os.getpid(),
        "pgid": os.getpgid(0),
        "sid": os.getsid(0),
    }))
    print("to stderr", file=sys.stderr)
elif case == "exit3":
    sys.exit(3)
elif case == "raise":
    raise ValueError("bad input")
elif case == "message":
    sys.exit("no good")
'''

#: Ignores SIGTERM (records it), and so does its child: only the SIGKILL to the group ends them.
STUBBORN = r"""
import signal, subprocess, time

signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen(["sleep", "60"])  # SIG_IGN survives exec: sleep ignores it too
with open("child.pid", "w") as f:
    f.write(str(child.pid))

def on_term(signum, frame):
    with open("signals.txt", "a") as f:
        f.write("SIGTERM\n")

signal.signal(signal.SIGTERM, on_term)
open("ready", "w").close()
while True:
    time.sleep(60)
"""


def check_process_log(meta: dict[str, Any], mode: str, *, exited: bool) -> None:
    """start (mode), pid (the job's), exit (its code): the attempt as the job wrote it.

    A forked job writes its pid line itself before its script runs; a spawned job's is written
    by the runner once the process exists, so a quick job's exit line may come first."""
    job_dir = Path(meta["dir"])
    lines = log_lines(job_dir)
    start, *rest = lines
    by_kind = {fields[0]: fields for fields in rest}
    assert start[0] == "start", lines
    assert sorted(kinds(job_dir)[1:]) == (["exit", "pid"] if exited else ["pid"]), lines
    if mode == "fork":
        assert kinds(job_dir)[1] == "pid", lines
    assert start[1] == "1"
    assert start[3] == mode
    assert float(start[2]) == pytest.approx(meta["started"], abs=1e-5)
    pid = by_kind["pid"]
    assert int(pid[1]) == meta["pid"]
    assert int(pid[2]) > 0  # the kernel's start time: tells the process from a reused pid
    if exited:
        exit_line = by_kind["exit"]
        assert int(exit_line[1]) == meta["exit_code"] & 0xFF
        assert float(start[2]) <= float(exit_line[2]) <= meta["finished"]


@pytest.mark.parametrize("fork", start_modes())
async def test_a_job_behaves_the_same_forked_or_spawned(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, fork: bool
) -> None:
    monkeypatch.setenv("MEOW_TEST_ORDINARY", "from the runner's environment")
    monkeypatch.setenv("MEOW_TEST_GONE", "unset while the runner runs")
    mode = "fork" if fork else "spawn"
    patterns = [
        FilePattern(name="p", glob="*.in", recipe="r"),
        FilePattern(name="t", glob="*.slow", recipe="t"),
    ]
    recipes = [
        py_recipe("r", BEHAVIOUR, fork=fork),
        py_recipe("t", STUBBORN, fork=fork, timeout=0.6),
    ]
    async with ws.runner(patterns, recipes, max_jobs=8, kill_timeout=0.3) as r:
        for name in ("probe.in", "exit3.in", "raise.in", "message.in", "stubborn.slow"):
            ws.write(name)
        await until(r, 5)
        # The runner's environment changes while it runs: a later job sees it as it is then.
        monkeypatch.setenv("MEOW_TEST_LATER", "set while the runner runs")
        monkeypatch.delenv("MEOW_TEST_GONE")
        env_later = dict(os.environ)
        ws.write("probe-later.in")
        await until(r, 6)

    for meta in ws.jobs_list():
        assert meta["start"] == mode
        for name in ("stdout.txt", "stderr.txt"):  # kept if written to, removed if empty
            kept = Path(meta["dir"]) / name
            assert not kept.exists() or kept.stat().st_size > 0, (meta["id"], name)
    assert (Path(job_for(ws, "probe.in")["dir"]) / "stdout.txt").exists()

    later = job_for(ws, "probe-later.in")
    seen_later = json.loads((Path(later["dir"]) / "stdout.txt").read_text().splitlines()[0])
    assert seen_later["env"] == job_env(env_later, later, mode)
    assert seen_later["env"]["MEOW_TEST_LATER"] == "set while the runner runs"
    assert "MEOW_TEST_GONE" not in seen_later["env"]

    # The job's world: environment, folder, name, argv, import path, stdin, own session.
    probe = job_for(ws, "probe.in")
    job_dir = Path(probe["dir"])
    out = (job_dir / "stdout.txt").read_text().splitlines()
    assert out[1:] == ["atexit ran"]
    seen = json.loads(out[0])
    mine = {
        "MEOW_JOB_ID": probe["id"],
        "MEOW_JOB_DIR": str(job_dir),
        "MEOW_PARAMS": str(job_dir / "params.json"),
        "MEOW_TEST_ORDINARY": "from the runner's environment",
        "MEOW_TEST_GONE": "unset while the runner runs",
    }
    assert {k: seen["env"].get(k) for k in mine} == mine
    script = str(job_dir / "script.py")
    assert seen["cwd"] == str(job_dir)
    assert seen["name"] == "__main__"
    assert seen["file"] == script
    assert seen["argv"] == [script]
    assert seen["path0"] == str(job_dir)
    assert seen["stdin"] == "/dev/null"
    assert seen["stdin_read"] == ""
    assert seen["pgid"] == seen["pid"] == seen["sid"]  # its own process group and session
    assert seen["pid"] == probe["pid"]
    assert (job_dir / "stderr.txt").read_text() == "to stderr\n"
    assert (probe["state"], probe["exit_code"], probe["error"]) == ("done", 0, None)
    check_process_log(probe, mode, exited=True)

    # Exit codes as `python script.py` gives them; atexit handlers run whatever the ending.
    expected = {
        "exit3.in": (3, "exit code 3", ""),
        "raise.in": (1, "exit code 1: ValueError: bad input", None),
        "message.in": (1, "exit code 1: no good", "no good\n"),
    }
    for name, (code, error, stderr) in expected.items():
        meta = job_for(ws, name)
        job_dir = Path(meta["dir"])
        assert (meta["state"], meta["exit_code"], meta["error"]) == ("failed", code, error), name
        assert (job_dir / "stdout.txt").read_text() == "atexit ran\n", name
        if stderr is not None:  # "": nothing written, so no stderr.txt kept
            err = job_dir / "stderr.txt"
            assert (err.read_text() if err.exists() else "") == stderr, name
            assert err.exists() == bool(stderr), name
        check_process_log(meta, mode, exited=True)

    # The traceback is on stderr, ending with the script's own frame and the error.
    tb = (Path(job_for(ws, "raise.in")["dir"]) / "stderr.txt").read_text()
    assert tb.startswith("Traceback (most recent call last):\n"), tb
    assert tb.endswith('    raise ValueError("bad input")\nValueError: bad input\n'), tb

    # Over its timeout: SIGTERM (ignored), then SIGKILL to the group, its child with it.
    slow = job_for(ws, "stubborn.slow")
    job_dir = Path(slow["dir"])
    assert (job_dir / "ready").exists(), "the job took longer to start than its timeout"
    assert slow["state"] == "failed"
    assert slow["error"] == "timed out after 0.6s"
    assert slow["timed_out"] is True
    assert slow["exit_code"] == -signal.SIGKILL
    assert (job_dir / "signals.txt").read_text() == "SIGTERM\n"
    assert slow["finished"] - slow["started"] >= 0.6 + 0.3  # timeout, then kill_timeout
    check_process_log(slow, mode, exited=False)  # killed: it never wrote its exit
    child = int((job_dir / "child.pid").read_text())
    await poll_until(lambda: not alive(child), timeout=SHORT)


def job_env(runner_env: dict[str, str], meta: dict[str, Any], mode: str) -> dict[str, str]:
    """The runner's environment and the job's variables; a spawned job is also told where to
    write its exit (MEOW_PROCESS_LOG), as a Bash job's EXIT trap needs."""
    env = {**runner_env, **meta["env"]}
    if mode == "spawn":
        env["MEOW_PROCESS_LOG"] = str(Path(meta["dir"]) / "process.log")
    return env


@pytest.mark.parametrize("fork", start_modes())
async def test_a_job_s_environment_is_os_environ_and_its_own_variables(
    ws: Workspace, fork: bool
) -> None:
    """Exactly the runner's os.environ plus the job's variables, not what C code in the
    runner's process set with setenv() behind os.environ's back."""
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.setenv(b"MEOW_TEST_C_ONLY", b"set by C code", 1) == 0
    try:
        assert "MEOW_TEST_C_ONLY" not in os.environ
        pattern = FilePattern(name="p", glob="*.in", recipe="r")
        script = "import json, os\nprint(json.dumps(dict(os.environ)))\n"
        async with ws.runner([pattern], [py_recipe("r", script, fork=fork)]) as r:
            ws.write("a.in")
            await until(r, 1)
        runner_env = dict(os.environ)
    finally:
        libc.unsetenv(b"MEOW_TEST_C_ONLY")
    meta = job_for(ws, "a.in")
    seen = json.loads((Path(meta["dir"]) / "stdout.txt").read_text())
    assert seen == job_env(runner_env, meta, "fork" if fork else "spawn")


TRACEBACK = r"""
def check(value):
    raise ValueError(f"bad input: {value}")

check(1)
"""

#: The job's own frames as `python script.py` shows them, however it was started.
#: Python 3.11's excepthook prints the exception's own __traceback__ and ignores the one it is
#: given (CPython's PyErr_Display only uses it when the exception has none).


@pytest.mark.parametrize("fork", start_modes())
async def test_a_traceback_shows_the_script_s_frames_only(ws: Workspace, fork: bool) -> None:
    pattern = FilePattern(name="p", glob="*.in", recipe="r")
    async with ws.runner([pattern], [py_recipe("r", TRACEBACK, fork=fork)]) as r:
        ws.write("a.in")
        await until(r, 1)
    meta = job_for(ws, "a.in")
    script = Path(meta["dir"]) / "script.py"
    stderr = (Path(meta["dir"]) / "stderr.txt").read_text()
    # What `python script.py` prints, line numbers counted in the rendered script.
    lines = script.read_text().splitlines()
    call, raised = lines.index("check(1)") + 1, lines.index("def check(value):") + 2
    assert stderr == (
        "Traceback (most recent call last):\n"
        f'  File "{script}", line {call}, in <module>\n'
        "    check(1)\n"
        f'  File "{script}", line {raised}, in check\n'
        '    raise ValueError(f"bad input: {value}")\n'
        "ValueError: bad input: 1\n"
    )
    assert meta["error"] == "exit code 1: ValueError: bad input: 1"


#: Python's own ending: non-daemon threads are joined, then atexit handlers run. Each step
#: writes when it happened; the thread is still working when the last line has run.
ENDING = r"""
import atexit, threading, time

def stamp(name):
    with open(name, "w") as f:
        f.write("%.6f\n" % time.time())

def late():
    time.sleep(0.2)
    stamp("thread.txt")

atexit.register(stamp, "atexit.txt")
threading.Thread(target=late).start()
"""

AT_EXIT = r"""
import atexit, time

def stamp(name):
    with open(name, "w") as f:
        f.write("%.6f\n" % time.time())

atexit.register(stamp, "atexit.txt")
"""


def stamps(job_dir: Path) -> dict[str, float]:
    """When the thread finished, atexit ran and the exit line was written (those that did)."""
    found = {
        name: float((job_dir / f"{name}.txt").read_text())
        for name in ("thread", "atexit")
        if (job_dir / f"{name}.txt").exists()
    }
    for fields in log_lines(job_dir):
        if fields[0] == "exit":
            found["exit"] = float(fields[2])
    return found


@pytest.mark.parametrize("fork", start_modes())
async def test_a_job_waits_for_its_non_daemon_threads(ws: Workspace, fork: bool) -> None:
    """As `python script.py` does: the interpreter joins them before it exits."""
    pattern = FilePattern(name="p", glob="*.in", recipe="r")
    async with ws.runner([pattern], [py_recipe("r", ENDING, fork=fork)]) as r:
        ws.write("a.in")
        await until(r, 1)
    meta = job_for(ws, "a.in")
    assert meta["state"] == "done"
    assert "thread" in stamps(Path(meta["dir"]))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
async def test_a_bash_job_killed_by_a_signal_records_no_exit(
    ws: Workspace, sig: signal.Signals
) -> None:
    """Bash runs its EXIT trap when a signal kills it, with the last command's status (0 while
    a command runs): recorded as an exit, a restart would take a killed job for a finished one.
    """
    script = "echo $$ > shell.pid\nsleep 60\necho never\n"
    pattern = FilePattern(name="p", glob="*.in", recipe="sh")
    async with ws.runner([pattern], [sh_recipe("sh", script)]) as r:
        ws.write("a.in")
        await poll_until(lambda: _has_pid(ws), timeout=SHORT)
        job_dir = Path(ws.jobs_list()[0]["dir"])
        shell = int((job_dir / "shell.pid").read_text())
        # Once `sleep` runs: a signal that comes while Bash forks it reaches the copy of Bash
        # that is about to become `sleep`, which drops it, and Bash defers its own trap until
        # `sleep` ends (Bash's race, not the job's).
        await poll_until(lambda: _runs_sleep(shell), timeout=SHORT)
        os.killpg(shell, sig)  # as a stop or a shutdown does
        await until(r, 1)
    meta = job_for(ws, "a.in")
    assert meta["exit_code"] == -sig
    assert kinds(job_dir) == ["start", "pid"], log_lines(job_dir)


def _runs_sleep(shell: int) -> bool:
    """Whether the shell's child has become `sleep`."""
    try:
        kids = Path(f"/proc/{shell}/task/{shell}/children").read_text().split()
        return any(Path(f"/proc/{k}/comm").read_text().strip() == "sleep" for k in kids)
    except OSError:
        return False


def _has_pid(ws: Workspace) -> bool:
    jobs = ws.jobs_list()
    path = Path(jobs[0]["dir"]) / "shell.pid" if jobs else None
    return path is not None and path.exists() and path.read_text().strip().isdigit()


@pytest.mark.parametrize("fork", start_modes())
async def test_the_exit_line_is_written_after_atexit_handlers(ws: Workspace, fork: bool) -> None:
    """``exit`` in process.log says the process is done: a restart that finds it records the
    job as ended and kills whatever still runs in its group."""
    pattern = FilePattern(name="p", glob="*.in", recipe="r")
    async with ws.runner([pattern], [py_recipe("r", AT_EXIT, fork=fork)]) as r:
        ws.write("a.in")
        await until(r, 1)
    when = stamps(Path(job_for(ws, "a.in")["dir"]))
    assert when["atexit"] <= when["exit"]


@pytest.mark.parametrize("fork", start_modes())
async def test_a_job_ends_in_python_s_order_and_then_records_its_exit(
    ws: Workspace, fork: bool
) -> None:
    """Threads joined, then atexit handlers, then the exit line: recorded as ended only once
    all of it is done (a restart would otherwise kill the rest of it)."""
    pattern = FilePattern(name="p", glob="*.in", recipe="r")
    async with ws.runner([pattern], [py_recipe("r", ENDING, fork=fork)]) as r:
        ws.write("a.in")
        await until(r, 1)
    when = stamps(Path(job_for(ws, "a.in")["dir"]))
    assert sorted(when, key=when.__getitem__) == ["thread", "atexit", "exit"], when


# -- warm starts --------------------------------------------------------------------------------


@NEEDS_FORK
async def test_forked_jobs_each_get_their_own_numpy_random_state(ws: Workspace) -> None:
    pytest.importorskip("numpy")
    script = (
        "import sys\n"
        "preloaded = 'numpy' in sys.modules\n"
        "import numpy\n"
        "print(preloaded, repr(numpy.random.random()))\n"
    )
    pattern = FilePattern(name="p", glob="*.in", recipe="r")
    async with ws.runner([pattern], [py_recipe("r", script, preload=["numpy"])]) as r:
        ws.write("a.in")
        ws.write("b.in")
        await until(r, 2)
    jobs = ws.jobs_list()
    assert [(j["state"], j["start"]) for j in jobs] == [("done", "fork")] * 2
    outs = [(Path(j["dir"]) / "stdout.txt").read_text().split() for j in jobs]
    assert [o[0] for o in outs] == ["True", "True"]  # forked from a server that imported it
    assert outs[0][1] != outs[1][1]


#: Records who started it (pid, parent), waits for the release file, records that it finished.
BLOCKED = r"""
import os, time
from pathlib import Path

with open("ran.txt", "a") as f:
    f.write("%d %d\n" % (os.getpid(), os.getppid()))
while not Path(release).exists():
    time.sleep(0.01)
with open("finished.txt", "a") as f:
    f.write("%d\n" % os.getpid())
"""


@NEEDS_FORK
async def test_a_fork_server_killed_mid_burst_loses_no_job(ws: Workspace) -> None:
    release = ws.root / "release"
    pattern = FilePattern(name="p", glob="*.in", recipe="r")  # on_restart: rerun
    recipe = py_recipe("r", BLOCKED, parameters={"release": str(release)})
    names = [f"{i:02d}.in" for i in range(10)]
    slots = 4
    async with ws.runner([pattern], [recipe], max_jobs=slots) as r:
        conductor = r.conductor
        assert isinstance(conductor, LocalConductor)
        server = conductor._server
        assert server is not None  # started before the first job
        first = server.pid
        assert first is not None
        for name in names:
            ws.write(name)
        # Every slot's job is in its script (its line written whole, parent read before the
        # kill), the rest queued: the server is between starts.
        await poll_until(
            lambda: sum(p.read_text().endswith("\n") for p in ws.jobs.glob("*/*/ran.txt")) == slots
        )
        os.kill(first, signal.SIGKILL)
        # Each cut-off job's process is killed before the job is queued again.
        async with asyncio.timeout(WAIT):
            await r.wait_for(lambda s: s.retries == slots)
        release.touch()
        await until(r, len(names))
        server = conductor._server
        assert server is not None
        second = server.pid
        assert second is not None
        assert second != first
        assert alive(second)
        ws.write("after.in")  # and on it goes, warm
        await until(r, len(names) + 1)
    assert (r.stats.done, r.stats.failed, r.stats.skipped) == (len(names) + 1, 0, 0)
    assert r.stats.retries == slots

    jobs = ws.jobs_list()
    assert sorted(Path(j["event"]["path"]).name for j in jobs) == sorted([*names, "after.in"])
    died = re.compile(
        rf"the fork server \(pid {first}\) died( \(killed by SIGKILL\))? "
        "while the job was running"
    )
    interrupted = 0
    for meta in jobs:
        job_dir = Path(meta["dir"])
        assert meta["state"] == "done", meta
        *cut, last = meta["attempts"]
        assert (last["exit_code"], last["error"]) == (0, None)
        assert len(cut) <= 1
        interrupted += len(cut)
        ran = [
            (int(pid), int(parent))
            for pid, parent in (
                line.split() for line in (job_dir / "ran.txt").read_text().splitlines()
            )
        ]
        # One process per attempt; the last ran to its end, from the new fork server.
        assert len(ran) == len(meta["attempts"]), (ran, meta["attempts"])
        assert (job_dir / "finished.txt").read_text().split() == [str(ran[-1][0])]
        assert ran[-1][1] == second
        if cut:
            assert died.fullmatch(cut[0]["error"]), cut
            (pid, parent), _ = ran
            assert parent == first
            assert not alive(pid)  # killed, not left to finish
        assert {f[3] for f in log_lines(job_dir) if f[0] == "start"} == {"fork"}
        assert log_lines(job_dir)[-1][:2] == ["exit", "0"]
    assert interrupted == slots


@NEEDS_FORK
async def test_a_job_that_ends_while_its_dead_fork_server_is_settled_is_not_rerun(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interleaving, made certain: the job ends after its attempt was read as unfinished,
    before the kill."""
    release = ws.root / "release"

    def job_ends_first(job_dir: Path, attempt: Any) -> bool | None:
        release.touch()
        wait_until_sync(lambda: "exit" in kinds(job_dir), SHORT)
        return stop_orphan(job_dir, attempt)

    monkeypatch.setattr("meow_async.conductors.process_log.stop_orphan", job_ends_first)
    pattern = FilePattern(name="p", glob="*.in", recipe="r")
    recipe = py_recipe("r", BLOCKED, parameters={"release": str(release)})
    async with ws.runner([pattern], [recipe]) as r:
        conductor = r.conductor
        assert isinstance(conductor, LocalConductor)
        assert conductor._server is not None
        assert conductor._server.pid is not None
        ws.write("a.in")
        await poll_until(lambda: any(ws.jobs.glob("*/*/ran.txt")))
        os.kill(conductor._server.pid, signal.SIGKILL)
        await until(r, 1)
    meta = job_for(ws, "a.in")
    assert (Path(meta["dir"]) / "finished.txt").read_text().count("\n") == 1  # ran once
    assert [a["error"] for a in meta["attempts"]] == [None]


# -- restarts: what process.log tells ------------------------------------------------------------

#: Keeps the job.json it saw while running (what a runner killed now would leave), counts runs.
RECORDS_ITSELF = r"""
import shutil, sys

shutil.copy("job.json", "job.json.while-running")
with open(counter, "a") as f:
    f.write("ran\n")
if code:
    print("failing on purpose", file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.parametrize(("code", "state"), [(0, "done"), (4, "failed")])
async def test_a_job_that_ended_while_no_runner_watched_is_recorded_not_run_again(
    ws: Workspace, code: int, state: str
) -> None:
    counter = ws.root / "counter.txt"
    pattern = FilePattern(name="p", glob="*.in", recipe="r", on_restart="rerun")
    recipe = py_recipe("r", RECORDS_ITSELF, parameters={"counter": str(counter), "code": code})
    async with ws.runner([pattern], [recipe]) as r1:
        ws.write("a.in")
        await until(r1, 1)
    job_dir = Path(job_for(ws, "a.in")["dir"])
    # As a runner SIGKILLed after the job's exit, before recording its end, leaves it:
    # job.json as written at creation, process.log as the job wrote it.
    (job_dir / "job.json.while-running").replace(job_dir / "job.json")
    ws.as_killed(job_dir)
    left = read_meta(job_dir)
    assert (left["state"], left["attempts"], left["exit_code"]) == ("queued", [], None)
    start, pid, exit_line = log_lines(job_dir)
    assert (start[0], start[1], start[3]) == ("start", "1", "fork" if fork_supported() else "spawn")
    assert (pid[0], exit_line[:2]) == ("pid", ["exit", str(code)])
    assert counter.read_text() == "ran\n"

    async with ws.runner([pattern], [recipe]) as r2:
        pass  # recovery happens before the runner counts as started
    meta = read_meta(job_dir)
    error = None if code == 0 else f"exit code {code}: failing on purpose"
    assert (meta["state"], meta["exit_code"], meta["error"]) == (state, code, error)
    assert meta["pid"] == int(pid[1])
    assert meta["attempts"] == [
        {
            "started": float(start[2]),
            "finished": float(exit_line[2]),
            "exit_code": code,
            "error": error,
        }
    ]
    assert counter.read_text() == "ran\n"  # not run again
    assert r2.stats.jobs == 0


def cli_loop() -> str:
    return "uvloop" if os.environ.get("MEOW_TEST_LOOP") == "uvloop" else "asyncio"


@contextmanager
def cli_runner(root: Path, tag: str) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """`meow-async run workflow.yaml`, its output in files; started, and killed at the end."""
    err = root / f"{tag}.stderr"
    with open(root / f"{tag}.stdout", "wb") as out_f, open(err, "wb") as err_f:
        proc = subprocess.Popen(
            [PYTHON, "-m", "meow_async", "run", "--loop", cli_loop(), "workflow.yaml"],
            cwd=root,
            stdin=subprocess.DEVNULL,
            stdout=out_f,
            stderr=err_f,
        )
    try:
        wait_until_sync(lambda: "runner started" in err.read_text() or proc.poll() is not None)
        assert "runner started" in err.read_text(), err.read_text()
        yield proc, err
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=WAIT)


def test_a_job_that_ended_while_its_runner_was_stopped_is_recorded_after_a_kill(
    tmp_path: Path,
) -> None:
    """End to end: the job exits while the runner is SIGSTOPped (it cannot record the end),
    then the runner is SIGKILLed; the next runner records the job and runs nothing again."""
    (tmp_path / "data").mkdir()
    counter, release = tmp_path / "counter.txt", tmp_path / "release"
    (tmp_path / "workflow.yaml").write_text(
        "runner: {base_dir: data, jobs_dir: jobs, shutdown_timeout: 5, kill_timeout: 1}\n"
        "recipes:\n"
        "  r:\n"
        "    kind: python\n"
        f"    parameters: {{counter: {json.dumps(str(counter))}, release: "
        f"{json.dumps(str(release))}}}\n"
        "    script: |\n"
        "      import time\n"
        "      from pathlib import Path\n"
        "      with open(counter, 'a') as f:\n"
        "          f.write('ran\\n')\n"
        "      while not Path(release).exists():\n"
        "          time.sleep(0.01)\n"
        "      print('done')\n"
        "patterns:\n"
        "  p: {glob: '*.in', recipe: r}\n"
    )
    jobs = tmp_path / "jobs"
    job_pids: list[int] = []
    try:
        with cli_runner(tmp_path, "first") as (proc, _):
            (tmp_path / "data" / "a.in").write_text("x")
            wait_until_sync(lambda: counter.exists(), SHORT)
            (log,) = jobs.glob("*/*/process.log")
            job_dir = log.parent
            wait_until_sync(lambda: "pid" in kinds(job_dir), SHORT)
            job_pids.append(int(log_lines(job_dir)[1][1]))
            proc.send_signal(signal.SIGSTOP)
            release.touch()
            wait_until_sync(lambda: "exit" in kinds(job_dir), SHORT)  # ended, unrecorded
            assert read_meta(job_dir)["state"] == "queued"
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=WAIT) == -signal.SIGKILL
        assert read_meta(job_dir)["state"] == "queued"

        with cli_runner(tmp_path, "second") as (proc, err):
            meta = read_meta(job_dir)  # recovery is done once the runner says it started
            assert "1 finished while no runner watched" in err.read_text()
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=WAIT) == 0, err.read_text()
    finally:
        for pid in job_pids:
            if alive(pid):
                os.killpg(pid, signal.SIGKILL)
    assert (meta["state"], meta["exit_code"], meta["error"]) == ("done", 0, None)
    assert len(meta["attempts"]) == 1
    assert counter.read_text() == "ran\n"  # it ran once
    assert (job_dir / "stdout.txt").read_text() == "done\n"
    assert kinds(job_dir) == ["start", "pid", "exit"]
    assert [m.name for m in jobs.glob("*/*/job.json")] == ["job.json"]  # one job, no second


#: The first run forks children that end (one through the rest of the script, one through
#: multiprocessing) while it runs on; any later run ends at once.
FORKS_PY = """\
import multiprocessing, os, sys, time
from pathlib import Path

with open("runs.txt", "a") as f:
    f.write(f"{os.getpid()}\\n")
if len(Path("runs.txt").read_text().split()) > 1:
    sys.exit(0)
pid = os.fork()
if pid == 0:
    sys.exit(5)  # the child's copy of the script ends
os.waitpid(pid, 0)
child = multiprocessing.get_context("fork").Process(target=sys.exit, args=(6,))
child.start()
child.join()
Path("children-ended").touch()
time.sleep(120)
"""

#: The same in Bash: a subshell, a background job and a child shell end while it runs on.
FORKS_SH = """\
echo $$ >> runs.txt
[ "$(wc -l < runs.txt)" -gt 1 ] && exit 0
( exit 5 )
{ exit 6; } &
wait
bash -c 'exit 7'
touch children-ended
sleep 120
"""


def test_only_the_job_s_own_process_records_its_exit(tmp_path: Path) -> None:
    """A job whose forked children end while it runs on, then a runner SIGKILL: the restart
    finds the job cut off (no exit line of a child's taken for the job's end), kills it and
    runs it again (on_restart: rerun)."""
    (tmp_path / "data").mkdir()
    recipes = {
        "warm": {"kind": "python", "script": FORKS_PY},
        "spawned": {"kind": "python", "script": FORKS_PY, "fork": False},
        "sh": {"kind": "bash", "script": FORKS_SH},
    }
    (tmp_path / "workflow.yaml").write_text(
        json.dumps(
            {
                "runner": {"base_dir": "data", "jobs_dir": "jobs", "max_jobs": 3},
                "recipes": recipes,
                "patterns": {
                    name: {"glob": f"*.{name}", "recipe": name, "on_restart": "rerun"}
                    for name in recipes
                },
            }
        )
    )
    jobs = tmp_path / "jobs"
    first_pids: list[int] = []
    try:
        with cli_runner(tmp_path, "first") as (proc, _):
            for name in recipes:
                (tmp_path / "data" / f"a.{name}").write_text("x")
            wait_until_sync(lambda: len(list(jobs.glob("*/*/children-ended"))) == 3)
            dirs = {p.name.split("-")[0]: p.parent for p in jobs.glob("*/*/children-ended")}
            for job_dir in dirs.values():
                assert "exit" not in kinds(job_dir), log_lines(job_dir)
                first_pids.append(int((job_dir / "runs.txt").read_text().split()[0]))
            proc.kill()
        with cli_runner(tmp_path, "second") as (proc, err):
            wait_until_sync(
                lambda: all(read_meta(d)["state"] == "done" for d in dirs.values()), SHORT
            )
            text = err.read_text()
            assert "3 to rerun, 0 failed" in text, text
            assert "0 finished while no runner watched" in text, text
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=WAIT) == 0, err.read_text()
        assert not any(alive(pid) for pid in first_pids)  # killed at the restart
    finally:
        for pid in first_pids:
            if alive(pid):
                os.killpg(pid, signal.SIGKILL)
    for name, job_dir in dirs.items():
        meta = read_meta(job_dir)
        errors = [a["error"] for a in meta["attempts"]]
        assert errors == ["the runner died while the job was running", None], (name, meta)
        assert [a["exit_code"] for a in meta["attempts"]] == [None, 0], name


COUNTS = "with open(counter, 'a') as f:\n    f.write('ran\\n')\n"


def orphan_holding(job_dir: Path) -> subprocess.Popen[bytes]:
    """A live process with the job's process.log open for writing, in its own session: a job
    spawned by a runner that died before it wrote the pid line."""
    log = job_dir / "process.log"
    proc = subprocess.Popen(
        ["bash", "-c", "exec 9>>process.log; exec sleep 60"],
        cwd=job_dir,
        start_new_session=True,
    )
    try:
        wait_until_sync(lambda: holds_open(proc.pid, log), SHORT)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


@pytest.mark.parametrize("policy", ["fail", "rerun"])
async def test_a_job_spawned_just_before_the_runner_died_is_killed_then_on_restart(
    ws: Workspace, policy: str
) -> None:
    counter = ws.root / "counter.txt"
    pattern = FilePattern(name="p", glob="*.in", recipe="r", on_restart=policy)  # type: ignore[arg-type]
    recipe = py_recipe("r", COUNTS, parameters={"counter": str(counter)})
    job_dir = make_queued_job(ws, pattern, recipe, "a.in")
    (job_dir / "process.log").write_text(f"start 1 {time.time():.6f} spawn\n")
    orphan = orphan_holding(job_dir)
    try:
        async with ws.runner([pattern], [recipe]) as r:
            if policy == "rerun":
                await until(r, 1)
        assert orphan.wait(timeout=WAIT) == -signal.SIGKILL
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()
    meta = read_meta(job_dir)
    assert meta["attempts"][0]["error"] == "the runner died while the job was running"
    if policy == "fail":
        assert meta["state"] == "failed"
        assert meta["error"] == "the runner died while the job was running"
        assert not counter.exists()
    else:
        assert meta["state"] == "done"
        assert len(meta["attempts"]) == 2
        assert counter.read_text() == "ran\n"


async def test_a_job_spawned_just_before_the_runner_died_is_killed(ws: Workspace) -> None:
    """What the kernel says is what counts: the holder of process.log is found and killed,
    so the job does not run twice at once."""
    counter = ws.root / "counter.txt"
    pattern = FilePattern(name="p", glob="*.in", recipe="r")
    recipe = py_recipe("r", COUNTS, parameters={"counter": str(counter)})
    job_dir = make_queued_job(ws, pattern, recipe, "a.in")
    (job_dir / "process.log").write_text(f"start 1 {time.time():.6f} spawn\n")
    orphan = orphan_holding(job_dir)
    try:
        async with ws.runner([pattern], [recipe]) as r:
            await until(r, 1)
        assert orphan.wait(timeout=WAIT) == -signal.SIGKILL
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()
    assert read_meta(job_dir)["state"] == "done"
    assert counter.read_text() == "ran\n"


async def test_a_job_that_ends_while_a_restart_settles_it_is_not_rerun(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interleaving, made certain: the job's process ends (its exit line written) after
    the restart read its attempt as unfinished, before the kill."""
    counter = ws.root / "counter.txt"
    pattern = FilePattern(name="p", glob="*.in", recipe="r", on_restart="rerun")
    recipe = py_recipe("r", COUNTS, parameters={"counter": str(counter)})
    job_dir = make_queued_job(ws, pattern, recipe, "a.in")
    job = subprocess.Popen(["sleep", "60"], start_new_session=True)  # noqa: ASYNC220 - the job
    try:
        pid_start = start_time_of(job.pid)
        (job_dir / "process.log").write_text(
            f"start 1 {time.time():.6f} fork\npid {job.pid} {pid_start} {time.time():.6f}\n"
        )
        counter.write_text("ran\n")

        def job_ends_first(where: Path, attempt: Any) -> bool | None:
            with open(where / "process.log", "a") as f:
                f.write(f"exit 0 {time.time():.6f}\n")
            job.kill()  # gone, as a process that wrote its exit line is a moment later
            job.wait()
            return stop_orphan(where, attempt)

        monkeypatch.setattr("meow_async.conductors.process_log.stop_orphan", job_ends_first)
        async with ws.runner([pattern], [recipe]):
            pass  # recovery happens before the runner counts as started
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    meta = read_meta(job_dir)
    assert counter.read_text() == "ran\n"  # not run again
    assert (meta["state"], meta["exit_code"]) == ("done", 0)
    assert [a["error"] for a in meta["attempts"]] == [None]


def test_finding_who_holds_process_log_closes_what_it_opens(tmp_path: Path) -> None:
    (tmp_path / "process.log").write_text(f"start 1 {time.time():.6f} spawn\n")
    attempt = last_attempt(tmp_path)
    assert attempt is not None
    orphan = orphan_holding(tmp_path)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            killed = stop_orphan(tmp_path, attempt)
            gc.collect()
        assert killed is True
        assert orphan.wait(timeout=WAIT) == -signal.SIGKILL
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


async def test_an_attempt_that_never_started_a_process_simply_runs(ws: Workspace) -> None:
    """Only the start line: the runner died before spawning; nothing ran, so nothing was cut
    off, and even ``on_restart: fail`` runs it."""
    counter = ws.root / "counter.txt"
    pattern = FilePattern(name="p", glob="*.in", recipe="r", on_restart="fail")
    recipe = py_recipe("r", COUNTS, parameters={"counter": str(counter)})
    job_dir = make_queued_job(ws, pattern, recipe, "a.in")
    (job_dir / "process.log").write_text(f"start 1 {time.time():.6f} spawn\n")
    async with ws.runner([pattern], [recipe]) as r:
        await until(r, 1)
    meta = read_meta(job_dir)
    assert (meta["state"], meta["exit_code"], meta["error"]) == ("done", 0, None)
    assert len(meta["attempts"]) == 1
    assert counter.read_text() == "ran\n"
    assert kinds(job_dir)[:2] == ["start", "start"]  # the hand-made one, then the real one
    assert sorted(kinds(job_dir)[2:]) == ["exit", "pid"]


# -- configuration ------------------------------------------------------------------------------


def test_preloading_a_module_that_does_not_exist_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="nonexistent_module_xyz") as info:
        py_recipe("r", "pass\n", preload=["nonexistent_module_xyz"])
    assert info.value.field == "preload"
    assert info.value.value == "nonexistent_module_xyz"


def test_fork_takes_true_or_false_only() -> None:
    with pytest.raises(ConfigError, match="expected true or false") as info:
        py_recipe("r", "pass\n", fork="yes")
    assert info.value.field == "fork"
    assert info.value.value == "yes"


@pytest.mark.parametrize("setting", ["preload: [json]", "fork: false"])
def test_only_python_recipes_take_preload_and_fork(tmp_path: Path, setting: str) -> None:
    key = setting.split(":")[0]
    (tmp_path / "workflow.yaml").write_text(
        "recipes:\n"
        "  r:\n"
        "    kind: bash\n"
        "    script: 'true'\n"
        f"    {setting}\n"
        "patterns:\n"
        "  p: {glob: '*.in', recipe: r}\n"
    )
    with pytest.raises(WorkflowFileError) as info:
        load_workflow(tmp_path / "workflow.yaml")
    assert len(info.value.problems) == 1, info.value.problems
    assert f"only python recipes take {key!r}" in info.value.problems[0]


def test_a_workflow_file_sets_preload_and_fork_on_python_recipes(tmp_path: Path) -> None:
    (tmp_path / "workflow.yaml").write_text(
        "recipes:\n"
        "  warm: {kind: python, script: 'pass', preload: [json, email.parser]}\n"
        "  cold: {kind: python, script: 'pass', fork: false}\n"
        "patterns:\n"
        "  p: {glob: '*.in', recipe: warm}\n"
        "  q: {glob: '*.other', recipe: cold}\n"
    )
    spec = load_workflow(tmp_path / "workflow.yaml")
    recipes = {r.name: r for r in spec.recipes}
    warm, cold = recipes["warm"], recipes["cold"]
    assert warm.kind == cold.kind == "python"
    assert getattr(warm, "preload", None) == ("json", "email.parser")
    assert getattr(warm, "warm", None) is True
    assert getattr(cold, "warm", None) is False


# -- listings -----------------------------------------------------------------------------------


@NEEDS_FORK
async def test_jobs_lists_a_running_warm_job_as_running(ws: Workspace) -> None:
    release = ws.root / "release"
    pattern = FilePattern(name="p", glob="*.in", recipe="r")
    recipe = py_recipe("r", BLOCKED, parameters={"release": str(release)})

    def jobs_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PYTHON, "-m", "meow_async", "jobs", *args, str(ws.jobs)],
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=False,
        )

    async with ws.runner([pattern], [recipe]) as r:
        ws.write("a.in")
        await poll_until(lambda: any(ws.jobs.glob("*/*/ran.txt")))
        meta = job_for(ws, "a.in")
        job_dir = Path(meta["dir"])
        pid = int((job_dir / "ran.txt").read_text().split()[0])
        listed, table = await asyncio.gather(
            asyncio.to_thread(jobs_cli, "--json"), asyncio.to_thread(jobs_cli)
        )
        on_disk = read_meta(job_dir)["state"]
        release.touch()
        await until(r, 1)
    assert on_disk == "queued"  # job.json is written at the end only
    assert listed.returncode == 0, listed.stderr
    (row,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (row["id"], row["state"], row["pid"]) == (meta["id"], "running", pid)
    assert row["started"] == pytest.approx(float(log_lines(job_dir)[0][2]))
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[1].split()[:3] == [meta["id"], "running", "p"]
    assert lines[-1] == "1 job(s): 1 running"
    after = await asyncio.to_thread(jobs_cli)
    assert after.stdout.splitlines()[-1] == "1 job(s): 1 done"
