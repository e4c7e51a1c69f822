"""Monitors watch for triggers and put events on the runner's queue."""

from __future__ import annotations

import asyncio
from typing import Protocol

from ..events import Event
from .files import FileMonitor
from .network import NetworkMonitor

__all__ = ["FileMonitor", "Monitor", "NetworkMonitor"]


class Monitor(Protocol):
    """**Protocol:** runs until ``stop`` is set, putting events on ``events``.

    A full queue makes ``put`` wait: that is the back-pressure, never a reason to drop.
    """

    name: str
    #: Set once the monitor sees every trigger its rules need (e.g. inotify watches are live).
    ready: asyncio.Event

    async def run(self, events: asyncio.Queue[Event], stop: asyncio.Event) -> None: ...
