"""Glob patterns relative to a watched folder, with ``**`` for any depth.

``fnmatch`` lets ``*`` cross ``/`` and ``PurePath.match`` has no ``**`` before Python 3.13, so a
pattern like ``runs/*/raw/*.h5`` needs its own small translation to a regular expression.

Hidden names (a leading ``.``) are matched only by a glob segment that starts with a dot, as in
the shell and Python's ``glob``: ``*``, ``?``, ``[...]`` and ``**`` never match one, so a tool's
hidden temporary file (rsync's ``.name.XXXXXX``) triggers nothing.
"""

from __future__ import annotations

import re

__all__ = ["compile_glob"]

#: What a segment that does not itself start with a dot must not start with.
_SHOWN = r"(?!\.)"


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
            out.append(f"{_SHOWN}[^/]*(?:/{_SHOWN}[^/]*)*" if last else f"(?:{_SHOWN}[^/]+/)*")
            continue
        if "**" in part:
            raise ValueError(f"'**' must be a whole path segment, found in {part!r}")
        out.append(("" if part.startswith(".") else _SHOWN) + _segment(part))
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
