"""The network monitor: TCP listeners whose messages become spool files, then events.

Each message is streamed to ``<spool>/<id>.msg`` (see connection.py for how it is read) and
handed to every rule on the port as an event whose path is that file, so recipes written for
file events work unchanged. The file is removed once every rule's handler has made its jobs
(each job keeps a hard link to it); an unfinished one never outlives its connection.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import gc
import logging
import socket
import ssl
import time
import warnings
from collections import deque
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from ..exceptions import MonitorError
from ..model.addresses import bracket
from ..model.caught import CATCHING
from ..model.config import DEFAULT_CHUNK_SIZE
from ..model.events import Event
from ..model.filters import ABSENT, Later, parse_json
from ..model.patterns import LISTENER_FIELDS, NetworkPattern
from ..model.rules import Rule
from ..model.workflow import Workflow
from .connection import Connection, Key, Listener, peer_name, read_buffer
from .filtering import Filtering
from .follow import follow_changes
from .spool import Journal, Spool, unlink

__all__ = ["NetworkMonitor"]

logger = logging.getLogger("meow_async.monitors.network")

_BACKLOG = 4096  # meow_base's listen(1) turns bursts into 1 s SYN retransmits
_CLOSE_TIMEOUT = 5.0  # at stop, for connections closing after their last acknowledgement
_BURST = 256  # connections at once after which their memory is handed back once all are gone


class NetworkMonitor:
    """One listener per (address, port) that some network rule needs; all its rules fire.

    Listeners open and close as rules change. A change that needs a port that cannot be bound
    is refused with an error naming the port and the pattern, and nothing changes.
    """

    name = "network"
    loop: asyncio.AbstractEventLoop  # the running one, once run() starts
    _queue: asyncio.Queue[Event]  # run()'s, kept while stopping: accepted events are not lost
    buffer: memoryview
    first_byte: memoryview

    def __init__(
        self,
        workflow: Workflow,
        spool_dir: Path,
        *,
        base_dir: Path | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        durable: bool = False,
        filtering: Filtering | None = None,
        filter_max_body: int = 1024 * 1024,
        max_backlog: int = 100_000,
        max_backlog_bytes: int = 1 << 30,
    ) -> None:
        self.workflow = workflow
        #: Each rule's ``when:``, and how much of a message it may read (HTTP's too).
        self.filtering = filtering or Filtering()
        self.filter_max_body = filter_max_body
        self.spool_dir = Path(spool_dir).absolute()
        self._spool_str = str(self.spool_dir)
        #: Events' ``base`` ({BASE} in templates): the runner's watched folder, so outputs
        #: named from it land where file rules can pick them up.
        self.base = str(Path(base_dir if base_dir is not None else Path()).absolute())
        self.chunk_size = chunk_size
        self.ready = asyncio.Event()
        self.durable = durable
        self._listeners: dict[Key, Listener] = {}
        self._accepting = False  # True while run() serves; the queue stays while stopping
        self._blocked = 0  # connections waiting for room in the queue
        #: Accepted messages whose events wait for room in the events queue, oldest first: each
        #: is in the journal on disk already (a restart finishes it), so a burst is taken whole
        #: and answered at once, up to these limits (back-pressure thresholds as NiFi's). Only
        #: its id and size stay in memory; its entry is read back from the journal when its
        #: turn comes. Past the limits senders wait, or get 503. Each keeps the rules it was
        #: accepted for (a reload meanwhile changes them for later messages, not for it).
        self._backlog: deque[tuple[str, int, tuple[Rule, ...]]] = deque()
        self._backlog_bytes = 0
        self.max_backlog = max_backlog
        self.max_backlog_bytes = max_backlog_bytes
        self._fill = asyncio.Event()  # the backlog has something to feed
        self._room = asyncio.Event()  # the backlog is under its limits again
        self._later: set[asyncio.Task[None]] = set()
        self._rules_of: dict[str, Rule] | None = None  # the workflow rules _by_key is from
        self._by_key: dict[Key, list[Rule]] = {}
        self._sync_needed = asyncio.Event()
        self._closed_some = False
        self._gone: asyncio.Event | None = None  # set when the last connection is gone
        self._journal = Journal(self.spool_dir, durable=durable)
        self.spooled_bytes = 0  # of accepted messages (network and HTTP), for /metrics
        #: The connections of every listener (see connection.py).
        self.connections: set[Connection] = set()
        self._peak = 0  # most connections at once since memory was last given back
        self._trim: asyncio.TimerHandle | None = None
        workflow.add_validator(self._validate)

    # -- what is open -------------------------------------------------------------------------

    def ports(self) -> dict[str, int]:
        """The port each network pattern with a rule listens on (useful with port 0)."""
        out: dict[str, int] = {}
        for rule in self.rules():
            lst = self._listeners.get(self._resolve(rule.pattern))  # type: ignore[arg-type]
            if lst is not None:
                out[rule.name] = lst.port
        return out

    def rules(self, rules: dict[str, Rule] | None = None) -> list[Rule]:
        rules = self.workflow.rules if rules is None else rules
        return [r for r in rules.values() if isinstance(r.pattern, NetworkPattern)]

    # -- rule changes -------------------------------------------------------------------------

    def active(self) -> bool:
        """Listening for some rule now."""
        return bool(self.rules())

    def check(self) -> None:
        """MonitorError if patterns sharing a port disagree on its settings."""
        self._wanted(self.rules())

    def _validate(self, rules: dict[str, Rule]) -> None:
        """Refuse inconsistent listeners; while running, bind new ports now so errors are
        raised by the very call that asked for them."""
        wanted = self._wanted(self.rules(rules))
        if not self._accepting:
            return
        for lst in self._listeners.values():  # what each served until now, if it closes
            lst.served = self._rules_on(lst)
        self.ready.clear()  # set again once _sync has opened and closed what changed
        try:
            for key, pattern in wanted.items():
                old = self._listeners.get(key)
                if old is None:
                    self._add_listener(key, pattern, _bind(pattern))
                # Settings changed on an open port: _sync closes it first, then binds again.
        finally:
            self._sync_needed.set()  # whatever was bound is opened or closed by _sync

    def bind(self) -> None:
        """Bind every port the current rules need; MonitorError names a port that fails."""
        try:
            for key, pattern in self._wanted(self.rules()).items():
                if key not in self._listeners:
                    self._add_listener(key, pattern, _bind(pattern))
        except MonitorError:
            for lst in self._listeners.values():
                lst.sock.close()
            self._listeners.clear()
            raise

    async def run(self, events: asyncio.Queue[Event], stop: asyncio.Event) -> None:
        self.loop = asyncio.get_running_loop()
        #: Where every connection's reads land, one at a time (see connection.py).
        self.buffer = read_buffer(self.chunk_size)
        self.first_byte = read_buffer(1)  # a connection without a slot reads one byte
        await asyncio.to_thread(self.spool_dir.mkdir, parents=True, exist_ok=True)
        # Opened now, not at the first message (which would wait for it), and on the loop's
        # thread: a recovered message's release may already be writing to it.
        self._journal.open()
        self.bind()
        self._queue, self._accepting = events, True
        unsubscribe = self.workflow.subscribe(self._sync_needed.set)
        feeder = self.loop.create_task(self._feed(events), name="network:backlog")
        try:
            await follow_changes(self._sync, self._sync_needed, self.ready, stop)
        finally:
            unsubscribe()
            self._accepting = False
            self._room.set()  # a sender waiting for room: its message joins the backlog now
            await self._close_all()
            feeder.cancel()
            await asyncio.wait([feeder])
            if self._backlog:
                logger.info(
                    "%d accepted message(s) left in the spool journal (%s): the next start "
                    "makes their jobs",
                    len(self._backlog),
                    self._journal.path,
                )

    def close_journal(self) -> None:
        """After the last event is handled: the journal goes if nothing is pending."""
        self._journal.close()

    async def _sync(self) -> None:
        """Open listeners rules need, close the others (and ones whose settings changed)."""
        wanted = self._wanted(self.rules())
        for key, lst in list(self._listeners.items()):
            want = wanted.get(key)
            if want is None or want.listener_settings() != lst.pattern.listener_settings():
                del self._listeners[key]
                self._rules_of = None
                lst.closed = True
                await self._close(lst)
                for conn in [c for c in self.connections if c.lst is lst]:
                    conn.retire()  # its message under way is finished and acknowledged
                if want is not None:
                    try:
                        self._add_listener(key, want, _bind(want, quiet=True))
                    except MonitorError as e:  # taken meanwhile: the rest keeps serving
                        logger.error("%s; its rules receive nothing until it is changed", e)
        await self._free_orphans()
        for lst in self._listeners.values():
            if lst.server is None and lst.accepting is None:
                await self._open(lst)

    def _add_listener(self, key: Key, pattern: NetworkPattern, sock: socket.socket) -> None:
        try:
            # Loaded now, with the bind: bad TLS files are an error at the call that asked.
            tls = _tls_context(pattern) if pattern.tls else None
        except MonitorError:
            sock.close()
            raise
        self._listeners[key] = Listener(key, pattern, sock, tls)
        self._rules_of = None  # which listener a port-0 pattern's port belongs to may change

    def _rules_on(self, lst: Listener) -> list[Rule]:
        """The rules a listener's messages go to, worked out once per change of the rules."""
        rules = self.workflow.rules
        if self._rules_of is not rules:
            by_key: dict[Key, list[Rule]] = {}
            for rule in self.rules(rules):
                by_key.setdefault(self._resolve(rule.pattern), []).append(rule)  # type: ignore[arg-type]
            self._by_key, self._rules_of = by_key, rules
        return self._by_key.get(lst.key, [])

    async def _open(self, lst: Listener) -> None:
        ctx = lst.tls
        if ctx is None:
            lst.server = await self.loop.create_server(
                lambda: Connection(self, lst), sock=lst.sock, backlog=_BACKLOG
            )
        else:
            # Accepted here, each socket then shaking hands in its own task: handshakes are
            # counted, capped and timed out with the waiting connections, and a failed one is
            # logged (a server made with ssl= would do all of it out of sight).
            lst.accepting = self.loop.create_task(self._accept_tls(lst, ctx))
        logger.info(
            "listening on %s%s for %s",
            lst.describe(),
            " (TLS)" if ctx else "",
            ", ".join(r.name for r in self._rules_on(lst)),
        )

    async def _accept_tls(self, lst: Listener, ctx: ssl.SSLContext) -> None:
        while True:
            try:
                sock, addr = await self.loop.sock_accept(lst.sock)
            except OSError as e:  # out of file descriptors, say: say so, and go on
                logger.error("%s: cannot accept: %s", lst.describe(), e.strerror or e)
                await asyncio.sleep(0.1)
                continue
            self.later(Connection(self, lst).handshake(sock, peer_name(addr), ctx))

    async def _close(self, lst: Listener) -> None:
        if lst.trim_timer is not None:
            lst.trim_timer.cancel()
            lst.trim_timer = None
        if lst.accepting is not None:
            lst.accepting.cancel()
            await asyncio.gather(lst.accepting, return_exceptions=True)
            lst.accepting = None
            lst.sock.close()
            logger.info("closed listener on %s", lst.describe())
            return
        if lst.server is None:
            lst.sock.close()
            return
        lst.server.close()
        self._closed_some = True
        logger.info("closed listener on %s", lst.describe())

    async def _free_orphans(self) -> None:
        """Once after a round of closes (not per listener: a full collection is costly).

        CPython 3.11: a connection accepted just before close() fails to get a transport
        (Server._attach asserts) and its socket is only freed by the cycle collector, so its
        sender would wait for a reply that never comes. Collect now: it gets a close (and the
        ResourceWarning for that orphan is expected, not news)."""
        if not self._closed_some:
            return
        self._closed_some = False
        await asyncio.sleep(0)
        with CATCHING, warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()

    async def _close_all(self) -> None:
        if self._trim is not None:
            self._trim.cancel()
            self._trim = None
        for lst in list(self._listeners.values()):
            await self._close(lst)
        await self._free_orphans()
        self._listeners.clear()
        self._rules_of = None
        # Messages not yet complete were never accepted: drop them. Complete ones still
        # being queued finish, so nothing accepted is lost.
        for conn in list(self.connections):
            conn.stop()
        while self._later:
            await asyncio.wait(list(self._later))
        if self.connections:
            self._gone = asyncio.Event()
            try:
                async with asyncio.timeout(_CLOSE_TIMEOUT):
                    await self._gone.wait()
            except TimeoutError:  # a TLS peer that never answers the close
                for conn in list(self.connections):
                    conn.stop(abort=True)
            self._gone = None

    def joined(self, conn: Connection) -> None:
        """A connection arrived (called by it)."""
        self.connections.add(conn)
        self._peak = max(self._peak, len(self.connections))

    def lost(self, conn: Connection) -> None:
        """A connection is gone (called by it)."""
        self.connections.discard(conn)
        if self.connections:
            return
        if self._gone is not None:
            self._gone.set()
        if self._peak >= _BURST and self._trim is None:
            # The burst is over: glibc keeps what its TLS states and buffers freed in its
            # arenas (hundreds of MB after thousands of handshakes); give it back to the OS.
            self._trim = self.loop.call_later(1.0, self._give_back)

    def _give_back(self) -> None:
        self._trim = None
        if not self.connections:
            self._peak = 0
            _malloc_trim()

    def _wanted(self, rules: list[Rule]) -> dict[Key, NetworkPattern]:
        """The listener each rule needs; rules sharing a port must agree on its settings."""
        out: dict[Key, NetworkPattern] = {}
        for rule in rules:
            p = rule.pattern
            assert isinstance(p, NetworkPattern)  # noqa: S101
            key = self._resolve(p)
            other = out.get(key)
            if other is None:
                out[key] = p
                continue
            for f in LISTENER_FIELDS[1:]:  # the host is part of the key already
                if getattr(p, f) != getattr(other, f):
                    raise MonitorError(
                        "network",
                        f"patterns {other.name!r} and {p.name!r} share port {p.port or other.port} "
                        "but differ in "
                        f"{f} ({getattr(other, f)!r} vs {getattr(p, f)!r}); one listener serves a "
                        "port, so its settings must match",
                    )
        return out

    def _resolve(self, pattern: NetworkPattern) -> Key:
        """The listener a pattern belongs to: naming the port another pattern got from
        port 0 joins that listener."""
        key = _key(pattern)
        if pattern.port and key not in self._listeners:
            for other, lst in self._listeners.items():
                if other[1] == 0 and other[0] == pattern.host and lst.port == pattern.port:
                    return other
        return key

    # -- messages (called by each Connection) ---------------------------------------------------

    def new_spool(self) -> Spool:
        return Spool(self._spool_str)

    def accept(
        self, lst: Listener, spool: Spool, peer: str, subject: str | None
    ) -> list[Event] | None:
        """The message is complete: journal it and make its events. None: it is dropped (not
        acknowledged); []: accepted, but every rule's filter rejected it (nothing is kept)."""
        path = spool.finish(durable=self.durable)
        # A listener closed, or about to close, by a change of the rules: its message goes to
        # the rules it served when the message began (the old version), never nowhere.
        rules = (None if lst.closed else self._rules_on(lst)) or lst.served
        if not rules or not self._accepting:
            why = "no rule wants messages any more" if self._accepting else "stopping"
            logger.warning("%s: %s; dropped %s, not acknowledged", lst.describe(), why, path)
            unlink(path)
            return None
        if Filtering.needed(rules):
            size = spool.size

            def names() -> dict[str, Any]:
                return {
                    "payload": Later(lambda: self.payload(path, size)),
                    "size": size,
                    "peer": peer,
                    "identity": subject,
                }

            rules = self.filtering.wanted(rules, "network", names)
            if not rules:
                logger.debug("%s: message from %s: no rule's filter wants it", lst.describe(), peer)
                unlink(path)
                return []
        extras: dict[str, Any] = {
            "message_id": spool.id,
            "peer": peer,
            "host": lst.key[0],
            "port": lst.port,
            "size": spool.size,
            "tls": lst.pattern.tls,
        }
        if subject is not None:
            extras["peer_cert_subject"] = subject
        return self.journal(path, spool.id, rules, extras, "network")

    def journal(
        self,
        path: str,
        msg_id: str,
        rules: list[Rule],
        extras: dict[str, Any],
        kind: str,
        *,
        signature: tuple[str, float] | None = None,
    ) -> list[Event]:
        """Accept a complete spooled message for ``rules``: its journal line, then its events.
        (The HTTP monitor's requests come in here too: one spool, one journal; a signed one's
        ``signature`` and until when it is refused again ride along, so that a restart right
        after still refuses a replay: see ``pending_entries``.)"""
        entry: dict[str, Any] = {
            "id": msg_id,
            "time": time.time(),
            "rules": [r.name for r in rules],
            "extras": extras,
            "kind": kind,
        }
        if signature is not None:
            entry["signature"] = list(signature)
        try:
            self._journal.add(entry)  # accepted from here on: a restart will finish it
        except OSError:
            unlink(path)  # not accepted: nothing of it stays
            raise
        self.spooled_bytes += int(extras.get("size") or 0)
        return self._events_for(entry, path, rules)

    def payload(self, path: str, size: int) -> Any:
        """A message as filters see it: its JSON, read and parsed once; absent when it is not
        JSON or is larger than ``filter_max_body``."""
        if size > self.filter_max_body:
            return ABSENT
        try:
            with open(path, "rb") as f:
                data = f.read(self.filter_max_body + 1)
        except OSError:
            return ABSENT
        ok, value = parse_json(data)
        return value if ok else ABSENT

    def pending_entries(self) -> list[dict[str, Any]]:
        """The journal's entries whose jobs are not all made yet (after ``recover``)."""
        return self._journal.entries()

    def offer(self, events: list[Event]) -> bool:
        """Queue the events now if there is room, else hold them in the backlog (their message
        is journaled): False only past the backlog's limits, or while others wait before
        them."""
        if self._blocked:
            return False
        if not self._backlog and self._fits(events):
            for event in events:
                self._queue.put_nowait(event)
            return True
        if self._over():
            return False
        self._hold(events)
        return True

    async def put(self, events: list[Event]) -> None:
        """Queue the events, waiting for room in the backlog: the back-pressure past its
        limits (a TCP sender waits for its acknowledgement, an HTTP client for its answer)."""
        self._blocked += 1
        try:
            if not (self.max_backlog and self.max_backlog_bytes):  # no backlog: the queue
                for event in events:
                    await self._queue.put(event)
                return
            while self._over() and self._accepting:
                self._room.clear()
                await self._room.wait()
            self._hold(events)
        finally:
            self._blocked -= 1

    def full(self) -> bool:
        """No room for another message: the events queue and the backlog are both full (an
        HTTP request is refused with 503 before its body is read)."""
        queue = self._queue
        return bool(queue.maxsize) and queue.qsize() >= queue.maxsize and self._over()

    def backlog(self) -> tuple[int, int]:
        """Accepted messages waiting for room in the events queue, and their bytes."""
        return len(self._backlog), self._backlog_bytes

    def _fits(self, events: list[Event]) -> bool:
        queue = self._queue
        return queue.maxsize <= 0 or queue.qsize() + len(events) <= queue.maxsize

    def _over(self) -> bool:
        return (
            len(self._backlog) >= self.max_backlog or self._backlog_bytes >= self.max_backlog_bytes
        )

    def _hold(self, events: list[Event]) -> None:
        """Into the backlog: the message's events are made again from its journal entry, for
        the rules they were made for (the workflow's version when it was accepted)."""
        first = events[0]
        msg_id = first.key.removeprefix("net:")
        size = int(first.extras.get("size") or 0)
        rules = tuple(e.rule for e in events)
        last = self._backlog[-1][2] if self._backlog else ()
        if len(last) == len(rules) and all(a is b for a, b in zip(last, rules, strict=True)):
            rules = last  # a burst for the same rules shares one tuple
        self._backlog.append((msg_id, size, rules))
        self._backlog_bytes += size
        self._journal.park(msg_id)
        self._fill.set()

    async def _feed(self, queue: asyncio.Queue[Event]) -> None:
        """Move the backlog's events onto the queue as it drains, in the order accepted."""
        while True:
            if not self._backlog:
                self._fill.clear()
                await self._fill.wait()
                continue
            msg_id, size, rules = self._backlog[0]
            for event in self._unparked(msg_id, rules):
                await queue.put(event)  # cancelled here: the journal has it for the next start
            self._backlog.popleft()
            self._backlog_bytes -= size
            if not self._over():
                self._room.set()

    def _unparked(self, msg_id: str, rules: tuple[Rule, ...]) -> list[Event]:
        """A backlogged message's events, from its journal entry, for the rules it was
        accepted for: as an event queued before a reload, it is handled under the version it
        came in under, even if a reload since changed or removed its rules (acknowledged, it
        must not be dropped). A restart makes them under the rules of its day."""
        entry = self._journal.unpark(msg_id)
        if entry is None:
            return []
        return self._events_for(entry, f"{self._spool_str}/{msg_id}.msg", list(rules))

    def later(self, work: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(work)
        self._later.add(task)
        task.add_done_callback(self._later.discard)

    def _events_for(self, entry: dict[str, Any], path: str, rules: list[Rule]) -> list[Event]:
        msg_id = str(entry["id"])
        left = len(rules)

        def release() -> None:
            nonlocal left
            left -= 1
            if left == 0:  # every rule has its jobs (each holds a link): the spool copy goes
                unlink(path)
                self._journal.done(msg_id)

        return [
            Event(
                kind=str(entry.get("kind", "network")),
                path=path,
                base=self.base,
                rule=rule,
                time=float(entry["time"]),
                extras=entry["extras"],
                release=release,
                key=f"net:{msg_id}",
            )
            for rule in rules
        ]

    def recover(self) -> list[Event]:
        """Events for messages a previous run accepted but had not finished (call before
        ``run``). Their jobs are named from the message, so none is made twice."""
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        out: list[Event] = []
        for entry in self._journal.recover():
            path = f"{self._spool_str}/{entry['id']}.msg"
            rules = [self.workflow.rules[n] for n in entry["rules"] if n in self.workflow.rules]
            if not rules:
                logger.warning(
                    "message %s: its rules %s are gone; dropped", entry["id"], entry["rules"]
                )
                unlink(path)
                self._journal.done(str(entry["id"]))
                continue
            out.extend(self._events_for(entry, path, rules))
        if out:
            logger.info("recovered %d accepted message(s) from %s", len(out), self.spool_dir)
        return out


def _malloc_trim() -> None:
    """glibc's malloc_trim(0), where there is one (not musl, not macOS)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return
    trim.argtypes = [ctypes.c_size_t]
    trim(0)


def _key(pattern: NetworkPattern) -> Key:
    return (pattern.host, pattern.port, pattern.name if pattern.port == 0 else "")


def _bind(pattern: NetworkPattern, *, quiet: bool = False) -> socket.socket:
    return bind_tcp(pattern, "network", quiet=quiet)


def bind_tcp(pattern: Any, monitor: str, *, quiet: bool = False) -> socket.socket:
    """Bind ``pattern``'s host and port now, so a bad port is an error raised by the call
    that asked for it (any pattern with ``name``, ``host`` and ``port``)."""
    where = f"port {pattern.port} on {bracket(pattern.host)} (pattern {pattern.name!r})"
    try:
        infos = socket.getaddrinfo(
            pattern.host, pattern.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as e:
        raise MonitorError(
            monitor, f"{where}: cannot use address {pattern.host!r}: {e.strerror}"
        ) from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
        # Listening now lets the kernel queue connections that arrive before the asyncio
        # server takes the socket over: nobody is refused in between.
        sock.listen(_BACKLOG)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            why = "already in use by another program or listener"
        elif e.errno == errno.EACCES:
            why = "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
        elif e.errno == errno.EADDRNOTAVAIL:
            why = f"{pattern.host} is not an address of this machine"
        else:
            why = e.strerror or str(e)
        raise MonitorError(monitor, f"{where}: {why}") from None
    if not quiet:
        logger.debug("bound %s", where)
    return sock


def _tls_context(pattern: NetworkPattern) -> ssl.SSLContext:
    return tls_context(pattern, "network")


def tls_context(pattern: Any, monitor: str) -> ssl.SSLContext:
    """The server side of ``pattern``'s TLS (``tls_cert``, ``tls_key``, ``tls_client_ca``)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(pattern.tls_cert, pattern.tls_key)
        if pattern.tls_client_ca:
            ctx.load_verify_locations(pattern.tls_client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (ssl.SSLError, OSError) as e:
        raise MonitorError(
            monitor, f"pattern {pattern.name!r}: cannot load TLS files: {e}"
        ) from None
    return ctx
