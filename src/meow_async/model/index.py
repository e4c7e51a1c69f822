"""The job index: one SQLite row per job folder, beside the folders, so that what a restart,
a listing or ``status`` costs follows the jobs asked for, not the months of history.

The folders stay the record. The index is a copy of what their ``job.json`` files say (id,
rule, state, times, exit code, the event), made again from them whenever it cannot be trusted:
missing, unreadable, of an older schema, or older than a folder (see :meth:`JobIndex.open`).
Its rows are written in the thread hops that write the folders, never on their own:

- a new job's row is committed **before** its folder is made (so a runner killed between the
  two leaves a row whose folder has no ``job.json``: the next start finds it among the
  unfinished rows, removes both, and the trigger makes the job again);
- a job's end is committed **after** its ``job.json``, and before the end is reported.

A reader therefore never sees a finished job the folders do not have. The database is in WAL
mode: readers (the CLI, the endpoints) read while the runner writes, on their own read-only
connections. One writer connection serves every thread of the runner, behind a lock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from .events import trigger_of
from .jobs import DAY_FOLDER, FINISHED, META_FILE, NOTIFY_PENDING, Job, JobState

__all__ = [
    "INDEX_FILE",
    "SCHEMA_VERSION",
    "IndexRow",
    "IndexUnreadable",
    "JobIndex",
    "Opened",
    "Select",
    "row_of",
    "storable",
    "sweep_of",
]

logger = logging.getLogger("meow_async.index")

INDEX_FILE = ".meow-index.sqlite3"
#: Left beside the index when a write to it failed after its folder's: the next start makes
#: the index again.
STALE_FILE = ".meow-index.stale"

#: Raised whenever the table's columns change: an index of another version is made again
#: from the folders at the next start (``meow-async reindex`` does it by hand).
SCHEMA_VERSION = 4

#: One row per job. ``folder`` is the job folder relative to the jobs folder (``DAY/ID``, or
#: ``ID`` for folders of the flat layout before 0.x). Time triggers fill ``scheduled`` (the
#: tick, from the event's ``scheduled_time``); ``notify_pending`` (1) marks a job settled at a
#: start whose notification is not delivered yet, which the next start must find among the
#: finished (schema 2). ``workflow_version`` and ``recipe_hash`` say what a job was made
#: under (a reload changes neither), ``caused_by`` the id of the job that declared the file
#: that triggered it; ``outputs`` holds every job's declared outputs by path, so that a new
#: event's cause is one lookup (schema 3); ``edges`` counts the jobs caused by rule pairs,
#: so that the graph's cost follows the rules, not the jobs kept (schema 4).
_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    folder TEXT NOT NULL,
    rule TEXT NOT NULL,
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    exit_code INTEGER,
    error TEXT,
    event_kind TEXT,
    event_path TEXT,
    message_id TEXT,
    route TEXT,
    scheduled REAL,
    trigger TEXT NOT NULL DEFAULT '',
    sweep TEXT NOT NULL DEFAULT '',
    workflow_version TEXT,
    recipe_hash TEXT,
    caused_by TEXT,
    notify_pending INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_created ON jobs (created, id);
-- (state, created, id) and (rule, created, id): one state's or rule's rows come in the
-- listing's order (created, then id), so no sort, and no scan of the other states' rows.
CREATE INDEX jobs_state ON jobs (state, created, id);
CREATE INDEX jobs_rule ON jobs (rule, created, id);
CREATE INDEX jobs_path ON jobs (event_path);
CREATE INDEX jobs_trigger ON jobs (trigger);
CREATE INDEX jobs_message ON jobs (message_id) WHERE message_id IS NOT NULL;
CREATE INDEX jobs_folder ON jobs (folder);
-- Lineage: a job's downstream jobs, and each declared output's job(s), found without a scan.
CREATE INDEX jobs_caused ON jobs (caused_by) WHERE caused_by IS NOT NULL;
CREATE TABLE outputs (
    path TEXT NOT NULL,
    job TEXT NOT NULL,
    rule TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (path, job)
) WITHOUT ROWID;
CREATE INDEX outputs_job ON outputs (job);
CREATE TRIGGER outputs_removed AFTER DELETE ON jobs BEGIN
    DELETE FROM outputs WHERE job = old.id;
END;
-- The few finished jobs whose restart notification is still owed: found without a scan.
CREATE INDEX jobs_notify ON jobs (created, id) WHERE notify_pending;
-- Jobs per day folder ('' for the flat layout), kept by triggers: a start compares it with the
-- day folders there are, so a day moved away by hand is found without reading any row.
CREATE TABLE days (day TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
CREATE TRIGGER days_added AFTER INSERT ON jobs BEGIN
    INSERT INTO days VALUES (DAY_OF(new.folder), 1) ON CONFLICT (day) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER days_removed AFTER DELETE ON jobs BEGIN
    UPDATE days SET n = n - 1 WHERE day = DAY_OF(old.folder);
END;
CREATE TRIGGER days_moved AFTER UPDATE OF folder ON jobs WHEN old.folder IS NOT new.folder BEGIN
    UPDATE days SET n = n - 1 WHERE day = DAY_OF(old.folder);
    INSERT INTO days VALUES (DAY_OF(new.folder), 1) ON CONFLICT (day) DO UPDATE SET n = n + 1;
END;
-- Jobs by rule and state, kept by triggers: status and metrics read it in microseconds.
CREATE TABLE counts (rule TEXT, state TEXT, n INTEGER NOT NULL, PRIMARY KEY (rule, state))
    WITHOUT ROWID;
CREATE TRIGGER jobs_added AFTER INSERT ON jobs BEGIN
    INSERT INTO counts VALUES (new.rule, new.state, 1)
    ON CONFLICT (rule, state) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER jobs_removed AFTER DELETE ON jobs BEGIN
    UPDATE counts SET n = n - 1 WHERE rule = old.rule AND state = old.state;
END;
CREATE TRIGGER jobs_moved AFTER UPDATE OF rule, state ON jobs
WHEN old.rule IS NOT new.rule OR old.state IS NOT new.state BEGIN
    UPDATE counts SET n = n - 1 WHERE rule = old.rule AND state = old.state;
    INSERT INTO counts VALUES (new.rule, new.state, 1)
    ON CONFLICT (rule, state) DO UPDATE SET n = n + 1;
END;
-- (upstream rule, downstream rule) -> jobs whose caused_by names a row there is, kept by
-- triggers (_edges): the graph reads a row per edge, whatever the history behind it. An
-- update of rule or caused_by takes the row's pairs away before and adds them again after.
CREATE TABLE edges (up TEXT, down TEXT, n INTEGER NOT NULL, PRIMARY KEY (up, down))
    WITHOUT ROWID;
CREATE TRIGGER edges_added AFTER INSERT ON jobs BEGIN EDGES_ADD(new) END;
CREATE TRIGGER edges_removed BEFORE DELETE ON jobs BEGIN EDGES_REMOVE(old) END;
CREATE TRIGGER edges_moved_from BEFORE UPDATE OF rule, caused_by ON jobs
WHEN old.rule IS NOT new.rule OR old.caused_by IS NOT new.caused_by BEGIN EDGES_REMOVE(old) END;
CREATE TRIGGER edges_moved_to AFTER UPDATE OF rule, caused_by ON jobs
WHEN old.rule IS NOT new.rule OR old.caused_by IS NOT new.caused_by BEGIN EDGES_ADD(new) END;
INSERT INTO meta VALUES ('schema', SCHEMA_VERSION);
""".replace("SCHEMA_VERSION", str(SCHEMA_VERSION))


