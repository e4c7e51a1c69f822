"""meow_async: event-triggered workflows on one asyncio event loop."""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version

from .conductors import Conductor, LocalConductor
from .config import RunnerConfig
from .events import Event
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
from .jobs import Job, JobState, iter_jobs, read_meta
from .monitors import FileMonitor, Monitor, NetworkMonitor
from .notify import Email, Notifier, Notify, Webhook
from .patterns import Change, FilePattern, HttpPattern, NetworkPattern, Pattern, Sweep
from .recipes import BashRecipe, NotebookRecipe, PythonRecipe, Recipe
from .rules import Rule
from .runner import Runner, RunnerStats
from .send import SendError, client_tls_context, send
from .templates import KEYWORDS
from .workflow import Workflow
from .workflow_file import WorkflowSpec, load_workflow

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
