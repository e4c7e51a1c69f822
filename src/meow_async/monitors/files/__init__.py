"""File triggers: the kernel's inotify read on the loop (or watchfiles' notifier elsewhere),
turned into one event per complete write per rule."""

from __future__ import annotations

from .monitor import FileMonitor

__all__ = ["FileMonitor"]
