"""What each workflow-file setting may be, stated once for ``validate`` and the JSON Schema.

A setting is a dataclass field whose ``metadata`` is a *kind*: ``count(low=0, high=100)``,
``seconds()``, ``choice("rerun", "fail")``, ``block(Email)``... A kind holds both the check that
the class's ``__post_init__`` runs (through :func:`check_settings`) and the JSON Schema fragment
``schema.py`` writes for it, so the two cannot disagree on a key, a type, a range or a choice.

Adding a key to a workflow file is adding one field to the class that reads it::

    retries: int = field(default=0, metadata=count(low=0, high=100))

The loader (workflow_file.py) then accepts it, ``validate`` checks it, the schema describes it
(the ``#:`` comment above the field is its description), and a misspelt key gets "did you mean".
What no kind says (two settings that must agree, a file that must exist) stays in
``__post_init__``; ``extra_schema`` on the class can say the schema's half of such a rule.
"""

from __future__ import annotations

import dataclasses
import keyword
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass
from typing import Any, TypeVar

from ..exceptions import ConfigError
from .checks import (
    _NAME,
    _VARIABLE,
    check_count,
    check_flag,
    check_host,
    check_name,
    check_params,
    check_port,
    check_resources,
    check_seconds,
    check_text,
    check_variable,
)

__all__ = [
    "ENV_NAME",
    "HEADER_NAME",
    "Kind",
    "block",
    "check_settings",
    "choice",
    "count",
    "custom",
    "env_name",
    "flag",
    "from_mapping",
    "host",
    "key_of",
    "keys_of",
    "kind_of",
    "made",
    "name",
    "nested",
    "one_line",
    "optional",
    "params",
    "port",
    "renamed",
    "resources",
    "seconds",
    "secret_file",
    "text",
    "variable",
]

T = TypeVar("T")
Schema = dict[str, Any]
#: ``(where, field, value) -> the value to keep`` (a check may convert, e.g. a list to a
#: tuple); raises ConfigError naming the field.
Check = Callable[[str, str, Any], Any]

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
HEADER_NAME = re.compile(r"[A-Za-z0-9-]+")


@dataclass(frozen=True, slots=True)
class Kind:
    """What one setting may be: its JSON Schema and its check, made together.

    ``block``: the dataclass whose fields are this setting's own keys (a nested mapping such
    as ``notify.email``); the loader builds it key by key, the schema refers to its own
    definition (as to each of ``uses``).
    """

    schema: Schema
    check: Check
    block: type[Any] | None = None
    #: Settings classes the schema refers to by name (``#/$defs/Sweep``).
    uses: tuple[type[Any], ...] = ()


_KIND = "meow_kind"
_KEY = "meow_key"


def _meta(kind: Kind) -> dict[str, Any]:
    return {_KIND: kind}


def kind_of(f: dataclasses.Field[Any]) -> Kind | None:
    """The kind a field was declared with, if any."""
    kind = f.metadata.get(_KIND)
    return kind if isinstance(kind, Kind) else None


def key_of(f: dataclasses.Field[Any]) -> str:
    """The key a workflow file spells the field with (``from`` for ``sender``)."""
    return str(f.metadata.get(_KEY, f.name))


def keys_of(cls: type[Any]) -> dict[str, dataclasses.Field[Any]]:
    """A settings class's workflow-file keys and their fields: those ``__init__`` takes, but
    not ``name`` (the key its entry sits under)."""
    return {key_of(f): f for f in dataclasses.fields(cls) if f.init and f.name != "name"}


def check_settings(obj: Any, where: str) -> None:
    """Run the check of every field of ``obj`` declared with a kind, in field order, keeping
    what each check returns (call from ``__post_init__``)."""
    for f in dataclasses.fields(obj):
        kind = kind_of(f)
        if kind is None:
            continue
        value = getattr(obj, f.name)
        kept = kind.check(where, f.name, value)
        if kept is not value:
            object.__setattr__(obj, f.name, kept)


def from_mapping(cls: type[T], raw: Mapping[str, Any]) -> T:
    """``cls`` made from a workflow file's mapping (the Python API's way too): unknown and
    missing keys refused, renamed keys (``from``) given to their fields. Errors name fields
    relative to ``cls``; :func:`nested` prefixes them."""
    fields = keys_of(cls)
    for key in raw:
        if key not in fields:
            import difflib  # only for a misspelt name

            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"unknown setting{hint}; allowed: {', '.join(sorted(fields))}",
                field=str(key),
                value=key,
            )
    for key, f in fields.items():
        if key not in raw and f.default is MISSING and f.default_factory is MISSING:
            what = getattr(cls, "what", cls.__name__.lower())
            raise ConfigError(f"{what} needs {key!r}", field=key, value=None)
    return cls(**{fields[k].name: v for k, v in raw.items()})


