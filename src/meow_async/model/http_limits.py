"""How long an HTTP client may take, and how many may be connected: one server's limits.

The defaults follow Apache's mod_reqtimeout (``header=20, body=20, MinRate=500``: a slow
client is not cut off while it keeps coming at 500 bytes/s) and the network listeners'
``idle_timeout``; nginx allows 60 s for headers and between body reads, uvicorn 5 s of
keep-alive. HTTP patterns and ``runner.http`` take the same settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from ..exceptions import ConfigError
from .checks import check_count, check_seconds

__all__ = ["DEFAULT_LIMITS", "HTTP_LIMIT_FIELDS", "HttpLimits", "check_limits", "limits_from"]


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpLimits:
    """One HTTP server's limits (seconds, bytes per second, connections)."""

    idle_timeout: float = 30.0
    header_timeout: float = 20.0
    body_timeout: float = 20.0
    body_min_rate: int = 500
    max_connections: int = 512


DEFAULT_LIMITS = HttpLimits()
HTTP_LIMIT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(HttpLimits))


def check_limits(where: str, settings: Any) -> None:
    """Each limit of ``settings`` (an object with the fields as attributes) is in range."""
    for name in ("idle_timeout", "header_timeout", "body_timeout"):
        check_seconds(where, name, getattr(settings, name), above_zero=True)
    check_count(where, "body_min_rate", settings.body_min_rate)
    check_count(where, "max_connections", settings.max_connections)


def limits_from(where: str, field: str, value: Mapping[str, Any]) -> HttpLimits:
    """The limits a mapping such as ``runner.http`` sets (the others: defaults), checked."""
    given = {k: v for k, v in value.items() if k in HTTP_LIMIT_FIELDS}
    out = HttpLimits(**given)
    try:
        check_limits(where, out)
    except ConfigError as e:
        raise ConfigError(
            e.message, where=where, field=f"{field}.{e.field}", value=e.value
        ) from None
    return out
