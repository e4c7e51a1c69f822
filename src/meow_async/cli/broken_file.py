"""A workflow file with problems still names its runner's jobs folder.

While the file on disk is broken its runner goes on with the version it loaded, and says
"reload refused" in its live file: ``status``, ``jobs`` and ``show`` given the file then read
that jobs folder rather than stop at the problems (which ``validate`` lists).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..exceptions import WorkflowFileError

__all__ = ["jobs_dir_leniently", "or_jobs_dir"]


def jobs_dir_leniently(path: Path) -> Path:
    """``runner.jobs_dir`` if the file's YAML gives it as text, else the default beside the
    file (``.meow/jobs``): relative to the file's folder, as the loader reads it."""
    import yaml

    folder = path.absolute().parent
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, ValueError, yaml.YAMLError):
        doc = None
    runner = doc.get("runner") if isinstance(doc, dict) else None
    jobs = runner.get("jobs_dir") if isinstance(runner, dict) else None
    if isinstance(jobs, str) and jobs:
        return folder / jobs
    return folder / ".meow" / "jobs"


def or_jobs_dir(path: Path, error: WorkflowFileError) -> Path:
    """The jobs folder to show instead of the broken file's problems, said in one line on
    stderr; ``error`` again if no runner has used that folder."""
    root = jobs_dir_leniently(path)
    if not root.is_dir():
        raise error
    shown = os.path.relpath(root) if not os.path.relpath(root).startswith("..") else str(root)
    print(
        f"meow-async: {path} has {len(error.problems)} problem(s) (`meow-async validate "
        f"{path}` lists them): showing the jobs folder {shown}",
        file=sys.stderr,
    )
    return root
