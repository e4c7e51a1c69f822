"""The runner end to end: real watchfiles, real job directories, real subprocesses."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest

from meow_async import (
    FilePattern,
    JobState,
    MeowError,
    MonitorError,
    Recipe,
    Runner,
    read_meta,
)

from .conftest import WAIT, Workspace, poll_until, py_recipe, sh_recipe


async def test_many_dropped_files_make_exactly_one_done_job_each(ws: Workspace) -> None:
    """150 files written by a burst -> 150 done jobs, each with the right input and output."""
    n = 150
    pattern = FilePattern(
        name="count",
        glob="in/*.txt",
        recipe="count",
        outputs={"out": "{BASE}/out/{PREFIX}.len"},
    )
    recipe = py_recipe(
        "count",
        "from pathlib import Path\n"
        "p = Path(out); p.parent.mkdir(exist_ok=True)\n"
        "p.write_text(str(len(Path(input_file).read_text())))\n",
    )
    (ws.base / "in").mkdir()
    async with ws.runner([pattern], [recipe], max_jobs=4) as runner:
        for i in range(n):
            (ws.base / "in" / f"f{i:03d}.txt").write_text("x" * i)
        async with asyncio.timeout(WAIT * 2):
            await runner.wait_for(lambda s: s.finished >= n)
    jobs = ws.jobs_list()
    assert len(jobs) == n
    assert all(j["state"] == JobState.done for j in jobs), [j["error"] for j in jobs]
    inputs = sorted(Path(j["parameters"]["input_file"]).name for j in jobs)
    assert inputs == [f"f{i:03d}.txt" for i in range(n)]
    for i in range(n):
        assert (ws.base / "out" / f"f{i:03d}.len").read_text() == str(i)
    assert runner.stats.events == n
    assert runner.stats.done == n


async def test_job_directory_holds_script_params_metadata_and_output(ws: Workspace) -> None:
    pattern = FilePattern(
        name="p",
        glob="*.csv",
        recipe="r",
        variable="data",
        parameters={"label": "{PREFIX}-{JOB}", "n": 3},
    )
    recipe = sh_recipe(
        "r", 'echo "label=$label n=$n data=$data dir=$MEOW_JOB_DIR"; echo oops >&2\n'
    )
    async with ws.runner([pattern], [recipe]) as runner:
        src = ws.write("a.csv", "1,2\n")
        async with asyncio.timeout(WAIT):
            await runner.wait_for(lambda s: s.finished >= 1)
    (meta,) = ws.jobs_list()
    job_dir = Path(meta["dir"])
    assert job_dir.parent.parent == ws.jobs  # jobs/DAY/ID
    assert job_dir.parent.name == time.strftime("%Y-%m-%d", time.gmtime(meta["created"]))
    assert meta["state"] == "done"
    assert meta["exit_code"] == 0
    assert meta["rule"] == "p"
    assert meta["pattern"] == "p"
    assert meta["recipe"] == "r"
    assert meta["recipe_kind"] == "bash"
    assert meta["event"]["path"] == str(src)
    assert meta["event"]["change"] == "created"
    assert meta["created"] <= meta["started"] <= meta["finished"]
    params = json.loads((job_dir / "params.json").read_text())
    assert params == {"label": f"a-{meta['id']}", "n": 3, "data": str(src)}
    assert params == meta["parameters"]
    assert (job_dir / "script.sh").is_file()
    out = (job_dir / "stdout.txt").read_text()
    assert out == f"label=a-{meta['id']} n=3 data={src} dir={job_dir}\n"
    assert (job_dir / "stderr.txt").read_text() == "oops\n"
    assert not list(job_dir.glob(".*tmp"))  # metadata written by rename, no leftovers


async def test_two_stage_chain(ws: Workspace) -> None:
    """A job that writes into the watched folder triggers the next rule."""
    first = FilePattern(
        name="first", glob="raw/*.txt", recipe="upper", outputs={"out": "{BASE}/mid/{FILENAME}"}
    )
    second = FilePattern(
        name="second", glob="mid/*.txt", recipe="stamp", outputs={"out": "{BASE}/end/{FILENAME}"}
    )
    upper = py_recipe(
        "upper",
        "from pathlib import Path\nPath(out).parent.mkdir(exist_ok=True)\n"
        "Path(out).write_text(Path(input_file).read_text().upper())\n",
    )
    stamp = sh_recipe(
        "stamp", 'mkdir -p "$(dirname "$out")"; echo "done: $(cat "$input_file")" > "$out"\n'
    )
    async with ws.runner([first, second], [upper, stamp]) as runner:
        ws.write("raw/a.txt", "hello")
        async with asyncio.timeout(WAIT):
            await runner.wait_for(lambda s: s.finished >= 2)
    assert (ws.base / "end" / "a.txt").read_text() == "done: HELLO\n"
    rules = sorted(j["rule"] for j in ws.jobs_list())
    assert rules == ["first", "second"]
    assert all(j["state"] == "done" for j in ws.jobs_list())


async def test_sweep_makes_one_job_per_point(ws: Workspace) -> None:
    pattern = FilePattern(
        name="p",
        glob="*.in",
        recipe="r",
        sweep={
            "a": {"start": 1, "stop": 3, "jump": 1},
            "b": {"start": 0.5, "stop": 1, "jump": 0.5},
        },
    )
    async with ws.runner([pattern], [py_recipe("r", "print(a * b)\n")]) as runner:
        ws.write("x.in")
        async with asyncio.timeout(WAIT):
            await runner.wait_for(lambda s: s.finished >= 6)
    jobs = ws.jobs_list()
    assert len(jobs) == 6
    assert sorted((j["sweep"]["a"], j["sweep"]["b"]) for j in jobs) == [
        (a, b) for a in (1, 2, 3) for b in (0.5, 1.0)
    ]
    outs = sorted(float((Path(j["dir"]) / "stdout.txt").read_text()) for j in jobs)
    assert outs == sorted(a * b for a in (1, 2, 3) for b in (0.5, 1.0))


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "waiter-thread"])
async def test_failing_and_crashing_scripts_are_recorded_and_the_runner_goes_on(
    ws: Workspace, pidfd: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not pidfd:  # as on a kernel or OS without pidfds: a thread waits for each job instead
        monkeypatch.delattr(os, "pidfd_open", raising=False)
    elif not hasattr(os, "pidfd_open"):
        pytest.skip("no pidfds here")
    patterns = [
        FilePattern(name="fail", glob="fail/*", recipe="fail"),
        FilePattern(name="crash", glob="crash/*", recipe="crash"),
        FilePattern(name="badbin", glob="badbin/*", recipe="badbin"),
        FilePattern(name="ok", glob="ok/*", recipe="ok"),
    ]
    recipes: list[Recipe] = [
        py_recipe("fail", "raise SystemExit('the input is wrong: ' + input_file[-5:])\n"),
        py_recipe("crash", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"),
        py_recipe("badbin", "print(1)\n", interpreter="/nonexistent/python"),
        sh_recipe("ok", "true\n"),
    ]
    async with ws.runner(patterns, recipes) as runner:
        for d in ("fail", "crash", "badbin", "ok"):
            ws.write(f"{d}/f_{d[:1]}.x")
        async with asyncio.timeout(WAIT):
            await runner.wait_for(lambda s: s.finished >= 4)
        ws.write("ok/again")  # still serving after the failures
        async with asyncio.timeout(WAIT):
            await runner.wait_for(lambda s: s.finished >= 5)
    by_rule: dict[str, list[dict[str, object]]] = {}
    for j in ws.jobs_list():
        by_rule.setdefault(str(j["rule"]), []).append(j)
    (fail,) = by_rule["fail"]
    assert fail["state"] == "failed"
    assert fail["exit_code"] == 1
    assert fail["error"] == "exit code 1: the input is wrong: f_f.x"
    (crash,) = by_rule["crash"]
    assert crash["state"] == "failed"
    assert crash["exit_code"] == -signal.SIGKILL
    (badbin,) = by_rule["badbin"]
    assert badbin["state"] == "failed"
    assert "could not start" in str(badbin["error"])
    assert "/nonexistent/python" in str(badbin["error"])
    assert [j["state"] for j in by_rule["ok"]] == ["done", "done"]
    assert runner.stats.failed == 3
    assert runner.stats.done == 2


async def test_retroactive_rules_trigger_for_files_already_there(ws: Workspace) -> None:
    for i in range(5):
        ws.write(f"old/{i}.dat")
    ws.write("old/skip.txt")
    retro = FilePattern(name="retro", glob="old/*.dat", recipe="r", retroactive=True)
    plain = FilePattern(name="plain", glob="old/*", recipe="r")  # not retroactive
    async with ws.runner([retro, plain], [sh_recipe("r", "true\n")]) as runner:
        async with asyncio.timeout(WAIT):
            await runner.wait_for(lambda s: s.finished >= 5)
        ws.write("old/new.dat")  # a new file after start triggers both rules once
        async with asyncio.timeout(WAIT):
            await runner.wait_for(lambda s: s.finished >= 7)
    jobs = ws.jobs_list()
    retro_inputs = sorted(
        Path(j["parameters"]["input_file"]).name for j in jobs if j["rule"] == "retro"
    )
    assert retro_inputs == ["0.dat", "1.dat", "2.dat", "3.dat", "4.dat", "new.dat"]
    assert [Path(j["parameters"]["input_file"]).name for j in jobs if j["rule"] == "plain"] == [
        "new.dat"
    ]
    retro_events = [j["event"] for j in jobs if j["event"].get("retroactive")]
    assert len(retro_events) == 5


async def test_patterns_and_recipes_change_at_run_time(ws: Workspace) -> None:
    """Add, update and remove while running, with meow_base's effects."""
    async with ws.runner([], [sh_recipe("a", "echo A\n")]) as runner:
        assert runner.rules == {}
        # A pattern whose recipe does not exist yet makes no rule...
        runner.add_pattern(FilePattern(name="p", glob="*.txt", recipe="b"))
        assert runner.rules == {}
        # ...until the recipe is added.
        runner.add_recipe(sh_recipe("b", "echo B\n"))
        assert set(runner.rules) == {"p"}
        await runner.wait_ready()  # the first file rule starts the watch
        ws.write("1.txt")
        async with asyncio.timeout(WAIT):
            await runner.wait_for(lambda s: s.finished >= 1)
        # Update the pattern to use recipe a and another glob.
        runner.update_pattern(FilePattern(name="p", glob="*.csv", recipe="a"))
        ws.write("2.txt")  # no longer matches
        ws.write("2.csv")
        async with asyncio.timeout(WAIT):
            await runner.wait_for(lambda s: s.finished >= 2)
        # Update the recipe: new jobs use the new script.
        runner.update_recipe(sh_recipe("a", "echo A2\n"))
        ws.write("3.csv")
        async with asyncio.timeout(WAIT):
            await runner.wait_for(lambda s: s.finished >= 3)
        # Removing the recipe removes the rule: nothing triggers any more.
        runner.remove_recipe("a")
        assert runner.rules == {}
        ws.write("4.csv")
        # Add a sentinel rule to know the watcher has seen changes after 4.csv.
        runner.add_recipe(sh_recipe("s", "true\n"))
        runner.add_pattern(FilePattern(name="sentinel", glob="*.sentinel", recipe="s"))
        ws.write("x.sentinel")
        async with asyncio.timeout(WAIT):
            await runner.wait_for(lambda s: s.finished >= 4)
    jobs = ws.jobs_list()
    out = [Path(j["dir"]) / "stdout.txt" for j in jobs]
    outs = [
        (j["rule"], o.read_text().strip() if o.exists() else None)
        for j, o in zip(jobs, out, strict=True)
    ]
    assert outs == [("p", "B"), ("p", "A"), ("p", "A2"), ("sentinel", None)]  # empty: removed
    names = [Path(j["parameters"].get("input_file", "")).name for j in jobs]
    assert names == ["1.txt", "2.csv", "3.csv", "x.sentinel"]


