"""What the fork server learns to preload: modules the jobs import, once seen often enough.

Warm jobs report the top-level modules of the standard library and site-packages they
imported that the fork server had not (see forkserver.py). Counted per recipe version, a
module seen in :data:`SEEN_IN` jobs of one recipe is wanted; the conductor then starts a new
generation of the server that imports the wanted ones (each probed: see forkserver.py), and
records here what it holds and what it refused, with why. The record is a small JSON file
beside the job index, so a restart starts warm and never tries a refused module again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any

__all__ = ["CAP", "LEARNED_FILE", "SEEN_IN", "LearnedPreload"]

logger = logging.getLogger("meow_async.conductors")

#: The record's name, in the jobs folder.
LEARNED_FILE = ".meow-preload.json"
#: Jobs of one recipe version that must have imported a module before it is preloaded.
SEEN_IN = 3
#: Learned modules a server generation preloads at most.
CAP = 200
#: Recipe versions whose counts are kept (the oldest are forgotten: a long run reloads often).
_RECIPES = 256


class LearnedPreload:
    """The learned and refused modules, and the counts that lead to learning more."""

    def __init__(self, path: Path | None, *, seen_in: int = SEEN_IN, cap: int = CAP) -> None:
        self.path = path
        self.seen_in = seen_in
        self.cap = cap
        #: What the live server generation preloads of what was learned, in learning order.
        self.learned: list[str] = []
        #: Never preloaded: module -> why (failed to import, started a thread, ...).
        self.refused: dict[str, str] = {}
        #: Seen often enough, not yet in a server generation.
        self.pending: list[str] = []
        self._counts: OrderedDict[str, Counter[str]] = OrderedDict()

    def load(self) -> None:
        """The record of an earlier run, if any (a bad one is logged and started over)."""
        if self.path is None:
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            learned = [str(m) for m in data.get("learned", [])]
            refused = {str(m): str(why) for m, why in dict(data.get("refused", {})).items()}
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, AttributeError) as e:
            logger.warning("ignoring %s (%s): learning what to preload afresh", self.path, e)
            return
        self.refused = refused
        self.pending = [m for m in learned if m not in refused][: self.cap]

    def seen(self, recipe: str, modules: list[str]) -> bool:
        """A job of ``recipe`` (name and version) imported ``modules``; True when a module
        has now been seen often enough to be wanted in a new server generation."""
        counts = self._counts.get(recipe)
        if counts is None:
            counts = self._counts[recipe] = Counter()
            while len(self._counts) > _RECIPES:
                self._counts.popitem(last=False)
        else:
            self._counts.move_to_end(recipe)
        more = False
        for name in modules:
            if name in self.refused or name in self.learned or name in self.pending:
                continue
            counts[name] += 1
            if counts[name] >= self.seen_in and len(self.learned) + len(self.pending) < self.cap:
                self.pending.append(name)
                more = True
        return more

    def wanted(self) -> list[str]:
        """What the next server generation should preload of what was learned."""
        return [*self.learned, *self.pending][: self.cap]

    def settle(self, tried: list[str], held: list[str], refused: dict[str, str]) -> list[str]:
        """A new generation tried ``tried``: it holds ``held``; ``refused`` never again.
        Returns the modules refused now (not before)."""
        new = [m for m in refused if m not in self.refused]
        self.refused.update(refused)
        self.learned = [m for m in held if m not in self.refused]
        done = set(tried) | set(held) | set(self.refused)
        self.pending = [m for m in self.pending if m not in done]
        return new

    def record(self) -> dict[str, Any]:
        return {"learned": self.learned, "refused": self.refused, "seen_in": self.seen_in}

    def save(self) -> None:
        """Written whole and renamed into place: a reader never finds half of it."""
        if self.path is None:
            return
        text = json.dumps(self.record(), indent=1, sort_keys=True) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".meow-preload.")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(text)
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as e:
            logger.warning("could not write %s: %s", self.path, e)
