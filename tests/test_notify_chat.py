"""Chat webhooks: real jobs through a real runner, posted to stand-ins for Slack, Mattermost,
Teams and Discord (tests/chat_services.py) that check what each service documents and answer
as it does; webhook URLs from environment variables, kept out of the log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from meow_async import ConfigError, FilePattern, Notify, RunnerConfig
from meow_async.model.jobs import Job, JobState
from meow_async.notify import Notifier, outbox

from .chat_services import SECRET, ChatServices, chat_services
from .conftest import WAIT, Workspace, py_recipe
from .test_cli import meow
from .test_notify import closed_port

#: A failing job whose stderr has what each service must not take as its own markup, lines
#: longer than any limit, and more lines than a message shows.
NOISY = py_recipe(
    "noisy",
    "import sys\n"
    "for i in range(40):\n"
    "    print(f'noise {i:02d} ' + 'x' * 200, file=sys.stderr)\n"
    "print('File \"<string>\", line 1, in <module> & *not bold* __init__ `tick` <!channel>',"
    " file=sys.stderr)\n"
    "print('\\x1b[31mcolour\\x1b[0m', file=sys.stderr)\n"
    "sys.exit('ValueError: cannot read ' + input_file + ' ' + 'y' * 1500)\n",
)

LINK_BASE = "https://lab.example.org/meow"


def job_of(meta: dict[str, Any]) -> Job:
    """A job as the notifier is given it, with no folder (so no stderr)."""
    return Job(id=str(meta["id"]), dir=Path("/nonexistent"), argv=[], env={}, meta=meta)


def hooks(services: ChatServices) -> dict[str, dict[str, Any]]:
    return {
        "slack": {"url": services.url("slack"), "format": "slack"},
        "mattermost": {"url": services.url("mattermost"), "format": "slack"},
        "teams": {"url": services.url("teams"), "format": "teams"},
        "discord": {"url": services.url("discord"), "format": "discord"},
    }


async def test_each_chat_format_is_the_shape_its_service_documents(ws: Workspace) -> None:
    """One failed job, four services: each accepts its message (its own checks, its own
    answer), which says the job, rule, end, exit code, input, how long it ran, the last lines
    of stderr (cut to the service's limits, nothing read as markup or a mention), and links to
    the job's page on runner.http's public address."""
    async with chat_services() as services:
        patterns = [
            FilePattern(
                name=f"{name}_scans",
                glob=f"{name}/**/*.csv",
                recipe="noisy",
                notify={"webhook": hook},
            )
            for name, hook in hooks(services).items()
        ]
        http = {"host": "127.0.0.1", "port": 0, "public_url": LINK_BASE + "/"}
        async with ws.runner(patterns, [NOISY], http=http) as runner:
            for name in hooks(services):
                ws.write(f"{name}/run_1/day_1.csv")
            async with asyncio.timeout(WAIT):
                await runner.wait_for(lambda s: s.notifications_sent >= 4)
    by_rule = {j["rule"]: j for j in ws.jobs_list()}
    assert {r.service: (r.status, r.problems) for r in services.received} == {
        "slack": (200, []),
        "mattermost": (200, []),
        "teams": (202, []),
        "discord": (204, []),
    }
    assert runner.stats.notifications_failed == 0

    def job(service: str) -> dict[str, Any]:
        return by_rule[f"{service}_scans"]

    # Slack: the blocks are what it shows; `text` is the notification's.
    (slack,) = services.of("slack")
    assert slack.path == f"/slack/services/T0MEOW/B0MEOW/{SECRET}"
    blocks = slack.body["blocks"]
    assert blocks[0] == {
        "type": "header",
        "text": {
            "type": "plain_text",
            "text": f"❌ Job failed: {job('slack')['id']}",
            "emoji": True,
        },
    }
    fields = [f["text"] for f in blocks[1]["fields"]]
    assert fields[:3] == [
        "*Rule*\n`slack_scans`",
        "*Input*\n`slack/run_1/day_1.csv`",
        "*Exit code*\n`1`",
    ]
    assert re.fullmatch(r"\*Ran for\*\n`(\d+ ms|\d+\.\d s)`", fields[3])
    shown = json.dumps(blocks)
    assert "ValueError: cannot read" in shown
    assert "in &lt;module&gt; &amp; *not bold* __init__" in shown  # escaped, as Slack asks
    assert "&lt;!channel&gt;" in shown
    assert "noise 39" in shown
    assert "noise 32" not in shown  # the last 10 lines only
    assert "colour" in shown
    assert "\\u001b" not in shown  # without terminal colours
    link = f"{LINK_BASE}/jobs/{job('slack')['id']}"
    assert {
        "type": "section",
        "text": {"type": "mrkdwn", "text": f"<{link}|Open the job>"},
    } in blocks
    assert slack.body["text"].startswith(
        f"❌ Job failed: {job('slack')['id']} (rule slack_scans)\n"
    )

    # Mattermost shows `text` (not the blocks), with Slack's link made markdown.
    (mm,) = services.of("mattermost")
    mm_link = f"{LINK_BASE}/jobs/{job('mattermost')['id']}"
    assert f"[Open the job]({mm_link})" in mm.shown
    assert "Error: `exit code 1: ValueError: cannot read" in mm.shown
    assert "Input: mattermost/run_1/day_1.csv · Exit code: 1 · Ran for:" in mm.shown
    # its stderr in a code block as written, except what would mention someone
    assert 'File "<string>", line 1, in <module> & *not bold*' in mm.shown
    assert "&lt;!channel>" in mm.shown
    assert re.search(r"\ncolour\nValueError: cannot read .*y…\n```$", mm.shown)

    # Teams: an Adaptive Card, as the Workflows webhook takes it.
    (teams,) = services.of("teams")
    assert teams.query == "api-version=1&sig=s3cr3t"
    (attachment,) = teams.body["attachments"]
    card = attachment["content"]
    assert card["body"][0]["text"] == f"❌ Job failed: {job('teams')['id']}"
    assert card["body"][0]["color"] == "Attention"
    runs = [
        "".join(r["text"] for r in e["inlines"])
        for e in card["body"]
        if e["type"] == "RichTextBlock"
    ]
    assert runs[:3] == ["Rule: teams_scans", "Input: teams/run_1/day_1.csv", "Exit code: 1"]
    (error,) = [r for r in runs if r.startswith("Error: exit code 1: ValueError: cannot read")]
    assert error.endswith("…")
    assert runs[-2] == "colour"
    assert runs[-1].startswith("ValueError: cannot read")
    assert len(runs[-1]) == 300
    assert card["actions"] == [
        {
            "type": "Action.OpenUrl",
            "title": "Open the job",
            "url": f"{LINK_BASE}/jobs/{job('teams')['id']}",
        }
    ]

    # Discord: content and one embed, within its limits, pinging nobody.
    (discord,) = services.of("discord")
    assert discord.body["allowed_mentions"] == {"parse": []}
    escaped = job("discord")["id"].replace("_", "\\_")
    assert discord.body["content"] == f"❌ Job failed: {escaped} (rule discord\\_scans)"
    (embed,) = discord.body["embeds"]
    assert embed["url"] == f"{LINK_BASE}/jobs/{job('discord')['id']}"
    assert embed["color"] == 0xE01E5A
    assert [f["name"] for f in embed["fields"]] == ["Rule", "Input", "Exit code", "Ran for"]
    assert embed["description"].startswith("**Error**\n`exit code 1: ValueError: cannot read")
    assert embed["description"].endswith("y…\n```")


async def test_digests_in_each_chat_format() -> None:
    """limit 1: 30 jobs that end at once make one message and, at the window's end (here, at
    close), one digest of 29 that names 20 and counts the rest, in each service's shape."""
    async with chat_services() as services:
        notifier = Notifier()
        for service, hook in hooks(services).items():
            notify = Notify(webhook=hook, limit=1, window=600, on=["failed", "timed_out"])
            for i in range(30):
                meta = {
                    "id": f"{service}-{i:02d}",
                    "rule": "scans",
                    "error": f"exit code 1: <bad> line {i}",
                    "exit_code": 1,
                    "timed_out": i % 3 == 0,
                }
                notifier.job_ended(job_of(meta), JobState.failed, notify)
        await notifier.close(grace=WAIT)
    assert [(r.service, r.problems) for r in services.received if r.problems] == []
    assert notifier.stats.notifications_sent == 8

    def digest(service: str) -> Any:
        _first, second = services.of(service)
        return second.body

    slack = digest("slack")
    headline = "📋 29 more job(s) ended (20 failed, 9 timed out)"
    assert slack["blocks"][0]["text"]["text"] == headline
    listed = re.findall(r"`slack-(\d\d)`", json.dumps(slack["blocks"]))
    assert listed == [f"{i:02d}" for i in range(1, 21)]
    assert "… and 9 more: meow-async jobs --since" in slack["blocks"][-1]["elements"][0]["text"]
    assert "&lt;bad&gt;" in json.dumps(slack["blocks"])
    mattermost = services.of("mattermost")[1]
    assert mattermost.shown.startswith(headline)

    card = digest("teams")["attachments"][0]["content"]
    assert card["body"][0]["text"] == headline
    ids = [e["inlines"][0]["text"] for e in card["body"] if e["type"] == "RichTextBlock"]
    assert ids == [f"teams-{i:02d}" for i in range(1, 21)]

    embed = digest("discord")["embeds"][0]
    assert embed["title"] == headline
    assert len(re.findall(r"`discord-\d\d`", embed["description"])) == 20
    assert "… and 9 more" in embed["description"]


