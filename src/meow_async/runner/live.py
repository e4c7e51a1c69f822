"""``.meow-live.json`` in a runner's jobs folder: which process runs it, since when, and where
its ``runner.http`` answers.

``meow-async status`` reads it to find a running runner, even one whose ``runner.http`` asked
for port 0, and to tell a live runner from a dead one: the file stays behind when a runner is
killed, so the pid (and its start time, against reuse) is checked, and the file's mtime,
refreshed every ``HEARTBEAT`` seconds while the runner runs, says when it was last seen.
The runner writes it once every monitor is live and removes it when ``run()`` ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..conductors.forkserver import start_time_of

__all__ = ["HEARTBEAT", "LIVE_FILE", "Live", "LiveFile", "read_live"]

logger = logging.getLogger("meow_async.runner")

LIVE_FILE = ".meow-live.json"

#: Seconds between refreshes of the file's mtime while the runner runs.
HEARTBEAT = 10.0


class LiveFile:
    """The runner's side: write at start, refresh while running, remove at the end."""

    def __init__(self, jobs_dir: Path) -> None:
        self.path = jobs_dir / LIVE_FILE
        self.started: float | None = None
        self._mine: dict[str, Any] | None = None

    def write(
        self,
        *,
        base_dir: Path,
        jobs_dir: Path,
        http: tuple[str, int] | None,
        ports: dict[str, int],
        workflow: dict[str, Any] | None = None,
    ) -> None:
        """Say who runs this jobs folder (best effort: the runner works without it).

        ``http`` is ``runner.http``'s host and bound port; ``ports`` each network and HTTP
        rule's port, as the OS gave it to a rule with port 0.
        """
        from .. import __version__  # the package is imported by now; at module level, a cycle

        self.started = time.time()
        content = {
            "pid": os.getpid(),
            "pid_start": start_time_of(os.getpid()),
            "host": socket.gethostname(),
            "started": self.started,
            "version": __version__,
            "base_dir": str(base_dir),
            "jobs_dir": str(jobs_dir),
            "http": None if http is None else {"host": http[0], "port": http[1]},
            "ports": ports,
            # The workflow file's version running, when it was loaded, the last refused reload.
            "workflow": workflow,
        }
        tmp = self.path.with_name(f".{LIVE_FILE}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(content) + "\n")
            os.replace(tmp, self.path)
        except OSError as e:
            logger.warning("cannot write %s (meow-async status needs it): %s", self.path, e)
            return
        self._mine = content

    def ports(self) -> dict[str, int]:
        """The rules' ports as last written."""
        return dict((self._mine or {}).get("ports") or {})

    def update(self, **changes: Any) -> None:
        """Say something new (a reload's outcome): the file is written again whole."""
        if self._mine is None:
            return
        self._mine = {**self._mine, **changes}
        tmp = self.path.with_name(f".{LIVE_FILE}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self._mine) + "\n")
            os.replace(tmp, self.path)
        except OSError as e:
            logger.warning("cannot write %s (meow-async status needs it): %s", self.path, e)

    async def keep(self, stop: asyncio.Event) -> None:
        """Refresh the file's mtime every ``HEARTBEAT`` seconds until ``stop`` is set."""
        while self._mine is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HEARTBEAT):
                    await stop.wait()
                    return
            try:
                await asyncio.to_thread(os.utime, self.path)
            except OSError:  # removed by hand: write it again
                await asyncio.to_thread(self._rewrite)

    def _rewrite(self) -> None:
        if self._mine is not None:
            with contextlib.suppress(OSError):
                self.path.write_text(json.dumps(self._mine) + "\n")

    def remove(self) -> None:
        """Remove the file, if it is still this runner's (another may have started since)."""
        if self._mine is None:
            return
        try:
            if json.loads(self.path.read_text()).get("started") == self._mine["started"]:
                self.path.unlink()
        except (OSError, ValueError, AttributeError):
            pass
        self._mine = None


@dataclass(frozen=True, slots=True)
class Live:
    """What ``.meow-live.json`` says, and whether its process still runs."""

    path: Path
    pid: int
    host: str
    started: float
    version: str
    #: When the runner last refreshed the file (its mtime).
    seen: float
    http: tuple[str, int] | None
    #: True: it runs; False: it is gone (killed, or the machine restarted); None: it runs on
    #: another machine, which cannot be asked from here (the file was refreshed lately, though).
    alive: bool | None
    raw: dict[str, Any] = field(default_factory=dict)

    def url(self, path: str = "") -> str | None:
        """``runner.http``'s address (a listener on every address, on loopback)."""
        if self.http is None:
            return None
        host, port = self.http
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104
        return f"http://{f'[{host}]' if ':' in host else host}:{port}{path}"


def read_live(jobs_dir: Path) -> Live | None:
    """The runner's file in ``jobs_dir``; None if no runner has written one (or it stopped)."""
    path = jobs_dir / LIVE_FILE
    try:
        seen = path.stat().st_mtime
        raw = json.loads(path.read_text())
        pid, started = int(raw["pid"]), float(raw["started"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    http = raw.get("http")
    try:
        address = (str(http["host"]), int(http["port"])) if isinstance(http, dict) else None
    except (KeyError, TypeError, ValueError):
        address = None
    host = str(raw.get("host") or "")
    return Live(
        path=path,
        pid=pid,
        host=host,
        started=started,
        version=str(raw.get("version") or "?"),
        seen=seen,
        http=address,
        alive=_alive(pid, raw.get("pid_start"))
        if host in ("", socket.gethostname())
        else (None if time.time() - seen < 3 * HEARTBEAT else False),
        raw=raw,
    )


def _alive(pid: int, pid_start: object) -> bool:
    """The pid runs, is no zombie, and is the same process (not a reuse of its number)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: the pid's existence is all we can check
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    fields = stat[stat.rfind(b")") + 2 :].split()
    if not fields or fields[0] in (b"Z", b"X"):
        return False
    start = int(fields[19]) if len(fields) > 19 else None
    return not (isinstance(pid_start, int) and start is not None and start != pid_start)
