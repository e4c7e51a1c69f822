"""How a TCP message ends, by the connection closing, a delimiter or a length prefix: here
rather than in patterns.py so that ``meow-async send`` checks it without loading the model."""

from __future__ import annotations

FRAMINGS: tuple[str, ...] = ("connection", "delimiter", "length")