async def test_a_429_with_retry_after_is_waited_out_not_a_failure(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Discord answers 429 (Retry-After: 1, and retry_after in its JSON body), Slack 429 with
    an hour's Retry-After: each is sent again once the wait is over (the hour bounded by
    RETRY_AFTER_MAX), with ``retries: 0`` (a failure would be given up at once), nothing
    given up, and no warning."""
    caplog.set_level(logging.INFO, logger="meow_async.notify")
    monkeypatch.setattr(outbox, "RETRY_AFTER_MAX", 1.5)
    async with chat_services() as services:
        limited = '{"message": "You are being rate limited.", "retry_after": 1.0, "global": false}'
        services.refuse["discord"] = [(429, "1", limited)]
        services.refuse["slack"] = [(429, "3600", "rate_limited")]
        notifier = Notifier()
        for service in ("discord", "slack"):
            notify = Notify(webhook=hooks(services)[service], retries=0)
            meta = {"id": f"{service}-1", "rule": "r", "exit_code": 2, "error": "exit code 2"}
            notifier.job_ended(job_of(meta), JobState.failed, notify)
        await services.wait(lambda got: len([r for r in got if r.status < 300]) == 2)
        await notifier.close(grace=WAIT)
    assert notifier.stats.notifications_sent == 2
    assert notifier.stats.notifications_failed == 0
    for service, at_least in (("discord", 1.0), ("slack", 1.5)):
        refused, accepted = [r for r in services.received if r.service == service]
        assert (refused.status, accepted.status) in ((429, 204), (429, 200))
        assert accepted.at - refused.at >= at_least - 0.05
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("rate-limited (HTTP 429 Too Many Requests" in m for m in caplog.messages)


async def test_a_refusal_is_given_up_with_what_the_service_said(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="meow_async.notify")
    async with chat_services() as services:
        services.refuse["slack"] = [(404, None, "channel_not_found")]
        notifier = Notifier()
        notify = Notify(webhook=hooks(services)["slack"], retries=3)
        meta = {"id": "r-1", "rule": "r"}
        notifier.job_ended(job_of(meta), JobState.failed, notify)
        await services.wait(lambda got: len(got) == 1)
        await notifier.close(grace=WAIT)
    assert notifier.stats.notifications_failed == 1
    (line,) = [m for m in caplog.messages if "gave up" in m]
    assert "after 1 attempt(s): HTTP 404 Not Found: channel_not_found" in line


@contextlib.asynccontextmanager
async def garbling_server() -> AsyncIterator[int]:
    """Answers every request with a malformed status line."""

    async def garble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.write(b"HTTP/1.1 2xx nonsense\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garble, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_url_env_posts_to_the_secret_url_and_logs_only_its_host(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The URL comes from the environment; log lines name the webhook by scheme, host and
    variable, never by its path (the secret) or query."""
    caplog.set_level(logging.DEBUG)
    down = closed_port()
    async with chat_services() as services, garbling_server() as garbled:
        monkeypatch.setenv("MEOW_TEST_SLACK_URL", services.url("slack"))
        monkeypatch.setenv("MEOW_TEST_DOWN_URL", f"http://127.0.0.1:{down}/hooks/{SECRET}?k=v")
        monkeypatch.setenv("MEOW_TEST_GARBLED_URL", f"http://127.0.0.1:{garbled}/{SECRET}?k=v")
        patterns = [
            FilePattern(
                name=name,
                glob=f"{name}/*",
                recipe="noisy",
                notify={
                    "webhook": {"url_env": env, "format": "slack"},
                    "retries": 0,
                },
            )
            for name, env in (
                ("up", "MEOW_TEST_SLACK_URL"),
                ("down", "MEOW_TEST_DOWN_URL"),
                ("garbled", "MEOW_TEST_GARBLED_URL"),
            )
        ]
        async with ws.runner(patterns, [NOISY]) as runner:
            for name in ("up", "down", "garbled"):
                ws.write(f"{name}/a")
            async with asyncio.timeout(WAIT):
                await runner.wait_for(
                    lambda s: s.notifications_sent >= 1 and s.notifications_failed >= 2
                )
    (got,) = services.of("slack")
    assert got.path.endswith(SECRET)
    assert got.problems == []
    # Everything logged but the stand-in server's own access log.
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name != "aiohttp.access")
    assert f"webhook http://127.0.0.1:{down}/… ($MEOW_TEST_DOWN_URL): gave up" in logged
    # aiohttp's error for a malformed answer quotes the URL: not in our log.
    assert f"http://127.0.0.1:{garbled}/…?…'" in logged
    assert SECRET not in logged
    assert "k=v" not in logged
    assert SECRET not in repr(patterns[0].notify)


