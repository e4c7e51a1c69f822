"""The portable watcher (``file_watcher: watchfiles``) through watchfiles' public ``watch()``:
live when ready is set, one event per write, renames, new folders, and nothing left behind."""

from __future__ import annotations

import contextlib
from pathlib import Path

from meow_async import Change

from .conftest import poll_until
from .watching import pat, watching


async def test_a_file_written_right_after_ready_makes_one_created_event(tmp_path: Path) -> None:
    async with watching(tmp_path, pat("p", "*.txt"), watcher="watchfiles") as w:
        assert w.monitor.watching
        assert not w.monitor.exact
        (tmp_path / "a.txt").write_text("hello")
        ev = await w.next()
        (tmp_path / "end.txt").write_text("")
        rest = await w.until(tmp_path / "end.txt")
    assert (ev.change, ev.path) == (Change.created, str(tmp_path / "a.txt"))
    assert [e.path for e in rest] == [str(tmp_path / "end.txt")]


async def test_modified_deleted_and_moved(tmp_path: Path) -> None:
    old = tmp_path / "old.txt"
    old.write_text("before")
    async with watching(
        tmp_path,
        pat("mod", "*.txt", Change.modified),
        pat("del", "*.txt", Change.deleted),
        pat("new", "*.part", Change.created),
        pat("mv", "*.dat", Change.moved),
        watcher="watchfiles",
    ) as w:
        old.write_text("after, longer")
        ev = await w.next()
        assert (ev.rule.name, ev.change) == ("mod", Change.modified)
        old.unlink()
        ev = await w.next()
        assert (ev.rule.name, ev.change) == ("del", Change.deleted)
        part = tmp_path / "a.part"
        part.write_text("data")
        assert (await w.next()).rule.name == "new"
        part.rename(tmp_path / "a.dat")
        ev = await w.next()
    assert (ev.rule.name, ev.change, ev.path) == ("mv", Change.moved, str(tmp_path / "a.dat"))


async def test_files_made_in_a_new_folder_are_found(tmp_path: Path) -> None:
    async with watching(tmp_path, pat("p", "**/*.txt"), watcher="watchfiles") as w:
        deep = tmp_path / "a" / "b"
        deep.mkdir(parents=True)
        for i in range(5):
            (deep / f"{i}.txt").write_text(str(i))
        got = {(await w.next()).path for _ in range(5)}
    assert got == {str(deep / f"{i}.txt") for i in range(5)}


def _notifier_threads() -> int:
    """watchfiles' notifier runs a thread of its own (a Rust thread: not in threading's list)."""
    names = []
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that ended since the listing
            names.append((task / "comm").read_text())
    return sum(name.startswith("notify-rs") for name in names)


async def test_stopping_closes_watchfiles_notifier(tmp_path: Path) -> None:
    await poll_until(lambda: _notifier_threads() == 0)  # the other tests' watchers closed
    async with watching(tmp_path, pat("p", "*.txt"), watcher="watchfiles") as w:
        assert _notifier_threads() == 1
        (tmp_path / "a.txt").write_text("x")
        await w.next()
    await poll_until(lambda: _notifier_threads() == 0)
