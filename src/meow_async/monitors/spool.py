"""Received messages on disk: one spool file per message, and the journal that accepts them."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from ..model.jobs import fsync_dir

__all__ = ["Journal", "MessageTooLarge", "Spool", "json_lines", "replace_lines", "unlink"]

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


class MessageTooLarge(Exception):
    """A message grew past its pattern's ``max_size``."""


class Spool:
    """One message on its way to disk, written as ``<id>.msg`` from its first byte.

    No rename at the end: the journal, not the file's name, says a message is complete, and a
    restart removes every spool file the journal does not list. Writes go straight to the page
    cache from the event loop: a chunk is at most ``chunk_size`` bytes and a thread hop per
    chunk costs more than the copy (perf/).
    """

    __slots__ = ("_fd", "id", "path", "size")

    def __init__(self, folder: str) -> None:
        self.id = f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(6)}"
        self.path = f"{folder}/{self.id}.msg"  # a str: made for every message, Path costs
        self.size = 0
        self._fd = -1

    def write(self, data: bytes | memoryview, limit: int) -> None:
        self.size += len(data)
        if self.size > limit:
            raise MessageTooLarge
        if self._fd < 0:
            self._fd = os.open(self.path, _FLAGS, 0o666)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def finish(self, *, durable: bool = False) -> str:
        """Close the complete message (an empty one is a message too) and return its path."""
        if self._fd < 0:
            self._fd = os.open(self.path, _FLAGS, 0o666)
        try:
            if durable:
                os.fsync(self._fd)
        finally:
            os.close(self._fd)
            self._fd = -1
        if durable:
            fsync_dir(Path(self.path).parent)
        return self.path

    def discard(self) -> None:
        """Never accepted: nothing of it stays."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        unlink(self.path)


def json_lines(path: Path) -> Iterator[dict[str, Any]]:
    """The objects of a file written one JSON line at a time, skipping a line a crash cut
    short; none if there is no file."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    yield json.loads(line)
                except ValueError:
                    continue
    except FileNotFoundError:
        return


