"""Starting helper processes (``python -m perf.<module>``) with this package importable."""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: The folder that holds the ``perf`` package (the project root).
ROOT = Path(__file__).resolve().parent.parent


def perf_argv(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", f"perf.{module}", *args]


def perf_env() -> dict[str, str]:
    env = dict(os.environ)
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + old if old else "")
    return env
