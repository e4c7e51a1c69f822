"""What the live view's pages show, read from the runner's memory, the job index and (for one
job's page only) that job's folder. Called in a worker thread: it reads SQLite and files.

The job list comes from the index alone (a row per job, the newest first; running jobs are
the runner's own ``jobs_running``), so a page of 200 jobs opens no job folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..conductors.process_log import current
from ..model.index import IndexRow, JobIndex, Select
from ..model.jobs import PARAMS_FILE, STDERR_FILE, STDOUT_FILE, JobState, read_meta
from ..model.patterns import FilePattern, HttpPattern, TimePattern
from ..model.rules import Rule
from ..model.schedule import tick_name
from .shown import shown, shown_text

__all__ = [
    "JobPage",
    "JobRow",
    "RuleRow",
    "cause_of",
    "job_folder",
    "job_page",
    "job_rows",
    "rule_rows",
    "tail_of",
    "took",
    "when",
]

#: Bytes of a log or of stdout/stderr a job's page shows (the end of it): with the notebook's
#: text, a job's page stays under 100 kB.
TAIL_BYTES = 16 * 1024
#: Jobs a list shows at most (a row is about 450 bytes: 200 stay under 100 kB).
MAX_LIST = 200
#: Notebook output a job's page shows at most (characters, all cells together).
NOTEBOOK_CHARS = 30_000
#: Downstream jobs a job's page links to at most (the first made).
DOWNSTREAM_SHOWN = 100
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def when(t: object) -> str:
    """A timestamp as the pages show it (UTC, to the second; the script writes the same)."""
    if not isinstance(t, int | float) or isinstance(t, bool):
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def took(row: IndexRow | dict[str, Any]) -> str:
    get = row.get if isinstance(row, dict) else row._asdict().get
    started, finished = get("started"), get("finished")
    if not isinstance(started, int | float) or not isinstance(finished, int | float):
        return ""
    return f"{max(0.0, finished - started):.2f}s"


@dataclass(frozen=True, slots=True)
class JobRow:
    id: str
    rule: str
    state: str
    trigger: str
    created: float
    took: str
    exit_code: int | None


def job_rows(
    index: JobIndex | None, running: set[str], rule: str | None, state: str | None, limit: int
) -> list[JobRow]:
    """The newest ``limit`` jobs (of ``rule``, in ``state``), newest first."""
    if index is None:
        return []
    sel = Select(rules=frozenset([rule]) if rule else frozenset(), tail=limit)
    if state in (JobState.running, JobState.queued):
        # job.json (and the index) say queued until the end is recorded: running is ours.
        # Every queued row (the backlog, not the history), so no running job is left out.
        rows = index.select(Select(rules=sel.rules), only=(JobState.queued,))
        rows = [r for r in rows if (r.id in running) == (state == JobState.running)][-limit:]
    elif state:
        rows = index.select(sel, only=(state,))
    else:
        rows = index.select(sel)
    out = []
    for r in reversed(rows):
        st = JobState.running if r.state == JobState.queued and r.id in running else r.state
        out.append(
            JobRow(r.id, shown(r.rule), st, shown(r.trigger), r.created, took(r), r.exit_code)
        )
    return out


@dataclass(slots=True)
class RuleRow:
    name: str
    kind: str
    trigger: str
    recipe: str
    events: int
    filtered: int
    states: dict[str, int] = field(default_factory=dict)
    last: float | None = None
    next_tick: str | None = None


def kind_of(rule: Rule) -> str:
    p = rule.pattern
    if isinstance(p, FilePattern):
        return "file"
    if isinstance(p, TimePattern):
        return "time"
    return "http" if isinstance(p, HttpPattern) else "tcp"


def rule_rows(
    rules: dict[str, Rule],
    triggers: dict[str, str],
    events: dict[str, int],
    filtered: dict[str, int],
    ticks: dict[str, Any],
    index: JobIndex | None,
    running: dict[str, int],
) -> list[RuleRow]:
    """Each rule with its counts: events (this run), jobs by state (all kept jobs)."""
    counts: dict[tuple[str, str], int] = {}
    if index is not None:
        with contextlib.suppress(sqlite3.Error):
            counts = index.counts()
    out = []
    for name, rule in rules.items():
        states = {s: n for (r, s), n in counts.items() if r == name}
        if running.get(name):  # the index counts a running job as queued
            states[JobState.queued] = states.get(JobState.queued, 0) - running[name]
            states[JobState.running] = running[name]
        last = None
        if index is not None:
            with contextlib.suppress(sqlite3.Error):
                last = index.last_made(name)
        tick = ticks.get(name)
        out.append(
            RuleRow(
                name=shown(name),
                kind=kind_of(rule),
                trigger=shown(triggers.get(name, "")),
                recipe=f"{shown(rule.recipe.name)} ({rule.recipe.kind})",
                events=events.get(name, 0),
                filtered=filtered.get(name, 0),
                states={s: n for s, n in states.items() if n > 0},
                last=last,
                next_tick=None if tick is None else tick_name(tick),
            )
        )
    return out


def tail_of(path: Path, max_bytes: int = TAIL_BYTES) -> tuple[str, bool]:
    """The end of a text file, and whether it was cut ("" for none)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return "", False
    return shown_text(data.decode("utf-8", "surrogateescape")), size > max_bytes


