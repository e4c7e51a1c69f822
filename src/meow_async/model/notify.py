"""Notifications when a job ends: a webhook POST or an email, per pattern (``notify:``).

A notification must never cost a job or the runner anything. ``Notifier.job_ended`` only files
it (a few dictionary operations on the loop); one background task per destination sends it,
retries it with backoff and, if it cannot, gives up with a log line. A rate limit per
destination turns a burst of failures into a few messages and one digest (docs/notifications.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import json
import logging
import os
import re
import socket
import ssl
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, getaddresses, make_msgid
from pathlib import Path
from typing import Any, Literal, Protocol, cast
from urllib.parse import urlsplit

import aiohttp

from ..exceptions import ConfigError
from .checks import check_count, check_flag, check_seconds
from .jobs import Job, JobState

__all__ = ["Email", "Notifier", "Notify", "NotifyStats", "Webhook"]

logger = logging.getLogger("meow_async.notify")

#: What ``on`` may name: a job's end state, with ``timed_out`` apart from other failures.
OUTCOMES = ("done", "failed", "timed_out", "skipped")
DEFAULT_ON = frozenset({"failed", "timed_out"})
DEFAULT_SUBJECT = "[meow_async] job {JOB} {STATE} (rule {RULE})"
#: Messages waiting per destination; past that, new ones are dropped and counted.
QUEUE_SIZE = 100
#: Jobs a digest lists; any more are only counted in it.
DIGEST_MAX = 1000
#: Seconds pending notifications get at shutdown (never more than ``shutdown_timeout``).
GRACE = 5.0

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


@dataclass(frozen=True, slots=True, kw_only=True)
class Webhook:
    """POST each notification as JSON to ``url``.

    ``headers`` are sent as given; ``headers_env`` maps a header to the environment variable
    holding its value, and ``token_env`` names the variable holding a bearer token, so secrets
    stay out of workflow files.
    """

    url: str
    timeout: float = 10.0
    headers: Mapping[str, str] = field(default_factory=dict)
    headers_env: Mapping[str, str] = field(default_factory=dict)
    token_env: str | None = None

    def __post_init__(self) -> None:
        url: object = self.url
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
            raise _fail("webhook.url", "expected an http:// or https:// URL", url)
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
        """The URL for log lines, without its query or user info (they may hold a secret)."""
        p = urlsplit(self.url)
        netloc = p.hostname or ""
        if p.port is not None:
            netloc += f":{p.port}"
        return f"webhook {p.scheme}://{netloc}{p.path}"

    def key(self) -> tuple[Any, ...]:
        return (
            "webhook",
            self.url,
            self.timeout,
            tuple(sorted(self.headers.items())),
            tuple(sorted(self.headers_env.items())),
            self.token_env,
        )

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> Webhook:
        _keys(raw, _WEBHOOK_KEYS, "webhook.")
        if "url" not in raw:
            raise _fail("webhook.url", "a webhook needs 'url'", None)
        return cls(**raw)


_WEBHOOK_KEYS = ("url", "timeout", "headers", "headers_env", "token_env")


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
            raise _fail("webhook", "expected a URL or a mapping with 'url'", hook)
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


# -- delivery ----------------------------------------------------------------------------------


class _Counts(Protocol):
    """Where the notifier counts (``RunnerStats`` has these)."""

    notifications_sent: int
    notifications_failed: int
    notifications_dropped: int


@dataclass(slots=True)
class NotifyStats:
    """Messages sent, given up after their retries, and dropped (queue full or shutdown)."""

    notifications_sent: int = 0
    notifications_failed: int = 0
    notifications_dropped: int = 0


class _Permanent(Exception):
    """Trying again would get the same answer (a 4xx, a 5xx SMTP reply, a missing secret)."""


@dataclass(slots=True)
class _Message:
    """One job's end, or a digest of many."""

    kind: Literal["job", "digest"]
    jobs: list[dict[str, Any]]
    count: int = 1
    since: float = 0.0
    until: float = 0.0
    limit: int = 0
    window: float = 0.0
    #: A digest's jobs by outcome, those not listed too.
    tally: Counter[str] = field(default_factory=Counter)

    def payload(self) -> dict[str, Any]:
        if self.kind == "job":
            return self.jobs[0]
        return {
            "digest": True,
            "count": self.count,
            "outcomes": dict(sorted(self.tally.items())),
            "listed": len(self.jobs),
            "since": self.since,
            "until": self.until,
            "limit": self.limit,
            "window": self.window,
            "jobs": self.jobs,
        }

    def subject(self, template: str) -> str:
        if self.kind == "job":
            job = self.jobs[0]
            return (
                template.replace("{JOB}", str(job.get("id")))
                .replace("{RULE}", str(job.get("rule")))
                .replace("{STATE}", str(job.get("outcome")))
            )
        return f"[meow_async] digest: {self.count} more job(s) ended ({self._tally()})"

    def text(self) -> str:
        if self.kind == "job":
            job = self.jobs[0]
            lines = [
                f"Job {job.get('id')} (rule {job.get('rule')}) ended: {job.get('outcome')}.",
                "",
                f"Error:     {job.get('error') or '-'}",
                f"Exit code: {job.get('exit_code')}",
                f"Started:   {_when(job.get('started'))}",
                f"Finished:  {_when(job.get('finished'))}",
                f"Folder:    {job.get('dir')}",
                f"Trigger:   {(job.get('event') or {}).get('path')}",
                "",
                "Its record (job.json):",
                json.dumps(job, indent=2, default=str),
            ]
            return "\n".join(lines) + "\n"
        lines = [
            f"{self.count} more job(s) ended between {_when(self.since)} and "
            f"{_when(self.until)} ({self._tally()}).",
            f"Each destination gets at most {self.limit} message(s) of their own per "
            f"{self.window:g}s; the jobs over that are listed here.",
            "",
        ]
        lines += [
            f"{j.get('id')}  rule {j.get('rule')}  {j.get('outcome')}  {j.get('error') or ''}"
            for j in self.jobs
        ]
        if self.count > len(self.jobs):
            lines.append(f"... and {self.count - len(self.jobs)} more, not listed.")
        return "\n".join(lines) + "\n"

    def _tally(self) -> str:
        return ", ".join(f"{n} {what}" for what, n in sorted(self.tally.items()))


