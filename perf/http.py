"""HTTP intake: N POST requests -> N events, meow_async's HTTP monitor against a bare aiohttp
handler that streams each body to the same kind of spool file and queues it (the floor), and
meow_async with HMAC-signed requests (``signed``: each checked, and its signature recorded in
``signatures.log`` before the 202).

A client process sends the requests (``concurrency`` in flight, aiohttp's client), stamping each
with its send time; the server side stamps when its event is on the queue. Both run in one
process per variant on the same loop; variants take turns. Reported: requests per second (first
send to last event), p50/p99 request -> event latency, and the server process's CPU time per
request (user + system: the least disturbed by other load on a shared machine).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
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
#: With a secret, each body starts with its number and is signed (X-Timestamp, X-Signature-256).
_CLIENT = """
import asyncio, hashlib, hmac, json, sys, time
import aiohttp
url, n, size, conc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
secret = sys.argv[5].encode() if len(sys.argv) > 5 else None
body = b"x" * size
sent, errors = {}, 0
def headers(i, data):
    out = {"X-Seq": str(i)}
    if secret is not None:
        stamp = str(int(time.time()))
        digest = hmac.new(secret, stamp.encode() + b"." + data, hashlib.sha256).hexdigest()
        out.update({"X-Timestamp": stamp, "X-Signature-256": "sha256=" + digest})
    return out
async def main():
    global errors
    sem = asyncio.Semaphore(conc)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conc)) as s:
        async def one(i):
            global errors
            data = (b"%08d" % i + body)[: max(size, 8)] if secret is not None else body
            async with sem:
                sent[i] = time.time()
                async with s.post(url, data=data, headers=headers(i, data)) as r:
                    await r.read()
                    if r.status != 202:
                        errors += 1
        await asyncio.gather(*(one(i) for i in range(n)))
