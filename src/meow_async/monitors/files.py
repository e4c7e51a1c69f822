"""The file monitor: watchfiles (inotify on Linux) turned into one event per change per rule."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import stat
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import watchfiles
from watchfiles._rust_notify import RustNotify

from ..events import Event
from ..exceptions import MonitorError
from ..patterns import Change, FilePattern
from ..rules import Rule
from ..workflow import Workflow
from .gate import Gate

__all__ = ["FileMonitor"]

logger = logging.getLogger("meow_async.monitors.files")

#: Measured on Linux (perf/): watchfiles yields a batch once ``step`` ms pass with no new change,
#: so ``step`` is the latency floor. 5 ms gives ~7 ms median change-to-event, coalesces the
#: create/write/close of one write, and costs <1 % of a core while idle. watchfiles' own
#: default (step 50, debounce 1600) keeps growing a batch while writes continue.
DEFAULT_STEP_MS = 5
DEFAULT_DEBOUNCE_MS = 50


#: A file found changed at restart may have been made, changed or moved in while no one watched.
_CATCH_UP = frozenset({Change.created, Change.modified, Change.moved})


class _Seen(NamedTuple):
    """What a file looked like when it last made an event: same again means no new change."""

    ino: int
    dev: int
    size: int
    mtime_ns: int


class _Change(NamedTuple):
    change: Change
    path: str
    src: str | None = None
    sig: _Seen | None = None  # the file's state, for created/modified/moved
    ctime: float = 0.0  # when its inode last changed: how far back a restart must look

    def key(self) -> str:
        """The trigger's identity: a file in one state is one trigger, however often seen."""
        if self.sig is None:
            return ""  # a deletion: every one is new
        s = self.sig
        return f"file:{self.path}:{s.dev}:{s.ino}:{s.size}:{s.mtime_ns}"


class _StopWhen:
    """A stop_event for the watcher thread: the runner stops, the task is cancelled, or no
    rule needs the folder any more. Only read from that thread, so a plain flag is enough."""

    def __init__(self, stop: asyncio.Event, monitor: FileMonitor) -> None:
        self._stop = stop
        self._monitor = monitor
        self.cancelled = False

    def is_set(self) -> bool:
        return self.cancelled or self._stop.is_set() or self._monitor.unwatch


