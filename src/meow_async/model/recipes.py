"""Recipes: what a rule runs. Parameters reach the script as data, never as pasted code."""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import shlex
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from ..exceptions import ConfigError
from .checks import check_name
from .settings import (
    check_settings,
    choice,
    custom,
    flag,
    optional,
    params,
    resources,
    seconds,
    text,
)

__all__ = ["BashRecipe", "NotebookRecipe", "PythonRecipe", "Recipe"]

_BEGIN = "# --- parameters set by meow_async for this job (also in $MEOW_PARAMS) ---"
_END = "# --- end of parameters ---"


def _path(where: str, field: str, value: object) -> object:
    if not isinstance(value, str | os.PathLike) or not str(value):
        raise ConfigError("expected a file path", where=where, field=field, value=value)
    return value


def _script(where: str, field: str, value: object) -> object:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError("the script is empty", where=where, field=field, value=value)
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class _RecipeBase:
    """A script given inline (``script``) or as a file read once when the recipe is made."""

    kind: ClassVar[str]
    suffix: ClassVar[str]
    name: str
    #: The script's text (a YAML block, ``script: |``); or give ``file``.
    script: str | None = field(
        default=None, metadata=optional(custom({"type": "string", "pattern": r"\S"}, _script))
    )
    #: A script file, relative to the workflow file, read once at load time.
    file: str | Path | None = field(
        default=None, metadata=optional(custom({"type": "string", "minLength": 1}, _path))
    )
    #: Default parameters; patterns override them.
    parameters: Mapping[str, Any] = field(default_factory=dict, metadata=params())
    #: Seconds a job may run before it is stopped (SIGTERM, then SIGKILL) and recorded as
    #: timed out; None: no limit.
    timeout: float | None = field(default=None, metadata=optional(seconds(above_zero=True)))
    #: Where its jobs run: ``local`` or ``dask``; None: the runner's ``conductor``.
    conductor: str | None = field(default=None, metadata=optional(choice("local", "dask")))
    #: Dask worker resources each job needs, e.g. ``{"GPU": 1, "MEM": 4e9}`` (Dask only).
    resources: Mapping[str, float] = field(default_factory=dict, metadata=resources())
    source: str = field(init=False, repr=False, compare=False)
    #: What the recipe does, hashed: its kind, its script's text and its settings (not where
    #: the text came from). Recorded in each job's ``job.json`` as ``recipe_hash``; a reload
    #: compares it to tell an edited ``file:`` recipe from an unchanged one.
    digest: str = field(init=False, repr=False, compare=False)

    #: Exactly one of script and file.
    extra_schema: ClassVar[dict[str, Any]] = {
        "oneOf": [{"required": ["script"]}, {"required": ["file"]}]
    }

    def __post_init__(self) -> None:
        check_name("recipe", "name", self.name)
        where = f"recipe {self.name!r}"
        check_settings(self, where)
        if self.resources and self.conductor == "local":
            raise ConfigError(
                "resources route jobs to Dask workers; a local recipe takes none",
                where=where,
                field="resources",
                value=dict(self.resources),
            )
        if (self.script is None) == (self.file is None):
            raise ConfigError(
                "give exactly one of 'script' (inline text) or 'file'",
                where=where,
                field="script",
                value=None,
            )
        if self.script is not None:
            source = self.script
        else:
            path = Path(self.file)  # type: ignore[arg-type]
            try:
                source = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                raise ConfigError(
                    f"recipe file {str(path)!r} does not exist",
                    where=where,
                    field="file",
                    value=str(path),
                ) from None
            except (OSError, UnicodeDecodeError) as e:
                raise ConfigError(
                    f"cannot read recipe file {str(path)!r}: {e}",
                    where=where,
                    field="file",
                    value=str(path),
                ) from None
        object.__setattr__(self, "source", source)
        self._check_source(where)
        settings = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.init and f.name not in ("script", "file")
        }
        text = f"{self.kind}\0{source}\0{settings!r}"
        object.__setattr__(self, "digest", hashlib.sha256(text.encode()).hexdigest()[:16])

    def _check_source(self, where: str) -> None:
        """Catch what can be caught before any job runs."""

    def render(self, params: Mapping[str, Any]) -> str:
        """The job's script: the recipe with ``params`` assigned as literals near its top."""
        raise NotImplementedError

    def command(self, script: Path) -> list[str]:
        """The argv that runs a rendered script."""
        raise NotImplementedError


