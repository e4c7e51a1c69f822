"""A rule's trigger as one line of text: the banner of ``meow-async run``, ``status`` and
``/status`` show it (here, not in runner/endpoints.py, so that ``status`` loads no aiohttp)."""

from __future__ import annotations

from .addresses import host_port
from .patterns import FilePattern, HttpPattern, Pattern, TimePattern

__all__ = ["trigger_text"]


def trigger_text(p: Pattern, port: int | None) -> str:
    """A rule's trigger as the banner of ``meow-async run`` shows it."""
    return _trigger(p, port) + (f" when {_short(p.when)}" if p.when is not None else "")


def _trigger(p: Pattern, port: int | None) -> str:
    if isinstance(p, FilePattern):
        return p.glob
    if isinstance(p, TimePattern):
        zone = f" ({p.timezone})" if p.cron is not None and p.timezone != "UTC" else ""
        return p.schedule.describe() + zone
    where = host_port(p.host, port if port is not None else p.port)
    if isinstance(p, HttpPattern):
        return f"http {'|'.join(p.methods)} http://{where}{p.route}"
    return f"tcp {where}" + (" tls" if p.tls else "")


def _short(text: str, width: int = 60) -> str:
    one = " ".join(text.split())
    return one if len(one) <= width else one[: width - 1] + "…"
