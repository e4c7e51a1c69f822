"""The job index (docs/architecture.md#the-job-index): a SQLite file beside the job folders,
made again from them whenever it cannot be trusted, read by the CLI while the runner writes,
and pruned with the folders by retention. Real runners, real SQLite files, the real CLI."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from meow_async import Event, FilePattern, Handler, Rule, Runner, read_meta
from meow_async.model.index import INDEX_FILE, SCHEMA_VERSION, STALE_FILE, JobIndex
from meow_async.model.jobs import day_of, iter_jobs

from .conftest import WAIT, Workspace, py_recipe, sh_recipe, wait_until_sync
from .test_cli import MeowRun, meow

LOGGER = "meow_async.runner"


async def _run_files(
    ws: Workspace, names: list[str], expect: int | None = None, **overrides: Any
) -> Runner:
    """A runner that makes one job per file and waits for them all (or ``expect`` jobs)."""
    pattern = FilePattern(name="p", glob="*.in", recipe="r")
    async with ws.runner([pattern], [sh_recipe("r", 'echo "$input_file"')], **overrides) as r:
        for name in names:
            ws.write(name)
        async with asyncio.timeout(WAIT):
            await r.wait_for(lambda s: s.finished >= (len(names) if expect is None else expect))
    return r


def _rows(jobs: Path) -> dict[str, tuple[str, str]]:
    """id -> (folder, state), as the index file says (read with sqlite3, not our code)."""
    with sqlite3.connect(f"file:{jobs / INDEX_FILE}?mode=ro", uri=True) as conn:
        return {i: (f, s) for i, f, s in conn.execute("SELECT id, folder, state FROM jobs")}


def _folders(jobs: Path) -> dict[str, tuple[str, str]]:
    return {m["id"]: (str(Path(m["dir"]).relative_to(jobs)), m["state"]) for m in iter_jobs(jobs)}


async def test_the_index_holds_a_row_per_job_folder_in_day_folders(ws: Workspace) -> None:
    await _run_files(ws, ["a.in", "b.in", "c.in"])
    folders = _folders(ws.jobs)
    assert len(folders) == 3
    assert all(folder.count("/") == 1 for folder, _ in folders.values())  # DAY/ID
    assert _rows(ws.jobs) == folders
    assert {state for _, state in folders.values()} == {"done"}


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        ("delete", "there was no index"),
        ("truncate", "unreadable"),
        ("garbage", "unreadable"),
        ("old schema", f"this version uses {SCHEMA_VERSION}"),
        ("a write failed", "a write to it had failed"),
    ],
)
async def test_an_index_deleted_truncated_or_old_is_made_again_from_the_folders(
    ws: Workspace, caplog: pytest.LogCaptureFixture, damage: str, why: str
) -> None:
    await _run_files(ws, ["a.in", "b.in"])
    before = _rows(ws.jobs)
    index = ws.jobs / INDEX_FILE
    if damage == "delete":
        index.unlink()
    elif damage == "truncate":
        with open(index, "r+b") as f:
            f.truncate(1000)  # cut inside the first pages: a torn copy, a full disk
    elif damage == "garbage":
        index.write_bytes(b"not a database" * 100)
    elif damage == "old schema":
        with sqlite3.connect(index) as conn:
            conn.execute("UPDATE meta SET value = 0 WHERE key = 'schema'")
    else:  # what JobIndex.put leaves when a write after its folder's fails (a full disk)
        (ws.jobs / STALE_FILE).touch()
    caplog.set_level(logging.INFO, logger=LOGGER)
    r = await _run_files(ws, ["c.in"])
    lines = [m for m in caplog.messages if "job index made again" in m]
    assert len(lines) == 1, caplog.messages
    assert why in lines[0]
    assert "2 job(s) in" in lines[0]  # what it found in the folders, and how long it took
    after = _rows(ws.jobs)
    assert {k: v for k, v in after.items() if k in before} == before
    assert len(after) == 3
    assert after == _folders(ws.jobs)
    assert r.stats.jobs == 1  # a.in and b.in were made before: not made again
    assert not (ws.jobs / STALE_FILE).exists()


async def test_a_job_being_made_when_the_runner_died_is_removed_and_made_again(
    ws: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    """The handler commits a job's row before its folder: a SIGKILL between the two leaves a
    row whose folder has no job.json. The next start removes both; the trigger, found again,
    makes the job (once)."""
    await _run_files(ws, ["a.in"])
    ((job_id, (folder, _)),) = _rows(ws.jobs).items()
    job_dir = ws.jobs / folder
    meta = read_meta(job_dir)
    # As a runner killed right after the row's commit leaves it: a queued row, a folder
    # with part of its files, no job.json; and the watermark before the file.
    meta.update(state="queued", attempts=[], started=None, finished=None, exit_code=None)
    index, _ = JobIndex.open(ws.jobs, repair=False)
    index.put_metas([(meta, job_dir)])
    index.close()
    for name in ("job.json", "process.log", "stdout.txt", "stderr.txt"):
        (job_dir / name).unlink(missing_ok=True)
    (ws.jobs / ".meow-runner.json").write_text(json.dumps({"watermark": 0}))
    caplog.set_level(logging.INFO, logger=LOGGER)
    r = await _run_files(ws, [], expect=1)  # the catch-up scan finds a.in again
    assert any("1 job(s) were being made when the runner stopped" in m for m in caplog.messages)
    # Made again by the catch-up scan: same id (same trigger), complete, done, one row.
    assert r.stats.jobs == 1
    rows = _rows(ws.jobs)
    assert list(rows) == [job_id]
    assert read_meta(ws.jobs / rows[job_id][0])["state"] == "done"
    assert rows == _folders(ws.jobs)


async def test_folders_changed_behind_the_index_are_reconciled_at_start(ws: Workspace) -> None:
    """A folder removed by hand, or one written by a runner of an earlier version (the flat
    layout, no index), is found at the next start from the day folders' mtimes: no rebuild."""
    await _run_files(ws, ["a.in", "b.in"])
    rows = _rows(ws.jobs)
    gone_id, (gone, _) = sorted(rows.items())[0]
    time.sleep(0.05)  # the folders' change after the last commit, on the kernel's coarse clock
    shutil.rmtree(ws.jobs / gone)
    flat = ws.jobs / "p-00000000000000aa"  # as meow_async before the index wrote it
    flat.mkdir()
    kept = read_meta(ws.jobs / sorted(rows.values())[1][0])
    flat_meta = {**kept, "id": flat.name, "dir": str(flat)}
    (flat / "job.json").write_text(json.dumps(flat_meta))
    index, opened = JobIndex.open(ws.jobs)
    index.close()
    assert opened.rebuilt is None
    assert (opened.added, opened.dropped) == (1, 1)
    after = _rows(ws.jobs)
    assert gone_id not in after
    assert after[flat.name] == (flat.name, "done")
    assert after == _folders(ws.jobs)
    # A whole day moved away by hand, then moved back (mv keeps its old mtime).
    (day,) = [p for p in ws.jobs.iterdir() if p.name[:2] == "20"]
    day.rename(ws.root / "archived")
    index, opened = JobIndex.open(ws.jobs)
    index.close()
    assert (opened.added, opened.dropped) == (0, 1)
    assert list(_rows(ws.jobs)) == [flat.name]
    (ws.root / "archived").rename(day)
    index, opened = JobIndex.open(ws.jobs)
    index.close()
    assert (opened.added, opened.dropped) == (1, 0)
    assert _rows(ws.jobs) == after