def _edges(row: str, sign: str) -> str:
    """Add (``+``) or take away (``-``) the pairs ``row`` is in: as caused by its
    ``caused_by``'s row (itself too, if it names itself), and as the cause of the rows whose
    ``caused_by`` names it (not itself again). AFTER an insert, BEFORE a delete: the row is
    in the table either way, so a pair of two rows is counted once whichever comes first."""
    return f"""
    INSERT INTO edges SELECT u.rule, {row}.rule, {sign}1 FROM jobs u WHERE u.id = {row}.caused_by
    ON CONFLICT (up, down) DO UPDATE SET n = n + excluded.n;
    INSERT INTO edges SELECT {row}.rule, d.rule, {sign}count(*) FROM jobs d
    WHERE d.caused_by = {row}.id AND d.id IS NOT {row}.id GROUP BY d.rule
    ON CONFLICT (up, down) DO UPDATE SET n = n + excluded.n;
"""  # noqa: S608 - row and sign are this module's words, not input


_SCHEMA = _SCHEMA.replace("EDGES_ADD(new)", _edges("new", "+")).replace(
    "EDGES_REMOVE(old)", _edges("old", "-")
)
_SCHEMA = re.sub(
    r"DAY_OF\((\w+\.folder)\)",
    r"(CASE WHEN \1 GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]/*' "
    r"THEN substr(\1, 1, 10) ELSE '' END)",
    _SCHEMA,
)

COLUMNS = (
    "id",
    "folder",
    "rule",
    "state",
    "attempt",
    "created",
    "started",
    "finished",
    "exit_code",
    "error",
    "event_kind",
    "event_path",
    "message_id",
    "route",
    "scheduled",
    "trigger",
    "sweep",
    "workflow_version",
    "recipe_hash",
    "caused_by",
    "notify_pending",
)
_OUTPUT = "INSERT OR IGNORE INTO outputs VALUES (?, ?, ?, ?)"
#: Seconds of leeway between a file's ctime and its job's start and end (two clocks: the
#: file system's, which may be another machine's, and the runner's).
_CLOCK_SLACK = 1.0
_UPSERT = " ".join(
    [
        "INSERT INTO jobs (" + ", ".join(COLUMNS) + ")",
        "VALUES (" + ", ".join("?" * len(COLUMNS)) + ")",
        "ON CONFLICT (id) DO UPDATE SET",
        ", ".join(c + " = excluded." + c for c in COLUMNS[1:]),
    ]
)

#: What a listing reads of a row.
_LISTED = "id, folder, state, rule, created, started, finished, exit_code, trigger, sweep, attempt"