def replace_lines(path: Path, lines: Iterable[str], *, durable: bool) -> None:
    """Write ``path`` anew through a temporary file renamed over it, so a reader (or a
    restart after a kill) finds the old file or the new one, whole; ``durable`` also syncs."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(lines)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)


def unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class Journal:
    """``accepted.log`` beside the spool files: one line per accepted message, written before
    its events are queued and before any acknowledgement, so a restart finishes what a killed
    runner had accepted. Rewritten short once most of its entries are done.

    An entry waiting in the network monitor's backlog is *parked*: only where its line starts
    is kept in memory, and it is read back from the file when its turn comes, so a burst of
    accepted messages costs disk, not memory."""

    def __init__(self, folder: Path, *, durable: bool) -> None:
        self.path = folder / "accepted.log"
        self.durable = durable
        #: Each accepted message not done yet: its entry, or None while it is parked.
        self.pending: dict[str, dict[str, Any] | None] = {}
        self._at: dict[str, int] = {}  # where each pending entry's line starts in the file
        self._file: IO[str] | None = None
        self._reader: IO[bytes] | None = None  # parked entries are read back through it
        self._size = 0  # the file's length: where the next line starts
        self._lines = 0

    def recover(self) -> list[dict[str, Any]]:
        """Entries whose message is still spooled; removes what was never accepted."""
        entries: dict[str, dict[str, Any]] = {}
        for entry in json_lines(self.path):  # a line cut short: its message was never acked
            if "done" in entry:
                entries.pop(entry["done"], None)
            else:
                entries[entry["id"]] = entry
        folder = self.path.parent
        for spooled in folder.iterdir():
            # .part: left by versions that renamed complete messages; never complete either.
            if spooled.suffix == ".part" or (
                spooled.suffix == ".msg" and spooled.stem not in entries
            ):
                spooled.unlink(missing_ok=True)  # never complete, or never accepted: not acked
        pending = {i: e for i, e in entries.items() if (folder / f"{i}.msg").exists()}
        self.pending = dict(pending)
        self._rewrite()
        return list(pending.values())

    def add(self, entry: dict[str, Any]) -> None:
        """Accept a message; an OSError (a full disk) means it was not accepted."""
        self.pending[entry["id"]] = entry
        try:
            self._at[entry["id"]] = self._write(entry, flush=True)
        except OSError:
            del self.pending[entry["id"]]
            raise

    def park(self, msg_id: str) -> None:
        """Drop a pending entry from memory: ``unpark`` reads it back from the file."""
        if self.pending.get(msg_id) is not None and msg_id in self._at:
            self.pending[msg_id] = None

    def unpark(self, msg_id: str) -> dict[str, Any] | None:
        """A pending entry, read back from the file if it was parked (None: not pending)."""
        if msg_id not in self.pending:
            return None
        entry = self.pending[msg_id]
        if entry is None:
            entry = self.pending[msg_id] = self._read([msg_id])[0]
        return entry

    def entries(self) -> list[dict[str, Any]]:
        """Every pending entry (parked ones read from the file, and left parked)."""
        parked = self._read([i for i, e in self.pending.items() if e is None])
        return [e for e in self.pending.values() if e is not None] + parked

    def done(self, msg_id: str) -> None:
        if msg_id not in self.pending:
            return
        del self.pending[msg_id]
        self._at.pop(msg_id, None)
        # A lost "done" line costs nothing, as recovery skips messages whose spool file is
        # gone: so it is not flushed on its own (the next entry or close() does), and a full
        # disk is no error here (the next entry will say so).
        with contextlib.suppress(OSError):
            if self._lines > 4096 and self._lines > 4 * len(self.pending):
                self._rewrite()
            else:
                self._write({"done": msg_id}, flush=False)

    def close(self) -> None:
        self._close_reader()
        if self._file is not None:
            self._file.close()
            self._file = None
        if not self.pending:
            self.path.unlink(missing_ok=True)

    def open(self) -> None:
        """Open (or make) the journal file, ready for the first message."""
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open
            self._size = os.fstat(self._file.fileno()).st_size
            if self.durable:
                fsync_dir(self.path.parent)  # the journal's own entry

    def _write(self, entry: dict[str, Any], *, flush: bool) -> int:
        """Append one line; where it starts (JSON is ASCII here: a byte per character)."""
        if self._file is None:
            self.open()
        assert self._file is not None  # noqa: S101 - opened just now
        line = json.dumps(entry, separators=(",", ":")) + "\n"
        at = self._size
        self._file.write(line)
        self._size += len(line)
        if flush:
            self._file.flush()
            if self.durable:
                os.fsync(self._file.fileno())
        self._lines += 1
        return at

    def _read(self, ids: list[str]) -> list[dict[str, Any]]:
        """Parked entries, from their lines in the file, in the order asked."""
        if not ids:
            return []
        # Entries are flushed as they are added: what is read is on the file.
        if self._reader is None:
            self._reader = open(self.path, "rb")  # noqa: SIM115 - kept open, as _file
        out = []
        for msg_id in ids:
            self._reader.seek(self._at[msg_id])
            out.append(json.loads(self._reader.readline()))
        return out

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _rewrite(self) -> None:
        parked = iter(self._read([i for i, e in self.pending.items() if e is None]))
        self._close_reader()  # the file is replaced: read the new one from now on
        if self._file is not None:
            self._file.close()
            self._file = None
        at, offsets = 0, {}

        def lines() -> Iterator[str]:
            nonlocal at
            for msg_id, entry in self.pending.items():
                line = json.dumps(
                    entry if entry is not None else next(parked), separators=(",", ":")
                )
                offsets[msg_id] = at
                at += len(line) + 1
                yield line + "\n"

        replace_lines(self.path, lines(), durable=self.durable)
        self._at = offsets
        self._lines = len(self.pending)
