"""One complete write, one trigger: files are handed on when their writer closes them (or when a
finished file is renamed or linked into place), never half written, never twice.

Real files, real job processes, real inotify; every wait is on a condition with a timeout.
A "sentinel" file written after the changes under test, and waited for, proves the runner has
read everything before it, so exact counts can be asserted without guessing at delays.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import (
    contextmanager,
    suppress,
)
from pathlib import Path
from typing import Any

import pytest

from meow_async import (
    Change,
    Event,
    FilePattern,
    Runner,
    RunnerStopped,
)
from meow_async.model.jobs import STDOUT_FILE

from .conftest import PYTHON, WAIT, Workspace, py_recipe, wait_until_sync
from .test_cli import MeowRun, finished_jobs, job_metas, write_workflow
from .watching import pat, watching

# -- helpers ------------------------------------------------------------------------------------


async def until(runner: Runner, n: int, timeout: float = WAIT) -> None:
    async with asyncio.timeout(timeout):
        await runner.wait_for(lambda s: s.finished >= n)


def stdout_of(job: dict[str, Any]) -> str:
    return (Path(job["dir"]) / STDOUT_FILE).read_text()


def name_of(job: dict[str, Any]) -> str:
    return Path(job["parameters"]["input_file"]).name


def of_rule(ws: Workspace, rule: str) -> list[dict[str, Any]]:
    return [j for j in ws.jobs_list() if j["rule"] == rule]


# -- 1. chained rules: the downstream rule sees whole files -------------------------------------

#: The text rule A writes for ``name``, in 4 parts; rule B rebuilds it to check what it read.
PARTS = (
    'def parts(name):\n    return [f"{name} part {i}\\n" + "x" * 4096 + "\\n" for i in range(4)]\n'
)

WRITE_IN_PARTS = (
    PARTS
    + """
import time
from pathlib import Path

Path(out).parent.mkdir(exist_ok=True)
with open(out, "w") as f:  # one open, 4 flushed writes, one close
    for i, part in enumerate(parts(Path(out).name)):
        if i:
            time.sleep(0.02)
        f.write(part)
        f.flush()
"""
)

CHECK_WHOLE = (
    PARTS
    + """
from pathlib import Path

got = Path(input_file).read_text()
want = "".join(parts(Path(input_file).name))
print("complete" if got == want else f"INCOMPLETE {len(got)} of {len(want)}")
"""
)


async def test_a_chain_of_rules_in_a_burst_sees_every_file_whole_once(ws: Workspace) -> None:
    """200 inputs at once; each job writes its output in 4 flushed parts: exactly 400 jobs,
    400 events, and every downstream job read the complete file."""
    n = 200
    (ws.base / "in").mkdir()  # mid/ is made by the first job: files in a new folder too
    a = FilePattern(
        name="a", glob="in/*.txt", recipe="write", outputs={"out": "{BASE}/mid/{FILENAME}"}
    )
    b = FilePattern(name="b", glob="mid/*", recipe="check")
    recipes = [py_recipe("write", WRITE_IN_PARTS), py_recipe("check", CHECK_WHOLE)]
    async with ws.runner([a, b], recipes, max_jobs=2, queue_size=2 * n + 10) as r:
        for i in range(n):
            ws.write(f"in/{i:03d}.txt", str(i))
        await until(r, 2 * n, timeout=50)
        ws.write("in/sentinel.txt")  # through both rules: all before it was read
        await until(r, 2 * n + 2)
    stats = r.stats
    jobs = ws.jobs_list()
    assert len(jobs) == 2 * n + 2
    assert all(j["state"] == "done" for j in jobs)
    assert (stats.events, stats.jobs, stats.done, stats.failed) == (2 * n + 2,) * 3 + (0,)
    names = sorted([f"{i:03d}.txt" for i in range(n)] + ["sentinel.txt"])
    assert sorted(name_of(j) for j in of_rule(ws, "a")) == names
    checks = of_rule(ws, "b")
    assert sorted(name_of(j) for j in checks) == names
    assert {j["event"]["change"] for j in checks} == {"created"}
    seen = {name_of(j): stdout_of(j) for j in checks}
    assert {k: v for k, v in seen.items() if v != "complete\n"} == {}


# -- 2. the usual ways to write an output ---------------------------------------------------------

WRITE_ONE_WAY = """
import os
import subprocess
from pathlib import Path

