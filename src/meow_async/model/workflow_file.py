"""Workflow files (YAML): patterns, recipes and runner settings, with every problem located.

Every problem is found in one pass: each entry is built with the model's own checks, and after
each one that fails, the failing setting is set aside and the entry is built again (see
``_attempt``), so the file needs no second copy of the checks.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from ..exceptions import ConfigError, WorkflowFileError, WorkflowProblem
from .config import HttpEndpoint, RunnerConfig
from .notify import Email
from .patterns import FilePattern, HttpPattern, NetworkPattern, Pattern, TimePattern
from .recipes import BashRecipe, NotebookRecipe, PythonRecipe, Recipe
from .rules import Rule
from .secrets import REDACTED
from .settings import keys_of, kind_of
from .templates import unknown_keywords

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["WorkflowSpec", "load_workflow"]

T = TypeVar("T")
D = TypeVar("D", bound="DataclassInstance")

_RECIPE_KINDS: dict[str, type[Recipe]] = {
    "python": PythonRecipe,
    "bash": BashRecipe,
    "notebook": NotebookRecipe,
}
_SUFFIX_KINDS = {".py": "python", ".sh": "bash", ".bash": "bash", ".ipynb": "notebook"}
#: Every key of each entry is a field of the class that reads it (settings.py says how one is
#: added); a recipe also takes ``kind``, which picks its class.
_RECIPE_KEYS = {"kind"}.union(*(keys_of(c) for c in _RECIPE_KINDS.values()))
_FILE_PATTERN_KEYS = set(keys_of(FilePattern))
_NETWORK_PATTERN_KEYS = set(keys_of(NetworkPattern))
_HTTP_PATTERN_KEYS = set(keys_of(HttpPattern))
_TIME_PATTERN_KEYS = set(keys_of(TimePattern))
_RUNNER_KEYS = set(keys_of(RunnerConfig))
_TOP_KEYS = {"runner", "recipes", "patterns"}
#: Settings that name a file, relative to the workflow file's folder.
_PATHS: dict[type[Any], tuple[str, ...]] = {
    RunnerConfig: ("base_dir", "jobs_dir", "spool_dir"),
    HttpEndpoint: ("token_file",),
    NetworkPattern: ("tls_cert", "tls_key", "tls_client_ca"),
    HttpPattern: ("token_file", "hmac_secret_file", "tls_cert", "tls_key", "tls_client_ca"),
    Email: ("tls_ca",),
}


#: A pattern's kind is that of the first of these keys it has (none: a file pattern, missing
#: its glob); the schema (schema.py) is made from the same table.
_PATTERN_KINDS: tuple[tuple[str, type[Pattern], set[str]], ...] = (
    ("route", HttpPattern, _HTTP_PATTERN_KEYS),
    ("port", NetworkPattern, _NETWORK_PATTERN_KEYS),
    ("cron", TimePattern, _TIME_PATTERN_KEYS),
    ("every", TimePattern, _TIME_PATTERN_KEYS),
    ("glob", FilePattern, _FILE_PATTERN_KEYS),
)
_ANY_PATTERN_KEYS = set().union(*(keys for _, _, keys in _PATTERN_KINDS))
_TRIGGERS = {
    "glob": "files",
    "port": "data received over TCP",
    "route": "HTTP requests",
    "cron": "a clock",
    "every": "a clock",
}
#: Settings that pass the model's checks, put in for one that is missing or wrong and has no
#: default, so that the entry's other settings are still checked (a recipe whose file cannot be
#: read is checked on as if it had a script).
_STAND_INS: dict[str, dict[str, Any]] = {
    "name": {"name": "x"},
    "recipe": {"recipe": "x"},
    "glob": {"glob": "*"},
    "port": {"port": 0},
    "route": {"route": "/"},
    "file": {"file": None, "script": "pass"},
}


@dataclass(frozen=True, slots=True)
class WorkflowSpec:
    """What a workflow file describes; ``Runner.from_file`` builds a runner from it."""

    path: Path
    config: RunnerConfig
    patterns: list[Pattern] = field(default_factory=list)
    recipes: list[Recipe] = field(default_factory=list)
    #: What may be a mistake but is allowed (an unknown ``{TEMPLATE}`` word), located.
    warnings: list[WorkflowProblem] = field(default_factory=list)
    #: A content hash of the file and of the recipe files it names: what a job records as
    #: its ``workflow_version``, and what tells a reload whether anything changed.
    version: str = ""

    @property
    def files(self) -> list[Path]:
        """The workflow file and the recipe files it names (``file:``): editing any of them
        is editing the workflow."""
        return [self.path, *(Path(r.file) for r in self.recipes if r.file is not None)]


_Mark = tuple[int, int]  # line and column, from 1


class _Map(dict[Any, Any]):
    """A YAML mapping that remembers where it, each of its keys and each value start."""

    mark: _Mark = (1, 1)
    keys_at: dict[Any, _Mark]
    values_at: dict[Any, _Mark]


class _Seq(list[Any]):
    """A YAML sequence that remembers where each item starts."""

    items_at: list[_Mark]


def _at(node: yaml.Node) -> _Mark:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _Loader(yaml.SafeLoader):
    """YAML's safe loader, keeping where things are and noting keys given twice (which YAML
    itself lets the last one win)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[_Mark, str, Any]] = []
        self._path: list[str] = []  # where construction is, for naming duplicates

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        out = _Map()
        out.mark = _at(node)
        out.keys_at = {}
        out.values_at = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    problem="a key must be a plain value, not a list or mapping",
                    problem_mark=key_node.start_mark,
                ) from None
            self._path.append(f".{key}")
            try:
                value = self.construct_object(value_node, deep=True)
            finally:
                self._path.pop()
            if key in out:
                where = "".join([*self._path, f".{key}"]).removeprefix(".")
                self.duplicates.append((_at(key_node), where, value))
            out[key] = value
            out.keys_at[key] = _at(key_node)
            out.values_at[key] = _at(value_node)
        return out

    def construct_seq(self, node: yaml.SequenceNode) -> list[Any]:
        out = _Seq()
        out.items_at = []
        for i, child in enumerate(node.value):
            self._path.append(f"[{i}]")
            try:
                out.append(self.construct_object(child, deep=True))
            finally:
                self._path.pop()
            out.items_at.append(_at(child))
        return out


