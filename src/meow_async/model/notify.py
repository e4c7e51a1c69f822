"""What to notify when a job ends (``notify:`` on a pattern): webhook and email destinations,
which outcomes, and the rate limit. Checked at load; delivery is ``meow_async.notify``'s.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, cast
from urllib.parse import SplitResult, urlsplit

from ..exceptions import ConfigError
from .addresses import bracket, http_url_parts
from .settings import (
    ENV_NAME,
    block,
    check_settings,
    choice,
    count,
    custom,
    env_name,
    flag,
    from_mapping,
    made,
    nested,
    one_line,
    optional,
    port,
    renamed,
    seconds,
)

__all__ = ["FORMATS", "Email", "Notify", "Webhook", "WebhookFormat", "make_notify", "notify_paths"]

#: What ``on`` may name: a job's end state, with ``timed_out`` apart from other failures.
OUTCOMES = ("done", "failed", "timed_out", "skipped")
DEFAULT_ON = frozenset({"failed", "timed_out"})
#: What a webhook's ``format`` may name: the job's record, or a chat service's message shape.
WebhookFormat = Literal["json", "slack", "teams", "discord"]
FORMATS: tuple[WebhookFormat, ...] = ("json", "slack", "teams", "discord")
DEFAULT_SUBJECT = "[meow_async] job {JOB} {STATE} (rule {RULE})"

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_ADDRESS = re.compile(r"[^@\s<>,;]+@[^@\s<>,;]+")


def _fail(field: str, message: str, value: object) -> ConfigError:
    """Errors name their field from ``notify`` down; a pattern prefixes ``notify.``."""
    return ConfigError(message, where="notify", field=field, value=value)


def _env(field: str, name: object, what: str) -> str:
    """The value of an environment variable named in the settings (secrets live there only)."""
    if not isinstance(name, str) or not ENV_NAME.fullmatch(name):
        raise _fail(field, "expected the name of an environment variable", name)
    value = os.environ.get(name)
    if not value:
        raise _fail(field, f"environment variable {name} ({what}) is not set", name)
    return value


def _no_newlines(field: str, value: object) -> str:
    if not isinstance(value, str) or "\r" in value or "\n" in value:
        raise _fail(field, "expected one line of text", value)
    return value


def _http_url(field: str, url: object, value: object, *, shown: str | None = None) -> str:
    """``url`` if it is an http(s) URL; the error shows ``value`` (a variable's name, not the
    secret URL it holds)."""
    if http_url_parts(url) is None:
        where = f" in {shown}" if shown else ""
        raise _fail(field, f"expected an http:// or https:// URL{where}", value)
    return cast("str", url)


def _url(where: str, field: str, value: object) -> object:
    return _http_url(field, value, value)


_URL = {"type": "string", "pattern": r"^https?://[^\s/?#]+[^\s]*$"}


def _headers(values: dict[str, Any], what: str) -> dict[str, Any]:
    def check(where: str, field: str, value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise _fail(field, f"expected a mapping of header names to {what}", value)
        for k, v in value.items():
            if not isinstance(k, str) or not _HEADER_NAME.fullmatch(k):
                raise _fail(field, "expected a header name", k)
            if what == "text":
                _no_newlines(f"{field}.{k}", v)
            elif not isinstance(v, str) or not ENV_NAME.fullmatch(v):
                raise _fail(f"{field}.{k}", "expected the name of an environment variable", v)
        return dict(value)

    schema = {
        "type": "object",
        "propertyNames": {"pattern": f"^{_HEADER_NAME.pattern}$"},
        "additionalProperties": values,
    }
    return custom(schema, check)


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class Webhook:
    """POST each notification to ``url``, or to the URL in the environment variable ``url_env``
    (a chat service's incoming-webhook URL is itself the secret), in the shape ``format``
    names: ``json`` (the job's record), ``slack`` (also Mattermost), ``teams`` or ``discord``.

    ``headers`` are sent as given; ``headers_env`` maps a header to the environment variable
    holding its value, and ``token_env`` names the variable holding a bearer token, so secrets
    stay out of workflow files.
    """

    what: ClassVar[str] = "a webhook"

    url: str | None = field(default=None, metadata=optional(custom(_URL, _url)))
    #: An environment variable holding the URL, instead of ``url``; read again for each
    #: message, and never logged beyond its scheme and host.
    url_env: str | None = field(default=None, metadata=optional(env_name()))
    #: The message's shape: ``json``, ``slack`` (also right for Mattermost), ``teams`` or
    #: ``discord``.
    format: WebhookFormat = field(default="json", metadata=choice(*FORMATS))
    timeout: float = field(default=10.0, metadata=seconds(above_zero=True))
    headers: Mapping[str, str] = field(
        default_factory=dict,
        metadata=_headers({"type": "string", "pattern": r"^[^\r\n]*$"}, "text"),
    )
    headers_env: Mapping[str, str] = field(
        default_factory=dict,
        metadata=_headers({"type": "string", "pattern": f"^{ENV_NAME.pattern}$"}, "variables"),
    )
    token_env: str | None = field(default=None, metadata=optional(env_name()))

    #: One of ``url`` and ``url_env`` (``__post_init__`` checks the same).
    extra_schema: ClassVar[dict[str, Any]] = {
        "oneOf": [{"required": ["url"]}, {"required": ["url_env"]}]
    }

    def __post_init__(self) -> None:
        check_settings(self, "notify.webhook")
        if (self.url is None) == (self.url_env is None):
            both = self.url is not None
            raise _fail(
                "url_env" if both else "url",
                "give url or url_env, not both" if both else "a webhook needs url or url_env",
                self.url_env if both else None,
            )
        url = self.target()  # from the environment now: a missing variable is a load error
        parts = urlsplit(url)
        if parts.username is not None or parts.password is not None:
            # aiohttp sends the URL's user and password as Authorization and refuses a second
            # one: every message would fail, and be retried for nothing.
            for name, keys in (("headers", self.headers), ("headers_env", self.headers_env)):
                for k in keys:
                    if k.lower() == "authorization":
                        raise _fail(
                            f"{name}.{k}",
                            "the URL's user name and password are sent as Authorization "
                            "already: give one or the other",
                            keys[k],
                        )
            if self.token_env is not None:
                raise _fail(
                    "token_env",
                    "the URL's user name and password are sent as Authorization already: "
                    "give one or the other",
                    self.token_env,
                )
        self.request_headers()  # a missing variable is an error now, not at the first job

    def target(self) -> str:
        """The URL to post to; ``url_env``'s is read from the environment now, and an error
        about it never shows the URL itself."""
        if self.url_env is None:
            return _http_url("url", self.url, self.url)
        url = _env("url_env", self.url_env, "the webhook URL")
        return _http_url("url_env", url, self.url_env, shown=f"${self.url_env}")

    def request_headers(self) -> dict[str, str]:
        """The headers to send, secrets read from the environment now."""
        out = dict(self.headers)
        for header, env in self.headers_env.items():
            out[header] = _env(f"headers_env.{header}", env, f"the {header} header")
        if self.token_env is not None:
            out["Authorization"] = "Bearer " + _env("token_env", self.token_env, "the bearer token")
        return out

    @property
    def label(self) -> str:
        """The URL for log lines, without its query or user info (they may hold a secret);
        ``url_env``'s without its path either: there, the path is the secret."""
        if self.url_env is not None:
            try:
                p = urlsplit(self.target())
            except ConfigError:
                return f"webhook ${self.url_env}"
            return f"webhook {p.scheme}://{_netloc(p)}/… (${self.url_env})"
        p = urlsplit(self.url or "")
        return f"webhook {p.scheme}://{_netloc(p)}{p.path}"

    def __repr__(self) -> str:
        return f"Webhook({self.label!r}, format={self.format!r})"

    def key(self) -> tuple[Any, ...]:
        return (
            "webhook",
            self.url,
            self.url_env,
            self.format,
            self.timeout,
            tuple(sorted(self.headers.items())),
            tuple(sorted(self.headers_env.items())),
            self.token_env,
        )

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> Webhook:
        return from_mapping(cls, raw)


def _netloc(p: SplitResult) -> str:
    netloc = bracket(p.hostname or "")
    if p.port is not None:
        netloc += f":{p.port}"
    return netloc


def _address(field: str, value: object) -> None:
    """One address, bare or with a name (``Lab <lab@example.org>``), on one line."""
    from email.utils import getaddresses  # only for a file with email: (socket, calendar...)

    text = _no_newlines(field, value)
    found = getaddresses([text])
    if len(found) != 1 or not _ADDRESS.fullmatch(found[0][1]):
        raise _fail(field, "expected one email address, e.g. lab@example.org", value)


def _check_address(where: str, field: str, value: object) -> object:
    _address(field, value)
    return value


def _check_to(where: str, field: str, value: object) -> object:
    to = (value,) if isinstance(value, str) else value
    if not isinstance(to, list | tuple) or not to:
        raise _fail(field, "expected a list of addresses", value)
    for i, addr in enumerate(to):
        _address(f"{field}[{i}]", addr)
    return tuple(to)


def _check_server(where: str, field: str, value: object) -> object:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise _fail(field, "expected the SMTP server's name or address", value)
    return value


def _check_ca(where: str, field: str, value: object) -> object:
    if value is not None and not isinstance(value, str | os.PathLike):
        raise _fail(field, "expected the path of a CA bundle", value)
    return value


_ADDRESS_SCHEMA = {"type": "string", "pattern": r"^[^\r\n]*[^@\s<>,;]+@[^@\s<>,;]+[^\r\n]*$"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Email:
    """Send each notification by SMTP from ``sender`` (``from:`` in a mapping) to ``to``.

    ``tls`` speaks TLS from the start (port 465), ``starttls`` upgrades a plain connection
    (587); neither: plain SMTP (25). ``username_env``/``password_env`` name environment
    variables holding the login, which needs TLS. ``subject`` may use ``{JOB}``, ``{RULE}`` and
    ``{STATE}``. ``tls_ca`` verifies the server with this CA bundle instead of the system's.
    """

    what: ClassVar[str] = "an email"

    #: The SMTP server's name or address.
    host: str = field(metadata=custom({"type": "string", "pattern": r"^\S+$"}, _check_server))
    #: The sender's address (``from:`` in a workflow file).
    sender: str = field(metadata=renamed("from", custom(_ADDRESS_SCHEMA, _check_address)))
    #: One address or a list of them.
    to: tuple[str, ...] | list[str] | str = field(
        metadata=custom(
            {
                "anyOf": [
                    _ADDRESS_SCHEMA,
                    {"type": "array", "items": _ADDRESS_SCHEMA, "minItems": 1},
                ]
            },
            _check_to,
        )
    )
    #: Default: 465 with tls, 587 with starttls, else 25.
    port: int | None = field(default=None, metadata=optional(port(low=1)))
    tls: bool = field(default=False, metadata=flag())
    starttls: bool = field(default=False, metadata=flag())
    username_env: str | None = field(default=None, metadata=optional(env_name()))
    password_env: str | None = field(default=None, metadata=optional(env_name()))
    subject: str = field(default=DEFAULT_SUBJECT, metadata=one_line())
    timeout: float = field(default=10.0, metadata=seconds(above_zero=True))
    tls_ca: str | None = field(
        default=None, metadata=custom({"type": ["string", "null"]}, _check_ca)
    )

    #: What only the pair can say, in the schema's words (``__post_init__`` checks the same).
    extra_schema: ClassVar[dict[str, Any]] = {
        "not": {
            "required": ["tls", "starttls"],
            "properties": {"tls": {"const": True}, "starttls": {"const": True}},
        },
        "dependentRequired": {"username_env": ["password_env"], "password_env": ["username_env"]},
    }

    def __post_init__(self) -> None:
        check_settings(self, "notify.email")
        if self.tls and self.starttls:
            raise _fail("starttls", "choose tls (port 465) or starttls (587), not both", True)
        if self.port is None:
            object.__setattr__(self, "port", 465 if self.tls else 587 if self.starttls else 25)
        if (self.username_env is None) != (self.password_env is None):
            missing = "username_env" if self.username_env is None else "password_env"
            raise _fail(missing, "a login needs both username_env and password_env", None)
        if self.username_env is not None and not (self.tls or self.starttls):
            raise _fail(
                "username_env",
                "a login would cross the network in clear: set tls or starttls",
                self.username_env,
            )
        ca: object = self.tls_ca
        if ca is not None:
            if not (self.tls or self.starttls):
                raise _fail("tls_ca", "a CA bundle needs tls or starttls", ca)
            if not isinstance(ca, str | os.PathLike) or not os.path.isfile(ca):
                raise _fail("tls_ca", f"no such file: {ca}", ca)
            object.__setattr__(self, "tls_ca", os.fspath(ca))
        self.login()  # a missing variable is an error now, not at the first job

    def login(self) -> tuple[str, str] | None:
        """The username and password, read from the environment now."""
        if self.username_env is None or self.password_env is None:
            return None
        return (
            _env("username_env", self.username_env, "the SMTP username"),
            _env("password_env", self.password_env, "the SMTP password"),
        )

    @property
    def recipients(self) -> tuple[str, ...]:
        return cast("tuple[str, ...]", self.to)

    @property
    def label(self) -> str:
        return f"email to {', '.join(self.recipients)} via {self.host}:{self.port}"

    def key(self) -> tuple[Any, ...]:
        return (
            "email",
            self.host,
            self.port,
            self.sender,
            self.recipients,
            self.tls,
            self.starttls,
            self.username_env,
            self.password_env,
            self.subject,
            self.timeout,
            self.tls_ca,
        )

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> Email:
        return from_mapping(cls, raw)


def _make_webhook(where: str, field: str, value: object) -> object:
    if isinstance(value, str):
        return nested("notify", field, lambda: Webhook(url=value))
    hint = "expected a URL or a mapping with 'url' or 'url_env'"
    return None if value is None else made(Webhook, "notify", field, value, hint)


def _make_email(where: str, field: str, value: object) -> object:
    hint = "expected a mapping with host, from and to"
    return None if value is None else made(Email, "notify", field, value, hint)


def _check_on(where: str, field: str, value: object) -> object:
    on = (value,) if isinstance(value, str) else value
    if not isinstance(on, Collection) or not on or any(o not in OUTCOMES for o in on):
        raise _fail(field, f"expected a list from {', '.join(OUTCOMES)}", value)
    return frozenset(on)


_ON_SCHEMA = {
    "anyOf": [
        {"enum": list(OUTCOMES)},
        {"type": "array", "items": {"enum": list(OUTCOMES)}, "minItems": 1},
    ]
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Notify:
    """Where to say that a job of this pattern ended, and for which ends (``on``).

    ``webhook`` (a URL, a mapping or a :class:`Webhook`) and ``email`` (a mapping or an
    :class:`Email`): one or both. ``on``: any of ``done``, ``failed``, ``timed_out``,
    ``skipped`` (default: failed and timed_out). Each destination sends at most ``limit``
    messages of their own per ``window`` seconds and one digest of the rest at the window's
    end; an undeliverable message is tried ``retries`` more times, ``retry_backoff`` seconds
    later, doubling.
    """

    #: A URL, or a mapping with url or url_env, format, headers, headers_env, token_env,
    #: timeout.
    webhook: Webhook | str | Mapping[str, Any] | None = field(
        default=None, metadata=optional(block(Webhook, _make_webhook, also=_URL))
    )
    #: A mapping with host, from, to and, optionally, port, tls or starttls, a login.
    email: Email | Mapping[str, Any] | None = field(
        default=None, metadata=optional(block(Email, _make_email))
    )
    #: Which ends are told: any of done, failed, timed_out, skipped.
    on: Collection[str] = field(default=DEFAULT_ON, metadata=custom(_ON_SCHEMA, _check_on))
    limit: int = field(default=5, metadata=count())
    window: float = field(default=300.0, metadata=seconds(above_zero=True))
    retries: int = field(default=3, metadata=count(low=0, high=10))
    retry_backoff: float = field(default=1.0, metadata=seconds())

    extra_schema: ClassVar[dict[str, Any]] = {
        "anyOf": [{"required": ["webhook"]}, {"required": ["email"]}]
    }

    def __post_init__(self) -> None:
        check_settings(self, "notify")
        if self.webhook is None and self.email is None:
            raise _fail("", "expected a webhook, an email or both", None)

    def destinations(self) -> list[Webhook | Email]:
        return [d for d in (self.webhook, self.email) if isinstance(d, Webhook | Email)]

    @classmethod
    def from_mapping(cls, raw: Mapping[Any, Any]) -> Notify:
        # YAML 1.1 reads a bare ``on:`` key as the boolean true: take it for what was meant.
        raw = {("on" if k is True else k): v for k, v in raw.items()}
        return from_mapping(cls, raw)


def make_notify(value: object) -> Notify | None:
    """A pattern's ``notify`` as given (None, a :class:`Notify` or its mapping), checked."""
    if value is None or isinstance(value, Notify):
        return value
    if isinstance(value, Mapping):
        return Notify.from_mapping(value)
    raise _fail("", "expected a mapping with webhook and/or email", value)


def notify_paths(value: object, folder: Path) -> object:
    """A workflow file's ``notify`` with ``email.tls_ca`` relative to the file's folder."""
    if not isinstance(value, Mapping):
        return value
    mail = value.get("email")
    if not isinstance(mail, Mapping) or not isinstance(mail.get("tls_ca"), str):
        return value
    return {**value, "email": {**mail, "tls_ca": str(folder / mail["tls_ca"])}}
