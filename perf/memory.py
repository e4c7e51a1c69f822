"""Peak RSS of the process that holds the connections, read from /proc/<pid>/status.

idle: 10,000 connections opened by another process and held open, sending nothing, against a
whole Runner (one network rule) and against the floor. held: 2,000 connections that each send
64 KiB and stay open (slow uploads), against a Runner and the floor. flood: many senders at
once (1,000 connections in flight, 64 KiB each) against a NetworkMonitor whose events are
released as they come, and against the floor. Growth = VmHWM at the end - VmRSS once
listening. All clients live in other processes.

tls: against a Runner whose network rule speaks TLS (certificates made with trustme: ECDSA, server
certificate only). Idle: N clients complete the handshake and hold their connections without
sending (max_waiting and max_waiting_per_peer raised above N, idle_timeout an hour), then
leave; twice, so the second wave shows whether the first one's memory is reused. Stalled:
rounds of 2,000 TCP connections that never send a ClientHello, against handshake_timeout
2 s and the default caps; each round ends once the server holds no connection any more
(VmHWM is reset per round through /proc/<pid>/clear_refs where allowed, else RSS is sampled).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .procs import ROOT, perf_argv, perf_env
from .sender import Plan
from .sender_process import SenderProcess
from .sizes import Sizes

#: Connections that each send 64 KiB and stay open, for the "held" load.
HELD_CONNECTIONS = 2_000

#: The loads ``run`` knows, in the order it runs them.
LOADS = ("idle", "held", "flood", "tls")

#: tls: the caps raised above the idle TLS connections, so none is closed for them.
TLS_IDLE_SETTINGS = {"max_waiting": 100_000, "max_waiting_per_peer": 100_000, "idle_timeout": 3600}
#: tls: waves of idle TLS connections, one after the other has left.
TLS_IDLE_WAVES = 2
#: tls: the stalled handshakes' timeout (the caps stay at their defaults).
TLS_STALLED_SETTINGS = {"handshake_timeout": 2}
#: tls: seconds after the server's count reached 0 at which RSS is read again.
SETTLE_S = 3.0


def _status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _reset_hwm(pid: int) -> bool:
    """Reset the process's VmHWM to its RSS now (Linux 4.0+); False where not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