def test_url_env_mistakes_are_load_errors_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MEOW_TEST_UNSET", raising=False)
    monkeypatch.setenv("MEOW_TEST_NOT_A_URL", f"hooks.example.org/{SECRET}")
    (tmp_path / "data").mkdir()
    wf = tmp_path / "workflow.yaml"
    wf.write_text(
        "runner: {base_dir: data}\n"
        "recipes:\n  r: {kind: bash, script: 'exit 1'}\n"
        "patterns:\n"
        "  a: {glob: '*.a', recipe: r, notify: {webhook: {url_env: MEOW_TEST_UNSET}}}\n"
        "  b: {glob: '*.b', recipe: r, notify: {webhook: {url_env: MEOW_TEST_NOT_A_URL}}}\n"
        "  c: {glob: '*.c', recipe: r, notify: {webhook: {url: 'http://h/', url_env: X}}}\n"
        "  d: {glob: '*.d', recipe: r, notify: {webhook: {url: 'http://h/', format: slak}}}\n"
        "  e: {glob: '*.e', recipe: r, notify: {webhook: {format: slack}}}\n"
    )
    res = meow("validate", "workflow.yaml", cwd=tmp_path)
    assert res.returncode == 1
    problems = res.stderr.splitlines()[1:]
    assert problems == [
        "  workflow.yaml:5:59: patterns.a.notify.webhook.url_env: environment variable "
        'MEOW_TEST_UNSET (the webhook URL) is not set (value: "MEOW_TEST_UNSET")',
        "  workflow.yaml:6:59: patterns.b.notify.webhook.url_env: expected an http:// or "
        'https:// URL in $MEOW_TEST_NOT_A_URL (value: "MEOW_TEST_NOT_A_URL")',
        "  workflow.yaml:7:77: patterns.c.notify.webhook.url_env: give url or url_env, not "
        'both (value: "X")',
        "  workflow.yaml:8:76: patterns.d.notify.webhook.format: expected one of json, slack, "
        'teams, discord (value: "slak")',
        "  workflow.yaml:9:49: patterns.e.notify.webhook.url: a webhook needs url or url_env",
    ]
    assert SECRET not in res.stderr


