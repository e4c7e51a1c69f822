"""One listener's connections: an asyncio protocol that streams messages to spool files.

A protocol, not a StreamReader and a task per connection: each callback does its work at once
(write the bytes, or finish the message and queue its events), so a short message costs a few
callbacks and no coroutine switches. Reads land in one buffer per thread, shared by every
connection of every monitor on that thread's loop (each read is consumed before the next one
starts), so a connection holds no read buffer of its own, idle or busy.

A connection takes one of the listener's ``max_connections`` slots only when its first byte
arrives (read into a one-byte buffer): connections that send nothing wait without one, capped
per listener and per peer address, so idle ones cannot starve senders. TLS handshakes run
here too (each accepted socket handed to ``loop.connect_accepted_socket``), counted with the
waiting connections, timed out on their own, and logged when they fail. Acknowledgements are
written once the kernel's receive buffer is read empty, and a connection whose peer went away
is read to the end before it is let go: a sender that writes its messages and closes without
reading the replies loses nothing that reached us.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import ssl
import struct
import termios
import threading
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

from ..model.addresses import host_port
from ..model.patterns import NetworkPattern
from .log_limit import LogLimit
from .spool import MessageTooLarge, Spool

if TYPE_CHECKING:
    import socket
    from pathlib import Path

    from ..model.events import Event

__all__ = ["Connection", "Hub", "Listener", "read_buffer"]

logger = logging.getLogger("meow_async.monitors.network")
#: Lines any peer can cause (handshake failures, caps, probes): a few, never a flood.
peer_log = LogLimit(logger)

_LENGTH = struct.Struct(">I")
_FIONREAD = struct.Struct("i")
#: Seconds a new connection may wait without sending before a cap can close it for newer ones.
_GRACE = 1.0
#: TLS handshakes a listener runs at once.
_HANDSHAKES = 64
#: Acknowledgements held while a sender keeps the receive buffer full, at most (then written).
_MAX_HELD_ACKS = 1024
#: A TLS record header carrying a ClientHello: type 0x16, version 3.0-3.4, a length, then
#: handshake type 1. A plain message that starts with these 6 bytes is taken for one.
_HELLO_LEN = 6


def _is_hello(b: bytes) -> bool:
    return (
        len(b) >= _HELLO_LEN
        and b[0] == 0x16
        and b[1] == 0x03
        and b[2] <= 0x04
        and 0 < (b[3] << 8 | b[4]) <= 0x4800
        and b[5] == 0x01
    )


def _could_be_hello(b: bytes) -> bool:
    """Whether ``b`` (shorter than a hello's header) may still grow into one."""
    return (
        (len(b) < 1 or b[0] == 0x16)
        and (len(b) < 2 or b[1] == 0x03)
        and (len(b) < 3 or b[2] <= 0x04)
        and (len(b) < 5 or 0 < (b[3] << 8 | b[4]) <= 0x4800)
    )


Key = tuple[str, int, str]  # host, port, and the pattern name when port is 0 (its own port)

_buffers = threading.local()


def read_buffer(size: int) -> memoryview:
    """This thread's read buffer of ``size`` bytes (a loop's callbacks all run on its thread)."""
    mine: dict[int, memoryview] = _buffers.__dict__.setdefault("by_size", {})
    if size not in mine:
        mine[size] = memoryview(bytearray(size))
    return mine[size]


class Hub(Protocol):
    """**Protocol:** what a connection asks of the monitor it belongs to (a ``NetworkMonitor``):
    the loop and the read buffers all connections share, spool files, slots, and acceptance of
    a complete message onto the events queue."""

    loop: asyncio.AbstractEventLoop
    buffer: memoryview
    first_byte: memoryview
    spool_dir: Path

    def new_spool(self) -> Spool: ...

    def joined(self, conn: Connection) -> None: ...

    def lost(self, conn: Connection) -> None: ...

    def accept(
        self, lst: Listener, spool: Spool, peer: str, subject: str | None
    ) -> list[Event] | None: ...

    def offer(self, events: list[Event]) -> bool: ...

    async def put(self, events: list[Event]) -> None: ...

    def later(self, work: Coroutine[Any, Any, None]) -> None: ...


@dataclass(eq=False)
class Listener:
    """A bound port and the settings every rule on it shares."""

    key: Key
    pattern: NetworkPattern  # the first rule's pattern: all on this listener share its settings
    sock: socket.socket
    tls: ssl.SSLContext | None
    server: asyncio.Server | None = None
    accepting: asyncio.Task[None] | None = None  # a TLS listener's accept loop
    port: int = field(init=False)
    active: int = 0  # connections being read (at most max_connections)
    waiting: deque[Connection] = field(default_factory=deque)  # sent a byte; wait for a slot
    #: Connections with no slot that have sent nothing yet (or are in their TLS handshake),
    #: oldest first, all and per peer address: what max_waiting(_per_peer) caps.
    idle: dict[Connection, None] = field(default_factory=dict)
    idle_by_peer: dict[str, dict[Connection, None]] = field(default_factory=dict)
    trim_timer: asyncio.TimerHandle | None = None  # caps to apply once a burst's grace ends
    #: TLS handshakes under way at once, at most (others wait their turn as bare sockets).
    shaking: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(_HANDSHAKES))
    #: The rules it served before the change that closed it (a reload that moved its port):
    #: a message its connections finish after that goes to them, the version it began under.
    served: list[Any] = field(default_factory=list)
    closed: bool = False

    def __post_init__(self) -> None:
        self.port = self.sock.getsockname()[1]

    def hold(self, conn: Connection) -> None:
        """A new connection waits without a slot; past a cap, the one waiting longest goes."""
        self.idle[conn] = None
        mine = self.idle_by_peer.setdefault(conn.host, {})
        mine[conn] = None
        p = self.pattern
        self._trim(mine, p.max_waiting_per_peer, "max_waiting_per_peer")
        self._trim(self.idle, p.max_waiting, "max_waiting")

    def _trim(self, waiting: dict[Connection, None], cap: int, name: str) -> None:
        """Close the longest-waiting connections past ``cap``, but not a burst's newcomers
        (younger than _GRACE: their first bytes may just not be read yet), nor one whose
        bytes wait in the kernel (a sender: it leaves the count, its read takes a slot)."""
        while len(waiting) > cap:
            oldest = next(iter(waiting))
            loop = oldest.monitor.loop
            if loop.time() - oldest.since < _GRACE:
                if self.trim_timer is None:  # look again when the oldest's grace is over
                    self.trim_timer = loop.call_at(oldest.since + _GRACE, self._trim_all)
                return
            if oldest.has_bytes():
                self.release(oldest)
                continue
            self._evict(oldest, f"{name} ({cap})")

    def _trim_all(self) -> None:
        self.trim_timer = None
        p = self.pattern
        for mine in list(self.idle_by_peer.values()):
            self._trim(mine, p.max_waiting_per_peer, "max_waiting_per_peer")
        self._trim(self.idle, p.max_waiting, "max_waiting")

    def has_room(self) -> bool:
        """A slot is free and no sender waits for one before a newcomer."""
        waiting = self.waiting
        while waiting and waiting[0].transport is None:
            waiting.popleft()  # gone while it waited
        return self.active < self.pattern.max_connections and not waiting

    def release(self, conn: Connection) -> None:
        if self.idle.pop(conn, 0) is None:
            mine = self.idle_by_peer[conn.host]
            del mine[conn]
            if not mine:
                del self.idle_by_peer[conn.host]

    def _evict(self, conn: Connection, cap: str) -> None:
        peer_log.log(
            logging.WARNING,
            f"cap:{self.describe()}",
            "%s: over %s: closed the connection from %s that waited longest without sending",
            self.describe(),
            cap,
            conn.peer,
        )
        self.release(conn)
        conn.stop(abort=True)

    def describe(self) -> str:
        return host_port(self.key[0], self.port)


