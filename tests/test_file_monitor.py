"""The file monitor on real inotify: one event per change per rule, with the right fields."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from meow_async import Change, Event, FileMonitor, MonitorError, Workflow

from .conftest import WAIT, poll_until, py_recipe
from .watching import pat, watching


async def test_created_event_fields(tmp_path: Path) -> None:
    async with watching(tmp_path, pat("p", "in/*.txt")) as w:
        (tmp_path / "in").mkdir()
        target = tmp_path / "in" / "a.txt"
        target.write_text("hello")
        ev = await w.next()
    assert ev.kind == "file"
    assert ev.path == str(target)
    assert ev.base == str(tmp_path)
    assert ev.rel_path == "in/a.txt"
    assert ev.change is Change.created
    assert ev.rule.name == "p"
    assert ev.rule.recipe.name == "r"
    assert len(ev.id) == 32
    assert ev.to_dict()["change"] == "created"


async def test_one_event_per_write_even_in_many_pieces(tmp_path: Path) -> None:
    """open, many writes, close: one event, not one per inotify notification."""
    async with watching(tmp_path, pat("p", "*.dat")) as w:
        for i in range(20):
            with open(tmp_path / f"{i}.dat", "w") as f:
                for _ in range(50):
                    f.write("x" * 100)
                    f.flush()
        (tmp_path / "end.dat").write_text("")
        got = await w.until(tmp_path / "end.dat")
    paths = [e.path for e in got]
    assert len(paths) == len(set(paths)) == 21
    assert all(e.change is Change.created for e in got)


async def test_every_matching_rule_gets_an_event(tmp_path: Path) -> None:
    async with watching(tmp_path, pat("a", "*.txt"), pat("b", "**/*"), pat("c", "*.csv")) as w:
        (tmp_path / "x.txt").write_text("1")
        got = [await w.next(), await w.next()]
    assert sorted(e.rule.name for e in got) == ["a", "b"]
    assert all(e.path == str(tmp_path / "x.txt") for e in got)


async def test_modified_and_deleted(tmp_path: Path) -> None:
    existing = tmp_path / "old.txt"
    existing.write_text("before")  # there before the monitor starts
    async with watching(
        tmp_path, pat("mod", "*.txt", Change.modified), pat("del", "*.txt", Change.deleted)
    ) as w:
        existing.write_text("after, longer")
        ev = await w.next()
        assert (ev.rule.name, ev.change, ev.path) == ("mod", Change.modified, str(existing))
        existing.unlink()
        ev = await w.next()
        assert (ev.rule.name, ev.change, ev.path) == ("del", Change.deleted, str(existing))


async def test_rename_inside_the_folder_is_moved(tmp_path: Path) -> None:
    async with watching(
        tmp_path,
        pat("tmp", "*.part", Change.created),
        pat("moved", "*.dat", Change.moved),
        pat("gone", "*.part", Change.deleted),
    ) as w:
        part = tmp_path / "a.part"
        part.write_text("data")
        ev = await w.next()  # seen, so the monitor knows its inode
        assert ev.rule.name == "tmp"
        os.rename(part, tmp_path / "a.dat")
        ev = await w.next()
        assert ev.rule.name == "moved"
        assert ev.change is Change.moved
        assert ev.path == str(tmp_path / "a.dat")
        assert ev.extras["src_path"] == str(part)
        # A rename is not a deletion of the source: the next event is for the sentinel.
        (tmp_path / "s.part").write_text("")
        ev = await w.next()
        assert (ev.rule.name, ev.path) == ("tmp", str(tmp_path / "s.part"))


async def test_files_in_new_nested_folders_are_found(tmp_path: Path) -> None:
    """inotify cannot see files made before the watch on their new folder exists."""
    async with watching(tmp_path, pat("deep", "**/*.h5")) as w:
        deep = tmp_path / "run1" / "a" / "b"
        deep.mkdir(parents=True)
        for i in range(5):
            (deep / f"{i}.h5").write_text("x")
        got = [await w.next() for _ in range(5)]
    assert sorted(Path(e.path).name for e in got) == [f"{i}.h5" for i in range(5)]
    assert {e.rel_path for e in got} == {f"run1/a/b/{i}.h5" for i in range(5)}


async def test_ignored_folders_make_no_events(tmp_path: Path) -> None:
    jobs = tmp_path / ".meow" / "jobs"
    jobs.mkdir(parents=True)
    async with watching(tmp_path, pat("all", "**/*"), ignore=(jobs,)) as w:
        (jobs / "job.json").write_text("{}")
        (tmp_path / ".git").mkdir()  # watchfiles' default filter
        (tmp_path / ".git" / "HEAD").write_text("x")
        (tmp_path / "sentinel").write_text("x")
        got = await w.until(tmp_path / "sentinel")
    assert [e.rel_path for e in got] == ["sentinel"]


def is_watching(monitor: FileMonitor) -> bool:
    return monitor.watching


async def test_watches_only_while_a_rule_needs_it(tmp_path: Path) -> None:
    wf = Workflow([], [py_recipe("r")])
    monitor = FileMonitor(tmp_path, wf)
    events: asyncio.Queue[Event] = asyncio.Queue()
    stop = asyncio.Event()
    task = asyncio.create_task(monitor.run(events, stop))
    async with asyncio.timeout(WAIT):
        await monitor.ready.wait()
        assert not monitor.watching
        wf.add_pattern(pat("p", "*.txt"))
        assert not monitor.ready.is_set()
        await monitor.ready.wait()
        assert is_watching(monitor)
        (tmp_path / "a.txt").write_text("x")
        assert (await events.get()).rule.name == "p"
        wf.remove_pattern("p")
        await poll_until(lambda: not monitor.watching)
        stop.set()
        await task


def junk_dirs(monitor: FileMonitor) -> set[str] | None:
    return monitor.filter.dirs


async def test_the_junk_patterns_are_read_as_the_watch_starts(tmp_path: Path) -> None:
    """Reading watchfiles' junk patterns imports watchfiles (10-15 ms): done on the loop at
    the first file seen, it was the latency of a runner's first event. A monitor with no file
    rule never reads them (nor does a runner only made, as ``validate`` makes one)."""
    wf = Workflow([], [py_recipe("r")])
    monitor = FileMonitor(tmp_path, wf)
    stop = asyncio.Event()
    task = asyncio.create_task(monitor.run(asyncio.Queue(), stop))
    async with asyncio.timeout(WAIT):
        await monitor.ready.wait()
        assert junk_dirs(monitor) is None
        wf.add_pattern(pat("p", "*.txt"))
        await monitor.ready.wait()
        assert ".git" in (junk_dirs(monitor) or ())
        stop.set()
        await task


async def test_missing_folder_is_an_error(tmp_path: Path) -> None:
    monitor = FileMonitor(tmp_path / "nope", Workflow([pat("p", "*")], [py_recipe("r")]))
    with pytest.raises(MonitorError, match="does not exist") as info:
        await monitor.run(asyncio.Queue(), asyncio.Event())
    assert str(tmp_path / "nope") in str(info.value)


async def test_ignores_folders_by_path_not_by_text_prefix(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    async with watching(tmp_path, pat("all", "**/*"), ignore=(jobs,)) as w:
        (jobs / "x.txt").write_text("ignored")
        (tmp_path / "jobs2").mkdir()
        (tmp_path / "jobs2" / "y.txt").write_text("not ignored")
        got = await w.until(tmp_path / "jobs2" / "y.txt")
    assert [e.rel_path for e in got] == ["jobs2/y.txt"]


async def test_a_watched_folder_below_a_junk_named_folder_still_works(tmp_path: Path) -> None:
    base = tmp_path / ".venv" / "data"  # '.venv' is junk only *inside* the watched folder
    base.mkdir(parents=True)
    async with watching(base, pat("p", "*.txt")) as w:
        (base / "a.txt").write_text("x")
        assert (await w.next()).path == str(base / "a.txt")


async def test_a_retroactive_rule_added_later_sees_files_other_rules_saw(tmp_path: Path) -> None:
    wf = Workflow([pat("first", "*.txt")], [py_recipe("r")])
    monitor = FileMonitor(tmp_path, wf)
    events: asyncio.Queue[Event] = asyncio.Queue()
    stop = asyncio.Event()
    task = asyncio.create_task(monitor.run(events, stop))
    async with asyncio.timeout(WAIT):
        await monitor.ready.wait()
        (tmp_path / "a.txt").write_text("x")
        assert (await events.get()).rule.name == "first"
        wf.add_pattern(pat("late", "*.txt", retroactive=True))
        ev = await events.get()
        assert (ev.rule.name, ev.path, ev.extras.get("retroactive")) == (
            "late",
            str(tmp_path / "a.txt"),
            True,
        )
        stop.set()
        await task


async def test_a_kernel_queue_overflow_is_caught_by_a_rescan(tmp_path: Path) -> None:
    """inotify drops changes past max_queued_events and says so (IN_Q_OVERFLOW): the monitor
    walks for what changed since. The limit is read when an inotify instance is made, so
    lowering it only while ours is made touches nothing else."""
    knob = Path("/proc/sys/fs/inotify/max_queued_events")
    try:
        old = knob.read_text()
        knob.write_text("16")
    except OSError:
        pytest.skip("needs root to lower fs.inotify.max_queued_events")
    (tmp_path / "in").mkdir()  # watched from the start: only inotify reports its files
    try:
        monitor = FileMonitor(tmp_path, Workflow([pat("p", "in/*.dat")], [py_recipe("r")]))
        events: asyncio.Queue[Event] = asyncio.Queue()
        stop = asyncio.Event()
        task = asyncio.create_task(monitor.run(events, stop))
        async with asyncio.timeout(WAIT):
            await monitor.ready.wait()
    finally:
        knob.write_text(old)
    names = {f"{i:04d}.dat" for i in range(2000)}
    # Made outside the watch, then moved in by one process, as fast as it can rename: faster
    # than inotify's queue is read. A rename keeps each file in one state.
    staging = tmp_path.parent / f"{tmp_path.name}-staging"
    staging.mkdir()
    for name in names:
        (staging / name).write_text("x")
    mv = await asyncio.create_subprocess_exec(
        "bash", "-c", f"mv {staging}/*.dat {tmp_path / 'in'}/"
    )
    assert await mv.wait() == 0
    got: list[str] = []
    async with asyncio.timeout(WAIT):
        while len(set(got)) < len(names):
            got.append(Path((await events.get()).path).name)
    stop.set()
    await task
    assert sorted(got) == sorted(names)  # all of them, once each
