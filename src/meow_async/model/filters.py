"""Event filters (``when:``): CEL expressions, compiled when their pattern is made and evaluated
on the names each event gives them, before any job folder exists.

CEL (the Common Expression Language of Kubernetes and Envoy) is safe to take from a workflow
file: no loops, no I/O, bounded cost. The runtime is cel-expr-python, the CEL project's own
binding of cel-cpp (what Envoy runs); see docs/dependencies.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "ABSENT",
    "NAMES",
    "Facts",
    "Filter",
    "FilterError",
    "Later",
    "compile_filter",
    "keep_paths",
    "parse_json",
    "used_paths",
]

#: The names a filter may use, by the kind of event, with their CEL types (docs and schema say
#: the same). A name an event cannot give (a body that is not JSON, a deleted file's size) is
#: absent: using it is a run-time error, which means "no match".
NAMES: dict[str, dict[str, str]] = {
    "http": {
        "body": "dyn",
        "headers": "map(string, string)",
        "query": "map(string, string)",
        "route": "map(string, string)",
        "method": "string",
        "identity": "dyn",
    },
    "network": {"payload": "dyn", "size": "int", "peer": "string", "identity": "dyn"},
    "file": {"path": "string", "name": "string", "size": "int", "change": "string"},
    "time": {"scheduled_time": "timestamp"},
}

_INSTALL = "pip install 'meow-async[filters]'"
#: orjson's module, looked for at the first body parsed (``...`` until then; ``None``: not
#: installed): a command that only makes patterns does not load it.
_orjson: Any = ...
_ERROR_AT = re.compile(r"ERROR: <input>:(\d+):(\d+): ([^\n]*)")
_envs: dict[str, Any] = {}


class FilterError(Exception):
    """A filter could not be evaluated on an event (a missing field, a wrong type): no match."""


def _cel() -> Any:
    try:
        from cel_expr_python import cel
    except ImportError:
        raise ValueError(f"filters need the CEL runtime: {_INSTALL}") from None
    return cel


def _env(kind: str) -> Any:
    env = _envs.get(kind)
    if env is None:
        cel = _cel()
        t = cel.Type
        types = {
            "dyn": t.DYN,
            "int": t.INT,
            "string": t.STRING,
            "timestamp": t.TIMESTAMP,
            "map(string, string)": t.Map(t.STRING, t.STRING),
        }
        env = _envs[kind] = cel.NewEnv(
            variables={name: types[cel_type] for name, cel_type in NAMES[kind].items()}
        )
    return env


class Filter:
    """One compiled ``when:`` expression of a pattern of ``kind`` (http, network, file, time)."""

    __slots__ = ("_bool", "_expr", "_is_error", "kind", "paths", "source")

    def __init__(self, kind: str, source: str, expr: Any, error_type: Any, bool_type: Any) -> None:
        self.kind = kind
        self.source = source
        self._expr = expr
        self._is_error = error_type
        self._bool = bool_type
        #: For each name: the keys the expression reads, as paths (None: it may read any
        #: part; empty: it does not use the name). Only those parts are handed to CEL, whose
        #: cost is in converting values, not in evaluating them.
        self.paths = {name: used_paths(source, name) for name in NAMES[kind]}

    def test(self, facts: Facts) -> bool:
        """Whether the event passes; FilterError if the expression fails on it."""
        # eval(data=...) converts the (pruned) names for this expression: cheaper than an
        # Activation object, which costs more to make than small values cost to convert.
        value = self._expr.eval(data=facts.names())
        kind = value.type()
        if kind == self._bool:
            return bool(value.value())
        if kind == self._is_error:
            why = str(value.value())
            if "out of range" in why and facts.widen():
                return self.test(facts)  # a JSON integer CEL has no int for: now a double
            raise FilterError(why)
        raise FilterError(f"the expression gave {_a(kind.name())}, not true or false")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Filter) and (self.kind, self.source) == (other.kind, other.source)

    def __hash__(self) -> int:
        return hash((self.kind, self.source))

    def __repr__(self) -> str:
        return f"Filter({self.kind!r}, {self.source!r})"


def compile_filter(kind: str, source: object) -> Filter:
    """Compile ``source`` for events of ``kind``; ValueError says what is wrong and where in
    the expression (its line and column)."""
    if not isinstance(source, str) or not source.strip():
        raise ValueError('expected a CEL expression, e.g. body.ref == "refs/heads/main"')
    env = _env(kind)
    cel = _cel()
    try:
        expr = env.compile(source)
    except RuntimeError as e:
        found = _ERROR_AT.findall(str(e))
        if not found:
            raise ValueError(f"the filter does not compile: {e}") from None
        names = ", ".join(NAMES[kind])
        parts = []
        for line, column, message in found:
            message = message.replace(" (in container '')", "").strip()
            if message.startswith("undeclared reference"):
                message += f"; a {kind} pattern's filter knows {names}"
            parts.append(f"line {line}, column {column} of the expression: {message}")
        raise ValueError("the filter does not compile: " + "; ".join(parts)) from None
    returns = expr.return_type()
    if returns not in (cel.Type.BOOL, cel.Type.DYN):
        raise ValueError(f"a filter must give true or false; this one gives {_a(returns.name())}")
    return Filter(kind, source, expr, cel.Type.ERROR, cel.Type.BOOL)


def _a(type_name: str) -> str:
    name = type_name.lower()
    return f"{'an' if name[:1] in 'aeiou' else 'a'} {name}"


def parse_json(data: bytes | bytearray | None) -> tuple[bool, Any]:
    """(True, value) if ``data`` is JSON, else (False, None): a body or payload that is not
    JSON leaves its name absent. orjson parses a 2 kB body in a fifth of json's time; what
    it refuses (an integer past 64 bits, NaN) is read by json."""
    global _orjson  # looked for once
    if not data:
        return False, None
    if _orjson is ...:
        try:
            import orjson as _orjson
        except ImportError:  # the filters extra brings it; json does the same, slower
            _orjson = None
    if _orjson is not None:
        try:
            return True, _orjson.loads(data)
        except ValueError:
            pass
    try:
        return True, json.loads(data)
    except (ValueError, RecursionError):
        return False, None


class Facts:
    """The names one event gives its rules' filters, made once however many rules look (a
    body is parsed once). ``keep`` (name -> paths, None for all) limits a JSON value to the
    parts the rules' filters read."""

    __slots__ = ("_keep", "_kind", "_make", "_names", "_widened")

    def __init__(
        self,
        kind: str,
        make: Callable[[], Mapping[str, Any]],
        keep: Mapping[str, frozenset[tuple[str, ...]] | None] | None = None,
    ) -> None:
        self._kind = kind
        self._make = make
        self._keep = keep or {}
        self._names: dict[str, Any] | None = None
        self._widened = False

    def names(self) -> dict[str, Any]:
        if self._names is None:
            names: dict[str, Any] = {}
            keep = self._keep
            for name, value in self._make().items():
                paths = keep.get(name) if keep else None
                if paths is not None and not paths:
                    continue  # no filter uses it: not made (a body is not even parsed)
                if isinstance(value, Later):
                    value = value.make()
                if value is ABSENT:
                    continue
                names[name] = value if paths is None else _prune(value, paths)
            self._names = names
        return self._names

    def widen(self) -> bool:
        """Make integers beyond 64 bits doubles (CEL has no bigger int); False if done
        before."""
        if self._widened:
            return False
        self._widened = True
        self._names = {k: _widen(v) for k, v in self.names().items()}
        return True