def _when(t: object) -> str:
    if isinstance(t, int | float) and not isinstance(t, bool):
        return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")
    return "-"


def _summary(record: dict[str, Any]) -> dict[str, Any]:
    """What a digest keeps of a job: enough to find it."""
    return {
        k: record.get(k)
        for k in ("id", "rule", "state", "outcome", "error", "exit_code", "finished", "dir")
    }


def _describe(error: BaseException, timeout: float) -> str:
    if isinstance(error, TimeoutError) and not str(error):
        return f"no answer within {timeout:g}s"
    return str(error) or type(error).__name__


class _Sender(Protocol):
    label: str
    timeout: float

    async def send(self, message: _Message, notifier: Notifier) -> None: ...


class _WebhookSender:
    def __init__(self, spec: Webhook) -> None:
        self.spec = spec
        self.label = spec.label
        self.timeout = spec.timeout

    async def send(self, message: _Message, notifier: Notifier) -> None:
        try:
            headers = self.spec.request_headers()
        except ConfigError as e:
            raise _Permanent(str(e)) from None
        headers.update(
            {
                "Content-Type": "application/json",
                "User-Agent": "meow-async",
                "X-Meow-Notification": message.kind,
            }
        )
        body = json.dumps(message.payload(), default=str).encode()
        async with notifier.session().post(
            self.spec.url,
            data=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            allow_redirects=False,
        ) as resp:
            if resp.status >= 300:
                why = f"HTTP {resp.status} {resp.reason or ''}".rstrip()
                if resp.status < 500 and resp.status not in (408, 425, 429):
                    raise _Permanent(why)  # a redirect or a refusal: the same next time
                raise OSError(why)


class _EmailSender:
    def __init__(self, spec: Email) -> None:
        self.spec = spec
        self.label = spec.label
        self.timeout = spec.timeout
        self._tls: ssl.SSLContext | None = None

    async def send(self, message: _Message, notifier: Notifier) -> None:
        import aiosmtplib  # only when mail is sent: it costs ~40 ms at import

        spec = self.spec
        try:
            login = spec.login()
        except ConfigError as e:
            raise _Permanent(str(e)) from None
        if (spec.tls or spec.starttls) and self._tls is None:
            # Loading the trust store reads files: not on the loop.
            self._tls = await asyncio.to_thread(ssl.create_default_context, cafile=spec.tls_ca)
        mail = EmailMessage()
        mail["From"] = spec.sender
        mail["To"] = ", ".join(spec.recipients)
        mail["Subject"] = message.subject(spec.subject)
        mail["Date"] = formatdate(localtime=True)
        mail["Message-ID"] = make_msgid(domain=spec.sender.rpartition("@")[2].strip(" >"))
        mail.set_content(message.text())
        try:
            await aiosmtplib.send(
                mail,
                hostname=spec.host,
                port=spec.port,
                use_tls=spec.tls,
                start_tls=spec.starttls,
                tls_context=self._tls,
                username=login[0] if login else None,
                password=login[1] if login else None,
                local_hostname=await notifier.local_hostname(),
                timeout=self.timeout,
            )
        except aiosmtplib.SMTPResponseException as e:
            if 500 <= e.code < 600:
                raise _Permanent(f"the server answered {e.code} {e.message}") from None
            raise