async def test_graceful_stop_lets_running_jobs_finish(ws: Workspace) -> None:
    pattern = FilePattern(name="p", glob="*.go", recipe="slow")
    # The job marks that it started, then waits for a file the test writes after stop().
    recipe = sh_recipe(
        "slow",
        'touch "$MEOW_JOB_DIR/started"\n'
        f'while [ ! -e "{ws.root}/release" ]; do sleep 0.01; done\necho finished\n',
    )
    runner = ws.runner([pattern], [recipe], shutdown_timeout=WAIT)
    task = asyncio.create_task(runner.run())
    async with asyncio.timeout(WAIT):
        await runner.started.wait()
        ws.write("a.go")
        await runner.wait_for(lambda s: s.running == 1)
        await poll_until(lambda: any(ws.jobs.glob("*/*/started")))
    runner.stop()
    assert not task.done()
    (ws.root / "release").touch()
    async with asyncio.timeout(WAIT):
        await task
    (meta,) = ws.jobs_list()
    assert meta["state"] == "done"
    assert (Path(meta["dir"]) / "stdout.txt").read_text() == "finished\n"


async def test_stop_after_timeout_terminates_then_kills(ws: Workspace) -> None:
    pattern = FilePattern(name="p", glob="*.go", recipe="stubborn")
    # Ignores SIGTERM, so the conductor must escalate to SIGKILL.
    recipe = sh_recipe(
        "stubborn",
        "trap '' TERM\ntouch \"$MEOW_JOB_DIR/started\"\nwhile true; do sleep 0.05; done\n",
    )
    runner = ws.runner([pattern], [recipe], shutdown_timeout=0.2, kill_timeout=0.3)
    task = asyncio.create_task(runner.run())
    async with asyncio.timeout(WAIT):
        await runner.started.wait()
        ws.write("a.go")
        await poll_until(lambda: any(ws.jobs.glob("*/*/started")))
    runner.stop()
    async with asyncio.timeout(WAIT):
        await task
    (meta,) = ws.jobs_list()
    assert meta["state"] == "failed"
    assert meta["exit_code"] == -signal.SIGKILL
    assert "runner shut down" in meta["error"]