_Loader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _Loader.construct_mapping,
)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _Loader.construct_seq)


def _value_at(node: _Map, key: Any) -> _Mark:
    """Where a setting's value starts; its key's place when the value is a block below it."""
    key_at, value_at = node.keys_at[key], node.values_at[key]
    return value_at if value_at[0] == key_at[0] else key_at


def _find(node: Any, path: str) -> tuple[_Mark | None, Any, bool]:
    """Follow a model error's field (``sweep.t.jump``, ``parameters.x[0]``) into the file: where
    the deepest part found is, its value, and whether the whole path was found."""
    mark: _Mark | None = None
    value: Any = None
    rest = path
    while rest:
        if isinstance(node, _Map):
            keys = [
                k
                for k in node
                if isinstance(k, str) and (rest == k or rest.startswith((f"{k}.", f"{k}[")))
            ]
            if not keys:
                return mark, value, False
            key = max(keys, key=len)  # parameter names may hold dots: the longest that fits
            mark, value = _value_at(node, key), node[key]
            rest = rest[len(key) :].removeprefix(".")
        elif isinstance(node, _Seq) and (m := re.match(r"\[(\d+)\]\.?", rest)):
            i = int(m[1])
            if i >= len(node):
                return mark, value, False
            mark, value = node.items_at[i], node[i]
            rest = rest[m.end() :]
        else:
            return mark, value, False
        node = value
    return mark, value, True