def _preload(where: str, field: str, value: object) -> tuple[str, ...]:
    if (
        isinstance(value, str)
        or not isinstance(value, Sequence)
        or not all(isinstance(m, str) for m in value)
    ):
        raise ConfigError(
            "give preload as a list of module names, e.g. [numpy, pandas]",
            where=where,
            field=field,
            value=value,
        )
    for module in value:
        if not all(part.isidentifier() for part in module.split(".")):
            raise ConfigError(
                f"{module!r} is not a module name", where=where, field=field, value=module
            )
        top = module.split(".")[0]
        if importlib.util.find_spec(top) is None:  # finds it without importing it
            raise ConfigError(
                f"cannot preload {module!r}: no module {top!r} in {sys.executable}",
                where=where,
                field=field,
                value=module,
            )
    return tuple(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class PythonRecipe(_RecipeBase):
    """A Python script, run with ``interpreter`` (default: the runner's own Python).

    With the runner's own Python, jobs start as forks of a warm interpreter that has imported
    ``preload`` already (see https://meow-async.github.io/meow_async/concepts/#warm-starts);
    ``fork=False`` spawns each job as a new interpreter, as does any ``interpreter`` given.
    """

    kind: ClassVar[str] = "python"
    suffix: ClassVar[str] = ".py"
    #: The program that runs the script (default: the runner's own Python, warm).
    interpreter: str | None = field(
        default=None,
        metadata=optional(text("give the interpreter as a program name or path")),
    )
    #: Modules the warm interpreter imports before forking jobs (e.g. ``numpy``).
    preload: Sequence[str] = field(
        default=(),
        metadata=custom(
            {"type": "array", "items": {"type": "string", "pattern": r"^\w+(\.\w+)*$"}},
            _preload,
        ),
    )
    #: false: spawn each job as a new interpreter instead of forking the warm one.
    fork: bool = field(default=True, metadata=flag())

    @property
    def warm(self) -> bool:
        """Jobs start as forks of the fork server, not as new interpreters."""
        return self.fork and self.interpreter is None

    def _check_source(self, where: str) -> None:
        try:
            tree = ast.parse(self.source)
        except SyntaxError as e:
            raise ConfigError(
                f"Python syntax error at line {e.lineno}: {e.msg}",
                where=where,
                field="script" if self.script is not None else "file",
                value=e.text,
            ) from None
        # Parameters go after the module docstring and any `from __future__` imports,
        # which must stay first.
        insert = 0
        for n, node in enumerate(tree.body):
            if isinstance(node, ast.ImportFrom) and node.module == "__future__":
                insert = node.end_lineno or node.lineno
            elif n == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
                insert = node.end_lineno or node.lineno  # the docstring
            else:
                break
        object.__setattr__(self, "_insert_at", insert)

    def render(self, params: Mapping[str, Any]) -> str:
        lines = self.source.splitlines(keepends=True)
        at = self._insert_at
        if at == 0 and lines and lines[0].startswith("#!"):
            at = 1
        if at and not lines[at - 1].endswith("\n"):
            lines[at - 1] += "\n"
        # repr() of JSON-like values is a Python literal: data, never code.
        header = [_BEGIN + "\n", *(f"{k} = {v!r}\n" for k, v in params.items()), _END + "\n"]
        return "".join([*lines[:at], *header, *lines[at:]])

    def command(self, script: Path) -> list[str]:
        return [self.interpreter or sys.executable, str(script)]

    _insert_at: int = field(init=False, default=0, repr=False, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class BashRecipe(_RecipeBase):
    """A Bash script; parameters become shell variables (lists and mappings as JSON text)."""

    kind: ClassVar[str] = "bash"
    suffix: ClassVar[str] = ".sh"
    #: The program that runs the script.
    shell: str = field(default="bash", metadata=text("give the shell as a program name or path"))

    def render(self, params: Mapping[str, Any]) -> str:
        lines = self.source.splitlines(keepends=True)
        at = 1 if lines and lines[0].startswith("#!") else 0
        header = [
            _BEGIN + "\n",
            *(f"{k}={shlex.quote(_bash_text(v))}\n" for k, v in params.items()),
            _END + "\n",
            _EXIT_TRAP,
        ]
        return "".join([*lines[:at], *header, *lines[at:]])

    def command(self, script: Path) -> list[str]:
        return [self.shell, str(script)]


#: The job records its own exit in process.log, so a restart knows it finished even when the
#: runner was not there to see it (a script that sets its own EXIT trap replaces this one).
#: Killed by a signal, it records nothing, as a killed Python job does: Bash would run the EXIT
#: trap with the last command's status (often 0), so each trap clears it and dies of its signal.
_EXIT_TRAP = (
    'trap \'__meow=$?; [ -n "${MEOW_PROCESS_LOG:-}" ] && '
    'echo "exit $__meow ${EPOCHREALTIME:-}" >> "$MEOW_PROCESS_LOG"\' EXIT\n'
    + "".join(f"trap 'trap - EXIT {sig}; kill -{sig} $$' {sig}\n" for sig in ("TERM", "INT", "HUP"))
)


def _bash_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class NotebookRecipe(_RecipeBase):
    """A Jupyter notebook, executed by a real kernel in the job folder with papermill.

    Parameters are injected the papermill way, as a cell of literal assignments after the cell
    tagged ``parameters``; the executed notebook, outputs included, is the job's
    ``output.ipynb``. ``script`` holds the notebook's JSON inline; ``kernel`` names a kernel
    (default: the notebook's own, else ``python3``). Needs ``pip install 'meow-async[notebook]'``.
    """

    kind: ClassVar[str] = "notebook"
    suffix: ClassVar[str] = ".ipynb"
    #: The Jupyter kernel (default: the notebook's own, else python3).
    kernel: str | None = field(
        default=None, metadata=optional(text("give the kernel's name, e.g. python3"))
    )

    def _check_source(self, where: str) -> None:
        missing = [m for m in ("papermill", "ipykernel") if importlib.util.find_spec(m) is None]
        if missing:
            raise ConfigError(
                f"notebook recipes need {' and '.join(missing)}: pip install "
                "'meow-async[notebook]'",
                where=where,
                field="kind",
                value="notebook",
            )
        fld = "script" if self.script is not None else "file"
        try:
            nb = json.loads(self.source)
        except ValueError as e:
            raise ConfigError(
                f"not a notebook: invalid JSON at line {getattr(e, 'lineno', '?')}: {e}",
                where=where,
                field=fld,
                value=self.file,
            ) from None
        cells = nb.get("cells") if isinstance(nb, dict) else None
        if not isinstance(cells, list) or nb.get("nbformat") != 4:
            raise ConfigError(
                "not a Jupyter notebook in format 4 (no 'cells' list or 'nbformat': 4)",
                where=where,
                field=fld,
                value=self.file,
            )
        if not any(isinstance(c, dict) and c.get("cell_type") == "code" for c in cells):
            raise ConfigError(
                "the notebook has no code cell", where=where, field=fld, value=self.file
            )
        import nbformat  # papermill's own reader: what it rejects would fail every job

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. cell ids missing: papermill adds them
                nbformat.reads(self.source, as_version=4)  # type: ignore[no-untyped-call]
        except nbformat.ValidationError as e:
            raise ConfigError(
                f"not a valid notebook: {e.message}", where=where, field=fld, value=self.file
            ) from None

    def render(self, params: Mapping[str, Any]) -> str:
        return self.source  # papermill injects the parameters when it runs the job

    def command(self, script: Path) -> list[str]:
        argv = [sys.executable, str(NOTEBOOK_RUNNER), str(script)]
        return [*argv, "--kernel", self.kernel] if self.kernel else argv


#: The program a notebook job runs (a file, so a spawned Python records its own exit).
NOTEBOOK_RUNNER = Path(__file__).parents[1] / "conductors" / "notebook_job.py"

Recipe = PythonRecipe | BashRecipe | NotebookRecipe
