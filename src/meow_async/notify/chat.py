"""What a chat service is sent: a short message a person reads, in the shape that service's
incoming webhooks document, within its size limits.

``slack``: ``text`` and Block Kit ``blocks`` (Slack shows the blocks and uses ``text`` in
notifications; Mattermost, which takes Slack's shape, ignores the blocks and shows ``text``, so
``text`` carries the whole message in markdown both read). ``teams``: an Adaptive Card in a
``message`` with ``attachments``, as Teams' Workflows (Power Automate) webhooks take it; the
retired Office 365 connectors' MessageCard is not made. ``discord``: ``content`` and one embed.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from ..model.events import trigger_of
from .message import AFTER_RESTART, Message, exit_of, when

__all__ = ["TAIL_BYTES", "TAIL_LINES", "render"]

#: A failure's message shows at most this many last lines of its stderr, from its last bytes.
TAIL_LINES = 10
TAIL_BYTES = 4096
#: Characters of one stderr line, or of an error, shown; the rest is cut with an ellipsis.
LINE_CHARS = 300
ERROR_CHARS = 1000
#: Jobs a chat digest lists by name; the others are counted (`meow-async jobs` lists them).
DIGEST_JOBS = 20

# Slack's Block Kit limits (docs.slack.dev/reference/block-kit): a header's text 150
# characters, a section's text 3000, its fields 10 of 2000 each, 50 blocks a message. Slack cuts
# `text` at 40,000 characters and Mattermost splits a post over 16,383: ours stays under 4000.
SLACK_HEADER = 150
SLACK_SECTION = 3000
SLACK_FIELD = 2000
SLACK_TEXT = 4000
# Discord's (discord.com/developers/docs/resources/message): content 2000 characters; an
# embed's title 256, description 4096, 25 fields of name 256 and value 1024, footer 2048, and
# 6000 characters in all of a message's embeds.
DISCORD_CONTENT = 2000
EMBED_TITLE = 256
EMBED_DESCRIPTION = 4096
EMBED_FIELD_VALUE = 1024
EMBED_FOOTER = 2048
EMBED_TOTAL = 6000
# Teams: a webhook message of at most 28 KB.
TEAMS_BYTES = 28 * 1024

_ICON = {"done": "✅", "failed": "❌", "timed_out": "⏱️", "skipped": "⏭️"}
_WORDS = {"timed_out": "timed out"}
_DISCORD_COLOR = {"done": 0x2EB67D, "failed": 0xE01E5A, "timed_out": 0xECB22E, "skipped": 0x9E9E9E}
_TEAMS_COLOR = {"done": "Good", "failed": "Attention", "timed_out": "Warning"}
#: Stands in for a backtick in a job's text, which could otherwise end its code span early.
_GRAVE = "\u02cb"
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|[\x00-\x08\x0b-\x1f\x7f]")


def render(fmt: str, message: Message) -> dict[str, Any]:
    """The body for ``fmt`` (``slack``, ``teams`` or ``discord``)."""
    if fmt == "slack":
        return _slack(message)
    if fmt == "teams":
        return _teams(message)
    if fmt == "discord":
        return _discord(message)
    raise ValueError(f"no chat format {fmt!r}")


@dataclass(frozen=True, slots=True)
class _Ended:
    """One job's end as a person reads it."""

    id: str
    rule: str
    outcome: str
    exit_code: object
    error: str
    input: str
    took: str
    link: str | None
    after_restart: bool
    finished: object
    tail: list[str]

    @classmethod
    def of(cls, record: dict[str, Any], tail: list[str] | None) -> _Ended:
        started, finished = record.get("started"), record.get("finished")
        took = (
            _duration(finished - started)
            if isinstance(started, int | float) and isinstance(finished, int | float)
            else ""
        )
        event = record.get("event")
        return cls(
            id=str(record.get("id")),
            rule=str(record.get("rule")),
            outcome=str(record.get("outcome")),
            exit_code=record.get("exit_code"),
            error=_clip(_plain(str(record.get("error") or "")), ERROR_CHARS),
            input=trigger_of(event) if isinstance(event, dict) else "-",
            took=took,
            link=_link(record.get("link")),
            after_restart=bool(record.get("after_restart")),
            finished=finished,
            tail=[_clip(_plain(line), LINE_CHARS) for line in tail or []],
        )

    @property
    def headline(self) -> str:
        return f"{_icon(self.outcome)} Job {_words(self.outcome)}: {self.id}"

    def facts(self) -> list[tuple[str, str]]:
        out = [("Rule", self.rule), ("Input", self.input)]
        if self.exit_code is not None:
            out.append(("Exit code", exit_of(self.exit_code)))
        if self.took:
            out.append(("Ran for", self.took))
        return out


