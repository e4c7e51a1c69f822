"""Held clients: ``python -m perf.idle_clients PORT N [BYTES]``: N connections that send
BYTES (default 0: idle) and then stay open without finishing their message.

Prints ``connected K ERRORS`` once every connect (and send) has returned, holds the
connections open until stdin closes, then closes them. Lives in its own process.
"""

from __future__ import annotations

import asyncio
import socket
import sys

from .limits import raise_nofile
from .loops import loop_factory


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


def main() -> None:
    raise_nofile()
    port, n = int(sys.argv[1]), int(sys.argv[2])
    send = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    with asyncio.Runner(loop_factory=loop_factory("uvloop")) as r:
        socks, errors = r.run(_connect_all(port, n, send))
    print(f"connected {len(socks)} {errors}", flush=True)
    sys.stdin.read()
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
