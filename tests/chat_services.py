"""Stand-ins for the incoming webhooks of Slack, Mattermost, Microsoft Teams (Workflows) and
Discord: one aiohttp server on 127.0.0.1 that checks each request against what that service
documents, and answers as that service does.

The checks are written from each service's own documentation:

- Slack, docs.slack.dev: "Sending messages using incoming webhooks" (a JSON body with ``text``,
  optionally Block Kit ``blocks``; 200 ``ok``; 400 ``invalid_payload``, 404
  ``channel_not_found``, ...; 429 with ``Retry-After`` when over its rate limit), the Block Kit
  reference (header text: plain_text, at most 150 characters; a section's text at most 3000,
  its fields at most 10 of 2000 each; context elements at most 10; at most 50 blocks), and
  "Formatting text" (``&``, ``<`` and ``>`` escaped as ``&amp;``, ``&lt;`` and ``&gt;``:
  an unescaped ``<`` starts a link or a mention).
- Mattermost, developers.mattermost.com: "Incoming webhooks" (``text`` or ``attachments``;
  200 ``ok``) and "Slack compatibility" (``<url|text>`` becomes a markdown link; ``blocks`` is
  not a Mattermost field and is not shown). What Mattermost would show is kept.
- Microsoft Teams, learn.microsoft.com: "Create incoming webhooks with Workflows" and the
  Adaptive Card schema (a ``message`` whose ``attachments`` hold an
  ``application/vnd.microsoft.card.adaptive`` card: ``type: AdaptiveCard``, a ``version``,
  a ``body`` of elements; RichTextBlock and ``fontType`` need 1.2; a message of at most 28 KB);
  the Workflows trigger answers 202 Accepted.
- Discord, discord.com/developers/docs: "Execute Webhook" (``content`` of at most 2000
  characters and/or ``embeds``, at most 10; 204 No Content; 400 with ``{"code": 50006}`` for
  an empty message and ``50035`` "Invalid Form Body" otherwise), the embed limits (title 256,
  description 4096, 25 fields of name 256 and value 1024, neither empty, footer 2048, 6000 in
  all), and "Rate Limits" (429 with ``Retry-After`` and a JSON body whose ``retry_after`` is in
  seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

from .conftest import WAIT

SERVICES = ("slack", "mattermost", "teams", "discord")
#: The secret part of a webhook URL (made up: these servers run on 127.0.0.1 only).
SECRET = "s3cr3t-t0ken"  # noqa: S105

#: The paths each service's webhook URLs have; the last part is the secret.
PATHS = {
    "slack": "/services/T0MEOW/B0MEOW/{token}",
    "mattermost": "/hooks/{token}",
    "teams": "/workflows/{token}/triggers/manual/paths/invoke",
    "discord": "/api/webhooks/1234567890/{token}",
}

_SLACK_LINK = re.compile(r"<(https?://[^|>\s]+)(\|[^>]*)?>")


@dataclass
class Received:
    service: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any
    at: float
    status: int
    problems: list[str]
    #: Mattermost: the post as it would show it.
    shown: str = ""


@dataclass
class ChatServices:
    port: int = 0
    received: list[Received] = field(default_factory=list)
    #: Per service, the answers to give before accepting: (status, Retry-After, body).
    refuse: dict[str, list[tuple[int, str | None, str]]] = field(default_factory=dict)
    #: Called with each request's Received before it is answered.
    on_request: Callable[[Received], None] | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, service: str, token: str = SECRET) -> str:
        """A webhook URL as the service gives it, under a first folder naming the service
        this stand-in plays."""
        tail = "?api-version=1&sig=s3cr3t" if service == "teams" else ""
        path = PATHS[service].format(token=token)
        return f"http://127.0.0.1:{self.port}/{service}{path}{tail}"

    def of(self, service: str) -> list[Received]:
        return [r for r in self.received if r.service == service and r.status < 300]

    async def wait(
        self, predicate: Callable[[list[Received]], bool], timeout: float = WAIT
    ) -> None:
        async with asyncio.timeout(timeout):
            while not predicate(self.received):
                self._changed.clear()
                await self._changed.wait()

    async def handle(self, request: web.Request) -> web.Response:
        service = request.match_info["service"]
        raw = await request.read()
        problems: list[str] = []
        body: Any = None
        if request.content_type != "application/json":
            problems.append(f"Content-Type {request.content_type}")
        try:
            body = json.loads(raw)
        except ValueError:
            problems.append("not JSON")
        if not problems:
            problems = CHECKS[service](body, len(raw))
        got = Received(
            service,
            request.path,
            request.query_string,
            dict(request.headers),
            body,
            time.monotonic(),
            0,
            problems,
        )
        if service == "mattermost" and not problems:
            got.shown = _SLACK_LINK.sub(
                lambda m: f"[{(m[2] or '|' + m[1])[1:]}]({m[1]})", str(body.get("text", ""))
            )
        answer = self._answer(service, problems)
        got.status = answer.status
        if self.on_request is not None:
            self.on_request(got)
        self.received.append(got)
        self._changed.set()
        return answer

    def _answer(self, service: str, problems: list[str]) -> web.Response:
        queued = self.refuse.get(service)
        if queued:
            status, retry_after, text = queued.pop(0)
            headers = {"Retry-After": retry_after} if retry_after is not None else {}
            if service == "discord":
                return web.Response(
                    status=status, text=text, headers=headers, content_type="application/json"
                )
            return web.Response(status=status, text=text, headers=headers)
        if service in ("slack", "mattermost"):
            if problems:
                return web.Response(status=400, text="invalid_payload")
            return web.Response(status=200, text="ok")
        if service == "teams":
            if any("28 KB" in p for p in problems):
                return web.Response(status=413, text="RequestEntityTooLarge")
            if problems:
                return web.json_response(
                    {"error": {"code": "InvalidRequestContent", "message": "; ".join(problems)}},
                    status=400,
                )
            return web.Response(status=202)
        if problems:
            empty = problems == ["an empty message"]
            code, msg = (
                (50006, "Cannot send an empty message") if empty else (50035, "Invalid Form Body")
            )
            return web.json_response({"code": code, "message": msg, "errors": problems}, status=400)
        return web.Response(status=204)


@contextlib.asynccontextmanager
async def chat_services() -> AsyncIterator[ChatServices]:
    services = ChatServices()
    app = web.Application()
    app.router.add_post("/{service:slack|mattermost|teams|discord}/{tail:.*}", services.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    services.port = runner.addresses[0][1]
    try:
        yield services
    finally:
        await runner.cleanup()


# -- the checks -----------------------------------------------------------------------------------


def _text_object(where: str, obj: Any, limit: int, out: list[str], *, plain: bool = False) -> None:
    kinds = ("plain_text",) if plain else ("plain_text", "mrkdwn")
    if not isinstance(obj, dict) or obj.get("type") not in kinds:
        out.append(f"{where}: expected a text object of type {' or '.join(kinds)}")
        return
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        out.append(f"{where}.text: expected non-empty text")
        return
    if len(text) > limit:
        out.append(f"{where}.text: {len(text)} characters, more than {limit}")
    if obj["type"] == "mrkdwn":
        _slack_escaped(f"{where}.text", text, out)


def _slack_escaped(where: str, text: str, out: list[str]) -> None:
    """Every ``<`` starts a link (``<https://...|label>``); anything else must be escaped."""
    rest = _SLACK_LINK.sub("", text)
    if "<" in rest or ">" in rest:
        out.append(f"{where}: an unescaped < or > (Slack reads it as a link or a mention)")
    if re.search(r"&(?!amp;|lt;|gt;)", rest):
        out.append(f"{where}: an unescaped &")


def check_slack(body: Any, size: int) -> list[str]:
    out: list[str] = []
    if not isinstance(body, dict):
        return ["the body is not an object"]
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        out.append("text: required (the message, or the fallback for notifications)")
    elif re.search(r"<[!@#]", text):
        out.append("text: an unescaped mention (<!channel>, <@user>, <#channel>)")
    blocks = body.get("blocks")
    if blocks is None:
        return out
    if not isinstance(blocks, list) or not 1 <= len(blocks) <= 50:
        return [*out, "blocks: expected a list of 1 to 50 blocks"]
    for i, block in enumerate(blocks):
        where = f"blocks[{i}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if not isinstance(block, dict) or kind not in ("header", "section", "context", "divider"):
            out.append(f"{where}: unknown block {kind!r}")
            continue
        if len(str(block.get("block_id", ""))) > 255:
            out.append(f"{where}.block_id: more than 255 characters")
        if kind == "header":
            _text_object(f"{where}.text", block.get("text"), 150, out, plain=True)
        elif kind == "section":
            if "text" not in block and "fields" not in block:
                out.append(f"{where}: a section needs text or fields")
            if "text" in block:
                _text_object(f"{where}.text", block["text"], 3000, out)
            fields = block.get("fields")
            if fields is not None:
                if not isinstance(fields, list) or not 1 <= len(fields) <= 10:
                    out.append(f"{where}.fields: expected 1 to 10 text objects")
                else:
                    for j, f in enumerate(fields):
                        _text_object(f"{where}.fields[{j}]", f, 2000, out)
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
                out.append(f"{where}.elements: expected 1 to 10 elements")
            else:
                for j, e in enumerate(elements):
                    _text_object(f"{where}.elements[{j}]", e, 3000, out)
    return out


def check_mattermost(body: Any, size: int) -> list[str]:
    if not isinstance(body, dict):
        return ["the body is not an object"]
    text, attachments = body.get("text"), body.get("attachments")
    if not (isinstance(text, str) and text.strip()) and not attachments:
        return ["text: required when there are no attachments"]
    if isinstance(text, str) and len(text) > 16383:
        return [f"text: {len(text)} characters; Mattermost splits posts over 16383"]
    return []


_CARD_ELEMENTS = {"TextBlock", "RichTextBlock", "FactSet", "Container", "ColumnSet", "Image"}


def check_teams(body: Any, size: int) -> list[str]:
    out: list[str] = []
    if size > 28 * 1024:
        out.append(f"the message is {size} bytes, over 28 KB")
    if not isinstance(body, dict) or body.get("type") != "message":
        return [*out, "type: expected 'message'"]
    attachments = body.get("attachments")
    if not isinstance(attachments, list) or not attachments:
        return [*out, "attachments: expected a list with the card"]
    for i, a in enumerate(attachments):
        where = f"attachments[{i}]"
        if not isinstance(a, dict):
            out.append(f"{where}: expected an object")
            continue
        if a.get("contentType") != "application/vnd.microsoft.card.adaptive":
            out.append(f"{where}.contentType: expected application/vnd.microsoft.card.adaptive")
        card = a.get("content")
        if not isinstance(card, dict) or card.get("type") != "AdaptiveCard":
            out.append(f"{where}.content.type: expected AdaptiveCard")
            continue
        version = card.get("version")
        if not isinstance(version, str) or not re.fullmatch(r"1\.[0-6]", version):
            out.append(f"{where}.content.version: expected 1.0 to 1.6")
            continue
        minor = int(version[2:])
        elements = card.get("body")
        if not isinstance(elements, list) or not elements:
            out.append(f"{where}.content.body: expected a list of elements")
            continue
        for j, e in enumerate(elements):
            _card_element(f"{where}.content.body[{j}]", e, minor, out)
        for j, action in enumerate(card.get("actions") or []):
            _open_url(f"{where}.content.actions[{j}]", action, out)
    return out


def _card_element(where: str, e: Any, minor: int, out: list[str]) -> None:
    kind = e.get("type") if isinstance(e, dict) else None
    if kind not in _CARD_ELEMENTS:
        out.append(f"{where}: unknown element {kind!r}")
        return
    if kind == "TextBlock":
        if not isinstance(e.get("text"), str) or not e["text"]:
            out.append(f"{where}.text: expected text")
        if "fontType" in e and minor < 2:
            out.append(f"{where}.fontType: needs version 1.2")
    elif kind == "RichTextBlock":
        if minor < 2:
            out.append(f"{where}: RichTextBlock needs version 1.2")
        inlines = e.get("inlines")
        if not isinstance(inlines, list) or not inlines:
            out.append(f"{where}.inlines: expected a list of TextRuns")
            return
        for k, run in enumerate(inlines):
            if not isinstance(run, dict) or run.get("type") != "TextRun":
                out.append(f"{where}.inlines[{k}]: expected a TextRun")
            elif not isinstance(run.get("text"), str):
                out.append(f"{where}.inlines[{k}].text: expected text")
            elif "selectAction" in run:
                _open_url(f"{where}.inlines[{k}].selectAction", run["selectAction"], out)
    elif kind == "FactSet":
        facts = e.get("facts")
        if not isinstance(facts, list) or not all(
            isinstance(f, dict)
            and isinstance(f.get("title"), str)
            and isinstance(f.get("value"), str)
            for f in facts
        ):
            out.append(f"{where}.facts: expected a list of {{title, value}}")


def _open_url(where: str, action: Any, out: list[str]) -> None:
    if not isinstance(action, dict) or action.get("type") != "Action.OpenUrl":
        out.append(f"{where}: expected Action.OpenUrl")
    elif not str(action.get("url", "")).startswith(("http://", "https://")):
        out.append(f"{where}.url: expected an http(s) URL")


def check_discord(body: Any, size: int) -> list[str]:
    out: list[str] = []
    if not isinstance(body, dict):
        return ["the body is not an object"]
    content, embeds = body.get("content"), body.get("embeds")
    if not content and not embeds:
        return ["an empty message"]
    if content is not None and (not isinstance(content, str) or len(content) > 2000):
        out.append("content: at most 2000 characters")
    if embeds is None:
        return out
    if not isinstance(embeds, list) or len(embeds) > 10:
        return [*out, "embeds: at most 10"]
    total = 0
    for i, e in enumerate(embeds):
        where = f"embeds[{i}]"
        if not isinstance(e, dict):
            out.append(f"{where}: expected an object")
            continue
        for key, limit in (("title", 256), ("description", 4096)):
            if key in e:
                if not isinstance(e[key], str) or len(e[key]) > limit:
                    out.append(f"{where}.{key}: at most {limit} characters")
                else:
                    total += len(e[key])
        fields = e.get("fields", [])
        if not isinstance(fields, list) or len(fields) > 25:
            out.append(f"{where}.fields: at most 25")
            fields = []
        for j, f in enumerate(fields):
            name, value = f.get("name"), f.get("value")
            if not isinstance(name, str) or not name.strip() or len(name) > 256:
                out.append(f"{where}.fields[{j}].name: 1 to 256 characters")
            if not isinstance(value, str) or not value.strip() or len(value) > 1024:
                out.append(f"{where}.fields[{j}].value: 1 to 1024 characters")
            total += len(str(name)) + len(str(value))
            if "inline" in f and not isinstance(f["inline"], bool):
                out.append(f"{where}.fields[{j}].inline: expected a boolean")
        footer = e.get("footer")
        if footer is not None:
            if not isinstance(footer, dict) or not isinstance(footer.get("text"), str):
                out.append(f"{where}.footer.text: expected text")
            elif len(footer["text"]) > 2048:
                out.append(f"{where}.footer.text: at most 2048 characters")
            else:
                total += len(footer["text"])
        if "color" in e and (not isinstance(e["color"], int) or not 0 <= e["color"] <= 0xFFFFFF):
            out.append(f"{where}.color: expected an integer RGB colour")
        if "url" in e and not str(e["url"]).startswith(("http://", "https://")):
            out.append(f"{where}.url: expected an http(s) URL")
        if "timestamp" in e:
            try:
                datetime.fromisoformat(str(e["timestamp"]))
            except ValueError:
                out.append(f"{where}.timestamp: expected an ISO 8601 time")
    if total > 6000:
        out.append(f"embeds: {total} characters in all, more than 6000")
    mentions = body.get("allowed_mentions")
    if mentions is not None and not isinstance(mentions.get("parse", []), list):
        out.append("allowed_mentions.parse: expected a list")
    return out


CHECKS: dict[str, Callable[[Any, int], list[str]]] = {
    "slack": check_slack,
    "mattermost": check_mattermost,
    "teams": check_teams,
    "discord": check_discord,
}
