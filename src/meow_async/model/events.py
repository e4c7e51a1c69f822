"""Events: what monitors put on the queue. They carry the rule they matched."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .patterns import Change
from .rules import Rule

__all__ = ["Event", "trigger_of"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One trigger of one rule.

    ``path`` is absolute; ``base`` is the folder ``path`` is relative to in templates
    ({REL_PATH}, {BASE}): the watched folder for file events.
    """

    kind: str
    path: str
    base: str
    rule: Rule
    change: Change | None = None
    time: float = field(default_factory=time.time)
    id: str = field(default_factory=lambda: secrets.token_hex(16))  # uuid4's cost, a third
    extras: Mapping[str, Any] = field(default_factory=dict)
    #: What makes this trigger the same trigger if it is seen again (after a restart, or by a
    #: retroactive scan): jobs are named from it, so handling it twice makes no second job.
    #: Empty: every event is new.
    key: str = ""
    #: When the trigger happened on disk (a file's ctime): a restart's catch-up must look
    #: back at least this far while the event is not handled. None: ``time``.
    changed_at: float | None = None
    #: Called once the event has been turned into jobs (or failed to be): frees its payload.
    release: Callable[[], None] | None = field(default=None, compare=False, repr=False)

    @property
    def rel_path(self) -> str:
        return os.path.relpath(self.path, self.base)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form kept in each job's metadata."""
        return {
            "id": self.id,
            "kind": self.kind,
            "path": self.path,
            "base": self.base,
            "change": None if self.change is None else self.change.value,
            "time": self.time,
            "rule": self.rule.name,
            "key": self.key or None,
            **self.extras,
        }


def trigger_of(event: dict[str, Any]) -> str:
    """A file path relative to the watched folder, a message's id and its sender, or a
    time pattern's tick."""
    tick = event.get("scheduled_time")
    if tick:
        return f"tick {tick}"
    msg = event.get("message_id")
    if msg:
        return f"{msg} from {event.get('peer') or '?'}"
    path, base = event.get("path"), event.get("base")
    if not isinstance(path, str):
        return "-"
    if isinstance(base, str) and path.startswith(base.rstrip("/") + "/"):
        return path[len(base.rstrip("/")) + 1 :]
    return path
