"""Markdown: every suite's tables in one document (``--markdown``)."""

from __future__ import annotations

from typing import Any

from .network_tables import network_section
from .tables import ms, table


def _watcher(r: dict[str, Any]) -> str:
    if r.get("watcher", "watchfiles") == "inotify":
        return "inotify (default)"
    return f"watchfiles {r['step_ms']} / {r['debounce_ms']}"


def files_section(files: dict[str, Any]) -> list[str]:
    out = ["## Files", ""]
    rows = [
        [
            _watcher(r),
            f"{ms(r['change_to_event']['p50_ms'])} / {ms(r['change_to_event']['p99_ms'])}",
            f"{ms(r['change_to_job_start']['p50_ms'])} / {ms(r['change_to_job_start']['p99_ms'])}",
            f"{ms(r['change_to_job_code']['p50_ms'])} / {ms(r['change_to_job_code']['p99_ms'])}"
            if "change_to_job_code" in r
            else "-",
        ]
        for r in files["latency"]
    ]
    out += table(
        [
            "watcher (step / debounce ms)",
            "closed -> event p50 / p99",
            "closed -> job start p50 / p99",
            "closed -> its code p50 / p99",
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
    out += table(
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
    rows = [
        [
            st["kind"],
            str(st["n"]),
            ms(st["jobs_s"] * 1000),
            ms(st["spawn_jobs_s"] * 1000),
            ms(st["floor_s"] * 1000),
            f"{st['ratio']:.3f}x",
            f"{st['spawn_ratio']:.2f}x",
            ms(st["first_job_start_ms"]),
            ms(st["spawn_first_job_start_ms"]),
        ]
        for st in files.get("startup", [])
    ]
    if rows:
        head = ["jobs", "files", "warm: all done", "spawned: all done", "direct spawn"]
        head += ["warm / direct", "spawned / direct", "first job (warm)", "first job (spawned)"]
        out += table(head, rows)
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
    return ["## End to end: network events -> finished jobs", "", *table(head, rows)]


def _tls_rows(m: dict[str, Any]) -> list[list[str]]:
    """A row per wave of idle TLS connections, or per round of stalled handshakes."""
    base = f"{m['baseline_rss_mb']:.1f} MB"
    rows = []
    for w in m.get("waves", []):
        what = (
            f"wave {w['wave']}: {w['held_by_server']}/{w['connections']} TLS connections "
            f"held idle, {w['kb_per_connection']:.0f} kB each (RSS at the wave's start "
            f"{w['start_rss_mb']:.1f} MB); all gone {w['gone_s']:.1f} s after they left: "
            f"{w['rss_when_gone_mb']:.1f} MB, then {w['rss_settled_mb']:.1f} MB"
        )
        if w["left_on_server"]:
            what += f"; {w['left_on_server']} still held by the server"
        rows.append(
            [
                "tls idle",
                m["mode"],
                what,
                base,
                f"{w['peak_rss_mb']:.1f} MB",
                f"+{w['peak_rss_mb'] - m['baseline_rss_mb']:.1f} MB",
            ]
        )
    shake = m.get("settings", {}).get("handshake_timeout")
    for r in m.get("rounds", []):
        what = (
            f"round {r['round']}: {r['connected']} connections never sending a ClientHello "
            f"(handshake_timeout {shake} s, default caps; at most {r['most_held']} held), "
            f"all closed in {r['closed_s']:.1f} s; RSS after {r['rss_after_mb']:.1f} MB"
        )
        if r["left_on_server"] or r["open_when_leaving"]:
            what += (
                f"; {r['left_on_server']} still held by the server, "
                f"{r['open_when_leaving']} open at the client"
            )
        peak = f"{r['peak_rss_mb']:.1f} MB" + ("" if r["peak_exact"] else " (sampled)")
        rows.append(["tls stalled", m["mode"], what, base, peak, f"+{r['growth_mb']:.1f} MB"])
    if "rss_after_trim_mb" in m:
        last = "wave" if m.get("waves") else "round"
        what = (
            f"diagnostic, after the last {last}: a full gc ({m['gc_found']} objects) -> RSS "
            f"{m['rss_after_gc_mb']:.1f} MB; then glibc malloc_trim -> "
            f"{m['rss_after_trim_mb']:.1f} MB"
        )
        load = "tls idle" if m.get("waves") else "tls stalled"
        rows.append([load, m["mode"], what, base, "-", "-"])
    return rows


def memory_section(mem: list[dict[str, Any]]) -> list[str]:
    rows = []
    for m in mem:
        if m["kind"].startswith("tls-"):
            rows += _tls_rows(m)
            continue
        if m["kind"] == "flood":
            what = (
                f"{m['events']}/{m['messages']} messages x {m['message_bytes'] // 1024} KiB, "
                f"{m['concurrency']} at once"
            )
        else:
            each = m.get("bytes_each", 0)
            what = f"{m['held_by_server']} connections held open" + (
                f", {each // 1024} KiB sent on each" if each else ", idle"
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
    return ["## Memory (peak RSS)", "", *table(head, rows)]


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
    return ["## Chunk size", "", *table(["messages", "chunk", "median", "per message"], rows)]


def listing_section(r: dict[str, Any]) -> list[str]:
    rows = [
        [
            f"`{c['command']}`",
            ms(c["median_s"] * 1000),
            f"{ms(c['min_s'] * 1000)} - {ms(c['max_s'] * 1000)}",
            ms(c["cpu_s"] * 1000),
            f"{c['lines']:,}",
        ]
        for c in r["commands"]
    ]
    head = ["command", "median", "min - max", "CPU (median)", "lines out"]
    return [f"## Listing {r['n']:,} jobs", "", *table(head, rows)]


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
    if "warm" in results:
        from .warm import section

        out += section(results["warm"])
    if "memory" in results:
        out += memory_section(results["memory"])
    if "chunks" in results:
        out += chunks_section(results["chunks"])
    if "listing" in results:
        out += listing_section(results["listing"])
    if "startup" in results:
        from .startup import table

        out += ["## Start-up of the quick commands", "", *table(results["startup"]), ""]
    return "\n".join(out) + "\n"
