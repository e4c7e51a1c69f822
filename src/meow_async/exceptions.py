"""The meow_async error tree: one place, so every module can raise without import loops."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ConfigError",
    "JobError",
    "MeowError",
    "MonitorError",
    "RunnerStopped",
    "WorkflowFileError",
    "WorkflowProblem",
]


class MeowError(Exception):
    """Base of every error meow_async raises on purpose."""


class ConfigError(MeowError, ValueError):
    """A pattern, recipe, rule or setting is invalid; names the object, field and value."""

    def __init__(
        self, message: str, *, where: str = "", field: str = "", value: Any = None
    ) -> None:
        self.where = where
        self.field = field
        self.value = value
        self.message = message
        prefix = where + (f".{field}" if where and field else field)
        super().__init__(f"{prefix}: {message}" if prefix else message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_config_error, (self.message, self.where, self.field, self.value))


def _rebuild_config_error(message: str, where: str, field: str, value: Any) -> ConfigError:
    return ConfigError(message, where=where, field=field, value=value)


@dataclass(frozen=True, slots=True)
class WorkflowProblem:
    """One problem in a workflow file, located, for people (``str()``) and tools (``as_json``).

    ``line`` and ``column`` count from 1 and are None when the problem has no place in the file
    (it does not exist); ``where`` is the setting's path, e.g. ``patterns.texts.glob``; ``value``
    is what the file says there, when ``has_value``.
    """

    path: str
    line: int | None
    column: int | None
    where: str
    message: str
    value: Any = None
    has_value: bool = False

    def __str__(self) -> str:
        located = f"{self.path}:{self.line}:{self.column}: " if self.line is not None else ""
        where = f"{self.where}: " if self.where else ""
        shown = f" (value: {_shown(self.value)})" if self.has_value else ""
        return f"{located}{where}{self.message}{shown}"

    def as_json(self) -> dict[str, Any]:
        """The record ``meow-async validate --json`` prints."""
        return {
            "line": self.line,
            "column": self.column,
            "where": self.where,
            "message": self.message,
            "value": _jsonable(self.value) if self.has_value else None,
        }


def _jsonable(value: Any) -> Any:
    """YAML can say more than JSON can (.nan, dates, sets): say those as YAML would, in text."""
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else ".inf" if value > 0 else "-.inf"
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((_jsonable(v) for v in value), key=str)
    return str(value)


def _shown(value: Any, limit: int = 60) -> str:
    """The value as JSON (which YAML reads too), cut short: a whole script would bury the line."""
    text = json.dumps(_jsonable(value), ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class WorkflowFileError(MeowError):
    """A workflow file has problems; ``problems`` lists every one with its location as text
    (``path:line:column: where: message (value: ...)``), ``records`` the same as
    ``WorkflowProblem`` objects, in file order."""

    def __init__(
        self, path: str, problems: list[str], records: Sequence[WorkflowProblem] | None = None
    ) -> None:
        self.path = path
        self.problems = problems
        #: Located warnings found with the problems (``validate --json`` lists them too).
        self.warnings: list[WorkflowProblem] = []
        self.records = (
            list(records)
            if records is not None
            else [WorkflowProblem(path, None, None, "", p) for p in problems]
        )
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{path}: {len(problems)} problem(s)\n{lines}")

    @classmethod
    def from_records(cls, path: str, records: Sequence[WorkflowProblem]) -> WorkflowFileError:
        return cls(path, [str(r) for r in records], records)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.problems, self.records))


class MonitorError(MeowError):
    """A monitor could not do its job (e.g. a folder that cannot be watched); has ``monitor``."""

    def __init__(self, monitor: str, message: str) -> None:
        self.monitor = monitor
        super().__init__(f"{monitor}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.monitor, str(self).partition(": ")[2]))


class JobError(MeowError):
    """A job could not be prepared or recorded (not a failing script: that is job data)."""

    def __init__(self, job_dir: str, message: str) -> None:
        self.job_dir = job_dir
        super().__init__(f"{job_dir}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.job_dir, str(self).partition(": ")[2]))


class RunnerStopped(MeowError):
    """``Runner.wait_for`` gave up: the runner stopped before the condition held."""

    def __init__(self, stats: Any) -> None:
        self.stats = stats
        super().__init__(f"the runner stopped before the condition held ({stats})")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.stats,))
