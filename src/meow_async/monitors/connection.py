"""One listener's connections: an asyncio protocol that streams messages to spool files.

A protocol, not a StreamReader and a task per connection: each callback does its work at once
(write the bytes, or finish the message and queue its events), so a short message costs a few
callbacks and no coroutine switches. Reads land in one buffer per thread, shared by every
connection of every monitor on that thread's loop (each read is consumed before the next one
starts), so a connection holds no read buffer of its own, idle or busy.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import struct
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from ..patterns import NetworkPattern
from .spool import MessageTooLarge, Spool

if TYPE_CHECKING:
    import socket

    from ..events import Event
    from .network import NetworkMonitor

__all__ = ["Connection", "Listener", "read_buffer"]

logger = logging.getLogger("meow_async.monitors.network")

_LENGTH = struct.Struct(">I")

Key = tuple[str, int, str]  # host, port, and the pattern name when port is 0 (its own port)

_buffers = threading.local()


def read_buffer(size: int) -> memoryview:
    """This thread's read buffer of ``size`` bytes (a loop's callbacks all run on its thread)."""
    mine: dict[int, memoryview] = _buffers.__dict__.setdefault("by_size", {})
    if size not in mine:
        mine[size] = memoryview(bytearray(size))
    return mine[size]


@dataclass(eq=False)
class Listener:
    """A bound port and the settings every rule on it shares."""

    key: Key
    pattern: NetworkPattern  # the first rule's pattern: all on this listener share its settings
    sock: socket.socket
    tls: ssl.SSLContext | None
    server: asyncio.Server | None = None
    port: int = field(init=False)
    active: int = 0  # connections being read (at most max_connections)
    waiting: deque[Connection] = field(default_factory=deque)  # paused until a slot frees

    def __post_init__(self) -> None:
        self.port = self.sock.getsockname()[1]

    def describe(self) -> str:
        host = f"[{self.key[0]}]" if ":" in self.key[0] else self.key[0]
        return f"{host}:{self.port}"


class Connection(asyncio.BufferedProtocol):
    """Frames messages out of one connection, spools each and hands it to the monitor.

    While a message waits for room in a full event queue, reading is paused, so the sender
    feels TCP back-pressure and nothing it sends later overtakes it.
    """

    __slots__ = (
        "_busy",
        "_closing",
        "_eof",
        "_head",
        "_held",
        "_left",
        "_replied",
        "_stopping",
        "_tail",
        "_timer",
        "last",
        "lst",
        "monitor",
        "peer",
        "slot",
        "spool",
        "transport",
    )

    def __init__(self, monitor: NetworkMonitor, lst: Listener) -> None:
        self.monitor = monitor
        self.lst = lst
        self.transport: asyncio.Transport | None = None
        self.peer = "an unknown peer"
        self.spool: Spool | None = None  # the message being received
        self.slot = False  # counted in lst.active
        self.last = 0.0  # loop time of the last read, for the idle timeout
        self._timer: asyncio.TimerHandle | None = None
        self._busy = False  # a message waits for room in the event queue: reading paused
        self._held = b""  # what arrived after that message, read once it is queued
        self._eof = False
        self._closing = False
        self._stopping = False
        self._replied = False  # connection framing: its one message is done
        self._head = b""  # length framing: header bytes so far
        self._left = -1  # length framing: body bytes still to come; -1 between messages
        self._tail = b""  # delimiter framing: bytes that may start a delimiter

    # -- asyncio's callbacks --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # a stream's (uvloop's too)
        self.peer = _peer(transport)
        self.monitor.connections.add(self)
        lst = self.lst
        if lst.active >= lst.pattern.max_connections:
            # Over the limit: not read at all until a slot frees, so the data waits in the
            # kernel's buffers and the sender feels TCP back-pressure, at no cost here.
            self.transport.pause_reading()
            lst.waiting.append(self)
        else:
            self._start()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.monitor.buffer

    def buffer_updated(self, nbytes: int) -> None:
        if self._closing:
            return
        self.last = self.monitor.loop.time()
        data = self.monitor.buffer[:nbytes]
        if self._busy or not self.slot:
            # Read before a pause took effect (TLS; uvloop starts reading after
            # connection_made): keep it, in order, and pause (again).
            self._held += bytes(data)
            assert self.transport is not None  # noqa: S101 - reading
            self.transport.pause_reading()
            return
        self._guard(self._feed, data)

    def eof_received(self) -> bool:
        self._eof = True
        if self.slot and not self._busy and not self._closing:
            self._guard(self._at_eof)
        # Open for writing, so an acknowledgement can still go out (TLS cannot half-close).
        return self.lst.tls is None

    def connection_lost(self, exc: Exception | None) -> None:
        self.monitor.lost(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        unfinished = self.spool is not None or self._head or self._left >= 0
        self._drop_message()
        if not self._closing and (exc is not None or unfinished):
            self._warn_lost(type(exc).__name__ if exc is not None else "closed mid-message")
        self.transport = None
        if self.slot:
            self.slot = False
            self.lst.active -= 1
            waiting = self.lst.waiting
            while waiting:
                nxt = waiting.popleft()
                if nxt.transport is not None and not nxt.transport.is_closing():
                    nxt._wake()
                    break

    # -- framing --------------------------------------------------------------------------------

    def _start(self) -> None:
        self.slot = True
        self.lst.active += 1
        self.last = self.monitor.loop.time()
        self._timer = self.monitor.loop.call_at(
            self.last + self.lst.pattern.idle_timeout, self._check_idle
        )

    def _wake(self) -> None:
        """A slot is free: read what waited."""
        self._start()
        held, self._held = self._held, b""
        self._guard(self._go_on, held)

    def _feed(self, data: memoryview | bytes) -> None:
        framing = self.lst.pattern.framing
        if framing == "connection":
            self._write(data)
        elif framing == "delimiter":
            self._feed_delimited(bytes(data))
        else:
            self._feed_length(data)

    def _feed_delimited(self, data: bytes) -> None:
        if self._tail:
            data, self._tail = self._tail + data, b""
        delim = self.lst.pattern.delimiter.encode()
        start = 0
        while (end := data.find(delim, start)) >= 0:
            self._write(data[start:end])
            start = end + len(delim)
            if not self._complete():
                self._held = data[start:] + self._held
                return
        rest = data[start:]
        cut = max(0, len(rest) - (len(delim) - 1))  # the end may be a delimiter's start
        if cut:
            self._write(rest[:cut])
        self._tail = rest[cut:]

    def _feed_length(self, data: memoryview | bytes) -> None:
        pos, end, limit = 0, len(data), self.lst.pattern.max_size
        while pos < end:
            if self._left < 0:
                got = bytes(data[pos : pos + _LENGTH.size - len(self._head)])
                self._head += got
                pos += len(got)
                if len(self._head) < _LENGTH.size:
                    return
                (self._left,) = _LENGTH.unpack(self._head)
                self._head = b""
                if self._left > limit:
                    raise MessageTooLarge
                self.spool = self.monitor.new_spool()
            take = min(self._left, end - pos)
            if take:
                self._write(data[pos : pos + take])
                pos += take
                self._left -= take
            if self._left == 0:
                self._left = -1
                if not self._complete():
                    self._held = bytes(data[pos:]) + self._held
                    return

    def _at_eof(self) -> None:
        """The sender is done; called once nothing waits for room in the queue."""
        framing = self.lst.pattern.framing
        if framing == "connection":
            if not self._replied:
                self._replied = True
                if not self._complete():
                    return
        elif framing == "delimiter":
            if self._tail or (self.spool is not None and self.spool.size):
                self._write(self._tail)  # a last message without a delimiter counts
                self._tail = b""
                if not self._complete():
                    return
        elif self._head or self._left >= 0:
            self._drop_message()
            self._warn_lost("IncompleteReadError")  # a length-framed message cut short
        self._close()

    def _warn_lost(self, why: str) -> None:
        logger.warning(
            "%s from %s: connection lost (%s); an unfinished message, if any, was dropped",
            self.lst.describe(),
            self.peer,
            why,
        )

    def _write(self, data: memoryview | bytes) -> None:
        if self.spool is None:
            self.spool = self.monitor.new_spool()
        self.spool.write(data, self.lst.pattern.max_size)

    # -- a complete message ---------------------------------------------------------------------

    def _complete(self) -> bool:
        """Accept the message and queue its events; False while it waits for room."""
        spool = self.spool or self.monitor.new_spool()
        self.spool = None
        events = self.monitor.accept(self.lst, spool, self.peer, self._subject())
        if not events:
            return True
        if self.monitor.offer(events):
            self._ack(spool.id)
            return True
        self._busy = True
        assert self.transport is not None  # noqa: S101 - only called while connected
        self.transport.pause_reading()
        self.monitor.later(self._queue_later(events, spool.id))
        return False

    async def _queue_later(self, events: list[Event], msg_id: str) -> None:
        await self.monitor.put(events)
        self._busy = False
        self._ack(msg_id)
        if self.transport is None or self._closing:
            return
        if self._stopping:
            self._close()
            return
        held, self._held = self._held, b""
        self._guard(self._go_on, held)

    def _go_on(self, held: bytes) -> None:
        self.last = self.monitor.loop.time()
        if held:
            self._feed(held)
        if self._busy:
            return
        if self._eof:
            self._at_eof()
        elif self.transport is not None:
            self.transport.resume_reading()

    def _ack(self, msg_id: str) -> None:
        if self.lst.pattern.ack and self.transport is not None and not self.transport.is_closing():
            # After it is on disk and queued. A raw sender that already left (nc) is fine.
            self.transport.write(f"ok {msg_id}\n".encode())

    def _subject(self) -> str | None:
        if self.lst.tls is None or self.transport is None:
            return None
        cert = self.transport.get_extra_info("peercert")
        if not cert:
            return None
        parts = [f"{k}={v}" for rdn in cert.get("subject", ()) for k, v in rdn]
        return ",".join(parts) or None

    # -- ending ---------------------------------------------------------------------------------

    def stop(self, *, abort: bool = False) -> None:
        """The monitor stops: a message being queued finishes (it was accepted), an unfinished
        one is dropped (it never was). ``abort``: close at once, whatever it is doing."""
        self._stopping = True
        if abort or not self._busy:
            self._drop_message()
            self._close(abort=True)

    def _check_idle(self) -> None:
        self._timer = None
        if self.transport is None or self._closing:
            return
        timeout = self.lst.pattern.idle_timeout
        due = self.last + timeout
        now = self.monitor.loop.time()
        if self._busy:  # waiting for room in the queue is not the sender's idleness
            due = now + timeout
        elif now >= due:
            logger.warning(
                "%s from %s: idle for %.0fs, closed", self.lst.describe(), self.peer, timeout
            )
            self._drop_message()
            self._close()
            return
        self._timer = self.monitor.loop.call_at(due, self._check_idle)

    def _guard(self, step: Callable[..., None], *args: Any) -> None:
        """Run a step; bad input or a failing disk ends this connection with a log line."""
        try:
            step(*args)
        except MessageTooLarge:
            logger.warning(
                "%s from %s: message over max_size (%d bytes), dropped and closed",
                self.lst.describe(),
                self.peer,
                self.lst.pattern.max_size,
            )
            self._drop_message()
            self._close()
        except OSError as e:  # the spool: disk full, file too large, folder gone...
            logger.error(
                "%s from %s: could not store the message in %s (%s); nothing kept, not "
                "acknowledged",
                self.lst.describe(),
                self.peer,
                self.monitor.spool_dir,
                e.strerror or e,
            )
            self._drop_message()
            self._close()

    def _drop_message(self) -> None:
        if self.spool is not None:
            self.spool.discard()
            self.spool = None
        self._head, self._left, self._tail, self._held = b"", -1, b"", b""

    def _close(self, *, abort: bool = False) -> None:
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()  # after any acknowledgement still buffered


def _peer(transport: asyncio.BaseTransport) -> str:
    addr = transport.get_extra_info("peername")
    if addr is None:
        return "an unknown peer (gone already)"
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = f"[{addr[0]}]" if ":" in str(addr[0]) else str(addr[0])
        return f"{host}:{addr[1]}"
    return str(addr)
