"""Notification delivery (docs/notifications.md); what to notify is configured in
``model/notify.py``.

A notification must never cost a job or the runner anything. ``Notifier.job_ended`` only files
it (a few dictionary operations on the loop); one background task per destination sends it,
retries it with backoff and, if it cannot, gives up with a log line. A rate limit per
destination turns a burst of failures into a few messages and one digest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .outbox import GRACE, Notifier, NotifyStats

__all__ = ["GRACE", "Notifier", "NotifyStats"]

#: Imported on first use (PEP 562): a module of this package does not load the others.
_WHERE = {
    "GRACE": ".outbox",
    "Notifier": ".outbox",
    "NotifyStats": ".outbox",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name], __name__), name)
    globals()[name] = value
    return value