class _Problems:
    """Every problem found, with its place; put in file order at the end."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.items: list[WorkflowProblem] = []
        self.warnings: list[WorkflowProblem] = []

    def add(self, mark: _Mark, where: str, message: str, *value: Any) -> None:
        """Note a problem; ``value``, when given, is what the file says there."""
        self.items.append(
            WorkflowProblem(
                self.path,
                mark[0],
                mark[1],
                where,
                message,
                value[0] if value else None,
                bool(value),
            )
        )

    def warn(self, mark: _Mark, where: str, message: str, value: Any) -> None:
        self.warnings.append(
            WorkflowProblem(self.path, mark[0], mark[1], where, message, value, True)
        )

    def setting(self, node: _Map, key: str, entry: _Mark, where: str, message: str) -> None:
        """A problem with one setting: at its value when it is given, else at the entry."""
        if key in node:
            self.add(_value_at(node, key), f"{where}.{key}", message, node[key])
        else:
            self.add(entry, f"{where}.{key}", message)

    def model(self, e: ConfigError, node: _Map, entry: _Mark, where: str) -> None:
        """A model's ConfigError, at the setting it names, as deep as the file has it; the value
        is the one the model names (one item of a list), else the file's."""
        field = "" if e.field == "name" else e.field  # the entry's name: its key
        mark, raw, found = _find(node, field)
        if isinstance(raw, _Seq) and e.value is not None and e.value in raw:
            mark = raw.items_at[raw.index(e.value)]  # the one item of the list at fault
        full = f"{where}.{field}" if field else where
        if e.value is not None:
            self.add(mark or entry, full, e.message, e.value)
        elif found and field:
            self.add(mark or entry, full, e.message, raw)
        else:
            self.add(mark or entry, full, e.message)

    def error(self) -> WorkflowFileError:
        """What load_workflow raises: every problem, in file order."""
        ordered = sorted(self.items, key=lambda p: (p.line or 0, p.column or 0))
        error = WorkflowFileError.from_records(self.path, ordered)
        error.warnings = self.warnings
        return error


