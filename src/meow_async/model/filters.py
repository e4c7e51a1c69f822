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
    "compile_filter",
    "parse_json",
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

    __slots__ = ("_bool", "_expr", "_is_error", "kind", "source")

    def __init__(self, kind: str, source: str, expr: Any, error_type: Any, bool_type: Any) -> None:
        self.kind = kind
        self.source = source
        self._expr = expr
        self._is_error = error_type
        self._bool = bool_type

    def test(self, facts: Facts) -> bool:
        """Whether the event passes; FilterError if the expression fails on it."""
        value = self._expr.eval(facts.activation())
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
    JSON leaves its name absent."""
    if not data:
        return False, None
    try:
        return True, json.loads(data)
    except (ValueError, RecursionError):
        return False, None


class Facts:
    """The names one event gives its rules' filters, made once however many rules look: a
    body is parsed once, and one CEL activation serves every rule."""

    __slots__ = ("_activation", "_kind", "_make", "_names", "_widened")

    def __init__(self, kind: str, make: Callable[[], Mapping[str, Any]]) -> None:
        self._kind = kind
        self._make = make
        self._names: dict[str, Any] | None = None
        self._activation: Any = None
        self._widened = False

    def names(self) -> dict[str, Any]:
        if self._names is None:
            self._names = {k: v for k, v in self._make().items() if v is not ABSENT}
        return self._names

    def activation(self) -> Any:
        if self._activation is None:
            self._activation = _env(self._kind).Activation(self.names())
        return self._activation

    def widen(self) -> bool:
        """Make integers beyond 64 bits doubles (CEL has no bigger int); False if done
        before."""
        if self._widened:
            return False
        self._widened = True
        self._names = {k: _widen(v) for k, v in self.names().items()}
        self._activation = None
        return True


#: A name's value when the event cannot give it (``Facts`` leaves it out).
ABSENT: Any = object()


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
