"""What the HTTP monitor must remember across restarts, for a window of time: the answers to
requests sent with an ``Idempotency-Key``, and the HMAC signatures already used.

Each is a map in memory and a file beside the spool that gets one JSON line per entry, in the
spirit of the spool journal: an append (and, with ``durable``, an fsync) on the request path,
nothing else. Entries expire; the file is rewritten with only the live ones when it is loaded
and whenever it has grown to twice the entries live at its last rewrite (and at least
``MIN_LINES``), so it holds at most about twice what its window holds, and a rewrite costs
no more, spread over the requests since the last one, than the appends did.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import IO, Any

from ..model.jobs import fsync_dir
from .spool import json_lines, replace_lines

__all__ = ["ExpiringLog", "IdempotencyKeys", "SeenSignatures"]

#: Lines below which the file is never rewritten while the runner runs.
MIN_LINES = 1024


class ExpiringLog:
    """Keys with an expiry time (and a value), kept in memory and in a file of JSON lines."""

    def __init__(self, path: Path, *, durable: bool = False) -> None:
        self.path = path
        self.durable = durable
        self._entries: dict[str, tuple[float, Any]] = {}
        self._file: IO[str] | None = None
        self._lines = 0  # lines in the file now
        self._rewrite_at = MIN_LINES

    def __len__(self) -> int:
        return len(self._entries)

    def load(self) -> None:
        """Read the file, drop what expired, and write it again short (or remove it)."""
        now = time.time()
        self._entries = {}
        for e in json_lines(self.path):
            try:
                key, until = str(e["key"]), float(e["until"])
            except (KeyError, TypeError, ValueError):
                continue  # not one of ours: skipped, as a line a crash cut short is
            if until > now:
                self._entries[key] = (until, e.get("value"))
        self._rewrite(now)

    def get(self, key: str) -> Any:
        """The value kept for ``key`` (True if it has none), or None once expired."""
        got = self._entries.get(key)
        if got is None or got[0] <= time.time():
            return None
        return True if got[1] is None else got[1]

    def put(self, key: str, until: float, value: Any = None) -> None:
        """Remember ``key`` until ``until`` (Unix time): in memory, then one line on disk.
        An OSError (a full disk) leaves it remembered in memory only."""
        self._entries[key] = (until, value)
        self._append(key, until, value)

    def remember(self, key: str, until: float, value: Any = None) -> None:
        """In memory only: it is on disk elsewhere already (the spool journal)."""
        if until > time.time():
            self._entries[key] = (until, value)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _append(self, key: str, until: float, value: Any) -> None:
        if self._lines >= self._rewrite_at:
            self._rewrite(time.time())  # includes the new entry
            return
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open
            if self.durable:
                fsync_dir(self.path.parent)
        self._file.write(_line(key, until, value))
        self._file.flush()
        if self.durable:
            os.fsync(self._file.fileno())
        self._lines += 1

    def _rewrite(self, now: float) -> None:
        self.close()
        self._entries = {k: e for k, e in self._entries.items() if e[0] > now}
        if not self._entries:
            self.path.unlink(missing_ok=True)  # nothing to remember: no file
        else:
            lines = (_line(k, until, v) for k, (until, v) in self._entries.items())
            replace_lines(self.path, lines, durable=self.durable)
        self._lines = len(self._entries)
        self._rewrite_at = max(MIN_LINES, 2 * self._lines)


class IdempotencyKeys(ExpiringLog):
    """Answers to requests that carried an ``Idempotency-Key``, by the key's scope: a retry,
    also after a restart, gets the first answer again (``idempotency.log``)."""

    def __init__(self, spool_dir: Path, *, durable: bool = False) -> None:
        super().__init__(spool_dir / "idempotency.log", durable=durable)

    def get(self, key: str) -> dict[str, Any] | None:
        answer = super().get(key)
        return answer if isinstance(answer, dict) else None


class SeenSignatures(ExpiringLog):
    """HMAC signatures already accepted, each until its window has passed: a replay is refused
    also after a restart (``signatures.log``). Their number is capped by the window: only
    requests signed within it can be accepted at all."""

    def __init__(self, spool_dir: Path, *, durable: bool = False) -> None:
        super().__init__(spool_dir / "signatures.log", durable=durable)

    def __contains__(self, signature: str) -> bool:
        return super().get(signature) is not None


def _line(key: str, until: float, value: Any) -> str:
    entry: dict[str, Any] = {"key": key, "until": round(until, 3)}
    if value is not None:
        entry["value"] = value
    return json.dumps(entry, separators=(",", ":")) + "\n"
