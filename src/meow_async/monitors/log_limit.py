"""Log lines a remote peer can cause, at a rate no peer can turn into a flood.

A port scanner, a TLS client without a certificate, or 5000 idle connections over a cap would
each write a line per connection; the first line of a kind is written at once, later ones at
most once per ``every`` seconds, each saying how many were held back since.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

__all__ = ["LogLimit", "http_log"]


class LogLimit:
    def __init__(self, logger: logging.Logger, every: float = 10.0) -> None:
        self._logger = logger
        self._every = every
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        #: Every call, logged or held back, by the kind's first part ("cap", "tls", ...).
        self.counts: Counter[str] = Counter()

    def log(self, level: int, kind: str, msg: str, *args: object) -> None:
        """Log ``msg`` unless a line of this ``kind`` went out less than ``every`` s ago; then
        count it, and say how many were held back once the ``every`` s are over."""
        self.counts[kind.partition(":")[0]] += 1
        if not self._logger.isEnabledFor(level):
            return
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self._every:
            self._held[kind] = self._held.get(kind, 0) + 1
            if self._held[kind] == 1:  # a burst then quiet must still say how big it was
                loop = asyncio.get_running_loop()
                loop.call_later(last + self._every - now, self._summary, level, kind, msg, args)
            return
        self._last[kind] = now
        held = self._held.pop(kind, 0)
        if held and last is not None:
            msg += f" ({held} more like this in the last {now - last:.0f}s)"
        self._logger.log(level, msg, *args)

    def _summary(self, level: int, kind: str, msg: str, args: tuple[object, ...]) -> None:
        if self._held.get(kind):
            self.log(level, kind, msg, *args)  # one of them, with the count


#: The HTTP servers' lines a client can cause (timeouts, caps, malformed requests, a full disk),
#: counted by kind: ``meow_connections_closed_total`` reads ``counts`` (idle, header, body,
#: cap). Here rather than in ``http_server`` (aiohttp's) so that a runner only made, as
#: ``validate`` makes one, loads no aiohttp.
http_log = LogLimit(logging.getLogger("meow_async.monitors.http"))
