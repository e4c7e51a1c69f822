"""Markdown for the network suite: comparisons, latency, and the report's Tables 1-4 layout."""

from __future__ import annotations

from typing import Any

from .report_tests import TITLES, X_NAMES
from .summaries import (
    cut_off,
    label,
    latency_summary,
    lost,
    median_ms,
    ratio,
    stalls,
    status,
    total_summary,
)
from .tables import ms, table, times


def reporttable(recs: list[dict[str, Any]], test: str) -> list[str]:
    """One variant's rows in the report's layout: total and per event, min/max/mean, stdev."""
    head = [X_NAMES[test], "rounds", "min total", "per event", "median total", "per event"]
    head += ["mean total", "per event", "max total", "per event", "stdev", "notes"]
    rows = []
    for r in recs:
        s = total_summary(r)
        n = r["n"]
        done = f"{len(r['rounds']) if s is None else int(s['n'])}/{r['repeats']}"
        if s is None:
            rows.append([str(r["x"]), done, *(["-"] * 9), status(r) or "-"])
            continue
        cells = [str(r["x"]), done]
        for k in ("min_ms", "p50_ms", "mean_ms", "max_ms"):
            cells += [ms(s[k]), ms(s[k] / n)]
        cells += [ms(s["stdev_ms"]), status(r) or ""]
        rows.append(cells)
    return table(head, rows)


def comparisontable(points: list[dict[str, Any]], test: str, sender: str) -> list[str]:
    recs = [p for p in points if p["test"] == test and p["sender"] == sender]
    xs = sorted({p["x"] for p in recs})
    impls = sorted({(p["impl"], p["loop"]) for p in recs}, key=_order)
    head = [X_NAMES[test], *(f"{i} ({loop})" for i, loop in impls)]
    mas = [k for k in impls if k[0] == "meow_async"]
    ma = mas[0] if mas else None
    has_base = any(k[0] == "meow_base" for k in impls)
    head += [f"meow_async / floor ({k[1]})" for k in mas]
    if has_base:
        head += ["meow_async / meow_base", "meow_base lost / connects stalled"]
    rows = []
    for x in xs:
        at = {(p["impl"], p["loop"]): p for p in recs if p["x"] == x}
        med = {k: median_ms(v) for k, v in at.items()}
        cells = [str(x), *(_cell(at.get(k)) for k in impls)]
        cells += [times(ratio(med.get(k), med.get(("floor", k[1])))) for k in mas]
        m = med.get(ma) if ma else None
        if has_base:
            cells.append(times(ratio(m, med.get(("meow_base", "threads")))))
            mb = at.get(("meow_base", "threads"))
            sent = 0 if mb is None else sum(r["n"] for r in mb["rounds"])
            cells.append("-" if mb is None else f"{lost(mb)} of {sent} / {stalls(mb)}")
        rows.append(cells)
    return table(head, rows)


def _order(k: tuple[str, str]) -> tuple[int, str]:
    return ({"meow_async": 0, "floor": 1, "meow_base": 2}.get(k[0], 3), k[1])


def _cell(rec: dict[str, Any] | None) -> str:
    if rec is None:
        return "-"
    med = median_ms(rec)
    if med is None:
        if rec.get("error"):
            return "failed"
        return "cut off by the time cap" if cut_off(rec) else "no complete round"
    return ms(med) + (" *" if status(rec) else "")


def latencytable(points: list[dict[str, Any]]) -> list[str]:
    head = ["test", "variant", "events (of sent)", "p50", "p99", "max"]
    rows = []
    for p in points:
        if p["sender"] != "process" or not (
            p["test"] == "paced" or (p["test"] == "a" and p["x"] == max_x(points, "a"))
        ):
            continue
        s = latency_summary(p)
        sent = sum(r["n"] for r in p["rounds"])
        if s is None:
            rows.append([_latency_name(p), label(p), f"0 ({sent})", "-", "-", status(p) or "-"])
            continue
        rows.append(
            [
                _latency_name(p),
                label(p),
                f"{int(s['n'])} ({sent})",
                ms(s["p50_ms"]),
                ms(s["p99_ms"]),
                ms(s["max_ms"]),
            ]
        )
    return table(head, rows)


def max_x(points: list[dict[str, Any]], test: str) -> int:
    return max((p["x"] for p in points if p["test"] == test), default=0)


def _latency_name(p: dict[str, Any]) -> str:
    if p["test"] == "paced":
        return f"paced, {p['n']} at 1 per ms"
    return f"burst (test a), {p['n']}"


def network_section(net: dict[str, Any]) -> list[str]:
    points = net["points"]
    st = net["settings"]
    out = [
        "## Network: the report's tests (section 4.1)",
        "",
        f"Each message is one short-lived TCP connection ({st['payload_bytes']} bytes), "
        f"{st['concurrency']} connections in flight; {st['repeats']} rounds per point; "
        "timed from just before the first connect to the last event reaching the queue. "
        "Medians; `*` marks a point with incomplete rounds (see the detailed tables).",
        "",
    ]
    for test in ("a", "b", "c"):
        for sender in ("process", "in-process"):
            if not any(p["test"] == test and p["sender"] == sender for p in points):
                continue
            out += [f"### {TITLES[test]} — {sender} sender", ""]
            out += comparisontable(points, test, sender)
    out += ["### Per-event latency (sender closing the connection -> event in the queue)", ""]
    out += latencytable(points)
    out += ["### Detailed tables (the report's layout)", ""]
    variants = sorted({(p["impl"], p["loop"], p["sender"]) for p in points})
    for test in ("a", "b", "c"):
        for impl, loop, sender in variants:
            recs = [
                p
                for p in points
                if p["test"] == test and (p["impl"], p["loop"], p["sender"]) == (impl, loop, sender)
            ]
            if recs:
                out += [f"#### {TITLES[test]}: {label(recs[0])}", ""]
                out += reporttable(sorted(recs, key=lambda p: p["x"]), test)
    return out