@dataclass(slots=True)
class JobPage:
    meta: dict[str, Any]
    folder: Path
    params: str
    event: list[tuple[str, str]]
    logs: dict[str, tuple[str, bool]]
    notebook: list[tuple[str, str]] | None
    #: (job, rule) of the job that declared this job's trigger (``caused_by``), kept or not.
    cause: tuple[str, str] | None
    upstream: IndexRow | None  # that job's row, while it is kept
    downstream: list[IndexRow]
    attempts: list[dict[str, Any]]


def cause_of(caused_by: Any) -> tuple[str, str] | None:
    """(job, rule) of a ``job.json``'s ``caused_by`` (``{job, rule}``, as lineage writes it)."""
    if isinstance(caused_by, dict) and isinstance(caused_by.get("job"), str):
        return caused_by["job"], str(caused_by.get("rule") or "")
    return None


def job_folder(index: JobIndex | None, jobs_dir: Path, job_id: str) -> Path | None:
    """Where job ``job_id``'s folder is (the index says which day), if it has one."""
    if not job_id or "/" in job_id or job_id.startswith(".") or "\x00" in job_id:
        return None
    where = None
    if index is not None:
        with contextlib.suppress(sqlite3.Error):
            where = index.folder_of(job_id)
    folder = jobs_dir / (where or job_id)
    return folder if folder.is_dir() else None


def job_page(index: JobIndex | None, jobs_dir: Path, job_id: str, running: bool) -> JobPage | None:
    """Everything a job's page shows; None if there is no such job."""
    folder = job_folder(index, jobs_dir, job_id)
    if folder is None:
        return None
    try:
        meta = current({**read_meta(folder), "dir": str(folder)})
    except (OSError, ValueError):
        return None
    if running and meta.get("state") == JobState.queued:
        meta["state"] = JobState.running
    try:
        params = json.loads((folder / PARAMS_FILE).read_text("utf-8"))
        params_text = json.dumps(params, indent=2, ensure_ascii=False)
    except (OSError, ValueError):
        params_text = ""
    event = meta.get("event") if isinstance(meta.get("event"), dict) else {}
    assert isinstance(event, dict)  # noqa: S101 - for mypy
    shown_event = [
        (shown(str(k)), shown(v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)))
        for k, v in event.items()
        if v not in (None, "", [], {})
    ]
    logs = {
        name: tail_of(folder / name)
        for name in ("process.log", STDOUT_FILE, STDERR_FILE)
        if (folder / name).exists()
    }
    cause = cause_of(meta.get("caused_by"))
    upstream, downstream = None, []
    if index is not None:
        with contextlib.suppress(sqlite3.Error):
            upstream = index.row(cause[0]) if cause else None
            downstream = index.downstream(job_id, limit=DOWNSTREAM_SHOWN)
    attempts = [a for a in meta.get("attempts") or [] if isinstance(a, dict)]
    return JobPage(
        meta=meta,
        folder=folder,
        params=shown_text(params_text),
        event=shown_event,
        logs=logs,
        notebook=notebook_outputs(folder / "output.ipynb"),
        cause=cause,
        upstream=upstream,
        downstream=downstream,
        attempts=attempts,
    )


def notebook_outputs(path: Path) -> list[tuple[str, str]] | None:
    """A notebook job's cells as (source, text output): the cells' text, not a rendering
    (nbconvert and its templates would weigh more than the rest of the view)."""
    if not path.is_file() or path.stat().st_size > 20 * 1024 * 1024:
        return None
    try:
        nb = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    out, total = [], 0
    for cell in nb.get("cells", []) if isinstance(nb, dict) else []:
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = _joined(cell.get("source"))
        texts = []
        for o in cell.get("outputs") or []:
            if not isinstance(o, dict):
                continue
            if o.get("output_type") == "stream":
                texts.append(_joined(o.get("text")))
            elif o.get("output_type") in ("execute_result", "display_data"):
                data = o.get("data") if isinstance(o.get("data"), dict) else {}
                texts.append(_joined(data.get("text/plain")) if data else "")
            elif o.get("output_type") == "error":
                tb = "\n".join(_joined(t) for t in o.get("traceback") or [])
                texts.append(_ANSI.sub("", tb) or f"{o.get('ename')}: {o.get('evalue')}")
        text = "".join(t if t.endswith("\n") else t + "\n" for t in texts if t)
        total += len(source) + len(text)
        if total > NOTEBOOK_CHARS:
            out.append(("…", "(more cells: open output.ipynb)"))
            break
        out.append((shown_text(source), shown_text(text)))
    return out


def _joined(v: Any) -> str:
    if isinstance(v, list):
        return "".join(str(x) for x in v)
    return v if isinstance(v, str) else ""
