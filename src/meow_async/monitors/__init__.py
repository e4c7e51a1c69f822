"""Monitors watch for triggers and put events on the runner's queue.

A runner makes one monitor of each kind in :data:`KINDS`, in order (a later one may use an
earlier one: the HTTP monitor accepts requests through the network monitor's spool and
journal). Each serves the patterns of its kind and sits idle without them, so patterns of any
kind can be added while the runner runs. A new kind of trigger is a module under monitors/ and
one entry in :data:`KINDS`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import asyncio

    from ..model.events import Event
    from .files.monitor import FileMonitor
    from .http import HttpMonitor
    from .network import NetworkMonitor
    from .time import TimeMonitor

__all__ = ["KINDS", "FileMonitor", "HttpMonitor", "Monitor", "NetworkMonitor", "TimeMonitor"]


class Monitor(Protocol):
    """**Protocol:** runs until ``stop`` is set, putting events on ``events``.

    A full queue makes ``put`` wait: that is the back-pressure, never a reason to drop.
    Optional methods the runner calls when a monitor has them: ``check()`` (patterns that
    cannot work together: raise at once), ``bind()`` (take ports before anything starts: a
    port in use is an error then), ``ports()`` (rule name -> port, once bound), ``active()``
    (whether it has anything to watch now: ``/healthz`` calls one without ``idle``).
    """

    name: str
    #: Set once the monitor sees every trigger its rules need (e.g. inotify watches are live).
    ready: asyncio.Event

    async def run(self, events: asyncio.Queue[Event], stop: asyncio.Event) -> None: ...


def _files(runner: Any) -> Monitor:
    from .files.monitor import FileMonitor

    cfg = runner.config
    return FileMonitor(
        cfg.base_dir,
        runner.workflow,
        ignore=[runner.jobs_dir, runner.spool_dir],
        watcher=cfg.file_watcher,
        step_ms=cfg.watch_step_ms,
        debounce_ms=cfg.watch_debounce_ms,
        on_watch=runner.watermark.watch_started,
        filtering=runner.filtering,
        poll_interval=cfg.poll_interval,
        poll_settle=cfg.polled_settle,
        poll_full_interval=cfg.poll_full_interval,
        # The runner's own state, like the spool: each runner needs its own.
        poll_index=runner.spool_dir / "poll-index.sqlite",
    )


def _network(runner: Any) -> Monitor:
    from .network import NetworkMonitor

    cfg = runner.config
    return NetworkMonitor(
        runner.workflow,
        runner.spool_dir,
        base_dir=cfg.base_dir,
        chunk_size=cfg.chunk_size,
        durable=cfg.durable,
        filtering=runner.filtering,
        filter_max_body=cfg.filter_max_body,
        max_backlog=cfg.max_backlog,
        max_backlog_bytes=cfg.max_backlog_bytes,
    )


def _http(runner: Any) -> Monitor:
    from .http import HttpMonitor

    return HttpMonitor(runner.workflow, runner.monitor("network"))


def _time(runner: Any) -> Monitor:
    from .time import STATE_FILE, TimeMonitor

    cfg = runner.config
    return TimeMonitor(
        runner.workflow,
        runner.jobs_dir / STATE_FILE,
        base_dir=cfg.base_dir,
        durable=cfg.durable,
        filtering=runner.filtering,
    )


#: The monitors a runner makes, by name, each from the runner (its workflow and settings).
KINDS: dict[str, Callable[[Any], Monitor]] = {
    "files": _files,
    "network": _network,
    "http": _http,
    "time": _time,
}

#: Each monitor's module is imported on first use (PEP 562): a module under monitors/ (the
#: CLI's, a conductor's) does not load aiohttp and the others.
_WHERE = {
    "FileMonitor": ".files.monitor",
    "HttpMonitor": ".http",
    "NetworkMonitor": ".network",
    "TimeMonitor": ".time",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name], __name__), name)
    globals()[name] = value
    return value
