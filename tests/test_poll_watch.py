"""File triggers where the kernel cannot see the writes: the polling watcher and the job-end scan.

Writes invisible to inotify are made for real: a FUSE bind mount (Debian's ``bindfs``) of a
folder, the runner watching the mount, writers writing to the underlying folder, as another
machine writes to an NFS export. inotify on the mount reports nothing of those writes; only a
look (``file_watcher: poll``) or the job-end scan finds them. Every wait is on a condition.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meow_async import Change, ConfigError, FilePattern, Runner, RunnerConfig, Workflow
from meow_async.monitors.files.monitor import FileMonitor
from meow_async.monitors.files.mounts import mount_of, remote_mounts
from meow_async.monitors.files.poll_watch import PollWatch

from .conftest import WAIT, Workspace, poll_until, py_recipe

# -- a FUSE bind mount ------------------------------------------------------------------------


def _can_fuse() -> str | None:
    """Why bindfs cannot mount here, or None."""
    if shutil.which("bindfs") is None:
        return "bindfs is not installed (apt-get install bindfs; .ci/run installs it)"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing (no FUSE in this container)"
    return None


@pytest.fixture
def fuse(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(mount, underlying): writes to the second are invisible to inotify on the first."""
    why = _can_fuse()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the FUSE tests: {why}")
        pytest.skip(why)
    under, mnt = tmp_path / "under", tmp_path / "mnt"
    under.mkdir()
    mnt.mkdir()
    done = subprocess.run(["bindfs", str(under), str(mnt)], capture_output=True, text=True)
    if done.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"bindfs cannot mount here: {done.stderr.strip()}")
        pytest.skip(f"bindfs cannot mount here: {done.stderr.strip()}")
    try:
        yield mnt, under
    finally:
        for _ in range(50):  # a job may still hold a file open for a moment
            if subprocess.run(["fusermount", "-u", str(mnt)], capture_output=True).returncode:
                time.sleep(0.1)
            else:
                break


def fuse_ws(root: Path, mnt: Path) -> Workspace:
    return Workspace(root=root, base=mnt, jobs=root / "jobs")


# A job that reports the size and SHA-256 of what it was given, as a file outside the watched
# folder (so it triggers nothing).
HASH = """
import hashlib, json, os
from pathlib import Path
h = hashlib.sha256()
with open(input_file, "rb") as f:
    while chunk := f.read(1 << 20):
        h.update(chunk)
size = os.path.getsize(input_file)
Path("seen.json").write_text(json.dumps([os.path.basename(input_file), size, h.hexdigest()]))
"""


def seen(ws: Workspace, rule: str) -> list[tuple[str, int, str]]:
    out = []
    for j in ws.jobs_list():
        f = Path(j["dir"]) / "seen.json"
        if j["rule"] == rule and j["state"] == "done" and f.exists():
            name, size, digest = json.loads(f.read_text())
            out.append((name, size, digest))
    return sorted(out)


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


async def until_done(runner: Runner, n: int, timeout: float = WAIT) -> None:
    async with asyncio.timeout(timeout):
        await runner.wait_for(lambda s: s.finished >= n)


# -- settings ---------------------------------------------------------------------------------


def test_poll_settings_are_checked(tmp_path: Path) -> None:
    cfg = RunnerConfig(base_dir=tmp_path, file_watcher="poll", poll_interval=5)
    assert cfg.polled_settle == 10  # twice the interval when that is longer than 2 s
    assert RunnerConfig(base_dir=tmp_path).polled_settle == 2.0
    with pytest.raises(ConfigError, match=r"poll_settle.*longer than poll_interval"):
        RunnerConfig(base_dir=tmp_path, poll_interval=3, poll_settle=2)
    with pytest.raises(ConfigError, match="poll_interval"):
        RunnerConfig(base_dir=tmp_path, poll_interval=0)


def test_mount_table_is_read(tmp_path: Path) -> None:
    table = tmp_path / "mountinfo"
    table.write_text(
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
        "40 22 0:50 / /data rw,relatime shared:2 - nfs4 srv:/export rw,vers=4.2\n"
        "41 22 0:51 / /home/me/with\\040space rw - fuse.sshfs me@h:/x rw\n"
    )
    holder = mount_of("/data/run1", str(table))
    assert holder is not None
    assert (holder.fstype, holder.source, holder.remote) == ("nfs4", "srv:/export", True)
    assert [m.point for m in remote_mounts("/data", str(table))] == ["/data"]
    below = remote_mounts("/home/me", str(table))
    assert [m.point for m in below] == ["/home/me/with space"]  # a FUSE mount below it
    assert remote_mounts("/srv", str(table)) == []


