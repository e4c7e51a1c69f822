"""The runner: its lifecycle and wiring (``runner.py``), jobs to run again and the
watermark (``bookkeeping.py``), and what it shows of itself (``endpoints.py``, ``live.py``)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .runner import Runner, RunnerStats

__all__ = ["Runner", "RunnerStats"]

#: Imported on first use (PEP 562): a module of this package does not load the others.
_WHERE = {
    "Runner": ".runner",
    "RunnerStats": ".runner",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name], __name__), name)
    globals()[name] = value
    return value