#: A name's value when the event cannot give it (``Facts`` leaves it out).
ABSENT: Any = object()


class Later:
    """A name's value made only if some filter reads it (a body parsed only then)."""

    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make


def _widen(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else float(value)
    if isinstance(value, list):
        return [_widen(v) for v in value]
    if isinstance(value, dict):
        return {k: _widen(v) for k, v in value.items()}
    return value


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PREFIX = re.compile(r"[rRbB]{1,2}(?=['\"])")  # r"...", b'...', rb"..."
_KEY = re.compile(r"""\[\s*("[^"\\]*"|'[^'\\]*')\s*\]""")
_SPACE = " \t\r\n"


def keep_paths(filters: list[Filter]) -> dict[str, frozenset[tuple[str, ...]] | None]:
    """What ``filters`` read of each name together (None: possibly all of it; empty: none
    of them uses it)."""
    out: dict[str, frozenset[tuple[str, ...]] | None] = {}
    for f in filters:
        for name, paths in f.paths.items():
            if name in out and out[name] is None:
                continue
            out[name] = None if paths is None else (out.get(name) or frozenset()) | paths
    return out


def used_paths(source: str, name: str) -> frozenset[tuple[str, ...]] | None:
    """The key paths ``source`` reads of ``name`` (``body.ref``, ``body["a"].b``); None if it
    uses ``name`` any other way (whole, with a computed key, ...). A conservative reading:
    string literals and comments are skipped, and what is not understood means "all of it"."""
    paths: set[tuple[str, ...]] = set()
    i, n = 0, len(source)
    while i < n:
        c = source[i]
        if c in "\"'":
            i = _skip_string(source, i, raw=False)
            continue
        prefix = _PREFIX.match(source, i)
        if prefix is not None and (i == 0 or not _is_word(source[i - 1])):
            i = _skip_string(source, prefix.end(), raw="r" in prefix.group(0).lower())
            continue
        if source.startswith("//", i):  # a comment, to the line's end
            end = source.find("\n", i)
            i = n if end < 0 else end
            continue
        m = _IDENT.match(source, i)
        if m is None or (i > 0 and _is_word(source[i - 1])):
            i += 1 if m is None else m.end() - i
            continue
        word, i = m.group(0), m.end()
        if word != name or source[: m.start()].rstrip().endswith("."):
            continue  # another name, or a field spelled like it
        path, i = _selection(source, i)
        if not path:
            return None  # the whole value, or a key the expression computes
        paths.add(tuple(path))
    return frozenset(paths)


def _is_word(c: str) -> bool:
    return c.isalnum() or c == "_"


def _selection(source: str, i: int) -> tuple[list[str], int]:
    """The static keys selected from ``i`` on (``.a``, ``["b"]``), and where they end."""
    path: list[str] = []
    n = len(source)
    while True:
        j = i
        while j < n and source[j] in _SPACE:
            j += 1
        if source.startswith(".", j) and not source.startswith(".?", j):
            k = j + 1
            while k < n and source[k] in _SPACE:
                k += 1
            m = _IDENT.match(source, k)
            if m is None or source[m.end() :].lstrip(_SPACE).startswith("("):
                return path, j  # a method (body.ref.startsWith(...)): all below the key
            path.append(m.group(0))
            i = m.end()
        elif (m := _KEY.match(source, j)) is not None:
            path.append(m.group(1)[1:-1])
            i = m.end()
        else:
            return path, i  # an index, a computed key, an operator: all below the key


def _skip_string(source: str, i: int, *, raw: bool) -> int:
    """The index just after the string literal whose quote is at ``i``."""
    quote = source[i : i + 3] if source[i : i + 3] in ('"""', "'''") else source[i]
    j, n = i + len(quote), len(source)
    while j < n:
        if not raw and source[j] == "\\":
            j += 2
            continue
        if source.startswith(quote, j):
            return j + len(quote)
        j += 1
    return n


def _prune(value: Any, paths: frozenset[tuple[str, ...]]) -> Any:
    """``value`` with only the parts ``paths`` lead to, each whole below its last key."""
    if not isinstance(value, dict):
        return value  # a list, a string...: CEL reports a wrong use itself
    heads: dict[str, set[tuple[str, ...]]] = {}
    for path in paths:
        if not path:
            return value
        heads.setdefault(path[0], set()).add(path[1:])
    out: dict[str, Any] = {}
    for key, rests in heads.items():
        if key in value:
            out[key] = value[key] if () in rests else _prune(value[key], frozenset(rests))
    return out
