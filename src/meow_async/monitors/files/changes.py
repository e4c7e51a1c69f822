"""What the file monitor and its watchers pass between them: a file's state, one change to it,
and the paths that never trigger."""

from __future__ import annotations

import os
import re
import tempfile
from typing import TYPE_CHECKING, NamedTuple, Protocol

from ...model.patterns import Change

if TYPE_CHECKING:
    from ...model.rules import Rule

__all__ = [
    "FileChange",
    "FileState",
    "PathFilter",
    "Seen",
    "chronological",
    "fs_now",
    "state_of",
]


class FileState(NamedTuple):
    """What a file looked like when it last made an event: same again means no new change."""

    ino: int
    dev: int
    size: int
    mtime_ns: int


class FileChange(NamedTuple):
    change: Change
    path: str
    src: str | None = None
    state: FileState | None = None  # for created/modified/moved
    ctime: float = 0.0  # when its inode last changed: how far back a restart must look

    def key(self) -> str:
        """The trigger's identity: a file in one state is one trigger, however often seen."""
        if self.state is None:
            return ""  # a deletion: every one is new
        s = self.state
        return f"file:{self.path}:{s.dev}:{s.ino}:{s.size}:{s.mtime_ns}"


class PathFilter:
    """What the monitor never reports: the runner's own folders (by path, not by a text
    prefix that would also hide ``jobs2/``), and watchfiles' default junk (``.git``,
    ``__pycache__``, editor swap files...) judged only below the watched folder, so a
    watched folder that itself lives under, say, ``.venv`` still works."""

    def __init__(self, base: str, ignore: list[str]) -> None:
        self.base = base
        self.ignore = ignore
        #: watchfiles' junk, read by load() (a runner only made, as ``validate`` makes one,
        #: does not load watchfiles).
        self.dirs: set[str] | None = None
        self.names: list[re.Pattern[str]] = []

    def load(self) -> None:
        """Read watchfiles' junk patterns. Importing watchfiles takes 10-15 ms: the monitor
        calls this in a thread as its watch starts, so that the first file a runner sees does
        not wait for it."""
        if self.dirs is None:
            import watchfiles

            self.names = [re.compile(p) for p in watchfiles.DefaultFilter.ignore_entity_patterns]
            self.dirs = set(watchfiles.DefaultFilter.ignore_dirs)

    def __call__(self, path: str) -> bool:
        for top in self.ignore:
            if path == top or path.startswith(top + os.sep):
                return False
        rel = path[len(self.base) + 1 :] if path.startswith(self.base + os.sep) else path
        parts = rel.split(os.sep)
        if self.dirs is None:
            self.load()
        assert self.dirs is not None  # noqa: S101 - loaded just now
        if any(p in self.dirs for p in parts):
            return False
        return not any(r.search(parts[-1]) for r in self.names)


def chronological(changes: list[FileChange]) -> list[FileChange]:
    """In the order the files were written (then by name), deletions last: so "the latest"
    of a scan means something."""
    return sorted(changes, key=lambda c: (c.state.mtime_ns if c.state else 1 << 63, c.path))


def fs_now() -> float:
    """Now, on the clock file times are stamped with (the kernel's coarse clock, which can
    lag time.time() by a tick): compared with ctimes, it puts no file on the wrong side."""
    with tempfile.TemporaryFile() as f:
        return os.fstat(f.fileno()).st_ctime


def state_of(st: os.stat_result) -> FileState:
    return FileState(st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)


class Seen(Protocol):
    """**Protocol:** what a watcher asks of the monitor it reports to (a ``FileMonitor``):
    the folder, the paths that never trigger, the rules, what each file looked like when it
    last made an event, and scans. Methods may be called from a worker thread."""

    base: str
    filter: PathFilter

    def rules(self) -> list[Rule]: ...

    def seen(self, path: str) -> FileState | None: ...

    def remember(self, path: str, state: FileState) -> None: ...

    def forget(self, path: str) -> FileState | None: ...

    def forget_below(self, folder: str) -> set[str]: ...

    def forget_missing(self) -> list[str]: ...

    def scan(
        self,
        top: str,
        *,
        skip_seen: bool = True,
        recurse: bool = True,
        changed_since: float | None = None,
        before: float | None = None,
        remember: bool = True,
        still_open: list[tuple[str, float]] | None = None,
        dirs: set[str] | None = None,
    ) -> list[FileChange]: ...
