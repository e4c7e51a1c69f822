"""meow_async: event-triggered workflows on one asyncio event loop."""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .cli.send import SendError, client_tls_context, send
    from .conductors import Conductor, LocalConductor
    from .exceptions import (
        ConfigError,
        JobError,
        MeowError,
        MonitorError,
        RunnerStopped,
        WorkflowFileError,
        WorkflowProblem,
    )
    from .handlers import Handler
    from .model.config import RunnerConfig
    from .model.events import Event
    from .model.jobs import Job, JobState, iter_jobs, read_meta
    from .model.notify import Email, Notify, Webhook
    from .model.patterns import (
        Change,
        FilePattern,
        HttpPattern,
        NetworkPattern,
        Pattern,
        Sweep,
        TimePattern,
    )
    from .model.recipes import BashRecipe, NotebookRecipe, PythonRecipe, Recipe
    from .model.rules import Rule
    from .model.templates import KEYWORDS
    from .model.workflow import Workflow
    from .model.workflow_file import WorkflowSpec, load_workflow
    from .monitors import FileMonitor, Monitor, NetworkMonitor
    from .notify import Notifier
    from .runner.runner import Runner, RunnerStats

#: Where each public name lives. Each is imported on first use (PEP 562), so that
#: ``meow-async --version`` or ``send`` does not load aiohttp, the monitors and the runner.
_WHERE: dict[str, str] = {
    "SendError": ".cli.send",
    "client_tls_context": ".cli.send",
    "send": ".cli.send",
    "Conductor": ".conductors",
    "LocalConductor": ".conductors",
    "ConfigError": ".exceptions",
    "JobError": ".exceptions",
    "MeowError": ".exceptions",
    "MonitorError": ".exceptions",
    "RunnerStopped": ".exceptions",
    "WorkflowFileError": ".exceptions",
    "WorkflowProblem": ".exceptions",
    "Handler": ".handlers",
    "RunnerConfig": ".model.config",
    "Event": ".model.events",
    "Job": ".model.jobs",
    "JobState": ".model.jobs",
    "iter_jobs": ".model.jobs",
    "read_meta": ".model.jobs",
    "Email": ".model.notify",
    "Notify": ".model.notify",
    "Webhook": ".model.notify",
    "Change": ".model.patterns",
    "FilePattern": ".model.patterns",
    "HttpPattern": ".model.patterns",
    "NetworkPattern": ".model.patterns",
    "Pattern": ".model.patterns",
    "Sweep": ".model.patterns",
    "TimePattern": ".model.patterns",
    "BashRecipe": ".model.recipes",
    "NotebookRecipe": ".model.recipes",
    "PythonRecipe": ".model.recipes",
    "Recipe": ".model.recipes",
    "Rule": ".model.rules",
    "KEYWORDS": ".model.templates",
    "Workflow": ".model.workflow",
    "WorkflowSpec": ".model.workflow_file",
    "load_workflow": ".model.workflow_file",
    "FileMonitor": ".monitors",
    "Monitor": ".monitors",
    "NetworkMonitor": ".monitors",
    "Notifier": ".notify",
    "Runner": ".runner.runner",
    "RunnerStats": ".runner.runner",
}

__all__ = [
    "KEYWORDS",
    "BashRecipe",
    "Change",
    "Conductor",
    "ConfigError",
    "Email",
    "Event",
    "FileMonitor",
    "FilePattern",
    "Handler",
    "HttpPattern",
    "Job",
    "JobError",
    "JobState",
    "LocalConductor",
    "MeowError",
    "Monitor",
    "MonitorError",
    "NetworkMonitor",
    "NetworkPattern",
    "NotebookRecipe",
    "Notifier",
    "Notify",
    "Pattern",
    "PythonRecipe",
    "Recipe",
    "Rule",
    "Runner",
    "RunnerConfig",
    "RunnerStats",
    "RunnerStopped",
    "SendError",
    "Sweep",
    "TimePattern",
    "Webhook",
    "Workflow",
    "WorkflowFileError",
    "WorkflowProblem",
    "WorkflowSpec",
    "__version__",
    "client_tls_context",
    "iter_jobs",
    "load_workflow",
    "read_meta",
    "send",
]

# A library stays quiet unless its application configures logging: without this, Python's
# last-resort handler would print meow_async's warnings to stderr. The CLI adds its own handler.
logging.getLogger("meow_async").addHandler(logging.NullHandler())


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(where, __name__), name)
    globals()[name] = value  # the next lookup is a plain one
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
