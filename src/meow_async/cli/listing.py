"""Listing jobs, for ``meow-async jobs``, ``show PATH`` and ``status``.

The jobs folder's index (``model/index.py``) answers: filters, ``--tail`` and ``--since`` are
SQL on indexed columns, so a listing costs the rows it shows, not the history. Only queued
rows (few: the open work) look at their ``process.log``, which says whether they have started
or ended since ``job.json`` was written. ``--json`` reads the ``job.json`` of each row shown.

Without an index (a jobs folder no runner of this version has opened yet), the folders are
read, fast (docs/performance.md#listing-jobs): through one directory descriptor, by one
process per CPU; a filter's words are looked for in the raw bytes before any JSON is parsed;
only the fields a row shows are kept; and ``--since``/``--tail`` skip folders by their mtime,
which is never older than the job's ``created`` time (``job.json`` is renamed into its folder
whenever it is written). Job ids (``rule-hash``, from the trigger) say nothing of time.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gc
import glob
import heapq
import json
import marshal
import operator
import os
import re
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from ..conductors.process_log import current, last_attempt
from ..exceptions import MeowError
from ..model.events import trigger_of
from ..model.index import IndexRow, JobIndex, Select, sweep_of
from ..model.jobs import DAY_FOLDER, META_FILE, JobState, exit_text

__all__ = ["Query", "Row", "find_jobs", "parse_since", "scan", "scan_open", "table"]

#: Seconds a folder's mtime may be behind the ``created`` written into it: file times come
#: from the kernel's coarse clock, up to a tick behind ``time.time()``.
SLACK = 2.0

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")


def parse_since(text: str, now: float | None = None) -> float:
    """``10m``, ``2h``, ``1d``, ``1h30m`` (that long ago) or an ISO time (local unless it says
    otherwise) -> a Unix time."""
    t = text.strip().lower()
    if _DURATION.fullmatch(t):
        ago = sum(float(n) * _UNITS[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([smhdw])", t))
        return (time.time() if now is None else now) - ago
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise MeowError(
            f"--since: expected a duration (10m, 2h, 1d, 1h30m) or an ISO time "
            f"(2026-11-30, 2026-11-30T14:00, 2026-11-30T14:00Z), got {text!r}"
        ) from None
    return when.timestamp()  # a naive time is local, as CREATED is shown


@dataclass(frozen=True, slots=True)
class _Input:
    """One ``--input``: a path (as given, from the current folder, or from the watched folder
    the job recorded), or a network/HTTP message id."""

    text: str
    paths: frozenset[str]
    rel: str | None
    needles: tuple[bytes, ...]

    @classmethod
    def of(cls, text: str) -> _Input:
        norm = os.path.normpath(text)
        paths = {os.path.abspath(text), os.path.realpath(text)}
        name = os.path.basename(norm)
        return cls(
            text=text,
            paths=frozenset(paths),
            rel=None if os.path.isabs(norm) or norm.startswith("..") else norm,
            needles=_needles(name),
        )

    def matches(self, event: dict[str, Any]) -> bool:
        path, base = event.get("path"), event.get("base")
        if path in self.paths or (event.get("message_id") or None) == self.text:
            return True
        return (
            self.rel is not None and isinstance(base, str) and path == os.path.join(base, self.rel)
        )


def _needles(word: str) -> tuple[bytes, ...]:
    """How ``word`` can appear inside a JSON string: escaped as ``json.dumps`` does, or as
    UTF-8 (a file written by something else)."""
    escaped = json.dumps(word)[1:-1].encode()
    plain = word.encode("utf-8", "surrogateescape")
    return (escaped,) if escaped == plain else (escaped, plain)


@dataclass(frozen=True, slots=True, kw_only=True)
class Query:
    """Which jobs: every filter given must hold (several values of one filter: any)."""

    states: frozenset[str] = frozenset()
    rules: frozenset[str] = frozenset()
    since: float | None = None
    inputs: tuple[str, ...] = ()
    limit: int | None = None  # the oldest N
    tail: int | None = None  # the newest N
    records: bool = False  # keep each job's whole record (--json)

    def needles(self) -> list[tuple[bytes, ...]]:
        """Per filter, words of which one must be in ``job.json``'s bytes for a job to match:
        a cheap test that spares parsing the JSON of jobs that cannot match."""
        out = []
        if self.states:
            words = set(self.states)
            if words & {JobState.running, JobState.done, JobState.failed}:
                words.add(JobState.queued)  # process.log may say it has started or ended
            out.append(tuple(f'"{w}"'.encode() for w in sorted(words)))
        if self.rules:
            out.append(tuple(n for r in sorted(self.rules) for n in _needles(r)))
        if self.inputs:
            out.append(tuple(n for i in self.inputs for n in _Input.of(i).needles))
        return out


class Row(NamedTuple):
    """What a listing shows of one job."""

    created: float
    id: str
    state: str
    rule: str
    started: float | None
    finished: float | None
    exit_code: int | None
    trigger: str
    sweep: str
    dir: str
    #: CREATED and TOOK as shown: made where the row is read, so forked readers share the work.
    when: str
    took: str
    #: The whole record, with --json: ``job.json``'s line as it is on disk (bytes, with its
    #: newline) when that is still how the job stands, else the current metadata.
    record: bytes | dict[str, Any] | None = None


def scan(root: Path, q: Query) -> list[Row]:
    """The jobs under ``root`` that match ``q``, oldest first (by ``created``, then id): from
    the index, or, without one, from the folders."""
    index = JobIndex.read(root)
    if index is not None:
        try:
            return _indexed(root, index, q)
        finally:
            index.close()
    enabled = gc.isenabled()
    # Rows are plain tuples that all live until the end: the cyclic collector, run again and
    # again as they pile up, would find nothing to free (5% of the time, measured).
    gc.disable()
    try:
        return _scan(root, q)
    finally:
        if enabled:
            gc.enable()


def _scan(root: Path, q: Query) -> list[Row]:
    try:
        dfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return []
    except OSError as e:
        raise MeowError(f"cannot read the jobs folder {root}: {e.strerror or e}") from None
    try:
        with os.scandir(dfd) as it:
            names = [e.name for e in it if e.is_dir() and not e.name.startswith(".")]
        names = _with_days(root, names)
        at = _At(dfd, os.fspath(root), q)
        if q.tail is not None:
            rows = _newest(at, _stamped(at, names), q.tail)
        elif q.since is not None:
            rows = _in_parallel(at, [name for _, name in _stamped(at, names)])
        else:
            rows = _in_parallel(at, names)
    finally:
        os.close(dfd)
    # By id, then (stable) by created: two sorts on C getters take a third of one on a
    # Python key, for 100,000 rows.
    rows.sort(key=_ID)
    rows.sort(key=_CREATED)
    if q.tail is not None:
        return rows[-q.tail :]
    return rows[: q.limit] if q.limit is not None else rows


def _with_days(root: Path, names: list[str]) -> list[str]:
    """Day folders replaced by the job folders in them (``DAY/ID``)."""
    out = []
    for name in names:
        if re.fullmatch(DAY_FOLDER, name):
            with contextlib.suppress(OSError), os.scandir(root / name) as day:
                out += [f"{name}/{e.name}" for e in day if e.is_dir()]
        else:
            out.append(name)
    return out


def _indexed(root: Path, index: JobIndex, q: Query) -> list[Row]:
    """The rows from the index. A queued row may have started or ended since its ``job.json``
    was written (``process.log`` says so): with a state filter, the queued rows are read on
    their own (few: the open work), brought up to date, and merged in."""
    inputs: list[str] = []
    for text in q.inputs:
        i = _Input.of(text)
        inputs += [*i.paths, text] + ([i.rel] if i.rel else [])
    sel = Select(
        states=q.states,
        rules=q.rules,
        since=q.since,
        inputs=tuple(dict.fromkeys(inputs)),
        limit=q.limit,
        tail=q.tail,
    )
    prefix = str(root).rstrip("/")
    clock = _Clock()
    if not q.states:
        rows = [_row(prefix, r, clock, q.records) for r in index.select(sel)]
    else:
        direct = q.states - {JobState.queued, JobState.running}
        rows = (
            [_row(prefix, r, clock, q.records) for r in index.select(sel, only=direct)]
            if direct
            else []
        )
        if q.states & {JobState.queued, JobState.running, JobState.done, JobState.failed}:
            unlimited = Select(states=q.states, rules=q.rules, since=q.since, inputs=sel.inputs)
            for r in index.select(unlimited, only=(JobState.queued, JobState.running)):
                row = _row(prefix, r, clock, q.records)
                if row.state in q.states:
                    rows.append(row)
            rows.sort(key=_ID)
            rows.sort(key=_CREATED)
    if q.tail is not None:
        return rows[-q.tail :]
    return rows[: q.limit] if q.limit is not None else rows


def scan_open(root: Path, index: JobIndex) -> list[Row]:
    """The jobs whose ``job.json`` says queued (or running), as they are now."""
    prefix, clock = str(root).rstrip("/"), _Clock()
    only = (JobState.queued, JobState.running)
    return [_row(prefix, r, clock, False) for r in index.select(Select(), only=only)]


def _row(prefix: str, r: IndexRow, clock: _Clock, records: bool) -> Row:
    """A listing's row from an index row; a queued job as its ``process.log`` says it is now,
    and with ``records`` the job's ``job.json``."""
    job_dir = f"{prefix}/{r.folder}"
    state, started, finished, code = r.state, r.started, r.finished, r.exit_code
    if state == JobState.queued:
        attempt = last_attempt(Path(job_dir))
        if attempt is not None and attempt.number > r.attempt:
            state, started = JobState.running.value, attempt.started
            if attempt.exit_code is not None:  # ended; the runner records it (or the next)
                code, finished = attempt.exit_code, attempt.finished
                state = (JobState.done if code == 0 else JobState.failed).value
    record: bytes | dict[str, Any] | None = None
    if records:
        record = _record(job_dir, r.state)
    return Row(
        r.created,
        r.id,
        state,
        r.rule,
        started,
        finished,
        code,
        r.trigger,
        r.sweep,
        job_dir,
        clock(r.created or None),
        "-" if started is None or finished is None else f"{finished - started:.2f}s",
        record,
    )


