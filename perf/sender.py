"""The sender: N messages, each its own short-lived TCP connection (connect, send, close).

It runs in the measuring process (the report's variant) or as ``python -m perf.sender``, a
separate process driven over stdin/stdout, one JSON line each way: a plan comes in, it says
``ready``, waits for ``go``, sends, and answers with what happened. Message ``i`` goes to
``ports[i % len(ports)]`` and starts with ``i`` in ASCII, so the receiver can tell which
message an event is. Times are ``time.monotonic()``: on Linux one clock for every process.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .limits import raise_nofile
from .loops import loop_factory

#: A connect that took this long was a dropped SYN retransmitted (Linux: 1 s, then 3 s...).
STALL_S = 0.9


@dataclass(frozen=True, slots=True)
class Plan:
    ports: list[int]
    n: int
    size: int = 32
    concurrency: int = 100
    host: str = "127.0.0.1"
    interval_s: float = 0.0  # > 0: message i starts no earlier than i * interval_s in


@dataclass(slots=True)
class Sent:
    """What the sender saw: per message, when it began closing and how long connect took."""

    started: float  # just before the first connect
    finished: float
    closing: list[float]  # monotonic, just before close(); NaN if the message failed
    connect_s: list[float]
    errors: list[str] = field(default_factory=list)

    @property
    def stalls(self) -> int:
        return sum(1 for c in self.connect_s if c >= STALL_S)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Sent:
        return cls(d["started"], d["finished"], d["closing"], d["connect_s"], d["errors"])


def payload(i: int, size: int) -> bytes:
    head = b"%d\n" % i
    return head + b"x" * max(0, size - len(head))


def message_index(data: bytes) -> int:
    return int(data.split(b"\n", 1)[0])


async def send_all(plan: Plan) -> Sent:
    """Send ``plan.n`` messages with at most ``plan.concurrency`` connections open at once."""
    loop = asyncio.get_running_loop()
    n = plan.n
    closing = [math.nan] * n
    connect_s = [math.nan] * n
    errors: list[str] = []
    family = socket.AF_INET6 if ":" in plan.host else socket.AF_INET
    todo = iter(range(n))

    async def worker() -> None:
        for i in todo:
            if plan.interval_s > 0:
                wait = started + i * plan.interval_s - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                t = time.monotonic()
                await loop.sock_connect(sock, (plan.host, plan.ports[i % len(plan.ports)]))
                connect_s[i] = time.monotonic() - t
                await loop.sock_sendall(sock, payload(i, plan.size))
                closing[i] = time.monotonic()
            except OSError as e:
                errors.append(f"message {i}: {e}")
            finally:
                sock.close()

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(max(1, min(plan.concurrency, n)))))
    return Sent(started, time.monotonic(), closing, connect_s, errors)


def main() -> None:
    """``python -m perf.sender [asyncio|uvloop]``: serve plans from stdin until EOF."""
    raise_nofile()
    loop = sys.argv[1] if len(sys.argv) > 1 else "asyncio"
    out = sys.stdout
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        for line in sys.stdin:
            plan = Plan(**json.loads(line))
            out.write("ready\n")
            out.flush()
            if sys.stdin.readline().strip() != "go":
                break
            sent = runner.run(send_all(plan))
            out.write(json.dumps(sent.to_json()) + "\n")
            out.flush()


if __name__ == "__main__":
    main()
