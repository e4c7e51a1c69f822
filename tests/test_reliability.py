"""Restarts, recovery, timeouts, retries: in-process runners on real files and sockets."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from meow_async import (
    FilePattern,
    Job,
    JobState,
    NetworkPattern,
    Pattern,
    Runner,
    read_meta,
    send,
)
from meow_async.conductors import process_start_time

from .conftest import WAIT, Workspace, poll_until, py_recipe, sh_recipe


async def until(runner: Runner, n: int) -> None:
    async with asyncio.timeout(WAIT):
        await runner.wait_for(lambda s: s.finished >= n)


def inputs(ws: Workspace, rule: str | None = None) -> list[str]:
    return sorted(
        Path(j["parameters"]["input_file"]).name
        for j in ws.jobs_list()
        if rule is None or j["rule"] == rule
    )


# -- files across restarts ----------------------------------------------------------------------


async def test_files_that_arrive_while_down_trigger_once_at_restart(ws: Workspace) -> None:
    pattern = FilePattern(name="p", glob="*.dat", recipe="r")
    recipe = sh_recipe("r", "true")
    async with ws.runner([pattern], [recipe]) as r1:
        ws.write("during-1.dat")
        await until(r1, 1)
    ws.write("while-down.dat")  # nobody watching
    async with ws.runner([pattern], [recipe]) as r2:
        await until(r2, 1)
        ws.write("during-2.dat")
        await until(r2, 2)
    assert r2.stats.jobs == 2  # during-1 may be looked at again, but makes no second job
    async with ws.runner([pattern], [recipe]):
        pass  # a third start with nothing new makes nothing
    assert inputs(ws) == ["during-1.dat", "during-2.dat", "while-down.dat"]
    assert all(j["state"] == "done" for j in ws.jobs_list())
    caught = [j for j in ws.jobs_list() if j["event"].get("catch_up")]
    assert [Path(j["event"]["path"]).name for j in caught] == ["while-down.dat"]


async def test_a_first_start_does_not_run_old_files_unless_retroactive(ws: Workspace) -> None:
    ws.write("old.dat")
    plain = FilePattern(name="plain", glob="*.dat", recipe="r")
    retro = FilePattern(name="retro", glob="*.dat", recipe="r", retroactive=True)
    async with ws.runner([plain, retro], [sh_recipe("r", "true")]) as r:
        await until(r, 1)
    assert [j["rule"] for j in ws.jobs_list()] == ["retro"]
    # A retroactive rule scans again at every start, but a file it handled stays handled.
    async with ws.runner([plain, retro], [sh_recipe("r", "true")]) as r:
        ws.write("new.dat")
        await until(r, 2)
    assert sorted((j["rule"], Path(j["event"]["path"]).name) for j in ws.jobs_list()) == [
        ("plain", "new.dat"),
        ("retro", "new.dat"),
        ("retro", "old.dat"),
    ]


async def test_one_file_state_makes_one_job_per_rule_a_new_state_another(ws: Workspace) -> None:
    pattern = FilePattern(name="p", glob="*.dat", recipe="r", retroactive=True)
    async with ws.runner([pattern], [sh_recipe("r", "true")]) as r:
        f = ws.write("a.dat", "one")
        await until(r, 1)
        f.write_text("two, longer")  # a real change: a new job
        await until(r, 2)
    jobs = ws.jobs_list()
    assert len(jobs) == 2
    assert len({j["id"] for j in jobs}) == 2
    assert all(j["id"].startswith("p-") for j in jobs)


# -- network messages across restarts -----------------------------------------------------------


async def test_accepted_messages_left_by_a_killed_runner_make_their_jobs(ws: Workspace) -> None:
    """What a runner killed after its ack leaves: a journal entry and the message."""
    spool = ws.root / "spool"
    spool.mkdir()
    (spool / "m1.msg").write_text("accepted")
    (spool / "m2.msg").write_text("never journaled: never acknowledged")
    (spool / "m3.part").write_text("half")
    entry = {
        "id": "m1",
        "time": time.time(),
        "rules": ["n", "gone"],
        "extras": {"message_id": "m1", "size": 8},
    }
    (spool / "accepted.log").write_text(json.dumps(entry) + "\n{broken line\n")
    pattern = NetworkPattern(name="n", port=0, recipe="r", variable="msg")
    async with ws.runner([pattern], [sh_recipe("r", 'cat "$msg"')], spool_dir=spool) as r:
        await until(r, 1)
        port = r.ports()["n"]
        await send("127.0.0.1", port, b"new", ack=False)
        await until(r, 2)
    (job,) = [j for j in ws.jobs_list() if j["event"]["message_id"] == "m1"]
    assert (Path(job["dir"]) / "stdout.txt").read_text() == "accepted"
    assert job["id"].startswith("n-")
    assert sorted(p.name for p in spool.iterdir()) == []  # handled, cleaned, journal gone


async def test_the_same_message_recovered_twice_makes_one_job(ws: Workspace) -> None:
    spool = ws.root / "spool"
    spool.mkdir()
    pattern = NetworkPattern(name="n", port=0, recipe="r", variable="msg")
    for _ in range(2):  # as if the first runner died after making the job, before cleaning
        (spool / "m1.msg").write_text("once")
        entry = {"id": "m1", "time": time.time(), "rules": ["n"], "extras": {}}
        (spool / "accepted.log").write_text(json.dumps(entry) + "\n")
        async with ws.runner([pattern], [sh_recipe("r", "true")], spool_dir=spool) as r:
            await poll_until(lambda: not (spool / "m1.msg").exists())
    assert len(ws.jobs_list()) == 1
    assert r.stats.jobs == 0  # the second run found the job already made


# -- jobs across restarts -----------------------------------------------------------------------


async def test_queued_jobs_run_at_the_next_start(ws: Workspace) -> None:
    pattern = FilePattern(name="p", glob="*.go", recipe="r")
    # A job's script is rendered when it is made: the queued one keeps it across restarts.
    gate = sh_recipe(
        "r",
        'touch "$MEOW_JOB_DIR/started"\n'
        '[ "$(basename "$input_file")" != a.go ] || exec sleep 60\necho ran\n',
    )
    r1 = ws.runner([pattern], [gate], max_jobs=1)
    task = asyncio.create_task(r1.run())
    async with asyncio.timeout(WAIT):
        await r1.started.wait()
        ws.write("a.go")
        await poll_until(lambda: any(ws.jobs.glob("*/*/started")))
        ws.write("b.go")
        await r1.wait_for(lambda s: s.jobs >= 2)
    r1.stop(force=True)
    await task
    assert sorted(j["state"] for j in ws.jobs_list()) == ["failed", "queued"]
    async with ws.runner([pattern], [sh_recipe("r", "echo other")]) as r2:
        await until(r2, 1)
    states = {Path(j["event"]["path"]).name: j["state"] for j in ws.jobs_list()}
    assert states == {"a.go": "failed", "b.go": "done"}
    (b,) = [j for j in ws.jobs_list() if j["state"] == "done"]
    assert (Path(b["dir"]) / "stdout.txt").read_text() == "ran\n"


def _orphan(ws: Workspace, policy: str) -> tuple[Runner, subprocess.Popen[bytes], Path]:
    """A job.json saying 'running', its process still alive: a runner was SIGKILLed."""
    pattern = FilePattern(name="p", glob="*.go", recipe="r", on_restart=policy)  # type: ignore[arg-type]
    runner = ws.runner([pattern], [sh_recipe("r", "echo second run")])
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    job_dir = ws.jobs / "p-0123456789abcdef"
    job_dir.mkdir(parents=True)
    script = job_dir / "script.sh"
    script.write_text("echo second run\n")
    meta = {
        "id": job_dir.name,
        "dir": str(job_dir),
        "rule": "p",
        "argv": ["bash", str(script)],
        "env": {},
        "event": {"kind": "file", "path": str(ws.write("a.go")), "change": "created"},
        "state": "running",
        "created": time.time(),
        "started": time.time(),
        "pid": proc.pid,
        "pid_start": process_start_time(proc.pid),
        "attempts": [],
    }
    (job_dir / "job.json").write_text(json.dumps(meta))
    return runner, proc, job_dir


@pytest.mark.parametrize("policy", ["rerun", "fail"])
async def test_a_job_running_when_the_runner_died(ws: Workspace, policy: str) -> None:
    runner, orphan, job_dir = _orphan(ws, policy)
    try:
        async with runner:
            if policy == "rerun":
                await until(runner, 1)
        assert orphan.wait(timeout=WAIT) == -signal.SIGKILL  # the orphan was stopped
    finally:
        if orphan.poll() is None:
            orphan.kill()
    meta = read_meta(job_dir)
    assert meta["attempts"][0]["error"] == "the runner died while the job was running"
    if policy == "rerun":
        assert meta["state"] == "done"
        assert (job_dir / "stdout.txt").read_text() == "second run\n"
        assert len(meta["attempts"]) == 2
    else:
        assert meta["state"] == "failed"
        assert meta["error"] == "the runner died while the job was running"


async def test_a_reused_pid_is_not_killed(ws: Workspace) -> None:
    runner, orphan, job_dir = _orphan(ws, "fail")
    meta = read_meta(job_dir)
    meta["pid_start"] = 1  # the same pid, another process
    (job_dir / "job.json").write_text(json.dumps(meta))
    try:
        async with runner:
            pass
        assert orphan.poll() is None
    finally:
        orphan.kill()
        orphan.wait()


# -- failure handling ---------------------------------------------------------------------------


async def test_recipe_timeout_stops_the_job_in_steps(ws: Workspace) -> None:
    pattern = FilePattern(name="p", glob="*.go", recipe="r")
    recipe = sh_recipe("r", "trap '' TERM; exec sleep 60", timeout=0.3)
    async with ws.runner([pattern], [recipe], kill_timeout=0.2) as r:
        ws.write("a.go")
        await until(r, 1)
    (meta,) = ws.jobs_list()
    assert meta["state"] == "failed"
    assert meta["timed_out"] is True
    assert meta["error"] == "timed out after 0.3s"
    assert meta["exit_code"] in (-signal.SIGTERM, -signal.SIGKILL)


async def test_retries_with_backoff_record_every_attempt(ws: Workspace) -> None:
    pattern = FilePattern(name="p", glob="*.go", recipe="r", retries=3, retry_backoff=0.01)
    # Fails twice, then succeeds: a counter beside the input file.
    script = (
        'n=$(cat "$input_file.count" 2>/dev/null || echo 0); n=$((n+1)); '
        'echo $n > "$input_file.count"; [ $n -ge 3 ] || { echo "try $n failed" >&2; exit 2; }'
    )
    async with ws.runner([pattern], [sh_recipe("r", script)]) as r:
        ws.write("a.go")
        await until(r, 1)
    (meta,) = ws.jobs_list()
    assert meta["state"] == "done"
    assert [a["error"] for a in meta["attempts"]] == [
        "exit code 2: try 1 failed",
        "exit code 2: try 2 failed",
        None,
    ]
    assert r.stats.retries == 2


async def test_retries_run_out(ws: Workspace) -> None:
    pattern = FilePattern(name="p", glob="*.go", recipe="r", retries=1, retry_backoff=0)
    async with ws.runner([pattern], [sh_recipe("r", "exit 3")]) as r:
        ws.write("a.go")
        await until(r, 1)
    (meta,) = ws.jobs_list()
    assert meta["state"] == "failed"
    assert len(meta["attempts"]) == 2


async def test_a_job_whose_file_vanished_is_skipped(ws: Workspace) -> None:
    pattern = FilePattern(name="p", glob="*.go", recipe="r")
    recipe = sh_recipe("r", '[ "$(basename "$input_file")" != a.go ] || sleep 0.5')
    async with ws.runner([pattern], [recipe], max_jobs=1) as r:
        ws.write("a.go")
        await r.wait_for(lambda s: s.running == 1)
        b = ws.write("b.go")
        await r.wait_for(lambda s: s.jobs == 2)
        b.unlink()  # gone before its job could start
        await until(r, 2)
    states = {Path(j["event"]["path"]).name: (j["state"], j["error"]) for j in ws.jobs_list()}
    assert states["a.go"] == ("done", None)
    assert states["b.go"][0] == "skipped"
    assert "vanished before the job started" in states["b.go"][1]
    assert r.stats.skipped == 1


async def test_a_script_printing_megabytes(ws: Workspace) -> None:
    pattern = FilePattern(name="p", glob="*.go", recipe="r")
    recipe = py_recipe("r", "import sys\nfor _ in range(200):\n    sys.stdout.write('x' * 50_000)")
    async with ws.runner([pattern], [recipe]) as r:
        ws.write("a.go")
        await until(r, 1)
    (meta,) = ws.jobs_list()
    assert meta["state"] == "done"
    assert os.path.getsize(Path(meta["dir"]) / "stdout.txt") == 10_000_000


def test_durable_mode_writes_the_same_records(ws: Workspace) -> None:
    async def go() -> None:
        pattern = FilePattern(name="p", glob="*.go", recipe="r")
        async with ws.runner([pattern], [sh_recipe("r", "true")], durable=True) as r:
            ws.write("a.go")
            await until(r, 1)

    asyncio.run(go())
    (meta,) = ws.jobs_list()
    assert meta["state"] == JobState.done


# -- complete files, bursts ---------------------------------------------------------------------


async def test_settle_waits_for_a_file_written_in_pieces(ws: Workspace) -> None:
    """A writer that closes and opens the file again for each piece (a logger, an instrument
    appending) makes a complete version per close: settle makes them one job."""
    pattern = FilePattern(name="p", glob="*.raw", recipe="r", settle=0.4)
    async with ws.runner([pattern], [sh_recipe("r", 'wc -c < "$input_file"')]) as r:
        for _ in range(4):
            with open(ws.base / "a.raw", "a") as f:
                f.write("x" * 1000)
            await asyncio.sleep(0.1)  # the writer's pace, shorter than settle
        await until(r, 1)
    (meta,) = ws.jobs_list()
    assert (Path(meta["dir"]) / "stdout.txt").read_text().strip() == "4000"
    assert meta["event"]["changes_seen"] == 4
    assert r.stats.jobs == 1


async def test_sentinel_holds_the_job_until_the_done_file(ws: Workspace) -> None:
    pattern = FilePattern(name="p", glob="runs/*.raw", recipe="r", sentinel="{REL_PATH}.done")
    async with ws.runner([pattern], [sh_recipe("r", "true")]) as r:
        ws.write("runs/a.raw", "data")
        ws.write("runs/b.raw", "data")
        ws.write("runs/unrelated.done")
        ws.write("runs/a.raw.done")
        await until(r, 1)
        assert r.files.oldest_held() is not None  # b still waits
    (meta,) = ws.jobs_list()
    assert Path(meta["event"]["path"]).name == "a.raw"
    # b's sentinel arrives while the runner is down: the next start finishes it.
    ws.write("runs/b.raw.done")
    async with ws.runner([pattern], [sh_recipe("r", "true")]) as r2:
        await until(r2, 1)
    assert sorted(Path(j["event"]["path"]).name for j in ws.jobs_list()) == ["a.raw", "b.raw"]


async def test_min_age(ws: Workspace) -> None:
    pattern = FilePattern(name="p", glob="*.raw", recipe="r", min_age=0.5)
    async with ws.runner([pattern], [sh_recipe("r", "true")]) as r:
        f = ws.write("a.raw")
        await until(r, 1)
    (meta,) = ws.jobs_list()
    assert meta["created"] >= f.stat().st_mtime + 0.5


async def test_coalesce_makes_one_job_for_the_latest_file_of_a_burst(ws: Workspace) -> None:
    pattern = FilePattern(name="p", glob="*.raw", recipe="r", coalesce=0.3)
    async with ws.runner([pattern], [sh_recipe("r", "true")]) as r:
        for i in range(20):
            ws.write(f"{i:02d}.raw")
        await until(r, 1)
        ws.write("later.raw")  # after the burst: its own job
        await until(r, 2)
    first, second = ws.jobs_list()
    assert first["event"]["coalesced"] == 20
    assert Path(first["event"]["path"]).name == "19.raw"
    assert Path(second["event"]["path"]).name == "later.raw"
    assert r.stats.jobs == 2


async def test_an_unwritable_jobs_folder_loses_nothing(ws: Workspace) -> None:
    """The jobs folder turns unwritable (chattr +i; even root is refused): events fail to
    make jobs, are logged and kept, the runner keeps serving, and a restart makes them."""
    patterns: list[Pattern] = [
        FilePattern(name="f", glob="*.dat", recipe="r"),
        NetworkPattern(name="n", port=0, recipe="r", ack=True),
    ]
    try:
        async with ws.runner(patterns, [sh_recipe("r", "true")]) as r:
            if subprocess.run(["chattr", "+i", str(ws.jobs)], check=False).returncode:
                pytest.skip("chattr +i is not available here")
            ws.write("a.dat")
            acked = await send("127.0.0.1", r.ports()["n"], b"kept", ack=True)
            async with asyncio.timeout(WAIT):
                await r.wait_for(lambda s: s.handler_errors == 2)
            subprocess.run(["chattr", "-i", str(ws.jobs)], check=True)
            ws.write("b.dat")
            await until(r, 1)
    finally:
        subprocess.run(["chattr", "-i", str(ws.jobs)], check=False)
    assert inputs(ws, "f") == ["b.dat"]
    async with ws.runner(patterns, [sh_recipe("r", "true")]) as r2:
        await until(r2, 2)
    jobs = ws.jobs_list()
    assert sorted(Path(j["event"]["path"]).name for j in jobs if j["rule"] == "f") == [
        "a.dat",
        "b.dat",
    ]
    assert [j["event"]["message_id"] for j in jobs if j["rule"] == "n"] == [acked]


async def test_a_held_caught_up_file_survives_a_kill_after_a_checkpoint(ws: Workspace) -> None:
    """A file found by the catch-up scan and held back (settle) must keep the watermark
    before its ctime, or a kill now would lose it for good."""
    held = FilePattern(name="held", glob="*.raw", recipe="r", settle=30)
    quick = FilePattern(name="quick", glob="*.go", recipe="r")
    async with ws.runner([held, quick], [sh_recipe("r", "true")]):
        pass  # a first run: the watermark starts here
    ws.write("a.raw")  # while down
    r2 = ws.runner([held, quick], [sh_recipe("r", "true")])
    task = asyncio.create_task(r2.run())
    async with asyncio.timeout(WAIT):
        await r2.started.wait()
        await poll_until(lambda: r2.files.oldest_held() is not None)
        ws.write("x.go")  # handled: the runner checkpoints its watermark
        await until(r2, 1)
    task.cancel()  # killed: no clean stop, no last save
    with pytest.raises(asyncio.CancelledError):
        await task
    fast = FilePattern(name="held", glob="*.raw", recipe="r", settle=0.05)
    async with ws.runner([fast, quick], [sh_recipe("r", "true")]) as r3:
        await until(r3, 1)
    assert inputs(ws, "held") == ["a.raw"]


async def test_retries_are_counted_by_the_runner_whatever_the_conductor(ws: Workspace) -> None:
    class Failing:
        calls = 0

        async def execute(self, job: Job) -> JobState:
            Failing.calls += 1
            return JobState.failed  # records no attempt

    pattern = FilePattern(name="p", glob="*.go", recipe="r", retries=2, retry_backoff=0)
    runner = Runner([pattern], [sh_recipe("r")], config=ws.config(), conductor=Failing())
    async with runner:
        ws.write("a.go")
        await until(runner, 1)
    assert Failing.calls == 3
