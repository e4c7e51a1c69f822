"""Runner settings: one frozen object, checked when made."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ._checks import check_count, check_flag, check_host, check_port, check_seconds
from .exceptions import ConfigError
from .monitors.files import DEFAULT_DEBOUNCE_MS, DEFAULT_STEP_MS, WATCHERS, WatcherName
from .monitors.network import DEFAULT_CHUNK_SIZE

__all__ = ["LoopName", "RunnerConfig"]

LoopName = Literal["auto", "asyncio", "uvloop"]


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True, slots=True, kw_only=True)
class RunnerConfig:
    """Where the runner watches and writes, and how much it does at once.

    Attributes:
        base_dir: the watched folder; file patterns' globs are relative to it.
        jobs_dir: where job directories go (ignored by the file monitor if inside base_dir).
        spool_dir: where received network messages are written (also ignored); default:
            ``spool`` beside ``jobs_dir``. Each runner needs its own.
        max_jobs: jobs running at once (default: the CPUs this process may use).
        queue_size: events waiting for a handler before monitors are made to wait.
        shutdown_timeout: seconds running jobs get to finish on a graceful stop.
        kill_timeout: seconds between SIGTERM and SIGKILL for a job being stopped.
        file_watcher: ``auto`` (inotify on Linux, else watchfiles), ``inotify`` or
            ``watchfiles`` (the portable backend, which batches instead of waiting for a
            writer's close; see docs/concepts.md).
        watch_step_ms / watch_debounce_ms: watchfiles' batching, for that backend only.
        chunk_size: bytes read from a network connection at a time.
        durable: fsync spool files (before any acknowledgement), the spool journal and job
            metadata, so they survive a machine crash too, not only the runner's.
        http: ``{"host": "127.0.0.1", "port": 9464}`` serves ``/healthz``, ``/metrics`` and
            ``/jobs`` there (off by default; port 0: any free port, see ``Runner.http_port``).
    """

    base_dir: Path = Path()
    jobs_dir: Path = Path(".meow/jobs")
    spool_dir: Path | None = None
    max_jobs: int = field(default_factory=_cpus)
    queue_size: int = 1000
    handlers: int = 2
    shutdown_timeout: float = 10.0
    kill_timeout: float = 5.0
    file_watcher: WatcherName = "auto"
    watch_step_ms: int = DEFAULT_STEP_MS
    watch_debounce_ms: int = DEFAULT_DEBOUNCE_MS
    chunk_size: int = DEFAULT_CHUNK_SIZE
    durable: bool = False
    http: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.spool_dir is None and isinstance(self.jobs_dir, str | os.PathLike):
            object.__setattr__(self, "spool_dir", Path(self.jobs_dir).parent / "spool")
        for name in ("base_dir", "jobs_dir", "spool_dir"):
            value = getattr(self, name)
            if not isinstance(value, str | os.PathLike) or not str(value):
                raise ConfigError("expected a folder path", where="runner", field=name, value=value)
            object.__setattr__(self, name, Path(value))
        for name in (
            "max_jobs",
            "queue_size",
            "handlers",
            "watch_step_ms",
            "watch_debounce_ms",
            "chunk_size",
        ):
            check_count("runner", name, getattr(self, name))
        for name in ("shutdown_timeout", "kill_timeout"):
            check_seconds("runner", name, getattr(self, name))
        check_flag("runner", "durable", self.durable)
        if self.http is not None:
            object.__setattr__(self, "http", _http_endpoint(self.http))
        if self.file_watcher not in WATCHERS:
            raise ConfigError(
                f"expected one of {', '.join(WATCHERS)}",
                where="runner",
                field="file_watcher",
                value=self.file_watcher,
            )
        if self.watch_debounce_ms < self.watch_step_ms:
            raise ConfigError(
                "must be at least watch_step_ms",
                where="runner",
                field="watch_debounce_ms",
                value=self.watch_debounce_ms,
            )


def _http_endpoint(value: object) -> dict[str, Any]:
    if not isinstance(value, Mapping) or not set(value) <= {"host", "port"} or "port" not in value:
        raise ConfigError(
            "expected {host: ADDRESS, port: PORT} (host defaults to 127.0.0.1)",
            where="runner",
            field="http",
            value=value,
        )
    host, port = value.get("host", "127.0.0.1"), value["port"]
    check_host("runner", "http", host)
    check_port("runner", "http", port)
    return {"host": host, "port": port}