#: An error text kept in the index is cut to this many characters (``job.json`` has it all).
_ERROR_CHARS = 500

_DAY = re.compile(DAY_FOLDER)


class IndexUnreadable(Exception):
    """The index cannot be used (missing, corrupt, another schema): it is made again from the
    job folders."""


class IndexRow(NamedTuple):
    """What a listing shows of a job, as the index has it."""

    id: str
    folder: str
    state: str
    rule: str
    created: float
    started: float | None
    finished: float | None
    exit_code: int | None
    trigger: str
    sweep: str
    attempt: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Select:
    """Which rows: every filter given must hold (several values of one filter: any)."""

    states: frozenset[str] = frozenset()
    rules: frozenset[str] = frozenset()
    since: float | None = None
    #: Absolute paths, paths relative to the watched folder, or message ids.
    inputs: tuple[str, ...] = ()
    limit: int | None = None  # the oldest N
    tail: int | None = None  # the newest N


@dataclass(frozen=True, slots=True)
class Opened:
    """How the index was found at start: made again (and why, how long), or reconciled."""

    rebuilt: str | None = None  # why it was made again from the folders
    took: float = 0.0
    jobs: int = 0  # rows, after opening
    added: int = 0  # folders found that the index did not know (reconciled)
    dropped: int = 0  # rows whose folder was gone
    looked_at: int = 0  # folders listed to reconcile


def sweep_of(point: Any) -> str:
    """``a=1,b=0.5``: a sweep point as a listing shows it."""
    if not isinstance(point, dict) or not point:
        return ""
    return ",".join(f"{k}={v}" for k, v in point.items())


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def storable(text: str) -> str:
    """``text`` as SQLite can hold it (UTF-8). A file name that is not UTF-8 arrives as a str
    with surrogate escapes (as ``os.listdir`` gives it, and ``job.json`` keeps it): each byte
    that is not UTF-8 is then written ``\\xNN``, as a listing shows it and ``--input`` finds
    it (its argument goes through here too). Without this, binding it raised, and the event's
    jobs could never be made. The folder (``job.json``) keeps the exact name."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:  # a lone surrogate no byte makes (JSON's own \\ud800)
            return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _text(v: Any) -> str | None:
    return storable(v) if isinstance(v, str) and v else None


def _tick(v: Any) -> float | None:
    """A time trigger's tick (``scheduled_time``, ISO 8601 with its offset) as a timestamp."""
    if not isinstance(v, str):
        return None
    try:
        return datetime.fromisoformat(v).timestamp()
    except ValueError:
        return None


def row_of(meta: Mapping[str, Any], folder: str) -> tuple[Any, ...]:
    """The index row of a job, from its metadata (``job.json``)."""
    event = meta.get("event")
    if not isinstance(event, dict):
        event = {}
    code = meta.get("exit_code")
    error = meta.get("error")
    attempts = meta.get("attempts")
    caused = meta.get("caused_by")
    if isinstance(caused, dict):
        caused = caused.get("job")
    return (
        str(meta["id"]),
        folder,
        str(meta.get("rule") or ""),
        str(meta.get("state") or JobState.queued.value),
        len(attempts) if isinstance(attempts, list) else 0,
        _num(meta.get("created")) or 0.0,
        _num(meta.get("started")),
        _num(meta.get("finished")),
        code if type(code) is int else None,
        storable(error[:_ERROR_CHARS]) if isinstance(error, str) else None,
        _text(event.get("kind")),
        _text(event.get("path")),
        _text(event.get("message_id")),
        _text(event.get("request_path")),
        _tick(event.get("scheduled_time")),
        storable(trigger_of(event)),
        storable(sweep_of(meta.get("sweep"))),
        _text(meta.get("workflow_version")),
        _text(meta.get("recipe_hash")),
        caused if isinstance(caused, str) and caused else None,
        1 if meta.get(NOTIFY_PENDING) else 0,
    )


def outputs_of(meta: Mapping[str, Any], job_dir: str) -> list[tuple[str, str, str, float]]:
    """The ``outputs`` rows of a job: each path it declared (a relative one is relative to
    its folder, where its process runs), normalised as a file event's path is."""
    out = meta.get("outputs")
    if not isinstance(out, dict) or not out:
        return []
    where = str(meta.get("dir") or job_dir)
    job, rule, created = str(meta["id"]), str(meta.get("rule") or ""), _num(meta.get("created"))
    paths: set[str] = set()
    for value in out.values():
        for v in value if isinstance(value, list | tuple) else [value]:
            if isinstance(v, str) and v:
                paths.add(storable(os.path.normpath(os.path.join(where, v))))
    return [(p, job, rule, created or 0.0) for p in sorted(paths)]


def _folder_of(root: Path, job_dir: str | Path) -> str:
    """``job_dir`` relative to the jobs folder (as the index keeps it)."""
    rel = os.path.relpath(job_dir, root)
    return rel if not rel.startswith("..") else str(job_dir)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


_decode = json.JSONDecoder().raw_decode