stem = Path(input_file).stem
text = (stem + "\\n") * 50_000
if how == "np.save":
    import numpy as np

    np.save(out, np.full((200, 500), int(stem), dtype=np.int64))
elif how == "write_text":
    Path(out).write_text(text)
elif how == "cp":
    Path(outside).parent.mkdir(exist_ok=True)
    Path(outside).write_text(text)
    subprocess.run(["cp", outside, out], check=True)
elif how == "rename-within":
    Path(stage).write_text(text)
    os.rename(stage, out)
elif how == "rename-from-outside":
    Path(outside).parent.mkdir(exist_ok=True)
    Path(outside).write_text(text)
    os.rename(outside, out)
else:
    raise ValueError(how)
"""

CHECK_ONE_WAY = """
from pathlib import Path

stem = Path(input_file).stem
if input_file.endswith(".npy"):
    import numpy as np

    a = np.load(input_file)
    ok = a.shape == (200, 500) and bool((a == int(stem)).all())
else:
    ok = Path(input_file).read_text() == (stem + "\\n") * 50_000
print("complete" if ok else "INCOMPLETE")
"""

#: How each way is seen by the downstream rule.
WAYS = {
    "np.save": "created",
    "write_text": "created",
    "cp": "created",
    "rename-within": "moved",
    "rename-from-outside": "created",
}


@pytest.mark.parametrize("how", list(WAYS))
async def test_each_way_of_writing_an_output_triggers_once_complete(
    ws: Workspace, how: str
) -> None:
    """np.save, write_text, cp, rename from a staging folder inside or outside the watched
    one: 2N jobs, each downstream job read a complete file, with the expected change."""
    n = 20
    for d in ("in", "mid", "stage"):  # watched from the start: a rename is seen as one
        (ws.base / d).mkdir()
    outside = ws.root / "outside"
    ext = ".npy" if how == "np.save" else ".dat"
    a = FilePattern(
        name="a",
        glob="in/*.txt",
        recipe="write",
        outputs={"out": "{BASE}/mid/{PREFIX}" + ext},
        parameters={
            "how": how,
            "stage": "{BASE}/stage/{PREFIX}" + ext,
            "outside": f"{outside}/{{PREFIX}}{ext}",
        },
    )
    b = FilePattern(name="b", glob="mid/*", recipe="check")
    recipes = [py_recipe("write", WRITE_ONE_WAY), py_recipe("check", CHECK_ONE_WAY)]
    async with ws.runner([a, b], recipes, max_jobs=2) as r:
        for i in range(n):
            ws.write(f"in/{i}.txt")
        await until(r, 2 * n)
        ws.write("in/999.txt")
        await until(r, 2 * n + 2)
    jobs = ws.jobs_list()
    assert len(jobs) == 2 * n + 2
    assert [j for j in jobs if j["state"] != "done"] == []
    assert r.stats.events == 2 * n + 2
    checks = of_rule(ws, "b")
    assert sorted(name_of(j) for j in checks) == sorted(f"{i}{ext}" for i in [*range(n), 999])
    assert {name_of(j): stdout_of(j) for j in checks} == {name_of(j): "complete\n" for j in checks}
    assert {j["event"]["change"] for j in checks} == {WAYS[how]}
    for j in checks:
        src = j["event"].get("src_path")
        if how == "rename-within":
            assert src == str(ws.base / "stage" / name_of(j))
        else:
            assert src is None
    if how == "rename-within":
        assert list((ws.base / "stage").iterdir()) == []


# -- 3. a slow writer ---------------------------------------------------------------------------


async def test_a_file_written_slowly_triggers_once_after_its_close(ws: Workspace) -> None:
    """open, a bit every 0.2 s for 3 s, close: one job, its event made after the close, and
    the job saw the whole file."""
    recipe = py_recipe("size", "import os\nprint(os.path.getsize(input_file))\n")
    async with ws.runner([FilePattern(name="p", glob="*.dat", recipe="size")], [recipe]) as r:
        path = ws.base / "slow.dat"
        with open(path, "w") as f:
            for _ in range(15):
                f.write("0123456789" * 10)
                f.flush()
                await asyncio.sleep(0.2)  # pacing the writer, not waiting for the runner
            assert ws.jobs_list() == []  # 3 s of writes: nothing yet
            closing = time.time()
        await until(r, 1)
        ws.write("sentinel.dat")
        await until(r, 2)
    assert r.stats.events == 2
    jobs = {name_of(j): j for j in ws.jobs_list()}
    assert sorted(jobs) == ["sentinel.dat", "slow.dat"]
    job = jobs["slow.dat"]
    assert job["state"] == "done"
    assert job["event"]["change"] == "created"
    assert job["event"]["time"] >= closing
    assert stdout_of(job) == "1500\n"


# -- 4. rename pairing --------------------------------------------------------------------------


#: Names whose inotify records are 160 bytes (16 + the name padded to 16): 2000 of them are
#: more than the monitor reads at once (4 reads of 64 KiB). One 112-byte record first (a move
#: out of the folder) makes that first read end after 408 of them and the 4th after 1635: in
#: the middle of a pair, so the pair's two halves come in two reads of the descriptor.
STEM = "{:04d}-" + "n" * 120
AWAY = "away-" + "x" * 85 + ".tmp"

RENAMER = f"""
import os, sys
folder = sys.argv[1]
for i in range(int(sys.argv[2])):
    stem = {STEM!r}.format(i)
    os.rename(os.path.join(folder, stem + ".part"), os.path.join(folder, stem + ".dat"))
