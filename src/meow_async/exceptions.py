"""The meow_async error tree: one place, so every module can raise without import loops."""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConfigError",
    "JobError",
    "MeowError",
    "MonitorError",
    "RunnerStopped",
    "WorkflowFileError",
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


class WorkflowFileError(MeowError):
    """A workflow file has problems; ``problems`` lists every one with its location."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{path}: {len(problems)} problem(s)\n{lines}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.problems))


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
