"""The runner's end of the fork server (``forkserver.py``): warm starts for Python jobs.

One socket, one JSON line per message each way, read by an asyncio protocol: starting a job
is one write on the loop's thread, and its exit arrives as a message (the server reaps its
children), so no thread waits for any job.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Any

from . import forkserver

__all__ = ["ForkServer", "ForkServerDied", "StartRefused", "fork_supported"]

logger = logging.getLogger("meow_async.zygote")

#: Seconds the server may take to start and import what the recipes preload.
READY_TIMEOUT = 120.0
#: Seconds a server given up on has to exit (after the import it is in) before it is killed.
ABANDON_TIMEOUT = 5.0


def fork_supported() -> bool:
    """Warm starts need fork, /proc and the parent-death signal: Linux."""
    return sys.platform == "linux" and hasattr(os, "fork")


class ForkServerDied(Exception):
    """The fork server went away; jobs it had started are orphans to settle."""


class StartRefused(Exception):
    def __init__(self, why: str, *, vanished: bool = False) -> None:
        super().__init__(why)
        self.vanished = vanished


class ForkServer(asyncio.Protocol):
    """One running fork server. Made with :meth:`launch`; dead once :attr:`dead` is set."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.popen: subprocess.Popen[bytes] | None = None
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = loop.create_future()
        self.dead: str | None = None  # why it died
        self.preloaded: set[str] = set()
        #: Learned modules this server imported, and those it refused (with why).
        self.learned: list[str] = []
        self.refused: dict[str, str] = {}
        #: A learned module that left it unfit to fork (a thread, a descriptor): replace it.
        self.tainted: str | None = None
        #: Set once it has been replaced: it closes when its last job has ended.
        self.retiring = False
        self.closed: asyncio.Future[None] = loop.create_future()
        #: How its jobs are contained (``cgroup``, ``subreaper``, ``none``) and why not better.
        self.containment = "none"
        self.containment_why = ""
        #: What the server said of each job's end: how it was contained, what it left.
        self.ends: dict[int, dict[str, Any]] = {}
        self._preloads: deque[asyncio.Future[tuple[dict[str, str], str | None]]] = deque()
        self._starts: dict[str, asyncio.Future[tuple[int, float, asyncio.Future[int]]]] = {}
        self._exits: dict[int, asyncio.Future[int]] = {}
        self._buf = b""
        self._environ_at_start = dict(getattr(os.environ, "_data", {}))

    @classmethod
    async def launch(
        cls,
        preload: list[str],
        containment: str = "none",
        learned: list[str] | None = None,
        exclude: list[str] | None = None,
    ) -> ForkServer:
        """Start a server and wait until it has imported ``preload``, then probed ``learned``
        (see :attr:`learned`, :attr:`refused`, :attr:`tainted`; modules under ``exclude``
        are refused); ``containment``: what it is asked to put each job in (containment.py).

        Started from the loop's thread on purpose: the parent-death signal that ends the
        server with the runner is tied to the thread that started it.
        """
        self = cls()
        ours, theirs = socket.socketpair()
        argv = [sys.executable, forkserver.__file__, str(theirs.fileno()), str(os.getpid())]
        try:
            self.popen = subprocess.Popen(  # noqa: ASYNC220 - once; the loop's thread on purpose
                [*argv, containment],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,  # jobs' buffering then matches a spawned script's
                # os.environ, as a spawned job gets it (C code may have changed the process's
                # own environment behind its back, e.g. readline sets LINES and COLUMNS).
                env=dict(os.environ),
                close_fds=True,
            )
        finally:
            theirs.close()
        await self.loop.create_connection(lambda: self, sock=ours)
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                await asyncio.shield(self.ready)
                failed = await self.preload(preload)
                if learned:
                    await self._probe(learned, exclude or [])
        except BaseException:
            await self.abandon()
            raise
        for name, why in failed.items():
            logger.warning(
                "fork server: preloading %s failed (%s); jobs import it themselves", name, why
            )
        return self

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    async def preload(self, modules: list[str]) -> dict[str, str]:
        """Import ``modules`` in the server (once each); what failed, with why."""
        todo = [m for m in modules if m not in self.preloaded]
        if not todo:
            return {}
        self.preloaded.update(todo)
        fut: asyncio.Future[tuple[dict[str, str], str | None]] = self.loop.create_future()
        self._preloads.append(fut)
        self._send({"op": "preload", "modules": todo})
        return (await fut)[0]

    async def _probe(self, modules: list[str], exclude: list[str]) -> None:
        todo = [m for m in modules if m not in self.preloaded]
        fut: asyncio.Future[tuple[dict[str, str], str | None]] = self.loop.create_future()
        self._preloads.append(fut)
        self._send({"op": "preload", "modules": todo, "probe": True, "exclude": exclude})
        self.refused, self.tainted = await fut
        tried = todo if self.tainted is None else todo[: todo.index(self.tainted) + 1]
        self.learned = [m for m in tried if m not in self.refused]
        self.preloaded.update(tried)

    async def start(
        self,
        job_id: str,
        job_dir: Path,
        script: str,
        job_env: dict[str, str],
        attempt: int,
        check: str | None,
        argv: list[str] | None = None,
        *,
        whole: bool = False,
        learn: bool = False,
    ) -> tuple[int, float, asyncio.Future[int]]:
        """Fork the job's process: its pid, start time and a future for its exit code
        (negative: killed by that signal, as Popen says). With ``argv``, the process execs
        it (a new program) instead of running ``script`` in this warm interpreter. Raises
        StartRefused, ForkServerDied. ``whole``: ``job_env`` is the job's whole environment,
        not variables to add to the runner's. ``learn``: the job reports what it imported
        (in :attr:`ends`, ``imports``)."""
        fut: asyncio.Future[tuple[int, float, asyncio.Future[int]]] = self.loop.create_future()
        self._starts[job_id] = fut
        msg: dict[str, Any] = {"op": "start", "id": job_id, "dir": str(job_dir)}
        if argv is None:
            msg["script"] = script
        else:
            msg["argv"] = argv
        msg.update(attempt=attempt, check=check)
        if learn:
            msg["learn"] = True
        # The server started with the runner's environment: while that is unchanged, only the
        # job's own variables travel (a whole environment is a few kB of JSON per job).
        if whole:
            msg["env"] = job_env
        elif self._environ_changed():
            msg["env"] = {**os.environ, **job_env}
        else:
            msg["env_add"] = job_env
        self._send(msg)
        return await fut

    def _environ_changed(self) -> bool:
        data = getattr(os.environ, "_data", None)  # the raw bytes: compared without decoding
        return data is None or data != self._environ_at_start

    def kill(self, pid: int, sig: int) -> None:
        """Signal the job's process group, through the server while it lives (it knows
        whether the pid is still the job's), directly otherwise."""
        if self.dead is None:
            self._send({"op": "kill", "pid": pid, "sig": int(sig)})
        else:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)

    def close(self) -> None:
        """Close our end: the server exits; its running jobs go on as orphans."""
        if self.transport is not None:
            self.transport.close()

    def retire(self) -> None:
        """Replaced by a new generation: it starts no more jobs, and its running ones are
        reaped and signalled through it as before; it closes once the last has ended."""
        self.retiring = True
        self._close_if_idle()

    @property
    def running(self) -> int:
        """Jobs it has started (or is starting) whose exit it has not reported yet."""
        return len(self._exits) + len(self._starts)

    def _close_if_idle(self) -> None:
        if self.retiring and self.running == 0:
            self.close()

    async def abandon(self) -> None:
        """Close a server given up on (it failed to start, or the runner stops while it
        starts) and reap it: it exits when it sees its socket closed, after the import it may
        be in, or is killed after :data:`ABANDON_TIMEOUT`."""
        self.close()
        if self.popen is None:
            return
        try:
            async with asyncio.timeout(ABANDON_TIMEOUT):
                await self.wait_closed()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.popen.kill()
            await self.wait_closed()

    async def wait_closed(self) -> None:
        if self.popen is not None:
            await asyncio.to_thread(self.popen.wait)

    def _send(self, msg: dict[str, Any]) -> None:
        if self.dead is not None or self.transport is None:
            raise ForkServerDied(self.dead or "not started")
        self.transport.write((json.dumps(msg) + "\n").encode())

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        *lines, self._buf = (self._buf + data).split(b"\n")
        for line in lines:
            msg = json.loads(line)
            op = msg["op"]
            if op == "exit":
                fut = self._exits.pop(msg["pid"], None)
                if fut is not None and not fut.done():
                    self.ends[msg["pid"]] = {"contained": msg.get("contained", "none")}
                    if msg.get("left"):
                        self.ends[msg["pid"]]["left"] = msg["left"]
                    if msg.get("imports"):
                        self.ends[msg["pid"]]["imports"] = msg["imports"]
                    fut.set_result(os.waitstatus_to_exitcode(msg["status"]))
                    self._close_if_idle()
            elif op == "started":
                exited = self._exits[msg["pid"]] = self.loop.create_future()
                _resolve(self._starts.pop(msg["id"], None), (msg["pid"], msg["t"], exited))
            elif op == "refused":
                start = self._starts.pop(msg["id"], None)
                if start is not None and not start.done():
                    start.set_exception(StartRefused(msg["why"], vanished=msg.get("vanished")))
                self._close_if_idle()
            elif op == "preloaded":
                _resolve(self._preloads.popleft(), (msg["failed"], msg.get("tainted")))
            elif op == "ready":
                self.containment = str(msg.get("containment") or "none")
                self.containment_why = str(msg.get("why") or "")
                _resolve(self.ready, None)
            elif op == "note":
                logger.warning("fork server: %s", msg.get("text"))

    def connection_lost(self, exc: Exception | None) -> None:
        code = self.popen.poll() if self.popen is not None else None
        self.dead = f"the fork server (pid {self.pid}) died" + (
            "" if code is None else f" ({_how(code)})"
        )
        err = ForkServerDied(self.dead)
        pending: list[asyncio.Future[Any]] = [
            self.ready,
            *self._preloads,
            *self._starts.values(),
            *self._exits.values(),
        ]
        for fut in pending:
            if not fut.done():
                fut.set_exception(err)
                fut.exception()  # retrieved: nobody may be waiting on this one
        self._preloads.clear()
        self._starts.clear()
        self._exits.clear()
        _resolve(self.closed, None)


def _resolve(fut: asyncio.Future[Any] | None, value: Any) -> None:
    if fut is not None and not fut.done():
        fut.set_result(value)


def _how(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"
