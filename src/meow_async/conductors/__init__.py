"""Conductors run jobs: ``LocalConductor`` on this machine, ``DaskConductor`` on a Dask cluster.

Each is imported on first use, so the core install needs no Dask.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import Conductor, JobInterrupted, stderr_tail
    from .dask import DaskConductor
    from .forkserver import start_time_of as process_start_time
    from .local import LocalConductor

__all__ = [
    "Conductor",
    "DaskConductor",
    "JobInterrupted",
    "LocalConductor",
    "process_start_time",
    "stderr_tail",
]


#: Where each name lives: imported on first use (PEP 562), so that reading a job's
#: process.log (the CLI) does not load the conductors' asyncio machinery.
_WHERE = {
    "Conductor": (".base", "Conductor"),
    "DaskConductor": (".dask", "DaskConductor"),
    "JobInterrupted": (".base", "JobInterrupted"),
    "LocalConductor": (".local", "LocalConductor"),
    "process_start_time": (".forkserver", "start_time_of"),
    "stderr_tail": (".base", "stderr_tail"),
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attr = _WHERE[name]
    value = getattr(importlib.import_module(module, __name__), attr)
    globals()[name] = value
    return value
