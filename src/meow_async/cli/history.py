"""``meow-async reindex`` and ``meow-async prune``: the job index made again from the folders,
and old finished jobs removed by hand (what ``runner.retention`` does in the background)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..exceptions import MeowError
from ..model.index import INDEX_FILE, JobIndex
from ..model.jobs import FINISHED
from ..model.retention import Pruned, describe, duration, prune_slice, would_prune
from ..runner.live import read_live

__all__ = ["add_prune_arguments", "prune_command", "reindex_command"]


def reindex_command(root: Path) -> int:
    """Make the index again from every job folder (the folders are the record)."""
    live = read_live(root)
    if live is not None and live.alive is not False:
        raise MeowError(
            f"a runner runs on {root} (pid {live.pid}): it keeps the index up to date; stop it "
            "first to make the index again"
        )
    if not root.is_dir():
        raise MeowError(f"no jobs folder at {root}")
    t0 = time.monotonic()
    n = JobIndex.rebuild(root)
    print(f"indexed {n} job(s) in {root} ({root / INDEX_FILE}) in {time.monotonic() - t0:.2f}s")
    return 0


def add_prune_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--older-than",
        required=True,
        metavar="AGE",
        type=_age,
        help="remove finished jobs that ended longer ago than AGE (30d, 12h, 2w, 1h30m)",
    )
    p.add_argument(
        "--state",
        action="append",
        choices=sorted(s.value for s in FINISHED),
        help="only jobs in this state (again for several; default: done, failed and skipped)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="say what would be removed, remove nothing"
    )


def _age(text: str) -> float:
    seconds = duration(text)
    if seconds is None or seconds <= 0:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 30d, 12h, 2w or 1h30m, got {text!r}"
        )
    return seconds


def prune_command(root: Path, args: argparse.Namespace) -> int:
    """Remove finished jobs older than ``--older-than`` (folder and index row), a slice at a
    time, so a runner on the same folder goes on meanwhile."""
    if not root.is_dir():
        raise MeowError(f"no jobs folder at {root}")
    states = args.state or sorted(s.value for s in FINISHED)
    keep = dict.fromkeys(states, args.older_than)
    index, opened = JobIndex.open(root, repair=read_live(root) is None)
    try:
        if opened.rebuilt:
            print(f"note: the job index was made again first ({opened.rebuilt})")
        now = time.time()
        if args.dry_run:
            p = would_prune(index, keep, now=now)
            print(f"would remove {p.total} job(s): {describe(p)}{_span(p.oldest, p.newest)}")
            return 0
        total = Pruned()
        while True:  # a slice at a time, until one removes nothing
            before = total.total
            prune_slice(index, keep, now=now, into=total)
            if total.total == before:
                break
    finally:
        index.close()
    print(f"removed {total.total} job(s): {describe(total)}{_span(total.oldest, total.newest)}")
    return 0


def _span(oldest: float | None, newest: float | None) -> str:
    if oldest is None or newest is None:
        return ""
    fmt = "%Y-%m-%d %H:%M"
    return (
        f" (made {time.strftime(fmt, time.localtime(oldest))} to "
        f"{time.strftime(fmt, time.localtime(newest))})"
    )