def test_the_cli_reads_the_index_while_the_runner_writes(tmp_path: Path) -> None:
    """WAL: `meow-async jobs` and `status` read a consistent index while a burst of jobs is
    being made and finished; every row they list has its folder."""
    (tmp_path / "data").mkdir()
    (tmp_path / "workflow.yaml").write_text(
        "runner: {base_dir: data, jobs_dir: jobs, max_jobs: 2}\n"
        "recipes:\n  r: {kind: python, script: 'print(input_file)'}\n"
        "patterns:\n  p: {glob: '*.in', recipe: r}\n"
    )
    n = 40
    with MeowRun("workflow.yaml", cwd=tmp_path) as run:
        run.wait_ready()
        reads = 0
        seen = 0
        for i in range(n):
            (tmp_path / "data" / f"{i}.in").write_text(str(i))
            if i % 10 == 0:
                res = meow("jobs", "workflow.yaml", "--json", cwd=tmp_path)
                assert res.returncode == 0, res.stderr
                rows = [json.loads(line) for line in res.stdout.splitlines()]
                assert all(Path(r["dir"], "job.json").is_file() for r in rows)
                assert len(rows) >= seen  # nothing listed once goes missing
                seen = len(rows)
                st = meow("status", "workflow.yaml", "--json", cwd=tmp_path)
                assert st.returncode == 0, st.stderr
                assert json.loads(st.stdout)["folders"]["total"] >= seen
                reads += 1

        def all_done() -> bool:
            return [s for _, s in _rows(tmp_path / "jobs").values()].count("done") == n

        wait_until_sync(all_done)
        run.signal(signal.SIGINT)
        assert run.wait_exit() == 0, run.report()
    assert "database is locked" not in run.stderr
    assert reads == n // 10
    jobs = tmp_path / "jobs"
    assert _rows(jobs) == _folders(jobs)
    st = json.loads(meow("status", "workflow.yaml", "--json", cwd=tmp_path).stdout)
    assert st["folders"]["counts"] == {"done": n}