asyncio.run(main())
print(json.dumps({"sent": sent, "errors": errors}))
"""


async def _client(
    url: str, n: int, size: int, concurrency: int, secret: str | None = None
) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CLIENT,
        url,
        str(n),
        str(size),
        str(concurrency),
        *([secret] if secret is not None else []),
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


#: The variable the signed variant's secret is in (set in this process only).
_SECRET_ENV = "MEOW_PERF_HTTP_SECRET"  # noqa: S105 - its name


async def signed_point(root: Path, n: int, size: int, concurrency: int) -> dict[str, Any]:
    """meow_async with every request signed (HMAC-SHA256 over timestamp and body)."""
    os.environ[_SECRET_ENV] = secrets.token_hex(16)
    return await meow_async_point(root, n, size, concurrency, signed=True)


async def meow_async_point(
    root: Path, n: int, size: int, concurrency: int, *, signed: bool = False
) -> dict[str, Any]:
    pattern = HttpPattern(
        name="h",
        route="/in",
        port=0,
        recipe="r",
        headers=("X-Seq",),
        hmac_secret_env=_SECRET_ENV if signed else None,
    )
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
    cpu = time.process_time()
    sent = await _client(url, n, size, concurrency, os.environ[_SECRET_ENV] if signed else None)
    async with asyncio.timeout(60):
        await consumer
    cpu = time.process_time() - cpu
    stop.set()
    await asyncio.gather(*tasks)
    network.close_journal()
    return {**_summary(sent["sent"], got), "errors": sent["errors"], "cpu_us": cpu / n * 1e6}


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
    cpu = time.process_time()
    sent = await _client(f"http://127.0.0.1:{sock.getsockname()[1]}/in", n, size, concurrency)
    async with asyncio.timeout(60):
        await consumer
    cpu = time.process_time() - cpu
    aserver.close()
    await server.shutdown(1.0)
    return {**_summary(sent["sent"], got), "errors": sent["errors"], "cpu_us": cpu / n * 1e6}


def _point(variant: str, d: Path, n: int, size: int, concurrency: int, loop: str) -> Any:
    with asyncio.Runner(loop_factory=loop_factory(loop)) as r:
        return r.run(POINTS[variant](d, n, size, concurrency))


def _point_elsewhere(
    src: Path, variant: str, d: Path, n: int, size: int, concurrency: int, loop: str
) -> Any:
    """One point in a process of its own whose ``meow_async`` is imported from ``src``."""
    here = str(Path(__file__).resolve().parent.parent)  # this perf package, with any src
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), here])}
    args = [variant, str(d), str(n), str(size), str(concurrency), loop]
    done = subprocess.run(
        [sys.executable, "-m", "perf.http", *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.splitlines()[-1])


POINTS = {"meow_async": meow_async_point, "floor": floor_point, "signed": signed_point}


def run(
    n: int,
    repeats: int,
    scratch: Path,
    loop: str,
    concurrency: int,
    size: int,
    log: Any = print,
    baseline: Path | None = None,
) -> dict[str, Any]:
    """Each variant ``repeats`` times, taking turns. With ``baseline`` (another checkout's
    ``src``), its meow_async runs the plain and signed points too, as ``baseline`` and
    ``baseline_signed``, and every point runs in a process of its own, so that old and new
    code meet the same machine in the same minutes."""
    names = list(POINTS) + (["baseline", "baseline_signed"] if baseline is not None else [])
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in names}
    for i in range(repeats):
        k = i % len(names)
        for variant in names[k:] + names[:k]:  # each variant first, middle and last in turn
            d = scratch / f"http-{variant}-{i}"
            d.mkdir(parents=True)
            try:
                if baseline is None:
                    res = _point(variant, d, n, size, concurrency, loop)
                elif variant.startswith("baseline"):
                    kind = "signed" if variant.endswith("signed") else "meow_async"
                    res = _point_elsewhere(baseline, kind, d, n, size, concurrency, loop)
                else:
                    here = Path(__file__).resolve().parent.parent / "src"
                    src = here if here.is_dir() else Path(meow_async_file()).parent.parent
                    res = _point_elsewhere(src, variant, d, n, size, concurrency, loop)
            finally:
                shutil.rmtree(d, ignore_errors=True)
            runs[variant].append(res)
            log(
                f"http {variant:<15} {n} x {size} B, {concurrency} in flight: "
                f"{res['per_s']:.0f} requests/s, request -> event p50 {res['p50_ms']:.2f} ms, "
                f"p99 {res['p99_ms']:.2f} ms, server CPU {res['cpu_us']:.0f} us per request "
                f"({res['errors']} not 202)"
            )
    med = {
        v: {k: statistics.median(r[k] for r in rs) for k in ("per_s", "p50_ms", "p99_ms", "cpu_us")}
        for v, rs in runs.items()
    }
    ratios = {v: med["floor"]["per_s"] / med[v]["per_s"] for v in names if v != "floor"}
    for v, ratio in ratios.items():
        log(
            f"http: {v} takes {ratio:.2f}x the floor's time per request (medians of {repeats});"
            f" p50 {med[v]['p50_ms']:.2f} vs {med['floor']['p50_ms']:.2f} ms, p99 "
            f"{med[v]['p99_ms']:.2f} vs {med['floor']['p99_ms']:.2f} ms; server CPU "
            f"{med[v]['cpu_us']:.0f} vs {med['floor']['cpu_us']:.0f} us per request (loop {loop})"
        )
    return {
        "n": n,
        "size": size,
        "concurrency": concurrency,
        "loop": loop,
        "baseline": None if baseline is None else str(baseline),
        "runs": runs,
        "median": med,
        "time_ratio": ratios["meow_async"],
        "time_ratios": ratios,
    }


def meow_async_file() -> str:
    import meow_async

    return str(meow_async.__file__)


if __name__ == "__main__":  # one point, for run(baseline=...): VARIANT DIR N SIZE CONCURRENCY LOOP
    variant, folder, n_, size_, conc_, loop_ = sys.argv[1:7]
    print(json.dumps(_point(variant, Path(folder), int(n_), int(size_), int(conc_), loop_)))
