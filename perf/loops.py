"""Event loops by name: the stdlib's, or uvloop when it is installed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

LOOPS = ("asyncio", "uvloop")


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            raise SystemExit("uvloop is not installed here; use --loop asyncio") from None
        return uvloop.new_event_loop
    return asyncio.new_event_loop
