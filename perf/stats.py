"""Summaries of timing samples, in the report's style (min, median, mean, max, stdev)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def summary(samples: Sequence[float]) -> dict[str, float]:
    """Samples in seconds -> milliseconds."""
    ms = sorted(s * 1000 for s in samples)
    return {
        "n": len(ms),
        "min_ms": ms[0],
        "p50_ms": statistics.median(ms),
        "mean_ms": statistics.fmean(ms),
        "p99_ms": ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))],
        "max_ms": ms[-1],
        "stdev_ms": statistics.stdev(ms) if len(ms) > 1 else 0.0,
    }


def line(name: str, s: dict[str, float]) -> str:
    return (
        f"{name:<34} n={int(s['n']):<5} min {s['min_ms']:8.2f}  p50 {s['p50_ms']:8.2f}  "
        f"mean {s['mean_ms']:8.2f}  p99 {s['p99_ms']:8.2f}  max {s['max_ms']:8.2f} ms"
    )
