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
from zoneinfo import ZoneInfo

from ..exceptions import ConfigError
from .checks import check_name, check_variable
from .filters import Filter, compile_filter
from .framing import FRAMINGS
from .globs import compile_glob
from .http_limits import HTTP_LIMIT_FIELDS, HttpLimits, limit, limits_of
from .notify import Notify, make_notify
from .schedule import (
    MIN_INTERVAL,
    Every,
    Schedule,
    check_cron,
    parse_anchor,
    parse_interval,
    time_zone,
)
from .secrets import read_secret, secret_header
from .settings import (
    HEADER_NAME,
    block,
    check_settings,
    choice,
    count,
    custom,
    env_name,
    flag,
    header_name,
    host,
    optional,
    params,
    port,
    seconds,
    secret_file,
    text,
    variable,
)
from .settings import name as name_kind

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


def _finite(where: str, field: str, value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError("expected a finite number", field=field, value=value)
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Sweep:
    """Values from ``start`` to ``stop`` (inclusive when reached) in steps of ``jump``."""

    start: float = field(metadata=custom({"type": "number"}, _finite))
    stop: float = field(metadata=custom({"type": "number"}, _finite))
    jump: float = field(metadata=custom({"type": "number", "not": {"const": 0}}, _finite))

    def __post_init__(self) -> None:
        check_settings(self, "")
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


def _sweeps(where: str, field: str, value: object) -> dict[str, Sweep]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(
            "expected a mapping of variable to {start, stop, jump}",
            where=where,
            field=field,
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


_SWEEP_SCHEMA = {
    "type": ["object", "null"],
    "propertyNames": {"$ref": "#/$defs/variable"},
    "additionalProperties": {"$ref": "#/$defs/Sweep"},
}


def _notify(where: str, field: str, value: object) -> Notify | None:
    try:
        return make_notify(value)
    except ConfigError as e:
        sub = f"{field}.{e.field}" if e.field else field
        raise ConfigError(e.message, where=where, field=sub, value=e.value) from None


def _when(where: str, field: str, value: object) -> object:
    """A filter's text; whether it compiles depends on the kind of pattern (its names), which
    ``_check_common`` knows."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            'expected a CEL expression, e.g. body.ref == "refs/heads/main"',
            where=where,
            field=field,
            value=value,
        )
    return value


_WHEN_SCHEMA = {"type": "string", "pattern": r"\S"}


@dataclass(frozen=True, slots=True, kw_only=True)
class _PatternBase:
    """What every pattern has: a name, the recipe it triggers, and the job's parameters."""

    name: str
    #: The name of the recipe it runs.
    recipe: str = field(metadata=name_kind())
    #: The parameter that holds the triggering file's path (or the message's).
    variable: str = field(default="input_file", metadata=variable())
    parameters: Mapping[str, Any] = field(default_factory=dict, metadata=params())
    #: Like parameters, and also recorded under ``outputs`` in job.json.
    outputs: Mapping[str, Any] = field(default_factory=dict, metadata=params())
    #: ``name: {start, stop, jump}`` for each swept variable: one job per point.
    sweep: Mapping[str, Sweep | Mapping[str, float]] = field(
        default_factory=dict, metadata=custom(_SWEEP_SCHEMA, _sweeps, uses=(Sweep,))
    )
    #: A failed job runs again up to ``retries`` times, after ``retry_backoff`` seconds,
    #: doubling each time.
    retries: int = field(default=0, metadata=count(low=0, high=100))
    retry_backoff: float = field(default=1.0, metadata=seconds())
    #: What a restart does with a job that was running when the runner died.
    on_restart: OnRestart = field(default="rerun", metadata=choice(*ON_RESTART))
    #: Who hears of a job's end (a webhook, an email): see docs/notifications.md.
    notify: Notify | Mapping[str, Any] | None = field(
        default=None, metadata=optional(block(Notify, _notify))
    )
    #: A CEL expression on the event (docs/schedules-and-filters.md): only events it holds
    #: true for make jobs, e.g. ``body.ref == "refs/heads/main"``.
    when: str | None = field(default=None, metadata=optional(custom(_WHEN_SCHEMA, _when)))
    #: ``when`` compiled; None without one.
    filter: Filter | None = field(init=False, default=None, repr=False, compare=False)
    #: What a filter of this kind of pattern sees (model/filters.py's NAMES).
    EVENT_KIND: ClassVar[str] = "file"

    def _check_common(self) -> None:
        where = f"pattern {self.name!r}"
        check_name("pattern", "name", self.name)
        check_settings(self, where)
        if self.when is not None:
            try:
                object.__setattr__(self, "filter", compile_filter(self.EVENT_KIND, self.when))
            except ValueError as e:
                raise ConfigError(str(e), where=where, field="when", value=self.when) from None
        for var in (*self.outputs, *self.sweep):
            if var == self.variable:
                raise ConfigError(
                    f"{var!r} is already the triggering variable",
                    where=where,
                    field="outputs" if var in self.outputs else "sweep",
                    value=var,
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


def _glob(where: str, field: str, value: object) -> object:
    if not isinstance(value, str):
        raise ConfigError("expected a string", where=where, field=field, value=value)
    try:
        compile_glob(value)
    except ValueError as e:
        raise ConfigError(
            f"invalid glob {value!r}: {e}", where=where, field=field, value=value
        ) from None
    return value


_GLOB_SCHEMA = {"type": "string", "minLength": 1, "not": {"pattern": "^/"}}


def _changes(where: str, field: str, value: object) -> frozenset[Change]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigError("expected a list of changes", where=where, field=field, value=value)
    try:
        parsed = frozenset(Change(c) for c in value)
    except ValueError:
        raise ConfigError(
            f"unknown change in {sorted(map(str, value))}: choose from "
            f"{', '.join(c.value for c in Change)}",
            where=where,
            field=field,
            value=value,
        ) from None
    if not parsed:
        raise ConfigError("at least one change is needed", where=where, field=field, value=value)
    return parsed


def _sentinel(where: str, field: str, value: object) -> object:
    if not isinstance(value, str) or not value or value.startswith("/") or ".." in value.split("/"):
        raise ConfigError(
            "expected a path inside the watched folder, relative to it, with templates "
            "such as {REL_PATH}.done or {REL_DIR}/COMPLETE",
            where=where,
            field=field,
            value=value,
        )
    return value


_SENTINEL_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "not": {"anyOf": [{"pattern": "^/"}, {"pattern": "(^|/)\\.\\.(/|$)"}]},
}


@dataclass(frozen=True, slots=True, kw_only=True)
class FilePattern(_PatternBase):
    """Triggers on files under the watched folder whose relative path matches ``glob``.

    ``retroactive`` also triggers, once, for matching files already present when the rule
    starts (at runner start or when the rule is added at run time).
    """

    #: Path pattern relative to the watched folder, e.g. ``raw/**/*.h5``.
    glob: str = field(metadata=custom(_GLOB_SCHEMA, _glob))
    #: Which changes trigger: any of created, modified, moved, deleted.
    changes: frozenset[Change] = field(
        default=DEFAULT_CHANGES,
        metadata=custom(
            {"type": "array", "items": {"enum": [c.value for c in Change]}, "minItems": 1},
            _changes,
        ),
    )
    retroactive: bool = field(default=False, metadata=flag())
    #: Hand the file on only once complete: no change for ``settle`` s, mtime at least
    #: ``min_age`` s old, and the ``sentinel`` file (a template, e.g. "{PATH}.done") there.
    settle: float = field(default=0.0, metadata=seconds())
    min_age: float = field(default=0.0, metadata=seconds())
    sentinel: str | None = field(
        default=None, metadata=optional(custom(_SENTINEL_SCHEMA, _sentinel))
    )
    #: Events of this rule less than ``coalesce`` s apart make one job, for the latest file
    #: (0: every event makes its job).
    coalesce: float = field(default=0.0, metadata=seconds())
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._check_common()
        object.__setattr__(self, "regex", compile_glob(self.glob))

    def matches(self, rel_path: str) -> bool:
        return self.regex.fullmatch(rel_path) is not None


Framing = Literal["connection", "delimiter", "length"]

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


def _tls_file() -> dict[str, Any]:
    """A certificate, key or CA file (that it exists, only validate can tell)."""

    def check(where: str, field: str, value: object) -> object:
        if not isinstance(value, str | os.PathLike) or not os.path.isfile(value):
            raise ConfigError(f"no such file: {value}", where=where, field=field, value=value)
        return os.fspath(value)

    return custom({"type": "string", "minLength": 1}, check)


#: TLS needs a certificate and its key, and client certificates need TLS.
_TLS_SCHEMA: dict[str, Any] = {
    "dependentRequired": {
        "tls_cert": ["tls_key"],
        "tls_key": ["tls_cert"],
        "tls_client_ca": ["tls_cert", "tls_key"],
    }
}


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

    port: int = field(metadata=port())
    host: str = field(default="127.0.0.1", metadata=host())
    framing: Framing = field(default="connection", metadata=choice(*FRAMINGS, what="framing"))
    delimiter: str = field(default="\n", metadata=text("expected a non-empty string"))
    max_size: int = field(default=64 * 1024 * 1024, metadata=count())
    max_connections: int = field(default=256, metadata=count())
    idle_timeout: float = field(default=30.0, metadata=seconds(above_zero=True))
    ack: bool = field(default=False, metadata=flag())
    allow_empty: bool = field(default=False, metadata=flag())
    max_waiting: int = field(default=1024, metadata=count())
    max_waiting_per_peer: int = field(default=256, metadata=count())
    handshake_timeout: float = field(default=5.0, metadata=seconds(above_zero=True))
    tls_cert: str | None = field(default=None, metadata=optional(_tls_file()))
    tls_key: str | None = field(default=None, metadata=optional(_tls_file()))
    tls_client_ca: str | None = field(default=None, metadata=optional(_tls_file()))

    extra_schema: ClassVar[dict[str, Any]] = _TLS_SCHEMA

    def __post_init__(self) -> None:
        self._check_common()
        where = f"pattern {self.name!r}"
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
    """``tls_cert`` and ``tls_key`` together, ``tls_client_ca`` only with them."""
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
#: Settings of the server itself: every HTTP pattern on one host:port must agree on them
#: (and ``runner.http`` on the same host:port on the limits).
HTTP_SERVER_FIELDS = ("tls_cert", "tls_key", "tls_client_ca", *HTTP_LIMIT_FIELDS)
#: How a signed request is signed: meow_async's own scheme (a timestamp signed with the body),
#: or GitHub's (``X-Hub-Signature-256``, the body alone).
SIGNATURES: tuple[str, ...] = ("meow", "github")
GITHUB_HEADER = "X-Hub-Signature-256"


def _route(where: str, field: str, value: object) -> object:
    if not isinstance(value, str) or not value.startswith("/") or " " in value:
        raise ConfigError(
            "expected a URL path starting with '/', e.g. /ingest/{instrument}",
            where=where,
            field=field,
            value=value,
        )
    rest = _ROUTE_PART.sub("", value)
    if "{" in rest or "}" in rest:
        raise ConfigError(
            "route parts are written {name}, a name being letters, digits and _",
            where=where,
            field=field,
            value=value,
        )
    return value


_ROUTE_SCHEMA = {"type": "string", "pattern": r"^/[^ {}]*(\{[A-Za-z_][A-Za-z0-9_]*\}[^ {}]*)*$"}


def _methods(where: str, field: str, value: object) -> tuple[str, ...]:
    methods = (value,) if isinstance(value, str) else value
    if not isinstance(methods, list | tuple) or not methods:
        raise ConfigError(
            f"expected a list of methods from {', '.join(HTTP_METHODS)}",
            where=where,
            field=field,
            value=value,
        )
    upper = tuple(dict.fromkeys(str(m).upper() for m in methods))
    for m in methods:
        if str(m).upper() not in HTTP_METHODS:
            raise ConfigError(
                f"unknown method {str(m).upper()!r}: choose from {', '.join(HTTP_METHODS)}",
                where=where,
                field=field,
                value=m,
            )
    return upper


def _any_case(word: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" for c in word)


_METHOD_SCHEMA = {"type": "string", "pattern": f"^({'|'.join(map(_any_case, HTTP_METHODS))})$"}
_METHODS_SCHEMA = {
    "anyOf": [_METHOD_SCHEMA, {"type": "array", "items": _METHOD_SCHEMA, "minItems": 1}]
}


def _headers(where: str, field: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ConfigError(
            "expected a list of header names, e.g. [X-Instrument]",
            where=where,
            field=field,
            value=value,
        )
    for h in value:
        if not isinstance(h, str) or not HEADER_NAME.fullmatch(h):
            raise ConfigError(
                "expected a header name (letters, digits, -)", where=where, field=field, value=h
            )
    return tuple(h.lower() for h in value)


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

    EVENT_KIND: ClassVar[str] = "http"

    #: The URL path, e.g. ``/ingest/{instrument}``; each ``{name}`` part is a parameter.
    route: str = field(metadata=custom(_ROUTE_SCHEMA, _route))
    port: int = field(metadata=port())
    host: str = field(default="127.0.0.1", metadata=host())
    #: Any of GET, POST, PUT, PATCH, DELETE (any case).
    methods: tuple[str, ...] = field(default=("POST",), metadata=custom(_METHODS_SCHEMA, _methods))
    max_size: int = field(default=64 * 1024 * 1024, metadata=count())
    #: Request headers that reach the recipe as parameters, e.g. ``[X-Instrument]``.
    headers: tuple[str, ...] = field(
        default=(),
        metadata=custom(
            {"type": "array", "items": {"type": "string", "pattern": f"^{HEADER_NAME.pattern}$"}},
            _headers,
        ),
    )
    token_env: str | None = field(default=None, metadata=optional(env_name()))
    token_file: str | None = field(default=None, metadata=optional(secret_file()))
    #: HMAC-SHA256 signatures instead of (or as well as) a token: the client sends
    #: ``sha256=<hex of HMAC(secret, TIMESTAMP + "." + body)>`` in ``hmac_header`` and the
    #: Unix time it signed in ``timestamp_header``; older than ``hmac_window`` seconds, or a
    #: signature seen before within it, is refused.
    hmac_secret_env: str | None = field(default=None, metadata=optional(env_name()))
    hmac_secret_file: str | None = field(default=None, metadata=optional(secret_file()))
    hmac_header: str = field(default="X-Signature-256", metadata=header_name())
    timestamp_header: str = field(default="X-Timestamp", metadata=header_name())
    hmac_window: float = field(default=300.0, metadata=seconds(above_zero=True))
    #: ``meow`` (above) or ``github``: GitHub's own webhooks, ``sha256=<hex of HMAC(secret,
    #: body)>`` in ``X-Hub-Signature-256`` (unless ``hmac_header`` says otherwise), with no
    #: timestamp; either way a signature seen before (kept for twice ``hmac_window``, across
    #: restarts) is refused as a replay.
    signature: Literal["meow", "github"] = field(default="meow", metadata=choice(*SIGNATURES))
    #: The header clients send the token in: ``Authorization`` (as ``Bearer <token>``), or
    #: another whose value is the token itself, e.g. ``X-Gitlab-Token`` for GitLab's webhooks.
    token_header: str = field(
        default="Authorization",  # a header's name, not a secret
        metadata=header_name(),
    )
    #: Seconds an ``Idempotency-Key`` is remembered (across restarts).
    idempotency_window: float = field(default=24 * 3600.0, metadata=seconds())
    #: HTTPS, and client certificates signed by ``tls_client_ca``, as for network patterns.
    tls_cert: str | None = field(default=None, metadata=optional(_tls_file()))
    tls_key: str | None = field(default=None, metadata=optional(_tls_file()))
    tls_client_ca: str | None = field(default=None, metadata=optional(_tls_file()))
    #: Seconds a connection may stay open without a request (before its first, between
    #: keep-alive requests).
    idle_timeout: float = limit("idle_timeout")
    #: Seconds from a request's first byte until its headers are complete.
    header_timeout: float = limit("header_timeout")
    #: Seconds a body may go without a byte; after them, it must have come at
    #: ``body_min_rate`` bytes/s on average.
    body_timeout: float = limit("body_timeout")
    #: Bytes per second a body must come at, on average, once ``body_timeout`` has passed.
    body_min_rate: int = limit("body_min_rate")
    #: Connections open at once on this host:port; past it the oldest idle one is closed,
    #: or the new one answered 503.
    max_connections: int = limit("max_connections")

    extra_schema: ClassVar[dict[str, Any]] = {
        **_TLS_SCHEMA,
        "not": {
            "anyOf": [
                {"required": ["token_env", "token_file"]},
                {"required": ["hmac_secret_env", "hmac_secret_file"]},
            ]
        },
    }

    def __post_init__(self) -> None:
        self._check_common()
        where = f"pattern {self.name!r}"
        names = _ROUTE_PART.findall(self.route)
        for var in names:
            if var in (self.variable, "query", "headers") or names.count(var) > 1:
                raise ConfigError(
                    f"route part {{{var}}} clashes with another parameter",
                    where=where,
                    field="route",
                    value=self.route,
                )
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
        if self.signature == "github" and self.hmac_header == "X-Signature-256":
            object.__setattr__(self, "hmac_header", GITHUB_HEADER)
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
        mine = (self.hmac_header.lower(), self.token_header.lower())
        return tuple(h for h in self.headers if h in mine or secret_header(h))

    def limits(self) -> HttpLimits:
        return limits_of(self)

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


_UTC = ZoneInfo("UTC")
CatchUp = Literal["none", "latest", "all"]
CATCH_UP: tuple[str, ...] = ("none", "latest", "all")


def _cron(where: str, field: str, value: object) -> object:
    """Its syntax (cronsim's rules); the schedule itself is made in the pattern's zone."""
    try:
        check_cron(value, _UTC)
    except ValueError as e:
        raise ConfigError(str(e), where=where, field=field, value=value) from None
    return value


#: Five fields, or six with seconds first (cronsim checks each field; the schema only counts).
_CRON_SCHEMA = {"type": "string", "pattern": r"^\s*\S+(\s+\S+){4,5}\s*$"}


def _every(where: str, field: str, value: object) -> object:
    try:
        parse_interval(value)
    except ValueError as e:
        raise ConfigError(str(e), where=where, field=field, value=value) from None
    return value


_EVERY_SCHEMA = {
    "anyOf": [
        {"type": "number", "minimum": MIN_INTERVAL},
        {"type": "string", "pattern": r"^\s*( *\d+(\.\d+)? *(ms|s|m|h|d))+ *\s*$"},
    ]
}


def _zone(where: str, field: str, value: object) -> object:
    try:
        time_zone(value)
    except ValueError as e:
        raise ConfigError(str(e), where=where, field=field, value=value) from None
    return value


def _anchor(where: str, field: str, value: object) -> object:
    """ISO 8601; read in the pattern's zone when it has no offset (``__post_init__``)."""
    try:
        parse_anchor(value, _UTC)
    except ValueError as e:
        raise ConfigError(str(e), where=where, field=field, value=value) from None
    return value


#: ISO 8601 as Python reads it: a date, then maybe a time and an offset.
_ANCHOR_SCHEMA = {"type": "string", "pattern": r"^\s*\d{4}-?\d{2}-?\d{2}([T ].*)?$"}


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
    cron: str | None = field(default=None, metadata=optional(custom(_CRON_SCHEMA, _cron)))
    #: An interval: 500ms, 10s, 5m, 1h30m, 1d (or a number of seconds).
    every: str | float | None = field(
        default=None, metadata=optional(custom(_EVERY_SCHEMA, _every))
    )
    #: IANA zone of ``cron`` and of the times a job is given (and of an ``anchor`` without an
    #: offset).
    timezone: str = field(default="UTC", metadata=custom({"type": "string", "minLength": 1}, _zone))
    #: ISO 8601 time ``every`` counts from (default: the Unix epoch).
    anchor: str | None = field(default=None, metadata=optional(custom(_ANCHOR_SCHEMA, _anchor)))
    #: What ticks missed while no runner ran do: none, latest or all.
    catch_up: CatchUp = field(default="latest", metadata=choice(*CATCH_UP))
    #: With catch_up all, at most this many missed ticks run (the most recent); the older are
    #: skipped and logged.
    max_catch_up: int = field(default=100, metadata=count(low=1, high=100_000))
    #: Ticks named once checked (``cron``/``every`` made into times).
    schedule: Schedule = field(init=False, repr=False, compare=False)
    #: The parameter that holds the tick's scheduled time (``fire_time`` holds when it ran).
    variable: str = field(default="scheduled_time", metadata=variable())

    #: What only the keys together can say (``__post_init__`` checks the same).
    extra_schema: ClassVar[dict[str, Any]] = {
        "oneOf": [{"required": ["cron"]}, {"required": ["every"]}],
        "dependentRequired": {"anchor": ["every"]},
        "not": {"required": ["variable"], "properties": {"variable": {"const": "fire_time"}}},
    }

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
        zone = time_zone(self.timezone)  # checked by its kind
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
            schedule = check_cron(self.cron, zone)
        else:
            interval = parse_interval(self.every)
            anchor: datetime | None = None
            if self.anchor is not None:
                anchor = parse_anchor(self.anchor, zone)
            schedule = Every(interval, zone) if anchor is None else Every(interval, zone, anchor)
        object.__setattr__(self, "schedule", schedule)


Pattern = FilePattern | NetworkPattern | HttpPattern | TimePattern
