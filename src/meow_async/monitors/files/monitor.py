"""The file monitor: one event per complete write per rule, from inotify on Linux (read on the
event loop), a polling look at an index on network filesystems, or watchfiles elsewhere; and
at once when a job that declared its outputs ends."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...exceptions import MonitorError
from ...model.config import DEFAULT_DEBOUNCE_MS, DEFAULT_STEP_MS, WATCHERS, WatcherName
from ...model.events import Event
from ...model.filters import ABSENT, Facts
from ...model.patterns import Change, FilePattern
from ...model.rules import Rule
from ...model.workflow import Workflow
from ..filtering import Filtering
from . import inotify
from .changes import FileChange, FileState, PathFilter, chronological, fs_now, state_of
from .gate import Gate
from .inotify_watch import InotifyWatch
from .job_outputs import OutputScan, output_targets
from .mounts import remote_mounts
from .poll_watch import PollWatch
from .writing import being_written

if TYPE_CHECKING:
    from .portable_watch import PortableWatch

__all__ = ["FileMonitor"]

logger = logging.getLogger("meow_async.monitors.files")


#: A file found changed at restart may have been made, changed or moved in while no one watched.
_CATCH_UP = frozenset({Change.created, Change.modified, Change.moved})
#: The kernel stamps files with a coarse clock that can lag time.time() by a tick.
_CLOCK_SLACK = 0.05


class FileMonitor:
    """Watches ``base_dir`` recursively while some rule has a file pattern.

    One complete write makes one event per matching rule. With inotify (Linux, the default
    there) the event is made when the writer closes the file, or when a finished file is
    renamed or linked into place; elsewhere watchfiles' batches stand in for that (see
    portable_watch.py). A change that leaves the file exactly as it was when it last triggered
    (same inode, size and mtime) is dropped either way.
    """

    name = "files"

    def __init__(
        self,
        base_dir: Path,
        workflow: Workflow,
        *,
        ignore: Iterable[Path] = (),
        watcher: WatcherName = "auto",
        step_ms: int = DEFAULT_STEP_MS,
        debounce_ms: int = DEFAULT_DEBOUNCE_MS,
        memory: int = 100_000,
        rescan_after: int = 1000,
        catch_up_since: float | None = None,
        on_watch: Callable[[float], None] | None = None,
        filtering: Filtering | None = None,
        poll_interval: float = 1.0,
        poll_settle: float = 2.0,
        poll_full_interval: float = 60.0,
        poll_index: Path | None = None,
    ) -> None:
        if watcher not in WATCHERS:
            raise MonitorError(
                self.name, f"unknown watcher {watcher!r}: expected one of {', '.join(WATCHERS)}"
            )
        self.base = str(Path(base_dir).absolute())
        self.workflow = workflow
        self.ignore = [str(Path(p).absolute()) for p in ignore]
        self.watcher = watcher
        self.step_ms = step_ms
        self.debounce_ms = debounce_ms
        self.poll_interval = poll_interval
        self.poll_settle = poll_settle
        self.poll_full_interval = poll_full_interval
        self.poll_index = poll_index
        self._chosen: str | None = None  # what `auto` became, once decided
        self._remote = False  # base_dir, or a mount below it, is a network or FUSE mount
        self._outputs = OutputScan(self)
        self.filter = PathFilter(self.base, self.ignore)
        self._seen: OrderedDict[str, FileState] = OrderedDict()
        self._seen_lock = threading.Lock()
        self._memory = memory
        self._retro_done: set[str] = set()
        self.rescan_after = rescan_after
        #: Files whose inode changed since then trigger once when the watch starts: the
        #: changes made while no runner watched (the runner keeps the time in its state).
        self.catch_up_since = catch_up_since
        #: When the first file rule was added while nothing was watched: files changed since
        #: then trigger once the watch is live, so a file written right after add_pattern
        #: returns is never missed.
        self._added_at: float | None = None
        self._on_watch = on_watch
        self.filtering = filtering or Filtering()
        self._gate = Gate(_nowhere)
        self._emitting: dict[int, float] = {}  # per _emit call under way: its oldest change
        #: Set when no rule needs the watch any more.
        self.unwatch = False
        workflow.add_validator(self._validate)
        self._watch_now: InotifyWatch | PortableWatch | PollWatch | None = None
        #: Set while every change under ``base_dir`` that a rule needs will be seen.
        self.ready = asyncio.Event()

    @property
    def watching(self) -> bool:
        """Whether a watch is open now (only while some rule needs one)."""
        return self._watch_now is not None

    @property
    def exact(self) -> bool:
        """Whether files are handed on at their writer's close (inotify), not by batch."""
        return self.kind == "inotify"

    @property
    def kind(self) -> str:
        """The watcher in use: ``inotify``, ``poll`` or ``watchfiles`` (``auto`` decided)."""
        if self._chosen is None:
            self._chosen = self._choose()
        return self._chosen

    def _choose(self) -> str:
        remote = remote_mounts(self.base)
        # Writes the kernel here may not report: the job-end scan is then worth making.
        self._remote = bool(remote)
        if self.watcher != "auto":
            return self.watcher
        if remote:
            m = remote[0]
            logger.info(
                "watching %s by polling every %gs: %s is a %s mount (%s), where writes made "
                "on other machines (or by its FUSE daemon) reach no inotify here "
                "(runner.file_watcher: inotify to watch it anyway)",
                self.base,
                self.poll_interval,
                m.point,
                m.fstype,
                m.source,
            )
            return "poll"
        return "inotify" if inotify.available() else "watchfiles"

    @property
    def settle_default(self) -> float:
        """The settle that changes found by looking (not by the kernel) get: polled files."""
        return self.poll_settle if self.kind == "poll" else 0.0

    def active(self) -> bool:
        """Watching for some rule now (no file rule: no watch at all)."""
        return bool(self.rules())

    def rules(self) -> list[Rule]:
        return [r for r in self.workflow.rules.values() if isinstance(r.pattern, FilePattern)]

    async def run(self, events: asyncio.Queue[Event], stop: asyncio.Event) -> None:
        if self.watcher == "inotify" and not inotify.available():
            raise MonitorError(self.name, "inotify is not available here: use watcher auto")
        if self.rules():
            await asyncio.to_thread(self._check_base)
            self._chosen = await asyncio.to_thread(self._choose)
        changed = asyncio.Event()
        unsubscribe = self.workflow.subscribe(changed.set)
        self._gate = Gate(events.put)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._follow_rules(events, stop, changed))
                outputs = tg.create_task(self._outputs.run(events, stop))
                await self._watch(events, stop)
                outputs.cancel()  # stopping: what jobs end with from now on, the next start finds
        finally:
            unsubscribe()
            self._gate.close()

    @property
    def scans_job_outputs(self) -> bool:
        """Whether a job's end is a reason to look: where the watcher polls, or the folder is
        on a network or FUSE mount. inotify or watchfiles on a local filesystem are told of
        every write made to it, at its close, exactly: a scan would only race them."""
        return self.kind == "poll" or self._remote

    def job_ended(self, job_dir: Path, outputs: Mapping[str, Any]) -> None:
        """A job has ended: look at once at the files its declared ``outputs`` name and the
        folders they point into, so the next stage need not wait for a watcher (a poll, or
        another machine's write that inotify never sees). Returns at once."""
        if self.rules() and self._watch_now is not None and self.scans_job_outputs:
            targets = output_targets(self.base, job_dir, outputs, self.filter)
            if targets:
                self._outputs.add(targets)

    def oldest_held(self) -> float | None:
        """The oldest change (its file's ctime) seen but not yet on the event queue: held
        back (settle, sentinel...), being put there now, or still open for writing."""
        times = [self._gate.oldest(), *self._emitting.values()]
        if self._watch_now is not None:
            times.append(self._watch_now.held_since())
        return min((t for t in times if t is not None), default=None)

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
            if self.rules() and (self._watch_now is None or self.unwatch):
                # A watch is about to start: not ready until it is live, and what changes
                # from now on is looked for once it is.
                self.ready.clear()
                if self._added_at is None:
                    self._added_at = time.time() - _CLOCK_SLACK
            # Decide on stopping the watch once the caller's changes are all made: rules
            # removed and added back in one go never stop it.
            asyncio.get_running_loop().call_soon(review)

        def review() -> None:
            if not self.rules() and self._watch_now is not None:
                self.unwatch = True
                self._watch_now.stop()

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
        """One watch, from set-up (then ``ready``) until no rule needs it."""
        self.unwatch = False
        watch: InotifyWatch | PortableWatch | PollWatch
        if self.kind == "inotify":
            watch = InotifyWatch(self)
        elif self.kind == "poll":
            watch = PollWatch(
                self,
                self.poll_interval,
                self.poll_settle,
                self.poll_index,
                self.poll_full_interval,
            )
        else:
            from .portable_watch import PortableWatch  # watchfiles: only where it is asked for

            watch = PortableWatch(self, self.step_ms, self.debounce_ms, self.rescan_after)
        await asyncio.to_thread(self.filter.load)  # not at the first file's event (10-15 ms)
        await watch.start()
        self._watch_now = watch
        stopping = asyncio.create_task(stop.wait())
        stopping.add_done_callback(lambda _: watch.stop())
        try:
            # From here the watcher reports every change: a scan leaves changes at or after
            # this moment to a batching watcher, so it never reports a half-written file
            # twice; inotify's closes are checked against what the scan remembered instead.
            since = await asyncio.to_thread(fs_now)
            await self._catch_up(watch, events, since)
            if self._on_watch is not None:
                self._on_watch(since)
            self.ready.set()
            logger.debug("watching %s", self.base)
            while (changes := await watch.changes()) is not None:
                await self._emit(changes, events, self.rules())
        finally:
            stopping.cancel()
            self._watch_now = None
            watch.close()
            logger.debug("stopped watching %s", self.base)

    async def _catch_up(
        self,
        watch: InotifyWatch | PortableWatch | PollWatch,
        events: asyncio.Queue[Event],
        since: float,
    ) -> None:
        """Changes made while nobody watched: since the last run's watch began (a restart),
        or since a rule was added to a runner that watched nothing. Found now the watch is
        live, so none falls between; jobs already made are skipped by their ids."""
        restart = self.catch_up_since is not None
        cutoffs = [t for t in (self.catch_up_since, self._added_at) if t is not None]
        self.catch_up_since = self._added_at = None
        if not cutoffs:
            return
        found, still = await self._scan_live(since, changed_since=min(cutoffs))
        found += watch.still_open(still)
        await self._emit(found, events, self.rules(), catch_up=restart)

    async def _scan_live(
        self, since: float, *, changed_since: float | None = None, remember: bool = True
    ) -> tuple[list[FileChange], list[tuple[str, float]]]:
        """The whole folder, while the watch is live: in write order, and apart the files
        still being written (inotify only). A batching watcher reports what changed from
        ``since`` on; inotify's closes are checked against what the scan remembered."""
        still: list[tuple[str, float]] = []
        found = await asyncio.to_thread(
            lambda: chronological(
                self.scan(
                    self.base,
                    skip_seen=False,
                    changed_since=changed_since,
                    before=None if self.exact else since,
                    remember=remember,
                    still_open=still if self.exact else None,
                )
            )
        )
        return found, still

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
        before = await asyncio.to_thread(fs_now)  # later changes: the live watch has them
        # Not remembered as seen: these events are for the new rules only, and the others
        # must still hear of a change the watcher reports meanwhile (job ids dedupe).
        found, still = await self._scan_live(before, remember=False)
        if self._watch_now is not None:
            # Files still being written: their close is reported to every rule, these too.
            await self._emit(self._watch_now.still_open(still), events, self.rules())
        await self._emit(found, events, new, retroactive=True)

    async def _emit(
        self,
        changes: Iterable[FileChange],
        events: asyncio.Queue[Event],
        rules: list[Rule],
        *,
        retroactive: bool = False,
        catch_up: bool = False,
        settle: float | None = None,
        complete: frozenset[str] = frozenset(),
    ) -> None:
        """Each change as an event per matching rule: onto the queue, or to the gate. Changes
        found by looking wait the watcher's default ``settle``, unless their path is in
        ``complete`` (a file whose writer, a job, has ended)."""
        changes = list(changes)
        if not changes:
            return
        if settle is None:
            settle = self.settle_default
        # Until each is on the queue, the runner's watermark must not pass these changes.
        token = object()
        oldest = min((c.ctime for c in changes if c.state), default=None)
        if oldest is not None:
            self._emitting[id(token)] = oldest
        try:
            await self._emit_each(changes, events, rules, retroactive, catch_up, settle, complete)
        finally:
            self._emitting.pop(id(token), None)

    async def emit_outputs(
        self,
        changes: list[FileChange],
        events: asyncio.Queue[Event],
        complete: dict[str, FileChange],
    ) -> None:
        """What a job-end scan found: the declared files (``complete``, each as it is now)
        go on at once, those a watcher already reported and the gate holds too."""
        found = {c.path for c in changes}
        held = [c for p, c in complete.items() if p not in found and self._gate.holds_path(p)]
        await self._emit([*changes, *held], events, self.rules(), complete=frozenset(complete))

    def declared(self, path: str) -> None:
        """A job-end scan has just read ``path`` as its job left it: a look that began
        before may hold an older view of it (an attribute cache's), which must not trigger."""
        watch = self._watch_now
        if isinstance(watch, PollWatch):
            watch.declared(path)

    async def _emit_each(
        self,
        changes: list[FileChange],
        events: asyncio.Queue[Event],
        rules: list[Rule],
        retroactive: bool,
        catch_up: bool,
        settle: float,
        complete: frozenset[str],
    ) -> None:
        filtered = Filtering.needed(rules)
        for ch in changes:
            # A deletion is complete as it is; a declared output once its job has ended.
            guess = 0.0 if ch.state is None or ch.path in complete else settle
            self._gate.noticed(ch.path)  # it may be a sentinel a held trigger waits for
            rel = ch.path[len(self.base) + 1 :]  # every path here is below self.base
            facts = _facts(ch, rel) if filtered else None
            for rule in rules:
                pattern = rule.pattern
                assert isinstance(pattern, FilePattern)  # noqa: S101 - rules() gave file rules
                wanted = ch.change in pattern.changes or (
                    catch_up and not pattern.changes.isdisjoint(_CATCH_UP)
                )
                if wanted and pattern.matches(rel):
                    if facts is not None and not self.filtering.passes(rule, facts):
                        # Not this state of the file: a trigger held for an earlier one is
                        # no longer what the file holds either.
                        self._gate.withdraw(rule.name, ch.path)
                        continue
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
                    if (
                        Gate.needed(pattern)
                        or Gate.default_settle(pattern, guess)
                        or self._gate.holds(rule.name, ch.path)  # a newer state of a held one
                    ):
                        self._gate.offer(event, settle=guess)
                    else:
                        await events.put(event)

    # -- what was seen: shared with the watchers, which may ask from a worker thread ------------

    def seen(self, path: str) -> FileState | None:
        with self._seen_lock:
            return self._seen.get(path)

    def remember(self, path: str, state: FileState) -> None:
        with self._seen_lock:
            self._seen[path] = state
            self._seen.move_to_end(path)
            while len(self._seen) > self._memory:
                self._seen.popitem(last=False)

    def forget(self, path: str) -> FileState | None:
        with self._seen_lock:
            return self._seen.pop(path, None)

    def forget_below(self, folder: str) -> set[str]:
        """Forget every file remembered below ``folder``; returns their paths."""
        prefix = folder + os.sep
        with self._seen_lock:
            gone = {p for p in self._seen if p.startswith(prefix)}
            for p in gone:
                del self._seen[p]
        return gone

    def forget_missing(self) -> list[str]:
        """Forget the remembered files that no longer exist; returns their paths."""
        with self._seen_lock:
            known = list(self._seen)
        gone = [p for p in known if not os.path.lexists(p)]
        with self._seen_lock:
            for p in gone:
                self._seen.pop(p, None)
        return gone

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
    ) -> list[FileChange]:
        """Regular files below ``top`` (ignored folders pruned) as fresh creations; with
        ``skip_seen``, not those that already made an event in their current state (and those
        seen before with the same inode as ``modified``); with
        ``changed_since``, only those whose inode changed (ctime) since then. With
        ``still_open``, files someone is still writing go there instead of being returned:
        they are complete only once closed."""
        out: list[FileChange] = []
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = [d for d in dirnames if self.filter(os.path.join(dirpath, d))]
            if dirs is not None:
                dirs.update(os.path.join(dirpath, d) for d in dirnames)
            if not recurse:
                dirnames.clear()
            for name in filenames:
                path = os.path.join(dirpath, name)
                if not self.filter(path):
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
                state = state_of(st)
                change = Change.created
                if skip_seen and (known := self.seen(path)) is not None:
                    if known == state:
                        continue
                    if (known.ino, known.dev) == (st.st_ino, st.st_dev):
                        change = Change.modified  # rewritten in place since it was seen
                if still_open is not None:
                    if being_written(path):
                        still_open.append((path, st.st_ctime))
                        continue
                    # Its writer may have closed it between the stat and the probe: what
                    # triggers is the state it was closed in.
                    try:
                        st = os.stat(path)
                    except OSError:
                        continue
                    if before is not None and st.st_ctime >= before:
                        continue
                    if state_of(st) != state:
                        state = state_of(st)
                        if skip_seen and self.seen(path) == state:
                            continue
                if remember:
                    self.remember(path, state)
                out.append(FileChange(change, path, None, state, st.st_ctime))
        return out


def _facts(ch: FileChange, rel: str) -> Facts:
    """What a file pattern's filter sees of a change."""
    return Facts(
        "file",
        lambda: {
            "path": rel,
            "name": os.path.basename(rel),
            "size": ch.state.size if ch.state is not None else ABSENT,
            "change": ch.change.value,
        },
    )


async def _nowhere(event: Event) -> None:
    raise RuntimeError("the file monitor is not running")