class _Outbox:
    """One destination: its rate limit and digest, its queue, and the task that sends."""

    def __init__(self, notifier: Notifier, sender: _Sender, notify: Notify) -> None:
        self.notifier = notifier
        self.sender = sender
        self.label = sender.label
        self.limit, self.window = notify.limit, notify.window
        self.retries, self.backoff = notify.retries, notify.retry_backoff
        self.queue: asyncio.Queue[_Message] = asyncio.Queue(notifier.queue_size)
        self.task: asyncio.Task[None] | None = None
        self.busy = False  # a message is being delivered (or waits to be retried)
        self.window_end = float("-inf")  # loop time
        self.opened = 0.0  # wall time the window opened, for the digest
        self.in_window = 0
        self.held: list[dict[str, Any]] = []
        self.held_count = 0
        self.held_tally: Counter[str] = Counter()
        self.timer: asyncio.TimerHandle | None = None
        self.failing = False  # since the last success: log once, count the rest
        self.gave_up = 0
        self.dropping = 0

    def offer(self, record: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now >= self.window_end:
            self.flush()  # the timer does it; this covers a late timer
            self.window_end, self.opened, self.in_window = now + self.window, time.time(), 0
        if self.in_window < self.limit:
            self.in_window += 1
            self.put(_Message("job", [record]))
            return
        self.held_count += 1
        self.held_tally[str(record.get("outcome"))] += 1
        if len(self.held) < DIGEST_MAX:
            self.held.append(_summary(record))
        if self.timer is None:
            self.timer = loop.call_at(self.window_end, self.flush)

    def flush(self) -> None:
        """Send what the window held back as one digest."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.held_count:
            message = _Message(
                "digest",
                self.held,
                count=self.held_count,
                since=self.opened,
                until=time.time(),
                limit=self.limit,
                window=self.window,
                tally=self.held_tally,
            )
            self.held, self.held_count, self.held_tally = [], 0, Counter()
            self.put(message)

    def put(self, message: _Message) -> None:
        if self.notifier.closed:
            self.notifier.count("dropped")
            logger.debug("%s: a notification after shutdown, dropped", self.label)
            return
        if self.task is None:
            self.task = asyncio.create_task(self.run(), name=f"notify: {self.label}")
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.dropping += 1
            self.notifier.count("dropped")
            if self.dropping == 1:
                logger.warning(
                    "%s: %d notifications wait already: dropping new ones until they are sent "
                    "(counted, and logged when it drains)",
                    self.label,
                    self.queue.qsize(),
                )
            return
        if self.dropping:
            logger.warning("%s: %d notification(s) were dropped", self.label, self.dropping)
            self.dropping = 0

    async def run(self) -> None:
        while True:
            message = await self.queue.get()
            self.busy = True
            try:
                await self.deliver(message)
            except Exception:  # a bug here must not end this destination's deliveries
                logger.exception("%s: could not deliver a notification", self.label)
            finally:
                self.busy = False
                self.queue.task_done()

    async def deliver(self, message: _Message) -> None:
        closing = self.notifier.closing
        attempt = 0
        while True:
            attempt += 1
            last_chance = closing.is_set()  # at shutdown: one attempt, no retry
            try:
                async with asyncio.timeout(self.sender.timeout):
                    await self.sender.send(message, self.notifier)
            except Exception as e:
                error: Exception = e
            else:
                self.notifier.count("sent")
                if self.failing:
                    logger.info(
                        "%s: notifications are delivered again (%d given up meanwhile)",
                        self.label,
                        self.gave_up,
                    )
                    self.failing, self.gave_up = False, 0
                return
            why = _describe(error, self.sender.timeout)
            what = (
                f"job {message.jobs[0].get('id')}"
                if message.kind == "job"
                else f"a digest of {message.count} job(s)"
            )
            final = isinstance(error, _Permanent) or attempt > self.retries or last_chance
            if not self.failing:
                self.failing = True
                logger.warning(
                    "%s: cannot deliver the notification for %s: %s%s",
                    self.label,
                    what,
                    why,
                    "" if final else f"; retrying up to {self.retries - attempt + 1} time(s)",
                )
            if final:
                self.gave_up += 1
                self.notifier.count("failed")
                # Once per burst: the first message given up is logged, the rest are counted.
                level = logging.WARNING if self.gave_up == 1 else logging.DEBUG
                logger.log(
                    level,
                    "%s: gave up on the notification for %s after %d attempt(s): %s%s",
                    self.label,
                    what,
                    attempt,
                    why,
                    " (later ones given up are counted, not logged, until one is delivered)"
                    if self.gave_up == 1
                    else "",
                )
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.backoff * 2 ** (attempt - 1)):
                    await closing.wait()  # shutdown cuts the wait short


class Notifier:
    """Delivers the runner's notifications in the background; ``close`` at shutdown.

    ``stats`` gets ``notifications_sent``/``_failed``/``_dropped`` counted (``RunnerStats``
    has them), and ``changed`` is called after each count (the runner wakes its waiters).
    """

    def __init__(
        self,
        stats: _Counts | None = None,
        changed: Callable[[], None] | None = None,
        *,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self.stats: _Counts = stats if stats is not None else NotifyStats()
        self._changed = changed
        self.queue_size = queue_size
        self.closing = asyncio.Event()
        self.closed = False
        self._outboxes: dict[tuple[Any, ...], _Outbox] = {}
        self._session: aiohttp.ClientSession | None = None
        self._hostname: str | None = None

    def job_ended(self, job: Job, state: JobState, notify: Notify) -> None:
        """File the notifications for a job that ended; returns at once, never raises."""
        try:
            timed_out = bool(job.meta.get("timed_out"))
            outcome = "timed_out" if state is JobState.failed and timed_out else state.value
            if outcome not in notify.on:
                return
            record = {**job.meta, "state": state.value, "timed_out": timed_out, "outcome": outcome}
            for spec in notify.destinations():
                self._outbox(spec, notify).offer(record)
        except Exception:  # a notification must never fail a job
            logger.exception("could not file the notification for job %s", job.id)

    def _outbox(self, spec: Webhook | Email, notify: Notify) -> _Outbox:
        key = (spec.key(), notify.limit, notify.window, notify.retries, notify.retry_backoff)
        box = self._outboxes.get(key)
        if box is None:
            sender: _Sender = (
                _WebhookSender(spec) if isinstance(spec, Webhook) else _EmailSender(spec)
            )
            box = self._outboxes[key] = _Outbox(self, sender, notify)
        return box

    def count(self, what: Literal["sent", "failed", "dropped"], n: int = 1) -> None:
        name = f"notifications_{what}"
        setattr(self.stats, name, getattr(self.stats, name) + n)
        if self._changed is not None:
            self._changed()

    def session(self) -> aiohttp.ClientSession:
        """One HTTP client for every webhook, made at the first one, closed by ``close``."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def local_hostname(self) -> str:
        """This host's name for SMTP's EHLO; looking it up may wait on DNS: not on the loop."""
        if self._hostname is None:
            self._hostname = await asyncio.to_thread(socket.getfqdn)
        return self._hostname

    async def close(self, grace: float) -> None:
        """Send what is pending for up to ``grace`` seconds (one attempt each, no retries),
        then drop the rest with a log line per destination."""
        if self.closed:
            return
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            grace = 0  # cancelled, not stopped: whoever cancels wants it over now
        self.closing.set()
        boxes = list(self._outboxes.values())
        try:
            for box in boxes:
                box.flush()  # a digest held for a window that would end after we are gone
            waiting = [b for b in boxes if b.busy or not b.queue.empty()]
            if waiting and grace > 0:
                joins = [asyncio.ensure_future(b.queue.join()) for b in waiting]
                try:
                    await asyncio.wait(joins, timeout=grace)
                finally:
                    for j in joins:
                        j.cancel()
        finally:
            self.closed = True
            tasks = []
            for box in boxes:
                left = box.queue.qsize() + box.busy
                if box.task is not None:
                    box.task.cancel()
                    tasks.append(box.task)
                if box.gave_up > 1:  # only the first was logged
                    logger.warning(
                        "%s: %d notification(s) given up since the last one delivered",
                        box.label,
                        box.gave_up,
                    )
                if left:
                    self.count("dropped", left)
                    logger.warning(
                        "%s: %d notification(s) not delivered within the %gs shutdown grace, "
                        "dropped",
                        box.label,
                        left,
                        grace,
                    )
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._session is not None:
                await self._session.close()
                self._session = None