@dataclass(frozen=True, slots=True)
class _Digest:
    """A digest as a person reads it: a headline, why, and the first jobs."""

    headline: str
    why: str
    jobs: list[dict[str, Any]]
    more: str

    @classmethod
    def of(cls, m: Message) -> _Digest:
        shown = m.jobs[:DIGEST_JOBS]
        rest = m.count - len(shown)
        more = (
            f"… and {rest} more: meow-async jobs --since {when(m.since)} lists them all."
            if rest > 0
            else ""
        )
        return cls(
            headline=f"📋 {m.count} more job(s) ended ({_tally(m.tally)})",
            why=f"Between {when(m.since)} and {when(m.until)}. Each destination gets at most "
            f"{m.limit} message(s) of their own per {m.window:g}s; the jobs over that are "
            "listed here.",
            jobs=shown,
            more=more,
        )

    @staticmethod
    def line(job: dict[str, Any]) -> tuple[str, str]:
        """A job's id, then the rest of its line, as plain text."""
        outcome = str(job.get("outcome"))
        rest = f"rule {job.get('rule')} · {_icon(outcome)} {_words(outcome)}"
        if job.get("error"):
            rest += f" · {_plain(str(job['error']))}"
        if job.get("after_restart"):
            rest += " · found after a restart"
        return str(job.get("id")), _clip(rest, LINE_CHARS)


# -- Slack (and Mattermost) ---------------------------------------------------------------------


def _slack(m: Message) -> dict[str, Any]:
    if m.kind == "digest":
        return _slack_digest(_Digest.of(m))
    e = _Ended.of(m.jobs[0], m.tail)
    lines = [_esc(f"{e.headline} (rule {e.rule})")]
    if e.error:
        lines.append(_esc(f"Error: {_code(e.error)}"))
    lines.append(_esc(" · ".join(f"{k}: {v}" for k, v in e.facts()[1:])))
    if e.after_restart:
        lines.append(_esc(AFTER_RESTART))
    if e.link:
        lines.append(f"<{e.link}|Open the job>")
    if e.tail:
        lines.append(_fence(e.tail, SLACK_TEXT - sum(len(x) + 1 for x in lines), _mentions))
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain_text(_clip(e.headline, SLACK_HEADER))},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": _clip(f"*{k}*\n{_esc(_code(v))}", SLACK_FIELD)}
                for k, v in e.facts()
            ],
        },
    ]
    if e.error:
        blocks.append(_section(f"*Error*\n{_esc(_code(e.error))}"))
    if e.tail:
        title = "*Last lines of stderr*\n"
        blocks.append(_section(title + _fence(e.tail, SLACK_SECTION - len(title), _esc)))
    if e.after_restart:
        blocks.append(_context(f":warning: {AFTER_RESTART}"))
    if e.link:
        blocks.append(_section(f"<{e.link}|Open the job>"))
    return {"text": _clip("\n".join(lines), SLACK_TEXT), "blocks": blocks}


