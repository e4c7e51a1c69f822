"""Job state changes fanned out to the live view's viewers (Server-Sent Events).

The runner tells the feed each change it makes anyway (a job made, started, ended, queued
again); the feed writes it once as an SSE message and hands the same bytes to every viewer.
With no viewer a change costs one attribute test. Viewers are woken at most every ``FLUSH``
seconds, each writing what came meanwhile in one write: a burst of a thousand jobs makes tens
of writes per viewer, not thousands of task switches. Each viewer has a bounded queue: one that
does not read (a stalled browser, a slow link) is dropped when its queue is full, and its
browser reconnects and reloads the list; the runner never waits for a viewer.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from ..model.events import trigger_of
from .shown import shown

__all__ = ["FLUSH", "MAX_WAITING", "Feed", "Viewer", "change_of"]

#: Seconds between a change and its viewers' wake-up (changes meanwhile go in the same write).
FLUSH = 0.05
#: Messages a viewer may have waiting before it is dropped (a 1000-job burst is about 3000
#: changes: a browser reads them as fast as they come, a stalled one is let go).
MAX_WAITING = 4096


class Viewer:
    """One open event stream: the messages not written to it yet."""

    __slots__ = ("dropped", "job", "waiting", "wake")

    def __init__(self, job: str | None = None) -> None:
        self.waiting: deque[bytes] = deque()
        self.wake = asyncio.Event()
        self.dropped = False
        #: Only this job's changes (a job's page), or every job's.
        self.job = job


class Feed:
    """The viewers of one runner, and the sequence number of its last change."""

    def __init__(self, max_waiting: int = MAX_WAITING) -> None:
        self.viewers: set[Viewer] = set()
        self.max_waiting = max_waiting
        self.seq = 0
        #: Says which runner numbered the messages (``Last-Event-ID`` across a restart).
        self.boot = f"{time.time():.6f}"
        self.sent = 0  # messages handed to viewers, for the perf harness and tests
        self.dropped = 0  # viewers let go for not reading
        self._flush: asyncio.TimerHandle | None = None

    def publish(self, job_id: str, meta: Mapping[str, Any], state: str) -> None:
        """A job's state changed: one SSE message to each viewer (nothing without one)."""
        if not self.viewers:
            return
        self.seq += 1
        data = json.dumps(change_of(job_id, meta, state), separators=(",", ":"))
        message = f"id: {self.boot}-{self.seq}\nevent: job\ndata: {data}\n\n".encode()
        for viewer in tuple(self.viewers):
            if viewer.job is not None and viewer.job != job_id:
                continue
            if len(viewer.waiting) >= self.max_waiting:
                self.drop(viewer)
                continue
            viewer.waiting.append(message)
            self.sent += 1
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(FLUSH, self._wake)

    def _wake(self) -> None:
        self._flush = None
        for viewer in self.viewers:
            if viewer.waiting:
                viewer.wake.set()

    def join(self, job: str | None = None) -> Viewer:
        viewer = Viewer(job)
        self.viewers.add(viewer)
        return viewer

    def leave(self, viewer: Viewer) -> None:
        self.viewers.discard(viewer)

    def close(self) -> None:
        """The runner stops: every stream ends (browsers reconnect to the next run)."""
        for viewer in self.viewers:
            viewer.wake.set()

    def drop(self, viewer: Viewer) -> None:
        """Let a viewer go that does not keep up: its stream ends, its browser reconnects."""
        self.viewers.discard(viewer)
        viewer.dropped = True
        viewer.waiting.clear()
        viewer.wake.set()
        self.dropped += 1


def change_of(job_id: str, meta: Mapping[str, Any], state: str) -> dict[str, Any]:
    """What a viewer's row shows of a job (the job list's columns)."""
    event = meta.get("event")
    code = meta.get("exit_code")
    return {
        "id": job_id,
        "rule": shown(str(meta.get("rule") or "")),
        "state": state,
        "trigger": shown(trigger_of(event if isinstance(event, dict) else {})),
        "created": _num(meta.get("created")),
        "started": _num(meta.get("started")),
        "finished": _num(meta.get("finished")),
        "exit_code": code if type(code) is int else None,
    }


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None
