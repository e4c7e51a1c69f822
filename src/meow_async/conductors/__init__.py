"""Conductors run jobs: ``LocalConductor`` on this machine, ``DaskConductor`` on a Dask cluster.

``DaskConductor`` is imported on first use, so the core install needs no Dask.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import Conductor, JobInterrupted, stderr_tail
from .forkserver import start_time_of as process_start_time
from .local import LocalConductor

if TYPE_CHECKING:
    from .dask import DaskConductor

__all__ = [
    "Conductor",
    "DaskConductor",
    "JobInterrupted",
    "LocalConductor",
    "process_start_time",
    "stderr_tail",
]


def __getattr__(name: str) -> Any:
    if name == "DaskConductor":
        from .dask import DaskConductor

        return DaskConductor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