def nested(where: str, prefix: str, make: Callable[[], T]) -> T:
    """Make a nested block, its errors named from here (``email.port``)."""
    try:
        return make()
    except ConfigError as e:
        field = f"{prefix}.{e.field}" if e.field else prefix
        raise ConfigError(e.message, where=where, field=field, value=e.value) from None


def made(cls: type[T], where: str, field: str, value: object, hint: str) -> T:
    """``value`` as a ``cls``: itself, or made from its mapping (errors named from ``field``);
    ``hint`` says what is expected when it is neither."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(hint, where=where, field=field, value=value)
    return nested(where, field, lambda: from_mapping(cls, value))


def renamed(key: str, meta: Mapping[str, Any]) -> dict[str, Any]:
    """A field the workflow file spells otherwise (``sender`` as ``from``)."""
    return {**meta, _KEY: key}


# -- kinds ----------------------------------------------------------------------------------------


def count(*, low: int = 1, high: int | None = None) -> dict[str, Any]:
    """A whole number in [low, high]."""
    schema: Schema = {"type": "integer", "minimum": low}
    if high is not None:
        schema["maximum"] = high

    def check(where: str, field: str, value: Any) -> Any:
        check_count(where, field, value, low=low, high=high)
        return value

    return _meta(Kind(schema, check))


def seconds(*, above_zero: bool = False) -> dict[str, Any]:
    """A finite number of seconds, 0 or more (or above 0)."""
    bound = {"exclusiveMinimum": 0} if above_zero else {"minimum": 0}

    def check(where: str, field: str, value: Any) -> Any:
        check_seconds(where, field, value, above_zero=above_zero)
        return value

    return _meta(Kind({"type": "number", **bound}, check))


def flag() -> dict[str, Any]:
    def check(where: str, field: str, value: Any) -> Any:
        check_flag(where, field, value)
        return value

    return _meta(Kind({"type": "boolean"}, check))


def port(*, low: int = 0) -> dict[str, Any]:
    """A TCP port; ``low`` 0 lets the OS choose a free one."""

    def check(where: str, field: str, value: Any) -> Any:
        if low > 0 and (
            isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 65535
        ):
            raise ConfigError(
                f"expected a port number from {low} to 65535", where=where, field=field, value=value
            )
        check_port(where, field, value)
        return value

    return _meta(Kind({"type": "integer", "minimum": low, "maximum": 65535}, check))


def host() -> dict[str, Any]:
    """An address to listen on or connect to."""

    def check(where: str, field: str, value: Any) -> Any:
        check_host(where, field, value)
        return value

    return _meta(Kind({"type": "string", "minLength": 1}, check))


def choice(*values: str, what: str = "") -> dict[str, Any]:
    """One of ``values`` (``what``: the name for "unknown framing 'x'")."""

    def check(where: str, field: str, value: Any) -> Any:
        if not isinstance(value, str) or value not in values:
            said = f"unknown {what} {value!r}: choose from " if what else "expected one of "
            raise ConfigError(said + ", ".join(values), where=where, field=field, value=value)
        return value

    return _meta(Kind({"enum": list(values)}, check))


def text(hint: str) -> dict[str, Any]:
    """Non-empty text; ``hint`` says what is expected."""

    def check(where: str, field: str, value: Any) -> Any:
        if value is None:
            raise ConfigError(hint, where=where, field=field, value=value)
        check_text(where, field, value, hint)
        return value

    return _meta(Kind({"type": "string", "minLength": 1}, check))


def one_line() -> dict[str, Any]:
    """Text without line breaks (it goes into a header)."""

    def check(where: str, field: str, value: Any) -> Any:
        if not isinstance(value, str) or "\r" in value or "\n" in value:
            raise ConfigError("expected one line of text", where=where, field=field, value=value)
        return value

    return _meta(Kind({"type": "string", "pattern": r"^[^\r\n]*$"}, check))


def name() -> dict[str, Any]:
    """A recipe's or pattern's name."""

    def check(where: str, field: str, value: Any) -> Any:
        return check_name(where, field, value)

    return _meta(Kind({"$ref": "#/$defs/name"}, check))


def variable() -> dict[str, Any]:
    """A variable name a Python and a Bash script can both assign."""

    def check(where: str, field: str, value: Any) -> Any:
        return check_variable(where, field, value)

    return _meta(Kind({"$ref": "#/$defs/variable"}, check))


def params() -> dict[str, Any]:
    """Parameters: variable names to values JSON can carry."""

    def check(where: str, field: str, value: Any) -> Any:
        return check_params(where, field, value)

    schema = {"type": ["object", "null"], "propertyNames": {"$ref": "#/$defs/variable"}}
    return _meta(Kind(schema, check))


def env_name(what: str = "the name of an environment variable") -> dict[str, Any]:
    """The name of an environment variable (secrets are read from there, never written)."""

    def check(where: str, field: str, value: Any) -> Any:
        if not isinstance(value, str) or not ENV_NAME.fullmatch(value):
            raise ConfigError(f"expected {what}", where=where, field=field, value=value)
        return value

    return _meta(Kind({"type": "string", "pattern": f"^{ENV_NAME.pattern}$"}, check))


def secret_file() -> dict[str, Any]:
    """The path of a file holding a secret (a workflow file's, made relative to its folder,
    arrives as a Path); whether it can be read is for its owner to say, naming the secret."""

    def check(where: str, field: str, value: Any) -> Any:
        if not isinstance(value, str | os.PathLike) or not os.fspath(value):
            raise ConfigError("expected the path of a file", where=where, field=field, value=value)
        return os.fspath(value)

    return _meta(Kind({"type": "string", "minLength": 1}, check))


def header_name() -> dict[str, Any]:
    def check(where: str, field: str, value: Any) -> Any:
        if not isinstance(value, str) or not HEADER_NAME.fullmatch(value):
            raise ConfigError(
                "expected a header name (letters, digits, -)", where=where, field=field, value=value
            )
        return value

    return _meta(Kind({"type": "string", "pattern": f"^{HEADER_NAME.pattern}$"}, check))


def resources() -> dict[str, Any]:
    """Dask resources: names with amounts (``4e9`` may arrive as text from YAML 1.1)."""

    def check(where: str, field: str, value: Any) -> Any:
        return check_resources(where, field, value)

    amount = {"anyOf": [{"type": "number", "minimum": 0}, {"type": "string"}]}
    return _meta(Kind({"type": "object", "additionalProperties": amount}, check))


def optional(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The same kind, or null (unset)."""
    inner: Kind = meta[_KIND]

    def check(where: str, field: str, value: Any) -> Any:
        return None if value is None else inner.check(where, field, value)

    schema = dict(inner.schema)
    if isinstance(schema.get("type"), str):
        schema["type"] = [schema["type"], "null"]
    elif "enum" in schema:
        schema["enum"] = [*schema["enum"], None]
    elif set(schema) == {"anyOf"}:
        schema["anyOf"] = [*schema["anyOf"], {"type": "null"}]
    else:
        schema = {"anyOf": [schema, {"type": "null"}]}
    return {**meta, _KIND: Kind(schema, check, inner.block, inner.uses)}


def block(cls: type[Any], make: Check, *, also: Schema | None = None) -> dict[str, Any]:
    """A nested mapping of settings whose keys are ``cls``'s fields; ``make`` turns what was
    given (a mapping, or ``cls`` itself) into the value to keep. ``also``: another form the
    setting may take (a webhook given as its URL alone)."""
    ref: Schema = {"$ref": f"#/$defs/{cls.__name__}"}
    return _meta(Kind({"anyOf": [ref, also]} if also else ref, make, cls))


def custom(schema: Schema, check: Check, *, uses: tuple[type[Any], ...] = ()) -> dict[str, Any]:
    """A kind of its own: the schema fragment and the check that say the same thing."""
    return _meta(Kind(schema, check, uses=uses))


#: Words a variable may not be, for the schema (Python keywords; MEOW_ names are ours).
VARIABLE_SCHEMA: Schema = {
    "type": "string",
    "pattern": f"^{_VARIABLE.pattern}$",
    "not": {"anyOf": [{"enum": sorted(keyword.kwlist)}, {"pattern": "^MEOW_"}]},
}
NAME_SCHEMA: Schema = {"type": "string", "pattern": f"^{_NAME.pattern}$"}