def _slack_digest(d: _Digest) -> dict[str, Any]:
    def item(job: dict[str, Any], esc: Any) -> str:
        job_id, rest = d.line(job)
        link = _link(job.get("link"))
        name = f"<{link}|{job_id}>" if link else _code(job_id)
        return f"• {name} {esc(rest)}"

    text = [_esc(d.headline), _esc(d.why), *(item(j, _esc) for j in d.jobs)]
    if d.more:
        text.append(_esc(d.more))
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain_text(_clip(d.headline, SLACK_HEADER))},
        _context(_esc(d.why)),
    ]
    chunk = ""
    for job in d.jobs:  # 20 lines of at most ~400 characters: two or three sections
        line = item(job, _esc)
        if chunk and len(chunk) + len(line) + 1 > SLACK_SECTION:
            blocks.append(_section(chunk))
            chunk = ""
        chunk = f"{chunk}\n{line}" if chunk else line
    if chunk:
        blocks.append(_section(chunk))
    if d.more:
        blocks.append(_context(_esc(d.more)))
    return {"text": _clip("\n".join(text), SLACK_TEXT), "blocks": blocks}


def _section(mrkdwn: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(mrkdwn, SLACK_SECTION)}}


def _context(mrkdwn: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(mrkdwn, 3000)}]}


def _plain_text(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


def _esc(text: str) -> str:
    """Slack's three escapes (docs.slack.dev/messaging/formatting-message-text): its own
    ``<...>`` sequences are links and mentions, so a job's text must not make any."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _mentions(text: str) -> str:
    """In ``text``'s code block (which Mattermost shows as written): only what would mention
    someone (``<!channel>``, ``<@user>``, ``<#channel>``) is escaped."""
    return re.sub(r"<(?=[!@#])", "&lt;", text)


# -- Microsoft Teams (Workflows webhooks: an Adaptive Card) ------------------------------------


def _teams(m: Message) -> dict[str, Any]:
    body: list[dict[str, Any]]
    actions: list[dict[str, Any]] = []
    if m.kind == "digest":
        d = _Digest.of(m)
        body = [
            _block(d.headline, size="Medium", weight="Bolder"),
            _block(d.why, isSubtle=True),
        ]
        for job in d.jobs:
            job_id, rest = d.line(job)
            run: dict[str, Any] = {"type": "TextRun", "text": job_id, "weight": "Bolder"}
            link = _link(job.get("link"))
            if link:
                run["selectAction"] = {"type": "Action.OpenUrl", "url": link}
            body.append(_rich([run, {"type": "TextRun", "text": f"  {rest}"}], spacing="Small"))
        if d.more:
            body.append(_block(d.more, isSubtle=True))
    else:
        e = _Ended.of(m.jobs[0], m.tail)
        body = [
            _block(
                e.headline,
                size="Medium",
                weight="Bolder",
                color=_TEAMS_COLOR.get(e.outcome, "Default"),
            )
        ]
        if e.after_restart:
            body.append(_block(AFTER_RESTART, color="Warning"))
        facts = [("Error", e.error)] if e.error else []
        for name, value in [*e.facts(), *facts]:
            # Plain text runs: a file name's underscores are not markdown here.
            body.append(
                _rich(
                    [
                        {"type": "TextRun", "text": f"{name}: ", "weight": "Bolder"},
                        {"type": "TextRun", "text": value},
                    ],
                    spacing="None",
                )
            )
        if e.tail:
            body.append(_block("Last lines of stderr", weight="Bolder", spacing="Medium"))
            body += [
                _rich([{"type": "TextRun", "text": line, "fontType": "Monospace"}], spacing="None")
                for line in e.tail
            ]
        if e.link:
            actions.append({"type": "Action.OpenUrl", "title": "Open the job", "url": e.link})
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    }
    if actions:
        card["actions"] = actions
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": card,
            }
        ],
    }


def _block(text: str, **style: Any) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "wrap": True, **style}


def _rich(inlines: list[dict[str, Any]], **style: Any) -> dict[str, Any]:
    return {"type": "RichTextBlock", "inlines": inlines, **style}


# -- Discord -------------------------------------------------------------------------------------


