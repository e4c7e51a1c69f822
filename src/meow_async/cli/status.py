"""``meow-async status``: what a runner is doing now, read without stopping or disturbing it.

The runner's ``.meow-live.json`` (see ``live``) says whether it runs and where its
``runner.http`` answers. With ``runner.http``, the figures are the runner's own, from
``GET /status``: uptime, rules, events, jobs by state, running jobs, queue depths. Without it,
the job folders are all there is: jobs by state and the running ones (from ``process.log``).
"""

from __future__ import annotations

import argparse
import json
import math
import socket
import sys
import time
import urllib.error
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..exceptions import MeowError
from ..model.config import http_token
from ..model.index import JobIndex
from ..model.jobs import JobState
from ..model.patterns import Pattern, TimePattern
from ..model.schedule import tick_name
from ..model.triggers import trigger_text
from ..model.workflow_file import WorkflowSpec
from ..runner.live import LIVE_FILE, Live, read_live
from .listing import Query, scan, scan_open
from .runner_http import get_json

__all__ = ["NOT_RUNNING", "add_arguments", "gather", "render", "status_command"]

#: The exit status when no runner runs on the jobs folder (0: one does).
NOT_RUNNING = 3

#: Seconds to wait for the runner's /status before falling back to the job folders.
HTTP_TIMEOUT = 3.0

#: ``--watch`` without a number: seconds between refreshes.
DEFAULT_WATCH = 2.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--watch",
        nargs="?",
        const=str(DEFAULT_WATCH),
        metavar="SECONDS",
        help=f"refresh every SECONDS (default {DEFAULT_WATCH:g}) until Ctrl+C, which exits 0",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON object (with --watch: one per line, per refresh)",
    )


def gather(root: Path, spec: WorkflowSpec | None = None) -> dict[str, Any]:
    """Everything ``status`` shows, as plain data (what ``--json`` prints)."""
    now = time.time()
    live = read_live(root)
    running = live is not None and live.alive is not False
    out: dict[str, Any] = {
        "running": running,
        "jobs_dir": str(root.absolute()),
        "runner": None if live is None else _runner(live, now),
        "source": "folders",
        "status": None,
        "folders": None,
        "note": None,
        # The workflow file's version it runs, and the last refused reload (its live file).
        "loaded": live.raw.get("workflow") if running and live is not None else None,
        # What the fork server learned to preload (its record in the jobs folder).
        "preload": _learned(root),
    }
    if running and live is not None and live.http is not None:
        token = http_token(spec.config.http) if spec is not None else None
        try:
            out["status"] = get_json(str(live.url("/status")), token, HTTP_TIMEOUT)
        except urllib.error.HTTPError as e:
            out["note"] = (
                f"runner.http at {live.url()} asks for its token: give the workflow file, "
                "whose runner.http names it: figures from the job folders"
                if e.code == 401
                else f"runner.http at {live.url()} answered {e.code}: figures from the job folders"
            )
        except (OSError, ValueError) as e:
            out["note"] = (
                f"runner.http at {live.url()} did not answer ({_why(e)}): figures from the "
                "job folders"
            )
        else:
            out["source"] = "http"
            return out
    elif running:
        out["note"] = (
            "live figures (events, queues) need runner.http in the workflow file: figures "
            "from the job folders"
        )
    out["folders"] = _folders(root, now)
    if spec is not None and not running:
        # The file's rules now, not a runner's: none runs to have them.
        out["workflow"] = {"file": str(spec.path), "rules": [p.name for p in spec.patterns]}
    elif spec is not None:
        ports = live.raw.get("ports") if running and live is not None else None
        ports = ports if isinstance(ports, dict) else {}
        out["rules"] = [
            {
                "name": p.name,
                "trigger": trigger_text(p, ports.get(p.name)),
                "recipe": p.recipe,
                "recipe_kind": next((r.kind for r in spec.recipes if r.name == p.recipe), "?"),
                **_next_tick(p, now),
            }
            for p in spec.patterns
        ]
    return out


def _learned(root: Path) -> dict[str, Any] | None:
    """The fork server's record of the modules it learned from jobs, and refused."""
    from ..conductors.learned_preload import LEARNED_FILE

    try:
        data = json.loads((root / LEARNED_FILE).read_text(encoding="utf-8"))
        return {"learned": list(data["learned"]), "refused": dict(data["refused"])}
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _next_tick(p: Pattern, now: float) -> dict[str, Any]:
    """A time pattern's next tick by its schedule (the runner's /status knows better: a
    tick it has fired already)."""
    if not isinstance(p, TimePattern):
        return {}
    tick = p.schedule.after(datetime.fromtimestamp(now, UTC))
    if tick is None:
        return {}
    return {
        "next_tick": tick_name(tick.astimezone(p.schedule.zone)),
        "next_tick_in": tick.timestamp() - now,
    }


