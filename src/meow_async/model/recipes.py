"""Recipes: what a rule runs. Parameters reach the script as data, never as pasted code."""

from __future__ import annotations

import ast
import fnmatch
import importlib.util
import json
import re
import shlex
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..exceptions import ConfigError
from .checks import (
    check_count,
    check_flag,
    check_name,
    check_params,
    check_resources,
    check_seconds,
    check_text,
)

__all__ = ["BashRecipe", "JobEnv", "NotebookRecipe", "PythonRecipe", "Recipe"]

_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BEGIN = "# --- parameters set by meow_async for this job (also in $MEOW_PARAMS) ---"
_END = "# --- end of parameters ---"


_ENV_NAME = re.compile(r"[A-Za-z_*?][A-Za-z0-9_*?]*")


@dataclass(frozen=True, slots=True, kw_only=True)
class JobEnv:
    """What of the runner's environment a job's process gets (``env:``): all of it
    (``inherit``, the default), or only the variables ``keep`` names (``*`` and ``?`` match
    any characters: ``LC_*``); ``set`` adds fixed values. The job's ``MEOW_*`` variables are
    always there. ``env: [NAME, ...]`` is ``{inherit: false, keep: [NAME, ...]}``."""

    #: Whether the job gets the runner's whole environment.
    inherit: bool = True
    #: With ``inherit: false``: the variables it gets (names, or patterns with ``*``, ``?``).
    keep: Sequence[str] = ()
    #: Variables set for the job, e.g. ``{OMP_NUM_THREADS: 1}`` (recorded in job.json).
    set: Mapping[str, str | int | float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = "env"
        check_flag(where, "inherit", self.inherit)
        keep: object = self.keep
        if isinstance(keep, str) or not isinstance(keep, Sequence):
            raise ConfigError(
                "expected a list of variable names, e.g. [PATH, HOME, LC_*]",
                where=where,
                field="keep",
                value=keep,
            )
        for name in keep:
            if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
                raise ConfigError(
                    "not a variable name (letters, digits, '_'; '*' and '?' match any)",
                    where=where,
                    field="keep",
                    value=name,
                )
        if keep and self.inherit:
            raise ConfigError(
                "keep names what a job gets without the rest: it needs inherit: false",
                where=where,
                field="keep",
                value=list(keep),
            )
        object.__setattr__(self, "keep", tuple(keep))
        values: object = self.set
        if not isinstance(values, Mapping):
            raise ConfigError(
                "expected a mapping of variable names to values",
                where=where,
                field="set",
                value=values,
            )
        out = {}
        for name, value in values.items():
            if not isinstance(name, str) or not _VARIABLE_NAME.fullmatch(name):
                raise ConfigError("not a variable name", where=where, field="set", value=name)
            if name.startswith("MEOW_"):
                raise ConfigError(
                    "MEOW_* variables are the job's own: they cannot be set",
                    where=where,
                    field="set",
                    value=name,
                )
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise ConfigError(
                    "expected a string or a number",
                    where=where,
                    field=f"set.{name}",
                    value=value,
                )
            out[name] = str(value)
        object.__setattr__(self, "set", out)

    def keeps(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, k) for k in self.keep)

    @classmethod
    def of(cls, value: object) -> JobEnv | None:
        """``env:`` as given: None (inherit everything), a list of names, or a mapping."""
        if value is None or isinstance(value, JobEnv):
            return value
        if isinstance(value, Sequence) and not isinstance(value, str):
            return cls(inherit=False, keep=value)
        if isinstance(value, Mapping):
            unknown = set(value) - {"inherit", "keep", "set"}
            if unknown:
                raise ConfigError(
                    f"unknown key {sorted(map(str, unknown))[0]!r}: env takes inherit, keep "
                    "and set",
                    where="env",
                    value=dict(value),
                )
            return cls(**value)
        raise ConfigError(
            "expected a list of variable names, or {inherit: false, keep: [...], set: {...}}",
            where="env",
            value=value,
        )


def environment(
    base: Mapping[str, str], own: Mapping[str, str], keep: Sequence[str] | None
) -> dict[str, str]:
    """A job's environment: ``base`` (the runner's, or a worker's), all of it or the names
    ``keep`` matches (None: all), then the job's own variables."""
    if keep is None:
        return {**base, **own}
    kept = {k: v for k, v in base.items() if any(fnmatch.fnmatchcase(k, p) for p in keep)}
    return {**kept, **own}


