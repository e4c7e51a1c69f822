"""The watched folder a workflow needs, made by ``run`` where that is safe, and said by
``validate``.

A folder inside the project (beside the workflow file, like the README's ``data/``) is the
user's to have: ``run`` makes it, with the fixed folders its globs name (``incoming/`` for
``incoming/*.txt``), so the first file can be dropped in at once. A watched folder elsewhere
(``/mnt/instrument``) is never made: missing, it is more likely an unmounted share or a typo,
and a runner watching an empty stand-in would wait for files that land somewhere else.
"""

from __future__ import annotations

from pathlib import Path

from ..model.patterns import FilePattern
from ..model.workflow_file import WorkflowSpec

__all__ = ["make", "note", "to_make"]

_WILD = set("*?[]{}")


def to_make(spec: WorkflowSpec) -> list[Path] | None:
    """The folders ``run`` makes for ``spec`` (parents first; [] if none are missing), or None
    if its watched folder is missing and outside the project, so ``run`` stops instead."""
    globs = [p.glob for p in spec.patterns if isinstance(p, FilePattern)]
    if not globs:
        return []
    base = spec.config.base_dir.absolute()
    project = spec.path.absolute().parent
    inside = base == project or base.resolve().is_relative_to(project.resolve())
    if not base.is_dir() and not inside:
        return None
    wanted = [base] if inside else []
    if inside:
        for glob in globs:
            fixed = []
            for part in glob.split("/")[:-1]:  # the last part names files
                if _WILD & set(part):
                    break
                fixed.append(part)
            if fixed:
                wanted.append(base.joinpath(*fixed))
    return [p for p in dict.fromkeys(wanted) if not p.is_dir()]


def make(spec: WorkflowSpec) -> list[Path]:
    """Make what :func:`to_make` names; the folders made (for the log)."""
    made = to_make(spec) or []
    for folder in made:
        folder.mkdir(parents=True, exist_ok=True)
    return made


def note(spec: WorkflowSpec) -> str | None:
    """What ``validate`` says about the watched folder, if anything is missing."""
    missing = to_make(spec)
    base = spec.config.base_dir
    if missing is None:
        return (
            f"the watched folder {base} does not exist; `run` stops until it does (it is "
            "outside the workflow's folder, so `run` does not make it: mount or make it)"
        )
    if missing:
        names = ", ".join(str(p) for p in missing)
        return f"`run` will make the missing folder(s) {names}"
    return None