def _record(job_dir: str, state: str) -> bytes | dict[str, Any] | None:
    """``job.json`` as stored (one line), or as of now for a queued job that has started."""
    try:
        with open(f"{job_dir}/{META_FILE}", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    if state != JobState.queued and raw.endswith(b"\n") and raw.count(b"\n") == 1:
        return raw
    try:
        meta = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(meta, dict):
        return None
    meta["dir"] = job_dir
    return current(meta)


def _in_parallel(at: _At, names: list[str]) -> list[Row]:
    """Every folder's row, read by this process and forked copies of it, one per CPU: parsing
    JSON is what a listing spends its time on, and it only spreads over processes."""
    n = _processes(len(names))
    if n < 2 or threading.active_count() > 1:  # a fork copies one thread: none that holds a lock
        return [r for r in map(at.row, names) if r is not None]
    parts = [names[i::n] for i in range(n)]  # equal shares (measured: uneven is slower)
    children = []
    for part in parts[1:]:
        r, w = os.pipe()
        with contextlib.suppress(OSError, AttributeError):  # Linux: fewer, larger writes
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 1 << 20)
        pid = os.fork()
        if pid == 0:  # the child: its rows through the pipe, as marshal (fast; plain values)
            code = 1
            try:
                os.close(r)
                with open(w, "wb") as out:
                    out.write(marshal.dumps([tuple(x) for x in map(at.row, part) if x]))
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        children.append((pid, r, part))
    rows = [r for r in map(at.row, parts[0]) if r is not None]
    for pid, r, part in children:
        with open(r, "rb") as f:
            data = f.read()
        _, status = os.waitpid(pid, 0)
        if status == 0:
            rows += [Row(*t) for t in marshal.loads(data)]  # noqa: S302 - our child's
        else:  # it failed (out of memory?): read its share here
            rows += [x for x in map(at.row, part) if x is not None]
    return rows


