"""Glob patterns relative to a watched folder, with ``**`` for any depth.

``fnmatch`` lets ``*`` cross ``/`` and ``PurePath.match`` has no ``**`` before Python 3.13, so a
pattern like ``runs/*/raw/*.h5`` needs its own small translation to a regular expression.
"""

from __future__ import annotations

import re

__all__ = ["compile_glob"]


def compile_glob(glob: str) -> re.Pattern[str]:
    """Translate ``glob`` to a regex over '/'-separated relative paths; ValueError if malformed."""
    if not glob or not glob.strip():
        raise ValueError("the glob is empty")
    if glob.startswith("/"):
        raise ValueError("the glob must be relative to the watched folder, not absolute")
    parts = glob.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError("the glob must not contain empty, '.' or '..' segments")
    out: list[str] = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out.append(".*" if last else "(?:[^/]+/)*")
            continue
        if "**" in part:
            raise ValueError(f"'**' must be a whole path segment, found in {part!r}")
        out.append(_segment(part))
        if not last:
            out.append("/")
    return re.compile("".join(out))


def _segment(part: str) -> str:
    res: list[str] = []
    i, n = 0, len(part)
    while i < n:
        c = part[i]
        i += 1
        if c == "*":
            res.append("[^/]*")
        elif c == "?":
            res.append("[^/]")
        elif c == "[":
            j = i
            if j < n and part[j] in "!^":
                j += 1
            if j < n and part[j] == "]":
                j += 1
            while j < n and part[j] != "]":
                j += 1
            if j >= n:
                raise ValueError(f"unclosed '[' in {part!r}")
            body = part[i:j]
            i = j + 1
            if body[:1] in ("!", "^"):
                body = "^" + body[1:]
            res.append("[" + body.replace("\\", "\\\\") + "]")
        else:
            res.append(re.escape(c))
    return "".join(res)