async def test_second_stop_forces_and_queued_jobs_stay_queued(ws: Workspace) -> None:
    pattern = FilePattern(name="p", glob="*.go", recipe="forever")
    recipe = sh_recipe("forever", 'touch "$MEOW_JOB_DIR/started"\nexec sleep 60\n')
    runner = ws.runner([pattern], [recipe], max_jobs=1, shutdown_timeout=WAIT)
    task = asyncio.create_task(runner.run())
    async with asyncio.timeout(WAIT):
        await runner.started.wait()
        ws.write("a.go")
        await poll_until(lambda: any(ws.jobs.glob("*/*/started")))
        ws.write("b.go")  # queued behind a (max_jobs=1)
        await runner.wait_for(lambda s: s.jobs >= 2)
    runner.stop()
    await asyncio.sleep(0)
    assert not task.done()
    runner.stop()  # second call: stop running jobs now
    async with asyncio.timeout(10):  # far less than the job's 60 s
        await task
    states = sorted(j["state"] for j in ws.jobs_list())
    assert states == ["failed", "queued"]
    assert runner.stats.left_queued == 1


async def test_cancelling_run_stops_jobs(ws: Workspace) -> None:
    """Embedders may cancel the task instead of calling stop(): jobs are still stopped."""
    pattern = FilePattern(name="p", glob="*.go", recipe="forever")
    recipe = sh_recipe("forever", 'echo $$ > "$MEOW_JOB_DIR/pid"\nexec sleep 60\n')
    runner = ws.runner([pattern], [recipe])
    task = asyncio.create_task(runner.run())
    async with asyncio.timeout(WAIT):
        await runner.started.wait()
        ws.write("a.go")
        await poll_until(lambda: any(p.stat().st_size for p in ws.jobs.glob("*/*/pid")))
    pid = int(next(ws.jobs.glob("*/*/pid")).read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    (meta,) = ws.jobs_list()
    assert meta["state"] == "failed"


async def test_missing_watched_folder_is_a_clear_error(ws: Workspace) -> None:
    runner = ws.runner(
        [FilePattern(name="p", glob="*", recipe="r")], [sh_recipe("r")], base_dir=ws.root / "nope"
    )
    with pytest.raises(MonitorError, match="nope does not exist"):
        await runner.run()


async def test_unwritable_jobs_folder_is_a_clear_error(ws: Workspace) -> None:
    blocker = ws.root / "file"
    blocker.write_text("")
    runner = ws.runner(jobs_dir=blocker / "jobs")
    with pytest.raises(MeowError, match="cannot write job directories in"):
        await runner.run()


async def test_a_runner_runs_once(ws: Workspace) -> None:
    runner = ws.runner()
    runner.stop()
    await runner.run()
    with pytest.raises(RuntimeError, match="runs once"):
        await runner.run()


async def test_from_file_runs_a_workflow(ws: Workspace) -> None:
    wf = ws.root / "wf.yaml"
    wf.write_text(
        "runner: {base_dir: data, jobs_dir: jobs, shutdown_timeout: 5}\n"
        "recipes:\n  r: {kind: bash, script: 'echo $input_file'}\n"
        "patterns:\n  p: {glob: '*.txt', recipe: r}\n"
    )
    runner = Runner.from_file(wf, max_jobs=1)
    assert runner.config.max_jobs == 1
    assert runner.config.base_dir == ws.base
    async with runner:
        ws.write("a.txt")
        async with asyncio.timeout(WAIT):
            await runner.wait_for(lambda s: s.finished >= 1)
    (meta,) = ws.jobs_list()
    assert read_meta(Path(meta["dir"]))["state"] == "done"


async def test_stop_does_not_wait_for_job_slots_to_put_down_a_big_sweep(ws: Workspace) -> None:
    """One event making more jobs than the job queue holds, every slot busy: a forced stop
    is still prompt, and every job made is on disk, queued or stopped."""
    pattern = FilePattern(
        name="p", glob="*.go", recipe="forever", sweep={"i": {"start": 1, "stop": 40, "jump": 1}}
    )
    recipe = sh_recipe("forever", 'touch "$MEOW_JOB_DIR/started"\nexec sleep 60\n')
    runner = ws.runner([pattern], [recipe], max_jobs=1, queue_size=1, shutdown_timeout=WAIT)
    task = asyncio.create_task(runner.run())
    async with asyncio.timeout(WAIT):
        await runner.started.wait()
        ws.write("a.go")
        await poll_until(lambda: any(ws.jobs.glob("*/*/started")))
    runner.stop()
    runner.stop()
    async with asyncio.timeout(10):
        await task
    states = [j["state"] for j in ws.jobs_list()]
    assert len(states) == 40
    assert states.count("failed") == 1
    assert states.count("queued") == 39
