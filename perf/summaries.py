"""Reading a network point's rounds: totals, per event, latency, losses, and how it ended."""

from __future__ import annotations

import statistics
from typing import Any

from .stats import summary


def label(rec: dict[str, Any]) -> str:
    """e.g. ``meow_async (asyncio, process sender)``."""
    return f"{rec['impl']} ({rec['loop']}, {rec['sender']} sender)"


def totals_s(rec: dict[str, Any]) -> list[float]:
    """Total times of the rounds in which every message arrived."""
    return [r["total_s"] for r in rec["rounds"] if r["total_s"] is not None]


def total_summary(rec: dict[str, Any]) -> dict[str, float] | None:
    t = totals_s(rec)
    return summary(t) if t else None


def median_ms(rec: dict[str, Any]) -> float | None:
    t = totals_s(rec)
    return statistics.median(t) * 1000 if t else None


def latencies_ms(rec: dict[str, Any]) -> list[float]:
    return [v for r in rec["rounds"] for v in r["latency_ms"]]


def latency_summary(rec: dict[str, Any]) -> dict[str, float] | None:
    lat = latencies_ms(rec)
    return summary([v / 1000 for v in lat]) if lat else None


def lost(rec: dict[str, Any]) -> int:
    """Messages that never arrived although their sender had finished: a round cut off by
    the time cap (sender still sending) loses nothing, it just did not finish."""
    return sum(r["n"] - r["delivered"] for r in rec["rounds"] if _gave_up_after_sending(r))


def cut_off(rec: dict[str, Any]) -> bool:
    """Whether the harness's time cap ended the point (a round or the whole process)."""
    return bool(rec.get("killed_at_cap")) or any(r.get("timed_out") for r in rec["rounds"])


def _gave_up_after_sending(r: dict[str, Any]) -> bool:
    return r["total_s"] is None and not r.get("timed_out")


def stalls(rec: dict[str, Any]) -> int:
    return sum(r["stalls"] for r in rec["rounds"])


def max_connect_s(rec: dict[str, Any]) -> float:
    return max((r["max_connect_s"] for r in rec["rounds"]), default=0.0)


def status(rec: dict[str, Any]) -> str:
    """'' when every round delivered every message, else what happened, in words."""
    if rec.get("error"):
        return f"failed: {rec['error']}"
    want = rec["repeats"]
    done = len(totals_s(rec))
    parts = []
    if done < want:
        parts.append(f"{done} of {want} rounds complete")
    gave_up = [r for r in rec["rounds"] if _gave_up_after_sending(r)]
    if gave_up:
        n_lost = lost(rec)
        parts.append(
            f"{n_lost} message(s) never arrived in {len(gave_up)} round(s) whose sender "
            "had finished"
        )
    if cut_off(rec) or (done < want and not gave_up):
        parts.append(f"cut off by the harness's {rec['cap_s']:.0f} s time cap")
    return "; ".join(parts)


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None