def _runner(live: Live, now: float) -> dict[str, Any]:
    return {
        "pid": live.pid,
        "host": live.host,
        "started": live.started,
        "uptime": now - live.started if live.alive is not False else None,
        "last_seen": live.seen,
        "version": live.version,
        "http": live.url(),
        "alive": live.alive,
    }


def _folders(root: Path, now: float) -> dict[str, Any]:
    """Jobs by state and the running ones: the index's counts (kept per rule and state as rows
    change), with the queued jobs looked at in their ``process.log``; else every folder."""
    index = JobIndex.read(root)
    if index is None:
        rows = scan(root, Query())
        counts: dict[str, int] = {}
        for r in rows:
            counts[r.state] = counts.get(r.state, 0) + 1
    else:
        try:
            counts = {}
            for (_, state), n in index.counts().items():
                counts[state] = counts.get(state, 0) + n
            rows = scan_open(root, index)
        finally:
            index.close()
        for r in rows:  # queued in job.json; process.log may say it has started or ended
            if r.state != JobState.queued:
                counts[JobState.queued] -= 1
                counts[r.state] = counts.get(r.state, 0) + 1
        counts = {k: n for k, n in counts.items() if n > 0}
    return {
        "total": sum(counts.values()),
        "counts": dict(sorted(counts.items())),
        "running": [
            {
                "id": r.id,
                "rule": r.rule,
                "started": r.started,
                "age": None if r.started is None else now - r.started,
            }
            for r in rows
            if r.state == "running"
        ],
    }


def _why(e: BaseException) -> str:
    if isinstance(e, urllib.error.URLError) and not isinstance(e, urllib.error.HTTPError):
        return str(e.reason)
    if isinstance(e, TimeoutError | socket.timeout):
        return f"no answer within {HTTP_TIMEOUT:g}s"
    return str(e) or type(e).__name__


# -- text -----------------------------------------------------------------------------------------


def render(s: dict[str, Any]) -> str:
    """The text ``status`` prints for what ``gather`` found."""
    lines = [f"runner    {_runner_line(s)}"]
    r = s.get("runner") or {}
    if s["running"] and r.get("http"):
        lines.append(f"          {r['http']}")
    if s.get("note"):
        lines.append(f"note      {s['note']}")
    lines += _loaded_lines((s.get("status") or {}).get("workflow") or s.get("loaded"))
    live = s.get("status")
    if live is not None:
        lines += _live_lines(live)
    else:
        lines += _rule_lines(s.get("rules") or [])
        wf = s.get("workflow")
        if wf is not None:
            names = ", ".join(wf["rules"])
            lines.append(
                f"workflow  {wf['file']}: {len(wf['rules'])} rule(s) ({names}), none running"
            )
        lines += _folder_lines(s["jobs_dir"], s["folders"])
    lines += _learned_lines(s.get("preload"))
    return "\n".join(lines)


def _learned_lines(rec: dict[str, Any] | None) -> list[str]:
    """One line for what warm jobs start with beyond ``preload:``, one for what never."""
    if not rec:
        return []
    learned, refused = rec["learned"], rec["refused"]
    shown = ", ".join(learned[:8]) + (", ..." if len(learned) > 8 else "")
    lines = [
        f"preload   {len(learned)} module(s) learned from jobs" + (f": {shown}" if shown else "")
    ]
    if refused:
        why = "; ".join(f"{m}: {w}" for m, w in sorted(refused.items())[:3])
        more = ", ..." if len(refused) > 3 else ""
        lines.append(f"          {len(refused)} never preloaded ({why}{more})")
    return lines


def _loaded_lines(wf: dict[str, Any] | None) -> list[str]:
    """The workflow file's version the runner runs, and a refused reload's problems."""
    if not wf:
        return []
    n = wf.get("reloads") or 0
    lines = [
        f"loaded    workflow {wf.get('version')} at {_when(wf.get('loaded'))}"
        + (f" ({n} reload(s))" if n else "")
    ]
    refused = wf.get("refused")
    if refused:
        problems = refused.get("problems") or []
        lines.append(
            f"reload refused: {len(problems)} problem(s); still running {wf.get('version')}"
        )
        lines += [f"  {p}" for p in problems]
    return lines


