"""meow_base 1.0.5 in the network tests: its SocketMonitor, in a subprocess under a time cap.

``meow_base/patterns/socket_event_pattern.py``: each listener is a thread that binds
127.0.0.1:<port>, calls ``listen(1)`` and accepts with a 0.5 s timeout; each connection gets a
thread that streams it to a ``NamedTemporaryFile`` in 2048-byte reads, hashes the file and
sends the event down the monitor's ``multiprocessing.Pipe``, the runner's pipeline. We read
those pipes directly (one per monitor, as meow_base's runner wires them), as the report did.

With a backlog of 1, a burst of connections overflows the accept queue: Linux drops the SYNs
and the senders retransmit after 1 s, 3 s, 7 s... Those stalls are meow_base's, and are
recorded (``stalls``). Each point runs in its own process (``python -m perf.meow_base_side``),
killed with its sender at the cap; rounds finished by then are kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import asdict
from multiprocessing import connection as mp
from pathlib import Path
from typing import Any

from .limits import raise_nofile
from .procs import ROOT, perf_argv, perf_env
from .rounds import Arrival, PointSpec, RoundResult, Sender, run_point
from .sender_process import InProcessSender, SenderProcess

VERSION = "1.0.5"


def _ports_in_range(k: int) -> list[int]:
    """``k`` ports from the OS (bind 0) that SocketPattern accepts (1024..49151)."""
    held: list[socket.socket] = []
    out: list[int] = []
    try:
        while len(out) < k:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(s)
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            if 1023 < port < 49152:
                out.append(port)
            if len(held) > 20 * k + 100:
                raise RuntimeError("the OS hands out no ports in 1024..49151")
    finally:
        for s in held:
            s.close()
    return out


def _listening(ports: set[int]) -> set[int]:
    found: set[int] = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(name) as f:
            next(f, None)
            for line in f:
                parts = line.split(None, 4)
                if len(parts) > 3 and parts[3] == "0A":
                    port = int(parts[1].rsplit(":", 1)[1], 16)
                    if port in ports:
                        found.add(port)
    return found


class MeowBaseIntake:
    def __init__(self, folder: Path) -> None:
        # meow_base wants a relative base_dir, and cuts event paths at its first occurrence.
        folder.parent.mkdir(parents=True, exist_ok=True)
        os.chdir(folder.parent)
        self.base = Path(f"{folder.name}-meow_base_spool")
        self._monitors: list[Any] = []
        self._readers: list[mp.Connection] = []
        self._queue: asyncio.Queue[tuple[str, float]] = asyncio.Queue()
        self._halt = False
        self._pump: threading.Thread | None = None

    async def start(self, monitors: int, listeners: int) -> list[int]:
        sep = importlib.import_module("meow_base.patterns.socket_event_pattern")
        recipe_mod = importlib.import_module("meow_base.recipes.python_recipe")
        self.base.mkdir(parents=True, exist_ok=True)
        recipe = recipe_mod.PythonRecipe("r", ["pass"])
        ports = _ports_in_range(monitors * listeners)
        quiet = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
        for m in range(monitors):
            mine = ports[m * listeners : (m + 1) * listeners]
            patterns = {
                f"p{m}_{i}": sep.SocketPattern(f"p{m}_{i}", port, "r", "msg")
                for i, port in enumerate(mine)
            }
            mon = sep.SocketMonitor(str(self.base), patterns, {"r": recipe}, print=quiet)
            reader, writer = mp.Pipe(duplex=False)
            mon.to_runner_event = writer
            self._readers.append(reader)
            self._monitors.append(mon)
        for mon in self._monitors:
            mon.start()
        wanted = set(ports)
        deadline = time.monotonic() + 30
        while _listening(wanted) != wanted:
            if time.monotonic() > deadline:
                raise RuntimeError("meow_base's listeners did not start listening in 30 s")
            await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()
        self._pump = threading.Thread(target=self._run_pump, args=(loop,), daemon=True)
        self._pump.start()
        return ports

    def _run_pump(self, loop: asyncio.AbstractEventLoop) -> None:
        readers = list(self._readers)
        while not self._halt and readers:
            for conn in mp.wait(readers, timeout=0.2):
                assert isinstance(conn, mp.Connection)
                try:
                    event = conn.recv()
                except EOFError:
                    readers.remove(conn)
                    continue
                t = time.monotonic()
                loop.call_soon_threadsafe(self._queue.put_nowait, (event["event_path"], t))

    async def next(self) -> Arrival:
        rel, t = await self._queue.get()
        path = os.path.abspath(rel)
        return Arrival(path, t, lambda: os.unlink(path))

    async def stop(self) -> None:
        self._halt = True
        for mon in self._monitors:
            with contextlib.suppress(Exception):
                mon.stop()


def main() -> None:
    """Child: run one point, one JSON line per round on the real stdout."""
    raise_nofile()
    args = json.loads(sys.argv[1])
    out = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # meow_base prints a line per event
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    spec = PointSpec(**args["spec"])

    async def new_sender() -> Sender:
        if args["sender"] == "process":
            return await SenderProcess.start()
        return InProcessSender()

    def report(r: RoundResult) -> None:
        out.write(json.dumps({"round": r.to_json()}) + "\n")

    async def go() -> None:
        await run_point(
            lambda k: MeowBaseIntake(Path(args["scratch"]) / f"restart{k}"),
            new_sender,
            spec,
            repeats=args["repeats"],
            cap_s=args["cap_s"],
            size=args["size"],
            concurrency=args["concurrency"],
            interval_s=args["interval_s"],
            quiet_s=args["quiet_s"],
            on_round=report,
        )

    code = 0
    try:
        asyncio.run(go())
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        out.flush()
        sys.stderr.flush()
        os._exit(code)  # meow_base's listener and connection threads are not daemons


def run_capped(
    spec: PointSpec,
    *,
    sender: str,
    repeats: int,
    cap_s: float,
    size: int,
    concurrency: int,
    interval_s: float,
    quiet_s: float,
    scratch: Path,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run one point in a child process; returns the rounds it finished and how it ended."""
    args = {
        "spec": asdict(spec),
        "sender": sender,
        "repeats": repeats,
        "cap_s": cap_s,
        "size": size,
        "concurrency": concurrency,
        "interval_s": interval_s,
        "quiet_s": quiet_s,
        "scratch": str(scratch),
    }
    proc = subprocess.Popen(
        perf_argv("meow_base_side", json.dumps(args)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=perf_env(),
        cwd=ROOT,
        start_new_session=True,  # its sender too: killed together at the cap
    )
    killed = False
    try:
        out, err = proc.communicate(timeout=cap_s + 30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        killed = True
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # stray sender
    rounds = [
        json.loads(line)["round"] for line in out.decode().splitlines() if line.startswith("{")
    ]
    error = ""
    if not rounds and not killed and proc.returncode:
        tail = err.decode(errors="replace").strip().splitlines()[-1:]
        error = " ".join(tail) or f"exit code {proc.returncode}"
    return rounds, {"killed_at_cap": killed, "error": error}


if __name__ == "__main__":
    main()