def read_folder(path: str) -> dict[str, Any] | None:
    """A job folder's ``job.json``, or None if it has none that can be read."""
    try:
        with open(os.path.join(path, META_FILE), "rb") as f:
            raw = f.read()
        meta, _ = _decode(raw.decode().lstrip())
    except (OSError, ValueError):
        return None
    return meta if type(meta) is dict and "id" in meta else None


def job_folders(root: Path) -> Iterator[tuple[str, str]]:
    """Every job folder under ``root`` as (path relative to root, absolute path): in day
    folders, and (the flat layout of earlier versions) directly in ``root``."""
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except FileNotFoundError:
        return
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False) or entry.name.startswith("."):
            continue
        if _DAY.fullmatch(entry.name):
            with contextlib.suppress(FileNotFoundError), os.scandir(entry.path) as days:
                for job in days:
                    if job.is_dir(follow_symlinks=False):
                        yield f"{entry.name}/{job.name}", job.path
        elif os.path.isfile(os.path.join(entry.path, META_FILE)):
            yield entry.name, entry.path


class JobIndex:
    """The jobs folder's index. ``open`` (the runner, ``reindex``, ``prune``) writes through one
    connection shared by threads behind a lock; ``read`` opens it read-only (the CLI).

    ``durable`` (``runner.durable``) commits with ``synchronous=FULL`` (an fsync per commit,
    as the folders are fsynced then); otherwise ``NORMAL``: a process killed loses nothing
    committed, a machine that crashes may lose the last commits, which the folders give back
    at the next start (see :meth:`open`).
    """

    def __init__(self, root: Path, conn: sqlite3.Connection, *, writer: bool) -> None:
        self.root = root
        self.path = root / INDEX_FILE
        self.conn = conn
        self.writer = writer
        self._lock = threading.Lock()
        self._closed = False
        self._marked = False  # this connection said the index is open (a runner's)

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def open(
        cls, root: Path, *, durable: bool = False, repair: bool = True
    ) -> tuple[JobIndex, Opened]:
        """The index of ``root`` for writing, made again from the folders if it cannot be
        trusted, and reconciled with any day folder changed since its last commit (a runner
        killed mid-write, one of an earlier version, a folder removed by hand, a machine
        crash). ``repair=False`` (a second writer beside a running runner, e.g. ``prune``):
        neither reconciled nor marked open. Blocking: call it in a thread."""
        t0 = time.monotonic()
        path = root / INDEX_FILE
        why: str | None = None
        index: JobIndex | None = None
        if not path.exists():
            why = "there was no index"
        elif (root / STALE_FILE).exists():
            why = "a write to it had failed"
        else:
            try:
                index = cls._connect(root, durable=durable)
                index._check()
            except (sqlite3.Error, IndexUnreadable) as e:
                why = str(e) if isinstance(e, IndexUnreadable) else f"it was unreadable ({e})"
                if index is not None:
                    index.conn.close()
                index = None
        if index is None:
            assert why is not None  # noqa: S101
            rows = cls.rebuild(root)
            index = cls._connect(root, durable=durable)
            index._mark_open()
            return index, Opened(rebuilt=why, took=time.monotonic() - t0, jobs=rows)
        try:
            added, dropped, looked = index._reconcile() if repair else (0, 0, 0)
            if repair:
                index._mark_open()
            n = index.count()
        except sqlite3.DatabaseError as e:  # corrupt beyond the first pages
            index.conn.close()
            rows = cls.rebuild(root)
            index = cls._connect(root, durable=durable)
            index._mark_open()
            return index, Opened(
                rebuilt=f"it was unreadable ({e})", took=time.monotonic() - t0, jobs=rows
            )
        return index, Opened(
            took=time.monotonic() - t0, jobs=n, added=added, dropped=dropped, looked_at=looked
        )

    @classmethod
    def read(cls, root: Path) -> JobIndex | None:
        """The index for reading, or None if there is none that can be read (a runner of an
        earlier version, or none has run): the caller reads the folders instead."""
        path = root / INDEX_FILE
        if not path.is_file():
            return None
        try:
            conn = sqlite3.connect(
                f"{path.absolute().as_uri()}?mode=ro", uri=True, check_same_thread=False
            )
            conn.execute("PRAGMA query_only = 1")
            # Pages through the page cache by mmap, not a read() each: a listing's rows are
            # scattered over the file (measured: a third less time for 3,000 rows).
            conn.execute("PRAGMA mmap_size = 268435456")
            index = cls(root, conn, writer=False)
            index._check()
        except (sqlite3.Error, IndexUnreadable):
            return None
        return index

    @classmethod
    def _connect(cls, root: Path, *, durable: bool) -> JobIndex:
        conn = sqlite3.connect(
            root / INDEX_FILE, check_same_thread=False, isolation_level=None, timeout=30
        )
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
        return cls(root, conn, writer=True)

    def _check(self) -> None:
        try:
            row = self.conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        except sqlite3.OperationalError as e:
            raise IndexUnreadable(f"it was unreadable ({e})") from None
        if row is None or row[0] != SCHEMA_VERSION:
            raise IndexUnreadable(
                f"it was of schema {row[0] if row else '?'}, this version uses {SCHEMA_VERSION}"
            )

    def _meta(self, key: str) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def _set_meta(self, **values: Any) -> None:
        self.conn.executemany(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            list(values.items()),
        )

    def _mark_open(self) -> None:
        """A writer holds the index from now until ``close``: a start that finds ``open``
        still set knows the last writer did not close it."""
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            self._set_meta(open=1, boot=_boot_id(), pid=os.getpid(), last_commit=time.time())
            self.conn.execute("COMMIT")
        self._marked = True

    @classmethod
    def rebuild(cls, root: Path) -> int:
        """Make the index again from the job folders (the record), into a new file renamed over
        the old one. Returns the rows written."""
        root.mkdir(parents=True, exist_ok=True)
        path = root / INDEX_FILE
        tmp = root / f".{INDEX_FILE}.{os.getpid()}.new"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        conn = sqlite3.connect(tmp, isolation_level=None)
        n = 0
        try:
            conn.execute("PRAGMA journal_mode = OFF")
            conn.execute("PRAGMA synchronous = OFF")
            conn.executescript(_SCHEMA)
            conn.execute("BEGIN")
            batch: list[tuple[Any, ...]] = []
            started = time.time()
            for folder, full in job_folders(root):
                meta = read_folder(full)
                if meta is None:
                    continue  # half made by a killed runner: the trigger makes it again
                batch.append(row_of(meta, folder))
                conn.executemany(_OUTPUT, outputs_of(meta, full))
                if len(batch) >= 10_000:
                    conn.executemany(_UPSERT, batch)
                    n += len(batch)
                    batch = []
            conn.executemany(_UPSERT, batch)
            n += len(batch)
            flat = sum(
                1
                for e in os.scandir(root)
                if e.is_dir(follow_symlinks=False)
                and not _DAY.fullmatch(e.name)
                and not e.name.startswith(".")
            )
            conn.execute(
                "INSERT INTO meta VALUES ('last_commit', ?), ('open', 0), ('built', ?), "
                "('flat_dirs', ?)",
                (started, time.time(), flat),
            )
            conn.execute("COMMIT")
            conn.execute("PRAGMA journal_mode = WAL")
        finally:
            conn.close()
        # The old file's WAL must not be applied to the new file.
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{path}{suffix}")
        os.replace(tmp, path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(root / STALE_FILE)
        return n

    # -- reconciling with the folders ---------------------------------------------------------

    def _reconcile(self) -> tuple[int, int, int]:
        """Compare with the folders wherever they may have changed since the last commit,
        found without reading any row: a day folder whose mtime is later (a job added or
        removed in it), a day the index has that is gone (moved away by hand) or one there is
        that the index does not have (moved in), and a different number of folders in the
        flat layout of earlier versions. After a machine crash (the last writer left it open
        under another boot), the rows of the minute before its last commit are read again
        too, since their commits may be lost."""
        last = float(self._meta("last_commit") or 0.0)
        crashed = self._meta("open") == 1 and self._meta("boot") not in (None, _boot_id())
        since = last - 60.0 if crashed else last
        added = dropped = looked = 0
        try:
            entries = [e for e in os.scandir(self.root) if e.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            entries = []
        on_disk = {e.name: e for e in entries if _DAY.fullmatch(e.name)}
        indexed = {
            str(d) for (d,) in self.conn.execute("SELECT day FROM days WHERE n > 0 AND day != ''")
        }
        for day in sorted(indexed - set(on_disk)):
            dropped += self._drop_where("folder >= ? AND folder < ?", (f"{day}/", f"{day}0"))
        for name, e in sorted(on_disk.items()):
            if name not in indexed or e.stat(follow_symlinks=False).st_mtime >= since:
                a, d, n = self._reconcile_folder(name, e.path)
                added, dropped, looked = added + a, dropped + d, looked + n
        flat = [e for e in entries if e.name not in on_disk and not e.name.startswith(".")]
        if len(flat) != int(self._meta("flat_dirs") or 0):
            a, d, n = self._reconcile_flat(flat)
            added, dropped, looked = added + a, dropped + d, looked + n
            with self._lock:
                self.conn.execute("BEGIN IMMEDIATE")
                self._set_meta(flat_dirs=len(flat))
                self.conn.execute("COMMIT")
        if crashed:
            stale = self.conn.execute(
                "SELECT id, folder FROM jobs WHERE created >= ? OR finished >= ?", (since, since)
            ).fetchall()
            self._refresh([(str(i), str(f)) for i, f in stale])
        return added, dropped, looked

    def _reconcile_folder(self, day: str, path: str) -> tuple[int, int, int]:
        known = {
            f
            for (f,) in self.conn.execute(
                "SELECT folder FROM jobs WHERE folder >= ? AND folder < ?", (f"{day}/", f"{day}0")
            )
        }
        try:
            with os.scandir(path) as it:
                present = {f"{day}/{e.name}": e.path for e in it if e.is_dir(follow_symlinks=False)}
        except FileNotFoundError:
            present = {}
        added = self._add_found({f: p for f, p in present.items() if f not in known})
        dropped = self._drop_folders([f for f in known if f not in present])
        # A folder without its job.json was being made, or removed, when a runner died.
        half = [
            f for f in known if f in present and not os.path.exists(f"{present[f]}/{META_FILE}")
        ]
        for f in half:
            shutil.rmtree(present[f], ignore_errors=True)
        dropped += self._drop_folders(half)
        return added, dropped, len(present)

    def _reconcile_flat(self, entries: list[os.DirEntry[str]]) -> tuple[int, int, int]:
        known = {
            f for (f,) in self.conn.execute("SELECT folder FROM jobs WHERE instr(folder, '/') = 0")
        }
        present = {
            e.name: e.path for e in entries if os.path.isfile(os.path.join(e.path, META_FILE))
        }
        added = self._add_found({f: p for f, p in present.items() if f not in known})
        gone = [f for f in known if f not in present]
        for f in gone:  # listed, but its job.json is gone: removed half way
            if os.path.isdir(self.root / f):
                shutil.rmtree(self.root / f, ignore_errors=True)
        dropped = self._drop_folders(gone)
        return added, dropped, len(present)

    def _add_found(self, found: Mapping[str, str]) -> int:
        rows = []
        outputs: list[tuple[str, str, str, float]] = []
        for folder, full in found.items():
            meta = read_folder(full)
            if meta is not None:
                rows.append(row_of(meta, folder))
                outputs += outputs_of(meta, full)
        if rows:
            with self._lock:
                self.conn.execute("BEGIN IMMEDIATE")
                self.conn.executemany(_UPSERT, rows)
                self.conn.executemany(_OUTPUT, outputs)
                self.conn.execute("COMMIT")
        return len(rows)

    def _drop_folders(self, folders: Sequence[str]) -> int:
        n = 0
        for i in range(0, len(folders), 500):
            part = folders[i : i + 500]
            n += self._drop_where(f"folder IN ({', '.join('?' * len(part))})", tuple(part))
        return n

    def _drop_where(self, where: str, args: tuple[Any, ...]) -> int:
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            n = self.conn.execute(f"DELETE FROM jobs WHERE {where}", args).rowcount  # noqa: S608
            self._set_meta(last_commit=time.time())
            self.conn.execute("COMMIT")
        return int(n)

    def _refresh(self, rows: Iterable[tuple[str, str]]) -> None:
        """Read these jobs' folders again and write what they say (or drop them)."""
        fresh, gone = [], []
        for job_id, folder in rows:
            meta = read_folder(str(self.root / folder))
            if meta is None or meta.get("id") != job_id:
                gone.append(folder)
            else:
                fresh.append(row_of(meta, folder))
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany(_UPSERT, fresh)
            self.conn.execute("COMMIT")
        self._drop_folders(gone)

    # -- writing ------------------------------------------------------------------------------

    def folder_of(self, job_id: str) -> str | None:
        """Where job ``job_id``'s folder is (relative to the jobs folder), if it exists."""
        with self._lock:
            row = self.conn.execute("SELECT folder FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else str(row[0])

    def put(self, jobs: Sequence[Job]) -> None:
        """Write these jobs' rows as their metadata says now, in one commit, after their
        folders: a failure (a full disk) is logged, not raised, since the folders hold the
        change, and the index is marked to be made again from them at the next start."""
        self.save([(job.meta, job.dir) for job in jobs])

    def save(self, metas: Sequence[tuple[Mapping[str, Any], str | Path]]) -> None:
        """:meth:`put` for metadata read from folders (``job.json`` already written)."""
        try:
            self.put_metas(metas)
        except sqlite3.Error as e:
            logger.warning(
                "could not write %d job(s) to the job index (%s): it is made again from the "
                "job folders at the next start",
                len(metas),
                e,
            )
            with contextlib.suppress(OSError):
                (self.root / STALE_FILE).touch()

    def put_metas(
        self, metas: Sequence[tuple[Mapping[str, Any], str | Path]], *, new: bool = False
    ) -> None:
        """Write these rows; ``new`` jobs' declared outputs too (what lineage looks up)."""
        if not metas:
            return
        rows = [row_of(meta, _folder_of(self.root, d)) for meta, d in metas]
        outputs = [o for meta, d in metas for o in outputs_of(meta, str(d))] if new else []
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                self.conn.executemany(_UPSERT, rows)
                if outputs:
                    self.conn.executemany(_OUTPUT, outputs)
                self._set_meta(last_commit=time.time())
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def remove(self, job_ids: Sequence[str]) -> int:
        """Drop these jobs' rows (their folders are gone, or were never made)."""
        n = 0
        for i in range(0, len(job_ids), 500):
            part = tuple(job_ids[i : i + 500])
            n += self._drop_where(f"id IN ({', '.join('?' * len(part))})", part)
        return n

    def close(self) -> None:
        """Say the index was closed cleanly, fold the WAL back in, close."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            try:
                if self.writer:
                    self.conn.execute("BEGIN IMMEDIATE")
                    if self._marked:
                        self._set_meta(open=0)
                    self._set_meta(last_commit=time.time())
                    self.conn.execute("COMMIT")
                    self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as e:
                logger.warning("could not close the job index %s cleanly: %s", self.path, e)
            finally:
                self.conn.close()

    # -- lineage ------------------------------------------------------------------------------

    def declared_by(self, path: str, at: float) -> tuple[str, str] | None:
        """(job, rule) of the job that declared ``path`` among its outputs and was running
        when the file changed (its ctime ``at``), if exactly one fits: a path declared by one
        job only is that job's; of several (the same output made again), the one whose run
        spans ``at``; none, or more than one, is no answer (never a guess). One lookup."""
        with self._lock:
            rows = self.conn.execute(
                "SELECT o.job, o.rule, j.started, j.finished FROM outputs o "
                "LEFT JOIN jobs j ON j.id = o.job WHERE o.path = ? "
                "ORDER BY o.created DESC LIMIT 16",
                (storable(os.path.normpath(path)),),
            ).fetchall()
        if len(rows) == 1:
            return str(rows[0][0]), str(rows[0][1])
        spans = [
            (str(job), str(rule))
            for job, rule, started, finished in rows
            if started is not None
            and started - _CLOCK_SLACK <= at
            and (finished is None or at <= finished + _CLOCK_SLACK)
        ]
        return spans[0] if len(spans) == 1 else None

    def downstream(self, job_id: str, limit: int | None = None) -> list[IndexRow]:
        """The rows of the jobs whose trigger job ``job_id`` declared, oldest first (the first
        ``limit``): ``jobs --lineage``, ``/jobs/{id}`` and the live view's job page."""
        sql = f"SELECT {_LISTED} FROM jobs WHERE caused_by = ? ORDER BY created, id"  # noqa: S608
        with self._lock:
            if limit is None:
                rows = self.conn.execute(sql, (job_id,)).fetchall()
            else:
                rows = self.conn.execute(sql + " LIMIT ?", (job_id, limit)).fetchall()
        return [IndexRow(*r) for r in rows]

    def cause_of(self, job_id: str) -> str | None:
        """The id of the job that caused ``job_id`` (None: a root, as far as is known)."""
        with self._lock:
            row = self.conn.execute("SELECT caused_by FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def row(self, job_id: str) -> IndexRow | None:
        """Job ``job_id``'s row, if it is kept (the live view's upstream link)."""
        with self._lock:
            row = self.conn.execute(
                f"SELECT {_LISTED} FROM jobs WHERE id = ?",  # noqa: S608 - our own columns
                (job_id,),
            ).fetchone()
        return None if row is None else IndexRow(*row)

    def lineage_row(self, job_id: str) -> dict[str, Any] | None:
        """What a lineage tree shows of a job: id, rule, state, trigger, declared outputs."""
        with self._lock:
            row = self.conn.execute(
                "SELECT id, rule, state, trigger FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
            if row is None:
                return None
            made = [
                str(p)
                for (p,) in self.conn.execute(
                    "SELECT path FROM outputs WHERE job = ? ORDER BY path", (job_id,)
                )
            ]
        return {"id": row[0], "rule": row[1], "state": row[2], "trigger": row[3], "outputs": made}

    def newest_triggered(self, paths: Sequence[str], rel: str) -> str | None:
        """The newest job a file triggered: its path is one of ``paths``, or its trigger (the
        path relative to the watched folder) is ``rel``."""
        marks = ", ".join("?" * len(paths))
        with self._lock:
            row = self.conn.execute(
                f"SELECT id FROM jobs WHERE event_path IN ({marks}) OR trigger = ? "  # noqa: S608
                "ORDER BY created DESC, id DESC LIMIT 1",
                (*map(storable, paths), storable(rel)),
            ).fetchone()
        return None if row is None else str(row[0])

    def roots_triggered(self, paths: Sequence[str], rel: str, limit: int) -> tuple[list[str], int]:
        """The jobs a file triggered that no earlier job caused (a sweep's, each event's), the
        first ``limit`` oldest first, and how many there are: ``jobs --lineage RAWFILE``."""
        marks = ", ".join("?" * len(paths))
        where = f"(event_path IN ({marks}) OR trigger = ?) AND caused_by IS NULL"
        args = (*map(storable, paths), storable(rel))
        with self._lock:
            (n,) = self.conn.execute(f"SELECT count(*) FROM jobs WHERE {where}", args).fetchone()  # noqa: S608
            rows = self.conn.execute(
                f"SELECT id FROM jobs WHERE {where} ORDER BY created, id LIMIT ?",  # noqa: S608
                (*args, limit),
            ).fetchall()
        return [str(r[0]) for r in rows], int(n)

    def newest_declaring(self, paths: Sequence[str]) -> str | None:
        """The newest job that declared one of ``paths`` among its outputs."""
        marks = ", ".join("?" * len(paths))
        with self._lock:
            row = self.conn.execute(
                f"SELECT job FROM outputs WHERE path IN ({marks}) "  # noqa: S608
                "ORDER BY created DESC LIMIT 1",
                tuple(map(storable, paths)),
            ).fetchone()
        return None if row is None else str(row[0])

    def rule_edges(self) -> dict[tuple[str, str], int]:
        """(upstream rule, downstream rule) -> jobs caused that way: the emergent workflow's
        recorded edges (``meow-async graph``)."""
        with self._lock:
            rows = self.conn.execute("SELECT up, down, n FROM edges WHERE n > 0").fetchall()
        return {(str(a), str(b)): int(n) for a, b, n in rows}

    # -- reading ------------------------------------------------------------------------------

    def count(self) -> int:
        with self._lock:
            return int(self.conn.execute("SELECT coalesce(sum(n), 0) FROM counts").fetchone()[0])

    def counts(self) -> dict[tuple[str, str], int]:
        """Jobs by (rule, state), as ``job.json`` last said (a running job is ``queued``)."""
        with self._lock:
            rows = self.conn.execute("SELECT rule, state, n FROM counts WHERE n > 0").fetchall()
        return {(r, s): int(n) for r, s, n in rows}

    def unfinished(self) -> list[tuple[str, str]]:
        """(id, folder) of every job whose ``job.json`` last said queued or running: what a
        restart must look at."""
        with self._lock:
            return [
                (str(i), str(f))
                for i, f in self.conn.execute(
                    "SELECT id, folder FROM jobs WHERE state IN ('queued', 'running') "
                    "ORDER BY created, id"
                )
            ]

    def notify_pending(self) -> list[tuple[str, str]]:
        """(id, folder) of every job settled at a start whose notification is not delivered
        yet (``notify_pending`` in its ``job.json``): a start sends it again."""
        with self._lock:
            return [
                (str(i), str(f))
                for i, f in self.conn.execute(
                    "SELECT id, folder FROM jobs WHERE notify_pending ORDER BY created, id"
                )
            ]

    def select(self, q: Select, *, only: Iterable[str] | None = None) -> list[IndexRow]:
        """The rows ``q`` asks for, oldest first. ``only`` overrides ``q.states`` (the caller
        asks for queued rows separately, to see which have started or ended since)."""
        where: list[str] = []
        args: list[Any] = []
        states = q.states if only is None else frozenset(only)
        if states:
            where.append(f"state IN ({', '.join('?' * len(states))})")
            args += sorted(states)
        if q.rules:
            where.append(f"rule IN ({', '.join('?' * len(q.rules))})")
            args += sorted(q.rules)
        if q.since is not None:
            where.append("created >= ?")
            args.append(q.since)
        if q.inputs:
            ins = [storable(i) for i in q.inputs]
            marks = ", ".join("?" * len(ins))
            where.append(
                f"(event_path IN ({marks}) OR trigger IN ({marks}) OR message_id IN ({marks}))"
            )
            args += ins * 3
        sql = f"SELECT {_LISTED} FROM jobs"  # noqa: S608 - our own column names
        if where:
            sql += " WHERE " + " AND ".join(where)
        if q.tail is not None:
            sql += f" ORDER BY created DESC, id DESC LIMIT {int(q.tail)}"
        else:
            sql += " ORDER BY created, id"
            if q.limit is not None:
                sql += f" LIMIT {int(q.limit)}"
        with self._lock:
            rows = [IndexRow(*r) for r in self.conn.execute(sql, args)]
        if q.tail is not None:
            rows.reverse()
        return rows

    def find(self, prefix: str) -> list[tuple[str, str]]:
        """(id, folder) of the jobs whose id starts with ``prefix``."""
        prefix = storable(prefix)  # an argument that may be a file's name (--lineage PATH)
        with self._lock:
            return [
                (str(i), str(f))
                for i, f in self.conn.execute(
                    "SELECT id, folder FROM jobs WHERE id >= ? AND id < ? ORDER BY id",
                    (prefix, prefix + "\U0010ffff"),
                )
            ]

    def older_than(
        self, before: float, states: Iterable[str], limit: int
    ) -> list[tuple[str, str, str, float]]:
        """(id, folder, state, created) of up to ``limit`` finished jobs that ended before
        ``before``, oldest first (what retention and ``prune`` remove)."""
        wanted = sorted(set(states) & {s.value for s in FINISHED})
        if not wanted:
            return []
        marks = ", ".join("?" * len(wanted))
        with self._lock:
            return [
                (str(i), str(f), str(s), float(c))
                for i, f, s, c in self.conn.execute(
                    "SELECT id, folder, state, created FROM jobs WHERE state IN ("  # noqa: S608
                    + marks
                    + ") AND created < ? AND coalesce(finished, created) < ? "
                    "ORDER BY created LIMIT ?",
                    (*wanted, before, before, limit),
                )
            ]

    def count_older(self, before: float, state: str) -> tuple[int, float | None, float | None]:
        """How many ``state`` jobs ended before ``before``, and the oldest and newest made."""
        with self._lock:
            n, oldest, newest = self.conn.execute(
                "SELECT count(*), min(created), max(created) FROM jobs WHERE state = ? "
                "AND created < ? AND coalesce(finished, created) < ?",
                (state, before, before),
            ).fetchone()
        return int(n), oldest, newest

    # -- the live view --------------------------------------------------------------------------

    def last_made(self, rule: str) -> float | None:
        """When ``rule``'s newest job was made (its last event that made a job)."""
        with self._lock:
            row = self.conn.execute("SELECT max(created) FROM jobs WHERE rule = ?", (rule,))
            value = row.fetchone()[0]
        return None if value is None else float(value)