def test_job_ends_are_looked_at_only_where_the_kernel_may_not_tell(tmp_path: Path) -> None:
    """inotify on a local folder reports every write at its close, exactly (a rename as
    ``moved``): a job-end scan would only race it. The poll, or a network or FUSE mount, is
    where a job's end is worth a look."""
    wf = Workflow([FilePattern(name="p", glob="*", recipe="r")], [py_recipe("r")])
    assert not FileMonitor(tmp_path, wf, watcher="inotify").scans_job_outputs
    assert FileMonitor(tmp_path, wf, watcher="poll").scans_job_outputs


# -- the poll on a local folder: what a look finds -----------------------------------------------


async def test_poll_finds_new_changed_moved_and_deleted_files(ws: Workspace) -> None:
    """With ``file_watcher: poll`` (no inotify at all) each new file, rewrite, rename and
    deletion makes one event, and a file rewritten in place in a quiet folder is found by the
    full look."""
    (ws.base / "deep" / "er").mkdir(parents=True)
    pattern = FilePattern(
        name="p",
        glob="**/*.txt",
        recipe="py",
        changes=frozenset(Change),
    )
    runner = ws.runner(
        [pattern],
        [py_recipe()],
        file_watcher="poll",
        poll_interval=0.05,
        poll_settle=0.2,
        poll_full_interval=0.5,
    )
    async with runner:
        assert runner.files.kind == "poll"
        ws.write("a.txt", "one")
        ws.write("deep/er/b.txt", "two")
        await until_done(runner, 2)
        os.rename(ws.base / "a.txt", ws.base / "deep" / "a.txt")
        (ws.base / "deep" / "er" / "b.txt").unlink()
        await until_done(runner, 4)
        # In place, in a folder that does not change: only the full look can see it.
        past = time.time() - 100
        os.utime(ws.base / "deep" / "a.txt", (past, past))
        await poll_until(lambda: runner.files._watch_now is not None)
        await asyncio.sleep(0)  # nothing in flight
        with open(ws.base / "deep" / "a.txt", "r+") as f:
            f.write("ONE, longer")
        await until_done(runner, 5)
    changes = sorted((j["event"]["change"], Path(j["event"]["path"]).name) for j in ws.jobs_list())
    assert changes == [
        ("created", "a.txt"),
        ("created", "b.txt"),
        ("deleted", "b.txt"),
        ("modified", "a.txt"),
        ("moved", "a.txt"),
    ]
    moved = next(j for j in ws.jobs_list() if j["event"]["change"] == "moved")
    assert moved["event"]["src_path"] == str(ws.base / "a.txt")