#: Folders each process should have at least, for a fork to pay off.
PER_PROCESS = 5000


def _processes(folders: int) -> int:
    """How many processes read ``folders``: one per CPU (at most 8) with at least
    ``PER_PROCESS`` folders each, or ``$MEOW_LISTING_PROCESSES`` (1: this one only, e.g. to
    leave a busy machine's other CPUs alone)."""
    asked = os.environ.get("MEOW_LISTING_PROCESSES", "").strip()
    if asked:
        if not asked.isdigit() or int(asked) < 1:
            raise MeowError(f"MEOW_LISTING_PROCESSES: expected a whole number >= 1, got {asked!r}")
        return min(int(asked), folders)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(cpus or 1, 8, folders // PER_PROCESS)


_CREATED = operator.itemgetter(0)
_ID = operator.itemgetter(1)


def _stamped(at: _At, names: list[str]) -> list[tuple[float, str]]:
    """The folders and their mtimes, newest first; with ``--since``, only those written since
    (a folder's mtime is never older than its job's ``created``: see ``SLACK``)."""
    since = at.q.since
    stamped = []
    for name in names:
        try:
            mtime = os.stat(name, dir_fd=at.dfd, follow_symlinks=False).st_mtime
        except OSError:
            continue
        if since is None or mtime >= since - SLACK:
            stamped.append((mtime, name))
    stamped.sort(reverse=True)
    return stamped


def _newest(at: _At, stamped: list[tuple[float, str]], n: int) -> list[Row]:
    """``--tail N``: folders newest first, until no folder left can hold a job made after the
    N-th newest found (its mtime, and so its ``created``, is older)."""
    rows: list[Row] = []
    top: list[float] = []  # the N newest ``created`` found so far (a min-heap)
    for mtime, name in stamped:
        if len(top) >= n and mtime + SLACK < top[0]:
            break
        row = at.row(name)
        if row is None:
            continue
        rows.append(row)
        if len(top) < n:
            heapq.heappush(top, row.created)
        elif row.created > top[0]:
            heapq.heapreplace(top, row.created)
    return rows


class _At:
    """Reading job folders through one descriptor of the jobs folder."""

    def __init__(self, dfd: int, prefix: str, q: Query) -> None:
        self.dfd = dfd
        self.prefix = prefix.rstrip("/")  # "" for "/"; rows are f"{prefix}/{name}"
        self.abs_prefix = os.path.abspath(prefix).rstrip("/")
        self.q = q
        self.needles = q.needles()
        self.inputs = [_Input.of(i) for i in q.inputs]
        self.clock = _Clock()

    def row(self, name: str) -> Row | None:
        """The folder's row, or None if it is no job or does not match. The hot path of a
        listing: kept to plain operations (100,000 calls must take well under a second)."""
        q = self.q
        try:
            fd = os.open(f"{name}/{META_FILE}", os.O_RDONLY, dir_fd=self.dfd)
        except OSError:
            return None  # being made, or not a job folder
        try:
            raw = os.read(fd, 1 << 16)
            if len(raw) == 1 << 16:  # a big one (a huge parameter): the rest too
                raw += b"".join(iter(lambda: os.read(fd, 1 << 20), b""))
        except OSError:
            return None
        finally:
            os.close(fd)
        for words in self.needles:
            if not any(w in raw for w in words):
                return None
        try:
            meta, _ = _decode(raw.decode().lstrip())
        except ValueError:  # incl. UnicodeDecodeError: written by something else, or half
            return None
        if type(meta) is not dict:
            return None
        here = f"{self.abs_prefix}/{name}"
        changed = meta.get("dir") != here
        if changed:
            meta["dir"] = here  # moved, or written by hand: where it is now
        state = meta.get("state")
        if state == "queued":
            now = current(meta)
            changed, meta, state = changed or now is not meta, now, now.get("state")
        if q.states and state not in q.states:
            return None
        rule = meta.get("rule")
        if q.rules and rule not in q.rules:
            return None
        created = meta.get("created")
        if type(created) is not float:
            created = float(created) if isinstance(created, int) else 0.0
        if q.since is not None and created < q.since:
            return None
        event = meta.get("event")
        if type(event) is not dict:
            event = {}
        if self.inputs and not any(i.matches(event) for i in self.inputs):
            return None
        record: bytes | dict[str, Any] | None = None
        if q.records:
            # The file's own line (newline included), unless the job moved on since it was
            # written or the file is not one line.
            one_line = raw.endswith(b"\n") and raw.count(b"\n") == 1
            record = raw if one_line and not changed else meta
        exit_code = meta.get("exit_code")
        point = meta.get("sweep")
        started, finished = _num(meta.get("started")), _num(meta.get("finished"))
        return Row(
            created,
            str(meta.get("id", name)),
            str(state),
            str(rule),
            started,
            finished,
            exit_code if type(exit_code) is int else None,
            trigger_of(event),
            sweep_of(point) if point else "",
            f"{self.prefix}/{name}",
            self.clock(created or None),
            "-" if started is None or finished is None else f"{finished - started:.2f}s",
            record,
        )


#: ``json.loads`` less its per-call type check and encoding sniffing (a text is decoded once).
_decode = json.JSONDecoder().raw_decode


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def find_jobs(root: Path, text: str) -> list[Row]:
    """The jobs a file (path from here or from the watched folder) or message id triggered."""
    return scan(root, Query(inputs=(text,)))


# -- showing --------------------------------------------------------------------------------------


class _Clock:
    """Local times for many rows: ``localtime`` once per minute seen, not once per row."""

    def __init__(self) -> None:
        self._minutes: dict[int, str] = {}

    def __call__(self, t: float | None) -> str:
        if t is None:
            return "-"
        s = int(t)
        minute = s - s % 60
        head = self._minutes.get(minute)
        if head is None:
            lt = time.localtime(minute)
            if lt.tm_sec:  # an offset that is not whole minutes (old local mean times)
                return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s))
            head = self._minutes[minute] = time.strftime("%Y-%m-%d %H:%M", lt)
        return f"{head}:{s % 60:02d}"


