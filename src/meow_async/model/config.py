"""Runner settings: one frozen object, checked when made."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Literal, cast

from ..exceptions import ConfigError
from .addresses import http_url_parts
from .http_limits import DEFAULT_LIMITS, HTTP_LIMIT_FIELDS, HttpLimits, limit, limits_of
from .retention import retention_settings
from .secrets import read_secret
from .settings import (
    block,
    check_settings,
    choice,
    count,
    custom,
    env_name,
    flag,
    host,
    made,
    optional,
    port,
    resources,
    seconds,
    secret_file,
    text,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_DEBOUNCE_MS",
    "DEFAULT_MAX_OUTPUT",
    "DEFAULT_STEP_MS",
    "JOBQUEUES",
    "JOBQUEUE_KEYS",
    "WATCHERS",
    "ConductorName",
    "ContainmentName",
    "LoopName",
    "RunnerConfig",
    "WatcherName",
    "dask_option",
    "dask_settings",
    "http_limits",
    "http_token",
]

WatcherName = Literal["auto", "inotify", "watchfiles", "poll"]
WATCHERS: tuple[str, ...] = ("auto", "inotify", "watchfiles", "poll")
#: Measured on Linux (perf/): watchfiles yields a batch once ``step`` ms pass with no new change,
#: so ``step`` is the latency floor. 5 ms gives ~7 ms median change-to-event, coalesces the
#: create/write/close of one write, and costs <1 % of a core while idle. watchfiles' own
#: default (step 50, debounce 1600) keeps growing a batch while writes continue.
DEFAULT_STEP_MS = 5
DEFAULT_DEBOUNCE_MS = 50
#: Bytes read per call; see docs/performance.md#chunk-size for how it was chosen.
DEFAULT_CHUNK_SIZE = 64 * 1024
#: Bytes of each output stream (stdout, stderr) a job keeps: the first and the last 128 MiB.
DEFAULT_MAX_OUTPUT = 256 * 1024 * 1024

LoopName = Literal["auto", "asyncio", "uvloop"]
ContainmentName = Literal["auto", "cgroup", "subreaper", "none"]
CONTAINMENTS: tuple[str, ...] = ("auto", "cgroup", "subreaper", "none")
ConductorName = Literal["local", "dask"]
CONDUCTORS: tuple[ConductorName, ...] = ("local", "dask")
#: Batch systems dask-jobqueue starts workers on (``runner.dask.jobqueue``): name -> its class.
JOBQUEUES = {
    "slurm": "SLURMCluster",
    "pbs": "PBSCluster",
    "sge": "SGECluster",
    "lsf": "LSFCluster",
    "htcondor": "HTCondorCluster",
    "oar": "OARCluster",
    "moab": "MoabCluster",
}
#: ``runner.dask`` settings passed to the dask-jobqueue cluster as they are (its own names);
#: each is a field of :class:`DaskSettings`, allowed with ``jobqueue`` only.
JOBQUEUE_KEYS = (
    "cores",
    "memory",
    "processes",
    "queue",
    "account",
    "walltime",
    "job_name",
    "job_extra_directives",
    "job_directives_skip",
    "job_script_prologue",
    "worker_extra_args",
    "log_directory",
    "local_directory",
    "interface",
    "scheduler_options",
    "python",
    "shebang",
)
#: How many batch jobs: ``jobs`` (a fixed number) or ``adapt`` (``{minimum_jobs, maximum_jobs}``).
_JOBQUEUE_SCALE = ("jobs", "adapt")


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _public_url(where: str, field: str, value: object) -> str:
    parts = http_url_parts(value)
    if parts is None or parts.query or parts.fragment:
        raise ConfigError(
            "expected the http:// or https:// URL people open to reach runner.http, "
            "e.g. https://lab.example.org/meow (no query)",
            where=where,
            field=field,
            value=value,
        )
    return cast("str", value).rstrip("/")


_PUBLIC_URL = custom({"type": "string", "pattern": r"^https?://[^\s/?#]+[^\s?#]*$"}, _public_url)


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpEndpoint:
    """Where ``runner.http`` serves ``/healthz``, ``/metrics``, ``/jobs`` and ``/status``."""

    what: ClassVar[str] = "runner.http"

    host: str = field(default="127.0.0.1", metadata=host())
    #: 0: any free port (``Runner.http_port`` says which).
    port: int = field(metadata=port())
    #: The address people open to reach it (a proxy's, say), for the job links in
    #: notifications; default ``http://HOST:PORT``.
    public_url: str | None = field(default=None, metadata=optional(_PUBLIC_URL))
    #: The environment variable holding the bearer token every path but /healthz then needs.
    token_env: str | None = field(default=None, metadata=optional(env_name()))
    #: The file holding that bearer token (relative to the workflow file's folder).
    token_file: str | None = field(default=None, metadata=optional(secret_file()))
    #: Seconds a connection may stay open without a request.
    idle_timeout: float = limit("idle_timeout")
    #: Seconds from a request's first byte until its headers are complete.
    header_timeout: float = limit("header_timeout")
    #: Seconds a body may go without a byte (then ``body_min_rate`` on average).
    body_timeout: float = limit("body_timeout")
    #: Bytes per second a body must come at, on average, once ``body_timeout`` has passed.
    body_min_rate: int = limit("body_min_rate")
    #: Connections open at once; past it the oldest idle one is closed, or the new one
    #: answered 503.
    max_connections: int = limit("max_connections")

    extra_schema: ClassVar[dict[str, Any]] = {"not": {"required": ["token_env", "token_file"]}}

    def __post_init__(self) -> None:
        check_settings(self, "runner.http")
        if self.token_env is not None and self.token_file is not None:
            raise ConfigError(
                "give the bearer token in one place: token_env or token_file",
                where="runner.http",
                field="token_file",
                value=self.token_file,
            )


def _strings(hint: str) -> dict[str, Any]:
    """A list of strings (``hint``: what is expected)."""

    def check(where: str, field: str, value: Any) -> Any:
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise ConfigError(hint, where=where, field=field, value=value)
        return value

    return custom({"type": "array", "items": {"type": "string"}}, check)


def _options(where: str, field: str, value: object) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(
            "expected a mapping, e.g. {host: 10.0.0.5}", where=where, field=field, value=value
        )
    return dict(value)


_BATCH_TEXT = text("expected a non-empty string")


@dataclass(frozen=True, slots=True, kw_only=True)
class Adapt:
    """``runner.dask.adapt``: batch jobs grown and shrunk with the queue of jobs."""

    what: ClassVar[str] = "runner.dask.adapt"

    #: Batch jobs kept at least, even with no job queued.
    minimum_jobs: int | None = field(default=None, metadata=optional(count(low=0)))
    #: Batch jobs at most.
    maximum_jobs: int | None = field(default=None, metadata=optional(count(low=0)))

    def __post_init__(self) -> None:
        check_settings(self, self.what)
        if (
            self.minimum_jobs is not None
            and self.maximum_jobs is not None
            and self.minimum_jobs > self.maximum_jobs
        ):
            raise ConfigError(
                "minimum_jobs is more than maximum_jobs",
                where=self.what,
                field="minimum_jobs",
                value=self.minimum_jobs,
            )


def _adapt(where: str, field: str, value: object) -> dict[str, Any]:
    scale = made(Adapt, where, field, value, "expected {minimum_jobs: N, maximum_jobs: M}")
    return {
        f.name: getattr(scale, f.name) for f in fields(scale) if getattr(scale, f.name) is not None
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class DaskSettings:
    """The Dask cluster: a running scheduler's ``address``, ``local_workers`` started and
    stopped with the runner, or workers started as batch jobs by dask-jobqueue (``jobqueue``,
    with the batch jobs' own settings)."""

    what: ClassVar[str] = "runner.dask"

    #: A running scheduler, e.g. tcp://10.0.0.5:8786.
    address: str | None = field(
        default=None,
        metadata=optional(text("expected a scheduler address, e.g. tcp://10.0.0.5:8786")),
    )
    #: Worker processes started with the runner (a LocalCluster on 127.0.0.1).
    local_workers: int | None = field(default=None, metadata=optional(count()))
    #: Threads per local worker.
    threads_per_worker: int | None = field(default=None, metadata=optional(count()))
    #: Resources each local worker offers, e.g. {GPU: 1}.
    resources: Mapping[str, float] | None = field(default=None, metadata=optional(resources()))
    #: Seconds to wait for the scheduler.
    connect_timeout: float | None = field(default=None, metadata=optional(seconds(above_zero=True)))
    #: Workers as batch jobs of this system, through dask-jobqueue (pip install
    #: 'meow-async[dask]'); the keys below go to its cluster class as they are.
    jobqueue: str | None = field(default=None, metadata=optional(choice(*JOBQUEUES)))
    #: Cores of each batch job (jobqueue only).
    cores: int | None = field(default=None, metadata=optional(count()))
    #: Memory of each batch job, e.g. 16GB (jobqueue only).
    memory: str | None = field(default=None, metadata=optional(_BATCH_TEXT))
    #: Dask worker processes in each batch job (jobqueue only).
    processes: int | None = field(default=None, metadata=optional(count()))
    #: The batch queue or partition (jobqueue only).
    queue: str | None = field(default=None, metadata=optional(_BATCH_TEXT))
    #: The account batch jobs are charged to (jobqueue only).
    account: str | None = field(default=None, metadata=optional(_BATCH_TEXT))
    #: Each batch job's wall time, e.g. 01:00:00 (jobqueue only).
    walltime: str | None = field(default=None, metadata=optional(_BATCH_TEXT))
    #: The batch jobs' name (jobqueue only).
    job_name: str | None = field(default=None, metadata=optional(_BATCH_TEXT))
    #: Extra directives of the batch script, e.g. [--gres=gpu:1] (jobqueue only).
    job_extra_directives: list[str] | None = field(
        default=None, metadata=optional(_strings("expected a list of strings"))
    )
    #: Directives left out of the batch script (jobqueue only).
    job_directives_skip: list[str] | None = field(
        default=None, metadata=optional(_strings("expected a list of strings"))
    )
    #: Shell lines run before the worker starts (jobqueue only).
    job_script_prologue: list[str] | None = field(
        default=None, metadata=optional(_strings("expected a list of strings"))
    )
    #: Extra arguments of the worker, e.g. [--resources, GPU=1] (jobqueue only).
    worker_extra_args: list[str] | None = field(
        default=None,
        metadata=optional(_strings("expected a list of strings, e.g. [--resources, GPU=1]")),
    )
    #: Where the batch jobs' output goes (jobqueue only).
    log_directory: str | None = field(default=None, metadata=optional(_BATCH_TEXT))
    #: The workers' local scratch folder (jobqueue only).
    local_directory: str | None = field(default=None, metadata=optional(_BATCH_TEXT))
    #: The network interface workers and scheduler talk on, e.g. ib0 (jobqueue only).
    interface: str | None = field(default=None, metadata=optional(_BATCH_TEXT))
    #: The scheduler's own settings, e.g. {host: 10.0.0.5} (jobqueue only).
    scheduler_options: Mapping[str, Any] | None = field(
        default=None, metadata=optional(custom({"type": "object"}, _options))
    )
    #: The Python the batch jobs run the worker with (jobqueue only).
    python: str | None = field(default=None, metadata=optional(_BATCH_TEXT))
    #: The batch script's first line (jobqueue only).
    shebang: str | None = field(default=None, metadata=optional(_BATCH_TEXT))
    #: Batch jobs kept running (jobqueue only; default 1, unless ``adapt``).
    jobs: int | None = field(default=None, metadata=optional(count()))
    #: Batch jobs grown and shrunk with the queue of jobs (jobqueue only; not with ``jobs``).
    adapt: Mapping[str, int] | None = field(default=None, metadata=optional(block(Adapt, _adapt)))

    extra_schema: ClassVar[dict[str, Any]] = {
        "oneOf": [
            {"required": ["address"]},
            {"required": ["local_workers"]},
            {"required": ["jobqueue"]},
        ],
        "dependentRequired": {
            "threads_per_worker": ["local_workers"],
            "resources": ["local_workers"],
            "jobqueue": ["cores", "memory"],
            **{key: ["jobqueue"] for key in (*JOBQUEUE_KEYS, *_JOBQUEUE_SCALE)},
        },
        "not": {"required": ["jobs", "adapt"]},
    }

    def __post_init__(self) -> None:
        where = "runner.dask"
        check_settings(self, where)
        if [self.address, self.local_workers, self.jobqueue].count(None) != 2:
            raise ConfigError(
                "give one of address (tcp://host:8786, a running scheduler), local_workers "
                "(N worker processes started with the runner) or jobqueue (slurm, pbs, ...: "
                "workers started as batch jobs)",
                where=where,
            )
        if self.jobqueue is None:
            batch = [k for k in (*JOBQUEUE_KEYS, *_JOBQUEUE_SCALE) if getattr(self, k) is not None]
            if batch:
                raise ConfigError(
                    f"batch-job settings ({', '.join(batch)}) need jobqueue: slurm (or another "
                    "batch system)",
                    where=where,
                    field=batch[0],
                    value=getattr(self, batch[0]),
                )
        else:
            self._check_jobqueue(where)
        if self.threads_per_worker is not None and self.local_workers is None:
            raise ConfigError(
                "threads are set on the workers themselves (dask worker --nthreads 8); here only "
                "for local_workers",
                where=where,
                field="threads_per_worker",
                value=self.threads_per_worker,
            )
        if self.resources is not None and self.local_workers is None:
            raise ConfigError(
                "resources are set on the workers themselves (dask worker --resources "
                "'GPU=1'); here only for local_workers",
                where=where,
                field="resources",
                value=self.resources,
            )

    def _check_jobqueue(self, where: str) -> None:
        for key in ("cores", "memory"):
            if getattr(self, key) is None:
                raise ConfigError(
                    f"a batch job's {key} must be given (e.g. cores: 8, memory: 16GB)",
                    where=where,
                    field=key,
                    value=None,
                )
        if self.jobs is not None and self.adapt is not None:
            raise ConfigError(
                "give either jobs (a fixed number of batch jobs) or adapt (minimum_jobs and "
                "maximum_jobs, grown and shrunk with the queue of jobs)",
                where=where,
                field="jobs",
                value=self.jobs,
            )
        if self.adapt is None and self.jobs is None:
            object.__setattr__(self, "jobs", 1)


def _http(where: str, field: str, value: object) -> dict[str, Any]:
    hint = (
        "expected {host: ADDRESS, port: PORT, public_url: URL} (host defaults to 127.0.0.1; "
        "public_url is optional), optionally with token_env or token_file and "
        f"{', '.join(HTTP_LIMIT_FIELDS)}"
    )
    endpoint = made(HttpEndpoint, where, field, value, hint)
    out: dict[str, Any] = {"host": endpoint.host, "port": endpoint.port}
    for key in ("public_url", "token_env", "token_file"):
        if getattr(endpoint, key) is not None:
            out[key] = getattr(endpoint, key)
    for key in HTTP_LIMIT_FIELDS:  # the defaults are implied
        if getattr(endpoint, key) != getattr(DEFAULT_LIMITS, key):
            out[key] = getattr(endpoint, key)
    http_token(out)  # a missing token is an error now, not at the first request
    return out


def _dask(where: str, field: str, value: object) -> dict[str, Any]:
    hint = (
        "expected {address: tcp://host:8786}, {local_workers: N} or {jobqueue: slurm, cores: N, "
        "memory: 16GB, ...}"
    )
    cluster = made(DaskSettings, where, field, value, hint)
    return {
        f.name: getattr(cluster, f.name)
        for f in fields(cluster)
        if getattr(cluster, f.name) is not None
    }


def _retention(where: str, field: str, value: object) -> dict[str, float]:
    return retention_settings(value)  # errors name runner.retention.<state>


_DURATION_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "number", "exclusiveMinimum": 0},
        {"type": "string", "pattern": r"^\s*(\d+(\.\d+)?[smhdwSMHDW])+\s*$"},
    ]
}
#: Finished states to how long their jobs are kept: ``{done: 30d, failed: 180d}``.
_RETENTION = custom(
    {
        "type": "object",
        "properties": dict.fromkeys(("done", "failed", "skipped"), _DURATION_SCHEMA),
        "additionalProperties": False,
        "minProperties": 1,
    },
    _retention,
)


