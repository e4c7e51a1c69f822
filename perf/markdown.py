"""Markdown: tables like the report's Tables 1-4, comparisons with the floor and meow_base."""

from __future__ import annotations

from typing import Any

from .report_tests import TITLES, X_NAMES
from .summaries import (
    label,
    latency_summary,
    lost,
    median_ms,
    ratio,
    stalls,
    status,
    total_summary,
)


def ms(v: float | None) -> str:
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:,.0f} ms"
    if v >= 10:
        return f"{v:.1f} ms"
    return f"{v:.2f} ms"


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return [_row(head), _row(["---"] * len(head)), *(_row(r) for r in rows), ""]


def report_table(recs: list[dict[str, Any]], test: str) -> list[str]:
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
    return _table(head, rows)


def comparison_table(points: list[dict[str, Any]], test: str, sender: str) -> list[str]:
    recs = [p for p in points if p["test"] == test and p["sender"] == sender]
    xs = sorted({p["x"] for p in recs})
    impls = sorted({(p["impl"], p["loop"]) for p in recs}, key=_order)
    head = [X_NAMES[test], *(f"{i} ({loop})" for i, loop in impls)]
    ma = next((k for k in impls if k[0] == "meow_async"), None)
    same_floor = ("floor", ma[1]) if ma else None
    has_base = any(k[0] == "meow_base" for k in impls)
    head.append("meow_async / floor")
    if has_base:
        head += ["meow_async / meow_base", "meow_base lost / connects stalled"]
    rows = []
    for x in xs:
        at = {(p["impl"], p["loop"]): p for p in recs if p["x"] == x}
        med = {k: median_ms(v) for k, v in at.items()}
        cells = [str(x), *(_cell(at.get(k)) for k in impls)]
        m = med.get(ma) if ma else None
        cells.append(_x(ratio(m, med.get(same_floor)) if same_floor else None))
        if has_base:
            cells.append(_x(ratio(m, med.get(("meow_base", "threads")))))
            mb = at.get(("meow_base", "threads"))
            sent = 0 if mb is None else sum(r["n"] for r in mb["rounds"])
            cells.append("-" if mb is None else f"{lost(mb)} of {sent} / {stalls(mb)}")
        rows.append(cells)
    return _table(head, rows)


def _order(k: tuple[str, str]) -> tuple[int, str]:
    return ({"meow_async": 0, "floor": 1, "meow_base": 2}.get(k[0], 3), k[1])


def _cell(rec: dict[str, Any] | None) -> str:
    if rec is None:
        return "-"
    med = median_ms(rec)
    if med is None:
        return "did not finish" if not rec.get("error") else "failed"
    return ms(med) + (" *" if status(rec) else "")


def latency_table(points: list[dict[str, Any]]) -> list[str]:
    head = ["test", "variant", "events", "p50", "p99", "max"]
    rows = []
    for p in points:
        if p["sender"] != "process" or not (
            p["test"] == "paced" or (p["test"] == "a" and p["x"] == max_x(points, "a"))
        ):
            continue
        s = latency_summary(p)
        if s is None:
            rows.append([_latency_name(p), label(p), "0", "-", "-", status(p) or "-"])
            continue
        rows.append(
            [
                _latency_name(p),
                label(p),
                str(int(s["n"])),
                ms(s["p50_ms"]),
                ms(s["p99_ms"]),
                ms(s["max_ms"]),
            ]
        )
    return _table(head, rows)


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
            out += comparison_table(points, test, sender)
    out += ["### Per-event latency (sender closing the connection -> event in the queue)", ""]
    out += latency_table(points)
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
                out += report_table(sorted(recs, key=lambda p: p["x"]), test)
    return out