async def test_poll_index_is_kept_in_sqlite_and_made_anew_when_unreadable(
    ws: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    """The index lives in the spool folder; a restart reuses it (no folder is listed again
    unless it changed), and an unreadable one is made anew with a warning."""
    for i in range(20):
        ws.write(f"d{i % 4}/f{i}.txt", str(i))
    cfg: dict[str, Any] = {"file_watcher": "poll", "poll_interval": 0.05, "poll_settle": 0.2}
    pattern = FilePattern(name="p", glob="**/*.txt", recipe="py")
    async with ws.runner([pattern], [py_recipe()], **cfg) as runner:
        await poll_until(lambda: _looks(runner) >= 2)
    index = ws.root / "spool" / "poll-index.sqlite"
    db = sqlite3.connect(index)
    try:
        assert db.execute("SELECT count(*) FROM files").fetchone() == (20,)
        assert db.execute("SELECT count(*) FROM dirs").fetchone() == (5,)
    finally:
        db.close()  # the runner holds its index exclusively
    async with ws.runner([pattern], [py_recipe()], **cfg) as runner:
        watch = runner.files._watch_now
        assert isinstance(watch, PollWatch)
        await poll_until(lambda: _looks(runner) >= 2)
        # Every folder's mtime is as indexed: none is listed again, not even at the start.
        assert watch.first_look["folders_listed"] == 0
        assert watch.last_look["folders_listed"] == 0
        assert watch.last_look["folders"] == 5
    assert not ws.jobs_list()  # files there before: the catch-up's, not the poll's
    index.write_bytes(b"not a database, " * 100)
    caplog.set_level(logging.WARNING, logger="meow_async")
    async with ws.runner([pattern], [py_recipe()], **cfg) as runner:
        await poll_until(lambda: _looks(runner) >= 2)
    assert "is unreadable" in caplog.text
    assert "making it anew" in caplog.text


def _looks(runner: Runner) -> int:
    watch = runner.files._watch_now
    return watch.looks if isinstance(watch, PollWatch) else 0


# -- writes inotify cannot see: a FUSE mount ------------------------------------------------------


@pytest.mark.skipif(
    os.environ.get("MEOW_TEST_LOOP") == "uvloop",
    reason="1 GiB through FUSE takes ~20 s; the looks run in a thread, so one loop is enough",
)
async def test_auto_polls_a_fuse_mount_and_every_file_triggers_once_complete(
    tmp_path: Path, fuse: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """``auto`` finds the mount is FUSE and polls it, saying why. Files written to the
    underlying folder (in parts, with pauses shorter than settle; one of 1 GB growing over
    a few seconds) each trigger once, complete: the job's size and SHA-256 match the file."""
    mnt, under = fuse
    ws = fuse_ws(tmp_path, mnt)
    caplog.set_level(logging.INFO, logger="meow_async")
    pattern = FilePattern(name="hash", glob="in/*.bin", recipe="hash")
    # The default settle (2 s) is longer than the mount's attribute cache (FUSE: 1 s), which
    # can answer a look with the size a file had up to a second ago.
    runner = ws.runner([pattern], [py_recipe("hash", HASH)], poll_interval=0.2)
    (under / "in").mkdir()
    async with runner:
        assert runner.files.kind == "poll"
        assert f"watching {mnt} by polling every 0.2s" in caplog.text
        assert "is a fuse mount" in caplog.text
        expected = {}
        for i in range(6):
            path = under / "in" / f"small{i}.bin"
            with open(path, "wb") as f:
                for _ in range(3):  # three bursts, 0.3 s apart: looks see it grow
                    f.write(os.urandom(50_000))
                    f.flush()
                    await asyncio.sleep(0.3 if i == 0 else 0.01)
            expected[path.name] = (path.stat().st_size, digest(path))
        big = under / "in" / "big.bin"
        # 1 GiB that grows for about 3 s: 16 blocks of 1 MiB at 64 MiB steps (sparse between,
        # so the disk holds 16 MiB), each followed by a pause the looks notice.
        with open(big, "wb") as f:
            for k in range(16):
                f.seek(k * (64 << 20))
                f.write(os.urandom(1 << 20))
                f.flush()
                await asyncio.sleep(0.2)
            f.truncate(1 << 30)
        expected[big.name] = (1 << 30, await asyncio.to_thread(digest, big))
        await until_done(runner, 7, timeout=60)
        await asyncio.sleep(2.5)  # a second job would need this long (settle) to appear
    got = seen(ws, "hash")
    assert len(got) == 7, got  # once each
    assert {name: (size, h) for name, size, h in got} == expected
    # Seen growing over several looks, each new file still triggers as what it is: new.
    assert {j["event"]["change"] for j in ws.jobs_list()} == {"created"}
    big.unlink()


async def test_inotify_sees_nothing_written_under_a_fuse_mount(
    tmp_path: Path, fuse: tuple[Path, Path]
) -> None:
    """Why the poll exists: the same write, watched with inotify, makes no job."""
    mnt, under = fuse
    ws = fuse_ws(tmp_path, mnt)
    pattern = FilePattern(name="hash", glob="*.bin", recipe="hash")
    async with ws.runner([pattern], [py_recipe("hash", HASH)], file_watcher="inotify") as runner:
        (under / "x.bin").write_bytes(b"x")
        (mnt / "y.bin").write_bytes(b"y")  # through the mount: seen
        await until_done(runner, 1)
        await asyncio.sleep(0.5)
    assert [name for name, _, _ in seen(ws, "hash")] == ["y.bin"]


# -- the job-end scan -------------------------------------------------------------------------

#: Writes its result through the underlying folder (as a job on another machine writes to
#: NFS): no watcher here sees the write, only the job's end says it happened.
WRITE_UNDER = """
import os, time
from pathlib import Path
rel = os.path.relpath(result, mnt)
out = Path(under) / rel
out.parent.mkdir(parents=True, exist_ok=True)
with open(out, "w") as f:
    f.write(Path(input_file).read_text() + " " + stage)
    f.flush()
    time.sleep(slow)
    f.write("!")
"""


def chain(mnt: Path, under: Path, slow: float = 0.0) -> tuple[list[FilePattern], list[Any]]:
    params = {"mnt": str(mnt), "under": str(under), "slow": slow}
    patterns = [
        FilePattern(
            name="one",
            glob="in/*.txt",
            recipe="write",
            retroactive=True,
            # Its own check: found by a scan, not waiting for the default (poll) settle.
            settle=0.3,
            parameters={**params, "stage": "1"},
            outputs={"result": "{BASE}/one/{PREFIX}.txt"},
        ),
        FilePattern(
            name="two",
            glob="one/*.txt",
            recipe="write",
            parameters={**params, "stage": "2"},
            outputs={"result": "{BASE}/two/{PREFIX}.txt"},
        ),
        FilePattern(name="three", glob="two/*.txt", recipe="hash", variable="input_file"),
    ]
    return patterns, [py_recipe("write", WRITE_UNDER), py_recipe("hash", HASH)]


async def test_job_end_scan_runs_a_chain_without_waiting_for_a_poll(
    tmp_path: Path, fuse: tuple[Path, Path]
) -> None:
    """Three stages, each writing through the underlying folder, with a poll every 5
    minutes: the chain completes in seconds, each stage started by the end of the one before
    (no look but the first, silent one was made)."""
    mnt, under = fuse
    ws = fuse_ws(tmp_path, mnt)
    (under / "in").mkdir()
    for i in range(3):
        (under / "in" / f"s{i}.txt").write_text(f"sample {i}")
    patterns, recipes = chain(mnt, under)
    runner = ws.runner(patterns, recipes, file_watcher="poll", poll_interval=300)
    async with runner:
        await until_done(runner, 9)
        assert _looks(runner) == 1  # the first look, which only builds the index
        starts = {
            j["rule"] + Path(j["event"]["path"]).stem: j for j in ws.jobs_list()
        }  # one job per stage per sample
    assert len(starts) == 9 == len(ws.jobs_list())
    assert sorted(n for n, _, _ in seen(ws, "three")) == ["s0.txt", "s1.txt", "s2.txt"]
    assert (under / "two" / "s1.txt").read_text() == "sample 1 1! 2!"
    for i in range(3):  # the next stage began right after the previous one's end
        one, two = starts[f"ones{i}"], starts[f"twos{i}"]
        assert two["created"] - one["finished"] < 2.0


async def test_job_end_scan_and_poll_together_make_one_job_per_write(
    tmp_path: Path, fuse: tuple[Path, Path]
) -> None:
    """A write seen both by the job-end scan and by the polls (every 0.1 s, so they find the
    result mid-write too) still makes exactly one job; the job's end cuts the default settle
    short, and the next stage reads the whole file."""
    mnt, under = fuse
    ws = fuse_ws(tmp_path, mnt)
    (under / "in").mkdir()
    n = 6
    for i in range(n):
        (under / "in" / f"s{i}.txt").write_text(f"sample {i}")
    patterns, recipes = chain(mnt, under, slow=0.4)
    runner = ws.runner(
        patterns, recipes, file_watcher="poll", poll_interval=0.1, poll_settle=30, max_jobs=3
    )
    async with runner:
        # A settle of 30 s: only the job-end scan can have let the chain through this soon.
        await until_done(runner, 3 * n, timeout=25)
        looks = _looks(runner)
        await poll_until(lambda: _looks(runner) >= looks + 5)  # more looks: no new job
        assert runner.stats.jobs == 3 * n
    assert len(ws.jobs_list()) == 3 * n
    assert [s for _, s, _ in seen(ws, "three")] == [len(f"sample {i} 1! 2!") for i in range(n)]
