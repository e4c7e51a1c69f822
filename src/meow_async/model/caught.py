"""One lock for ``warnings.catch_warnings``, which swaps process-wide state (the filters and
``showwarning``) and restores what it found: two threads in it at once can leave the other's
filters, or a dead recorder, in place for good. Every block of ours holds this."""

from __future__ import annotations

import threading

__all__ = ["CATCHING"]

CATCHING = threading.Lock()
