"""HTTP triggers: an aiohttp server per host:port, serving every HTTP pattern's route on it.

A request's body is streamed into a spool file and accepted through the network monitor's
journal (one spool, one journal, one recovery), then answered ``202`` with the message id and
the ids of the jobs it makes: the same promise as a network pattern's ``ack``. Routes follow
the workflow while the runner runs; servers open and close as host:port pairs are needed.
Connections are served by ``http_server`` (timeouts, the connection cap); what must outlive a
restart (idempotent answers, signatures used) is kept by ``http_records``.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import hmac
import json
import logging
import re
import socket
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from ..exceptions import ConfigError, MonitorError
from ..model.addresses import host_port
from ..model.events import Event
from ..model.filters import ABSENT, Later, parse_json
from ..model.http_limits import DEFAULT_LIMITS, HTTP_LIMIT_FIELDS, HttpLimits
from ..model.jobs import job_id_for
from ..model.patterns import HttpPattern
from ..model.rules import Rule
from ..model.secrets import REDACTED
from ..model.workflow import Workflow
from .filtering import Filtering
from .follow import follow_changes
from .http_records import IdempotencyKeys, SeenSignatures
from .log_limit import http_log
from .network import NetworkMonitor, bind_tcp, tls_context
from .spool import MessageTooLarge

if TYPE_CHECKING:  # aiohttp's server is imported when one starts: `validate` never loads it
    from collections.abc import Awaitable, Callable

    from aiohttp import web

    from .http_server import Connection, Server

    Operator = Callable[[web.BaseRequest], Awaitable[web.StreamResponse | None]]

__all__ = ["HttpMonitor"]

logger = logging.getLogger("meow_async.monitors.http")

Key = tuple[str, int, str]  # host, port, and the pattern's name when it asked for port 0
_CHUNK = 64 * 1024
_ANY4, _ANY6 = "0.0.0.0", "::"  # noqa: S104 - the wildcard addresses, matched, not bound
#: Seconds a client is told to wait when the events queue and the backlog are full.
RETRY_AFTER = 1
#: Seconds a client is told to wait when the disk is full.
RETRY_AFTER_FULL = 60
#: A signed request's timestamp: the Unix time in whole seconds, ASCII digits only (no sign,
#: no fraction, no exponent: ``nan``, ``inf``, ``1e9``, ``+1``, ``0x10`` are all refused).
_STAMP = re.compile(r"[0-9]{1,15}")
#: What a full disk raises: no space, over the quota, over the process's file size limit.
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class HttpMonitor:
    """Serves the HTTP patterns; requests become events through the network monitor."""

    name = "http"

    def __init__(self, workflow: Workflow, network: NetworkMonitor) -> None:
        self.workflow = workflow
        self.network = network
        self.ready = asyncio.Event()
        self._socks: dict[Key, socket.socket] = {}
        self._servers: dict[Key, tuple[Server, asyncio.AbstractServer]] = {}
        #: Our servers' connection class once one has started (a request seen before comes
        #: from some other aiohttp server); kept here, not imported per request (2-3 us each).
        self._ours: tuple[type[Connection], ...] = ()
        #: The TLS files each server was started with: a change (a reload) starts it again.
        self._tls_of: dict[Key, tuple[Any, ...] | None] = {}
        self._queue: asyncio.Queue[Event] | None = None
        self._accepting = False
        self._sync_needed = asyncio.Event()
        self._routes: dict[Key, list[tuple[Any, list[Rule]]]] | None = None
        self._routes_of: dict[str, Rule] | None = None
        self._keys = IdempotencyKeys(network.spool_dir, durable=network.durable)
        self._in_flight: dict[str, asyncio.Future[web.Response]] = {}
        self._signatures = SeenSignatures(network.spool_dir, durable=network.durable)
        self._signing: set[str] = set()  # signatures of requests being read now
        self.responses: Counter[int] = Counter()  # by status, for /metrics
        self._by_port: dict[tuple[str, int], Key] | None = None
        self._ports: dict[Key, int] = {}
        self._putting: set[asyncio.Future[None]] = set()  # accepted events waiting for room
        self._secret_of: dict[int, tuple[HttpPattern, str | None, str | None]] = {}
        #: runner.http: its server's key and the answers it gives (see endpoints.py).
        self._operator: tuple[Key, Operator, HttpLimits] | None = None
        workflow.add_validator(self._validate)

    # -- what is served -----------------------------------------------------------------------

    def rules(self, rules: dict[str, Rule] | None = None) -> list[Rule]:
        rules = self.workflow.rules if rules is None else rules
        return [r for r in rules.values() if isinstance(r.pattern, HttpPattern)]

    def active(self) -> bool:
        """Serving anything now: HTTP patterns' routes, or ``runner.http``."""
        return bool(self.rules()) or self._operator is not None

    def serve_operator(
        self, host: str, port: int, answer: Operator, limits: HttpLimits = DEFAULT_LIMITS
    ) -> None:
        """Serve ``runner.http``'s paths on ``host``:``port`` too (beside any HTTP patterns'
        routes there, whose limits must then be the same)."""
        self._operator = ((host, port, "" if port else "runner.http"), answer, limits)

    def operator_port(self) -> int | None:
        if self._operator is None or self._operator[0] not in self._socks:
            return None
        return self._port(self._operator[0])

    def ports(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for rule in self.rules():
            key = self._resolve(rule.pattern)  # type: ignore[arg-type]
            if key in self._socks:
                out[rule.name] = self._port(key)
        return out

    def check(self) -> None:
        """MonitorError if two patterns claim one route with different settings."""
        _claims(self.rules(), self._operator)

    def _validate(self, rules: dict[str, Rule]) -> None:
        mine = self.rules(rules)
        _claims(mine, self._operator)
        if not self._accepting:
            return
        self.ready.clear()  # set again once _sync has served the change (Runner.wait_ready)
        for rule in mine:
            key = self._resolve(rule.pattern)  # type: ignore[arg-type]
            if key not in self._socks:
                self._bound(key, bind_tcp(rule.pattern, "http"))  # an error at the call
        self._sync_needed.set()

    def _wanted(self) -> dict[Key, list[Any]]:
        """Each host:port to serve, with what is served there (patterns, runner.http)."""
        wanted: dict[Key, list[Any]] = {}
        if self._operator is not None:
            key, _, limits = self._operator
            wanted[key] = [_Operator(key[0], key[1], limits)]
        for rule in self.rules():
            key = self._resolve(rule.pattern)  # type: ignore[arg-type]
            wanted.setdefault(key, []).append(rule.pattern)
        return wanted

    def bind(self) -> None:
        """Bind every host:port the HTTP rules need; MonitorError names one that fails."""
        try:
            for key, served in self._wanted().items():
                if key not in self._socks:
                    self._bound(key, bind_tcp(served[0], "http"))
        except MonitorError:
            for sock in self._socks.values():
                sock.close()
            self._socks.clear()
            raise

    async def run(self, events: asyncio.Queue[Event], stop: asyncio.Event) -> None:
        self._queue = events
        self._keys.load()
        self._signatures.load()
        for entry in self.network.pending_entries():  # accepted just before a kill
            if isinstance(signed := entry.get("signature"), list) and len(signed) == 2:
                self._signatures.remember(str(signed[0]), float(signed[1]))
        self.bind()
        self._accepting = True
        unsubscribe = self.workflow.subscribe(self._sync_needed.set)
        try:
            await follow_changes(self._sync, self._sync_needed, self.ready, stop)
        finally:
            unsubscribe()
            self._accepting = False
            for key in list(self._servers):
                await self._close(key)
            for sock in self._socks.values():
                sock.close()
            self._socks.clear()
            self._keys.close()
            self._signatures.close()

    async def _sync(self) -> None:
        wanted = self._wanted()
        self._routes = None
        self._secret_of.clear()  # read again: a token file may have been rotated
        self._by_port = None
        for key in list(self._servers):
            if key not in wanted or _tls_files(wanted[key]) != self._tls_of.get(key):
                await self._close(key)
                self._drop(key)  # a wanted one is bound again below, with its new TLS
        for key in [k for k in self._socks if k not in wanted]:
            self._drop(key)
        for key, served in wanted.items():
            if key in self._servers:
                continue
            if key not in self._socks:
                try:
                    self._bound(key, bind_tcp(served[0], "http"))
                except MonitorError as e:
                    logger.error("%s; its rules receive nothing until it is changed", e)
                    continue
            sock = self._socks[key]
            names = [p.name for p in served]
            tls = [p for p in served if p.tls]
            try:
                ctx = tls_context(tls[0], "http") if tls else None
            except MonitorError as e:
                logger.error("%s; its rules receive nothing until it is changed", e)
                continue
            port = sock.getsockname()[1]
            from .http_server import Connection, Listener, Server

            self._ours = (Connection,)

            listener = Listener(f"http {host_port(key[0], port)}", served[0].limits())
            server = Server(
                self._handle, listener=listener, handler_cancellation=True, access_log=None
            )
            aserver = await asyncio.get_running_loop().create_server(server, sock=sock, ssl=ctx)
            self._servers[key] = (server, aserver)
            self._tls_of[key] = _tls_files(served)
            self._by_port = None
            logger.info("listening on %s for %s", host_port(key[0], port), ", ".join(names))

    async def _close(self, key: Key) -> None:
        port = self._port(key)  # the socket is closed with the server
        server, aserver = self._servers.pop(key)
        self._by_port = None
        aserver.close()
        await server.shutdown(timeout=1.0)
        await aserver.wait_closed()
        logger.info("closed listener on %s", host_port(key[0], port))

    def _drop(self, key: Key) -> None:
        self._socks.pop(key).close()
        self._ports.pop(key, None)
        self._by_port = None

    def _bound(self, key: Key, sock: socket.socket) -> None:
        self._socks[key] = sock
        self._ports[key] = sock.getsockname()[1]  # kept: a closed socket has no name
        self._by_port = None

    def _full_why(self) -> str:
        """What is full, and the setting that sizes it (the 503's body and log line)."""
        net = self.network
        if not (net.max_backlog and net.max_backlog_bytes):
            return (
                "the runner's events queue is full (runner.queue_size; the backlog is off: "
                "runner.max_backlog or max_backlog_bytes is 0)"
            )
        waiting, size = net.backlog()
        return (
            f"the runner's backlog is full ({waiting} accepted requests, {size} bytes, waiting "
            f"for their jobs; runner.max_backlog {net.max_backlog}, max_backlog_bytes "
            f"{net.max_backlog_bytes})"
        )

    def _port(self, key: Key) -> int:
        port = self._ports.get(key)
        if port is not None:
            return port
        sock = self._socks.get(key)
        return sock.getsockname()[1] if sock is not None else key[1]

    def _route_table(self) -> dict[Key, list[tuple[Any, list[Rule]]]]:
        """For each server, its routes (regex and the rules that claim them)."""
        rules = self.workflow.rules
        if self._routes is None or self._routes_of is not rules:
            table: dict[Key, dict[str, list[Rule]]] = {}
            for rule in self.rules(rules):
                p = rule.pattern
                assert isinstance(p, HttpPattern)  # noqa: S101
                table.setdefault(self._resolve(p), {}).setdefault(p.route, []).append(rule)
            self._routes = {
                key: [(rs[0].pattern.route_regex(), rs) for rs in routes.values()]  # type: ignore[union-attr]
                for key, routes in table.items()
            }
            self._routes_of = rules
        return self._routes

    # -- one request --------------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        conn = request.protocol
        if not isinstance(conn, self._ours):  # served by some other aiohttp server
            return await self._serve(request)
        if conn.over_cap:
            http_log.log(
                logging.WARNING,
                f"cap:{conn.listener.name}",
                "%s: over max_connections (%d): answered 503 to %s",
                conn.listener.name,
                conn.listener.limits.max_connections,
                conn.peer,
            )
            refused = _error(
                503,
                "too many connections; try again",
                {"Retry-After": str(RETRY_AFTER)},
            )
            refused.force_close()
            return refused
        conn.reading_body()
        try:
            return await self._serve(request)
        finally:
            conn.handled()

    async def _serve(self, request: web.BaseRequest) -> web.StreamResponse:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        key = self._server_key(sockname)
        if self._operator is not None and key == self._operator[0]:
            answer = await self._operator[1](request)  # /healthz, /metrics, /jobs
            if answer is not None:
                return answer
        response = await self._answer(request, key)
        self.responses[response.status] += 1
        return response

    async def _answer(self, request: web.BaseRequest, key: Key | None) -> web.StreamResponse:
        match = None
        for regex, rules in self._route_table().get(key, []) if key else []:
            found = regex.fullmatch(request.path)
            if found is not None:
                match = (found, rules)
                break
        if match is None:
            return _error(404, f"no route {request.path}")
        found, rules = match
        pattern: HttpPattern = rules[0].pattern  # type: ignore[assignment]
        if request.method not in pattern.methods:
            return _error(
                405,
                f"{request.method} is not allowed on {pattern.route}",
                {"Allow": ", ".join(pattern.methods)},
            )
        identity = None
        if pattern.tls_client_ca is not None and request.transport is not None:
            cert = request.transport.get_extra_info("peercert") or {}
            subject = ", ".join(f"{k}={v}" for part in cert.get("subject", ()) for k, v in part)
            identity = f"client certificate {subject}" if subject else "client certificate"
        token, secret = self._secrets(pattern)
        if token is not None:
            challenge = {"WWW-Authenticate": 'Bearer realm="meow_async"'}
            what = "bearer token"
            if pattern.token_header.lower() == "authorization":
                scheme, _, value = request.headers.get("Authorization", "").partition(" ")
                if scheme.lower() != "bearer" or not value:
                    return _error(401, "a bearer token is needed", challenge)
            else:  # the token itself in its own header (GitLab's X-Gitlab-Token)
                value = request.headers.get(pattern.token_header, "")
                challenge, what = {}, f"{pattern.token_header} token"  # no scheme to name
                if not value:
                    return _error(401, f"a token is needed in {pattern.token_header}")
            if not hmac.compare_digest(value.strip().encode(), token.encode()):
                if self._valid_elsewhere(key, value.strip(), pattern):
                    return _error(403, f"that token is not allowed on {pattern.route}")
                return _error(401, f"the {what} is wrong", challenge)
            identity = f"{what} of pattern {pattern.name}"
        signer = None
        if secret is not None:
            signature = request.headers.get(pattern.hmac_header, "")
            signed = b""  # GitHub signs the body alone, with no timestamp
            header = pattern.timestamp_header
            stamp = request.headers.get(header)
            if pattern.signature == "meow":
                if stamp is None:
                    return _error(401, f"a signed request needs {header} (the Unix time it signed)")
                if not _STAMP.fullmatch(stamp):
                    return _error(
                        401,
                        f"{header} must be the Unix time in whole seconds, digits only; got "
                        f"{stamp[:40]!r}",
                    )
            if not signature.startswith("sha256="):
                return _error(401, f"a signed request needs {pattern.hmac_header}: sha256=...")
            if stamp is not None and pattern.signature == "meow":
                age = time.time() - int(stamp)
                if abs(age) > pattern.hmac_window:
                    return _error(
                        401,
                        f"{header} is {age:.0f} s off the runner's clock "
                        f"(window {pattern.hmac_window:g} s)",
                    )
                signed = stamp.encode() + b"."
            # Either scheme: a signature in use or used within the window (kept across
            # restarts) is a replay.
            if signature in self._signing or signature in self._signatures:
                return _error(401, "that signature was used before: a replay")
            signer = (hmac.new(secret.encode(), signed, hashlib.sha256), signature)
            identity = f"HMAC signature of pattern {pattern.name}"
        idem = request.headers.get("Idempotency-Key")
        # What the request addressed, as payment APIs scope keys: the server, the method, the
        # concrete path, and who sent it when that is known.
        scope = (
            f"{key[0]}:{key[1]}:{key[2]} {request.method} {request.path} {identity or '-'} {idem}"
            if idem is not None and key is not None
            else None
        )
        if scope is not None:
            stored = self._keys.get(scope)
            if stored is not None:
                return _replayed(stored)
            while (first := self._in_flight.get(scope)) is not None:
                earlier = await asyncio.shield(first)
                if earlier.status == 202:
                    return _replayed(json.loads(earlier.text or "{}"))
                # The first one was refused or cut off: this one is a request of its own.
        if request.content_length is not None and request.content_length > pattern.max_size:
            return _error(413, f"the body is over this route's max_size ({pattern.max_size})")
        if self._queue is None or not self._accepting:
            return _error(503, "the runner is stopping", {"Retry-After": str(RETRY_AFTER)})
        if self.network.full():
            why = self._full_why()
            http_log.log(
                logging.WARNING,
                f"full:{self._port(key)}{pattern.route}" if key else "full",
                "%s %s from %s: refused (503), %s",
                request.method,
                request.path,
                request.remote,
                why,
            )
            return _error(503, f"{why}; try again", {"Retry-After": str(RETRY_AFTER)})
        if (
            request.version >= (1, 1)
            and request.headers.get("Expect", "").lower() == "100-continue"
        ):
            # Only now: a refused request (401, 413, 503) was answered before its body came.
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        done: asyncio.Future[web.Response] | None = None
        if scope is not None:
            done = self._in_flight[scope] = asyncio.get_running_loop().create_future()
        if signer is not None:
            self._signing.add(signer[1])
        try:
            response = await self._accept(
                request, rules, pattern, found.groupdict(), identity, signer
            )
            if scope is not None and response.status == 202:
                until = time.time() + pattern.idempotency_window
                try:
                    self._keys.put(scope, until, json.loads(response.text or "{}"))
                except OSError as e:
                    logger.warning(
                        "could not record Idempotency-Key %r in %s (%s): a retry after a "
                        "restart would make a second job",
                        idem,
                        self._keys.path,
                        e.strerror or e,
                    )
            return response
        finally:
            if signer is not None:
                self._signing.discard(signer[1])
            if scope is not None and done is not None:
                self._in_flight.pop(scope, None)
                if not done.done():
                    done.set_result(response if "response" in locals() else _error(503, "lost"))

    async def _accept(
        self,
        request: web.BaseRequest,
        rules: list[Rule],
        pattern: HttpPattern,
        parts: dict[str, str],
        identity: str | None,
        signer: tuple[Any, str] | None,
    ) -> web.Response:
        spool = self.network.new_spool()
        accepted = False
        # What filters read of the body: kept while it is no larger than filter_max_body.
        limit = self.network.filter_max_body
        kept: bytearray | None = bytearray() if Filtering.needed(rules) else None
        conn = request.protocol
        try:
            try:
                while chunk := await request.content.read(_CHUNK):
                    spool.write(chunk, pattern.max_size)
                    if signer is not None:
                        signer[0].update(chunk)
                    if kept is not None:
                        kept += chunk
                        if len(kept) > limit:
                            kept = None
            except MessageTooLarge:
                return _error(413, f"the body is over this route's max_size ({pattern.max_size})")
            if isinstance(conn, self._ours):
                conn.handling()
            signed = None
            if signer is not None:
                expected = "sha256=" + signer[0].hexdigest()
                if not hmac.compare_digest(expected.encode(), signer[1].encode()):
                    return _error(401, "the signature does not match the body")
                # Refused as a replay until the window has passed either side of now (GitHub's
                # signatures too: the same body signed again is the same signature).
                signed = (signer[1], time.time() + 2 * pattern.hmac_window)
            if Filtering.needed(rules):
                rules = self.network.filtering.wanted(
                    rules, "http", lambda: _names(request, parts, identity, kept)
                )
                if not rules:
                    # Accepted, and answered so (a retry would be refused the same way, and a
                    # signed one is a replay), but no rule wants it: nothing else of it is kept.
                    logger.debug("%s %s: no rule's filter wants it", request.method, request.path)
                    if signed is not None:
                        self._used(signed)
                    return _json({"message_id": spool.id, "jobs": []}, status=202)
            path = spool.finish(durable=self.network.durable)
            peername = request.transport.get_extra_info("peername") if request.transport else None
            peer = host_port(peername[0], peername[1]) if peername else request.remote or "?"
            secret = pattern.secret_headers
            parameters: dict[str, Any] = {
                **parts,
                "query": dict(request.query.items()),  # a repeated name: its last value
                "headers": {
                    h: REDACTED if h in secret else request.headers[h]
                    for h in pattern.headers
                    if h in request.headers
                },
            }
            extras: dict[str, Any] = {
                "message_id": spool.id,
                "peer": peer,
                "method": request.method,
                "request_path": request.path,
                "route": pattern.route,
                "size": spool.size,
                "identity": identity,
                "parameters": parameters,
            }
            events = self.network.journal(path, spool.id, rules, extras, "http", signature=signed)
            accepted = True
        except OSError as e:
            if e.errno not in _FULL:
                raise
            http_log.log(
                logging.ERROR,
                f"disk:{pattern.route}",
                "%s %s from %s: refused (507), the spool folder %s is full: %s",
                request.method,
                request.path,
                request.remote,
                self.network.spool_dir,
                e.strerror or e,
            )
            return _error(
                507,
                "the runner's disk is full: nothing of this request was kept; try again later",
                {"Retry-After": str(RETRY_AFTER_FULL)},
            )
        finally:
            if not accepted:
                spool.discard()  # cut off, refused or failed: nothing of it stays
        if signed is not None:
            self._used(signed)
        if not self.network.offer(events):
            # Accepted: whatever becomes of the client, these events reach the queue.
            queued = asyncio.ensure_future(self.network.put(events))
            self._putting.add(queued)
            queued.add_done_callback(self._putting.discard)
            await asyncio.shield(queued)
        jobs = [
            job_id_for(e.key, e.rule.name, point)
            for e in events
            for point in e.rule.pattern.sweep_points()
        ]
        logger.debug("%s %s from %s: message %s", request.method, request.path, peer, spool.id)
        return _json({"message_id": spool.id, "jobs": jobs}, status=202)

    def _used(self, signed: tuple[str, float]) -> None:
        """Record an accepted request's signature: refused as a replay until ``signed[1]``."""
        try:
            self._signatures.put(*signed)
        except OSError as e:  # in the journal until its job is made, and in memory
            logger.warning(
                "could not record a used signature in %s (%s): refused as a replay until "
                "the runner restarts",
                self._signatures.path,
                e.strerror or e,
            )

    def _secrets(self, pattern: HttpPattern) -> tuple[str | None, str | None]:
        """The pattern's bearer token and HMAC secret, read once per workflow change (not
        from the disk for every request; a missing one was an error when it was made)."""
        got = self._secret_of.get(id(pattern))
        if got is None or got[0] is not pattern:
            try:
                got = (pattern, pattern.token(), pattern.hmac_secret())
            except ConfigError as e:  # gone since: refuse, rather than let anyone in
                logger.error("%s; its requests are refused", e)
                got = (pattern, "\0unreadable", "\0unreadable")
            self._secret_of[id(pattern)] = got
        return got[1], got[2]

    def _valid_elsewhere(self, key: Key | None, token: str, pattern: HttpPattern) -> bool:
        """A token of another route on this server: known, but not allowed here."""
        for _, rules in self._route_table().get(key, []) if key else []:
            other = rules[0].pattern
            if other is pattern:
                continue
            theirs = self._secrets(other)[0]  # type: ignore[arg-type]
            if theirs is not None and hmac.compare_digest(token.encode(), theirs.encode()):
                return True
        return False

    def _resolve(self, pattern: HttpPattern) -> Key:
        """A pattern's server: a pattern naming the port a port-0 pattern was given on the
        same address joins that one's server."""
        key = _key(pattern)
        if pattern.port and key not in self._socks:
            for other, port in self._ports.items():
                if other[2] and other[0] == pattern.host and port == pattern.port:
                    return other
        return key

    def _server_key(self, sockname: Any) -> Key | None:
        """Which server a request came to, from the address and port it was sent to (a
        server on a wildcard address answers for every address on its port)."""
        if not sockname:
            return None
        if self._by_port is None:
            self._by_port = {}
            for k, port in self._ports.items():
                if k in self._socks:
                    self._by_port[_address(k[0]), port] = k
        ip, port = sockname[0], sockname[1]
        by = self._by_port
        return by.get((ip, port)) or by.get((_ANY4, port)) or by.get((_ANY6, port))


def _tls_files(served: list[Any]) -> tuple[Any, ...] | None:
    """The TLS settings a server is started with (its first TLS pattern's), None: plain."""
    tls = [p for p in served if p.tls]
    return (tls[0].tls_cert, tls[0].tls_key, tls[0].tls_client_ca) if tls else None


class _Operator:
    """runner.http, where a pattern would be: what a port in use is reported against."""

    name = "runner.http"
    tls = False

    def __init__(self, host: str, port: int, limits: HttpLimits) -> None:
        self.host, self.port, self._limits = host, port, limits

    def limits(self) -> HttpLimits:
        return self._limits


def _address(host: str) -> str:
    """The address a host name binds to, as a socket reports it (``localhost``: 127.0.0.1)."""
    try:
        return str(socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0])
    except socket.gaierror:
        return host