def load_workflow(path: str | os.PathLike[str]) -> WorkflowSpec:
    """Read and check a workflow file; WorkflowFileError lists every problem found."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WorkflowFileError(str(path), ["the workflow file does not exist"]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise WorkflowFileError(str(path), [f"cannot read the workflow file: {e}"]) from None
    problems = _Problems(path)
    try:
        loader = _Loader(text)  # checks the characters first
        try:
            doc = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        at, problem = _yaml_error(text, e)
        problems.add(at, "", f"not valid YAML: {problem}")
        raise problems.error() from None
    for dup_at, dup_where, dup_value in loader.duplicates:
        problems.add(dup_at, dup_where, "this key appears more than once", dup_value)
    if not isinstance(doc, _Map):
        problems.add(
            (1, 1),
            "workflow",
            "expected a mapping with 'patterns', 'recipes' and optionally 'runner'",
            doc,
        )
        raise problems.error()
    _unknown(doc, _TOP_KEYS, "workflow", problems)
    folder = path.parent
    config = _runner(doc, folder, problems)
    raw_recipes = doc.get("recipes")
    named = set(raw_recipes) if isinstance(raw_recipes, _Map) else set()  # even broken ones
    recipes: list[tuple[Recipe, _Mark]] = _section(
        doc, "recipes", problems, lambda n, m, at: _recipe(n, m, at, folder, problems)
    )
    patterns: list[tuple[Pattern, _Mark]] = _section(
        doc, "patterns", problems, lambda n, m, at: _pattern(n, m, at, folder, named, problems)
    )
    by_name = {r.name: r for r, _ in recipes}
    for p, at in patterns:  # what only the pair can tell (a Bash recipe and a shell name...)
        if p.recipe in by_name:
            try:
                Rule(pattern=p, recipe=by_name[p.recipe])
            except ConfigError as e:
                problems.add(at, f"patterns.{p.name}", e.message)
    if not patterns and not problems.items:
        where = doc.keys_at.get("patterns", doc.mark)
        problems.add(where, "patterns", "the workflow has no patterns, so nothing would run")
    if problems.items or config is None:
        raise problems.error()
    h = hashlib.sha256(text.encode())
    for r, _ in sorted(recipes, key=lambda ra: ra[0].name):
        h.update(f"\0{r.name}\0{r.digest}".encode())  # a file: recipe's text is in its digest
    return WorkflowSpec(
        path=path,
        config=config,
        patterns=[p for p, _ in patterns],
        recipes=[r for r, _ in recipes],
        warnings=sorted(problems.warnings, key=lambda p: (p.line or 0, p.column or 0)),
        version=h.hexdigest()[:12],
    )


def _yaml_error(text: str, e: yaml.YAMLError) -> tuple[_Mark, str]:
    """Where PyYAML stopped, and why, in the user's terms."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    context = getattr(e, "context", None) or ""
    opened = getattr(e, "context_mark", None)
    if (
        opened is not None
        and "quoted scalar" in context
        and "end of stream" in str(getattr(e, "problem", ""))
    ):
        # An unclosed quote runs to the end of the file: the place to fix is where it opens.
        return (opened.line + 1, opened.column + 1), (
            "a quoted value is not closed (its closing quote is missing)"
        )
    if mark is not None:
        at = (mark.line + 1, mark.column + 1)
    elif isinstance(e, yaml.reader.ReaderError):  # a character YAML does not allow
        before = text[: e.position]
        at = (before.count("\n") + 1, len(before) - before.rfind("\n"))
    else:
        at = (1, 1)
    problem = str(getattr(e, "problem", None) or e).splitlines()[0]
    if "alphabetic or numeric character" in problem:  # *.txt read as a YAML alias
        problem += ' (a value starting with * or & must be quoted, e.g. glob: "*.txt")'
    return at, problem


def _section(
    doc: _Map,
    key: str,
    problems: _Problems,
    build: Callable[[str, _Map, _Mark], T | None],
) -> list[tuple[T, _Mark]]:
    """Build each entry of ``recipes`` or ``patterns``; each comes with its name's place."""
    raw = doc.get(key)
    if raw is None:
        return []
    if not isinstance(raw, _Map):
        problems.add(_value_at(doc, key), key, "expected a mapping of names to entries", raw)
        return []
    out: list[tuple[T, _Mark]] = []
    for name, entry in raw.items():
        if not isinstance(entry, _Map):
            problems.add(
                _value_at(raw, name), f"{key}.{name}", "expected a mapping of settings", entry
            )
            continue
        item = build(str(name), entry, raw.keys_at[name])
        if item is not None:
            out.append((item, raw.keys_at[name]))
    return out


def _attempt(
    cls: type[D], kwargs: dict[str, Any], given: Collection[str], aside: Collection[str] = ()
) -> tuple[D | None, list[ConfigError]]:
    """Make ``cls(**kwargs)``, finding every independent mistake, not only the first.

    After each ConfigError its setting is set aside (a stand-in, or else its default) and the
    object is made again. Once something was set aside, an error about a setting set aside or
    not given is taken for a consequence of that, and ends the search unreported.
    Returns the object (None if anything was wrong) and the errors, in the model's order.
    """
    defaults = {
        f.name for f in fields(cls) if f.default is not MISSING or f.default_factory is not MISSING
    }
    kwargs, aside = dict(kwargs), set(aside)
    errors: list[ConfigError] = []
    while True:
        try:
            made = cls(**kwargs)
        except ConfigError as e:
            error = e
        except TypeError as e:  # a wrong type the model did not anticipate
            error = ConfigError(str(e))
        else:
            return (None if errors else made), errors
        key = re.split(r"[.\[]", error.field, maxsplit=1)[0]
        if aside and (key in aside or key not in given):
            return None, errors
        errors.append(ConfigError(error.message, field=error.field, value=error.value))
        if key not in kwargs:  # a setting that was not given: nothing to set aside
            return None, errors
        if key in _STAND_INS:
            kwargs.update(_STAND_INS[key])
            aside.update(_STAND_INS[key])
        elif key in defaults:
            del kwargs[key]
            aside.add(key)
        else:
            return None, errors


