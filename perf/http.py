"""HTTP intake: N POST requests -> N events, meow_async's HTTP monitor against a bare aiohttp
handler that streams each body to the same kind of spool file and queues it (the floor).

A client process sends the requests (``concurrency`` in flight, aiohttp's client), stamping each
with its send time; the server side stamps when its event is on the queue. Both run in one
process per variant on the same loop; variants take turns. Reported: requests per second (first
send to last event) and p50/p99 request -> event latency.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from meow_async import HttpPattern, PythonRecipe, Workflow
from meow_async.monitors.http import HttpMonitor
from meow_async.monitors.network import NetworkMonitor

from .loops import loop_factory

#: The client: N POSTs of ``size`` bytes, ``concurrency`` at once; prints each one's send time.
_CLIENT = """
import asyncio, json, sys, time
import aiohttp
url, n, size, conc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
body = b"x" * size
sent, errors = {}, 0
async def main():
    global errors
    sem = asyncio.Semaphore(conc)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conc)) as s:
        async def one(i):
            global errors
            async with sem:
                sent[i] = time.time()
                async with s.post(url, data=body, headers={"X-Seq": str(i)}) as r:
                    await r.read()
                    if r.status != 202:
                        errors += 1
        await asyncio.gather(*(one(i) for i in range(n)))
asyncio.run(main())
print(json.dumps({"sent": sent, "errors": errors}))
"""


async def _client(url: str, n: int, size: int, concurrency: int) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CLIENT,
        url,
        str(n),
        str(size),
        str(concurrency),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    result: dict[str, Any] = json.loads(out)
    return result


def _summary(sent: dict[str, float], got: dict[int, float]) -> dict[str, Any]:
    lat = sorted((got[int(i)] - t) * 1000 for i, t in sent.items() if int(i) in got)
    span = max(got.values()) - min(sent.values())
    return {
        "events": len(got),
        "per_s": len(got) / span if span > 0 else 0.0,
        "p50_ms": statistics.median(lat),
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
    }


async def meow_async_point(root: Path, n: int, size: int, concurrency: int) -> dict[str, Any]:
    pattern = HttpPattern(name="h", route="/in", port=0, recipe="r", headers=("X-Seq",))
    wf = Workflow([pattern], [PythonRecipe(name="r", script="pass\n")])
    network = NetworkMonitor(wf, root / "spool", base_dir=root)
    http = HttpMonitor(wf, network)
    events: asyncio.Queue[Any] = asyncio.Queue(maxsize=n + 1)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(m.run(events, stop)) for m in (network, http)]
    got: dict[int, float] = {}

    async def consume() -> None:
        while len(got) < n:
            event = await events.get()
            got[int(event.extras["parameters"]["headers"]["x-seq"])] = time.time()
            if event.release is not None:
                event.release()  # as a handler does once the job exists: the spool file goes

    async with asyncio.timeout(30):
        await network.ready.wait()
        await http.ready.wait()
    consumer = asyncio.create_task(consume())
    url = f"http://127.0.0.1:{http.ports()['h']}/in"
    sent = await _client(url, n, size, concurrency)
    async with asyncio.timeout(60):
        await consumer
    stop.set()
    await asyncio.gather(*tasks)
    network.close_journal()
    return {**_summary(sent["sent"], got), "errors": sent["errors"]}


async def floor_point(root: Path, n: int, size: int, concurrency: int) -> dict[str, Any]:
    """The least an HTTP intake does: stream the body to a new file, queue it, answer 202."""
    spool = root / "floor-spool"
    spool.mkdir()
    queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        path = f"{spool}/{secrets.token_hex(6)}.msg"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            while chunk := await request.content.read(65536):
                os.write(fd, chunk)
        finally:
            os.close(fd)
        queue.put_nowait((int(request.headers["X-Seq"]), path))
        return web.json_response({"ok": True}, status=202)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    server = web.Server(handle, access_log=None)
    aserver = await asyncio.get_running_loop().create_server(server, sock=sock)
    got: dict[int, float] = {}

    async def consume() -> None:
        while len(got) < n:
            seq, path = await queue.get()
            got[seq] = time.time()
            os.unlink(path)

    consumer = asyncio.create_task(consume())
    sent = await _client(f"http://127.0.0.1:{sock.getsockname()[1]}/in", n, size, concurrency)
    async with asyncio.timeout(60):
        await consumer
    aserver.close()
    await server.shutdown(1.0)
    return {**_summary(sent["sent"], got), "errors": sent["errors"]}


def run(
    n: int, repeats: int, scratch: Path, loop: str, concurrency: int, size: int, log: Any = print
) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"meow_async": [], "floor": []}
    for i in range(repeats):
        order = ("meow_async", "floor") if i % 2 == 0 else ("floor", "meow_async")
        for variant in order:
            d = scratch / f"http-{variant}-{i}"
            d.mkdir(parents=True)
            point = meow_async_point if variant == "meow_async" else floor_point
            try:
                with asyncio.Runner(loop_factory=loop_factory(loop)) as r:
                    res = r.run(point(d, n, size, concurrency))
            finally:
                shutil.rmtree(d, ignore_errors=True)
            runs[variant].append(res)
            log(
                f"http {variant:<10} {n} x {size} B, {concurrency} in flight: "
                f"{res['per_s']:.0f} requests/s, request -> event p50 {res['p50_ms']:.2f} ms, "
                f"p99 {res['p99_ms']:.2f} ms ({res['errors']} not 202)"
            )
    med = {
        v: {k: statistics.median(r[k] for r in rs) for k in ("per_s", "p50_ms", "p99_ms")}
        for v, rs in runs.items()
    }
    ratio = med["floor"]["per_s"] / med["meow_async"]["per_s"]
    log(
        f"http: meow_async takes {ratio:.2f}x the floor's time per request (medians of "
        f"{repeats}); p50 {med['meow_async']['p50_ms']:.2f} vs {med['floor']['p50_ms']:.2f} ms, "
        f"p99 {med['meow_async']['p99_ms']:.2f} vs {med['floor']['p99_ms']:.2f} ms (loop {loop})"
    )
    return {
        "n": n,
        "size": size,
        "concurrency": concurrency,
        "loop": loop,
        "runs": runs,
        "median": med,
        "time_ratio": ratio,
    }