@pytest.mark.parametrize(
    ("http", "words"),
    [
        ({"port": 0, "public_url": "ftp://lab/"}, "http:// or https:// URL"),
        ({"port": 0, "public_url": "https://[::1/meow"}, "http:// or https:// URL"),
        ({"port": 0, "public_url": "https://lab/x?token=1"}, "no query"),
        ({"port": 0, "pubic_url": "https://lab/"}, "did you mean 'public_url'"),
    ],
)
def test_public_url_is_checked(http: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError) as info:
        RunnerConfig(http=http)
    assert words in str(info.value)


async def test_links_use_the_bound_address_without_public_url(ws: Workspace) -> None:
    """runner.http on port 0 and no public_url: the link is http://HOST:PORT/jobs/<id>, with
    the port it got, which answers with the job's record."""
    import aiohttp

    async with chat_services() as services:
        pattern = FilePattern(
            name="p", glob="*", recipe="noisy", notify={"webhook": hooks(services)["discord"]}
        )
        async with ws.runner([pattern], [NOISY], http={"port": 0}) as runner:
            ws.write("a")
            async with asyncio.timeout(WAIT):
                await runner.wait_for(lambda s: s.notifications_sent >= 1)
            (got,) = services.of("discord")
            link = got.body["embeds"][0]["url"]
            (job,) = ws.jobs_list()
            assert link == f"http://127.0.0.1:{runner.http_port}/jobs/{job['id']}"
            async with aiohttp.ClientSession() as session, session.get(link) as resp:
                assert resp.status == 200
                assert (await resp.json())["id"] == job["id"]
