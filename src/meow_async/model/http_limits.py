"""How long an HTTP client may take, and how many may be connected: one server's limits.

The defaults follow Apache's mod_reqtimeout (``header=20, body=20, MinRate=500``: a slow
client is not cut off while it keeps coming at 500 bytes/s) and the network listeners'
``idle_timeout``; nginx allows 60 s for headers and between body reads, uvicorn 5 s of
keep-alive. HTTP patterns and ``runner.http`` take the same settings: each declares them with
:func:`limit`, so the kind (check and schema) and the default are stated here once.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from .settings import check_settings, count, seconds

__all__ = ["DEFAULT_LIMITS", "HTTP_LIMIT_FIELDS", "HttpLimits", "limit", "limits_of"]


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpLimits:
    """One HTTP server's limits (seconds, bytes per second, connections)."""

    #: Seconds a connection may stay open without a request (before its first, between
    #: keep-alive requests).
    idle_timeout: float = field(default=30.0, metadata=seconds(above_zero=True))
    #: Seconds from a request's first byte until its headers are complete.
    header_timeout: float = field(default=20.0, metadata=seconds(above_zero=True))
    #: Seconds a body may go without a byte; after them, it must have come at
    #: ``body_min_rate`` bytes/s on average.
    body_timeout: float = field(default=20.0, metadata=seconds(above_zero=True))
    #: Bytes per second a body must come at, on average, once ``body_timeout`` has passed.
    body_min_rate: int = field(default=500, metadata=count())
    #: Connections open at once on this host:port; past it the oldest idle one is closed,
    #: or the new one answered 503.
    max_connections: int = field(default=512, metadata=count())

    def __post_init__(self) -> None:
        check_settings(self, "http")


DEFAULT_LIMITS = HttpLimits()
HTTP_LIMIT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(HttpLimits))
_FIELDS = {f.name: f for f in fields(HttpLimits)}


def limit(name: str) -> Any:
    """The field a settings class (an HTTP pattern, ``runner.http``) declares limit ``name``
    with: its default and its kind, as :class:`HttpLimits` has them."""
    return field(default=getattr(DEFAULT_LIMITS, name), metadata=_FIELDS[name].metadata)


def limits_of(settings: Any) -> HttpLimits:
    """The limits of ``settings``: an object with the limits as attributes, or a mapping
    (``runner.http`` as kept), whose missing ones are the defaults."""
    if isinstance(settings, dict):
        return HttpLimits(**{k: settings[k] for k in HTTP_LIMIT_FIELDS if k in settings})
    return HttpLimits(**{k: getattr(settings, k) for k in HTTP_LIMIT_FIELDS})