def _runner(doc: _Map, folder: Path, problems: _Problems) -> RunnerConfig | None:
    raw = doc.get("runner")
    at = doc.keys_at.get("runner", (1, 1))
    if raw is None:
        raw = _Map()
        raw.keys_at, raw.values_at = {}, {}
    if not isinstance(raw, _Map):
        problems.add(_value_at(doc, "runner"), "runner", "expected a mapping of settings", raw)
        return None
    _unknown(raw, _RUNNER_KEYS, "runner", problems)
    kwargs = {k: v for k, v in raw.items() if k in _RUNNER_KEYS}
    _relative(RunnerConfig, kwargs, folder)
    given = set(raw) - _blocks(RunnerConfig, raw, kwargs, "runner", folder, problems)
    kwargs.setdefault("base_dir", folder)
    kwargs.setdefault("jobs_dir", folder / ".meow" / "jobs")
    config, errors = _attempt(RunnerConfig, kwargs, given=given)
    for e in errors:
        problems.model(e, raw, at, "runner")
    return config


def _relative(cls: type[Any], kwargs: dict[str, Any], folder: Path) -> None:
    """Paths in the file are relative to its folder: errors then say where they looked."""
    for key in _PATHS.get(cls, ()):
        if isinstance(kwargs.get(key), str):
            kwargs[key] = folder / kwargs[key]


def _blocks(
    cls: type[Any],
    raw: _Map,
    kwargs: dict[str, Any],
    where: str,
    folder: Path,
    problems: _Problems,
) -> set[str]:
    """Build the nested blocks of settings among ``kwargs`` (``notify``, ``runner.http``) key
    by key, so that every mistake inside one is reported; a block with problems is set aside
    (its key returned), so the entry's other settings are still checked."""
    aside: set[str] = set()
    for key, f in keys_of(cls).items():
        kind = kind_of(f)
        value = raw.get(key)
        if kind is None or kind.block is None or not isinstance(value, _Map):
            continue
        made = _block(kind.block, value, _value_at(raw, key), f"{where}.{key}", folder, problems)
        if made is None:
            kwargs.pop(key, None)
            aside.add(key)
        else:
            kwargs[key] = made
    return aside


def _block(
    cls: type[Any], raw: _Map, at: _Mark, where: str, folder: Path, problems: _Problems
) -> Any:
    """One nested block: each key checked on its own by its kind, then the whole made (what
    only its keys together can tell). None if anything was wrong (all of it reported)."""
    keys = keys_of(cls)
    if True in raw and "on" in keys:  # YAML 1.1 reads a bare `on:` key as true
        raw["on"] = raw.pop(True)
        raw.keys_at["on"], raw.values_at["on"] = raw.keys_at[True], raw.values_at[True]
    before = len(problems.items)
    field_keys = {f.name: k for k, f in keys.items()}
    _unknown(raw, set(keys), where, problems, {n: k for n, k in field_keys.items() if n != k})
    kwargs: dict[str, Any] = {}
    for key, f in keys.items():
        if key not in raw:
            if f.default is MISSING and f.default_factory is MISSING:
                what = getattr(cls, "what", cls.__name__.lower())
                problems.add(at, f"{where}.{key}", f"{what} needs {key!r}")
            continue
        kwargs[f.name] = raw[key]
    _relative(cls, kwargs, folder)
    nested = _blocks(cls, raw, kwargs, where, folder, problems)
    for name, value in list(kwargs.items()):
        kind = kind_of(next(f for f in keys.values() if f.name == name))
        if kind is None or field_keys[name] in nested:
            continue
        try:
            kwargs[name] = kind.check(where, name, value)
        except ConfigError as e:
            problems.model(_keyed(e, field_keys), raw, at, where)
    if len(problems.items) > before:
        return None
    try:
        return cls(**kwargs)
    except ConfigError as e:
        problems.model(_keyed(e, field_keys), raw, at, where)
        return None


