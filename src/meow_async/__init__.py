"""meow_async: event-triggered workflows on one asyncio event loop."""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version

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

try:
    __version__ = version("meow-async")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0+unknown"

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