class FileMonitor:
    """Watches ``base_dir`` recursively while some rule has a file pattern.

    One write makes one event per matching rule: changes are grouped per batch and a change
    that leaves the file exactly as it was when it last triggered (same inode, size and
    mtime) is dropped, so a create reported across two batches does not run a job twice.
    A rename inside the folder is reported as ``moved`` when the source was seen before.
    """

    name = "files"

    def __init__(
        self,
        base_dir: Path,
        workflow: Workflow,
        *,
        ignore: Iterable[Path] = (),
        step_ms: int = DEFAULT_STEP_MS,
        debounce_ms: int = DEFAULT_DEBOUNCE_MS,
        memory: int = 100_000,
        rescan_after: int = 1000,
        catch_up_since: float | None = None,
        on_watch: Callable[[float], None] | None = None,
    ) -> None:
        self.base = str(Path(base_dir).absolute())
        self.workflow = workflow
        self.ignore = [str(Path(p).absolute()) for p in ignore]
        self.step_ms = step_ms
        self.debounce_ms = debounce_ms
        self._filter = _Filter(self.base, self.ignore)
        self._seen: OrderedDict[str, _Seen] = OrderedDict()
        self._seen_lock = threading.Lock()
        self._memory = memory
        self._retro_done: set[str] = set()
        self._dirs: set[str] = set()  # folders seen, so their deletion is not a file's
        self.rescan_after = rescan_after
        #: Files whose inode changed since then trigger once when the watch starts: the
        #: changes made while no runner watched (the runner keeps the time in its state).
        self.catch_up_since = catch_up_since
        self._on_watch = on_watch
        self._gate = Gate(_nowhere)
        self._emitting: float | None = None
        #: Set when no rule needs the watch any more; read by the watcher thread.
        self.unwatch = False
        workflow.add_validator(self._validate)
        self._notify: RustNotify | None = None
        #: Set while every change under ``base_dir`` that a rule needs will be seen.
        self.ready = asyncio.Event()

    @property
    def watching(self) -> bool:
        """Whether an inotify watch is open now (only while some rule needs one)."""
        return self._notify is not None

    def rules(self) -> list[Rule]:
        return [r for r in self.workflow.rules.values() if isinstance(r.pattern, FilePattern)]

    async def run(self, events: asyncio.Queue[Event], stop: asyncio.Event) -> None:
        if self.rules():
            await asyncio.to_thread(self._check_base)
        changed = asyncio.Event()
        unsubscribe = self.workflow.subscribe(changed.set)
        self._gate = Gate(events.put)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._follow_rules(events, stop, changed))
                await self._watch(events, stop)
        finally:
            unsubscribe()
            self._gate.close()

    def oldest_held(self) -> float | None:
        """The oldest change (its file's ctime) seen but not yet on the event queue: held
        back (settle, sentinel...) or being put there now."""
        times = [t for t in (self._gate.oldest(), self._emitting) if t is not None]
        return min(times, default=None)

    def _validate(self, rules: dict[str, Rule]) -> None:
        if any(isinstance(r.pattern, FilePattern) for r in rules.values()):
            self._check_base()

    def _check_base(self) -> None:
        if not os.path.isdir(self.base):
            raise MonitorError(
                self.name, f"the watched folder {self.base} does not exist or is not a folder"
            )
        if not os.access(self.base, os.R_OK | os.X_OK):
            raise MonitorError(self.name, f"the watched folder {self.base} is not readable")

    async def _follow_rules(
        self, events: asyncio.Queue[Event], stop: asyncio.Event, changed: asyncio.Event
    ) -> None:
        """Run retroactive scans for rules as they appear, until stop."""
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                await self._retroactive(events)
                waiting = asyncio.create_task(changed.wait())
                await asyncio.wait([waiting, stopping], return_when=asyncio.FIRST_COMPLETED)
                waiting.cancel()
                changed.clear()
        finally:
            stopping.cancel()

    async def _watch(self, events: asyncio.Queue[Event], stop: asyncio.Event) -> None:
        wake = asyncio.Event()

        def on_change() -> None:
            wake.set()
            if self.rules() and (self._notify is None or self.unwatch):
                self.ready.clear()  # a watch is about to start: not ready until it is live
            # Decide on stopping the watch once the caller's changes are all made: rules
            # removed and added back in one go never stop it.
            asyncio.get_running_loop().call_soon(review)

        def review() -> None:
            if not self.rules() and self._notify is not None:
                self.unwatch = True  # the watcher thread returns within step_ms

        unsubscribe = self.workflow.subscribe(on_change)
        try:
            while not stop.is_set():
                if not self.rules():
                    # Nothing to watch: wait for a rule or the stop, without polling.
                    self.ready.set()
                    wake.clear()
                    stopping = asyncio.create_task(stop.wait())
                    waking = asyncio.create_task(wake.wait())
                    await asyncio.wait([stopping, waking], return_when=asyncio.FIRST_COMPLETED)
                    stopping.cancel()
                    waking.cancel()
                    continue
                await self._watch_while_needed(events, stop)
        finally:
            unsubscribe()

    async def _watch_while_needed(self, events: asyncio.Queue[Event], stop: asyncio.Event) -> None:
        """One inotify watch, from set-up (then ``ready``) until no rule needs it."""
        until = _StopWhen(stop, self)
        self.unwatch = False
        # RustNotify sets its (recursive) watches when made: after this, no change is missed.
        # awatch would hide that moment, which ``ready`` and the runner's ``started`` need.
        notify = await asyncio.to_thread(RustNotify, [self.base], False, False, 300, True, False)
        self._notify = notify
        # From here the watcher reports every change: a scan leaves changes at or after this
        # moment to it, so it never reports a file half-way through a write it also sees.
        since = await asyncio.to_thread(_fs_now)
        if self.catch_up_since is not None:
            # Changes made while nobody watched (after the last run's watch began): found
            # now the watch is live, so none falls between. Jobs already made are skipped.
            cutoff = self.catch_up_since
            self.catch_up_since = None
            found = await asyncio.to_thread(
                lambda: _chronological(
                    list(self._scan(self.base, skip_seen=False, changed_since=cutoff, before=since))
                )
            )
            await self._emit(found, events, self.rules(), catch_up=True)
        if self._on_watch is not None:
            self._on_watch(since)
        self.ready.set()
        logger.debug("watching %s", self.base)
        try:
            while True:
                try:
                    result = await asyncio.to_thread(
                        notify.watch, self.debounce_ms, self.step_ms, 0, until
                    )
                except asyncio.CancelledError:
                    until.cancelled = True  # the watcher thread returns within step_ms
                    raise
                if result == "stop":
                    return
                if isinstance(result, str):  # 'signal' or 'timeout': nothing changed
                    continue
                batch = {
                    (c, p) for raw, p in result if self._filter(c := watchfiles.Change(raw), p)
                }
                changes = await asyncio.to_thread(self._classify, batch)
                await self._emit(changes, events, self.rules())
        finally:
            self._notify = None
            notify.close()
            logger.debug("stopped watching %s", self.base)

    async def _retroactive(self, events: asyncio.Queue[Event]) -> None:
        rules = self.rules()
        names = {r.name for r in rules}
        self._retro_done &= names  # a rule removed and added again scans again
        new = [
            r
            for r in rules
            if isinstance(r.pattern, FilePattern)
            and r.pattern.retroactive
            and r.name not in self._retro_done
        ]
        if not new:
            return
        await self.ready.wait()  # scan only once the watch is live, so no file falls between
        self._retro_done.update(r.name for r in new)
        before = await asyncio.to_thread(_fs_now)  # later changes: the live watch has them
        # Not remembered as seen: these events are for the new rules only, and the others
        # must still hear of a change the watcher reports meanwhile (job ids dedupe).
        found = await asyncio.to_thread(
            lambda: _chronological(
                list(self._scan(self.base, skip_seen=False, remember=False, before=before))
            )
        )
        await self._emit(found, events, new, retroactive=True)

    async def _emit(
        self,
        changes: Iterable[_Change],
        events: asyncio.Queue[Event],
        rules: list[Rule],
        *,
        retroactive: bool = False,
        catch_up: bool = False,
    ) -> None:
        changes = list(changes)
        # Until each is on the queue, the runner's watermark must not pass these changes.
        self._emitting = min((c.ctime for c in changes if c.sig), default=None)
        try:
            await self._emit_each(changes, events, rules, retroactive, catch_up)
        finally:
            self._emitting = None

    async def _emit_each(
        self,
        changes: list[_Change],
        events: asyncio.Queue[Event],
        rules: list[Rule],
        retroactive: bool,
        catch_up: bool,
    ) -> None:
        for ch in changes:
            self._gate.noticed(ch.path)  # it may be a sentinel a held trigger waits for
            rel = ch.path[len(self.base) + 1 :]  # every path here is below self.base
            for rule in rules:
                pattern = rule.pattern
                assert isinstance(pattern, FilePattern)  # noqa: S101 - rules() gave file rules
                wanted = ch.change in pattern.changes or (
                    catch_up and not pattern.changes.isdisjoint(_CATCH_UP)
                )
                if wanted and pattern.matches(rel):
                    extras: dict[str, object] = {}
                    if ch.src is not None:
                        extras["src_path"] = ch.src
                    if retroactive:
                        extras["retroactive"] = True
                    if catch_up:
                        extras["catch_up"] = True
                    event = Event(
                        kind="file",
                        path=ch.path,
                        base=self.base,
                        rule=rule,
                        change=ch.change,
                        extras=extras,
                        key=ch.key(),
                        changed_at=ch.ctime,
                    )
                    if Gate.needed(pattern):
                        self._gate.offer(event)
                    else:
                        await events.put(event)

    # -- in a worker thread -------------------------------------------------------------------

    def _classify(self, batch: set[tuple[watchfiles.Change, str]]) -> list[_Change]:
        kinds: dict[str, set[watchfiles.Change]] = {}
        for kind, path in batch:
            kinds.setdefault(path, set()).add(kind)
        out: list[_Change] = []
        gone: dict[_Seen, str] = {}  # the last state of vanished known files -> path
        present: list[tuple[str, os.stat_result]] = []
        for path, ks in kinds.items():
            try:
                st = os.stat(path)
            except OSError:
                with self._seen_lock:
                    seen = self._seen.pop(path, None)
                if path in self._dirs:
                    self._dirs.discard(path)  # a folder went: folders do not trigger
                elif seen is not None:
                    gone[seen] = path
                elif watchfiles.Change.added not in ks:
                    out.append(_Change(Change.deleted, path))  # existed before we started
                continue
            if stat.S_ISDIR(st.st_mode):
                self._dirs.add(path)
                if watchfiles.Change.added in ks:
                    # Files made in a new folder before its watch was set up are not
                    # reported by inotify: look for them.
                    out.extend(self._scan(path))
            elif stat.S_ISREG(st.st_mode):
                present.append((path, st))
        for path, st in present:
            with self._seen_lock:
                before = self._seen.get(path)
            if before is not None and before == _sig(st):
                continue  # the same file as when it last triggered: no new change
            sig = _sig(st)
            # A rename keeps inode, size and mtime; a new file that got a freed inode does not.
            src = gone.pop(sig, None)
            if src is not None:
                out.append(_Change(Change.moved, path, src, sig, st.st_ctime))
            elif before is None or (before.ino, before.dev) != (st.st_ino, st.st_dev):
                ks = kinds[path]
                new = watchfiles.Change.added in ks or before is not None
                change = Change.created if new else Change.modified
                out.append(_Change(change, path, None, sig, st.st_ctime))
            else:
                out.append(_Change(Change.modified, path, None, sig, st.st_ctime))
            self._remember(path, st)
        out.extend(_Change(Change.deleted, p) for p in gone.values())
        if len(batch) >= self.rescan_after:
            # inotify drops changes when its queue overflows, and watchfiles does not tell
            # Python when that happens. A batch this large is when it can: look again at
            # every folder it touched (what was seen already is skipped).
            touched = {os.path.dirname(p) for _, p in batch}
            for folder in sorted(touched):
                if os.path.isdir(folder):
                    out.extend(self._scan(folder, recurse=False))
        return _chronological(out)

    def _scan(
        self,
        top: str,
        *,
        skip_seen: bool = True,
        recurse: bool = True,
        changed_since: float | None = None,
        before: float | None = None,
        remember: bool = True,
    ) -> Iterator[_Change]:
        """Regular files below ``top`` (ignored folders pruned) as fresh creations; with
        ``skip_seen``, not those that already made an event in their current state; with
        ``changed_since``, only those whose inode changed (ctime) since then."""
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = [
                d
                for d in dirnames
                if self._filter(watchfiles.Change.added, os.path.join(dirpath, d))
            ]
            self._dirs.update(os.path.join(dirpath, d) for d in dirnames)
            if not recurse:
                dirnames.clear()
            for name in filenames:
                path = os.path.join(dirpath, name)
                if not self._filter(watchfiles.Change.added, path):
                    continue
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                if changed_since is not None and st.st_ctime < changed_since:
                    continue
                if before is not None and st.st_ctime >= before:
                    continue  # changed while the watch was live: the watcher reports it
                with self._seen_lock:
                    if skip_seen and self._seen.get(path) == _sig(st):
                        continue
                if remember:
                    self._remember(path, st)
                yield _Change(Change.created, path, None, _sig(st), st.st_ctime)

    def _remember(self, path: str, st: os.stat_result) -> None:
        with self._seen_lock:
            self._seen[path] = _sig(st)
            self._seen.move_to_end(path)
            while len(self._seen) > self._memory:
                self._seen.popitem(last=False)


