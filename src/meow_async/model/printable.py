"""Text from outside (request paths, route parts, file names, a job's last line of stderr)
made safe for a log line: one line, no terminal control.

A newline in a file name or a ``%0A`` in a URL would otherwise start a line of its own in the
log, which could read ``INFO job ... done``; an escape sequence would reach the terminal that
shows the log. Each such character is written as Python writes it in a string literal
(``\\n``, ``\\x1b``, ``\\u2028``); everything else, backslashes included, stays as it is.
"""

from __future__ import annotations

import re

__all__ = ["printable"]

#: C0 controls and DEL, C1 controls (NEL among them), the line and paragraph separators, and
#: the bidirectional overrides that can make a line read as other text than it holds.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    c = match.group()
    named = _NAMED.get(c)
    if named is not None:
        return named
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every control character escaped (the same text when it has none)."""
    if _UNSAFE.search(text) is None:
        return text
    return _UNSAFE.sub(_escape, text)