def _discord(m: Message) -> dict[str, Any]:
    if m.kind == "digest":
        d = _Digest.of(m)
        lines = []
        for job in d.jobs:
            job_id, rest = d.line(job)
            link = _link(job.get("link"))
            name = f"[{_dsc(job_id)}]({link})" if link else _code(job_id)
            lines.append(f"• {name} {_dsc(rest)}")
        if d.more:
            lines.append(_dsc(d.more))
        embed: dict[str, Any] = {
            "title": _clip(d.headline, EMBED_TITLE),
            "description": _clip_lines(lines, EMBED_DESCRIPTION),
            "footer": {"text": _clip(d.why, EMBED_FOOTER)},
            "timestamp": _iso(m.until),
        }
        content = d.headline
    else:
        e = _Ended.of(m.jobs[0], m.tail)
        embed = {
            "title": _clip(e.headline, EMBED_TITLE),
            "color": _DISCORD_COLOR.get(e.outcome, 0),
            "fields": [
                {"name": k, "value": _clip(_code(v), 256), "inline": True} for k, v in e.facts()
            ],
        }
        if e.link:
            embed["url"] = e.link
        if e.after_restart:
            embed["footer"] = {"text": AFTER_RESTART}
        if isinstance(e.finished, int | float):
            embed["timestamp"] = _iso(e.finished)
        parts = [f"**Error**\n{_code(e.error)}"] if e.error else []
        used = len(embed["title"]) + sum(len(f["name"]) + len(f["value"]) for f in embed["fields"])
        used += len(embed.get("footer", {}).get("text", ""))
        room = min(EMBED_DESCRIPTION, EMBED_TOTAL - used) - sum(len(p) + 2 for p in parts)
        if e.tail and room > 100:
            title = "**Last lines of stderr**\n"
            parts.append(title + _fence(e.tail, room - len(title), lambda s: s))
        if parts:
            embed["description"] = _clip("\n\n".join(parts), EMBED_DESCRIPTION)
        content = _dsc(f"{e.headline} (rule {e.rule})")
    return {
        "content": _clip(content, DISCORD_CONTENT),
        "embeds": [embed],
        "allowed_mentions": {"parse": []},  # a job's text pings nobody
    }


def _dsc(text: str) -> str:
    """Discord's markdown characters, escaped: text from a job is shown as written."""
    return re.sub(r"([\\*_~`|>\[\]])", r"\\\1", text)


# -- shared ------------------------------------------------------------------------------------


def _icon(outcome: str) -> str:
    return _ICON.get(outcome, "•")


def _words(outcome: str) -> str:
    return _WORDS.get(outcome, outcome)


def _tally(tally: Counter[str]) -> str:
    return ", ".join(f"{n} {_words(what)}" for what, n in sorted(tally.items()))


def _plain(text: str) -> str:
    """One line without terminal colours or control characters."""
    return _CONTROL.sub("", text.replace("\r\n", " ").replace("\n", " ").replace("\t", " "))


def _code(text: str) -> str:
    """Inline code (Slack, Mattermost and Discord alike), which no text can close early."""
    return "`" + (text.replace("`", _GRAVE) or " ") + "`"


def _fence(lines: list[str], room: int, esc: Any) -> str:
    """A code block of the last ``lines`` that fit in ``room`` characters."""
    body: list[str] = []
    size = 8  # the fences and their newlines
    for line in reversed(lines):
        text = esc(line.replace("```", _GRAVE * 3))
        if size + len(text) + 1 > room:
            break
        body.insert(0, text)
        size += len(text) + 1
    return "```\n" + "\n".join(body or ["…"]) + "\n```"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _clip_lines(lines: list[str], limit: int) -> str:
    out: list[str] = []
    size = 0
    for line in lines:
        if size + len(line) + 1 > limit - 2:
            out.append("…")
            break
        out.append(line)
        size += len(line) + 1
    return "\n".join(out)


def _link(value: object) -> str | None:
    """A link made from runner.http's address and the job id, safe inside ``<url|text>``,
    ``[text](url)`` and a card's URL."""
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        return None
    return quote(value, safe=":/?=&%#@+,;~!$'*[]")


def _duration(seconds: float) -> str:
    if seconds < 0:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, s = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {s} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")