HEADER = ("ID", "STATE", "RULE", "CREATED", "TOOK", "EXIT", "SWEEP", "TRIGGER")


def table(rows: Sequence[Row]) -> list[str]:
    """The rows as aligned text lines, header first (built column by column, which is faster
    than row by row for 100,000 rows)."""
    columns = [
        [r.id for r in rows],
        [r.state for r in rows],
        [r.rule for r in rows],
        [r.when for r in rows],
        [r.took for r in rows],
        # a signal by its name; the usual code without a call (100,000 rows)
        [str(c) if c is not None and c >= 0 else exit_text(c) for c in (r.exit_code for r in rows)],
        [r.sweep or "-" for r in rows],
        [r.trigger for r in rows],
    ]
    widths = [
        max(len(h), max(map(len, c), default=0)) for h, c in zip(HEADER, columns, strict=True)
    ]
    del widths[-1]  # the last column is not padded
    fmt = "  ".join(f"{{:<{w}}}" for w in widths) + "  {}"
    return [fmt.format(*HEADER), *map(fmt.format, *columns)]


def counts(rows: Sequence[Row]) -> str:
    """``3 done, 1 failed``: the rows' states, by name."""
    by: dict[str, int] = {}
    for r in rows:
        by[r.state] = by.get(r.state, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(by.items()))


