"""What to notify when a job ends (``notify:`` on a pattern): webhook and email destinations,
which outcomes, and the rate limit. Checked at load; delivery is ``meow_async.notify``'s.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from email.utils import getaddresses
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import SplitResult, urlsplit

from ..exceptions import ConfigError
from .checks import check_count, check_flag, check_seconds

__all__ = ["FORMATS", "Email", "Notify", "Webhook", "WebhookFormat", "make_notify", "notify_paths"]

#: What ``on`` may name: a job's end state, with ``timed_out`` apart from other failures.
OUTCOMES = ("done", "failed", "timed_out", "skipped")
DEFAULT_ON = frozenset({"failed", "timed_out"})
#: What a webhook's ``format`` may name: the job's record, or a chat service's message shape.
WebhookFormat = Literal["json", "slack", "teams", "discord"]
FORMATS: tuple[WebhookFormat, ...] = ("json", "slack", "teams", "discord")
DEFAULT_SUBJECT = "[meow_async] job {JOB} {STATE} (rule {RULE})"

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ADDRESS = re.compile(r"[^@\s<>,;]+@[^@\s<>,;]+")


def _fail(field: str, message: str, value: object) -> ConfigError:
    """Errors name their field from ``notify`` down; a pattern prefixes ``notify.``."""
    return ConfigError(message, where="notify", field=field, value=value)


def _keys(raw: Mapping[str, Any], allowed: Collection[str], prefix: str) -> None:
    for key in raw:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), list(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _fail(
                f"{prefix}{key}",
                f"unknown setting{hint}; allowed: {', '.join(sorted(allowed))}",
                key,
            )


def _env(field: str, name: object, what: str) -> str:
    """The value of an environment variable named in the settings (secrets live there only)."""
    if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
        raise _fail(field, "expected the name of an environment variable", name)
    value = os.environ.get(name)
    if not value:
        raise _fail(field, f"environment variable {name} ({what}) is not set", name)
    return value


def _no_newlines(field: str, value: object) -> str:
    if not isinstance(value, str) or "\r" in value or "\n" in value:
        raise _fail(field, "expected one line of text", value)
    return value


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class Webhook:
    """POST each notification to ``url``, or to the URL in the environment variable ``url_env``
    (a chat service's incoming-webhook URL is itself the secret), in the shape ``format``
    names: ``json`` (the job's record), ``slack`` (also Mattermost), ``teams`` or ``discord``.

    ``headers`` are sent as given; ``headers_env`` maps a header to the environment variable
    holding its value, and ``token_env`` names the variable holding a bearer token, so secrets
    stay out of workflow files.
    """

    url: str | None = None
    #: An environment variable holding the URL, instead of ``url``; read again for each
    #: message, and never logged beyond its scheme and host.
    url_env: str | None = None
    #: The message's shape: ``json``, ``slack`` (also right for Mattermost), ``teams`` or
    #: ``discord``.
    format: WebhookFormat = "json"
    timeout: float = 10.0
    headers: Mapping[str, str] = field(default_factory=dict)
    headers_env: Mapping[str, str] = field(default_factory=dict)
    token_env: str | None = None

    def __post_init__(self) -> None:
        if (self.url is None) == (self.url_env is None):
            both = self.url is not None
            raise _fail(
                "webhook.url_env" if both else "webhook.url",
                "give url or url_env, not both" if both else "a webhook needs url or url_env",
                self.url_env if both else None,
            )
        url = self.target()  # from the environment now: a missing variable is a load error
        if self.format not in FORMATS:
            raise _fail("webhook.format", f"expected one of {', '.join(FORMATS)}", self.format)
        check_seconds("notify", "webhook.timeout", self.timeout, above_zero=True)
        for name in ("headers", "headers_env"):
            value: object = getattr(self, name)
            if not isinstance(value, Mapping):
                raise _fail(f"webhook.{name}", "expected a mapping of header names to text", value)
            for k, v in value.items():
                if not isinstance(k, str) or not _HEADER_NAME.fullmatch(k):
                    raise _fail(f"webhook.{name}", "expected a header name", k)
                _no_newlines(f"webhook.{name}.{k}", v)
            object.__setattr__(self, name, dict(value))
        parts = urlsplit(url)
        if parts.username is not None or parts.password is not None:
            # aiohttp sends the URL's user and password as Authorization and refuses a second
            # one: every message would fail, and be retried for nothing.
            for name, keys in (("headers", self.headers), ("headers_env", self.headers_env)):
                for k in keys:
                    if k.lower() == "authorization":
                        raise _fail(
                            f"webhook.{name}.{k}",
                            "the URL's user name and password are sent as Authorization "
                            "already: give one or the other",
                            keys[k],
                        )
            if self.token_env is not None:
                raise _fail(
                    "webhook.token_env",
                    "the URL's user name and password are sent as Authorization already: "
                    "give one or the other",
                    self.token_env,
                )
        self.request_headers()  # a missing variable is an error now, not at the first job

    def target(self) -> str:
        """The URL to post to; ``url_env``'s is read from the environment now, and an error
        about it never shows the URL itself."""
        if self.url_env is None:
            return _http_url("webhook.url", self.url, self.url)
        url = _env("webhook.url_env", self.url_env, "the webhook URL")
        return _http_url("webhook.url_env", url, self.url_env, shown=f"${self.url_env}")

    def request_headers(self) -> dict[str, str]:
        """The headers to send, secrets read from the environment now."""
        out = dict(self.headers)
        for header, env in self.headers_env.items():
            out[header] = _env(f"webhook.headers_env.{header}", env, f"the {header} header")
        if self.token_env is not None:
            out["Authorization"] = "Bearer " + _env(
                "webhook.token_env", self.token_env, "the bearer token"
            )
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
        _keys(raw, _WEBHOOK_KEYS, "webhook.")
        return cls(**raw)


def _netloc(p: SplitResult) -> str:
    netloc = p.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if p.port is not None:
        netloc += f":{p.port}"
    return netloc


def _http_url(field: str, url: object, value: object, *, shown: str | None = None) -> str:
    """``url`` if it is an http(s) URL; the error shows ``value`` (a variable's name, not the
    secret URL it holds)."""
    parts = urlsplit(url) if isinstance(url, str) else None
    try:
        port_ok = parts is not None and (parts.port is None or parts.port > 0)
    except ValueError:
        port_ok = False
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or not port_ok
        or any(c.isspace() for c in cast("str", url))
    ):
        where = f" in {shown}" if shown else ""
        raise _fail(field, f"expected an http:// or https:// URL{where}", value)
    return cast("str", url)


_WEBHOOK_KEYS = ("url", "url_env", "format", "timeout", "headers", "headers_env", "token_env")


@dataclass(frozen=True, slots=True, kw_only=True)
class Email:
    """Send each notification by SMTP from ``sender`` (``from:`` in a mapping) to ``to``.

    ``tls`` speaks TLS from the start (port 465), ``starttls`` upgrades a plain connection
    (587); neither: plain SMTP (25). ``username_env``/``password_env`` name environment
    variables holding the login, which needs TLS. ``subject`` may use ``{JOB}``, ``{RULE}`` and
    ``{STATE}``. ``tls_ca`` verifies the server with this CA bundle instead of the system's.
    """

    host: str
    sender: str
    to: tuple[str, ...] | list[str] | str
    port: int | None = None
    tls: bool = False
    starttls: bool = False
    username_env: str | None = None
    password_env: str | None = None
    subject: str = DEFAULT_SUBJECT
    timeout: float = 10.0
    tls_ca: str | None = None

    def __post_init__(self) -> None:
        host: object = self.host
        if not isinstance(host, str) or not host or any(c.isspace() for c in host):
            raise _fail("email.host", "expected the SMTP server's name or address", host)
        check_flag("notify", "email.tls", self.tls)
        check_flag("notify", "email.starttls", self.starttls)
        if self.tls and self.starttls:
            raise _fail("email.starttls", "choose tls (port 465) or starttls (587), not both", True)
        port: object = self.port
        if port is None:
            port = 465 if self.tls else 587 if self.starttls else 25
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise _fail("email.port", "expected a port number from 1 to 65535", port)
        object.__setattr__(self, "port", port)
        _address("email.from", self.sender)
        to: object = self.to
        if isinstance(to, str):
            to = (to,)
        if not isinstance(to, list | tuple) or not to:
            raise _fail("email.to", "expected a list of addresses", self.to)
        for i, addr in enumerate(to):
            _address(f"email.to[{i}]", addr)
        object.__setattr__(self, "to", tuple(to))
        if (self.username_env is None) != (self.password_env is None):
            missing = "username_env" if self.username_env is None else "password_env"
            raise _fail(
                f"email.{missing}", "a login needs both username_env and password_env", None
            )
        if self.username_env is not None and not (self.tls or self.starttls):
            raise _fail(
                "email.username_env",
                "a login would cross the network in clear: set tls or starttls",
                self.username_env,
            )
        _no_newlines("email.subject", self.subject)
        check_seconds("notify", "email.timeout", self.timeout, above_zero=True)
        ca: object = self.tls_ca
        if ca is not None:
            if not (self.tls or self.starttls):
                raise _fail("email.tls_ca", "a CA bundle needs tls or starttls", ca)
            if not isinstance(ca, str | os.PathLike) or not os.path.isfile(ca):
                raise _fail("email.tls_ca", f"no such file: {ca}", ca)
            object.__setattr__(self, "tls_ca", os.fspath(ca))
        self.login()  # a missing variable is an error now, not at the first job

    def login(self) -> tuple[str, str] | None:
        """The username and password, read from the environment now."""
        if self.username_env is None or self.password_env is None:
            return None
        return (
            _env("email.username_env", self.username_env, "the SMTP username"),
            _env("email.password_env", self.password_env, "the SMTP password"),
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
        _keys(raw, _EMAIL_KEYS, "email.")
        for need in ("host", "from", "to"):
            if need not in raw:
                raise _fail(f"email.{need}", f"an email needs {need!r}", None)
        kwargs = {("sender" if k == "from" else k): v for k, v in raw.items()}
        return cls(**kwargs)


_EMAIL_KEYS = (
    "host",
    "port",
    "tls",
    "starttls",
    "from",
    "to",
    "username_env",
    "password_env",
    "subject",
    "timeout",
    "tls_ca",
)


def _address(field: str, value: object) -> None:
    """One address, bare or with a name (``Lab <lab@example.org>``), on one line."""
    text = _no_newlines(field, value)
    found = getaddresses([text])
    if len(found) != 1 or not _ADDRESS.fullmatch(found[0][1]):
        raise _fail(field, "expected one email address, e.g. lab@example.org", value)


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

    webhook: Webhook | str | Mapping[str, Any] | None = None
    email: Email | Mapping[str, Any] | None = None
    on: Collection[str] = DEFAULT_ON
    limit: int = 5
    window: float = 300.0
    retries: int = 3
    retry_backoff: float = 1.0

    def __post_init__(self) -> None:
        hook: object = self.webhook
        if isinstance(hook, str):
            hook = Webhook(url=hook)
        elif isinstance(hook, Mapping):
            hook = Webhook.from_mapping(hook)
        elif hook is not None and not isinstance(hook, Webhook):
            raise _fail("webhook", "expected a URL or a mapping with 'url' or 'url_env'", hook)
        object.__setattr__(self, "webhook", hook)
        mail: object = self.email
        if isinstance(mail, Mapping):
            mail = Email.from_mapping(mail)
        elif mail is not None and not isinstance(mail, Email):
            raise _fail("email", "expected a mapping with host, from and to", mail)
        object.__setattr__(self, "email", mail)
        if hook is None and mail is None:
            raise _fail("", "expected a webhook, an email or both", None)
        on: object = self.on
        if isinstance(on, str):
            on = (on,)
        if not isinstance(on, Collection) or not on or any(o not in OUTCOMES for o in on):
            raise _fail("on", f"expected a list from {', '.join(OUTCOMES)}", self.on)
        object.__setattr__(self, "on", frozenset(on))
        check_count("notify", "limit", self.limit)
        check_seconds("notify", "window", self.window, above_zero=True)
        check_count("notify", "retries", self.retries, low=0, high=10)
        check_seconds("notify", "retry_backoff", self.retry_backoff)

    def destinations(self) -> list[Webhook | Email]:
        return [d for d in (self.webhook, self.email) if isinstance(d, Webhook | Email)]

    @classmethod
    def from_mapping(cls, raw: Mapping[Any, Any]) -> Notify:
        # YAML 1.1 reads a bare ``on:`` key as the boolean true: take it for what was meant.
        raw = {("on" if k is True else k): v for k, v in raw.items()}
        _keys(raw, _NOTIFY_KEYS, "")
        return cls(**raw)


_NOTIFY_KEYS = ("webhook", "email", "on", "limit", "window", "retries", "retry_backoff")


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
