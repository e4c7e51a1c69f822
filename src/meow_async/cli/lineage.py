"""``meow-async jobs --lineage JOB_OR_PATH``: from the raw file to the results, as a tree.

Each job's ``caused_by`` (the earlier job that declared its trigger among its outputs) is in
the job index; the chain up to the root event is one lookup per step, and the jobs below are
found by the index's ``caused_by`` column: no job folder is read, however many there are.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from ..exceptions import MeowError
from ..model.index import JobIndex

__all__ = ["lineage_command"]

#: Jobs shown at most below one job (a sweep of thousands is summarised).
_FAN = 50


def lineage_command(root: Path, what: str, base: Path | None, *, as_json: bool = False) -> int:
    index = JobIndex.read(root)
    if index is None:
        raise MeowError(f"no job index in {root}: lineage is recorded there (run a runner first)")
    try:
        job, triggered = _resolve(index, what, base)
        top = job
        seen = {job}
        while (up := index.cause_of(top)) is not None and up not in seen:
            seen.add(up)
            top = up
        # A raw file that triggered several jobs (a sweep, or one per event): all of them.
        tops, more = [top], 0
        if triggered is not None and top == job:
            tops, total = index.roots_triggered(triggered, what, _FAN)
            tops = tops if job in tops else [*tops[: _FAN - 1], job]
            more = max(0, total - len(tops))
        done: set[str] = set()
        trees = [_tree(index, t, done, base) for t in tops]
    finally:
        index.close()
    tree = next(t for t in trees if t["id"] == top)  # the asked job's
    if as_json:
        doc = {"job": job, "root": tree, "roots": trees, "more_roots": more}
        sys.stdout.write(json.dumps(doc) + "\n")
        return 0
    lines = [f"{tree['trigger']}  (the root event)"]
    for t in trees:
        _render(t, job, "", lines)
    if more:
        lines.append(f"... and {more} more jobs this file triggered")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _resolve(index: JobIndex, what: str, base: Path | None) -> tuple[str, list[str] | None]:
    """A job id (or a unique start of one); else a file: the newest job it triggered (and
    the paths it was looked up by), or failing that the job that declared it among its
    outputs (a result)."""
    found = index.find(what)
    exact = [i for i, _ in found if i == what]
    if exact or len(found) == 1:
        return (exact[0] if exact else found[0][0]), None
    if len(found) > 1:
        raise MeowError(f"{what!r} is the start of {len(found)} job ids: give more of it")
    paths = {os.path.abspath(what), os.path.realpath(what)}
    if base is not None and not os.path.isabs(what):
        paths.add(os.path.normpath(os.path.join(base.absolute(), what)))
    job = index.newest_triggered(sorted(paths), what)
    if job is not None:
        return job, sorted(paths)
    job = index.newest_declaring(sorted(paths))
    if job is None:
        raise MeowError(f"no job with id {what!r}, and no job was triggered by or made {what!r}")
    return job, None


def _tree(index: JobIndex, job: str, seen: set[str], base: Path | None) -> dict[str, Any]:
    seen.add(job)
    row = index.lineage_row(job) or {"id": job, "rule": "?", "state": "?", "trigger": "?"}
    if base is not None:
        top = str(base.absolute())
        row["outputs"] = [
            os.path.relpath(p, top) if p.startswith(top + os.sep) else p
            for p in row.get("outputs") or []
        ]
    below = [r.id for r in index.downstream(job) if r.id not in seen]
    row["caused"] = [_tree(index, i, seen, base) for i in below[:_FAN]]
    row["more"] = max(0, len(below) - _FAN)
    return row


def _render(node: dict[str, Any], asked: str, indent: str, lines: list[str]) -> None:
    mark = "  <- asked" if node["id"] == asked else ""
    made = node.get("outputs") or []
    lines.append(
        f"{indent}└─ {node['id']}  {node['rule']}  {node['state']}"
        + (f"  -> {', '.join(made)}" if made else "")
        + mark
    )
    for child in node["caused"]:
        _render(child, asked, indent + "   ", lines)
    if node["more"]:
        lines.append(f"{indent}   ... and {node['more']} more")
