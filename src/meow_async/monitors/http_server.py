"""The HTTP server's connections: aiohttp's protocol, with the limits aiohttp leaves out.

aiohttp (3.14) closes a connection that waits for a request longer than its keep-alive
timeout, but puts no limit on how long a request's headers or body may take, nor on how many
connections are open: one byte a second holds a connection, its descriptor and its buffers
for ever. Here each connection knows its phase (idle, headers, body, handled) and one timer
per connection checks that phase's deadline when it fires, re-arming itself rather than
polling; ``data_received``, the hot path, only notes the time and counts body bytes.

Requests aiohttp's parser refuses get a JSON ``400`` and one log line (rate-limited), not
aiohttp's plain text and a traceback per request.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from ..model.addresses import host_port
from ..model.http_limits import HttpLimits
from .log_limit import http_log

__all__ = ["Connection", "Listener", "Server", "http_log", "raw_response"]

logger = logging.getLogger("meow_async.monitors.http")

IDLE, HEADERS, BODY, HANDLING = range(4)
#: Seconds a connection must have been idle before a new one past the cap may close it.
GRACE = 1.0
#: Seconds a connection past the cap has to send its request (it is then answered 503).
OVER_CAP_WAIT = 2.0


class Listener:
    """One server's limits and open connections (idle ones oldest first, for the cap)."""

    def __init__(self, name: str, limits: HttpLimits) -> None:
        self.name = name  # "http 127.0.0.1:8080", for log lines
        self.limits = limits
        self.open = 0
        self.idle: dict[Connection, None] = {}

    def opened(self, conn: Connection, now: float) -> None:
        """A new connection: over the cap, the oldest idle one goes, or this one is refused."""
        self.open += 1
        if self.open <= self.limits.max_connections:
            return
        oldest = next(iter(self.idle), None)
        if oldest is not None and now - oldest.since >= GRACE:
            http_log.log(
                logging.WARNING,
                f"cap:{self.name}",
                "%s: over max_connections (%d): closed the connection from %s idle longest",
                self.name,
                self.limits.max_connections,
                oldest.peer,
            )
            oldest.end()
        else:
            conn.over_cap = True

    def closed(self, conn: Connection) -> None:
        self.open -= 1
        self.idle.pop(conn, None)


