"""Patterns: what triggers a rule. Frozen, slotted, and checked when made."""

from __future__ import annotations

import itertools
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, cast

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
from .globs import compile_glob
from .http_limits import DEFAULT_LIMITS, HTTP_LIMIT_FIELDS, HttpLimits, check_limits
from .notify import Notify, make_notify
from .secrets import read_secret, secret_header

__all__ = ["Change", "FilePattern", "HttpPattern", "NetworkPattern", "Pattern", "Sweep"]

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

    def _check_common(self) -> None:
        where = f"pattern {self.name!r}"
        check_name("pattern", "name", self.name)
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
)
#: Settings of the server itself: every HTTP pattern on one host:port must agree on them
#: (and ``runner.http`` on the same host:port on the limits).
HTTP_SERVER_FIELDS = ("tls_cert", "tls_key", "tls_client_ca", *HTTP_LIMIT_FIELDS)


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpPattern(_PatternBase):
    """Triggers on an HTTP request to ``route`` on ``host``:``port``: its body becomes a spool
    file, as a network message does, and the request is answered ``202`` once it is safe.

    ``route`` may hold ``{name}`` parts (``/ingest/{instrument}``): their values, the query
    string and the ``headers`` named here reach the recipe as parameters. ``token_env`` or
    ``token_file`` names where the bearer token clients must send is kept (never the token
    itself). Patterns on one host:port share one server, and so its limits: how long a
    connection may stay idle, send its headers or its body, and how many may be open (see
    :class:`HttpLimits`).
    """

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
    #: Seconds an ``Idempotency-Key`` is remembered (across restarts).
    idempotency_window: float = 24 * 3600.0
    #: HTTPS, and client certificates signed by ``tls_client_ca``, as for network patterns.
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    #: Seconds a connection may stay open without a request (before its first, between
    #: keep-alive requests).
    idle_timeout: float = DEFAULT_LIMITS.idle_timeout
    #: Seconds from a request's first byte until its headers are complete.
    header_timeout: float = DEFAULT_LIMITS.header_timeout
    #: Seconds a body may go without a byte; after them, it must have come at
    #: ``body_min_rate`` bytes/s on average.
    body_timeout: float = DEFAULT_LIMITS.body_timeout
    body_min_rate: int = DEFAULT_LIMITS.body_min_rate
    #: Connections open at once on this host:port; past it the oldest idle one is closed,
    #: or the new one answered 503.
    max_connections: int = DEFAULT_LIMITS.max_connections

    def __post_init__(self) -> None:
        self._check_common()
        where = f"pattern {self.name!r}"
        check_port(where, "port", self.port)
        check_host(where, "host", self.host)
        check_limits(where, self)
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
        for name in ("hmac_header", "timestamp_header"):
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
        where = f"pattern {self.name!r}"
        return read_secret(where, "token", self.token_env, self.token_file, "the bearer token")

    def hmac_secret(self) -> str | None:
        """The secret request signatures are made with."""
        where = f"pattern {self.name!r}"
        return read_secret(
            where, "hmac_secret", self.hmac_secret_env, self.hmac_secret_file, "the HMAC secret"
        )

    @property
    def secret_headers(self) -> tuple[str, ...]:
        """The chosen ``headers`` whose values are credentials: recorded as ``[redacted]``."""
        mine = self.hmac_header.lower()
        return tuple(h for h in self.headers if h == mine or secret_header(h))

    def limits(self) -> HttpLimits:
        return HttpLimits(**{f: getattr(self, f) for f in HTTP_LIMIT_FIELDS})

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
        """What every HTTP pattern on one host:port must agree on: the server's TLS and
        limits."""
        return tuple(getattr(self, f) for f in HTTP_SERVER_FIELDS)


Pattern = FilePattern | NetworkPattern | HttpPattern