def _keyed(e: ConfigError, keys: Mapping[str, str]) -> ConfigError:
    """A model error about a field, named by the key the file spells it with (``from``)."""
    head, rest = re.match(r"([^.\[]*)(.*)", e.field, re.S).groups()  # type: ignore[union-attr]
    return ConfigError(e.message, field=keys.get(head, head) + rest, value=e.value)


def _recipe(name: str, raw: _Map, at: _Mark, folder: Path, problems: _Problems) -> Recipe | None:
    where = f"recipes.{name}"
    _unknown(raw, _RECIPE_KEYS, where, problems)
    kind = raw.get("kind")
    file = raw.get("file")
    if kind is None and isinstance(file, str):
        kind = _SUFFIX_KINDS.get(Path(file).suffix)
    if not isinstance(kind, str) or kind not in _RECIPE_KINDS:
        problems.setting(
            raw,
            "kind",
            at,
            where,
            f"unknown kind {kind!r}: choose from {', '.join(_RECIPE_KINDS)}"
            if kind is not None
            else f"say which kind of recipe: kind: {' or '.join(_RECIPE_KINDS)}",
        )
        return None
    cls = _RECIPE_KINDS[kind]
    kwargs: dict[str, Any] = {"name": name}
    for key, value in raw.items():
        if key not in _RECIPE_KEYS or key == "kind":
            continue
        owners = [k for k, c in _RECIPE_KINDS.items() if key in keys_of(c)]
        if owners and kind not in owners:
            problems.setting(
                raw, key, at, where, f"only {' and '.join(owners)} recipes take {key!r}"
            )
            continue
        kwargs[key] = value
    if isinstance(file, str):
        kwargs["file"] = (folder / file).absolute()  # errors then say where it looked
    recipe, errors = _attempt(cls, kwargs, given=kwargs)
    for e in errors:
        problems.model(e, raw, at, where)
    return recipe


def _pattern(
    name: str,
    raw: _Map,
    at: _Mark,
    folder: Path,
    recipes: Collection[Any],
    problems: _Problems,
) -> Pattern | None:
    where = f"patterns.{name}"
    kind = next((k for k in _PATTERN_KINDS if k[0] in raw), None)
    marker, cls, keys = kind or _PATTERN_KINDS[-1]
    for other, _, _ in _PATTERN_KINDS:
        if other in raw and other not in keys:
            problems.setting(
                raw,
                marker,
                at,
                where,
                f"a pattern has either {other!r} ({_TRIGGERS[other]}) or {marker!r} "
                f"({_TRIGGERS[marker]}), not both",
            )
            return None
    # With no trigger key the kind is a guess, so a misspelt one (``everyy``) is suggested
    # from every kind's keys.
    _unknown(raw, keys, where, problems, suggest=None if kind else _ANY_PATTERN_KEYS)
    kwargs: dict[str, Any] = {k: v for k, v in raw.items() if k in keys}
    _relative(cls, kwargs, folder)
    if isinstance(kwargs.get("anchor"), datetime.datetime | datetime.date):
        kwargs["anchor"] = kwargs["anchor"].isoformat()  # YAML reads an unquoted time itself
    aside = _blocks(cls, raw, kwargs, where, folder, problems)
    for key in ("methods", "headers"):
        if cls is HttpPattern and isinstance(kwargs.get(key), list):
            kwargs[key] = tuple(kwargs[key])
    missing = [
        f.name
        for f in fields(cls)
        if f.init
        and f.name != "name"
        and f.name not in raw
        and f.default is MISSING
        and f.default_factory is MISSING
    ]
    for key in missing:
        problems.setting(raw, key, at, where, _needs(cls, key))
        if key not in _STAND_INS:
            return None
        kwargs.update(_STAND_INS[key])
    given = {"name", *raw} - aside
    pattern, errors = _attempt(cls, {"name": name, **kwargs}, given=given, aside=missing)
    for e in errors:
        problems.model(e, raw, at, where)
    recipe = raw.get("recipe")
    if (
        isinstance(recipe, str)
        and recipe not in recipes
        and not any(e.field == "recipe" for e in errors)
    ):
        problems.setting(
            raw,
            "recipe",
            at,
            where,
            f"no recipe named {recipe!r}{_suggest(recipe, {str(r) for r in recipes})}",
        )
    for field_name in ("parameters", "outputs"):
        _templates(raw, field_name, where, problems)
    if isinstance(pattern, HttpPattern):
        _secret_headers(pattern, raw, where, problems)
    return pattern