def files_section(files: dict[str, Any]) -> list[str]:
    out = ["## Files", ""]
    rows = [
        [
            f"{r['step_ms']} / {r['debounce_ms']}",
            f"{ms(r['change_to_event']['p50_ms'])} / {ms(r['change_to_event']['p99_ms'])}",
            f"{ms(r['change_to_job_start']['p50_ms'])} / {ms(r['change_to_job_start']['p99_ms'])}",
        ]
        for r in files["latency"]
    ]
    out += _table(
        [
            "watcher step / debounce (ms)",
            "change -> event p50 / p99",
            "change -> job start p50 / p99",
        ],
        rows,
    )
    rows = [
        [
            str(b["n"]),
            ms(b["write_s"] * 1000),
            ms(b["events_s"] * 1000),
            ms(b["jobs_s"] * 1000),
            ms(b["floor_s"] * 1000),
            ms(b["overhead_per_job_ms"]),
        ]
        for b in files["bursts"]
    ]
    out += _table(
        [
            "files",
            "written in",
            "-> all events",
            "-> all jobs done",
            "same subprocesses",
            "overhead/job",
        ],
        rows,
    )
    return out


def jobs_section(jobs: list[dict[str, Any]]) -> list[str]:
    rows = [
        [
            j["kind"],
            str(j["n"]),
            f"{j['done']}",
            ms(j["runner_s"] * 1000),
            ms(j["floor_s"] * 1000),
            ms(j["overhead_ms_per_job"]),
            ms(j["runner_cpu_ms_per_job"]),
            ms(j["floor_cpu_ms_per_job"]),
        ]
        for j in jobs
    ]
    head = ["recipe", "events", "done", "runner", "same subprocesses direct", "overhead/job"]
    head += ["runner CPU/job", "direct CPU/job"]
    return ["## End to end: network events -> finished jobs", "", *_table(head, rows)]


def memory_section(mem: list[dict[str, Any]]) -> list[str]:
    rows = []
    for m in mem:
        what = (
            f"{m['held_by_server']} idle connections"
            if m["kind"] == "idle"
            else f"{m['events']}/{m['messages']} x {m['message_bytes'] // 1024} KiB, "
            f"{m['concurrency']} at once"
        )
        rows.append(
            [
                m["kind"],
                m["mode"],
                what,
                f"{m['baseline_rss_mb']:.1f} MB",
                f"{m['peak_rss_mb']:.1f} MB",
                f"+{m['growth_mb']:.1f} MB",
            ]
        )
    head = ["load", "process", "what", "RSS listening", "peak RSS", "growth"]
    return ["## Memory (peak RSS)", "", *_table(head, rows)]


def chunks_section(chunks: list[dict[str, Any]]) -> list[str]:
    rows = [
        [
            f"{c['n']} x {c['size']:,} B",
            f"{c['chunk_size']:,}",
            ms(c["total"]["p50_ms"]),
            ms(c["total"]["p50_ms"] / c["n"]),
        ]
        for c in chunks
    ]
    return ["## Chunk size", "", *_table(["messages", "chunk", "median", "per message"], rows)]


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    out = [
        "# meow_async benchmark results",
        "",
        f"{m['when']}: {m['cpus']} CPUs ({m['cpu']}), {m['memory_gb']} GB, "
        f"{m['implementation']} {m['python']}, {m['platform']}, loop {m['loop']}. "
        f"Scratch: {m['scratch'].get('path')} on {m['scratch'].get('device', '?')} "
        f"({m['scratch'].get('fs', '?')}). meow_async {m['versions'].get('meow-async')}, "
        f"meow_base {m['versions'].get('meow_base')}; git {m['git'].get('commit', '')[:10]}"
        + (" with local changes to src" if m["git"].get("src_changed") else "")
        + ".",
        "",
    ]
    if "network" in results:
        out += network_section(results["network"])
    if "files" in results:
        out += files_section(results["files"])
    if "jobs" in results:
        out += jobs_section(results["jobs"])
    if "memory" in results:
        out += memory_section(results["memory"])
    if "chunks" in results:
        out += chunks_section(results["chunks"])
    return "\n".join(out) + "\n"
