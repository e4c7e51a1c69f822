"""How ``meow-async run`` writes its log: text or JSON lines, one line per record.

Every message is passed through :func:`~meow_async.model.printable.printable` once, here, so
that no value a line interpolates (a request path, a route part, a file name, a job's last
line of stderr) can start a line of its own or reach the terminal as a control sequence,
whichever call site wrote it. A traceback keeps its lines.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from ..model.printable import printable

__all__ = ["JsonFormatter", "TextFormatter", "setup_logging"]


class TextFormatter(logging.Formatter):
    """``HH:MM:SS.mmm LEVEL message``, the message escaped."""

    default_msec_format = "%s.%03d"

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with stable keys, for log shippers."""

    #: Fields a record may carry (``extra=``): a job's, and the ``run`` banner record's.
    FIELDS = ("job", "rule", "event", "jobs", "workflow", "base_dir", "jobs_dir", "rules", "http")

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            # JSON escapes a newline anyway; an escape sequence would still reach whoever
            # reads the decoded message in a terminal.
            "message": printable(record.getMessage()),
        }
        for key in self.FIELDS:
            value = record.__dict__.get(key)
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(level: int, *, json_lines: bool = False) -> None:
    """The ``meow_async`` loggers' lines to stderr (the library itself installs none)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger("meow_async")
    root.addHandler(handler)
    root.setLevel(level)
