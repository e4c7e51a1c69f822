"""Notification delivery (docs/notifications.md); what to notify is configured in
``model/notify.py``.

A notification must never cost a job or the runner anything. ``Notifier.job_ended`` only files
it (a few dictionary operations on the loop); one background task per destination sends it,
retries it with backoff and, if it cannot, gives up with a log line. A rate limit per
destination turns a burst of failures into a few messages and one digest.
"""

from __future__ import annotations

from .outbox import GRACE, Notifier, NotifyStats

__all__ = ["GRACE", "Notifier", "NotifyStats"]
