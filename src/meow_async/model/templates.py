"""Keyword templates in parameter values, expanded by plain substitution (no eval)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["KEYWORDS", "expand", "keyword_values", "unknown_keywords"]

#: Each keyword and what it becomes, for docs and ``--help``.
KEYWORDS: dict[str, str] = {
    "PATH": "absolute path of the triggering file (network: the job's copy of the message)",
    "REL_PATH": "triggering path relative to the watched folder (network: to the job folder)",
    "DIR": "absolute folder holding the triggering file",
    "REL_DIR": "that folder relative to the watched folder ('.' at the top)",
    "FILENAME": "file name with extension",
    "PREFIX": "file name without its last extension",
    "EXTENSION": "last extension with its dot ('' if none)",
    "BASE": "absolute watched folder",
    "JOB": "the job's id",
}

_KEY = re.compile(r"\{(" + "|".join(KEYWORDS) + r")\}")


def keyword_values(
    path: str, base: str, job_id: str, *, rel_to: str | None = None
) -> dict[str, str]:
    """The keywords for one job; REL_* are relative to ``rel_to`` (default: ``base``)."""
    rel = os.path.relpath(path, base if rel_to is None else rel_to)
    filename = os.path.basename(path)
    prefix, ext = os.path.splitext(filename)
    return {
        "PATH": path,
        "REL_PATH": rel,
        "DIR": os.path.dirname(path),
        "REL_DIR": os.path.dirname(rel) or ".",
        "FILENAME": filename,
        "PREFIX": prefix,
        "EXTENSION": ext,
        "BASE": base,
        "JOB": job_id,
    }


def expand(value: Any, values: Mapping[str, str]) -> Any:
    """Replace known {KEYWORDS} in every string inside ``value``; others are left as they are."""
    if isinstance(value, str):
        return _KEY.sub(lambda m: values[m.group(1)], value) if "{" in value else value
    if isinstance(value, list):
        return [expand(v, values) for v in value]
    if isinstance(value, dict):
        return {k: expand(v, values) for k, v in value.items()}
    return value


_WORD = re.compile(r"\{([A-Z][A-Z_]*)\}")


def unknown_keywords(value: Any) -> list[tuple[str, str | None]]:
    """{UPPERCASE} words in ``value`` that are no keyword, each with the nearest keyword."""
    out: list[tuple[str, str | None]] = []
    if isinstance(value, str):
        for word in _WORD.findall(value):
            if word not in KEYWORDS:
                import difflib  # only for a misspelt name

                close = difflib.get_close_matches(word, KEYWORDS, n=1)
                out.append((word, close[0] if close else None))
    elif isinstance(value, list):
        for v in value:
            out.extend(unknown_keywords(v))
    elif isinstance(value, dict):
        for v in value.values():
            out.extend(unknown_keywords(v))
    return out
