"""The loop a listening monitor runs: serve the workflow's current rules, again after each
change, until stopped."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

__all__ = ["follow_changes"]


async def follow_changes(
    sync: Callable[[], Awaitable[None]],
    needed: asyncio.Event,
    ready: asyncio.Event,
    stop: asyncio.Event,
) -> None:
    """Run ``sync`` now and whenever ``needed`` is set, until ``stop``. ``ready`` is set only
    once the latest change is served: ``needed`` is cleared before each sync, so a change
    made while one runs (e.g. while a closing listener waits for its connections) gets a
    sync of its own rather than being lost."""
    stopping = asyncio.create_task(stop.wait())
    try:
        while True:
            needed.clear()
            await sync()
            if needed.is_set() and not stop.is_set():
                continue  # changed meanwhile: not ready until that is served too
            ready.set()
            waking = asyncio.create_task(needed.wait())
            await asyncio.wait([stopping, waking], return_when=asyncio.FIRST_COMPLETED)
            waking.cancel()
            if stop.is_set():
                return
    finally:
        stopping.cancel()
