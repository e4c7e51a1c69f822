"""Workflow files (YAML): patterns, recipes and runner settings, with every problem located."""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .config import RunnerConfig
from .exceptions import ConfigError, WorkflowFileError
from .patterns import LISTENER_FIELDS, FilePattern, HttpPattern, NetworkPattern, Pattern
from .recipes import BashRecipe, PythonRecipe, Recipe
from .rules import Rule

__all__ = ["WorkflowSpec", "load_workflow"]

T = TypeVar("T")

_RECIPE_KINDS: dict[str, Callable[..., Recipe]] = {
    "python": PythonRecipe,
    "bash": BashRecipe,
}
_SUFFIX_KINDS = {".py": "python", ".sh": "bash", ".bash": "bash"}
_RECIPE_KEYS = {
    "kind",
    "script",
    "file",
    "parameters",
    "interpreter",
    "shell",
    "timeout",
    "preload",
    "fork",
}
_COMMON_KEYS = {
    "recipe",
    "variable",
    "parameters",
    "outputs",
    "sweep",
    "retries",
    "retry_backoff",
    "on_restart",
}
_FILE_PATTERN_KEYS = _COMMON_KEYS | {
    "glob",
    "changes",
    "retroactive",
    "settle",
    "min_age",
    "sentinel",
    "coalesce",
}
_NETWORK_PATTERN_KEYS = _COMMON_KEYS | {"port", *LISTENER_FIELDS}
_HTTP_PATTERN_KEYS = {f.name for f in fields(HttpPattern)} - {"name"}
_TLS_FILES = ("tls_cert", "tls_key", "tls_client_ca")
_RUNNER_KEYS = {f.name for f in fields(RunnerConfig)}
_TOP_KEYS = {"runner", "recipes", "patterns"}


@dataclass(frozen=True, slots=True)
class WorkflowSpec:
    """What a workflow file describes; ``Runner.from_file`` builds a runner from it."""

    path: Path
    config: RunnerConfig
    patterns: list[Pattern] = field(default_factory=list)
    recipes: list[Recipe] = field(default_factory=list)


class _Map(dict[Any, Any]):
    """A YAML mapping that remembers the line of each key."""

    line: int = 0
    lines: dict[Any, int]


class _Loader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[int, str]] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        out = _Map()
        out.line = node.start_mark.line + 1
        out.lines = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    problem="a key must be a plain value, not a list or mapping",
                    problem_mark=key_node.start_mark,
                ) from None
            if key in out:
                self.duplicates.append((key_node.start_mark.line + 1, str(key)))
            out[key] = self.construct_object(value_node, deep=True)
            out.lines[key] = key_node.start_mark.line + 1
        return out


_Loader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _Loader.construct_mapping,
)


class _Problems:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: list[tuple[int, str]] = []

    def add(self, line: int, where: str, message: str) -> None:
        self.items.append((line, f"{self.path}:{line}: {where}: {message}"))

    def sorted(self) -> list[str]:
        return [msg for _, msg in sorted(self.items, key=lambda t: t[0])]


