"""Recipes: what a rule runs. Parameters reach the script as data, never as pasted code."""

from __future__ import annotations

import ast
import fnmatch
import hashlib
import importlib.util
import json
import os
import re
import shlex
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from ..exceptions import ConfigError
from .caught import CATCHING
from .checks import check_name
from .settings import (
    ENV_NAME,
    check_settings,
    choice,
    count,
    custom,
    flag,
    optional,
    params,
    resources,
    seconds,
    text,
)

__all__ = ["BashRecipe", "JobEnv", "NotebookRecipe", "PythonRecipe", "Recipe"]

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


#: A name ``env.keep`` gives: a variable's, or a pattern of them (``*``, ``?``: ``LC_*``).
_ENV_PATTERN = re.compile(r"[A-Za-z_*?][A-Za-z0-9_*?]*")


def _keep(where: str, field: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigError(
            "expected a list of variable names, e.g. [PATH, HOME, LC_*]",
            where=where,
            field=field,
            value=value,
        )
    for name in value:
        if not isinstance(name, str) or not _ENV_PATTERN.fullmatch(name):
            raise ConfigError(
                "not a variable name (letters, digits, '_'; '*' and '?' match any)",
                where=where,
                field=field,
                value=name,
            )
    return tuple(value)


def _set(where: str, field: str, value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ConfigError(
            "expected a mapping of variable names to values", where=where, field=field, value=value
        )
    out = {}
    for name, v in value.items():
        if not isinstance(name, str) or not ENV_NAME.fullmatch(name):
            raise ConfigError("not a variable name", where=where, field=field, value=name)
        if name.startswith("MEOW_"):
            raise ConfigError(
                "MEOW_* variables are the job's own: they cannot be set",
                where=where,
                field=field,
                value=name,
            )
        if isinstance(v, bool) or not isinstance(v, str | int | float):
            raise ConfigError(
                "expected a string or a number", where=where, field=f"{field}.{name}", value=v
            )
        out[name] = str(v)
    return out


_KEEP_SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": {"type": "string", "pattern": f"^{_ENV_PATTERN.pattern}$"},
}


@dataclass(frozen=True, slots=True, kw_only=True)
class JobEnv:
    """What of the runner's environment a job's process gets (``env:``): all of it
    (``inherit``, the default), or only the variables ``keep`` names (``*`` and ``?`` match
    any characters: ``LC_*``); ``set`` adds fixed values. The job's ``MEOW_*`` variables are
    always there. ``env: [NAME, ...]`` is ``{inherit: false, keep: [NAME, ...]}``."""

    #: Whether the job gets the runner's whole environment.
    inherit: bool = field(default=True, metadata=flag())
    #: With ``inherit: false``: the variables it gets (names, or patterns with ``*``, ``?``).
    keep: Sequence[str] = field(default=(), metadata=custom(_KEEP_SCHEMA, _keep))
    #: Variables set for the job, e.g. ``{OMP_NUM_THREADS: 1}`` (recorded in job.json).
    set: Mapping[str, str | int | float] = field(
        default_factory=dict,
        metadata=custom(
            {
                "type": "object",
                "propertyNames": {"pattern": f"^{ENV_NAME.pattern}$", "not": {"pattern": "^MEOW_"}},
                "additionalProperties": {"type": ["string", "number"]},
            },
            _set,
        ),
    )

    #: ``keep`` needs ``inherit: false``.
    extra_schema: ClassVar[dict[str, Any]] = {
        "if": {"required": ["keep"], "properties": {"keep": {"minItems": 1}}},
        "then": {"required": ["inherit"], "properties": {"inherit": {"const": False}}},
    }

    def __post_init__(self) -> None:
        check_settings(self, "env")
        if self.keep and self.inherit:
            raise ConfigError(
                "keep names what a job gets without the rest: it needs inherit: false",
                where="env",
                field="keep",
                value=list(self.keep),
            )

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


def _env(where: str, field: str, value: object) -> JobEnv | None:
    try:
        return JobEnv.of(value)
    except ConfigError as e:
        sub = f"{field}.{e.field}" if e.field else field
        raise ConfigError(e.message, where=where, field=sub, value=e.value) from None


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
    #: What of the runner's environment a job gets: all of it (the default), a list of the
    #: names it gets (``[PATH, HOME, LC_*]``), or ``{inherit, keep, set}``; see JobEnv.
    env: JobEnv | Sequence[str] | Mapping[str, Any] | None = field(
        default=None,
        metadata=optional(
            custom({"anyOf": [{"$ref": "#/$defs/JobEnv"}, _KEEP_SCHEMA]}, _env, uses=(JobEnv,))
        ),
    )
    #: Bytes of each output stream (stdout.txt, stderr.txt) a job keeps, its first and its
    #: last half, with a line saying how much was cut; None: the runner's ``max_output``.
    max_output: int | None = field(default=None, metadata=optional(count()))
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
    #: Modules the warm interpreter imports before forking jobs (e.g. ``numpy``). Unset
    #: (None), it also learns what the jobs import; ``[]``: it preloads nothing for this
    #: recipe and learns nothing from its jobs.
    preload: Sequence[str] | None = field(
        default=None,
        metadata=optional(
            custom(
                {"type": "array", "items": {"type": "string", "pattern": r"^\w+(\.\w+)*$"}},
                _preload,
            )
        ),
    )
    #: false: spawn each job as a new interpreter instead of forking the warm one.
    fork: bool = field(default=True, metadata=flag())

    @property
    def warm(self) -> bool:
        """Jobs start as forks of the fork server, not as new interpreters. Not with a
        restricted ``env``: a fork carries the runner's whole environment in its memory."""
        env = self.env
        inherits = env is None or (isinstance(env, JobEnv) and env.inherit)
        return self.fork and self.interpreter is None and inherits

    @property
    def learns(self) -> bool:
        """Its jobs report what they import, for the fork server to preload (see
        conductors/learned_preload.py): unless ``preload`` is given, even as ``[]``."""
        return self.preload is None and self.warm

    def _check_source(self, where: str) -> None:
        env = JobEnv.of(self.env)
        if self.preload and env is not None and not env.inherit:
            raise ConfigError(
                "preloading is for warm starts, and a job that does not inherit the runner's "
                "environment starts as a new interpreter (a fork would carry it in memory)",
                where=where,
                field="preload",
                value=list(self.preload),
            )
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
            with CATCHING, warnings.catch_warnings():
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