def _runner_line(s: dict[str, Any]) -> str:
    r = s.get("runner")
    if r is None:
        return f"not running (no {LIVE_FILE} here: the last runner stopped cleanly, or none ran)"
    where = "" if r["host"] in ("", socket.gethostname()) else f" on {r['host']}"
    if not s["running"]:
        return (
            f"not running (last seen {_when(r['last_seen'])}; pid {r['pid']}{where} is gone, "
            f"it was started {_when(r['started'])})"
        )
    up = s["status"]["uptime"] if s.get("status") else r["uptime"]
    state = (s.get("status") or {}).get("status", "ok")
    doing = "running" if state == "ok" else f"running ({state})"
    return (
        f"{doing}  pid {r['pid']}{where}, up {_age(up)} (since {_when(r['started'])}), "
        f"meow_async {r['version']}"
    )


def _live_lines(st: dict[str, Any]) -> list[str]:
    lines = _rule_lines(st.get("rules") or [])
    ev = st.get("events") or {}
    by_rule = ", ".join(f"{k} {v}" for k, v in sorted((ev.get("by_rule") or {}).items()))
    lines.append(f"events    {ev.get('total', 0)}" + (f"  ({by_rule})" if by_rule else ""))
    j = st.get("jobs") or {}
    lines.append(
        f"jobs      {j.get('made', 0)} made: {j.get('running', 0)} running, {j.get('done', 0)} "
        f"done, {j.get('failed', 0)} failed, {j.get('skipped', 0)} skipped; "
        f"{j.get('retries', 0)} retries (max {st.get('max_jobs')} at once)"
    )
    q = st.get("queues") or {}
    lines.append("queues    " + (", ".join(f"{k} {v}" for k, v in q.items()) or "-"))
    kept = st.get("kept")
    if kept:
        counts = ", ".join(f"{n} {state}" for state, n in kept.items())
        lines.append(f"kept      {sum(kept.values())} in the jobs folder: {counts}")
    lines += _running_lines(st.get("running") or [])
    return lines


def _rule_lines(rules: list[dict[str, Any]]) -> list[str]:
    width = max((len(r["name"]) for r in rules), default=0)
    return [
        f"{'rules' if i == 0 else '':<9} {r['name']:<{width}}  {r['trigger']} -> "
        f"{r['recipe_kind']} recipe {r['recipe']}"
        + (
            f"; next {r['next_tick']} (in {_age(r.get('next_tick_in'))})"
            if r.get("next_tick")
            else ""
        )
        for i, r in enumerate(rules)
    ]


def _folder_lines(jobs_dir: str, f: dict[str, Any]) -> list[str]:
    counts = ", ".join(f"{n} {state}" for state, n in f["counts"].items())
    lines = [f"jobs      {f['total']} in {jobs_dir}" + (f": {counts}" if counts else "")]
    return lines + _running_lines(f["running"])


def _running_lines(running: list[dict[str, Any]]) -> list[str]:
    if not running:
        return ["running   none"]
    wid = max(len(j["id"]) for j in running)
    wrule = max(len(str(j["rule"])) for j in running)
    return [
        f"{'running' if i == 0 else '':<9} {j['id']:<{wid}}  {j['rule']:<{wrule}}  {_age(j['age'])}"
        for i, j in enumerate(running)
    ]


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _age(seconds: float | None) -> str:
    """``4.2s``, ``3m 07s``, ``2h 05m``, ``3d 04h``."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    s = int(seconds)
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


# -- the command ----------------------------------------------------------------------------------


def status_command(
    root_of: Callable[[Path], tuple[Path, WorkflowSpec | None]],
    where: Path | None,
    watch: str | None,
    as_json: bool,
) -> int:
    """``meow-async status``; ``root_of(where)`` gives the jobs folder and the workflow file's
    spec, if ``where`` is one."""
    every: float | None = None
    if watch is not None:
        try:
            every = float(watch)
        except ValueError:
            if where is not None:
                raise MeowError(f"--watch: expected seconds, got {watch!r}") from None
            where, every = Path(watch), DEFAULT_WATCH  # `status --watch workflow.yaml`
        if not (every > 0 and math.isfinite(every)):
            raise MeowError(f"--watch: expected seconds above 0, got {watch!r}")
    if every is None:
        s = gather(*root_of(where if where is not None else Path(".meow/jobs")))
        print(json.dumps(s) if as_json else render(s))
        return 0 if s["running"] else NOT_RUNNING
    clear = sys.stdout.isatty() and not as_json
    try:
        root, spec = root_of(where if where is not None else Path(".meow/jobs"))
        while True:
            s = gather(root, spec)
            if as_json:
                frame = json.dumps(s)
            else:
                stamp = time.strftime("%H:%M:%S")
                frame = f"{render(s)}\n(every {every:g}s, {stamp}; Ctrl+C ends)"
                frame = ("\x1b[H\x1b[2J" + frame) if clear else frame + "\n"
            print(frame, flush=True)
            time.sleep(every)
    except KeyboardInterrupt:
        return 0