"""


@pytest.mark.parametrize("where", ["loop-blocked", "subprocess"])
async def test_a_burst_of_renames_pairs_every_source_with_its_destination(
    tmp_path: Path, where: str
) -> None:
    """1000 x.part -> x.dat renames at once: exactly 1000 moved events, each from its own
    .part; no created or deleted for either name. Renamed with the loop blocked (all records
    queued in the kernel, a pair split between two reads) or by another process while the
    monitor reads."""
    n = 1000
    stems = [STEM.format(i) for i in range(n)]
    for stem in stems:
        (tmp_path / f"{stem}.part").write_text(stem)
    (tmp_path / AWAY).write_text("")
    async with watching(
        tmp_path,
        pat("moved", "*.dat", Change.moved),
        pat("dat-other", "*.dat", Change.created, Change.deleted, Change.modified),
        pat("part", "*.part"),
        pat("part-gone", "*.part", Change.deleted),
        pat("end", "*.sentinel"),
    ) as w:
        os.rename(tmp_path / AWAY, tmp_path.parent / f"{tmp_path.name}.tmp")
        if where == "loop-blocked":
            for stem in stems:
                os.rename(tmp_path / f"{stem}.part", tmp_path / f"{stem}.dat")
        else:
            proc = await asyncio.create_subprocess_exec(
                PYTHON, "-c", RENAMER, str(tmp_path), str(n)
            )
            assert await proc.wait() == 0
        sentinel = tmp_path / "end.sentinel"
        sentinel.write_text("")
        got = await w.until(sentinel)
    assert [
        (e.rule.name, e.change, Path(e.path).name[:4])
        for e in got
        if e.rule.name not in ("moved", "end")
    ] == []
    moved = [e for e in got if e.rule.name == "moved"]
    assert len(moved) == n
    assert all(e.change is Change.moved for e in moved)
    pairs = sorted((Path(e.extras["src_path"]).name, Path(e.path).name) for e in moved)
    assert pairs == [(f"{stem}.part", f"{stem}.dat") for stem in stems]


# -- 5. still open when the runner is killed ----------------------------------------------------

WRITER = """
import sys
with open(sys.argv[1], "w") as f:
    f.write("first half;")
    f.flush()
    print("open", flush=True)
    sys.stdin.readline()
    f.write("second half")