class Connection(asyncio.BufferedProtocol):
    """Frames messages out of one connection, spools each and hands it to the monitor.

    While a message waits for room in a full event queue, reading is paused, so the sender
    feels TCP back-pressure and nothing it sends later overtakes it.
    """

    __slots__ = (
        "_acks",
        "_busy",
        "_closing",
        "_eof",
        "_head",
        "_held",
        "_left",
        "_lost",
        "_replied",
        "_retiring",
        "_shake",
        "_sniff",
        "_stopping",
        "_tail",
        "_timer",
        "host",
        "last",
        "lst",
        "messages",
        "monitor",
        "peer",
        "since",
        "slot",
        "spool",
        "transport",
    )

    def __init__(self, monitor: Hub, lst: Listener) -> None:
        self.monitor = monitor
        self.lst = lst
        self.transport: asyncio.Transport | None = None
        self.peer = "an unknown peer"
        self.host = ""  # the peer's address without its port: what max_waiting_per_peer counts
        self.spool: Spool | None = None  # the message being received
        self.slot = False  # counted in lst.active
        self.messages = 0  # complete messages accepted from this connection
        self.last = 0.0  # loop time of the last read, for the idle timeout
        self.since = 0.0  # loop time it connected
        self._timer: asyncio.TimerHandle | None = None
        self._busy = False  # a message waits for room in the event queue: reading paused
        self._held = b""  # what arrived while paused, read once it can be
        self._acks: list[str] = []  # acknowledgements not yet written
        self._eof = False
        self._lost: Exception | None = None  # the transport died; what was left is being read
        self._closing = False
        self._stopping = False
        self._replied = False  # connection framing: its one message is done
        self._sniff: bytes | None = None if lst.tls else b""  # first bytes: a TLS hello?
        self._shake: asyncio.Task[None] | None = None  # the TLS handshake, while it runs
        self._head = b""  # length framing: header bytes so far
        self._left = -1  # length framing: body bytes still to come; -1 between messages
        self._tail = b""  # delimiter framing: bytes that may start a delimiter
        self._retiring = False  # its listener closed: close once no message is under way

    # -- asyncio's callbacks --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # a stream's (uvloop's too)
        if self.lst.tls is not None:  # the handshake is done (accepted in handshake())
            self._shake = None
            self.last = self.monitor.loop.time()
        else:
            self._arrived(_peer(transport))
            if self.transport.is_closing():
                return  # closed at once: over a cap
        self._arm(self.lst.pattern.idle_timeout)

    def _arrived(self, peer: str) -> None:
        self.peer = peer
        self.host = peer.rpartition(":")[0] or peer
        self.monitor.joined(self)
        self.last = self.since = self.monitor.loop.time()
        self.lst.hold(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        # Asked just before a read, when data is there: a slot free now is this sender's
        # (taken in buffer_updated); none free, one byte, enough to know it is a sender.
        return self.monitor.buffer if self.slot or self.lst.has_room() else self.monitor.first_byte

    def buffer_updated(self, nbytes: int) -> None:
        if self._closing or self._lost is not None:
            return
        self.last = self.monitor.loop.time()
        if not self.slot and not self._held and self.lst.has_room():
            self.lst.release(self)  # its first bytes, and a slot free: no pause, no copy
            self._take()
        if self._busy or not self.slot:
            # A first byte, or a read before a pause took effect (TLS; uvloop starts
            # reading after connection_made): keep it, in order, and pause (again).
            buf = self.monitor.buffer if self.slot else self.monitor.first_byte
            self._held += bytes(buf[:nbytes])
            assert self.transport is not None  # noqa: S101 - reading
            self.transport.pause_reading()
            if not self.slot:
                self._take_slot()
            return
        self._guard(self._feed, self.monitor.buffer[:nbytes])
        if nbytes < len(self.monitor.buffer) or not self._more_to_read():
            self._send_acks()  # the kernel's buffer is read: a sender that quits now lost nothing
        if self._retiring:
            self._retire_now()

    def eof_received(self) -> bool:
        self._eof = True
        if not self.slot and not self._held:
            # Nothing sent: a port probe or a health check, no message unless asked for.
            if self.lst.pattern.allow_empty and self.lst.pattern.framing == "connection":
                self._take_slot()
            else:
                logger.debug("%s from %s: closed without sending", self.lst.describe(), self.peer)
                self._close()
        elif self.slot and not self._busy and not self._closing:
            self._guard(self._at_eof)
        # Open for writing, so an acknowledgement can still go out (TLS cannot half-close).
        return self.lst.tls is None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if exc is not None and self.slot and not self._closing and self.lst.tls is None:
            # Died under us (often an acknowledgement written to a peer that had gone): what
            # the peer sent before is still in the kernel's buffer. Read it all.
            self._lost = exc
            self._drain()
        self._gone()
        if self._lost is None or not self._busy:
            self._finish(exc)

    # -- slots ----------------------------------------------------------------------------------

    def _take_slot(self) -> None:
        """A first byte came (or an allowed empty message ended): serve it when a slot frees."""
        self.lst.release(self)
        if self.lst.active < self.lst.pattern.max_connections:
            self._wake()
        else:
            self.lst.waiting.append(self)  # not idle: waits for us, not the other way round

    def _take(self) -> None:
        self.slot = True
        self.lst.active += 1
        self._arm(self.lst.pattern.idle_timeout)

    def _wake(self) -> None:
        """A slot is ours: read what waited, then the rest."""
        self.last = self.monitor.loop.time()
        self._take()
        held, self._held = self._held, b""
        self._guard(self._go_on, held)

    def _gone(self) -> None:
        """The transport is gone: give back what it held, let the next sender in."""
        self.monitor.lost(self)
        self.lst.release(self)
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

    def _drain(self) -> None:
        """Read what the kernel still holds for this connection, to its end."""
        try:
            fd = os.dup(self._fileno())
        except OSError:
            return
        data = [self._held]
        try:
            # Ends with b"" or an error either way (the socket's reset error may have been
            # reported already): only an end of file seen before says the peer ended cleanly.
            while chunk := os.read(fd, len(self.monitor.buffer)):
                data.append(chunk)
        except OSError:
            pass
        finally:
            os.close(fd)
        self._held = b"".join(data)
        if not self._busy:
            held, self._held = self._held, b""
            self._guard(self._go_on, held)

    def _finish(self, exc: Exception | None) -> None:
        """Log how the connection ended: how many messages it delivered, what was dropped."""
        dropped = self._partial()
        unfinished = dropped is not None
        self._drop_message()
        self._acks.clear()
        if self._closing or (exc is None and not unfinished):
            return
        why = type(exc).__name__ if exc is not None else "closed mid-message"
        if not unfinished and not self.messages:
            logger.debug(
                "%s from %s: reset (%s) before sending", self.lst.describe(), self.peer, why
            )
        elif unfinished:
            logger.warning(
                "%s from %s: connection lost (%s) after %d complete message(s); an unfinished "
                "message of %d bytes was dropped",
                self.lst.describe(),
                self.peer,
                why,
                self.messages,
                dropped,
            )
        else:
            logger.info(
                "%s from %s: connection lost (%s) after %d complete message(s)",
                self.lst.describe(),
                self.peer,
                why,
                self.messages,
            )

    # -- TLS ------------------------------------------------------------------------------------

    async def handshake(self, sock: socket.socket, peer: str, ctx: ssl.SSLContext) -> None:
        """A TLS listener accepted ``sock``: count it as waiting, then shake hands (at most
        ``handshake_timeout`` s); ``connection_made`` follows once it is done."""
        self._arrived(peer)
        if self._closing:
            sock.close()  # over a cap at once
            return
        timeout = self.lst.pattern.handshake_timeout
        loop = self.monitor.loop
        self._shake = asyncio.current_task()
        deadline = loop.time() + timeout
        try:
            # A few at a time: each costs a TLS state and (on asyncio's loop) a 256 KiB read
            # buffer from its start, where a socket waiting for its turn costs next to nothing.
            async with asyncio.timeout_at(deadline):
                await self.lst.shaking.acquire()
            try:
                await loop.connect_accepted_socket(
                    lambda: self,
                    sock,
                    ssl=ctx,
                    ssl_handshake_timeout=max(deadline - loop.time(), 0.001),
                )
            finally:
                self.lst.shaking.release()
        except (OSError, TimeoutError, asyncio.CancelledError, ssl.SSLError) as e:
            self._shake = None
            if not self._closing:
                peer_log.log(
                    logging.WARNING,
                    f"tls:{self.lst.describe()}",
                    "%s: TLS handshake with %s failed: %s",
                    self.lst.describe(),
                    self.peer,
                    _tls_why(e, timeout),
                )
            self._closing = True
            sock.close()  # closed already unless cancelled mid-way
            self._gone()
            if isinstance(e, asyncio.CancelledError) and not self._stopping:
                raise

    # -- framing --------------------------------------------------------------------------------

    def _feed(self, data: memoryview | bytes) -> None:
        if self._sniff is not None and not self._sniffed(data):
            return
        framing = self.lst.pattern.framing
        if framing == "connection":
            self._write(data)
        elif framing == "delimiter":
            self._feed_delimited(bytes(data))
        else:
            self._feed_length(data)

    def _sniffed(self, data: memoryview | bytes) -> bool:
        """A plain listener's first bytes: True to go on (with them, held back until now),
        False while they may still be a TLS client hello, or once they are one."""
        assert self._sniff is not None  # noqa: S101
        first = self._sniff + bytes(data[:_HELLO_LEN])
        if _is_hello(first):
            peer_log.log(
                logging.WARNING,
                f"hello:{self.lst.describe()}",
                "%s: a TLS client connected to a plain port (from %s): closed, no job; "
                "is the client meant for a listener with tls_cert?",
                self.lst.describe(),
                self.peer,
            )
            self._sniff = None
            self._close()
            return False
        if len(first) < _HELLO_LEN and _could_be_hello(first):
            self._sniff = first  # too short to tell: wait for more
            return False
        held, self._sniff = self._sniff, None
        if held:
            self._feed(held)
        return True

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
        if self._sniff:  # one or two bytes that looked like a TLS hello's start: data after all
            held, self._sniff = self._sniff, None
            self._feed(held)
            if self._busy:
                return
        framing = self.lst.pattern.framing
        if framing == "connection":
            if not self._replied:
                self._replied = True
                empty = self.spool is None or not self.spool.size
                if empty and not self.lst.pattern.allow_empty:
                    self._drop_message()  # sent nothing: no message (allow_empty to change)
                elif not self._complete():
                    return
        elif framing == "delimiter":
            if self._tail or (self.spool is not None and self.spool.size):
                self._write(self._tail)  # a last message without a delimiter counts
                self._tail = b""
                if not self._complete():
                    return
        elif (got := self._partial()) is not None:
            self._drop_message()
            logger.warning(
                "%s from %s: closed after %d complete message(s), mid-way through a "
                "length-framed one: its %d bytes were dropped",
                self.lst.describe(),
                self.peer,
                self.messages,
                got,
            )
        self._close()

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
        if events is None:
            return True  # dropped: not acknowledged
        self.messages += 1
        if not events:
            self._ack(spool.id)  # accepted; no rule's filter wanted it
            return True
        if self.monitor.offer(events):
            self._ack(spool.id)
            return True
        self._busy = True
        if self.transport is not None:
            self.transport.pause_reading()
        self.monitor.later(self._queue_later(events, spool.id))
        return False

    async def _queue_later(self, events: list[Event], msg_id: str) -> None:
        await self.monitor.put(events)
        self._busy = False
        self._ack(msg_id)
        self._send_acks()  # reading is paused: the sender may be waiting for this one
        if self._lost is None and (self.transport is None or self._closing):
            return
        if self._stopping and self._lost is None:
            self._close()
            return
        held, self._held = self._held, b""
        self._guard(self._go_on, held)
        if self._lost is not None and not self._busy:
            self._finish(self._lost)
        elif self._retiring:
            self._retire_now()

    def _go_on(self, held: bytes) -> None:
        self.last = self.monitor.loop.time()
        if held:
            self._feed(held)
        if self._busy or self._closing:
            return
        if self._eof:
            self._at_eof()
        elif self.transport is not None and self._lost is None:
            self.transport.resume_reading()

    def _ack(self, msg_id: str) -> None:
        if self.lst.pattern.ack:
            self._acks.append(f"ok {msg_id}\n")
            if self.lst.tls is not None or len(self._acks) >= _MAX_HELD_ACKS:
                # TLS: the raw socket's count says nothing of decrypted bytes. Too many: a
                # sender that keeps the buffer full still hears of its messages.
                self._send_acks()

    def _send_acks(self) -> None:
        """Write the acknowledgements due, in one write. A raw sender that already left
        (nc) is fine: what it sent was read before this could fail."""
        if not self._acks:
            return
        text, self._acks = "".join(self._acks), []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(text.encode())

    def has_bytes(self) -> bool:
        """Whether the kernel holds bytes from this peer not read yet (plain TCP only)."""
        return self.lst.tls is None and self._more_to_read()

    def _more_to_read(self) -> bool:
        """Whether the kernel holds more of this connection's bytes (after a full read)."""
        try:
            got = fcntl.ioctl(self._fileno(), termios.FIONREAD, b"\0\0\0\0")
        except OSError:
            return False
        return bool(_FIONREAD.unpack(got)[0])

    def _fileno(self) -> int:
        """The socket's descriptor (asked only off the common path: full reads, a drain)."""
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        return sock.fileno() if sock is not None else -1

    def _subject(self) -> str | None:
        if self.lst.tls is None or self.transport is None:
            return None
        cert = self.transport.get_extra_info("peercert")
        if not cert:
            return None
        parts = [f"{k}={v}" for rdn in cert.get("subject", ()) for k, v in rdn]
        return ",".join(parts) or None

    # -- ending ---------------------------------------------------------------------------------

    def retire(self) -> None:
        """Its listener was closed by a change of the rules (a port moved): the message under
        way, if any, is finished and acknowledged, then the connection closes; between
        messages it closes now. The sender reconnects to the new port."""
        self._retiring = True
        self._retire_now()

    def _retire_now(self) -> None:
        if not self._closing and not self._busy and self._partial() is None:
            self._close()

    def stop(self, *, abort: bool = False) -> None:
        """The monitor stops: a message being queued finishes (it was accepted), an unfinished
        one is dropped (it never was). ``abort``: close at once, whatever it is doing."""
        self._stopping = True
        if self._shake is not None:
            self._closing = True
            self._shake.cancel()  # mid-handshake: it cleans up
            return
        if abort or not self._busy:
            self._drop_message()
            self._close(abort=True)

    def _arm(self, timeout: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.monitor.loop.call_at(self.last + timeout, self._check_idle)

    def _check_idle(self) -> None:
        self._timer = None
        if self.transport is None or self._closing:
            return
        timeout = self.lst.pattern.idle_timeout
        due = self.last + timeout
        now = self.monitor.loop.time()
        if self._busy or (self._held and not self.slot):
            due = now + timeout  # waiting for us (queue room, a slot) is not the sender idle
        elif now >= due:
            peer_log.counts["idle"] += 1
            if (partial := self._partial()) is not None:
                logger.warning(
                    "%s from %s: idle for %gs mid-message, closed; its %d bytes so far "
                    "were dropped",
                    self.lst.describe(),
                    self.peer,
                    timeout,
                    partial,
                )
            else:  # between messages, or never sent one: normal
                logger.debug(
                    "%s from %s: idle for %gs, closed", self.lst.describe(), self.peer, timeout
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

    def _partial(self) -> int | None:
        """Bytes of a message under way (header and tail included), None between messages."""
        if self.spool is None and not self._head and self._left < 0 and not self._tail:
            return None
        return (self.spool.size if self.spool else 0) + len(self._head) + len(self._tail)

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
            self._send_acks()
            if abort:
                self.transport.abort()
            else:
                self.transport.close()  # after any acknowledgement still buffered


def _tls_why(e: BaseException, timeout: float) -> str:
    if isinstance(e, TimeoutError) or "taking longer" in str(e):  # asyncio aborts on timeout
        return f"no handshake within {timeout:g}s (handshake_timeout)"
    if isinstance(e, ssl.SSLError):
        return e.reason or e.strerror or str(e)
    if isinstance(e, asyncio.CancelledError):
        return "the listener stopped"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def _peer(transport: asyncio.BaseTransport) -> str:
    addr = transport.get_extra_info("peername")
    if addr is None:
        return "an unknown peer (gone already)"
    return peer_name(addr)


def peer_name(addr: object) -> str:
    """A socket address as ``HOST:PORT`` (``[::1]:PORT`` for IPv6)."""
    if isinstance(addr, tuple) and len(addr) >= 2:
        return host_port(str(addr[0]), addr[1])
    return str(addr)