# -- the commands ---------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``meow-async jobs``'s filters and output options."""
    p.add_argument(
        "--state",
        action="append",
        choices=[s.value for s in JobState],
        help="only jobs in this state (again for any of several)",
    )
    p.add_argument(
        "--rule", action="append", metavar="NAME", help="only this rule's jobs (again for several)"
    )
    p.add_argument(
        "--since",
        metavar="WHEN",
        type=_since,
        help="only jobs made since: a duration ago (10m, 2h, 1d, 1h30m) or an ISO time "
        "(2026-11-30T14:00, local unless it ends in Z or an offset)",
    )
    p.add_argument(
        "--input",
        action="append",
        metavar="PATH",
        help="only the jobs this file triggered (a path from here, or from the watched "
        "folder) or this network/HTTP message id triggered (again for several)",
    )
    p.add_argument(
        "--lineage",
        metavar="JOB_OR_PATH",
        help="the chain from the root event through every job it led to, as a tree: a job "
        "id, a file that triggered jobs, or a declared output (a result)",
    )
    some = p.add_mutually_exclusive_group()
    some.add_argument("--limit", type=_count, metavar="N", help="only the first (oldest) N")
    some.add_argument("--tail", type=_count, metavar="N", help="only the newest N")
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per line: each job's job.json (running jobs as running)",
    )


def _since(text: str) -> float:
    try:
        return parse_since(text)
    except MeowError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--since: ")) from None


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def query_of(args: argparse.Namespace) -> Query:
    return Query(
        states=frozenset(args.state or ()),
        rules=frozenset(args.rule or ()),
        since=args.since,
        inputs=tuple(args.input or ()),
        limit=args.limit,
        tail=args.tail,
        records=args.json,
    )