async def _start_server(
    mode: str, folder: Path, loop: str, settings: dict[str, Any] | None = None
) -> tuple[asyncio.subprocess.Process, int]:
    folder.mkdir(parents=True, exist_ok=True)
    extra = [f"{k}={v}" for k, v in (settings or {}).items()]
    with open(folder / "server.log", "wb") as log:
        server = await asyncio.create_subprocess_exec(
            *perf_argv("memory_server", mode, str(folder / "work"), loop, *extra),
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


async def _ask(server: asyncio.subprocess.Process, command: str) -> list[bytes]:
    """One command to the memory server; its one-line answer, split."""
    assert server.stdin is not None
    assert server.stdout is not None
    server.stdin.write(command.encode() + b"\n")
    await server.stdin.drain()
    return (await server.stdout.readline()).split()


async def _count(server: asyncio.subprocess.Process) -> int:
    return int((await _ask(server, "count"))[1])


async def _conns(server: asyncio.subprocess.Process) -> tuple[int, int]:
    """The connections the server's monitor holds, and how many are past their handshake."""
    line = await _ask(server, "conns")
    if len(line) != 3 or line[0] != b"conns":
        raise RuntimeError(f"memory server: no connection count ({line!r}); see server.log")
    return int(line[1]), int(line[2])


async def _until(
    server: asyncio.subprocess.Process, ok: Callable[[int, int], bool], limit_s: float
) -> tuple[int, int, float]:
    """Ask for the server's connection counts until ``ok(held, open)``, at most ``limit_s`` s:
    returns the last counts and the seconds it took."""
    t0 = time.monotonic()
    while True:
        held, open_ = await _conns(server)
        took = time.monotonic() - t0
        if ok(held, open_) or took > limit_s:
            return held, open_, took
        await asyncio.sleep(0.05)


async def _clients(port: int, n: int, *more: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *perf_argv("idle_clients", str(port), str(n), "0", *more),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=perf_env(),
        cwd=ROOT,
    )


async def _connected(clients: asyncio.subprocess.Process) -> tuple[int, int]:
    assert clients.stdout is not None
    line = (await clients.stdout.readline()).decode().split()
    if len(line) != 3 or line[0] != "connected":
        raise RuntimeError(f"idle clients failed: {line!r}")
    return int(line[1]), int(line[2])


async def _leave(clients: asyncio.subprocess.Process) -> int:
    """Close the clients' stdin: they close their connections and say how many were open."""
    assert clients.stdin is not None
    assert clients.stdout is not None
    clients.stdin.close()
    line = (await clients.stdout.readline()).decode().split()
    return int(line[1]) if len(line) == 2 and line[0] == "open" else -1


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


#: idle and held: every connection stays open (the caps on connections that have sent
#: nothing would otherwise close all but 256 of one address's idle ones: that is what they
#: are for, but here we measure what holding them costs).
HOLD_ALL = {"max_waiting": 100_000, "max_waiting_per_peer": 100_000, "idle_timeout": 3600}


async def scenario(mode: str, kind: str, sizes: Sizes, folder: Path, loop: str) -> dict[str, Any]:
    settings = HOLD_ALL if kind in ("idle", "held") and mode != "floor" else {}
    server, port = await _start_server(mode, folder, loop, settings)
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


def _certs(folder: Path) -> dict[str, str] | None:
    """A CA and a certificate for localhost / 127.0.0.1 in ``folder`` (None without trustme)."""
    try:
        import trustme
    except ImportError:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    paths = {k: str(folder / f"{k}.pem") for k in ("ca", "cert", "key")}
    ca.cert_pem.write_to_path(paths["ca"])
    leaf.private_key_pem.write_to_path(paths["key"])
    for i, pem in enumerate(leaf.cert_chain_pems):
        pem.write_to_path(paths["cert"], append=i > 0)
    return paths


def _log_summary(path: Path, most: int = 8) -> list[str]:
    """The server log's lines, alike ones (up to their numbers) counted: ``N x line``."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    seen: dict[str, list[Any]] = {}
    for line in lines:
        key = re.sub(r"\d+", "#", line)
        if key in seen:
            seen[key][0] += 1
        else:
            seen[key] = [1, line]
    out = [f"{n} x {line}" for n, line in seen.values()]
    if len(out) > most:
        out = [*out[:most], f"... and {len(out) - most} other kinds of line"]
    return out


async def _free(server: asyncio.subprocess.Process) -> dict[str, Any]:
    """After the last wave or round: what a full collection, then glibc's malloc_trim, give
    back. RSS that only the trim returns was free memory the heap kept, not a leak."""
    found = int((await _ask(server, "gc"))[1])
    rss_gc = _status_kb(server.pid, "VmRSS")
    trimmed = int((await _ask(server, "trim"))[1])
    return {
        "gc_found": found,
        "rss_after_gc_mb": rss_gc / 1024,
        "trimmed": trimmed,
        "rss_after_trim_mb": _status_kb(server.pid, "VmRSS") / 1024,
    }


async def _dismiss(clients: asyncio.subprocess.Process) -> None:
    """Close the client process's stdin (its cue to leave) and reap it."""
    if clients.stdin is not None and not clients.stdin.is_closing():
        clients.stdin.close()
    await clients.wait()


async def _tls_wave(
    server: asyncio.subprocess.Process, port: int, n: int, ca: str, wave: int
) -> dict[str, Any]:
    """n clients shake hands, hold their connections idle, then leave."""
    _reset_hwm(server.pid)  # wave 2's peak is its own
    start = _status_kb(server.pid, "VmRSS")
    base_fds = _fds(server.pid)
    t0 = time.monotonic()
    clients = await _clients(port, n, ca)
    try:
        connected, errors = await _connected(clients)
        _, open_, _ = await _until(server, lambda _h, o: o >= connected, 60)
        await asyncio.sleep(1.0)  # a moment with all of them open
        held_fds = _fds(server.pid) - base_fds
        rss_held = _status_kb(server.pid, "VmRSS")
        peak = _status_kb(server.pid, "VmHWM")
        setup_s = time.monotonic() - t0
        still = await _leave(clients)
        left, _, gone_s = await _until(server, lambda h, _o: h == 0, 30)
        rss_gone = _status_kb(server.pid, "VmRSS")
        await asyncio.sleep(SETTLE_S)
        rss_settled = _status_kb(server.pid, "VmRSS")
    finally:
        await _dismiss(clients)
    return {
        "wave": wave,
        "connections": n,
        "connected": connected,
        "connect_errors": errors,
        "held_by_server": open_,
        "fds_held": held_fds,
        "start_rss_mb": start / 1024,
        "rss_while_held_mb": rss_held / 1024,
        "peak_rss_mb": peak / 1024,
        "growth_mb": (peak - start) / 1024,
        "kb_per_connection": (peak - start) / max(connected, 1),
        "setup_s": setup_s,
        "open_when_leaving": still,
        "left_on_server": left,
        "gone_s": gone_s,
        "rss_when_gone_mb": rss_gone / 1024,
        "rss_settled_mb": rss_settled / 1024,
        "fds_left": _fds(server.pid) - base_fds,
    }


async def _stalled_round(
    server: asyncio.subprocess.Process, port: int, n: int, base: int, shake_s: float, rnd: int
) -> dict[str, Any]:
    """n TCP connections that never send a ClientHello; over once the server holds none."""
    exact = _reset_hwm(server.pid)
    sampled = _status_kb(server.pid, "VmRSS")
    base_fds = _fds(server.pid)
    t0 = time.monotonic()
    clients = await _clients(port, n)
    try:
        connecting = asyncio.ensure_future(_connected(clients))
        most = calm = held = 0
        while time.monotonic() - t0 < shake_s + 60:
            held, _ = await _conns(server)
            sampled = max(sampled, _status_kb(server.pid, "VmRSS"))
            most = max(most, held)
            calm = calm + 1 if connecting.done() and not held else 0
            if calm >= 3:  # every one connected, none held, three times in a row
                break
            await asyncio.sleep(0.05)
        closed_s = time.monotonic() - t0
        connected, errors = await connecting
        rss_after = _status_kb(server.pid, "VmRSS")
        peak = _status_kb(server.pid, "VmHWM") if exact else sampled
        still = await _leave(clients)
    finally:
        await _dismiss(clients)
    return {
        "round": rnd,
        "connections": n,
        "connected": connected,
        "connect_errors": errors,
        "most_held": most,
        "left_on_server": held,
        "open_when_leaving": still,
        "closed_s": closed_s,
        "peak_rss_mb": peak / 1024,
        "peak_exact": exact,
        "growth_mb": (peak - base) / 1024,
        "rss_after_mb": rss_after / 1024,
        "fds_left": _fds(server.pid) - base_fds,
    }


async def tls_scenario(
    what: str, sizes: Sizes, folder: Path, loop: str, certs: dict[str, str]
) -> dict[str, Any]:
    """``what``: "idle" (waves of idle TLS connections) or "stalled" (stalled handshakes)."""
    tls = {"tls_cert": certs["cert"], "tls_key": certs["key"]}
    settings = TLS_IDLE_SETTINGS if what == "idle" else TLS_STALLED_SETTINGS
    server, port = await _start_server("runner", folder, loop, {**tls, **settings})
    try:
        await asyncio.sleep(0.5)
        base = _status_kb(server.pid, "VmRSS")
        if what == "idle":
            n = sizes.tls_idle_connections
            steps = [
                await _tls_wave(server, port, n, certs["ca"], w + 1) for w in range(TLS_IDLE_WAVES)
            ]
        else:
            n = sizes.tls_stalled_connections
            shake_s = float(TLS_STALLED_SETTINGS["handshake_timeout"])
            steps = [
                await _stalled_round(server, port, n, base, shake_s, r + 1)
                for r in range(sizes.tls_stalled_rounds)
            ]
        freed = await _free(server)
    finally:
        server.kill()
        await server.wait()
        log = _log_summary(folder / "server.log")
        shutil.rmtree(folder, ignore_errors=True)
    peak = max(s["peak_rss_mb"] for s in steps)
    return {
        "mode": "runner",
        "kind": f"tls-{what}",
        "loop": loop,
        "connections": n,
        "settings": settings,
        "baseline_rss_mb": base / 1024,
        "peak_rss_mb": peak,
        "growth_mb": peak - base / 1024,
        "waves" if what == "idle" else "rounds": steps,
        **freed,
        "server_log": log,
    }


def _tls_lines(res: dict[str, Any]) -> list[str]:
    loop, base = res["loop"], res["baseline_rss_mb"]
    out = [
        f"memory tls idle wave {w['wave']} ({loop}): {w['held_by_server']}/"
        f"{w['connections']} TLS connections held idle: RSS {w['start_rss_mb']:.1f} MB -> "
        f"peak {w['peak_rss_mb']:.1f} MB (+{w['growth_mb']:.1f} MB, "
        f"{w['kb_per_connection']:.0f} kB each); all gone after {w['gone_s']:.1f} s "
        f"({w['left_on_server']} left): RSS {w['rss_when_gone_mb']:.1f} MB, "
        f"{SETTLE_S:g} s later {w['rss_settled_mb']:.1f} MB (listening: {base:.1f} MB)"
        for w in res.get("waves", [])
    ]
    out += [
        f"memory tls stalled round {r['round']} ({loop}): {r['connected']} connections "
        f"without a ClientHello, at most {r['most_held']} held: peak "
        f"{r['peak_rss_mb']:.1f} MB (+{r['growth_mb']:.1f} MB over {base:.1f} MB"
        f"{'' if r['peak_exact'] else ', sampled'}); all closed after "
        f"{r['closed_s']:.1f} s ({r['left_on_server']} left, {r['open_when_leaving']} "
        f"open at the client): RSS {r['rss_after_mb']:.1f} MB"
        for r in res.get("rounds", [])
    ]
    out.append(
        f"memory tls {res['kind'][4:]} ({loop}): then a full gc ({res['gc_found']} found): RSS "
        f"{res['rss_after_gc_mb']:.1f} MB; then malloc_trim: {res['rss_after_trim_mb']:.1f} MB"
    )
    out += [f"  server log: {line}" for line in res["server_log"]]
    return out


def run(
    sizes: Sizes,
    scratch: Path,
    loop: str,
    log: Any = print,
    loads: tuple[str, ...] = LOADS,
) -> list[dict[str, Any]]:
    out = []
    scenarios = [
        (mode, kind)
        for mode, kind in (
            ("runner", "idle"),
            ("floor", "idle"),
            ("runner", "held"),
            ("floor", "held"),
            ("monitor", "flood"),
            ("floor", "flood"),
        )
        if kind in loads
    ]
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
    if "tls" in loads:
        certs = _certs(scratch / "mem-tls-certs")
        if certs is None:
            log("memory tls: trustme is not installed (pip install trustme): skipped")
            return out
        for what in ("idle", "stalled"):
            with asyncio.Runner() as r:
                res = r.run(tls_scenario(what, sizes, scratch / f"mem-tls-{what}", loop, certs))
            out.append(res)
            for line in _tls_lines(res):
                log(line)
    return out