def _secret_headers(pattern: HttpPattern, raw: _Map, where: str, problems: _Problems) -> None:
    """A header that carries a credential reaches jobs redacted: say so before anyone wonders
    where its value went (docs/security.md)."""
    given = raw.get("headers")
    for name in pattern.secret_headers:
        mark, value = _value_at(raw, "headers"), given
        if isinstance(given, _Seq):
            at = [i for i, h in enumerate(given) if isinstance(h, str) and h.lower() == name]
            if at:
                mark, value = given.items_at[at[0]], given[at[0]]  # as the file spells it
        problems.warn(
            mark,
            f"{where}.headers",
            f"{name} carries a secret: jobs and every record get {REDACTED!r} instead of its value",
            value,
        )


def _templates(raw: _Map, key: str, where: str, problems: _Problems) -> None:
    """A {WORD} that is no keyword stays as written: most likely a typo that loses results."""
    values = raw.get(key)
    if not isinstance(values, _Map):
        return
    for name, value in values.items():
        for word, close in unknown_keywords(value):
            hint = f" (did you mean {{{close}}}?)" if close else ""
            mark = _value_at(values, name)
            problems.warn(
                mark,
                f"{where}.{key}.{name}",
                f"{{{word}}} is not a keyword{hint}; it is passed on as written",
                value,
            )


def _needs(cls: type[Pattern], key: str) -> str:
    if key == "recipe":
        return "a pattern needs 'recipe' (the name of the recipe it runs)"
    if key == "glob":
        return (
            "a pattern needs 'glob' (files under the watched folder), 'port' (data received "
            "over TCP), 'route' and 'port' (HTTP requests), or 'cron' or 'every' (a clock)"
        )
    if cls is HttpPattern and key == "port":
        return "an HTTP pattern needs 'port' (0: any free port)"
    return f"a pattern needs {key!r}"


def _unknown(
    raw: _Map,
    allowed: set[str],
    where: str,
    problems: _Problems,
    aliases: Mapping[str, str] | None = None,
    suggest: set[str] | None = None,
) -> None:
    """Keys the entry does not take; ``aliases``: names the model uses for a key (``sender``
    is spelt ``from``), suggested as that key; ``suggest``: the keys to suggest from, when not
    only ``allowed``."""
    for key in raw:
        if key not in allowed:
            alias = (aliases or {}).get(str(key))
            hint = (
                f" (did you mean {alias!r}?)" if alias else _suggest(str(key), suggest or allowed)
            )
            problems.add(
                raw.keys_at[key],
                f"{where}.{key}",
                f"unknown setting{hint}; allowed: {', '.join(sorted(allowed))}",
                raw[key],
            )


def _suggest(word: str, choices: Mapping[str, Any] | set[str]) -> str:
    import difflib  # only for a misspelt name

    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
