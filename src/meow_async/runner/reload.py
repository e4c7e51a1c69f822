"""Reloading the workflow file while the runner runs: check it whole, then apply the difference
in one step, or change nothing and say why.

A reload is asked for by an edit of the file (or of a recipe ``file:`` beside it, followed with
inotify: a write is complete when it is closed or renamed into place), by ``SIGHUP``, or by
``meow-async reload`` (``POST /reload`` on runner.http). The file is read and checked in a
thread; the change is then made by one synchronous call on the loop (``Workflow.replace``), so
an event is made under the old rules or the new ones, never a mix, and an event already
queued carries the rule it was made under.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import MeowError, WorkflowFileError
from ..model.config import RunnerConfig
from ..model.patterns import Pattern
from ..model.recipes import Recipe
from ..model.workflow import Workflow
from ..model.workflow_file import WorkflowSpec, load_workflow
from ..monitors.files import inotify

__all__ = ["Outcome", "Reloads", "describe_changes"]

logger = logging.getLogger("meow_async.runner")

#: Seconds to wait after a write of a followed file before reading it: an editor's save is
#: often a few writes and renames (a backup, the file, its folder's entry); one reload follows.
SETTLE = 0.05


@dataclass(slots=True)
class Outcome:
    """What a reload did: ``applied`` (with ``changes``), ``unchanged``, or ``refused`` (with
    ``problems``, each as ``validate`` prints it)."""

    result: str
    #: The file's version: applied, unchanged, or refused (None: a file too broken to have one).
    version: str | None
    changes: str = ""
    problems: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "result": self.result,
            "version": self.version,
            "changes": self.changes,
            "problems": self.problems,
        }


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def _diff(
    old: dict[str, Any], new: dict[str, Any], same: Callable[[Any, Any], bool]
) -> tuple[int, int, int]:
    added = len(new.keys() - old.keys())
    removed = len(old.keys() - new.keys())
    changed = sum(1 for k in new.keys() & old.keys() if not same(old[k], new[k]))
    return added, changed, removed


def describe_changes(
    workflow: Workflow, patterns: Iterable[Pattern], recipes: Iterable[Recipe]
) -> str:
    """``+1 pattern, ~1 recipe, -1 rule``: what replacing the workflow's patterns and
    recipes with these changes (empty: nothing)."""
    new_patterns = {p.name: p for p in patterns}
    new_recipes = {r.name: r for r in recipes}
    parts: list[str] = []
    tables = (
        ("pattern", workflow.patterns, new_patterns, lambda a, b: a == b),
        ("recipe", workflow.recipes, new_recipes, lambda a, b: a == b and a.digest == b.digest),
    )
    for what, old, new, same in tables:
        added, changed, removed = _diff(old, new, same)
        parts += [f"+{_count(added, what)}"] if added else []
        parts += [f"~{_count(changed, what)}"] if changed else []
        parts += [f"-{_count(removed, what)}"] if removed else []
    rules_before = set(workflow.rules)
    rules_after = {p.name for p in new_patterns.values() if p.recipe in new_recipes}
    if rules_after - rules_before:
        parts.append(f"+{_count(len(rules_after - rules_before), 'rule')}")
    if rules_before - rules_after:
        parts.append(f"-{_count(len(rules_before - rules_after), 'rule')}")
    return ", ".join(parts)


def fixed_settings(old: RunnerConfig, new: RunnerConfig) -> list[str]:
    """``restart to change runner.base_dir``: one line per runner setting that differs. No
    runner setting changes live: folders, conductor, listeners and limits are set up at
    start, and a half-applied set of them would be worse than a refusal."""
    return [
        f"runner.{f.name}: restart to change runner.{f.name}"
        for f in dataclasses.fields(RunnerConfig)
        if getattr(old, f.name) != getattr(new, f.name)
    ]


class Reloads:
    """The runner's workflow file: which version runs, since when, and the last refusal."""

    def __init__(
        self,
        spec: WorkflowSpec,
        workflow: Workflow,
        check_recipes: Callable[[list[Recipe]], None],
        after: Callable[[], Awaitable[None]],
    ) -> None:
        #: As given at start: paths in the file are made from its folder the same way again.
        self.path = spec.path
        self.workflow = workflow
        self.config = spec.config  # as the file says it, before command-line overrides
        self.version = spec.version
        self.loaded = time.time()
        self.files = [p.absolute() for p in spec.files]
        #: The last reload's refusal (None once a reload succeeds).
        self.refused: Outcome | None = None
        self.reloads = 0
        #: Reloads asked for (applied, unchanged or refused) and the last one's outcome:
        #: ``meow-async reload`` without runner.http reads them from the live file.
        self.answers = 0
        self.last: Outcome | None = None
        self._check_recipes = check_recipes
        self._after = after  # e.g. the live file says the new version
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()

    def state(self) -> dict[str, Any]:
        """What ``status`` and ``/status`` show."""
        return {
            "path": str(self.path.absolute()),
            "version": self.version,
            "loaded": self.loaded,
            "reloads": self.reloads,
            "answers": self.answers,
            "last": None if self.last is None else self.last.as_json(),
            "refused": None
            if self.refused is None
            else {"version": self.refused.version, "problems": self.refused.problems},
        }

    async def reload(self, why: str) -> Outcome:
        """Read the file, check it whole, and apply it or refuse it (logged either way)."""
        async with self._lock:
            try:
                spec = await asyncio.to_thread(load_workflow, self.path)
            except WorkflowFileError as e:
                outcome = self._refuse(None, e.problems, why)
            else:
                outcome = self.apply(spec, why)
            self.answers += 1
            self.last = outcome
            await self._after()
            return outcome

    def apply(self, spec: WorkflowSpec, why: str) -> Outcome:
        """Apply a checked file: synchronous, so no event is made between two changes."""
        if spec.version == self.version:
            if self.refused is not None:
                self.refused = None
                logger.info("reload (%s): the file is the running version again", why)
            else:
                logger.info("reload (%s): unchanged (workflow %s)", why, spec.version)
            return Outcome("unchanged", spec.version)
        problems = fixed_settings(self.config, spec.config)
        try:
            self._check_recipes(spec.recipes)
        except MeowError as e:
            problems.append(str(e))
        if problems:
            return self._refuse(spec.version, problems, why)
        changes = describe_changes(self.workflow, spec.patterns, spec.recipes)
        try:
            self.workflow.replace(spec.patterns, spec.recipes, spec.version)
        except MeowError as e:  # a new port in use, listeners that disagree...
            return self._refuse(spec.version, [str(e)], why)
        old, self.version, self.loaded = self.version, spec.version, time.time()
        self.files = [p.absolute() for p in spec.files]
        self.refused = None
        self.reloads += 1
        self._wake.set()  # the recipe files followed may have changed
        logger.info(
            "reload (%s): workflow %s -> %s: %s",
            why,
            old,
            spec.version,
            changes or "no rule changed",
            extra={"workflow_version": spec.version},
        )
        for w in spec.warnings:
            logger.warning("%s", w)
        return Outcome("applied", spec.version, changes=changes)

    def _refuse(self, version: str | None, problems: list[str], why: str) -> Outcome:
        self.refused = Outcome("refused", version, problems=problems)
        logger.error(
            "reload refused (%s): %d problem(s); still running workflow %s",
            why,
            len(problems),
            self.version,
        )
        for p in problems:  # one line each, as validate prints them
            logger.error("  %s", p)
        return self.refused

    # -- following the file --------------------------------------------------------------------

    async def follow(self, stop: asyncio.Event) -> None:
        """Reload when the workflow file or a recipe file it names is written (closed after
        writing, or renamed into place), until ``stop``. Without inotify (not Linux): SIGHUP
        and ``meow-async reload`` only."""
        if not inotify.available():
            logger.info("the workflow file is not followed here (no inotify): use SIGHUP")
            await stop.wait()
            return
        loop = asyncio.get_running_loop()
        ino = inotify.Inotify()
        written = asyncio.Event()
        watched: dict[int, str] = {}
        names: set[tuple[str, str]] = set()

        def watch() -> None:
            names.clear()
            for path in self.files:
                folder = str(path.parent)
                names.add((folder, path.name))
                if folder not in watched.values():
                    with contextlib.suppress(OSError):
                        mask = inotify.IN_CLOSE_WRITE | inotify.IN_MOVED_TO | inotify.IN_ONLYDIR
                        watched[ino.add_watch(folder, mask)] = folder

        def readable() -> None:
            records, _ = ino.read()
            for r in records:
                if (watched.get(r.wd), r.name) in names:
                    written.set()

        watch()
        loop.add_reader(ino.fd, readable)
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                waiting = asyncio.create_task(written.wait())
                waking = asyncio.create_task(self._wake.wait())
                await asyncio.wait([waiting, waking, stopping], return_when=asyncio.FIRST_COMPLETED)
                waiting.cancel()
                waking.cancel()
                if self._wake.is_set():
                    self._wake.clear()
                    watch()
                if written.is_set() and not stop.is_set():
                    await asyncio.sleep(SETTLE)
                    written.clear()
                    await self.reload("the file changed")
        finally:
            stopping.cancel()
            loop.remove_reader(ino.fd)
            ino.close()
