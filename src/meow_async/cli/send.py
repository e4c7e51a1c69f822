"""Sending data to a network trigger: from the CLI, from jobs, from other runners."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import struct
import time
from collections.abc import AsyncIterable, Iterable
from pathlib import Path

from ..exceptions import MeowError
from ..model.addresses import host_port
from ..model.framing import FRAMINGS

__all__ = ["SendError", "client_tls_context", "send"]

_CHUNK = 64 * 1024


class SendError(MeowError):
    """The message could not be delivered (or, with ``ack``, was not acknowledged)."""


def client_tls_context(
    cafile: str | os.PathLike[str] | None = None,
    certfile: str | os.PathLike[str] | None = None,
    keyfile: str | os.PathLike[str] | None = None,
) -> ssl.SSLContext:
    """A TLS context that trusts ``cafile`` (else the system's CAs), with an optional client
    certificate for listeners that require one."""
    ctx = ssl.create_default_context(cafile=os.fspath(cafile) if cafile else None)
    if certfile:
        ctx.load_cert_chain(os.fspath(certfile), os.fspath(keyfile) if keyfile else None)
    return ctx


async def send(
    host: str,
    port: int,
    data: bytes | str | os.PathLike[str] | Iterable[bytes] | AsyncIterable[bytes],
    *,
    ack: bool = False,
    framing: str = "connection",
    delimiter: bytes = b"\n",
    tls: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
) -> str | None:
    """Send one message to a meow_async listener; returns the message id when ``ack``.

    ``data`` is bytes, a path (streamed from disk), or an (async) iterable of chunks. The
    framing must match the listener's: ``connection`` ends the message by closing the
    sending side, ``delimiter`` appends ``delimiter``, ``length`` prefixes a 4-byte length
    (so it needs bytes or a path). With ``ack``, waits for the listener's ``ok <id>`` reply.
    """
    if framing not in FRAMINGS:
        raise ValueError(f"unknown framing {framing!r}: choose from {', '.join(FRAMINGS)}")
    if tls is not None and framing == "connection" and ack:
        raise ValueError("ack over TLS needs framing 'delimiter' or 'length'")
    if isinstance(data, str | os.PathLike) and not await asyncio.to_thread(os.path.isfile, data):
        raise SendError(f"no such file: {os.fspath(data)}")
    # Before connecting: a wrong argument must not leave a half-sent message behind.
    if framing == "length":
        size, chunks = await asyncio.to_thread(_sized, data)
    else:
        size, chunks = 0, _chunks(data)
    where = host_port(host, port)
    started = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection(
            host, port, ssl=tls, server_hostname=server_hostname if tls else None
        )
    except ConnectionRefusedError:
        raise SendError(f"cannot connect to {where}: connection refused") from None
    except OSError as e:
        raise SendError(f"cannot connect to {where}: {e.strerror or e}") from None
    try:
        if tls is not None:
            await _tls_verdict(reader, where, time.monotonic() - started)
        if framing == "length":
            writer.write(struct.pack(">I", size))
        async for chunk in chunks:
            writer.write(chunk)
            await writer.drain()  # stream: never the whole payload in memory
        if framing == "delimiter":
            writer.write(delimiter)
        if framing == "connection" and writer.can_write_eof():
            writer.write_eof()
        await writer.drain()
        if not ack:
            return None
        line = await reader.readline()
        text = line.decode("utf-8", "replace").strip()
        if not text.startswith("ok "):
            raise SendError(
                f"{where} did not acknowledge the message"
                + (f" (said {text!r})" if text else " (closed without a reply)")
                + "; it may still have been delivered: does its pattern set ack: true?"
            )
        return text[3:]
    except OSError as e:  # ConnectionError, ssl.SSLError, ENOTCONN after a reset...
        raise SendError(f"{where}: connection lost while sending: {e}") from None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _tls_verdict(reader: asyncio.StreamReader, where: str, handshake: float) -> None:
    """With TLS 1.3 the client's handshake ends before the server has checked the client's
    certificate; a server that refuses it closes the connection one round trip later. Wait
    that long (three times the handshake, 20 ms to 1 s) for such a close, so a refusal is an
    error here rather than a message silently lost."""
    wait = min(max(3 * handshake, 0.02), 1.0)
    try:
        got = await asyncio.wait_for(reader.read(1), wait)
    except TimeoutError:
        return  # nothing said: accepted
    except (ssl.SSLError, ConnectionError) as e:
        raise SendError(f"{where}: the TLS server refused the connection: {e}") from None
    if not got:
        raise SendError(
            f"{where}: the server closed the connection right after the TLS handshake: it "
            "refused our client certificate, or needs one (--cert/--key)"
        )


def _sized(
    data: bytes | str | os.PathLike[str] | Iterable[bytes] | AsyncIterable[bytes],
) -> tuple[int, AsyncIterable[bytes]]:
    if isinstance(data, bytes):
        return len(data), _chunks(data)
    if isinstance(data, str | os.PathLike):
        return Path(data).stat().st_size, _chunks(data)
    raise ValueError("length framing needs bytes or a path, whose size is known up front")


async def _chunks(
    data: bytes | str | os.PathLike[str] | Iterable[bytes] | AsyncIterable[bytes],
) -> AsyncIterable[bytes]:
    if isinstance(data, bytes):
        for i in range(0, len(data), _CHUNK):
            yield data[i : i + _CHUNK]
        if not data:
            return
    elif isinstance(data, str | os.PathLike):
        with open(data, "rb") as f:  # noqa: ASYNC230 - one chunk at a time, small reads
            while chunk := f.read(_CHUNK):
                yield chunk
    elif isinstance(data, AsyncIterable):
        async for chunk in data:
            yield chunk
    else:
        for chunk in data:
            yield chunk