print("closed", flush=True)
"""

SHOW = (
    "runner: {base_dir: data, jobs_dir: jobs, shutdown_timeout: 20, kill_timeout: 1}\n"
    "recipes:\n"
    "  show:\n"
    "    kind: python\n"
    "    script: |\n"
    "      print(open(input_file).read(), end='')\n"
    "patterns:\n"
    "  inbox: {glob: 'in/*.dat', recipe: show}\n"
)


def jobs_for(jobs_dir: Path, name: str) -> list[dict[str, Any]]:
    return [m for m in job_metas(jobs_dir) if Path(m["event"]["path"]).name == name]


def finished_for(jobs_dir: Path, name: str) -> list[dict[str, Any]]:
    return [m for m in finished_jobs(jobs_dir) if Path(m["event"]["path"]).name == name]


def test_a_file_open_when_the_runner_is_killed_triggers_once_when_closed(tmp_path: Path) -> None:
    """Runner SIGKILLed while a file is open for writing; the next runner (live: a sentinel
    makes its job) makes no job for it until its writer closes it, then exactly one, whole."""
    write_workflow(tmp_path, SHOW)
    inbox = tmp_path / "data" / "in"
    inbox.mkdir()
    jobs_dir = tmp_path / "jobs"
    writer: subprocess.Popen[str] | None = None
    try:
        with MeowRun("workflow.yaml", cwd=tmp_path) as first:
            first.wait_ready()
            writer = subprocess.Popen(
                [PYTHON, "-c", WRITER, str(inbox / "x.dat")],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert writer.stdin is not None
            assert writer.stdout is not None
            assert writer.stdout.readline() == "open\n"
            first.proc.kill()
            first.proc.wait(timeout=WAIT)
        with MeowRun("workflow.yaml", cwd=tmp_path) as second:
            second.wait_ready()
            (inbox / "s1.dat").write_text("s1")
            wait_until_sync(lambda: len(finished_for(jobs_dir, "s1.dat")) == 1)
            assert jobs_for(jobs_dir, "x.dat") == [], second.report()
            closing = time.time()
            writer.stdin.write("go\n")
            writer.stdin.flush()
            assert writer.stdout.readline() == "closed\n"
            assert writer.wait(timeout=WAIT) == 0
            wait_until_sync(lambda: len(finished_for(jobs_dir, "x.dat")) >= 1)
            (inbox / "s2.dat").write_text("s2")
            wait_until_sync(lambda: len(finished_for(jobs_dir, "s2.dat")) == 1)
            second.signal(signal.SIGINT)
            assert second.wait_exit() == 0, second.report()
    finally:
        if writer is not None:
            if writer.poll() is None:
                writer.kill()
            writer.wait(timeout=WAIT)
            for stream in (writer.stdin, writer.stdout):
                if stream is not None:
                    with suppress(OSError):
                        stream.close()
    (job,) = jobs_for(jobs_dir, "x.dat")
    assert job["state"] == "done"
    assert job["event"]["change"] == "created"
    assert job["event"]["time"] >= closing
    assert stdout_of(job) == "first half;second half"
    assert len(job_metas(jobs_dir)) == 3  # s1, x, s2


# -- 6. still open when the runner starts -------------------------------------------------------


@pytest.mark.parametrize("start", ["first-start", "restart", "retroactive"])
async def test_a_file_open_when_the_runner_starts_triggers_once_when_closed(
    ws: Workspace, start: str
) -> None:
    """A file half written when the runner starts (its first start, a restart after a clean
    stop, or with a retroactive rule): no job while it is open, though the runner is live;
    exactly one, for the whole file, once it is closed."""
    pattern = FilePattern(name="p", glob="*.dat", recipe="show", retroactive=start == "retroactive")
    recipe = py_recipe("show", "print(open(input_file).read(), end='')\n")
    if start == "restart":
        async with ws.runner([pattern], [recipe]) as r0:
            ws.write("before.dat", "before")
            await until(r0, 1)
    done_before = len(ws.jobs_list())
    f = open(ws.base / "x.dat", "w")  # noqa: SIM115 - closed in the runner's lifetime
    try:
        f.write("first half;")
        f.flush()
        async with ws.runner([pattern], [recipe]) as r:
            ws.write("s1.dat", "s1")
            await until(r, 1)
            assert [name_of(j) for j in ws.jobs_list()][done_before:] == ["s1.dat"]
            f.write("second half")
            closing = time.time()
            f.close()
            await until(r, 2)
            ws.write("s2.dat", "s2")
            await until(r, 3)
    finally:
        f.close()
    # (a retroactive scan or a restart's catch-up may see s1 or before.dat again: same
    # trigger, same job id, no second job; so jobs are counted here, not events)
    names = [name_of(j) for j in ws.jobs_list()][done_before:]
    assert sorted(names) == ["s1.dat", "s2.dat", "x.dat"]
    (job,) = [j for j in ws.jobs_list() if name_of(j) == "x.dat"]
    assert job["state"] == "done"
    assert job["event"]["time"] >= closing
    assert stdout_of(job) == "first half;second half"


# -- 7. a rule added at run time ----------------------------------------------------------------


async def test_a_file_written_right_after_add_pattern_triggers_once(ws: Workspace) -> None:
    """A runner with no file rule gets one with add_pattern, and a file is written at once
    (no wait_ready): exactly one job for it. Three times, each with a fresh runner."""
    recipe = py_recipe("show", "print(open(input_file).read(), end='')\n")
    for i in range(3):
        async with ws.runner([], [recipe]) as r:
            assert not r.files.watching
            r.add_pattern(FilePattern(name=f"late{i}", glob=f"in{i}/*.txt", recipe="show"))
            ws.write(f"in{i}/now.txt", f"now {i}")
            await until(r, 1)
            ws.write(f"in{i}/sentinel.txt", "s")
            await until(r, 2)
        assert (r.stats.jobs, r.stats.done) == (2, 2)
        jobs = of_rule(ws, f"late{i}")
        assert sorted(name_of(j) for j in jobs) == ["now.txt", "sentinel.txt"]
        (job,) = [j for j in jobs if name_of(j) == "now.txt"]
        assert stdout_of(job) == f"now {i}"


# -- 8. wait_for on a stopped runner ------------------------------------------------------------


async def test_wait_for_raises_runner_stopped_once_the_runner_stops(ws: Workspace) -> None:
    """A condition that can no longer come true raises RunnerStopped, promptly: for a waiter
    already waiting when the runner stops and for one that starts waiting after."""
    r = ws.runner([FilePattern(name="p", glob="*.txt", recipe="r")], [py_recipe("r")])
    task = asyncio.create_task(r.run())
    async with asyncio.timeout(WAIT):
        await r.started.wait()
    early = asyncio.create_task(r.wait_for(lambda s: s.done >= 99))
    await asyncio.sleep(0)  # let it start waiting
    r.stop()
    async with asyncio.timeout(5):
        with pytest.raises(RunnerStopped):
            await early
        with pytest.raises(RunnerStopped) as info:
            await r.wait_for(lambda s: s.done >= 99)
        await task
    assert info.value.stats is r.stats


# -- 9. the portable backend --------------------------------------------------------------------


async def test_the_watchfiles_backend_still_triggers_once(ws: Workspace) -> None:
    """file_watcher="watchfiles": a written file makes one job."""
    recipe = py_recipe("show", "print(open(input_file).read(), end='')\n")
    pattern = FilePattern(name="p", glob="*.txt", recipe="show")
    async with ws.runner([pattern], [recipe], file_watcher="watchfiles") as r:
        assert not r.files.exact
        ws.write("a.txt", "hello")
        await until(r, 1)
        ws.write("sentinel.txt", "s")
        await until(r, 2)
    assert (r.stats.events, r.stats.jobs, r.stats.done) == (2, 2, 2)
    (job,) = [j for j in ws.jobs_list() if name_of(j) == "a.txt"]
    assert job["event"]["change"] == "created"
    assert stdout_of(job) == "hello"


# -- 10. kernel queue overflow: modifications and deletions -------------------------------------


@contextmanager
def inotify_queue_limit(n: int) -> Iterator[None]:
    """fs.inotify.max_queued_events lowered while it is held. The limit is read when an
    inotify instance is made, so holding it only while ours is made touches nothing else."""
    knob = Path("/proc/sys/fs/inotify/max_queued_events")
    try:
        old = knob.read_text()
        knob.write_text(f"{n}\n")
    except OSError:
        pytest.skip("needs root to lower fs.inotify.max_queued_events")
    try:
        yield
    finally:
        knob.write_text(old)


async def test_an_overflow_still_reports_files_modified_in_place_and_deleted(
    tmp_path: Path,
) -> None:
    """Seen files rewritten in place and seen files deleted while the kernel's queue has
    overflowed (their records dropped): the rescan reports each, once, as modified / deleted."""
    inbox = tmp_path / "in"
    junk = tmp_path / "junk"
    inbox.mkdir()
    junk.mkdir()
    rewrite = [inbox / f"m{i:02d}.dat" for i in range(30)]
    delete = [inbox / f"d{i:02d}.dat" for i in range(30)]
    async with watching(
        tmp_path,
        pat("new", "in/*.dat", Change.created),
        pat("mod", "in/*.dat", Change.modified),
        pat("del", "in/*.dat", Change.deleted),
        pat("end", "*.sentinel"),
        starting=inotify_queue_limit(16),
    ) as w:
        # Seen first, one at a time, so the small queue never overflows here.
        for path in rewrite + delete:
            path.write_text("v1")
            ev = await w.next()
            assert (ev.rule.name, ev.path) == ("new", str(path))
        # Now, without letting the loop read: fill the kernel's queue, then make the changes
        # under test, whose records it drops.
        for i in range(100):
            (junk / f"{i}.tmp").write_text("x")
        for path in rewrite:
            ino = path.stat().st_ino
            path.write_text("v2, longer")
            assert path.stat().st_ino == ino  # in place
        for path in delete:
            path.unlink()
        # Every one of them reported by some rule; then a sentinel through the live watch
        # collects whatever else came.
        touched = {str(p) for p in rewrite + delete}
        got: list[Event] = []
        async with asyncio.timeout(WAIT):
            while not touched <= {e.path for e in got}:
                got.append(await w.events.get())
        sentinel = tmp_path / "z.sentinel"
        sentinel.write_text("")
        got += await w.until(sentinel)
    by_rule: dict[str, list[str]] = {}
    for e in got:
        by_rule.setdefault(e.rule.name, []).append(Path(e.path).name)
    assert {
        "mod": sorted(by_rule.get("mod", [])),
        "del": sorted(by_rule.get("del", [])),
        "new": sorted(by_rule.get("new", [])),  # rewritten in place: not a new file
    } == {
        "mod": sorted(p.name for p in rewrite),
        "del": sorted(p.name for p in delete),
        "new": [],
    }
    assert by_rule["end"] == ["z.sentinel"]


# -- a writer that closes between the scan's look and its probe ---------------------------------


@pytest.mark.parametrize("where", ["new folder scan", "close of a renamed file"])
async def test_a_file_closed_between_stat_and_probe_triggers_once_as_closed(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """The writer finishes and closes in the instant between the monitor's ``stat`` and its
    read-lease probe: the event carries the state the file was closed in, and the close's own
    record makes no second one (it did, once jobs started as fast as warm forks)."""
    import meow_async.monitors.files.inotify_watch as watch_module
    import meow_async.monitors.files.monitor as files_module
    from meow_async.monitors.files.writing import being_written as real

    writer: list[Any] = []

    def closes_first(path: str) -> bool | None:
        if writer and path.endswith("a.dat"):
            f = writer.pop()
            f.write("-and-the-rest")
            f.close()
        return real(path)

    module = files_module if where == "new folder scan" else watch_module
    monkeypatch.setattr(module, "being_written", closes_first)
    recipe = py_recipe("size", "import os\nprint(os.path.getsize(input_file))\n")
    async with ws.runner([FilePattern(name="p", glob="**/*.dat", recipe="size")], [recipe]) as r:
        if where == "new folder scan":
            # Made before the monitor runs again: its watch is added, then the folder scanned.
            (ws.base / "new").mkdir()
            f = open(ws.base / "new" / "a.dat", "w")  # noqa: SIM115 - the writer
        else:
            # Renamed into place while still open: the monitor probes it at the rename.
            f = open(ws.base / "a.part", "w")  # noqa: SIM115 - the writer
            os.rename(ws.base / "a.part", ws.base / "a.dat")
        f.write("partial")
        f.flush()
        writer.append(f)
        ws.write("sentinel.dat")
        await until(r, 2)
    assert not writer  # the probe ran while the file was open
    jobs = {name_of(j): j for j in ws.jobs_list()}
    assert sorted(jobs) == ["a.dat", "sentinel.dat"]
    assert stdout_of(jobs["a.dat"]) == f"{len('partial-and-the-rest')}\n"
    assert r.stats.events == 2


# -- a writer the probe still counts after its close ---------------------------------------------


@pytest.fixture(autouse=True)
def _held_files_logged(caplog: pytest.LogCaptureFixture) -> None:
    """A failure here shows which files the monitor held as still being written, and why."""
    caplog.set_level(logging.DEBUG, logger="meow_async.monitors.files")


@pytest.mark.parametrize("then", ["closed", "closed, freed, renamed in", "closed, renamed, freed"])
async def test_a_file_still_counted_open_after_its_close_is_handed_on_once_free(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, then: str
) -> None:
    """The kernel queues a writer's IN_CLOSE_WRITE before it stops counting it as a writer, so
    the probe just after a close can find the file open for writing, and no record comes again
    (a plausible cause of a run of the rename-within case above that waited for ever). Here a
    second writer holds the file through another name, outside the watched folder, so its
    close makes no record here: once it is gone, the file is handed on once, without a record,
    as it was made (created) or, freed before its rename into place, as moved from there."""
    base, outside = tmp_path / "base", tmp_path / "outside"
    for d in (base / "stage", base / "mid", outside):
        d.mkdir(parents=True)
    final = base / "mid" / "a.dat"
    first = final if then == "closed" else base / "stage" / "a.dat"
    async with watching(base, pat("mid", "mid/*"), pat("s", "s*.txt")) as w:
        with open(first, "w") as writer:
            (base / "s0.txt").write_text("")  # the creation read while it had one name
            assert [e.path for e in await w.until(base / "s0.txt")] == [str(base / "s0.txt")]
            writer.write("data")
            os.link(first, outside / "a.dat")
            other = open(outside / "a.dat", "a")  # noqa: SIM115 - closed below
        try:
            (base / "s1.txt").write_text("")  # read after the close (and its probe)
            assert [e.path for e in await w.until(base / "s1.txt")] == [str(base / "s1.txt")]
            if then == "closed, renamed, freed":
                os.rename(first, final)
                (base / "s3.txt").write_text("")  # the rename read while it was held
                assert [e.path for e in await w.until(base / "s3.txt")] == [str(base / "s3.txt")]
        finally:
            other.close()
        if then == "closed, freed, renamed in":
            os.rename(first, final)  # before the monitor runs again: no probe between
        ev = await w.next()
        (base / "s2.txt").write_text("")
        rest = await w.until(base / "s2.txt")
    assert ev.path == str(final)
    if then == "closed, freed, renamed in":
        assert (ev.change, ev.extras.get("src_path")) == (Change.moved, str(first))
    else:  # renamed while a writer had it (as far as anyone could tell): as made
        assert (ev.change, ev.extras.get("src_path")) == (Change.created, None)
    assert [e.path for e in rest] == [str(base / "s2.txt")]
    assert f"holding {first} (created): open for writing when closed" in caplog.text
