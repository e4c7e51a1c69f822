"""The workflow as the jobs took it: rules as boxes, the edges between them (from lineage) with
how many jobs went along each, as an inline SVG drawn here (no Graphviz, no script).

Rules are put in columns by their longest path from a rule nothing leads to, so a pipeline
reads left to right; a cycle (a rule whose outputs trigger itself, or two that feed each
other) is drawn as an edge back. Small by design: a workflow has tens of rules, not thousands.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

__all__ = ["graph_svg"]

BOX_W, BOX_H = 180, 46
GAP_X, GAP_Y = 90, 28
PAD = 16


def _columns(rules: Sequence[str], edges: Mapping[tuple[str, str], int]) -> dict[str, int]:
    """Each rule's column: the longest chain of edges leading to it (cycles broken)."""
    column = dict.fromkeys(rules, 0)
    forward = [(a, b) for a, b in edges if a != b and a in column and b in column]
    for _ in range(len(column)):  # Bellman-Ford-like relaxation, bounded: cycles stop here
        changed = False
        for a, b in forward:
            if column[b] < column[a] + 1 and column[a] + 1 < len(column):
                column[b] = column[a] + 1
                changed = True
        if not changed:
            break
    return column


def graph_svg(
    rules: Sequence[str],
    edges: Mapping[tuple[str, str], int],
    jobs: Mapping[str, int],
    failed: Mapping[str, int],
) -> str:
    """The SVG of ``rules`` and ``edges`` (jobs per edge); ``jobs`` and ``failed`` per rule
    go in its box. Every name is escaped."""
    names = list(rules) + sorted({r for e in edges for r in e} - set(rules))
    column = _columns(names, edges)
    rows: dict[int, int] = {}
    at: dict[str, tuple[int, int]] = {}
    for name in names:
        c = column[name]
        r = rows.get(c, 0)
        rows[c] = r + 1
        at[name] = (PAD + c * (BOX_W + GAP_X), PAD + r * (BOX_H + GAP_Y))
    width = PAD * 2 + (max(column.values(), default=0) + 1) * (BOX_W + GAP_X) - GAP_X
    height = PAD * 2 + max(rows.values(), default=1) * (BOX_H + GAP_Y) - GAP_Y
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="graph" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        'aria-label="rules and the edges jobs took">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" '
        'markerHeight="8" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/></marker>'
        "</defs>",
    ]
    for (a, b), n in sorted(edges.items()):
        if a not in at or b not in at:
            continue
        (ax, ay), (bx, by) = at[a], at[b]
        if a == b:  # a rule that triggers itself: a loop over its box
            x, y = ax + BOX_W // 2, ay
            path = f"M{x - 20},{y} C{x - 40},{y - 26} {x + 40},{y - 26} {x + 20},{y}"
            lx, ly = x, y - 20
        elif bx > ax:
            x1, y1, x2, y2 = ax + BOX_W, ay + BOX_H // 2, bx, by + BOX_H // 2
            mid = (x1 + x2) // 2
            path = f"M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}"
            lx, ly = mid, (y1 + y2) // 2 - 4
        else:  # back to an earlier column: under the boxes
            x1, y1, x2, y2 = ax + BOX_W // 2, ay + BOX_H, bx + BOX_W // 2, by + BOX_H
            low = max(y1, y2) + GAP_Y - 6
            path = f"M{x1},{y1} C{x1},{low} {x2},{low} {x2},{y2}"
            lx, ly = (x1 + x2) // 2, low - 4
        label = f"{n} job{'s' if n != 1 else ''}"
        out.append(
            f'<g class="edge"><title>{escape(a)} → {escape(b)}: {label}</title>'
            f'<path d="{path}" marker-end="url(#arrow)"/>'
            f'<text x="{lx}" y="{ly}" text-anchor="middle">{n}</text></g>'
        )
    for name in names:
        x, y = at[name]
        bad = failed.get(name, 0)
        state = " failed" if bad else ""
        label = name if len(name) <= 22 else name[:21] + "…"
        n = jobs.get(name, 0)
        count = f"{n} job{'s' if n != 1 else ''}" + (f", {bad} failed" if bad else "")
        out.append(
            f'<g class="rule{state}"><title>{escape(name)}: {count}</title>'
            f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6"/>'
            f'<text x="{x + 10}" y="{y + 19}" class="name">{escape(label)}</text>'
            f'<text x="{x + 10}" y="{y + 37}" class="count">{count}</text></g>'
        )
    out.append("</svg>")
    return "".join(out)
