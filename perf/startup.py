"""``python -m perf startup``: the wall clock of the quick commands, interpreter included.

Each command runs as a user runs it (``python -m meow_async ...``, a new process each time),
for this tree and, with ``--baseline-src DIR``, for another checkout's ``src`` (put first on
``PYTHONPATH``), taking turns command by command, beside ``python -c pass`` (the floor no
command can beat). ``send`` sends one message to a listener on 127.0.0.1 that a thread reads
to its end.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

EXAMPLE = Path(__file__).parent.parent / "examples" / "linked" / "workflow.yaml"

#: The issue's targets (ms, wall clock including the interpreter).
TARGETS = {"--version": 80.0, "send": 150.0, "validate": 250.0}


def _listener() -> tuple[socket.socket, threading.Event]:
    """A TCP listener that reads each connection to its end, until told to stop."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                while conn.recv(65536):
                    pass

    threading.Thread(target=serve, daemon=True).start()
    return srv, stop


def _commands(scratch: Path, port: int) -> dict[str, list[str]]:
    jobs = scratch / "jobs"
    jobs.mkdir(exist_ok=True)
    msg = scratch / "msg.txt"
    msg.write_text("hello world\n")
    # The example, copied so that validate's folder note does not depend on this checkout.
    example = scratch / "example"
    if not example.exists():
        shutil.copytree(EXAMPLE.parent, example, ignore=shutil.ignore_patterns("data", ".meow"))
    wf = str(example / EXAMPLE.name)
    py = [sys.executable]
    me = [*py, "-m", "meow_async"]
    return {
        "python -c pass": [*py, "-c", "pass"],
        "--version": [*me, "--version"],
        "send": [*me, "send", f"127.0.0.1:{port}", str(msg)],
        "validate": [*me, "validate", wf],
        "jobs": [*me, "jobs", str(jobs)],
        "status": [*me, "status", wf],
    }


def _once(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, check=False)
    took = time.perf_counter() - t0
    if res.returncode not in (0, 3):  # status: 3 = no runner runs, as expected here
        raise RuntimeError(f"{cmd}: exit {res.returncode}: {res.stderr.decode()[-500:]}")
    return took * 1000


def run(repeats: int, scratch: Path, baseline: Path | None = None) -> dict[str, Any]:
    folder = scratch / "startup"
    folder.mkdir(parents=True, exist_ok=True)
    srv, stop = _listener()
    try:
        cmds = _commands(folder, srv.getsockname()[1])
        # As users run them: byte-compiled once (a shell with PYTHONDONTWRITEBYTECODE would
        # time every command compiling its modules, 0.1-0.2 s of each).
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        trees: dict[str, dict[str, str]] = {"this": env}
        if baseline is not None:
            trees["baseline"] = {
                **env,
                "PYTHONPATH": os.pathsep.join([str(baseline), os.environ.get("PYTHONPATH", "")]),
            }
        samples: dict[str, dict[str, list[float]]] = {t: {c: [] for c in cmds} for t in trees}
        for name, cmd in cmds.items():
            for env in trees.values():
                _once(cmd, env, folder)  # warm the page cache and the .pyc files
            for _ in range(repeats):
                for tree, env in trees.items():
                    if name == "python -c pass" and tree != "this":
                        continue
                    samples[tree][name].append(_once(cmd, env, folder))
    finally:
        stop.set()
        srv.close()
    out: dict[str, Any] = {"repeats": repeats, "baseline": str(baseline) if baseline else None}
    rows = []
    for name in cmds:
        row: dict[str, Any] = {"command": name}
        for tree in trees:
            got = samples[tree][name]
            if got:
                row[tree] = {"p50_ms": statistics.median(got), "min_ms": min(got), "samples": got}
        if "baseline" in row:
            row["ratio"] = row["this"]["p50_ms"] / row["baseline"]["p50_ms"]
        row["target_ms"] = TARGETS.get(name)
        rows.append(row)
    out["commands"] = rows
    for line in table(out):
        print(line)
    return out


def table(res: dict[str, Any]) -> list[str]:
    lines = [
        "| command | this tree p50 (min) | baseline p50 (min) | this / baseline | target |",
        "|---|---|---|---|---|",
    ]
    for r in res["commands"]:
        this = f"{r['this']['p50_ms']:.0f} ms ({r['this']['min_ms']:.0f})"
        base = (
            f"{r['baseline']['p50_ms']:.0f} ms ({r['baseline']['min_ms']:.0f})"
            if "baseline" in r
            else "-"
        )
        ratio = f"{r['ratio']:.2f}x" if "ratio" in r else "-"
        target = f"< {r['target_ms']:.0f} ms" if r.get("target_ms") else "-"
        lines.append(f"| {r['command']} | {this} | {base} | {ratio} | {target} |")
    return lines