class Connection(RequestHandler):
    """aiohttp's request handler protocol, plus the phase deadlines and the cap."""

    __slots__ = (
        "_armed",
        "_bytes",
        "_last",
        "_peername",
        "_timer",
        "listener",
        "over_cap",
        "phase",
        "since",
    )

    def __init__(self, manager: Server, *, listener: Listener, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.listener = listener
        self.phase = IDLE
        self.since = 0.0  # loop time the phase began
        self._last = 0.0  # loop time of the last read
        self._bytes = 0  # body bytes read in this phase
        self._timer: asyncio.TimerHandle | None = None
        self._armed = 0.0
        self.over_cap = False
        self._peername: Any = None

    # -- asyncio's callbacks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        now = self._loop.time()
        self._peername = transport.get_extra_info("peername")
        self.since = self._last = now
        self.listener.opened(self, now)
        if not self.over_cap:
            self.listener.idle[self] = None
        self._arm(self._due()[0])

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.listener.closed(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        now = self._last = self._loop.time()
        if self.phase == BODY:
            self._bytes += len(data)
        elif self.phase == IDLE:
            self._enter(HEADERS, now)
        super().data_received(data)

    @property
    def peer(self) -> str:
        """The client's address and port, for log lines."""
        name = self._peername
        return host_port(name[0], name[1]) if name else "?"

    # -- what the request handler tells us ----------------------------------------------------

    def reading_body(self) -> None:
        """The headers are in and the handler reads the body: its deadlines start."""
        self._enter(BODY, self._loop.time())

    def handling(self) -> None:
        """The body is in: the server, not the client, takes its time now."""
        self._enter(HANDLING, self._loop.time())

    def handled(self) -> None:
        """The answer is made: waiting for the next request (keep-alive)."""
        self._enter(IDLE, self._loop.time())

    def end(self) -> None:
        """Close at once (over the cap: this idle connection makes room)."""
        self.force_close()

    # -- deadlines ----------------------------------------------------------------------------

    def _enter(self, phase: int, now: float) -> None:
        if self.phase == IDLE:
            self.listener.idle.pop(self, None)
        self.phase, self.since, self._bytes = phase, now, 0
        if self.transport is None:
            return  # closed (a handler cancelled by it ends here): nothing more to watch
        if phase == IDLE and not self.over_cap:
            self.listener.idle[self] = None
        due = self._due()[0]
        if due is not None and (self._timer is None or due < self._armed):
            self._arm(due)

    def _due(self) -> tuple[float | None, str]:
        """When the current phase runs out, and why; None while the server handles it."""
        limits, phase = self.listener.limits, self.phase
        if self.over_cap and phase in (IDLE, HEADERS):
            return self.since + OVER_CAP_WAIT, "cap"
        if phase == IDLE:
            return self.since + limits.idle_timeout, "idle"
        if phase == HEADERS:
            return self.since + limits.header_timeout, "header"
        if phase == BODY:
            stalled = self._last + limits.body_timeout
            slow = self.since + limits.body_timeout + self._bytes / limits.body_min_rate
            return min(stalled, slow), "body"
        return None, ""

    def _arm(self, at: float | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if at is None:
            at = self._loop.time() + self.listener.limits.idle_timeout  # look again then
        self._armed = at
        self._timer = self._loop.call_at(at, self._check)

    def _check(self) -> None:
        self._timer = None
        if self.transport is None:
            return
        due, why = self._due()
        if due is not None and self._loop.time() >= due:
            self._time_out(why)
        else:
            self._arm(due)

    def _time_out(self, why: str) -> None:
        limits, name = self.listener.limits, self.listener.name
        if why == "idle":
            # Normal: a client that keeps a connection and sends nothing more.
            http_log.log(
                logging.DEBUG,
                f"idle:{name}",
                "%s: closed the connection from %s, idle for %gs",
                name,
                self.peer,
                limits.idle_timeout,
            )
            self.force_close()
            return
        if why == "header":
            message = f"the request's headers took more than {limits.header_timeout:g}s"
        elif why == "body" and self._loop.time() >= self._last + limits.body_timeout:
            message = f"no byte of the request's body for {limits.body_timeout:g}s"
        elif why == "body":
            message = f"the request's body came slower than {limits.body_min_rate} bytes/s"
        else:
            message = (
                f"over max_connections ({limits.max_connections}) and no request within "
                f"{OVER_CAP_WAIT:g}s"
            )
        http_log.log(
            logging.WARNING,
            f"{why}:{name}",
            "%s: closed the connection from %s: %s",
            name,
            self.peer,
            message,
        )
        if self.transport is not None and why in ("header", "body"):
            self.transport.write(raw_response(408, "Request Timeout", message))
        self.force_close()

    # -- aiohttp's own errors -------------------------------------------------------------------

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A request aiohttp refused (400) or a handler that failed (500): a JSON answer and
        one line (a traceback only for our own failures)."""
        if status >= 500:
            logger.error(
                "%s: error handling a request from %s", self.listener.name, self.peer, exc_info=exc
            )
            text = "internal error"
        else:
            why = _one_line(message or (str(exc) if exc is not None else "") or "malformed")
            http_log.log(
                logging.WARNING,
                f"bad:{self.listener.name}",
                "%s: malformed request from %s, answered %d: %s",
                self.listener.name,
                self.peer,
                status,
                why,
            )
            text = f"malformed request: {why}"
        if request.writer.output_size > 0:
            raise ConnectionError("the answer was on its way already: the connection is closed")
        resp = web.json_response({"error": text}, status=status)
        resp.force_close()
        return resp

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """aiohttp's other complaints (an unhandled error in its loop): one line."""
        exc = kw.get("exc_info")
        try:
            what = str(args[0]) % args[1:] if args else "error"
        except (TypeError, ValueError):
            what = " ".join(map(str, args))
        logger.error(
            "%s: %s (from %s)%s",
            self.listener.name,
            what,
            self.peer,
            f": {exc!r}" if isinstance(exc, BaseException) else "",
        )


class Server(web.Server):
    """aiohttp's low-level server, making :class:`Connection` protocols for one listener."""

    def __init__(
        self, handler: Callable[[web.BaseRequest], Any], *, listener: Listener, **kwargs: Any
    ) -> None:
        limits = listener.limits
        # aiohttp's own keep-alive close is a backstop behind ours (which counts and logs).
        kwargs.setdefault("keepalive_timeout", 2 * limits.idle_timeout + 1)
        super().__init__(handler, **kwargs)
        self.listener = listener

    def __call__(self) -> RequestHandler:
        return Connection(self, loop=self._loop, listener=self.listener, **self._kwargs)


def raw_response(status: int, reason: str, message: str, headers: str = "") -> bytes:
    """A whole HTTP/1.1 answer with a JSON error body, written past aiohttp (timeouts)."""
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n{headers}\r\n"
    )
    return head.encode() + body


def _one_line(text: str) -> str:
    """aiohttp's parser errors span lines (what was wrong, the bytes, a caret under them)."""
    parts = [s.strip() for s in text.splitlines() if s.strip().strip("^")]
    line = " ".join(parts)
    return line if len(line) <= 200 else line[:199] + "…"
