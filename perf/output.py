"""Writing results: JSON (machine, versions, every sample), Markdown tables, PNG plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from . import markdown


def _clean(v: Any) -> Any:
    """JSON has no NaN: a message that never got that far is null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    return v


def write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Compact: a full run holds millions of samples.
    path.write_text(json.dumps(_clean(results), separators=(",", ":")) + "\n")


def write_markdown(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown.render(results))


def write_plots(results: dict[str, Any], folder: Path) -> list[Path]:
    if "network" not in results:
        return []
    from . import plots

    return plots.network(results["network"]["points"], folder)
