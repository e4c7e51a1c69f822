"""How a notification leaves: a webhook POST (aiohttp) or a mail (aiosmtplib)."""

from __future__ import annotations

import asyncio
import json
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Protocol

import aiohttp

from ..exceptions import ConfigError
from ..model.notify import Email, Webhook
from .message import Message

__all__ = ["Client", "EmailSender", "Permanent", "Sender", "WebhookSender", "describe"]


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


class WebhookSender:
    def __init__(self, spec: Webhook) -> None:
        self.spec = spec
        self.label = spec.label
        self.timeout = spec.timeout

    async def send(self, message: Message, notifier: Client) -> None:
        try:
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
                    raise Permanent(why)  # a redirect or a refusal: the same next time
                raise OSError(why)


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