@dataclass(frozen=True, slots=True, kw_only=True)
class _RecipeBase:
    """A script given inline (``script``) or as a file read once when the recipe is made."""

    kind: ClassVar[str]
    suffix: ClassVar[str]
    name: str
    script: str | None = None
    file: str | Path | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    #: Seconds a job may run before it is stopped (SIGTERM, then SIGKILL) and recorded as
    #: timed out; None: no limit.
    timeout: float | None = None
    #: Where its jobs run: ``local`` or ``dask``; None: the runner's ``conductor``.
    conductor: str | None = None
    #: Dask worker resources each job needs, e.g. ``{"GPU": 1, "MEM": 4e9}`` (Dask only).
    resources: Mapping[str, float] = field(default_factory=dict)
    #: What of the runner's environment a job gets: all of it (the default), a list of the
    #: names it gets (``[PATH, HOME, LC_*]``), or ``{inherit, keep, set}``; see JobEnv.
    env: JobEnv | Sequence[str] | Mapping[str, Any] | None = None
    #: Bytes of each output stream (stdout.txt, stderr.txt) a job keeps, its first and its
    #: last half, with a line saying how much was cut; None: the runner's ``max_output``.
    max_output: int | None = None
    source: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_name("recipe", "name", self.name)
        where = f"recipe {self.name!r}"
        object.__setattr__(self, "parameters", check_params(where, "parameters", self.parameters))
        if self.timeout is not None:
            check_seconds(where, "timeout", self.timeout, above_zero=True)
        if self.max_output is not None:
            check_count(where, "max_output", self.max_output)
        if self.conductor not in (None, "local", "dask"):
            raise ConfigError(
                "expected local or dask", where=where, field="conductor", value=self.conductor
            )
        object.__setattr__(self, "resources", check_resources(where, "resources", self.resources))
        try:
            object.__setattr__(self, "env", JobEnv.of(self.env))
        except ConfigError as e:
            sub = f"env.{e.field}" if e.field else "env"
            raise ConfigError(e.message, where=where, field=sub, value=e.value) from None
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
        script: object = self.script
        if script is not None:
            if not isinstance(script, str) or not script.strip():
                raise ConfigError("the script is empty", where=where, field="script", value=script)
            source = script
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

    def _check_source(self, where: str) -> None:
        """Catch what can be caught before any job runs."""

    def render(self, params: Mapping[str, Any]) -> str:
        """The job's script: the recipe with ``params`` assigned as literals near its top."""
        raise NotImplementedError

    def command(self, script: Path) -> list[str]:
        """The argv that runs a rendered script."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True, kw_only=True)
class PythonRecipe(_RecipeBase):
    """A Python script, run with ``interpreter`` (default: the runner's own Python).

    With the runner's own Python, jobs start as forks of a warm interpreter that has imported
    ``preload`` already (see https://meow-async.github.io/meow_async/concepts/#warm-starts);
    ``fork=False`` spawns each job as a new interpreter, as does any ``interpreter`` given.
    """

    kind: ClassVar[str] = "python"
    suffix: ClassVar[str] = ".py"
    interpreter: str | None = None
    #: Modules the warm interpreter imports before forking jobs (e.g. ``numpy``).
    preload: Sequence[str] = ()
    fork: bool = True

    @property
    def warm(self) -> bool:
        """Jobs start as forks of the fork server, not as new interpreters. Not with a
        restricted ``env``: a fork carries the runner's whole environment in its memory."""
        env = self.env
        inherits = env is None or (isinstance(env, JobEnv) and env.inherit)
        return self.fork and self.interpreter is None and inherits

    def _check_source(self, where: str) -> None:
        self._check_start(where)
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

    def _check_start(self, where: str) -> None:
        check_flag(where, "fork", self.fork)
        check_text(
            where, "interpreter", self.interpreter, "give the interpreter as a program name or path"
        )
        preload = self.preload
        if isinstance(preload, str) or not all(isinstance(m, str) for m in preload):
            raise ConfigError(
                "give preload as a list of module names, e.g. [numpy, pandas]",
                where=where,
                field="preload",
                value=preload,
            )
        for module in preload:
            if not all(part.isidentifier() for part in module.split(".")):
                raise ConfigError(
                    f"{module!r} is not a module name", where=where, field="preload", value=module
                )
            top = module.split(".")[0]
            if importlib.util.find_spec(top) is None:  # finds it without importing it
                raise ConfigError(
                    f"cannot preload {module!r}: no module {top!r} in {sys.executable}",
                    where=where,
                    field="preload",
                    value=module,
                )
        object.__setattr__(self, "preload", tuple(preload))
        env = JobEnv.of(self.env)
        if preload and env is not None and not env.inherit:
            raise ConfigError(
                "preloading is for warm starts, and a job that does not inherit the runner's "
                "environment starts as a new interpreter (a fork would carry it in memory)",
                where=where,
                field="preload",
                value=list(preload),
            )

    _insert_at: int = field(init=False, default=0, repr=False, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class BashRecipe(_RecipeBase):
    """A Bash script; parameters become shell variables (lists and mappings as JSON text)."""

    kind: ClassVar[str] = "bash"
    suffix: ClassVar[str] = ".sh"
    shell: str = "bash"

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
#: Only the script's own shell writes: a subshell ($BASHPID differs from $$) is not the job.
_EXIT_TRAP = (
    'trap \'__meow=$?; [ "${BASHPID:-$$}" = "$$" ] && [ -n "${MEOW_PROCESS_LOG:-}" ] && '
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
    kernel: str | None = None

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
        check_text(where, "kernel", self.kernel, "give the kernel's name, e.g. python3")
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