def load_workflow(path: str | os.PathLike[str]) -> WorkflowSpec:
    """Read and check a workflow file; WorkflowFileError lists every problem found."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WorkflowFileError(str(path), ["the workflow file does not exist"]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise WorkflowFileError(str(path), [f"cannot read the workflow file: {e}"]) from None
    loader = _Loader(text)
    try:
        doc = loader.get_single_data()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = str(getattr(e, "problem", None) or e)
        if "alphabetic or numeric character" in problem:  # *.txt read as a YAML alias
            problem += ' (a value starting with * or & must be quoted, e.g. glob: "*.txt")'
        raise WorkflowFileError(str(path), [f"{path}{line}: not valid YAML: {problem}"]) from None
    finally:
        loader.dispose()
    problems = _Problems(path)
    for dup_line, dup_key in loader.duplicates:
        problems.add(dup_line, dup_key, "this key appears more than once")
    if not isinstance(doc, _Map):
        problems.add(
            1, "workflow", "expected a mapping with 'patterns', 'recipes' and optionally 'runner'"
        )
        raise WorkflowFileError(str(path), problems.sorted())
    _unknown(doc, _TOP_KEYS, "workflow", problems)
    folder = path.parent
    config = _runner(doc.get("runner"), doc.lines.get("runner", 1), folder, problems)
    recipes: list[Recipe] = _section(
        doc, "recipes", problems, lambda n, m: _recipe(n, m, folder, problems)
    )
    patterns: list[Pattern] = _section(
        doc, "patterns", problems, lambda n, m: _pattern(n, m, folder, problems)
    )
    known = {r.name for r in recipes}
    raw_recipes = doc.get("recipes")
    named = set(raw_recipes) if isinstance(raw_recipes, _Map) else set()  # even broken ones
    raw_patterns = doc.get("patterns")
    for p in patterns:
        if p.recipe not in named and isinstance(raw_patterns, _Map):
            entry = raw_patterns[p.name]
            problems.add(
                entry.lines.get("recipe", entry.line),
                f"patterns.{p.name}.recipe",
                f"no recipe named {p.recipe!r}{_suggest(p.recipe, known)}",
            )
    by_name = {r.name: r for r in recipes}
    for p in patterns:  # what only the pair can tell (a Bash recipe and a shell name...)
        if p.recipe in by_name and isinstance(raw_patterns, _Map):
            try:
                Rule(pattern=p, recipe=by_name[p.recipe])
            except ConfigError as e:
                entry = raw_patterns[p.name]
                problems.add(entry.line, f"patterns.{p.name}", e.message)
    if not patterns and not problems.items:
        problems.add(doc.line, "patterns", "the workflow has no patterns, so nothing would run")
    if problems.items or config is None:
        raise WorkflowFileError(str(path), problems.sorted())
    return WorkflowSpec(path=path, config=config, patterns=patterns, recipes=recipes)


def _section(
    doc: _Map, key: str, problems: _Problems, build: Callable[[str, _Map], T | None]
) -> list[T]:
    raw = doc.get(key)
    if raw is None:
        return []
    if not isinstance(raw, _Map):
        problems.add(doc.lines.get(key, 1), key, "expected a mapping of names to entries")
        return []
    out: list[T] = []
    for name, entry in raw.items():
        line = raw.lines[name]
        if not isinstance(entry, _Map):
            problems.add(line, f"{key}.{name}", "expected a mapping of settings")
            continue
        try:
            item = build(str(name), entry)
        except ConfigError as e:
            fld = e.field.split(".")[0].split("[")[0]
            problems.add(
                entry.lines.get(fld, line),
                f"{key}.{name}" + (f".{e.field}" if e.field else ""),
                e.message,
            )
            continue
        if item is not None:
            out.append(item)
    return out


def _runner(raw: Any, line: int, folder: Path, problems: _Problems) -> RunnerConfig | None:
    if raw is None:
        raw = _Map()
        raw.lines = {}
    if not isinstance(raw, _Map):
        problems.add(line, "runner", "expected a mapping of settings")
        return None
    _unknown(raw, _RUNNER_KEYS, "runner", problems)
    kwargs = {k: v for k, v in raw.items() if k in _RUNNER_KEYS}
    for key in ("base_dir", "jobs_dir", "spool_dir"):
        if isinstance(kwargs.get(key), str):
            kwargs[key] = folder / kwargs[key]
    kwargs.setdefault("base_dir", folder)
    kwargs.setdefault("jobs_dir", folder / ".meow" / "jobs")
    try:
        return RunnerConfig(**kwargs)
    except ConfigError as e:
        problems.add(raw.lines.get(e.field, line), f"runner.{e.field}", e.message)
        return None


def _recipe(name: str, raw: _Map, folder: Path, problems: _Problems) -> Recipe | None:
    _unknown(raw, _RECIPE_KEYS, f"recipes.{name}", problems)
    kind = raw.get("kind")
    file = raw.get("file")
    if kind is None and isinstance(file, str):
        kind = _SUFFIX_KINDS.get(Path(file).suffix)
    if kind not in _RECIPE_KINDS:
        raise ConfigError(
            f"unknown kind {kind!r}: choose from {', '.join(_RECIPE_KINDS)}"
            if kind is not None
            else "say which kind of recipe: kind: python or kind: bash",
            field="kind",
            value=kind,
        )
    cls = _RECIPE_KINDS[kind]
    kwargs = {k: v for k, v in raw.items() if k in _RECIPE_KEYS and k != "kind"}
    if isinstance(file, str):
        kwargs["file"] = (folder / file).absolute()  # errors then say where it looked
    for key, owner in (
        ("interpreter", "python"),
        ("preload", "python"),
        ("fork", "python"),
        ("shell", "bash"),
    ):
        if key in kwargs and kind != owner:
            raise ConfigError(f"only {owner} recipes take {key!r}", field=key, value=kwargs[key])
    return _strip_where(lambda: cls(name=name, **kwargs))


def _pattern(name: str, raw: _Map, folder: Path, problems: _Problems) -> Pattern | None:
    http = "route" in raw
    if not http and ("glob" in raw) == ("port" in raw):
        raise ConfigError(
            "a pattern needs 'glob' (files under the watched folder), 'port' (data received "
            "over TCP) or 'route' and 'port' (HTTP requests)",
            field="glob",
            value=None,
        )
    if http and "glob" in raw:
        raise ConfigError(
            "a pattern has either 'glob' (files) or 'route' (HTTP requests), not both",
            field="route",
            value=raw.get("route"),
        )
    network = "port" in raw and not http
    keys = _HTTP_PATTERN_KEYS if http else _NETWORK_PATTERN_KEYS if network else _FILE_PATTERN_KEYS
    _unknown(raw, keys, f"patterns.{name}", problems)
    if "recipe" not in raw:
        raise ConfigError(
            "a pattern needs 'recipe' (the name of the recipe it runs)", field="recipe", value=None
        )
    kwargs = {k: v for k, v in raw.items() if k in keys}
    if http:
        if "port" not in kwargs:
            raise ConfigError(
                "an HTTP pattern needs 'port' (0: any free port)", field="port", value=None
            )
        for key in ("token_file", "hmac_secret_file", *_TLS_FILES):
            if isinstance(kwargs.get(key), str):
                kwargs[key] = str(folder / kwargs[key])
        for key in ("methods", "headers"):
            if isinstance(kwargs.get(key), list):
                kwargs[key] = tuple(kwargs[key])
        return _strip_where(lambda: HttpPattern(name=name, **kwargs))
    if network:
        for key in _TLS_FILES:
            if isinstance(kwargs.get(key), str):
                kwargs[key] = str(folder / kwargs[key])
        return _strip_where(lambda: NetworkPattern(name=name, **kwargs))
    return _strip_where(lambda: FilePattern(name=name, **kwargs))


def _strip_where(build: Callable[[], T]) -> T:
    """Errors from the model say 'pattern x'; the file location says that already."""
    try:
        return build()
    except ConfigError as e:
        raise ConfigError(e.message, field=e.field, value=e.value) from None
    except TypeError as e:  # a wrong type the model did not anticipate
        raise ConfigError(str(e), value=None) from None


def _unknown(raw: _Map, allowed: set[str], where: str, problems: _Problems) -> None:
    for key in raw:
        if key not in allowed:
            problems.add(
                raw.lines.get(key, raw.line),
                f"{where}.{key}",
                f"unknown setting{_suggest(str(key), allowed)}; allowed: "
                f"{', '.join(sorted(allowed))}",
            )


def _suggest(word: str, choices: Mapping[str, Any] | set[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
