"""Runner settings: one frozen object, checked when made."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..exceptions import ConfigError
from .checks import (
    check_count,
    check_flag,
    check_host,
    check_port,
    check_resources,
    check_seconds,
)
from .retention import retention_settings

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_DEBOUNCE_MS",
    "DEFAULT_STEP_MS",
    "WATCHERS",
    "ConductorName",
    "LoopName",
    "RunnerConfig",
    "WatcherName",
    "dask_option",
    "dask_settings",
]

WatcherName = Literal["auto", "inotify", "watchfiles"]
WATCHERS: tuple[str, ...] = ("auto", "inotify", "watchfiles")
#: Measured on Linux (perf/): watchfiles yields a batch once ``step`` ms pass with no new change,
#: so ``step`` is the latency floor. 5 ms gives ~7 ms median change-to-event, coalesces the
#: create/write/close of one write, and costs <1 % of a core while idle. watchfiles' own
#: default (step 50, debounce 1600) keeps growing a batch while writes continue.
DEFAULT_STEP_MS = 5
DEFAULT_DEBOUNCE_MS = 50
#: Bytes read per call; see docs/performance.md#chunk-size for how it was chosen.
DEFAULT_CHUNK_SIZE = 64 * 1024

LoopName = Literal["auto", "asyncio", "uvloop"]
ConductorName = Literal["local", "dask"]
CONDUCTORS: tuple[ConductorName, ...] = ("local", "dask")
_DASK_KEYS = ("address", "local_workers", "threads_per_worker", "resources", "connect_timeout")


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
            writer's close; see
            https://meow-async.github.io/meow_async/concepts/#what-each-platform-guarantees).
        watch_step_ms / watch_debounce_ms: watchfiles' batching, for that backend only.
        chunk_size: bytes read from a network connection at a time.
        durable: fsync spool files (before any acknowledgement), the spool journal and job
            metadata, so they survive a machine crash too, not only the runner's.
        http: ``{"host": "127.0.0.1", "port": 9464}`` serves ``/healthz``, ``/metrics`` and
            ``/jobs`` there (off by default; port 0: any free port, see ``Runner.http_port``).
        conductor: where jobs run by default: ``local`` (this machine) or ``dask``; a recipe's
            own ``conductor`` overrides it.
        dask: the Dask cluster, ``{"address": "tcp://host:8786"}`` or ``{"local_workers": N}``
            (a LocalCluster the runner starts and stops), plus ``threads_per_worker`` and
            ``resources`` (local workers only) and ``connect_timeout``; see docs/scale-out.md.
        retention: how long finished jobs are kept, by state, e.g. ``{"done": "30d",
            "failed": "180d", "skipped": "7d"}`` (durations or seconds); older ones are removed
            (folder and index row) in the background. None (the default): keep everything.
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
    conductor: ConductorName = "local"
    dask: Mapping[str, Any] | None = None
    retention: Mapping[str, Any] | None = None

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
        if self.conductor not in CONDUCTORS:
            raise ConfigError(
                f"expected one of {', '.join(CONDUCTORS)}",
                where="runner",
                field="conductor",
                value=self.conductor,
            )
        if self.dask is not None:
            object.__setattr__(self, "dask", dask_settings(self.dask))
        elif self.conductor == "dask":
            raise ConfigError(
                "say which cluster: dask: {address: tcp://host:8786} or dask: {local_workers: N}",
                where="runner",
                field="dask",
                value=None,
            )
        if self.retention is not None:
            object.__setattr__(self, "retention", retention_settings(self.retention))
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


def dask_settings(value: object) -> dict[str, Any]:
    """``runner.dask``, checked: exactly one of a scheduler address or a local worker count."""
    where = "runner"
    if not isinstance(value, Mapping) or not set(value) <= set(_DASK_KEYS):
        raise ConfigError(
            f"expected a mapping with keys from {', '.join(_DASK_KEYS)}",
            where=where,
            field="dask",
            value=value,
        )
    out = dict(value)
    if ("address" in out) == ("local_workers" in out):
        raise ConfigError(
            "give either address (tcp://host:8786, a running scheduler) or local_workers "
            "(N worker processes started with the runner)",
            where=where,
            field="dask",
            value=value,
        )
    if "address" in out and (not isinstance(out["address"], str) or not out["address"]):
        raise ConfigError(
            "expected a scheduler address, e.g. tcp://10.0.0.5:8786",
            where=where,
            field="dask.address",
            value=out["address"],
        )
    for key in ("local_workers", "threads_per_worker"):
        if key in out:
            check_count(where, f"dask.{key}", out[key])
    if "threads_per_worker" in out and "local_workers" not in out:
        raise ConfigError(
            "threads are set on the workers themselves (dask worker --nthreads 8); here only "
            "for local_workers",
            where=where,
            field="dask.threads_per_worker",
            value=out["threads_per_worker"],
        )
    if "connect_timeout" in out:
        check_seconds(where, "dask.connect_timeout", out["connect_timeout"], above_zero=True)
    resources = out.get("resources")
    if resources is not None:
        if "local_workers" not in out:
            raise ConfigError(
                "resources are set on the workers themselves (dask worker --resources "
                "'GPU=1'); here only for local_workers",
                where=where,
                field="dask.resources",
                value=resources,
            )
        out["resources"] = check_resources(where, "dask.resources", resources)
    return out


def dask_option(value: str) -> dict[str, Any]:
    """``--dask tcp://host:8786`` or ``--dask local:4`` as ``runner.dask`` settings."""
    if value.startswith("local:"):
        n = value.removeprefix("local:")
        if not n.isdigit() or int(n) < 1:
            raise ConfigError(
                f"expected local:N with N workers (at least 1), e.g. local:4; got {value!r}",
                field="--dask",
                value=value,
            )
        return {"local_workers": int(n)}
    if "://" not in value and value.count(":") != 1:
        raise ConfigError(
            f"expected a scheduler address (tcp://host:8786) or local:N; got {value!r}",
            field="--dask",
            value=value,
        )
    return {"address": value if "://" in value else f"tcp://{value}"}
