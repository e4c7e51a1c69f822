"""``meow-async graph WORKFLOW``: the emergent workflow, drawn in Graphviz DOT or Mermaid.

Rules are the nodes. An edge from rule A to rule B is drawn solid, labelled with a count,
where B's jobs were triggered by files A's jobs declared (the lineage the job index recorded),
and dashed where only the file says so: one of A's declared ``outputs`` under the watched
folder (``{BASE}/...``) would match B's glob, but no job has taken that way yet.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

from ..model.index import JobIndex
from ..model.patterns import FilePattern, HttpPattern, NetworkPattern, Pattern, TimePattern
from ..model.templates import KEYWORDS
from ..model.workflow_file import WorkflowSpec

__all__ = ["FORMATS", "graph_command", "implied_edges"]

FORMATS = ("dot", "mermaid")
_KEY = re.compile(r"\{(" + "|".join(KEYWORDS) + r")\}")


def implied_edges(patterns: list[Pattern], base: str) -> set[tuple[str, str]]:
    """(A, B) where a path A's pattern declares among its outputs would trigger B: each
    keyword stands for a plain name (``{PREFIX}`` -> ``x``), and the path is matched against
    B's glob as the file monitor would."""
    files = [p for p in patterns if isinstance(p, FilePattern)]
    out: set[tuple[str, str]] = set()
    for a in patterns:
        for value in _values(a.outputs):
            rel = _under_base(value, base)
            if rel is None:
                continue
            sample = _KEY.sub("x", rel)
            out.update((a.name, b.name) for b in files if b.matches(sample))
    return out


def _values(outputs: Any) -> list[str]:
    out: list[str] = []
    for v in dict(outputs).values():
        out += [x for x in (v if isinstance(v, list | tuple) else [v]) if isinstance(x, str)]
    return out


def _under_base(value: str, base: str) -> str | None:
    if value.startswith("{BASE}/"):
        return value.removeprefix("{BASE}/")
    if value.startswith(base + os.sep):
        return os.path.relpath(value, base)
    return None  # relative to the job's folder, or elsewhere: no rule watches it


def _trigger(p: Pattern) -> str:
    if isinstance(p, FilePattern):
        return p.glob
    if isinstance(p, NetworkPattern):
        return f"TCP port {p.port or 'any'}"
    if isinstance(p, HttpPattern):
        return f"HTTP {p.route}"
    assert isinstance(p, TimePattern)  # noqa: S101 - the last kind
    return f"cron {p.cron}" if p.cron else f"every {p.every}"


def graph_command(spec: WorkflowSpec, fmt: str) -> int:
    base = str(spec.config.base_dir.absolute())
    recorded: dict[tuple[str, str], int] = {}
    index = JobIndex.read(spec.config.jobs_dir)
    if index is not None:
        try:
            recorded = index.rule_edges()
        finally:
            index.close()
    implied = implied_edges(spec.patterns, base) - set(recorded)
    nodes = {p.name: f"{p.name}\n{_trigger(p)} -> {p.recipe}" for p in spec.patterns}
    for a, b in recorded:  # a rule since removed from the file still has its history
        for name in (a, b):
            nodes.setdefault(name, f"{name}\n(no longer in the file)")
    text = (_dot if fmt == "dot" else _mermaid)(nodes, recorded, implied)
    sys.stdout.write(text)
    return 0


def _dot(
    nodes: dict[str, str], recorded: dict[tuple[str, str], int], implied: set[tuple[str, str]]
) -> str:
    def q(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

    lines = ["digraph workflow {", "  rankdir=LR;", "  node [shape=box];"]
    lines += [f"  {q(name)} [label={q(label)}];" for name, label in nodes.items()]
    lines += [
        f'  {q(a)} -> {q(b)} [label="{n}", penwidth={1 + min(n, 1000) ** 0.3:.1f}];'
        for (a, b), n in sorted(recorded.items())
    ]
    lines += [f"  {q(a)} -> {q(b)} [style=dashed];" for a, b in sorted(implied)]
    return "\n".join([*lines, "}"]) + "\n"


def _mermaid(
    nodes: dict[str, str], recorded: dict[tuple[str, str], int], implied: set[tuple[str, str]]
) -> str:
    ids = {name: f"r{i}" for i, name in enumerate(nodes)}

    def label(s: str) -> str:
        return s.replace('"', "#quot;").replace("\n", "<br/>")

    lines = ["flowchart LR"]
    lines += [f'  {ids[name]}["{label(text)}"]' for name, text in nodes.items()]
    lines += [f"  {ids[a]} -->|{n}| {ids[b]}" for (a, b), n in sorted(recorded.items())]
    lines += [f"  {ids[a]} -.-> {ids[b]}" for a, b in sorted(implied)]
    return "\n".join(lines) + "\n"
