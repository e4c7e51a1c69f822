"""Held clients: ``python -m perf.idle_clients PORT N [BYTES [CAFILE]]``: N connections that
send BYTES (default 0: idle) and then stay open without finishing their message.

With CAFILE, each connection first completes a TLS handshake (checking the server's
certificate for ``localhost`` against CAFILE; no client certificate) and sends its BYTES
over TLS. Prints ``connected K ERRORS`` once every connect (and handshake, and send) has
returned, holds the connections open until stdin closes, then closes them and prints
``open K`` (plain: how many the server had not closed by then; TLS: how many were still
open, to be closed with a close_notify now, waiting at most 10 s for the server's side).
Lives in its own process.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import sys

from .limits import raise_nofile
from .loops import loop_factory

#: TLS clients: seconds to wait for the server to answer our close_notify when leaving.
_CLOSE_WAIT = 10.0


async def _connect_all(
    port: int, n: int, send: int, concurrency: int = 256
) -> tuple[list[socket.socket], int]:
    loop = asyncio.get_running_loop()
    socks: list[socket.socket] = []
    errors = 0
    todo = iter(range(n))

    async def worker() -> None:
        nonlocal errors
        for _ in todo:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                await loop.sock_connect(s, ("127.0.0.1", port))
                if send:
                    await loop.sock_sendall(s, b"x" * send)
            except OSError:
                errors += 1
                s.close()
            else:
                socks.append(s)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, n))))
    return socks, errors


def _still_open(s: socket.socket) -> bool:
    """Whether the server has not closed this (non-blocking) socket yet: read what it sent
    (nothing, or a TLS alert) up to its end, a reset, or nothing more for now (open)."""
    try:
        while s.recv(65536):
            pass
    except BlockingIOError:
        return True
    except OSError:  # reset
        return False
    return False


class _Held(asyncio.Protocol):
    def __init__(self) -> None:
        self.gone = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.gone.done():
            self.gone.set_result(None)


async def _tls(port: int, n: int, send: int, cafile: str, concurrency: int = 256) -> None:
    loop = asyncio.get_running_loop()
    ctx = ssl.create_default_context(cafile=cafile)
    held: list[tuple[asyncio.Transport, _Held]] = []
    errors = 0
    todo = iter(range(n))

    async def worker() -> None:
        nonlocal errors
        for _ in todo:
            try:
                transport, proto = await loop.create_connection(
                    _Held, "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
                )
            except (OSError, ssl.SSLError):
                errors += 1
                continue
            if send:
                transport.write(b"x" * send)
            held.append((transport, proto))

    await asyncio.gather(*(worker() for _ in range(min(concurrency, n))))
    print(f"connected {len(held)} {errors}", flush=True)
    await loop.run_in_executor(None, sys.stdin.read)
    still = [(t, p) for t, p in held if not p.gone.done()]
    print(f"open {len(still)}", flush=True)
    for transport, _ in still:
        transport.close()
    if still:
        await asyncio.wait([p.gone for _, p in still], timeout=_CLOSE_WAIT)
    for transport, _ in still:
        transport.abort()  # whatever did not finish closing


def main() -> None:
    raise_nofile()
    port, n = int(sys.argv[1]), int(sys.argv[2])
    send = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    cafile = sys.argv[4] if len(sys.argv) > 4 else None
    with asyncio.Runner(loop_factory=loop_factory("uvloop")) as r:
        if cafile is not None:
            r.run(_tls(port, n, send, cafile))
            return
        socks, errors = r.run(_connect_all(port, n, send))
    print(f"connected {len(socks)} {errors}", flush=True)
    sys.stdin.read()
    print(f"open {sum(_still_open(s) for s in socks)}", flush=True)
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