def jobs_command(root: Path, args: argparse.Namespace) -> int:
    """``meow-async jobs``: a table (or JSON lines) of the jobs that match, oldest first."""
    q = query_of(args)
    rows = scan(root, q)
    if q.records:
        out = sys.stdout.buffer
        for i in range(0, len(rows), 1000):  # a few MB at a time, not all 100,000 at once
            out.write(
                b"".join(
                    r.record
                    if isinstance(r.record, bytes)
                    else json.dumps(r.record).encode() + b"\n"
                    for r in rows[i : i + 1000]
                )
            )
        out.flush()
        return 0
    if not rows:
        states = " or ".join(sorted(q.states))
        print(f"no {states + ' ' if states else ''}jobs in {root}{_matching(args)}")
        return 0
    shown = f"the first {len(rows)}" if q.limit else f"the newest {len(rows)}" if q.tail else ""
    lines = table(rows)
    lines.append(f"{shown or len(rows)} job(s): {counts(rows)}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _matching(args: argparse.Namespace) -> str:
    """The filters other than --state, as given, for a "no jobs" line."""
    parts = [f"rule {r}" for r in args.rule or ()]
    parts += [f"triggered by {i}" for i in args.input or ()]
    if args.since is not None:
        parts.append(f"made since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(args.since))}")
    return f" ({', '.join(parts)})" if parts else ""


def find_one(root: Path, text: str, *, newest: bool = True) -> Path:
    """The job folder ``text`` means: a job id or its unique start; a rule's name (its newest
    job); or the file or message that triggered it (the newest job, if it triggered several).
    Each "newest" is said on stderr; with ``newest=False`` (for commands that change a job)
    a text that means several jobs is an error naming them instead."""
    looks_like_path = os.sep in text or os.path.isfile(text)
    if not looks_like_path:
        matches = sorted(_by_id(root, text), key=lambda p: p.name)  # either layout
        exact = [p for p in matches if p.name == text]
        if exact:
            return exact[0]
        of_rule = [p for p in matches if p.name.rpartition("-")[0] == text]
        if len(matches) > 1 and not of_rule:
            shown = ", ".join(p.name for p in matches[:5]) + (", ..." if len(matches) > 5 else "")
            raise MeowError(f"{text!r} matches {len(matches)} jobs ({shown}); give more of the id")
        if of_rule:
            if len(of_rule) == 1:
                return of_rule[0]
            rows = scan(root, Query(rules=frozenset({text})))
            return _newest_of(rows, text, f"rule {text} has", f"--rule {text}", newest)
        if matches:
            return matches[0]
    rows = find_jobs(root, text)
    if not rows:
        raise MeowError(
            f"no job {text!r} in {root}: no job id starts with it, no rule has that name and no "
            "job was triggered by a file or message of that name"
            if not looks_like_path
            else f"no job in {root} was triggered by {text}"
        )
    return _newest_of(rows, text, f"{text} triggered", f"--input {text}", newest)


def _newest_of(rows: list[Row], text: str, has: str, listing: str, newest: bool) -> Path:
    if len(rows) > 1:
        if not newest:
            shown = ", ".join(r.id for r in rows[-5:])
            shown += " (the newest 5)" if len(rows) > 5 else ""
            raise MeowError(
                f"{text!r} means {len(rows)} jobs: {shown}; give the job's id "
                f"(meow-async jobs {listing} lists them)"
            )
        print(
            f"meow-async: note: {has} {len(rows)} jobs; showing the newest "
            f"(meow-async jobs {listing} lists them all)",
            file=sys.stderr,
        )
    return Path(rows[-1].dir)


def _by_id(root: Path, prefix: str) -> list[Path]:
    """The job folders whose id starts with ``prefix``: from the index, else both layouts."""
    index = JobIndex.read(root)
    if index is not None:
        try:
            return [root / folder for _, folder in index.find(prefix)]
        finally:
            index.close()
    pattern = f"{glob.escape(prefix)}*"
    found = [*root.glob(pattern), *root.glob(f"*/{pattern}")]
    return sorted(p for p in found if (p / META_FILE).is_file())
