"""The runner: its lifecycle and wiring (``runner.py``), jobs to run again and the
watermark (``bookkeeping.py``), and what it shows of itself (``endpoints.py``, ``live.py``)."""

from __future__ import annotations

from .runner import Runner, RunnerStats

__all__ = ["Runner", "RunnerStats"]
