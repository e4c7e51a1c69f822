"""PNG plots on log scales, like the report's Figures 6-8, plus a latency distribution."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .report_tests import TITLES, X_NAMES
from .summaries import label, latencies_ms, total_summary

COLOURS = {
    ("meow_async", "asyncio"): "tab:blue",
    ("meow_async", "uvloop"): "tab:purple",
    ("floor", "asyncio"): "tab:green",
    ("floor", "uvloop"): "tab:olive",
    ("meow_base", "threads"): "tab:red",
}
STYLES = {"asyncio": "-", "uvloop": "--", "threads": "-"}


def _pyplot() -> Any:
    import matplotlib  # type: ignore[import-not-found, unused-ignore]

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]

    return plt


def network(points: list[dict[str, Any]], folder: Path) -> list[Path]:
    plt = _pyplot()
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for test in ("a", "b", "c"):
        senders = [
            s
            for s in ("process", "in-process")
            if any(p["test"] == test and p["sender"] == s for p in points)
        ]
        if not senders:
            continue
        fig, axes = plt.subplots(
            1, len(senders), figsize=(6.5 * len(senders), 5), squeeze=False, sharey=True
        )
        for ax, sender in zip(axes[0], senders, strict=True):
            _panel(ax, [p for p in points if p["test"] == test and p["sender"] == sender], test)
            ax.set_title(f"sender: {sender}")
        fig.suptitle(f"{TITLES[test]} (median, band: min-max; log-log)")
        fig.tight_layout()
        path = folder / f"network-{test}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    latency = _latency(plt, points, folder)
    if latency is not None:
        written.append(latency)
    return written


def _panel(ax: Any, recs: list[dict[str, Any]], test: str) -> None:
    keys = sorted({(p["impl"], p["loop"]) for p in recs})
    for impl, loop in keys:
        mine = sorted(
            (p for p in recs if (p["impl"], p["loop"]) == (impl, loop)), key=lambda p: p["x"]
        )
        xs, med, lo, hi = [], [], [], []
        missed = []
        for p in mine:
            s = total_summary(p)
            if s is None:
                missed.append(p["x"])
                continue
            xs.append(p["x"])
            med.append(s["p50_ms"])
            lo.append(s["min_ms"])
            hi.append(s["max_ms"])
        colour = COLOURS.get((impl, loop), "black")
        name = f"{impl} ({loop})"
        ax.plot(xs, med, STYLES.get(loop, "-"), marker="o", color=colour, label=name)
        ax.fill_between(xs, lo, hi, color=colour, alpha=0.12)
        for x in missed:
            ax.axvline(x, color=colour, alpha=0.4, linestyle=":")
        if missed:
            ax.plot([], [], ":", color=colour, label=f"{impl}: did not finish at dotted x")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(X_NAMES[test])
    ax.set_ylabel("total time until every event is queued (ms)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def _latency(plt: Any, points: list[dict[str, Any]], folder: Path) -> Path | None:
    paced = [p for p in points if p["test"] == "paced" and latencies_ms(p)]
    if not paced:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for p in paced:
        lat = sorted(max(v, 1e-3) for v in latencies_ms(p))
        frac = [(i + 1) / len(lat) for i in range(len(lat))]
        ax.plot(
            lat,
            frac,
            STYLES.get(p["loop"], "-"),
            color=COLOURS.get((p["impl"], p["loop"]), "black"),
            label=f"{label(p)}: {len(lat)} of {sum(r['n'] for r in p['rounds'])} arrived",
        )
    ax.axvline(2.0, color="grey", linestyle=":", label="2 ms target (p99)")
    ax.axhline(0.99, color="grey", linestyle="-.", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("sender closing the connection -> event in the queue (ms, log)")
    ax.set_ylabel("fraction of events")
    ax.set_title(TITLES["paced"])
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = folder / "network-latency.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
