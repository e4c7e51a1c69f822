"""Small validators shared by the model classes, so every check names the field and the value."""

from __future__ import annotations

import keyword
import math
import re
from collections.abc import Mapping
from typing import Any

from ..exceptions import ConfigError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

#: Values a parameter may take: what JSON, Python literals and Bash strings can all carry.
JSONValue = str | int | float | bool | None | list[Any] | dict[str, Any]


def type_name(value: object) -> str:
    """What a value is, in a workflow file's terms (a YAML list is no ``_Seq`` to its
    writer)."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple | set | frozenset):
        return "a list"
    return type(value).__name__


def check_name(where: str, field: str, value: object) -> str:
    """Names end up in file names, log lines and YAML keys: keep them plain."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ConfigError(
            f"invalid name {value!r}: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit",
            where=where,
            field=field,
            value=value,
        )
    return value


def check_variable(where: str, field: str, value: object) -> str:
    """A variable must be assignable in both Python and Bash."""
    if (
        not isinstance(value, str)
        or not _VARIABLE.fullmatch(value)
        or keyword.iskeyword(value)
        or value.startswith("MEOW_")
    ):
        raise ConfigError(
            f"invalid variable name {value!r}: use letters, digits and '_', not starting "
            "with a digit, not a Python keyword, not starting with 'MEOW_'",
            where=where,
            field=field,
            value=value,
        )
    return value


def check_value(where: str, field: str, value: object) -> None:
    """Parameters travel as JSON and as Python/Bash literals; anything else has no safe form."""
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(
                f"{value!r} is not a finite number", where=where, field=field, value=value
            )
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            check_value(where, f"{field}[{i}]", item)
        return
    if isinstance(value, Mapping):
        for k, item in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"key {k!r} is not a string", where=where, field=field, value=k)
            check_value(where, f"{field}.{k}", item)
        return
    raise ConfigError(
        f"a value of type {type_name(value)} is not allowed: use strings, numbers, booleans, "
        "null, lists or mappings",
        where=where,
        field=field,
        value=value,
    )


def check_params(where: str, field: str, value: object) -> dict[str, Any]:
    """A parameter mapping: variable names to JSON-like values; returns a plain copy."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"expected a mapping of names to values, got {type_name(value)}",
            where=where,
            field=field,
            value=value,
        )
    for k, v in value.items():
        check_variable(where, f"{field}.{k}" if isinstance(k, str) else field, k)
        check_value(where, f"{field}.{k}", v)
    return dict(value)


def check_seconds(where: str, field: str, value: object, *, above_zero: bool = False) -> None:
    """A finite number of seconds, at least 0 (or above 0)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (above_zero and value == 0)
    ):
        bound = "above 0" if above_zero else "0 or more"
        raise ConfigError(
            f"expected a number of seconds, {bound}", where=where, field=field, value=value
        )


def check_count(
    where: str, field: str, value: object, *, low: int = 1, high: int | None = None
) -> None:
    """A whole number in [low, high]."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        span = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise ConfigError(f"expected a whole number {span}", where=where, field=field, value=value)


def check_text(where: str, field: str, value: object, hint: str) -> None:
    """An optional setting that, when given, is a non-empty string (``hint`` says which)."""
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(hint, where=where, field=field, value=value)


def check_flag(where: str, field: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigError("expected true or false", where=where, field=field, value=value)


def check_port(where: str, field: str, value: object) -> None:
    """A TCP port to listen on; 0 asks the OS for a free one."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ConfigError(
            "expected a port number from 1 to 65535 (0: any free port)",
            where=where,
            field=field,
            value=value,
        )


def check_host(where: str, field: str, value: object) -> None:
    """An address to listen on."""
    if not isinstance(value, str) or not value:
        raise ConfigError(
            "expected an address to bind to, e.g. 127.0.0.1 or ::1",
            where=where,
            field=field,
            value=value,
        )


def check_resources(where: str, field: str, value: object) -> dict[str, float]:
    """Dask resources: names with non-negative amounts, e.g. ``{GPU: 1, MEM: 4e9}``.

    An amount may be a string that reads as a number: YAML 1.1 (PyYAML) reads ``4e9``, a
    float without a dot, as the string ``"4e9"``.
    """
    amounts = (
        {k: _amount(v) for k, v in value.items() if isinstance(k, str) and k}
        if isinstance(value, Mapping)
        else {}
    )
    if not isinstance(value, Mapping) or len(amounts) != len(value) or None in amounts.values():
        raise ConfigError(
            "expected names with amounts, e.g. {CPU: 2, GPU: 1, MEM: 4e9}",
            where=where,
            field=field,
            value=value,
        )
    return {k: v for k, v in amounts.items() if v is not None}


def _amount(value: object) -> float | None:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None