async def _aged(ws: Workspace, names: list[str], days: float) -> list[str]:
    """Jobs made and finished through a runner, then aged ``days`` (job.json and row)."""
    await _run_files(ws, names)
    index, _ = JobIndex.open(ws.jobs, repair=False)
    ids = []
    try:
        for meta in iter_jobs(ws.jobs):
            if Path(meta["event"]["path"]).name not in names:
                continue
            shift = days * 86400
            meta.update(
                created=meta["created"] - shift,
                started=meta["started"] - shift,
                finished=meta["finished"] - shift,
            )
            job_dir = Path(meta["dir"])
            (job_dir / "job.json").write_text(json.dumps(meta))
            index.put_metas([(meta, job_dir)])
            ids.append(meta["id"])
    finally:
        index.close()
    return ids


async def test_retention_during_a_burst_removes_only_what_is_old(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    import meow_async.runner.runner as runner_module

    monkeypatch.setattr(runner_module, "RETENTION_SLICE", 10)  # many slices during the burst
    monkeypatch.setattr(runner_module, "RETENTION_BUSY", 0.05)
    monkeypatch.setattr("meow_async.model.retention.SLICE", 10)
    old = await _aged(ws, [f"old{i}.in" for i in range(40)], days=40)
    recent = await _aged(ws, [f"recent{i}.in" for i in range(5)], days=5)
    pattern = FilePattern(name="p", glob="*.in", recipe="r")
    recipe = py_recipe("r", "print(input_file)\n")
    burst = [f"new{i}.in" for i in range(60)]
    async with ws.runner([pattern], [recipe], retention={"done": "30d"}) as r:
        for name in burst:
            ws.write(name)
        async with asyncio.timeout(WAIT):
            await r.wait_for(lambda s: s.finished >= len(burst) and s.removed >= len(old))
    rows = _rows(ws.jobs)
    assert not set(old) & set(rows)
    assert set(recent) <= set(rows)
    assert rows == _folders(ws.jobs)  # folders and rows removed together
    made = {Path(m["event"]["path"]).name for m in iter_jobs(ws.jobs)}
    assert set(burst) <= made
    assert r.stats.removed == len(old)
    assert len(rows) == len(recent) + len(burst)


async def test_prune_and_reindex_by_hand(ws: Workspace) -> None:
    await _aged(ws, ["a.in", "b.in"], days=10)
    await _aged(ws, ["c.in"], days=1)
    root = ws.root
    dry = meow("prune", "--older-than", "7d", "--dry-run", ws.jobs, cwd=root)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("would remove 2 job(s): 2 done")
    assert len(_rows(ws.jobs)) == 3
    only_failed = meow("prune", "--older-than", "7d", "--state", "failed", ws.jobs, cwd=root)
    assert only_failed.stdout.startswith("removed 0 job(s)"), only_failed.stdout
    res = meow("prune", "--older-than", "7d", ws.jobs, cwd=root)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("removed 2 job(s): 2 done"), res.stdout
    rows = _rows(ws.jobs)
    assert len(rows) == 1
    assert rows == _folders(ws.jobs)
    bad = meow("prune", "--older-than", "soon", ws.jobs, cwd=root)
    assert bad.returncode == 2
    assert "expected a duration such as 30d" in bad.stderr

    (ws.jobs / INDEX_FILE).unlink()
    res = meow("reindex", ws.jobs, cwd=root)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("indexed 1 job(s)")
    assert _rows(ws.jobs) == rows


def test_reindex_refuses_while_a_runner_runs(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "workflow.yaml").write_text(
        "runner: {base_dir: data, jobs_dir: jobs}\n"
        "recipes:\n  r: {kind: bash, script: 'true'}\n"
        "patterns:\n  p: {glob: '*.in', recipe: r}\n"
    )
    with MeowRun("workflow.yaml", cwd=tmp_path) as run:
        run.wait_ready()
        res = meow("reindex", "workflow.yaml", cwd=tmp_path)
        assert res.returncode == 1
        assert "a runner runs on" in res.stderr
        run.signal(signal.SIGINT)
        assert run.wait_exit() == 0, run.report()


def test_retention_settings_are_checked() -> None:
    from meow_async import ConfigError, RunnerConfig

    assert RunnerConfig(retention={"done": "30d", "failed": 60}).retention == {
        "done": 30 * 86400.0,
        "failed": 60.0,
    }
    with pytest.raises(ConfigError, match=r"runner.retention.queued: 'queued' is not a finished"):
        RunnerConfig(retention={"queued": "1d"})
    with pytest.raises(ConfigError, match=r"runner.retention.done: expected how long"):
        RunnerConfig(retention={"done": "a while"})


def test_a_trigger_seen_again_on_a_later_day_finds_its_job(ws: Workspace) -> None:
    """Ids are named from the trigger, not the day: the index says where the job is, so the
    same trigger handled after midnight (or after a restart weeks later) makes no second job,
    and after the index is made again from the folders it still does not."""
    pattern = FilePattern(name="p", glob="*.in", recipe="r")
    rule = Rule(pattern=pattern, recipe=sh_recipe("r"))
    path = ws.write("a.in")
    event = Event(kind="file", path=str(path), base=str(ws.base), rule=rule, key="file:a:1")
    day1 = time.time() - 3 * 86400
    for rebuild in (False, True):
        index, _ = JobIndex.open(ws.jobs)
        try:
            first = Handler(ws.jobs, index=index, clock=lambda: day1).make_jobs(event)
            again = Handler(ws.jobs, index=index, clock=time.time).make_jobs(event)
        finally:
            index.close()
        assert [j.dir.parent.name for j in first] == ([] if rebuild else [day_of(day1)])
        assert again == []
        (ws.jobs / INDEX_FILE).unlink()  # the second round: made again from the folders
    assert len(_folders(ws.jobs)) == 1


async def test_a_time_jobs_tick_is_in_the_scheduled_column(ws: Workspace) -> None:
    """The time monitor puts the tick in the event as ``scheduled_time`` (ISO 8601 with its
    zone's offset): the index keeps it as a timestamp, the same instant."""
    from datetime import datetime

    from meow_async import TimePattern

    tick = TimePattern(name="t", every="1s", recipe="r", timezone="Europe/Copenhagen")
    async with ws.runner([tick], [sh_recipe("r", "true")]) as r:
        async with asyncio.timeout(WAIT):
            await r.wait_for(lambda s: s.finished >= 1)
    with sqlite3.connect(f"file:{ws.jobs / INDEX_FILE}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT id, scheduled, event_kind, trigger FROM jobs").fetchall()
    assert rows
    for job_id, scheduled, kind, trigger in rows:
        meta = next(m for m in iter_jobs(ws.jobs) if m["id"] == job_id)
        when = datetime.fromisoformat(meta["event"]["scheduled_time"])
        assert when.utcoffset() is not None
        assert scheduled == when.timestamp()
        assert scheduled == int(scheduled)  # every: 1s ticks on whole seconds
        assert kind == "time"
        assert trigger == f"tick {meta['event']['scheduled_time']}"


async def test_a_finished_job_whose_notification_is_owed_is_found_by_the_index(
    ws: Workspace,
) -> None:
    """A job settled at a start keeps ``notify_pending`` in job.json until every destination
    had it; the next start must find it without reading every folder: the index's partial
    index on that column, cleared with the mark."""
    from meow_async.conductors.recovery import clear_notify_mark, recover_jobs

    await _run_files(ws, ["a.in", "b.in"])
    rows = _rows(ws.jobs)
    (owed, _), (other, _) = sorted(rows.items())
    owed_dir = ws.jobs / rows[owed][0]
    meta = read_meta(owed_dir)
    meta["notify_pending"] = True
    (owed_dir / "job.json").write_text(json.dumps(meta))
    index, _ = JobIndex.open(ws.jobs)
    try:
        index.put_metas([(meta, owed_dir)])
        assert index.notify_pending() == [(owed, rows[owed][0])]
        found = recover_jobs(ws.jobs, {}, index=index)
        assert [m["id"] for m in found.to_notify] == [owed]
        assert found.to_run == []
        clear_notify_mark(owed_dir, index=index)
        assert index.notify_pending() == []
        assert "notify_pending" not in read_meta(owed_dir)
        assert recover_jobs(ws.jobs, {}, index=index).to_notify == []
    finally:
        index.close()
    assert other in _rows(ws.jobs)


def _edges_by_hand(jobs: Path) -> dict[tuple[str, str], int]:
    """(upstream rule, downstream rule) -> jobs, counted over every row in Python."""
    with sqlite3.connect(f"file:{jobs / INDEX_FILE}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT id, rule, caused_by FROM jobs").fetchall()
    rule_of = {i: r for i, r, _ in rows}
    out: dict[tuple[str, str], int] = {}
    for _, rule, cause in rows:
        if cause in rule_of:
            out[rule_of[cause], rule] = out.get((rule_of[cause], rule), 0) + 1
    return out


def _edges_table(jobs: Path) -> dict[tuple[str, str], int]:
    with sqlite3.connect(f"file:{jobs / INDEX_FILE}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT up, down, n FROM edges WHERE n != 0").fetchall()
    return {(u, d): n for u, d, n in rows}


def test_the_rule_edges_table_follows_inserts_ends_deletes_and_a_rebuild(tmp_path: Path) -> None:
    """The graph's edges are kept by triggers as rows come and go: after each change they are
    what a count over every row says, including a job written before the job that caused it
    (a rebuild's order), one whose cause was pruned, and a row written again with another
    cause."""
    jobs = tmp_path / "jobs"
    day = jobs / "2026-12-07"

    def job(job_id: str, rule: str, cause: str | None = None, state: str = "queued") -> Any:
        meta = {"id": job_id, "rule": rule, "state": state, "created": time.time()}
        if cause is not None:
            meta["caused_by"] = {"job": cause}
        (day / job_id).mkdir(parents=True, exist_ok=True)
        (day / job_id / "job.json").write_text(json.dumps(meta))
        return (meta, day / job_id)

    def check(index: JobIndex, expected: dict[tuple[str, str], int]) -> None:
        assert _edges_by_hand(jobs) == expected
        assert _edges_table(jobs) == expected  # no row left below zero either
        assert index.rule_edges() == expected

    index, _ = JobIndex.open(jobs)
    # Written in this order: z-c2 before its cause z-b1 (made again from folders in name order,
    # a downstream job can come first), z-x names a job the index never had.
    index.put_metas([job("a1", "A"), job("z-c2", "C", cause="z-b1")], new=True)
    check(index, {})
    index.put_metas([job("z-b1", "B", cause="a1"), job("b2", "B", cause="a1")], new=True)
    check(index, {("A", "B"): 2, ("B", "C"): 1})
    index.put_metas([job("c3", "C", cause="b2"), job("z-x", "C", cause="gone")], new=True)
    check(index, {("A", "B"): 2, ("B", "C"): 2})

    # Ends: the state changes, the edges do not.
    index.put_metas([job("a1", "A", state="done"), job("z-b1", "B", cause="a1", state="failed")])
    check(index, {("A", "B"): 2, ("B", "C"): 2})

    # A row written again with another cause and rule (a folder rewritten by hand).
    index.put_metas([job("c3", "D", cause="a1", state="done")])
    check(index, {("A", "B"): 2, ("B", "C"): 1, ("A", "D"): 1})

    # Retention: an upstream job pruned before its downstream ones takes their edges away.
    assert index.remove(["a1"]) == 1
    shutil.rmtree(day / "a1")
    check(index, {("B", "C"): 1})
    assert index.remove(["z-c2", "b2"]) == 2
    shutil.rmtree(day / "z-c2")
    shutil.rmtree(day / "b2")
    check(index, {})
    index.put_metas([job("e1", "E", cause="z-b1"), job("e2", "E", cause="z-b1")], new=True)
    check(index, {("B", "E"): 2})
    # Both ends of an edge (and a job caused by itself) removed in one statement.
    index.put_metas([job("f1", "F"), job("f2", "G", cause="f1"), job("f3", "F", cause="f3")])
    check(index, {("B", "E"): 2, ("F", "G"): 1, ("F", "F"): 1})
    assert index.remove(["f2", "f3", "f1"]) == 3
    for gone in ("f1", "f2", "f3"):
        shutil.rmtree(day / gone)
    check(index, {("B", "E"): 2})
    index.close()

    # Made again from the folders (an index of the schema before the edges table): the same.
    with sqlite3.connect(jobs / INDEX_FILE) as conn:
        conn.execute("UPDATE meta SET value = 3 WHERE key = 'schema'")
    index, opened = JobIndex.open(jobs)
    assert opened.rebuilt is not None
    assert f"this version uses {SCHEMA_VERSION}" in opened.rebuilt
    check(index, {("B", "E"): 2})
    index.close()
