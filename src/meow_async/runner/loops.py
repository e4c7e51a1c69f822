"""Choosing the event loop: uvloop when asked for or available, else asyncio's own."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..exceptions import ConfigError
from ..model.config import LoopName

__all__ = ["loop_factory"]


def loop_factory(name: LoopName = "auto") -> Callable[[], asyncio.AbstractEventLoop]:
    """A factory for ``asyncio.Runner(loop_factory=...)``; a factory, not a policy (3.12+)."""
    if name == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise ConfigError(
                "uvloop is not installed here; use --loop asyncio", field="loop", value=name
            ) from None
        return asyncio.new_event_loop
    return uvloop.new_event_loop
