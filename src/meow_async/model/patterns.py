"""Patterns: what triggers a rule. Frozen, slotted, and checked when made."""

from __future__ import annotations

import itertools
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Literal, cast

from ..exceptions import ConfigError
from .checks import (
    check_count,
    check_flag,
    check_host,
    check_name,
    check_params,
    check_port,
    check_seconds,
    check_variable,
)
from .filters import Filter, compile_filter
from .globs import compile_glob
from .notify import Notify, make_notify
from .schedule import Every, Schedule, check_cron, parse_anchor, parse_interval, time_zone

__all__ = [
    "Change",
    "FilePattern",
    "HttpPattern",
    "NetworkPattern",
    "Pattern",
    "Sweep",
    "TimePattern",
]

MAX_SWEEP_POINTS = 100_000


class Change(StrEnum):
    """Which file changes trigger a file pattern."""

    created = "created"
    modified = "modified"
    moved = "moved"  # the file was renamed into place from elsewhere in the watched folder
    deleted = "deleted"


DEFAULT_CHANGES = frozenset({Change.created, Change.modified, Change.moved})

OnRestart = Literal["rerun", "fail"]
ON_RESTART: tuple[str, ...] = ("rerun", "fail")


@dataclass(frozen=True, slots=True, kw_only=True)
class Sweep:
    """Values from ``start`` to ``stop`` (inclusive when reached) in steps of ``jump``."""

    start: float
    stop: float
    jump: float

    def __post_init__(self) -> None:
        for name in ("start", "stop", "jump"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ConfigError(f"expected a finite number, got {v!r}", field=name, value=v)
        if self.jump == 0:
            raise ConfigError("jump must not be 0", field="jump", value=self.jump)
        if (self.stop - self.start) * self.jump < 0:
            raise ConfigError(
                f"jump {self.jump} moves away from stop {self.stop} (start {self.start})",
                field="jump",
                value=self.jump,
            )
        if self.count() > MAX_SWEEP_POINTS:
            raise ConfigError(
                f"{self.count()} points is more than the {MAX_SWEEP_POINTS} allowed",
                field="jump",
                value=self.jump,
            )

    def count(self) -> int:
        return math.floor((self.stop - self.start) / self.jump + 1e-9) + 1

    def values(self) -> list[int | float]:
        # Index times jump, not repeated addition: 0.1 steps must not drift past stop.
        ints = all(isinstance(v, int) for v in (self.start, self.stop, self.jump))
        vals = [self.start + i * self.jump for i in range(self.count())]
        return [int(v) for v in vals] if ints else [round(v, 12) for v in vals]


def _sweeps(where: str, value: object) -> dict[str, Sweep]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(
            "expected a mapping of variable to {start, stop, jump}",
            where=where,
            field="sweep",
            value=value,
        )
    out: dict[str, Sweep] = {}
    for var, spec in value.items():
        check_variable(where, f"sweep.{var}", var)
        if isinstance(spec, Sweep):
            out[var] = spec
            continue
        if not isinstance(spec, Mapping) or set(spec) != {"start", "stop", "jump"}:
            raise ConfigError(
                "expected exactly the keys start, stop and jump",
                where=where,
                field=f"sweep.{var}",
                value=spec,
            )
        try:
            out[var] = Sweep(**spec)
        except ConfigError as e:
            raise ConfigError(
                e.message, where=where, field=f"sweep.{var}.{e.field}", value=e.value
            ) from None
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class _PatternBase:
    """What every pattern has: a name, the recipe it triggers, and the job's parameters."""

    name: str
    recipe: str
    variable: str = "input_file"
    parameters: Mapping[str, Any] = field(default_factory=dict)
    outputs: Mapping[str, Any] = field(default_factory=dict)
    sweep: Mapping[str, Sweep | Mapping[str, float]] = field(default_factory=dict)
    #: A failed job runs again up to ``retries`` times, after ``retry_backoff`` seconds,
    #: doubling each time.
    retries: int = 0
    retry_backoff: float = 1.0
    #: What a restart does with a job that was running when the runner died.
    on_restart: OnRestart = "rerun"
    #: Who hears of a job's end (a webhook, an email): see docs/notifications.md.
    notify: Notify | Mapping[str, Any] | None = None
    #: A CEL expression on the event (docs/schedules-and-filters.md): only events it holds
    #: true for make jobs, e.g. ``body.ref == "refs/heads/main"``.
    when: str | None = None
    #: ``when`` compiled; None without one.
    filter: Filter | None = field(init=False, default=None, repr=False, compare=False)
    #: What a filter of this kind of pattern sees (model/filters.py's NAMES).
    EVENT_KIND: ClassVar[str] = "file"

    def _check_common(self) -> None:
        where = f"pattern {self.name!r}"
        check_name("pattern", "name", self.name)
        if self.when is not None:
            try:
                object.__setattr__(self, "filter", compile_filter(self.EVENT_KIND, self.when))
            except ValueError as e:
                raise ConfigError(str(e), where=where, field="when", value=self.when) from None
        check_name(where, "recipe", self.recipe)
        check_variable(where, "variable", self.variable)
        object.__setattr__(self, "parameters", check_params(where, "parameters", self.parameters))
        object.__setattr__(self, "outputs", check_params(where, "outputs", self.outputs))
        object.__setattr__(self, "sweep", _sweeps(where, self.sweep))
        try:
            object.__setattr__(self, "notify", make_notify(self.notify))
        except ConfigError as e:
            sub = f"notify.{e.field}" if e.field else "notify"
            raise ConfigError(e.message, where=where, field=sub, value=e.value) from None
        for var in (*self.outputs, *self.sweep):
            if var == self.variable:
                raise ConfigError(
                    f"{var!r} is already the triggering variable",
                    where=where,
                    field="outputs" if var in self.outputs else "sweep",
                    value=var,
                )
        check_count(where, "retries", self.retries, low=0, high=100)
        check_seconds(where, "retry_backoff", self.retry_backoff)
        if self.on_restart not in ON_RESTART:
            raise ConfigError(
                f"expected one of {', '.join(ON_RESTART)}",
                where=where,
                field="on_restart",
                value=self.on_restart,
            )
        total = math.prod(s.count() for s in cast("dict[str, Sweep]", self.sweep).values())
        if total > MAX_SWEEP_POINTS:
            raise ConfigError(
                f"the sweeps make {total} jobs per event, more than {MAX_SWEEP_POINTS}",
                where=where,
                field="sweep",
                value=total,
            )

    def sweep_points(self) -> Iterator[dict[str, int | float]]:
        """Every combination of sweep values (one empty point when there is no sweep)."""
        sweeps = cast("dict[str, Sweep]", self.sweep)  # made Sweeps in __post_init__
        names = list(sweeps)
        for combo in itertools.product(*(sweeps[n].values() for n in names)):
            yield dict(zip(names, combo, strict=True))


@dataclass(frozen=True, slots=True, kw_only=True)
class FilePattern(_PatternBase):
    """Triggers on files under the watched folder whose relative path matches ``glob``.

    ``retroactive`` also triggers, once, for matching files already present when the rule
    starts (at runner start or when the rule is added at run time).
    """

    glob: str
    changes: frozenset[Change] = DEFAULT_CHANGES
    retroactive: bool = False
    #: Hand the file on only once complete: no change for ``settle`` s, mtime at least
    #: ``min_age`` s old, and the ``sentinel`` file (a template, e.g. "{PATH}.done") there.
    settle: float = 0.0
    min_age: float = 0.0
    sentinel: str | None = None
    #: Events of this rule less than ``coalesce`` s apart make one job, for the latest file
    #: (0: every event makes its job).
    coalesce: float = 0.0
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._check_common()
        where = f"pattern {self.name!r}"
        if not isinstance(self.glob, str):
            raise ConfigError("expected a string", where=where, field="glob", value=self.glob)
        try:
            object.__setattr__(self, "regex", compile_glob(self.glob))
        except ValueError as e:
            raise ConfigError(
                f"invalid glob {self.glob!r}: {e}", where=where, field="glob", value=self.glob
            ) from None
        changes: object = self.changes
        if isinstance(changes, str) or not isinstance(changes, Iterable):
            raise ConfigError(
                "expected a list of changes", where=where, field="changes", value=changes
            )
        try:
            parsed = frozenset(Change(c) for c in changes)
        except ValueError:
            raise ConfigError(
                f"unknown change in {sorted(map(str, changes))}: choose from "
                f"{', '.join(c.value for c in Change)}",
                where=where,
                field="changes",
                value=changes,
            ) from None
        if not parsed:
            raise ConfigError(
                "at least one change is needed", where=where, field="changes", value=changes
            )
        object.__setattr__(self, "changes", parsed)
        for name in ("settle", "min_age", "coalesce"):
            check_seconds(where, name, getattr(self, name))
        sentinel: object = self.sentinel
        if sentinel is not None and (
            not isinstance(sentinel, str)
            or not sentinel
            or sentinel.startswith("/")
            or ".." in sentinel.split("/")
        ):
            raise ConfigError(
                "expected a path inside the watched folder, relative to it, with templates "
                "such as {REL_PATH}.done or {REL_DIR}/COMPLETE",
                where=where,
                field="sentinel",
                value=sentinel,
            )
        if not isinstance(self.retroactive, bool):
            raise ConfigError(
                "expected true or false", where=where, field="retroactive", value=self.retroactive
            )

    def matches(self, rel_path: str) -> bool:
        return self.regex.fullmatch(rel_path) is not None


Framing = Literal["connection", "delimiter", "length"]
FRAMINGS: tuple[str, ...] = ("connection", "delimiter", "length")

#: Settings that belong to the listener; patterns sharing a port must agree on them.
LISTENER_FIELDS = (
    "host",
    "framing",
    "delimiter",
    "max_size",
    "max_connections",
    "idle_timeout",
    "ack",
    "allow_empty",
    "max_waiting",
    "max_waiting_per_peer",
    "handshake_timeout",
    "tls_cert",
    "tls_key",
    "tls_client_ca",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkPattern(_PatternBase):
    """Triggers on data received on a TCP ``port``: each message becomes a spool file.

    ``port`` 0 asks the OS for a free port (see ``Runner.ports``). Framing: one message per
    connection (default), or many per connection split by ``delimiter`` or by a 4-byte
    big-endian length prefix. With ``tls_cert``/``tls_key`` the listener speaks TLS; with
    ``tls_client_ca`` too, clients must present a certificate signed by that CA.

    A connection holds one of ``max_connections`` slots only from its first byte (after its
    TLS handshake): connections that send nothing (or are handshaking) wait without one, at
    most ``max_waiting`` per listener and ``max_waiting_per_peer`` per address (past that, the
    one waiting longest is closed), for at most ``idle_timeout`` (``handshake_timeout`` for
    the handshake). An empty message makes no job unless ``allow_empty``.
    """

    EVENT_KIND: ClassVar[str] = "network"

    port: int
    host: str = "127.0.0.1"
    framing: Framing = "connection"
    delimiter: str = "\n"
    max_size: int = 64 * 1024 * 1024
    max_connections: int = 256
    idle_timeout: float = 30.0
    ack: bool = False
    allow_empty: bool = False
    max_waiting: int = 1024
    max_waiting_per_peer: int = 256
    handshake_timeout: float = 5.0
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None

    def __post_init__(self) -> None:
        self._check_common()
        where = f"pattern {self.name!r}"
        check_port(where, "port", self.port)
        check_host(where, "host", self.host)
        if self.framing not in FRAMINGS:
            raise ConfigError(
                f"unknown framing {self.framing!r}: choose from {', '.join(FRAMINGS)}",
                where=where,
                field="framing",
                value=self.framing,
            )
        delimiter: object = self.delimiter
        if not isinstance(delimiter, str) or not delimiter:
            raise ConfigError(
                "expected a non-empty string", where=where, field="delimiter", value=delimiter
            )
        for name in ("max_size", "max_connections", "max_waiting", "max_waiting_per_peer"):
            check_count(where, name, getattr(self, name))
        for name in ("idle_timeout", "handshake_timeout"):
            check_seconds(where, name, getattr(self, name), above_zero=True)
        check_flag(where, "ack", self.ack)
        check_flag(where, "allow_empty", self.allow_empty)
        _check_tls(self, where)
        if self.ack and self.tls_cert is not None and self.framing == "connection":
            raise ConfigError(
                "an acknowledgement over TLS needs framing 'delimiter' or "
                "'length': a TLS sender cannot half-close to end its message",
                where=where,
                field="ack",
                value=self.ack,
            )

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def listener_settings(self) -> tuple[object, ...]:
        return tuple(getattr(self, f) for f in LISTENER_FIELDS)


def _check_tls(pattern: Any, where: str) -> None:
    """``tls_cert`` and ``tls_key`` together, ``tls_client_ca`` only with them, files that
    exist."""
    if (pattern.tls_cert is None) != (pattern.tls_key is None):
        raise ConfigError(
            "TLS needs both tls_cert and tls_key",
            where=where,
            field="tls_cert" if pattern.tls_cert is None else "tls_key",
            value=None,
        )
    if pattern.tls_client_ca is not None and pattern.tls_cert is None:
        raise ConfigError(
            "client certificates need TLS: set tls_cert and tls_key too",
            where=where,
            field="tls_client_ca",
            value=pattern.tls_client_ca,
        )
    for name in ("tls_cert", "tls_key", "tls_client_ca"):
        path: object = getattr(pattern, name)
        if path is None:
            continue
        if not isinstance(path, str | os.PathLike) or not os.path.isfile(path):
            raise ConfigError(f"no such file: {path}", where=where, field=name, value=path)
        object.__setattr__(pattern, name, os.fspath(path))


#: Methods an HTTP pattern may take.
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_ROUTE_PART = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: Settings that must agree between HTTP patterns claiming the same route on one host:port.
HTTP_ROUTE_FIELDS = (
    "methods",
    "max_size",
    "headers",
    "token_env",
    "token_file",
    "hmac_secret_env",
    "hmac_secret_file",
    "hmac_header",
    "timestamp_header",
    "hmac_window",
    "signature",
    "token_header",
)
#: How a signed request is signed: meow_async's own scheme (a timestamp signed with the body),
#: or GitHub's (``X-Hub-Signature-256``, the body alone).
SIGNATURES: tuple[str, ...] = ("meow", "github")
GITHUB_HEADER = "X-Hub-Signature-256"


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpPattern(_PatternBase):
    """Triggers on an HTTP request to ``route`` on ``host``:``port``: its body becomes a spool
    file, as a network message does, and the request is answered ``202`` once it is safe.

    ``route`` may hold ``{name}`` parts (``/ingest/{instrument}``): their values, the query
    string and the ``headers`` named here reach the recipe as parameters. ``token_env`` or
    ``token_file`` names where the bearer token clients must send is kept (never the token
    itself). Patterns on one host:port share one server.
    """

    EVENT_KIND: ClassVar[str] = "http"

    route: str
    port: int
    host: str = "127.0.0.1"
    methods: tuple[str, ...] = ("POST",)
    max_size: int = 64 * 1024 * 1024
    headers: tuple[str, ...] = ()
    token_env: str | None = None
    token_file: str | None = None
    #: HMAC-SHA256 signatures instead of (or as well as) a token: the client sends
    #: ``sha256=<hex of HMAC(secret, TIMESTAMP + "." + body)>`` in ``hmac_header`` and the
    #: Unix time it signed in ``timestamp_header``; older than ``hmac_window`` seconds, or a
    #: signature seen before within it, is refused.
    hmac_secret_env: str | None = None
    hmac_secret_file: str | None = None
    hmac_header: str = "X-Signature-256"
    timestamp_header: str = "X-Timestamp"
    hmac_window: float = 300.0
    #: ``meow`` (above) or ``github``: GitHub's own webhooks, ``sha256=<hex of HMAC(secret,
    #: body)>`` in ``X-Hub-Signature-256`` (unless ``hmac_header`` says otherwise), with no
    #: timestamp; a signature seen before within ``hmac_window`` is refused as a replay.
    signature: Literal["meow", "github"] = "meow"
    #: The header clients send the token in: ``Authorization`` (as ``Bearer <token>``), or
    #: another whose value is the token itself, e.g. ``X-Gitlab-Token`` for GitLab's webhooks.
    token_header: str = "Authorization"  # noqa: S105 - a header's name, not a secret
    #: Seconds an ``Idempotency-Key`` is remembered (across restarts).
    idempotency_window: float = 24 * 3600.0
    #: HTTPS, and client certificates signed by ``tls_client_ca``, as for network patterns.
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None

    def __post_init__(self) -> None:
        self._check_common()
        where = f"pattern {self.name!r}"
        check_port(where, "port", self.port)
        check_host(where, "host", self.host)
        route: object = self.route
        if not isinstance(route, str) or not route.startswith("/") or " " in route:
            raise ConfigError(
                "expected a URL path starting with '/', e.g. /ingest/{instrument}",
                where=where,
                field="route",
                value=route,
            )
        names = _ROUTE_PART.findall(route)
        if "{" in _ROUTE_PART.sub("", route) or "}" in _ROUTE_PART.sub("", route):
            raise ConfigError(
                "route parts are written {name}, a name being letters, digits and _",
                where=where,
                field="route",
                value=route,
            )
        for var in names:
            if var in (self.variable, "query", "headers") or names.count(var) > 1:
                raise ConfigError(
                    f"route part {{{var}}} clashes with another parameter",
                    where=where,
                    field="route",
                    value=route,
                )
        methods: object = self.methods
        if isinstance(methods, str):
            methods = (methods,)
        if not isinstance(methods, list | tuple) or not methods:
            raise ConfigError(
                f"expected a list of methods from {', '.join(HTTP_METHODS)}",
                where=where,
                field="methods",
                value=self.methods,
            )
        upper = tuple(dict.fromkeys(str(m).upper() for m in methods))
        for m in upper:
            if m not in HTTP_METHODS:
                raise ConfigError(
                    f"unknown method {m!r}: choose from {', '.join(HTTP_METHODS)}",
                    where=where,
                    field="methods",
                    value=m,
                )
        object.__setattr__(self, "methods", upper)
        headers: object = self.headers
        if isinstance(headers, str) or not isinstance(headers, list | tuple):
            raise ConfigError(
                "expected a list of header names, e.g. [X-Instrument]",
                where=where,
                field="headers",
                value=headers,
            )
        for h in headers:
            if not isinstance(h, str) or not re.fullmatch(r"[A-Za-z0-9-]+", h):
                raise ConfigError(
                    "expected a header name (letters, digits, -)",
                    where=where,
                    field="headers",
                    value=h,
                )
        object.__setattr__(self, "headers", tuple(h.lower() for h in headers))
        check_count(where, "max_size", self.max_size)
        check_seconds(where, "idempotency_window", self.idempotency_window)
        if self.token_env is not None and self.token_file is not None:
            raise ConfigError(
                "give the bearer token in one place: token_env or token_file",
                where=where,
                field="token_file",
                value=self.token_file,
            )
        if self.hmac_secret_env is not None and self.hmac_secret_file is not None:
            raise ConfigError(
                "give the HMAC secret in one place: hmac_secret_env or hmac_secret_file",
                where=where,
                field="hmac_secret_file",
                value=self.hmac_secret_file,
            )
        if self.signature not in SIGNATURES:
            raise ConfigError(
                f"expected one of {', '.join(SIGNATURES)}",
                where=where,
                field="signature",
                value=self.signature,
            )
        if self.signature == "github" and self.hmac_header == "X-Signature-256":
            object.__setattr__(self, "hmac_header", GITHUB_HEADER)
        for name in ("hmac_header", "timestamp_header", "token_header"):
            value: object = getattr(self, name)
            if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9-]+", value):
                raise ConfigError(
                    "expected a header name (letters, digits, -)",
                    where=where,
                    field=name,
                    value=value,
                )
        check_seconds(where, "hmac_window", self.hmac_window, above_zero=True)
        _check_tls(self, where)
        # A missing secret is an error now, not at the first request.
        self.token()
        self.hmac_secret()

    def token(self) -> str | None:
        """The bearer token clients must send, read from where the pattern says."""
        return self._secret("token", "the bearer token")

    def hmac_secret(self) -> str | None:
        """The secret request signatures are made with."""
        return self._secret("hmac_secret", "the HMAC secret")

    def _secret(self, prefix: str, what: str) -> str | None:
        where = f"pattern {self.name!r}"
        env, file = getattr(self, f"{prefix}_env"), getattr(self, f"{prefix}_file")
        if env is not None:
            value = os.environ.get(str(env))
            if not value:
                raise ConfigError(
                    f"environment variable {env} ({what}) is not set",
                    where=where,
                    field=f"{prefix}_env",
                    value=env,
                )
            return value
        if file is not None:
            try:
                with open(os.fspath(file), encoding="utf-8") as f:
                    value = f.read().strip()
            except OSError as e:
                raise ConfigError(
                    f"cannot read {what} from {file}: {e.strerror or e}",
                    where=where,
                    field=f"{prefix}_file",
                    value=file,
                ) from None
            if not value:
                raise ConfigError(
                    f"{file} ({what}) is empty", where=where, field=f"{prefix}_file", value=file
                )
            return value
        return None

    @property
    def route_parts(self) -> list[str]:
        return _ROUTE_PART.findall(self.route)

    def route_regex(self) -> re.Pattern[str]:
        """The route as a regular expression, each ``{name}`` one path segment."""
        out, at = "", 0
        for m in _ROUTE_PART.finditer(self.route):
            out += re.escape(self.route[at : m.start()]) + f"(?P<{m.group(1)}>[^/]+)"
            at = m.end()
        return re.compile(out + re.escape(self.route[at:]))

    def route_settings(self) -> tuple[object, ...]:
        return tuple(getattr(self, f) for f in HTTP_ROUTE_FIELDS)

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def server_settings(self) -> tuple[object, ...]:
        """What every HTTP pattern on one host:port must agree on: the server's TLS."""
        return (self.tls_cert, self.tls_key, self.tls_client_ca)


CatchUp = Literal["none", "latest", "all"]
CATCH_UP: tuple[str, ...] = ("none", "latest", "all")


@dataclass(frozen=True, slots=True, kw_only=True)
class TimePattern(_PatternBase):
    """Triggers on a clock: ``cron`` (a cron expression, in ``timezone``) or ``every`` (a fixed
    interval, ticking on whole multiples of it since ``anchor``, the Unix epoch by default).

    A tick is its scheduled instant: one job per tick, across restarts. After downtime,
    ``catch_up`` decides what missed ticks do: ``none`` skips them, ``latest`` runs the most
    recent one, ``all`` runs each, the most recent ``max_catch_up`` at most. The job gets
    ``scheduled_time`` and ``fire_time`` (ISO 8601 with offset) as parameters.
    """

    EVENT_KIND: ClassVar[str] = "time"

    #: Five fields (minute hour day month weekday), or six with seconds first.
    cron: str | None = None
    #: An interval: 500ms, 10s, 5m, 1h30m, 1d.
    every: str | float | None = None
    #: IANA zone of ``cron`` and of the times a job is given (and of an ``anchor`` without an
    #: offset).
    timezone: str = "UTC"
    #: ISO 8601 time ``every`` counts from (default: the Unix epoch).
    anchor: str | None = None
    #: What ticks missed while no runner ran do: none, latest or all.
    catch_up: CatchUp = "latest"
    #: With catch_up all, at most this many missed ticks run (the most recent); the older are
    #: skipped and logged.
    max_catch_up: int = 100
    #: Ticks named once checked (``cron``/``every`` made into times).
    schedule: Schedule = field(init=False, repr=False, compare=False)
    variable: str = "scheduled_time"

    def __post_init__(self) -> None:
        self._check_common()
        where = f"pattern {self.name!r}"
        if self.variable == "fire_time":
            raise ConfigError(
                "fire_time is a parameter of every time job already: choose another name",
                where=where,
                field="variable",
                value=self.variable,
            )
        try:
            zone = time_zone(self.timezone)
        except ValueError as e:
            raise ConfigError(str(e), where=where, field="timezone", value=self.timezone) from None
        if (self.cron is None) == (self.every is None):
            raise ConfigError(
                "a time pattern has either cron (a cron expression) or every (an interval), "
                "not both"
                if self.cron is not None
                else "a time pattern needs cron or every",
                where=where,
                field="every" if self.cron is not None else "cron",
                value=self.every,
            )
        schedule: Schedule
        if self.cron is not None:
            if self.anchor is not None:
                raise ConfigError(
                    "anchor goes with every, not cron",
                    where=where,
                    field="anchor",
                    value=self.anchor,
                )
            try:
                schedule = check_cron(self.cron, zone)
            except ValueError as e:
                raise ConfigError(str(e), where=where, field="cron", value=self.cron) from None
        else:
            try:
                interval = parse_interval(self.every)
            except ValueError as e:
                raise ConfigError(str(e), where=where, field="every", value=self.every) from None
            anchor: datetime | None = None
            if self.anchor is not None:
                try:
                    anchor = parse_anchor(self.anchor, zone)
                except ValueError as e:
                    raise ConfigError(
                        str(e), where=where, field="anchor", value=self.anchor
                    ) from None
            schedule = Every(interval, zone) if anchor is None else Every(interval, zone, anchor)
        object.__setattr__(self, "schedule", schedule)
        if self.catch_up not in CATCH_UP:
            raise ConfigError(
                f"expected one of {', '.join(CATCH_UP)}",
                where=where,
                field="catch_up",
                value=self.catch_up,
            )
        check_count(where, "max_catch_up", self.max_catch_up, low=1, high=100_000)


Pattern = FilePattern | NetworkPattern | HttpPattern | TimePattern