class _Filter:
    """What the monitor never reports: the runner's own folders (by path, not by a text
    prefix that would also hide ``jobs2/``), and watchfiles' default junk (``.git``,
    ``__pycache__``, editor swap files...) judged only below the watched folder, so a
    watched folder that itself lives under, say, ``.venv`` still works."""

    def __init__(self, base: str, ignore: list[str]) -> None:
        self.base = base
        self.ignore = ignore
        self.dirs = set(watchfiles.DefaultFilter.ignore_dirs)
        self.names = [re.compile(p) for p in watchfiles.DefaultFilter.ignore_entity_patterns]

    def __call__(self, change: watchfiles.Change, path: str) -> bool:
        for top in self.ignore:
            if path == top or path.startswith(top + os.sep):
                return False
        rel = path[len(self.base) + 1 :] if path.startswith(self.base + os.sep) else path
        parts = rel.split(os.sep)
        if any(p in self.dirs for p in parts):
            return False
        return not any(r.search(parts[-1]) for r in self.names)


def _chronological(changes: list[_Change]) -> list[_Change]:
    """In the order the files were written (then by name), deletions last: so "the latest"
    of a burst means something."""
    return sorted(changes, key=lambda c: (c.sig.mtime_ns if c.sig else 1 << 63, c.path))


async def _nowhere(event: Event) -> None:
    raise RuntimeError("the file monitor is not running")


def _fs_now() -> float:
    """Now, on the clock file times are stamped with (the kernel's coarse clock, which can
    lag time.time() by a tick): compared with ctimes, it puts no file on the wrong side."""
    with tempfile.TemporaryFile() as f:
        return os.fstat(f.fileno()).st_ctime


def _sig(st: os.stat_result) -> _Seen:
    return _Seen(st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)
