"""The fault harness: the real runner as a subprocess, killed with SIGKILL mid-burst, flooded.

Guarantee under test (docs/reliability.md): every network message that was acknowledged and
every file that was written makes exactly one job per matching rule, however often the
runner is killed, as long as it is started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from meow_async import SendError, send

from .conftest import wait_until_sync
from .test_cli import MeowRun, meow

KILLS = 5
SEED = 20261121


def _workflow(root: Path, port: int, **runner: Any) -> Path:
    (root / "data" / "in").mkdir(parents=True)
    settings = {"base_dir": "data", "jobs_dir": "jobs", "max_jobs": 2, "shutdown_timeout": 5}
    settings.update(runner)
    wf = root / "workflow.yaml"
    wf.write_text(
        f"runner: {json.dumps(settings)}\n"
        "recipes:\n"
        "  r: {kind: bash, script: 'echo \"$input_file\"'}\n"
        "patterns:\n"
        "  files: {glob: 'in/*.dat', recipe: r}\n"
        f"  net: {{port: {port}, recipe: r, ack: true, max_connections: 64}}\n"
    )
    return wf


def _jobs(root: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in (root / "jobs").glob("*/*/job.json")]


class _Traffic:
    """Acknowledged messages and atomically written files, until told to stop."""

    def __init__(self, root: Path, port: int, tag: str) -> None:
        self.root, self.port, self.tag = root, port, tag
        self.acked: list[str] = []
        self.files: list[str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._send, daemon=True),
            threading.Thread(target=self._write, daemon=True),
        ]

    def __enter__(self) -> _Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def flowing(self) -> bool:
        return len(self.acked) >= 3 and len(self.files) >= 3

    def _send(self) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                    s.sendall(f"{self.tag}-{i}".encode())
                    s.shutdown(socket.SHUT_WR)
                    reply = s.makefile("rb").readline().decode()
            except OSError:
                continue  # the runner is down or dying: this one was never acknowledged
            if reply.startswith("ok "):
                self.acked.append(reply[3:].strip())

    def _write(self) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            name = f"{self.tag}-{i}.dat"
            tmp = self.root / "data" / "in" / f".{name}.part"
            tmp.write_text(f"{self.tag} {i}\n" * 10)
            os.replace(tmp, self.root / "data" / "in" / name)  # complete when it appears
            self.files.append(name)
            time.sleep(0.002)


def test_sigkill_mid_burst_loses_and_duplicates_nothing(
    tmp_path: Path, unused_tcp_port: int
) -> None:
    rng = random.Random(SEED)  # noqa: S311 - reproducible kill points, not secrets
    _workflow(tmp_path, unused_tcp_port)
    acked: list[str] = []
    files: list[str] = []
    kill_points = []
    for round_ in range(KILLS):
        with MeowRun("workflow.yaml", "-q", cwd=tmp_path) as run:
            run.wait_for("Try it:")
            with _Traffic(tmp_path, unused_tcp_port, f"r{round_}") as traffic:
                wait_until_sync(traffic.flowing)
                kill_points.append(rng.uniform(0.0, 0.5))
                time.sleep(kill_points[-1])  # the fault's random moment, not a wait
                run.proc.send_signal(signal.SIGKILL)
                run.proc.wait()
            acked += traffic.acked
            files += traffic.files
        # Files keep arriving while no runner watches.
        for k in range(3):
            name = f"down{round_}-{k}.dat"
            (tmp_path / "data" / "in" / name).write_text("written while down\n")
            files.append(name)

    def settled() -> bool:
        jobs = _jobs(tmp_path)
        done = [j for j in jobs if j["state"] == "done"]
        return len(done) == len(jobs) and len(done) >= len(set(acked)) + len(set(files))

    with MeowRun("workflow.yaml", "-q", cwd=tmp_path) as run:
        wait_until_sync(settled, timeout=120)
        run.proc.send_signal(signal.SIGINT)
        assert run.wait_exit() == 0, run.report()

    jobs = _jobs(tmp_path)
    net = Counter(j["event"]["message_id"] for j in jobs if j["rule"] == "net")
    by_file = Counter(Path(j["event"]["path"]).name for j in jobs if j["rule"] == "files")
    print(  # the figures docs/reliability.md quotes
        f"\n{KILLS} SIGKILLs at {[round(k, 2) for k in kill_points]} s into a burst; "
        f"{len(acked)} acknowledged messages, {len(files)} files; {len(jobs)} jobs"
    )
    assert len(acked) >= KILLS * 3
    assert all(net[m] == 1 for m in acked), [m for m in acked if net[m] != 1]
    assert max(net.values()) == 1  # nothing twice, acknowledged or not
    assert all(by_file[f] == 1 for f in files), {f: by_file[f] for f in files if by_file[f] != 1}
    assert set(by_file) == set(files)
    assert all(j["state"] == "done" for j in jobs)
    assert not list((tmp_path / "spool").glob("*.msg"))  # every message handled, then let go
    assert (tmp_path / "spool").is_dir()
    # The index, written beside the folders through every kill, lists exactly what they hold.
    listed = meow("jobs", "workflow.yaml", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert sorted((r["id"], r["state"]) for r in rows) == sorted(
        (j["id"], j["state"]) for j in jobs
    )


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_a_flood_beyond_the_limits_is_slowed_not_dropped(
    tmp_path: Path, unused_tcp_port: int
) -> None:
    """800 senders at once against 16 connection slots, an 8-event queue and 2 job slots:
    intake slows (TCP back-pressure), memory stays bounded, every acknowledged message runs."""
    _workflow(tmp_path, unused_tcp_port, queue_size=8)
    wf = tmp_path / "workflow.yaml"
    wf.write_text(wf.read_text().replace("max_connections: 64", "max_connections: 16"))
    n, size = 800, 32 * 1024
    with MeowRun("workflow.yaml", "-q", cwd=tmp_path) as run:
        run.wait_for("Try it:")
        before = _peak_rss_kib(run.proc.pid)

        async def flood() -> list[str | None]:
            async def one(i: int) -> str | None:
                return await send("127.0.0.1", unused_tcp_port, bytes([i % 256]) * size, ack=True)

            async with asyncio.timeout(180):
                return await asyncio.gather(*(one(i) for i in range(n)))

        ids = asyncio.run(flood())
        assert all(ids)
        assert len(set(ids)) == n

        def all_done() -> bool:
            jobs = _jobs(tmp_path)
            return len(jobs) == n and all(j["state"] == "done" for j in jobs)

        wait_until_sync(all_done, timeout=180)
        growth_mib = (_peak_rss_kib(run.proc.pid) - before) / 1024
        run.proc.send_signal(signal.SIGINT)
        assert run.wait_exit() == 0, run.report()
    print(f"\nflood of {n} x {size // 1024} KiB: peak RSS grew {growth_mib:.1f} MiB")
    assert growth_mib < 100
    assert {j["event"]["message_id"] for j in _jobs(tmp_path)} == set(ids)


def test_a_full_spool_refuses_the_message_and_keeps_serving(
    tmp_path: Path, unused_tcp_port: int
) -> None:
    """RLIMIT_FSIZE stands in for a full disk: writes past 1 MiB fail, as on a full spool."""
    import resource

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    _workflow(tmp_path, unused_tcp_port)
    with MeowRun("workflow.yaml", cwd=tmp_path, preexec_fn=limit) as run:
        run.wait_for("Try it:")

        async def go() -> str | None:
            with contextlib.suppress(SendError):
                await send("127.0.0.1", unused_tcp_port, b"x" * (2 << 20), ack=True)
                raise AssertionError("a message that could not be stored was acknowledged")
            return await send("127.0.0.1", unused_tcp_port, b"small", ack=True)

        msg_id = asyncio.run(go())
        run.wait_for("could not store the message", stream="stderr")
        wait_until_sync(lambda: any(j["state"] == "done" for j in _jobs(tmp_path)))
        run.proc.send_signal(signal.SIGINT)
        assert run.wait_exit() == 0, run.report()
    (job,) = _jobs(tmp_path)
    assert job["event"]["message_id"] == msg_id
    assert "not acknowledged" in run.stderr
    assert not list((tmp_path / "spool").glob("*.msg"))  # the refused one is not kept
