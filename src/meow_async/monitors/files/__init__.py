"""File triggers: the kernel's inotify read on the loop (or watchfiles' notifier elsewhere),
turned into one event per complete write per rule."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .monitor import FileMonitor

__all__ = ["FileMonitor"]

#: Imported on first use (PEP 562): a module of this package does not load the others.
_WHERE = {
    "FileMonitor": ".monitor",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name], __name__), name)
    globals()[name] = value
    return value
