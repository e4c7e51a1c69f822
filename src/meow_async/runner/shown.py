"""Text from outside (file names, route parts, a job's output) made fit for a web page.

File names may hold bytes that are not UTF-8 (kept in ``str`` as lone surrogates, which
cannot be encoded at all), newlines and terminal controls. ``shown`` writes each undecodable
byte as ``\\xff`` and, for one-line values, each control as ``printable`` does; what is left
is escaped for HTML by the templates (autoescape), never trusted as markup.
"""

from __future__ import annotations

import re

from ..model.printable import printable

__all__ = ["shown", "shown_text"]

_SURROGATE = re.compile("[\ud800-\udfff]")


def _byte(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def shown_text(text: str) -> str:
    """Many lines (a log, stdout): undecodable bytes written out, newlines kept."""
    return _SURROGATE.sub(_byte, text) if _SURROGATE.search(text) else text


def shown(text: str) -> str:
    """One line (a name, a path): undecodable bytes and controls written out."""
    return printable(shown_text(text))
