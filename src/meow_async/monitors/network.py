"""The network monitor: TCP listeners (asyncio.start_server) whose messages become spool files.

Each message is streamed to ``<spool>/<id>.part`` in chunks, renamed to ``<id>.msg`` at its end
and handed to every rule on the port as an event whose path is that file, so recipes written
for file events work unchanged. The file is removed once every rule's handler has made its
jobs (each job keeps a hard link to it), and partial files never outlive their connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import json
import logging
import os
import secrets
import socket
import ssl
import struct
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from ..events import Event
from ..exceptions import MonitorError
from ..jobs import fsync_dir
from ..patterns import LISTENER_FIELDS, NetworkPattern
from ..rules import Rule
from ..workflow import Workflow

__all__ = ["DEFAULT_CHUNK_SIZE", "NetworkMonitor"]

logger = logging.getLogger("meow_async.monitors.network")

#: Bytes read per call; see docs/performance.md for how it was chosen.
DEFAULT_CHUNK_SIZE = 64 * 1024
_BACKLOG = 4096  # meow_base's listen(1) turns bursts into 1 s SYN retransmits
_LENGTH = struct.Struct(">I")

_Key = tuple[str, int, str]  # host, port, and the pattern name when port is 0 (its own port)


class _MessageTooLarge(Exception):
    pass


@dataclass(eq=False)
class _Listener:
    key: _Key
    pattern: NetworkPattern  # the first rule's pattern: all on this listener share its settings
    sock: socket.socket
    server: asyncio.Server | None = None
    slots: asyncio.Semaphore = field(init=False)
    port: int = field(init=False)
    tls: ssl.SSLContext | None = field(init=False)

    def __post_init__(self) -> None:
        self.slots = asyncio.Semaphore(self.pattern.max_connections)
        self.port = self.sock.getsockname()[1]
        try:
            # Loaded now, with the bind: bad TLS files are an error at the call that asked.
            self.tls = _tls_context(self.pattern) if self.pattern.tls else None
        except MonitorError:
            self.sock.close()
            raise

    def describe(self) -> str:
        host = f"[{self.key[0]}]" if ":" in self.key[0] else self.key[0]
        return f"{host}:{self.port}"


class NetworkMonitor:
    """One listener per (address, port) that some network rule needs; all its rules fire.

    Listeners open and close as rules change. A change that needs a port that cannot be bound
    is refused with an error naming the port and the pattern, and nothing changes.
    """

    name = "network"

    def __init__(
        self,
        workflow: Workflow,
        spool_dir: Path,
        *,
        base_dir: Path | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        durable: bool = False,
    ) -> None:
        self.workflow = workflow
        self.spool_dir = Path(spool_dir).absolute()
        #: Events' ``base`` ({BASE} in templates): the runner's watched folder, so outputs
        #: named from it land where file rules can pick them up.
        self.base = str(Path(base_dir if base_dir is not None else Path()).absolute())
        self.chunk_size = chunk_size
        self.ready = asyncio.Event()
        self._listeners: dict[_Key, _Listener] = {}
        self._events: asyncio.Queue[Event] | None = None
        self._reading: set[asyncio.Task[Any]] = set()  # connections mid-message
        self._connections: set[asyncio.Task[Any]] = set()
        self._sync_needed = asyncio.Event()
        self._closed_some = False
        self.durable = durable
        self._journal = _Journal(self.spool_dir, durable=durable)
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

    def check(self) -> None:
        """MonitorError if patterns sharing a port disagree on its settings."""
        self._wanted(self.rules())

    def _validate(self, rules: dict[str, Rule]) -> None:
        """Refuse inconsistent listeners; while running, bind new ports now so errors are
        raised by the very call that asked for them."""
        wanted = self._wanted(self.rules(rules))
        if self._events is None:
            return
        self.ready.clear()  # set again once _sync has opened and closed what changed
        try:
            for key, pattern in wanted.items():
                old = self._listeners.get(key)
                if old is None:
                    self._listeners[key] = _Listener(key, pattern, _bind(pattern))
                # Settings changed on an open port: _sync closes it first, then binds again.
        finally:
            self._sync_needed.set()  # whatever was bound is opened or closed by _sync

    def bind(self) -> None:
        """Bind every port the current rules need; MonitorError names a port that fails."""
        try:
            for key, pattern in self._wanted(self.rules()).items():
                if key not in self._listeners:
                    self._listeners[key] = _Listener(key, pattern, _bind(pattern))
        except MonitorError:
            for lst in self._listeners.values():
                lst.sock.close()
            self._listeners.clear()
            raise

    async def run(self, events: asyncio.Queue[Event], stop: asyncio.Event) -> None:
        await asyncio.to_thread(self.spool_dir.mkdir, parents=True, exist_ok=True)
        self.bind()
        self._events = events
        unsubscribe = self.workflow.subscribe(self._sync_needed.set)
        stopping = asyncio.create_task(stop.wait())
        try:
            while True:
                await self._sync()
                self.ready.set()
                self._sync_needed.clear()
                waking = asyncio.create_task(self._sync_needed.wait())
                await asyncio.wait([stopping, waking], return_when=asyncio.FIRST_COMPLETED)
                waking.cancel()
                if stop.is_set():
                    break
        finally:
            stopping.cancel()
            unsubscribe()
            self._events = None
            await self._close_all()

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
                await self._close(lst)
                if want is not None:
                    try:
                        self._listeners[key] = _Listener(key, want, _bind(want, quiet=True))
                    except MonitorError as e:  # taken meanwhile: the rest keeps serving
                        logger.error("%s; its rules receive nothing until it is changed", e)
        await self._free_orphans()
        for lst in self._listeners.values():
            if lst.server is None:
                await self._open(lst)

    async def _open(self, lst: _Listener) -> None:
        pattern = lst.pattern
        ctx = lst.tls

        async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._serve(lst, reader, writer)

        lst.server = await asyncio.start_server(
            on_connection,
            sock=lst.sock,
            backlog=_BACKLOG,
            ssl=ctx,
            limit=max(self.chunk_size, 2**16),
            ssl_handshake_timeout=pattern.idle_timeout if ctx else None,
        )
        logger.info(
            "listening on %s%s for %s",
            lst.describe(),
            " (TLS)" if ctx else "",
            ", ".join(r.name for r in self.rules() if self._resolve(r.pattern) == lst.key),  # type: ignore[arg-type]
        )

    async def _close(self, lst: _Listener) -> None:
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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()

    async def _close_all(self) -> None:
        for lst in list(self._listeners.values()):
            await self._close(lst)
        await self._free_orphans()
        self._listeners.clear()
        # Messages not yet complete were never accepted: drop them. Complete ones still
        # being queued finish, so nothing accepted is lost.
        for task in list(self._reading):
            task.cancel()
        if self._connections:
            await asyncio.wait(list(self._connections))

    def _wanted(self, rules: list[Rule]) -> dict[_Key, NetworkPattern]:
        """The listener each rule needs; rules sharing a port must agree on its settings."""
        out: dict[_Key, NetworkPattern] = {}
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

    def _resolve(self, pattern: NetworkPattern) -> _Key:
        """The listener a pattern belongs to: naming the port another pattern got from
        port 0 joins that listener."""
        key = _key(pattern)
        if pattern.port and key not in self._listeners:
            for other, lst in self._listeners.items():
                if other[1] == 0 and other[0] == pattern.host and lst.port == pattern.port:
                    return other
        return key

    # -- one connection -----------------------------------------------------------------------

    async def _serve(
        self, lst: _Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None  # noqa: S101
        self._connections.add(task)
        self._reading.add(task)
        peer = _peer(writer)
        waiting = lst.slots.locked()
        transport = cast("asyncio.Transport", writer.transport)  # a socket's: it reads too
        if waiting:
            # Over the limit: not read at all until a slot frees, so the data waits in the
            # kernel's buffers and the sender feels TCP back-pressure, at no cost here.
            transport.pause_reading()
        try:
            async with lst.slots:
                if waiting:
                    transport.resume_reading()
                framing = lst.pattern.framing
                if framing == "connection":
                    await self._one_per_connection(lst, reader, writer, peer)
                elif framing == "delimiter":
                    await self._delimited(lst, reader, writer, peer)
                else:
                    await self._length_prefixed(lst, reader, writer, peer)
        except TimeoutError:
            logger.warning(
                "%s from %s: idle for %.0fs, closed", lst.describe(), peer, lst.pattern.idle_timeout
            )
        except _MessageTooLarge:
            logger.warning(
                "%s from %s: message over max_size (%d bytes), dropped and closed",
                lst.describe(),
                peer,
                lst.pattern.max_size,
            )
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError) as e:
            logger.warning(
                "%s from %s: connection lost (%s); an unfinished message, if any, was dropped",
                lst.describe(),
                peer,
                type(e).__name__,
            )
        except OSError as e:  # the spool: disk full, file too large, folder gone...
            logger.error(
                "%s from %s: could not store the message in %s (%s); nothing kept, not "
                "acknowledged",
                lst.describe(),
                peer,
                self.spool_dir,
                e.strerror or e,
            )
        except asyncio.CancelledError:
            pass  # stopping: an incomplete message was never accepted
        finally:
            self._reading.discard(task)
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one_per_connection(
        self, lst: _Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> None:
        spool = self._spool()
        try:
            while True:
                async with asyncio.timeout(lst.pattern.idle_timeout):
                    chunk = await reader.read(self.chunk_size)
                if not chunk:
                    break
                spool.write(chunk, lst.pattern.max_size)
        except BaseException:
            spool.discard()
            raise
        await self._accept(lst, spool, writer, peer)

    async def _delimited(
        self, lst: _Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> None:
        delim = lst.pattern.delimiter.encode()
        keep = len(delim) - 1  # bytes that may be the start of a delimiter split across reads
        spool: _Spool | None = None
        pending = b""
        try:
            while True:
                async with asyncio.timeout(lst.pattern.idle_timeout):
                    chunk = await reader.read(self.chunk_size)
                if not chunk:
                    break
                data = pending + chunk
                start = 0
                while (end := data.find(delim, start)) >= 0:
                    spool = spool or self._spool()
                    spool.write(data[start:end], lst.pattern.max_size)
                    await self._accept(lst, spool, writer, peer)
                    spool = None
                    start = end + len(delim)
                rest = data[start:]
                cut = max(0, len(rest) - keep)
                if cut:
                    spool = spool or self._spool()
                    spool.write(rest[:cut], lst.pattern.max_size)
                pending = rest[cut:]
            if pending or (spool is not None and spool.size):
                spool = spool or self._spool()  # a last message without a delimiter counts
                spool.write(pending, lst.pattern.max_size)
                await self._accept(lst, spool, writer, peer)
                spool = None
        finally:
            if spool is not None:
                spool.discard()

    async def _length_prefixed(
        self, lst: _Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> None:
        while True:
            async with asyncio.timeout(lst.pattern.idle_timeout):
                head = await reader.read(_LENGTH.size)
                if not head:
                    return  # a clean end between messages
                if len(head) < _LENGTH.size:
                    head += await reader.readexactly(_LENGTH.size - len(head))
            (length,) = _LENGTH.unpack(head)
            if length > lst.pattern.max_size:
                raise _MessageTooLarge
            spool = self._spool()
            try:
                left = length
                while left:
                    async with asyncio.timeout(lst.pattern.idle_timeout):
                        chunk = await reader.read(min(self.chunk_size, left))
                    if not chunk:
                        raise asyncio.IncompleteReadError(b"", left)  # noqa: TRY301
                    spool.write(chunk, lst.pattern.max_size)
                    left -= len(chunk)
            except BaseException:
                spool.discard()
                raise
            await self._accept(lst, spool, writer, peer)

    async def _accept(
        self, lst: _Listener, spool: _Spool, writer: asyncio.StreamWriter, peer: str
    ) -> None:
        """The message is complete: make it an event for every rule on the port, then ack."""
        task = asyncio.current_task()
        self._reading.discard(task)
        try:
            path = spool.finish(durable=self.durable)
            rules = [r for r in self.rules() if self._resolve(r.pattern) == lst.key]  # type: ignore[arg-type]
            if not rules or self._events is None:
                logger.warning(
                    "%s: no rule wants messages any more; dropped %s", lst.describe(), path.name
                )
                path.unlink(missing_ok=True)
                return
            extras: dict[str, Any] = {
                "message_id": spool.id,
                "peer": peer,
                "host": lst.key[0],
                "port": lst.port,
                "size": spool.size,
                "tls": lst.pattern.tls,
            }
            subject = _cert_subject(writer)
            if subject is not None:
                extras["peer_cert_subject"] = subject
            entry = {
                "id": spool.id,
                "time": time.time(),
                "rules": [r.name for r in rules],
                "extras": extras,
            }
            self._journal.add(entry)  # accepted from here on: a restart will finish it
            for event in self._events_for(entry, path, rules):
                await self._events.put(event)
            if lst.pattern.ack:
                # After it is on disk and queued. A raw sender that already left (nc) is fine.
                with contextlib.suppress(ConnectionError, RuntimeError):
                    writer.write(f"ok {spool.id}\n".encode())
                    await writer.drain()
        finally:
            if task is not None:
                self._reading.add(task)

    def _spool(self) -> _Spool:
        return _Spool(self.spool_dir)

    def _events_for(self, entry: dict[str, Any], path: Path, rules: list[Rule]) -> list[Event]:
        msg_id = str(entry["id"])
        left = len(rules)

        def release() -> None:
            nonlocal left
            left -= 1
            if left == 0:  # every rule has its jobs (each holds a link): the spool copy goes
                path.unlink(missing_ok=True)
                self._journal.done(msg_id)

        return [
            Event(
                kind="network",
                path=str(path),
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
            path = self.spool_dir / f"{entry['id']}.msg"
            rules = [self.workflow.rules[n] for n in entry["rules"] if n in self.workflow.rules]
            if not rules:
                logger.warning(
                    "message %s: its rules %s are gone; dropped", entry["id"], entry["rules"]
                )
                path.unlink(missing_ok=True)
                self._journal.done(str(entry["id"]))
                continue
            out.extend(self._events_for(entry, path, rules))
        if out:
            logger.info("recovered %d accepted message(s) from %s", len(out), self.spool_dir)
        return out


class _Journal:
    """``accepted.log`` beside the spool files: one line per accepted message, written before
    its events are queued and before any acknowledgement, so a restart finishes what a killed
    runner had accepted. Rewritten short once most of its entries are done."""

    def __init__(self, folder: Path, *, durable: bool) -> None:
        self.path = folder / "accepted.log"
        self.durable = durable
        self.pending: dict[str, dict[str, Any]] = {}
        self._file: IO[str] | None = None
        self._lines = 0

    def recover(self) -> list[dict[str, Any]]:
        """Entries whose message is still spooled; removes what was never accepted."""
        entries: dict[str, dict[str, Any]] = {}
        try:
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue  # a line cut short by a crash: its message was never acked
                    if "done" in entry:
                        entries.pop(entry["done"], None)
                    else:
                        entries[entry["id"]] = entry
        except FileNotFoundError:
            pass
        folder = self.path.parent
        for spooled in folder.iterdir():
            if spooled.suffix == ".part" or (
                spooled.suffix == ".msg" and spooled.stem not in entries
            ):
                spooled.unlink(missing_ok=True)  # never complete, or never accepted: not acked
        self.pending = {i: e for i, e in entries.items() if (folder / f"{i}.msg").exists()}
        self._rewrite()
        return list(self.pending.values())

    def add(self, entry: dict[str, Any]) -> None:
        self.pending[entry["id"]] = entry
        self._write(entry)

    def done(self, msg_id: str) -> None:
        if self.pending.pop(msg_id, None) is None:
            return
        if self._lines > 4096 and self._lines > 4 * len(self.pending):
            self._rewrite()
        else:
            self._write({"done": msg_id})

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if not self.pending:
            self.path.unlink(missing_ok=True)

    def _write(self, entry: dict[str, Any]) -> None:
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open
            if self.durable:
                fsync_dir(self.path.parent)  # the journal's own entry
        self._file.write(json.dumps(entry, separators=(",", ":")) + "\n")
        self._file.flush()
        if self.durable:
            os.fsync(self._file.fileno())
        self._lines += 1

    def _rewrite(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for entry in self.pending.values():
                f.write(json.dumps(entry, separators=(",", ":")) + "\n")
            if self.durable:
                os.fsync(f.fileno())
        os.replace(tmp, self.path)
        if self.durable:
            fsync_dir(self.path.parent)
        self._lines = len(self.pending)


class _Spool:
    """One message on its way to disk: ``<id>.part`` until complete, then ``<id>.msg``.

    Writes go straight to the page cache from the event loop: a chunk is at most
    ``chunk_size`` bytes and a thread hop per chunk costs more than the copy (perf/).
    """

    def __init__(self, folder: Path) -> None:
        self.id = f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(6)}"
        self.part = folder / f"{self.id}.part"
        self.size = 0
        self._file: IO[bytes] | None = None

    def write(self, data: bytes, limit: int) -> None:
        self.size += len(data)
        if self.size > limit:
            raise _MessageTooLarge
        if self._file is None:
            self._file = open(self.part, "wb")  # noqa: SIM115 - closed in finish/discard
        self._file.write(data)

    def finish(self, *, durable: bool = False) -> Path:
        if self._file is None:
            self._file = open(self.part, "wb")  # noqa: SIM115 - an empty message is a message
        if durable:
            self._file.flush()
            os.fsync(self._file.fileno())
        self._file.close()
        final = self.part.with_suffix(".msg")
        os.replace(self.part, final)
        if durable:
            fsync_dir(final.parent)
        return final

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
        self.part.unlink(missing_ok=True)


def _key(pattern: NetworkPattern) -> _Key:
    return (pattern.host, pattern.port, pattern.name if pattern.port == 0 else "")


def _bind(pattern: NetworkPattern, *, quiet: bool = False) -> socket.socket:
    """Bind now, so a bad port is an error raised by the call that asked for it."""
    where = f"port {pattern.port} on {pattern.host} (pattern {pattern.name!r})"
    try:
        infos = socket.getaddrinfo(
            pattern.host, pattern.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as e:
        raise MonitorError(
            "network", f"{where}: cannot use address {pattern.host!r}: {e.strerror}"
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
        raise MonitorError("network", f"{where}: {why}") from None
    if not quiet:
        logger.debug("bound %s", where)
    return sock


def _tls_context(pattern: NetworkPattern) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(pattern.tls_cert, pattern.tls_key)  # type: ignore[arg-type]
        if pattern.tls_client_ca:
            ctx.load_verify_locations(pattern.tls_client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (ssl.SSLError, OSError) as e:
        raise MonitorError(
            "network", f"pattern {pattern.name!r}: cannot load TLS files: {e}"
        ) from None
    return ctx


def _peer(writer: asyncio.StreamWriter) -> str:
    addr = writer.get_extra_info("peername")
    if addr is None:
        return "an unknown peer (gone already)"
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = f"[{addr[0]}]" if ":" in str(addr[0]) else str(addr[0])
        return f"{host}:{addr[1]}"
    return str(addr)


def _cert_subject(writer: asyncio.StreamWriter) -> str | None:
    cert = writer.get_extra_info("peercert")
    if not cert:
        return None
    parts = [f"{k}={v}" for rdn in cert.get("subject", ()) for k, v in rdn]
    return ",".join(parts) or None