def _key(pattern: HttpPattern) -> Key:
    return (pattern.host, pattern.port, pattern.name if pattern.port == 0 else "")


def _claims(rules: list[Rule], operator: tuple[Key, Operator, HttpLimits] | None) -> None:
    """Two patterns may serve one route on one host:port only with the same settings, and
    patterns sharing a server (with each other or runner.http) only with its settings."""
    seen: dict[tuple[Key, str], HttpPattern] = {}
    servers: dict[Key, HttpPattern] = {}
    for rule in rules:
        p = rule.pattern
        assert isinstance(p, HttpPattern)  # noqa: S101
        first = servers.setdefault(_key(p), p)
        if first.server_settings() != p.server_settings():
            raise MonitorError(
                "http",
                f"patterns {first.name!r} and {p.name!r} share {host_port(p.host, p.port)} "
                "with different TLS settings or limits (tls_cert, tls_key, tls_client_ca; "
                f"{', '.join(HTTP_LIMIT_FIELDS)}): one server serves both, so make them agree "
                "or use another port",
            )
        if operator is not None and operator[0] == _key(p) and operator[2] != p.limits():
            raise MonitorError(
                "http",
                f"runner.http and pattern {p.name!r} share {host_port(p.host, p.port)} with "
                f"different limits ({', '.join(HTTP_LIMIT_FIELDS)}): one server serves both, "
                "so make them agree or use another port",
            )
        other = seen.setdefault((_key(p), p.route), p)
        if other is not p and other.route_settings() != p.route_settings():
            raise MonitorError(
                "http",
                f"patterns {other.name!r} and {p.name!r} both claim {p.route} on "
                f"{host_port(p.host, p.port)} with different settings "
                "(methods, max_size, headers, token): make them agree or use another route",
            )


def _names(
    request: web.BaseRequest, parts: dict[str, str], identity: str | None, body: bytearray | None
) -> dict[str, Any]:
    """What an HTTP pattern's filter sees of a request (docs/schedules-and-filters.md)."""
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value

    def parsed() -> Any:
        ok, value = parse_json(body)
        return value if ok else ABSENT

    return {
        "body": Later(parsed),
        "headers": headers,
        "query": dict(request.query.items()),  # a repeated name: its last value
        "route": dict(parts),
        "method": request.method,
        "identity": identity,
    }


def _json(
    answer: dict[str, Any], status: int, headers: dict[str, str] | None = None
) -> web.Response:
    from aiohttp import web

    return web.json_response(answer, status=status, headers=headers)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return _json({"error": message}, status=status, headers=headers)


def _replayed(answer: dict[str, Any]) -> web.Response:
    return _json(answer, status=202, headers={"Idempotent-Replayed": "true"})
