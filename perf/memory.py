"""Peak RSS of the process that holds the connections, read from /proc/<pid>/status.

idle: 10,000 connections opened by another process and held open, sending nothing, against a
whole Runner (one network rule) and against the floor. held: 2,000 connections that each send
64 KiB and stay open (slow uploads), against a Runner and the floor. flood: many senders at
once (1,000 connections in flight, 64 KiB each) against a NetworkMonitor whose events are
released as they come, and against the floor. Growth = VmHWM at the end - VmRSS once
listening. All clients live in other processes.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path
from typing import Any

from .procs import ROOT, perf_argv, perf_env
from .sender import Plan
from .sender_process import SenderProcess
from .sizes import Sizes

#: Connections that each send 64 KiB and stay open, for the "held" load.
HELD_CONNECTIONS = 2_000


def _status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def _start_server(
    mode: str, folder: Path, loop: str
) -> tuple[asyncio.subprocess.Process, int]:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "server.log", "wb") as log:
        server = await asyncio.create_subprocess_exec(
            *perf_argv("memory_server", mode, str(folder / "work"), loop),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            env=perf_env(),
            cwd=ROOT,
        )
    assert server.stdout is not None
    line = (await server.stdout.readline()).decode()
    if not line.startswith("port "):
        raise RuntimeError(f"memory server ({mode}) did not start: {line!r}")
    return server, int(line.split()[1])


async def _count(server: asyncio.subprocess.Process) -> int:
    assert server.stdin is not None
    assert server.stdout is not None
    server.stdin.write(b"count\n")
    await server.stdin.drain()
    return int((await server.stdout.readline()).split()[1])


async def _held(
    server: asyncio.subprocess.Process, port: int, n: int, send: int = 0
) -> tuple[dict[str, Any], asyncio.subprocess.Process]:
    """Open n connections that send ``send`` bytes each; returns the clients, still holding
    them open."""
    base_fds = _fds(server.pid)
    clients = await asyncio.create_subprocess_exec(
        *perf_argv("idle_clients", str(port), str(n), str(send)),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=perf_env(),
        cwd=ROOT,
    )
    assert clients.stdout is not None
    assert clients.stdin is not None
    t0 = time.monotonic()
    _, connected, errors = (await clients.stdout.readline()).decode().split()
    held = 0
    while time.monotonic() - t0 < 60:
        held = _fds(server.pid) - base_fds
        if held >= int(connected):
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(2.0 if send else 1.0)  # a moment with all of them open
    out = {
        "connections": n,
        "bytes_each": send,
        "connected": int(connected),
        "connect_errors": int(errors),
        "held_by_server": held,
        "rss_while_held_kb": _status_kb(server.pid, "VmRSS"),
        "setup_s": time.monotonic() - t0,
    }
    return out, clients


async def _flood(
    server: asyncio.subprocess.Process, port: int, n: int, size: int, concurrency: int
) -> dict[str, Any]:
    sender = await SenderProcess.start()
    try:
        sent = await sender.round(Plan([port], n, size, concurrency))
    finally:
        await sender.close()
    want = n - len(sent.errors)
    count = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        count = await _count(server)
        if count >= want:
            break
        await asyncio.sleep(0.1)
    return {
        "messages": n,
        "message_bytes": size,
        "concurrency": concurrency,
        "send_errors": len(sent.errors),
        "events": count,
        "send_s": sent.finished - sent.started,
        "stalls": sent.stalls,
    }


async def scenario(mode: str, kind: str, sizes: Sizes, folder: Path, loop: str) -> dict[str, Any]:
    server, port = await _start_server(mode, folder, loop)
    clients: asyncio.subprocess.Process | None = None
    try:
        await asyncio.sleep(0.5)
        base = _status_kb(server.pid, "VmRSS")
        if kind == "idle":
            detail, clients = await _held(server, port, sizes.idle_connections)
        elif kind == "held":
            detail, clients = await _held(server, port, HELD_CONNECTIONS, sizes.flood_size)
        else:
            detail = await _flood(
                server, port, sizes.flood_messages, sizes.flood_size, sizes.flood_concurrency
            )
        peak = _status_kb(server.pid, "VmHWM")
    finally:
        # Killed before the idle clients let go: their closes would otherwise be 10,000 empty
        # messages (an empty message is a message) for a server that is done being measured.
        server.kill()
        await server.wait()
        if clients is not None:
            assert clients.stdin is not None
            clients.stdin.close()
            await clients.wait()
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "mode": mode,
        "kind": kind,
        "loop": loop,
        "baseline_rss_mb": base / 1024,
        "peak_rss_mb": peak / 1024,
        "growth_mb": (peak - base) / 1024,
        **detail,
    }


def run(sizes: Sizes, scratch: Path, loop: str, log: Any = print) -> list[dict[str, Any]]:
    out = []
    scenarios = (
        ("runner", "idle"),
        ("floor", "idle"),
        ("runner", "held"),
        ("floor", "held"),
        ("monitor", "flood"),
        ("floor", "flood"),
    )
    for mode, kind in scenarios:
        folder = scratch / f"mem-{mode}-{kind}"
        with asyncio.Runner() as r:
            res = r.run(scenario(mode, kind, sizes, folder, loop))
        out.append(res)
        if kind == "flood":
            what = (
                f"{res['events']}/{res['messages']} messages of "
                f"{res['message_bytes'] // 1024} KiB, {res['concurrency']} at once"
            )
        else:
            each = f", {res['bytes_each'] // 1024} KiB sent on each" if res["bytes_each"] else ""
            what = f"{res['held_by_server']} connections held open{each}"
        log(
            f"memory {kind:<5} {mode:<8} ({loop}): RSS {res['baseline_rss_mb']:.1f} MB -> peak "
            f"{res['peak_rss_mb']:.1f} MB (+{res['growth_mb']:.1f} MB); {what}"
        )
    return out