def _folder(where: str, field: str, value: object) -> Path:
    if not isinstance(value, str | os.PathLike) or not str(value):
        raise ConfigError("expected a folder path", where=where, field=field, value=value)
    return Path(value)


_FOLDER = custom({"type": "string", "minLength": 1}, _folder)


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
        max_backlog / max_backlog_bytes: accepted network and HTTP messages (and their bytes)
            kept waiting in the spool journal on disk once the events queue is full; only past
            either is a TCP sender made to wait for its acknowledgement and an HTTP client
            answered 503 (either 0: no backlog, the queue alone).
        shutdown_timeout: seconds running jobs get to finish on a graceful stop.
        kill_timeout: seconds between SIGTERM and SIGKILL for a job being stopped.
        file_watcher: ``auto`` (inotify on Linux, polling where ``base_dir`` is on a network
            or FUSE filesystem, else watchfiles), ``inotify``, ``watchfiles`` (the portable
            backend, which batches instead of waiting for a writer's close) or ``poll``
            (looks every ``poll_interval`` seconds, for writes made on other machines; see
            https://meow-async.github.io/meow_async/concepts/#what-each-platform-guarantees).
        poll_interval: seconds between two looks of the ``poll`` watcher.
        poll_settle: seconds a polled file's size and mtime must stay the same before it
            triggers, for patterns that set none of ``settle``, ``min_age``, ``sentinel``;
            longer than ``poll_interval``, so that a look has seen it unchanged (default:
            2 s, or twice ``poll_interval`` if that is longer).
        poll_full_interval: seconds between two full looks of the ``poll`` watcher (every
            file looked at, not only those in folders whose mtime changed).
        watch_step_ms / watch_debounce_ms: watchfiles' batching, for that backend only.
        chunk_size: bytes read from a network connection at a time.
        durable: fsync spool files (before any acknowledgement), the spool journal and job
            metadata, so they survive a machine crash too, not only the runner's.
        filter_max_body: bytes of an HTTP body or network message a ``when:`` filter reads at
            most; a larger one is not parsed, and its ``body``/``payload`` is absent.
        http: ``{"host": "127.0.0.1", "port": 9464}`` serves ``/healthz``, ``/metrics``,
            ``/jobs`` and ``/status`` there (off by default; port 0: any free port, see
            ``Runner.http_port``); with ``token_env`` or ``token_file``, every path but
            ``/healthz`` needs that bearer token; ``idle_timeout``, ``header_timeout``,
            ``body_timeout``, ``body_min_rate`` and ``max_connections`` as HTTP patterns have.
            ``public_url`` is the address people open to reach it (a proxy's, say), for the
            job links in notifications; default ``http://HOST:PORT``.
        conductor: where jobs run by default: ``local`` (this machine) or ``dask``; a recipe's
            own ``conductor`` overrides it.
        dask: the Dask cluster, ``{"address": "tcp://host:8786"}``, ``{"local_workers": N}``
            (a LocalCluster the runner starts and stops), or ``{"jobqueue": "slurm", "cores":
            N, "memory": "16GB", ...}`` (workers as batch jobs through dask-jobqueue, with
            ``jobs: N`` or ``adapt: {minimum_jobs, maximum_jobs}``), plus
            ``threads_per_worker`` and ``resources`` (local workers only) and
            ``connect_timeout``; see docs/scale-out.md.
        retention: how long finished jobs are kept, by state, e.g. ``{"done": "30d",
            "failed": "180d", "skipped": "7d"}`` (durations or seconds); older ones are removed
            (folder and index row) in the background. None (the default): keep everything.
        max_output: bytes of each of a job's output streams (``stdout.txt``, ``stderr.txt``)
            kept, its first and its last half, when its recipe sets no ``max_output``.
        containment: what each local job runs in, so that whatever it starts ends with it
            (daemons, nohup, double forks included): ``auto`` (a cgroup v2 per job where the
            runner may make one, else a child subreaper), ``cgroup``, ``subreaper`` (fail if
            not to be had), or ``none`` (its process group only); see docs/security.md.
        learn_preload: the fork server learns which standard-library and site-packages
            modules warm jobs import and preloads them (false: only what recipes name in
            ``preload``); see
            https://meow-async.github.io/meow_async/concepts/#warm-starts.
    """

    base_dir: Path = field(default=Path(), metadata=_FOLDER)
    jobs_dir: Path = field(default=Path(".meow/jobs"), metadata=_FOLDER)
    spool_dir: Path | None = field(default=None, metadata=optional(_FOLDER))
    max_jobs: int = field(default_factory=_cpus, metadata=count())
    queue_size: int = field(default=1000, metadata=count())
    max_backlog: int = field(default=100_000, metadata=count(low=0))
    max_backlog_bytes: int = field(default=1 << 30, metadata=count(low=0))
    handlers: int = field(default=2, metadata=count())
    shutdown_timeout: float = field(default=10.0, metadata=seconds())
    kill_timeout: float = field(default=5.0, metadata=seconds())
    file_watcher: WatcherName = field(default="auto", metadata=choice(*WATCHERS))
    watch_step_ms: int = field(default=DEFAULT_STEP_MS, metadata=count())
    watch_debounce_ms: int = field(default=DEFAULT_DEBOUNCE_MS, metadata=count())
    poll_interval: float = field(default=1.0, metadata=seconds(above_zero=True))
    poll_settle: float | None = field(default=None, metadata=optional(seconds(above_zero=True)))
    poll_full_interval: float = field(default=60.0, metadata=seconds(above_zero=True))
    chunk_size: int = field(default=DEFAULT_CHUNK_SIZE, metadata=count())
    durable: bool = field(default=False, metadata=flag())
    filter_max_body: int = field(default=1024 * 1024, metadata=count())
    http: Mapping[str, Any] | None = field(
        default=None, metadata=optional(block(HttpEndpoint, _http))
    )
    conductor: ConductorName = field(default="local", metadata=choice(*CONDUCTORS))
    dask: Mapping[str, Any] | None = field(
        default=None, metadata=optional(block(DaskSettings, _dask))
    )
    retention: Mapping[str, Any] | None = field(default=None, metadata=optional(_RETENTION))
    containment: ContainmentName = field(default="auto", metadata=choice(*CONTAINMENTS))
    max_output: int = field(default=DEFAULT_MAX_OUTPUT, metadata=count())
    learn_preload: bool = field(default=True, metadata=flag())

    def __post_init__(self) -> None:
        if self.spool_dir is None and isinstance(self.jobs_dir, str | os.PathLike):
            object.__setattr__(self, "spool_dir", Path(self.jobs_dir).parent / "spool")
        check_settings(self, "runner")
        if self.conductor == "dask" and self.dask is None:
            raise ConfigError(
                "say which cluster: dask: {address: tcp://host:8786} or dask: {local_workers: N}",
                where="runner",
                field="dask",
                value=None,
            )
        if self.watch_debounce_ms < self.watch_step_ms:
            raise ConfigError(
                "must be at least watch_step_ms",
                where="runner",
                field="watch_debounce_ms",
                value=self.watch_debounce_ms,
            )
        if self.polled_settle <= self.poll_interval:
            raise ConfigError(
                f"must be longer than poll_interval ({self.poll_interval:g}s): a polled file "
                "is complete once a look has found it unchanged",
                where="runner",
                field="poll_settle",
                value=self.poll_settle,
            )

    @property
    def polled_settle(self) -> float:
        """``poll_settle``, or its default: 2 s, or twice ``poll_interval`` if longer."""
        if self.poll_settle is not None:
            return float(self.poll_settle)
        return max(2.0, 2 * float(self.poll_interval))


def http_token(http: Mapping[str, Any] | None) -> str | None:
    """The bearer token ``runner.http`` asks for (None: its paths are open), read from the
    variable or file it names."""
    if not http:
        return None
    what = "runner.http's bearer token"
    return read_secret("runner", "http.token", http.get("token_env"), http.get("token_file"), what)


def http_limits(http: Mapping[str, Any]) -> HttpLimits:
    """``runner.http``'s limits: what it sets, the defaults for the rest."""
    return limits_of(dict(http))


def dask_settings(value: object) -> dict[str, Any]:
    """``runner.dask``, checked: exactly one of a scheduler address, a local worker count or a
    batch system (``jobqueue``, with its batch jobs' settings)."""
    return _dask("runner", "dask", value)


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
