"""The polling watcher: for folders on network filesystems (NFS, CIFS, Lustre, GPFS, FUSE...),
where a file written on another machine, or by a FUSE daemon, makes no inotify event here.

Every ``interval`` seconds one look, in a worker thread, compares the folder with an index of
what the last look saw (path, size, mtime, ctime, inode), kept in SQLite so that memory does
not grow with the tree. A look costs what changed, where the filesystem allows:

- a folder whose mtime and inode are as indexed has the same entries, so it is not listed
  (one ``stat`` per folder); a folder that changed is listed, and stays listed for the next
  looks until it has been quiet for ``settle`` (an entry added in the same clock tick as a
  listing changes no mtime);
- files seen changing are looked at every time until quiet for ``settle``, since a file that
  grows changes its own mtime, not its folder's;
- every ``full_interval`` seconds a full look lists every folder and stats every file: a file
  rewritten in place in a quiet folder is seen then.

A change is reported at once; whether the file is complete is the gate's to decide (``settle``
by default for polled changes: size and mtime unchanged for that long, or a ``sentinel``).
The first look after start only builds the index: files already there are the monitor's
catch-up and retroactive scans' business, as with the other watchers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ...model.patterns import Change
from .changes import FileChange, FileState, Seen, chronological

__all__ = ["PollWatch"]

logger = logging.getLogger("meow_async.monitors.files")

#: Seconds the runner's watermark stays behind the last look: a client's attribute cache
#: (NFS's acdirmax is 60 s by default) can hide a change for that long.
CACHE_SLACK = 60.0
_SCHEMA = 1


@dataclass(slots=True)
class _Dir:
    mtime_ns: int
    ino: int
    subdirs: set[str] = field(default_factory=set)  # names
    hot_until: float = 0.0  # monotonic: listed on every look until then


@dataclass(slots=True)
class _Hot:
    state: FileState
    ctime_ns: int
    until: float  # monotonic: looked at on every look until then


_Row = tuple[int, int, int, int, int]  # size, mtime_ns, ctime_ns, ino, dev
_UNSEEN = FileState(-1, -1, -1, -1)  # matches no file: the next look reports what it finds


class PollWatch:
    """``base_dir`` looked at every ``interval`` seconds, against an index in SQLite."""

    def __init__(
        self,
        monitor: Seen,
        interval: float,
        settle: float,
        index: Path | None = None,
        full_interval: float = 60.0,
    ) -> None:
        self._m = monitor
        self.interval = interval
        #: The settle a polled change gets when its pattern asks for no completeness check.
        self.settle = settle
        self.full_interval = full_interval
        self.index_path = index
        self._db: sqlite3.Connection | None = None
        self._dirs: dict[str, _Dir] = {}
        self._hot: dict[str, _Hot] = {}
        self._last_full = -float("inf")  # the first look is a full one
        self._looked_from: float | None = None  # time.time() when the last look began
        self._wake = asyncio.Event()
        self._stopped = False
        self._lock = threading.Lock()  # one look at a time; close waits for it
        self.looks = 0
        self.last_look: dict[str, float | int] = {}  # what the last look did (perf, tests)
        self.first_look: dict[str, float | int] = {}
        self._declared: dict[str, float] = {}  # path -> when a job-end scan read it
        self._declared_lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the index and bring it up to date, silently: from here on, changes are found."""
        await asyncio.to_thread(self._open_and_look)

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()

    def close(self) -> None:
        self._stopped = True
        self._wake.set()
        if self._lock.acquire(blocking=False):
            try:
                self._close_db()
            finally:
                self._lock.release()
        else:  # a look still runs in its thread (it cannot be interrupted): it closes after
            threading.Thread(target=self._close_locked, name="meow-poll-close").start()

    def declared(self, path: str) -> None:
        """The job-end scan has just read ``path`` past the attribute cache (any thread): a
        look that began before then may have seen it older, and must not report that."""
        with self._declared_lock:
            self._declared[path] = time.monotonic()

    def held_since(self) -> float | None:
        """Changes made since the last look began are not seen yet: the watermark must stay
        before it (and before what an attribute cache may still hide)."""
        return None if self._looked_from is None else self._looked_from - CACHE_SLACK

    def read_since(self, path: str, since: float) -> bool:
        with self._declared_lock:
            return self._declared.get(path, -1.0) >= since

    def still_open(self, found: list[tuple[str, float]]) -> list[FileChange]:
        return []  # no lease probes here: the gate's settle decides completeness

    async def changes(self) -> list[FileChange] | None:
        """The next look's changes (the first look that finds any); None once stopped."""
        while not self._stopped:
            started = self._looked_from or time.time()
            wait = started + self.interval - time.time()
            if wait > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                continue  # stopped meanwhile, or time for the look
            found = await asyncio.to_thread(self._look_locked, False)
            if found:
                return found
        return None

    # -- in a worker thread --------------------------------------------------------------------

    def _open_and_look(self) -> None:
        with self._lock:
            self._db = self._open()
            self._load_dirs()
            if self._dirs:  # the last run's index: unchanged folders need no listing
                self._last_full = time.monotonic()
            self._look(silent=True)
            self.first_look = dict(self.last_look)

    def _close_locked(self) -> None:
        with self._lock:
            self._close_db()

    def _close_db(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None

    def _open(self) -> sqlite3.Connection:
        where = ":memory:" if self.index_path is None else str(self.index_path)
        try:
            return self._connect(where)
        except sqlite3.OperationalError as e:  # locked by another process, or unwritable
            if self.index_path is None:
                raise
            logger.warning(
                "the poll index %s cannot be used (%s): keeping it in memory for this run",
                where,
                e,
            )
            return self._connect(":memory:")
        except sqlite3.DatabaseError as e:
            if self.index_path is None:
                raise
            logger.warning("the poll index %s is unreadable (%s): making it anew", where, e)
            for suffix in ("", "-wal", "-journal"):
                Path(where + suffix).unlink(missing_ok=True)
            return self._connect(where)

    def _connect(self, where: str) -> sqlite3.Connection:
        db = sqlite3.connect(where, check_same_thread=False, isolation_level=None)
        # EXCLUSIVE before WAL: no shared-memory file, so WAL works on a network filesystem
        # too; one runner owns its index. NORMAL: a crash loses at most the last looks, which
        # the next start's first look makes good.
        db.execute("PRAGMA locking_mode=EXCLUSIVE")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(
            """
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS dirs (
                path TEXT PRIMARY KEY, parent TEXT, mtime_ns INTEGER, ino INTEGER
            ) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS files (
                dir TEXT, name TEXT, size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER,
                ino INTEGER, dev INTEGER, PRIMARY KEY (dir, name)
            ) WITHOUT ROWID;
            """
        )
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if meta != {"base": self._m.base, "schema": str(_SCHEMA)}:
            # Another folder's index, or an older layout: start from nothing.
            db.executescript("BEGIN; DELETE FROM dirs; DELETE FROM files; DELETE FROM meta; COMMIT")
            db.executemany(
                "INSERT INTO meta VALUES (?, ?)", [("base", self._m.base), ("schema", _SCHEMA)]
            )
        return db

    def _load_dirs(self) -> None:
        assert self._db is not None  # noqa: S101 - opened first
        self._dirs = {}
        rows = self._db.execute("SELECT path, parent, mtime_ns, ino FROM dirs").fetchall()
        for path, _, mtime_ns, ino in rows:
            self._dirs[path] = _Dir(mtime_ns, ino)
        for path, parent, _, _ in rows:
            if parent in self._dirs:
                self._dirs[parent].subdirs.add(os.path.basename(path))

    def _look_locked(self, silent: bool) -> list[FileChange]:
        with self._lock:
            if self._db is None:
                return []
            return self._look(silent)

    def _look(self, silent: bool) -> list[FileChange]:
        """One look at the whole tree; the changes since the last (none when ``silent``)."""
        assert self._db is not None  # noqa: S101
        t0, cpu0 = time.monotonic(), time.process_time()
        began = time.time()
        full = t0 - self._last_full >= self.full_interval
        if full:
            self._last_full = t0
        with self._declared_lock:  # read since this look began: its own view may be older
            self._declared = {p: t for p, t in self._declared.items() if t > t0 - 60.0}
        look = _Look(self, silent, full, t0)
        look.walk()
        look.hot_files()
        look.pair_moves()
        self._db.execute("BEGIN")
        try:
            look.save(self._db)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._looked_from = began
        self.looks += 1
        self.last_look = {
            "full": int(full),
            "folders_listed": look.listed,
            "folders": len(self._dirs),
            "files_stat": look.stats,
            "changes": len(look.out),
            "seconds": time.monotonic() - t0,
            "cpu_seconds": time.process_time() - cpu0,
        }
        return [] if silent else chronological(look.out)


class _Look:
    """What one look found, and what it will write to the index."""

    def __init__(self, watch: PollWatch, silent: bool, full: bool, now: float) -> None:
        self.w = watch
        self.m = watch._m
        self.silent = silent
        self.full = full
        self.now = now
        self.quiet_after = watch.settle + watch.interval
        self.out: list[FileChange] = []
        self.upserts: list[tuple[str, str, int, int, int, int, int]] = []
        self.deletes: list[tuple[str, str]] = []
        self.dir_rows: list[tuple[str, str, int, int]] = []
        self.dir_deletes: list[str] = []
        self.listed_paths: set[str] = set()
        self.gone: dict[FileState, str] = {}  # the last state of vanished files -> path
        self.listed = 0
        self.stats = 0

    # -- folders -------------------------------------------------------------------------------

    def walk(self) -> None:
        stack = [self.m.base]
        while stack:
            folder = stack.pop()
            try:
                st = os.stat(folder)
            except OSError:
                continue  # gone: its parent's listing says so
            known = self.w._dirs.get(folder)
            changed = known is None or (known.mtime_ns, known.ino) != (st.st_mtime_ns, st.st_ino)
            if changed or self.full or (known is not None and known.hot_until > self.now):
                subdirs = self._list(folder, st, known, changed)
            else:
                subdirs = known.subdirs if known is not None else set()
            stack.extend(os.path.join(folder, name) for name in subdirs)

    def _list(self, folder: str, st: os.stat_result, known: _Dir | None, changed: bool) -> set[str]:
        """List ``folder``, compare its files with the index, and return its subfolders."""
        self.listed += 1
        self.listed_paths.add(folder)
        names: dict[str, os.stat_result] = {}
        subdirs: set[str] = set()
        try:
            with os.scandir(folder) as entries:
                for e in entries:
                    if not self.m.filter(e.path):
                        continue
                    try:
                        if e.is_dir(follow_symlinks=False):
                            subdirs.add(e.name)
                            continue
                        fst = os.stat(e.path)
                    except OSError:
                        continue
                    self.stats += 1
                    if stat.S_ISREG(fst.st_mode):
                        names[e.name] = fst
        except OSError as e:
            logger.debug("cannot list %s: %s", folder, e)
            return known.subdirs if known is not None else set()
        indexed = self._indexed(folder)
        for name, fst in names.items():
            self._file(folder, name, fst, indexed.pop(name, None))
        for name, row in indexed.items():
            self._vanished(folder, name, row)
        if known is not None:
            for name in known.subdirs - subdirs:
                self._folder_gone(os.path.join(folder, name))
        if changed and not self.silent:
            hot_until = self.now + self.quiet_after
        else:
            hot_until = known.hot_until if known is not None else 0.0
        self.w._dirs[folder] = _Dir(st.st_mtime_ns, st.st_ino, subdirs, hot_until)
        parent = os.path.dirname(folder) if folder != self.m.base else ""
        self.dir_rows.append((folder, parent, st.st_mtime_ns, st.st_ino))
        return subdirs

    def _indexed(self, folder: str) -> dict[str, _Row]:
        assert self.w._db is not None  # noqa: S101
        rows = self.w._db.execute(
            "SELECT name, size, mtime_ns, ctime_ns, ino, dev FROM files WHERE dir = ?", (folder,)
        )
        return {name: (size, mt, ct, ino, dev) for name, size, mt, ct, ino, dev in rows}

    def _folder_gone(self, folder: str) -> None:
        """A folder removed or moved away: every file indexed below it is gone."""
        assert self.w._db is not None  # noqa: S101
        low, high = folder + os.sep, folder + chr(ord(os.sep) + 1)
        rows = self.w._db.execute(
            "SELECT dir, name, size, mtime_ns, ctime_ns, ino, dev FROM files "
            "WHERE dir = ? OR (dir >= ? AND dir < ?)",
            (folder, low, high),
        ).fetchall()
        for d, name, *row in rows:
            self._vanished(d, name, (row[0], row[1], row[2], row[3], row[4]))
        for path in [p for p in self.w._dirs if p == folder or p.startswith(low)]:
            del self.w._dirs[path]
            self.dir_deletes.append(path)

    # -- files ---------------------------------------------------------------------------------

    def _file(self, folder: str, name: str, st: os.stat_result, row: _Row | None) -> None:
        now_row: _Row = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
        path = os.path.join(folder, name)
        if row == now_row:
            return
        self.upserts.append((folder, name, *now_row))
        state = FileState(st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)
        if self.silent or (row is not None and (row[3], row[4], row[0], row[1]) == state):
            return  # only its ctime moved (chmod, a hard link): no new content
        if self.w.read_since(path, self.now):
            # A job-end scan read it as its job left it after this look's stat: this view
            # may be older. Not indexed or reported; the next look stats it again.
            self.upserts.pop()
            # Looked at again next time against the indexed state (a size no file has).
            was = _UNSEEN if row is None else FileState(row[3], row[4], -1, row[1])
            self.w._hot[path] = _Hot(was, row[2] if row else 0, self.now + self.quiet_after)
            return
        self.w._hot[path] = _Hot(state, st.st_ctime_ns, self.now + self.quiet_after)
        self._report(path, state, st.st_ctime, row)

    def _report(self, path: str, state: FileState, ctime: float, row: _Row | None) -> None:
        before = self.m.seen(path)
        if before == state:
            return  # triggered in this state already (the job-end scan found it first)
        if row is None:
            change = Change.created
        elif (row[3], row[4]) == (state.ino, state.dev):
            change = Change.modified
        else:
            change = Change.created  # a new file over the old path
        self.m.remember(path, state)
        self.out.append(FileChange(change, path, None, state, ctime))

    def _vanished(self, folder: str, name: str, row: _Row) -> None:
        path = os.path.join(folder, name)
        self.deletes.append((folder, name))
        self.w._hot.pop(path, None)
        if not self.silent:
            self.m.forget(path)
            self.gone[FileState(row[3], row[4], row[0], row[1])] = path

    def hot_files(self) -> None:
        """Files seen changing lately, in folders not listed this look: has each grown?"""
        for path, hot in list(self.w._hot.items()):
            folder = os.path.dirname(path)
            if folder not in self.listed_paths:
                try:
                    st = os.stat(path)
                except OSError:
                    continue  # removed: its folder changed, and is listed at the next look
                self.stats += 1
                s = hot.state
                if (st.st_size, st.st_mtime_ns, st.st_ino) != (s.size, s.mtime_ns, s.ino):
                    before: _Row = (s.size, s.mtime_ns, hot.ctime_ns, s.ino, s.dev)
                    self._file(folder, os.path.basename(path), st, before)
                    continue
            if hot.until <= self.now and self.w._hot.get(path) is hot:
                del self.w._hot[path]  # quiet for settle: only its folder's changes now

    def pair_moves(self) -> None:
        """A file gone from one path and new at another with the same inode, size and mtime
        was renamed: one ``moved`` change, not a deletion and a creation."""
        if not self.gone:
            return
        kept = []
        for c in self.out:
            src = self.gone.pop(c.state, None) if c.state is not None else None
            kept.append(c._replace(change=Change.moved, src=src) if src is not None else c)
        self.out = kept + [FileChange(Change.deleted, p) for p in self.gone.values()]

    # -- the index -----------------------------------------------------------------------------

    def save(self, db: sqlite3.Connection) -> None:
        db.executemany("DELETE FROM files WHERE dir = ? AND name = ?", self.deletes)
        db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)", self.upserts)
        for path in self.dir_deletes:
            low, high = path + os.sep, path + chr(ord(os.sep) + 1)
            db.execute(
                "DELETE FROM files WHERE dir = ? OR (dir >= ? AND dir < ?)", (path, low, high)
            )
            db.execute("DELETE FROM dirs WHERE path = ?", (path,))
        db.executemany("INSERT OR REPLACE INTO dirs VALUES (?, ?, ?, ?)", self.dir_rows)
