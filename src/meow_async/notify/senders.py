"""How a notification leaves: a webhook POST (aiohttp), as JSON or a chat service's message, or
a mail (aiosmtplib)."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from ..exceptions import ConfigError
from ..model.jobs import stderr_lines
from ..model.notify import Email, Webhook
from . import chat
from .message import Message

if TYPE_CHECKING:  # imported where a webhook is sent: no command but `run` loads aiohttp
    import aiohttp

__all__ = [
    "Client",
    "EmailSender",
    "Permanent",
    "RateLimited",
    "Sender",
    "WebhookSender",
    "describe",
]


class Client(Protocol):
    """**Protocol:** what a sender borrows from the notifier (a ``Notifier``): one HTTP client
    for every webhook, and this host's name for SMTP."""

    def session(self) -> aiohttp.ClientSession: ...

    async def local_hostname(self) -> str: ...


class Permanent(Exception):
    """Trying again would get the same answer (a 4xx, a 5xx SMTP reply, a missing secret)."""


def describe(error: BaseException, timeout: float) -> str:
    if isinstance(error, TimeoutError) and not str(error):
        return f"no answer within {timeout:g}s"
    return str(error) or type(error).__name__


class Sender(Protocol):
    label: str
    timeout: float

    async def send(self, message: Message, notifier: Client) -> None: ...


class RateLimited(OSError):
    """The service asked to be sent nothing for ``delay`` seconds (HTTP 429, ``Retry-After``)."""

    def __init__(self, why: str, delay: float) -> None:
        super().__init__(why)
        self.delay = delay


class WebhookSender:
    def __init__(self, spec: Webhook) -> None:
        self.spec = spec
        self.label = spec.label
        self.timeout = spec.timeout

    async def send(self, message: Message, notifier: Client) -> None:
        import aiohttp

        try:
            url = self.spec.target()
            headers = self.spec.request_headers()
        except ConfigError as e:
            raise Permanent(str(e)) from None
        headers.update(
            {
                "Content-Type": "application/json",
                "User-Agent": "meow-async",
                "X-Meow-Notification": message.kind,
            }
        )
        fmt = self.spec.format
        if fmt == "json":
            payload = message.payload()
        else:
            if message.tail is None:
                message.tail = await asyncio.to_thread(_tail, message)
            payload = chat.render(fmt, message)
        body = json.dumps(payload, default=str).encode()
        try:
            async with notifier.session().post(
                url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                allow_redirects=False,
            ) as resp:
                if resp.status < 300:
                    return
                why = f"HTTP {resp.status} {resp.reason or ''}".rstrip()
                said = await _said(resp)
        except aiohttp.ClientError as e:
            # Some of aiohttp's errors quote the URL (a malformed answer's does): not its
            # path or query, which may be the secret.
            raise OSError(_redacted(" ".join(str(e).split()) or type(e).__name__, url)) from None
        if said:
            why += f": {_redacted(said, url)}"
        if resp.status == 429:
            delay = _retry_after(resp.headers.get("Retry-After"), said)
            if delay is not None:
                raise RateLimited(why, delay)
        if resp.status < 500 and resp.status not in (408, 425, 429):
            raise Permanent(why)  # a redirect or a refusal: the same next time
        raise OSError(why)


def _redacted(text: str, url: str) -> str:
    parts = urlsplit(url)
    if parts.query:
        text = text.replace(parts.query, "…")
    if parts.path not in ("", "/"):
        text = text.replace(parts.path, "/…")
    return text


def _tail(message: Message) -> list[str]:
    """A failed job's last lines of stderr (none for other ends, or for a digest)."""
    job = message.jobs[0]
    if message.kind != "job" or job.get("outcome") not in ("failed", "timed_out"):
        return []
    folder = job.get("dir")
    if not isinstance(folder, str):
        return []
    return stderr_lines(Path(folder), chat.TAIL_LINES, chat.TAIL_BYTES)


async def _said(resp: aiohttp.ClientResponse) -> str:
    """The start of an error answer's body, on one line: services say there what was wrong
    (Slack's ``invalid_payload``, Discord's ``{"code": 50035, ...}``)."""
    import aiohttp

    try:
        data = await resp.content.read(_SAID_BYTES)
    except (aiohttp.ClientError, TimeoutError):
        return ""
    text = " ".join(data.decode("utf-8", "replace").split())
    return text[:200]


def _retry_after(header: str | None, body: str) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds, or an HTTP date), or from the JSON body's
    ``retry_after`` (Discord's, in seconds) if there is no header."""
    if header is not None:
        try:
            return max(0.0, float(header))
        except ValueError:
            pass
        try:
            when = parsedate_to_datetime(header)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())
    try:
        found = json.loads(body).get("retry_after")
    except (ValueError, AttributeError):
        return None
    if isinstance(found, int | float) and not isinstance(found, bool):
        return max(0.0, float(found))
    return None


_SAID_BYTES = 1024


class EmailSender:
    def __init__(self, spec: Email) -> None:
        self.spec = spec
        self.label = spec.label
        self.timeout = spec.timeout
        self._tls: ssl.SSLContext | None = None

    async def send(self, message: Message, notifier: Client) -> None:
        import aiosmtplib  # only when mail is sent: it costs ~40 ms at import

        spec = self.spec
        try:
            login = spec.login()
        except ConfigError as e:
            raise Permanent(str(e)) from None
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
                raise Permanent(f"the server answered {e.code} {e.message}") from None
            raise
