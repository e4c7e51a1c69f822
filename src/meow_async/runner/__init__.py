"""The runner: its lifecycle and wiring (``runner.py``), what happens to a job that failed or
was cut off (``outcomes.py``), and what it shows of itself (``endpoints.py``, ``live.py``)."""

from __future__ import annotations

from .runner import Runner, RunnerStats

__all__ = ["Runner", "RunnerStats"]
