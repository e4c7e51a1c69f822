"""Notifications: real jobs through a real runner, to a real SMTP server (aiosmtpd) and a real
HTTP server (aiohttp), both on 127.0.0.1 with ports the OS picked."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from meow_async import (
    ConfigError,
    FilePattern,
    HttpPattern,
    NetworkPattern,
    Notify,
    Runner,
    WorkflowFileError,
    load_workflow,
)
from meow_async.model.jobs import Job, JobState
from meow_async.model.notify import Email, Webhook
from meow_async.notify import Notifier

from .conftest import WAIT, Workspace, py_recipe, sh_recipe
from .test_cli import meow

LOGGER = "meow_async.notify"


class Inbox:
    """What a server received, and a wait for a condition on it (no polling, no sleeps)."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._changed = asyncio.Event()

    def add(self, item: Any) -> None:
        self.items.append(item)
        self._changed.set()

    async def wait(self, predicate: Callable[[list[Any]], bool], timeout: float = WAIT) -> None:
        async with asyncio.timeout(timeout):
            while not predicate(self.items):
                self._changed.clear()
                await self._changed.wait()


@dataclass
class Post:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Hook:
    url: str
    inbox: Inbox = field(default_factory=Inbox)


@contextlib.asynccontextmanager
async def webhook_server() -> AsyncIterator[Hook]:
    inbox = Inbox()

    async def receive(request: web.Request) -> web.Response:
        inbox.add(Post(request.path, dict(request.headers), await request.json()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/{tail:.*}", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Hook(f"http://127.0.0.1:{port}", inbox)
    finally:
        await runner.cleanup()


@dataclass
class Mail:
    envelope: Envelope
    message: email.message.EmailMessage
    tls: bool
    login: bytes | None


@dataclass
class Smtp:
    port: int
    inbox: Inbox


class _Handler:
    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.content if isinstance(envelope.content, bytes) else b""
        message = email.message_from_bytes(data, policy=email.policy.default)
        assert isinstance(message, email.message.EmailMessage)
        # Both typed None by aiosmtpd, and set after a login and a STARTTLS.
        auth, tls = getattr(session, "auth_data", None), getattr(session, "ssl", None) is not None
        login = auth.login if isinstance(auth, LoginPassword) else None
        self.inbox.add(Mail(envelope, message, tls, login))
        return "250 OK"


@contextlib.asynccontextmanager
async def smtp_server(
    tls: ssl.SSLContext | None = None, login: tuple[bytes, bytes] | None = None
) -> AsyncIterator[Smtp]:
    """aiosmtpd on this test's loop: STARTTLS required with ``tls``, a login with ``login``."""
    inbox = Inbox()

    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == login
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)

    def make() -> SMTP:
        return SMTP(
            _Handler(inbox),
            hostname="smtp.test",
            tls_context=tls,
            require_starttls=tls is not None,
            authenticator=authenticate if login else None,
            auth_require_tls=True,
        )

    server = await asyncio.get_running_loop().create_server(make, "127.0.0.1", 0)
    try:
        yield Smtp(server.sockets[0].getsockname()[1], inbox)
    finally:
        server.close()
        await server.wait_closed()


def closed_port() -> int:
    """A port that was just bound and closed: connecting is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def failing(name: str = "bad") -> Any:
    return sh_recipe(name, 'echo "cannot read $input_file" >&2\nexit 3\n')


async def test_a_failed_job_is_emailed_and_posted_with_its_record(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEOW_TEST_HOOK_TOKEN", "s3cret")
    monkeypatch.setenv("MEOW_TEST_HOOK_KEY", "k3y")
    async with webhook_server() as hook, smtp_server() as smtp:
        notify = {
            "webhook": {
                "url": f"{hook.url}/hooks/meow?x=1",
                "token_env": "MEOW_TEST_HOOK_TOKEN",
                "headers": {"X-Source": "lab"},
                "headers_env": {"X-Api-Key": "MEOW_TEST_HOOK_KEY"},
            },
            "email": {
                "host": "127.0.0.1",
                "port": smtp.port,
                "from": "Meow <meow@lab.example>",
                "to": ["alice@lab.example", "bob@lab.example"],
            },
        }
        pattern = FilePattern(name="scans", glob="*.txt", recipe="bad", notify=notify)
        async with ws.runner([pattern], [failing()], http={"port": 0}) as runner:
            ws.write("a.txt")
            async with asyncio.timeout(WAIT):
                await runner.wait_for(lambda s: s.failed >= 1 and s.notifications_sent >= 2)
            async with aiohttp.ClientSession() as session:
                url = f"http://127.0.0.1:{runner.http_port}/metrics"
                async with session.get(url) as resp:
                    metrics = await resp.text()
    (job,) = ws.jobs_list()
    assert job["state"] == "failed"

    (post,) = hook.inbox.items
    assert post.path == "/hooks/meow"
    assert post.headers["Authorization"] == "Bearer s3cret"
    assert post.headers["X-Api-Key"] == "k3y"
    assert post.headers["X-Source"] == "lab"
    assert post.headers["X-Meow-Notification"] == "job"
    assert post.headers["Content-Type"] == "application/json"
    body = post.body
    assert body["id"] == job["id"]
    assert body["rule"] == "scans"
    assert body["state"] == "failed"
    assert body["outcome"] == "failed"
    assert body["timed_out"] is False
    assert body["exit_code"] == 3
    assert "exit code 3" in body["error"]
    assert "cannot read" in body["error"]
    assert body["event"]["path"] == str(ws.base / "a.txt")

    (mail,) = smtp.inbox.items
    assert mail.envelope.mail_from == "meow@lab.example"
    assert mail.envelope.rcpt_tos == ["alice@lab.example", "bob@lab.example"]
    msg = mail.message
    assert msg["From"] == "Meow <meow@lab.example>"
    assert msg["To"] == "alice@lab.example, bob@lab.example"
    assert msg["Subject"] == f"[meow_async] job {job['id']} failed (rule scans)"
    text = msg.get_content()
    assert f"Job {job['id']} (rule scans) ended: failed." in text
    assert "exit code 3" in text
    assert "cannot read" in text
    assert 'meow_notifications_total{outcome="sent"} 2.0' in metrics
    assert runner.stats.notifications_failed == runner.stats.notifications_dropped == 0


async def test_on_chooses_which_ends_notify(ws: Workspace) -> None:
    """A done job notifies only with ``on: [done]``; a timed-out job is ``timed_out``, which
    ``on: [failed]`` leaves out and the default takes in."""
    slow = py_recipe("slow", "import time\ntime.sleep(60)\n", timeout=0.3)
    ok = sh_recipe("ok", "true\n")
    async with webhook_server() as hook:

        def pattern(name: str, recipe: str, **notify: Any) -> FilePattern:
            return FilePattern(
                name=name,
                glob=f"{name}/*",
                recipe=recipe,
                notify={"webhook": f"{hook.url}/{name}", **notify},
            )

        patterns = [
            pattern("done_default", "ok"),
            pattern("done_on", "ok", on=["done"]),
            pattern("slow_failed_only", "slow", on=["failed"]),
            pattern("slow_default", "slow"),
        ]
        async with ws.runner(patterns, [slow, ok]) as runner:
            for p in patterns:
                ws.write(f"{p.name}/x")
            async with asyncio.timeout(WAIT):
                await runner.wait_for(lambda s: s.finished >= 4)
        # Stopped: anything filed was delivered by now (nothing failed or was dropped).
    stats = runner.stats
    assert (stats.done, stats.failed) == (2, 2)
    assert (stats.notifications_failed, stats.notifications_dropped) == (0, 0)
    got = {p.path: p.body for p in hook.inbox.items}
    assert sorted(got) == ["/done_on", "/slow_default"]
    assert got["/done_on"]["state"] == got["/done_on"]["outcome"] == "done"
    assert got["/slow_default"]["state"] == "failed"
    assert got["/slow_default"]["outcome"] == "timed_out"
    assert got["/slow_default"]["timed_out"] is True
    assert stats.notifications_sent == 2


async def test_email_over_starttls_with_a_login_from_the_environment(
    ws: Workspace,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("MEOW_TEST_SMTP_USER", "meow")
    monkeypatch.setenv("MEOW_TEST_SMTP_PASSWORD", "right")
    monkeypatch.setenv("MEOW_TEST_SMTP_WRONG", "wrong")
    async with smtp_server(tls=server_tls, login=(b"meow", b"right")) as smtp:

        def pattern(name: str, password_env: str) -> FilePattern:
            return FilePattern(
                name=name,
                glob=f"{name}/*",
                recipe="bad",
                notify=Notify(
                    email=Email(
                        host="127.0.0.1",
                        port=smtp.port,
                        starttls=True,
                        tls_ca=str(ca_file),
                        sender="meow@lab.example",
                        to="ops@lab.example",
                        username_env="MEOW_TEST_SMTP_USER",
                        password_env=password_env,
                        subject="{RULE} {STATE}: {JOB}",
                    )
                ),
            )

        patterns = [
            pattern("good", "MEOW_TEST_SMTP_PASSWORD"),
            pattern("wrong", "MEOW_TEST_SMTP_WRONG"),
        ]
        async with ws.runner(patterns, [failing()]) as runner:
            ws.write("good/a")
            ws.write("wrong/a")
            async with asyncio.timeout(WAIT):
                await runner.wait_for(
                    lambda s: s.notifications_sent >= 1 and s.notifications_failed >= 1
                )
    (mail,) = smtp.inbox.items
    assert mail.tls
    assert mail.login == b"meow"
    (job,) = [j for j in ws.jobs_list() if j["rule"] == "good"]
    assert mail.message["Subject"] == f"good failed: {job['id']}"
    # A refused login is final: given up at once, one line.
    (line,) = [m for m in caplog.messages if "gave up" in m]
    assert "after 1 attempt(s)" in line
    assert "535" in line


async def test_unreachable_destinations_leave_jobs_and_runner_alone(
    ws: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    smtp_port, http_port = closed_port(), closed_port()
    notify = Notify(
        webhook=f"http://127.0.0.1:{http_port}/hook",
        email={"host": "127.0.0.1", "port": smtp_port, "from": "m@x.example", "to": "o@x.example"},
        on=["done", "failed"],
        retries=1,
        retry_backoff=0.05,
    )
    patterns = [
        FilePattern(name="bad", glob="bad/*", recipe="bad", notify=notify),
        FilePattern(name="ok", glob="ok/*", recipe="ok", notify=notify),
    ]
    n = 5
    async with ws.runner(patterns, [failing(), sh_recipe("ok", "true\n")]) as runner:
        for i in range(n):
            ws.write(f"bad/{i}")
            ws.write(f"ok/{i}")
        async with asyncio.timeout(WAIT):
            # 5 notifications each may go on their own (the limit); both destinations fail.
            await runner.wait_for(lambda s: s.finished >= 2 * n and s.notifications_failed >= 10)
        assert not runner.stopping
        warnings_so_far = [r for r in caplog.records if r.levelno >= logging.WARNING]
        t0 = time.monotonic()
    stopped_in = time.monotonic() - t0
    # The rest (5 per destination) went into a digest, tried once at shutdown: no waiting.
    assert stopped_in < 2.0
    jobs = ws.jobs_list()
    assert len(jobs) == 2 * n
    assert sorted(j["state"] for j in jobs) == ["done"] * n + ["failed"] * n
    stats = runner.stats
    assert (stats.done, stats.failed) == (n, n)
    assert stats.notifications_sent == 0
    assert stats.notifications_failed == 12  # 5 + a digest, for each of the two
    assert stats.notifications_dropped == 0
    # Once per burst: the first failure and the first message given up, per destination.
    for label in (
        f"webhook http://127.0.0.1:{http_port}/hook",
        f"email to o@x.example via 127.0.0.1:{smtp_port}",
    ):
        lines = [r.getMessage() for r in warnings_so_far if r.getMessage().startswith(label)]
        assert len(lines) == 2, lines
        assert "cannot deliver the notification for job" in lines[0]
        assert "retrying up to 1 time(s)" in lines[0]
        assert "gave up on the notification for job" in lines[1]
        assert "after 2 attempt(s)" in lines[1]
        # and at shutdown, what the burst cost in all
        assert f"{label}: 6 notification(s) given up since the last one delivered" in (
            caplog.messages
        )


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[tuple[int, asyncio.Event]]:
    """Takes a request and never answers; the event is set when a request is in."""
    arrived = asyncio.Event()

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        arrived.set()
        await reader.read()  # until the notifier gives up and closes
        writer.close()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], arrived
    finally:
        server.close()
        await server.wait_closed()


async def test_shutdown_cuts_retries_short_and_bounds_a_hung_destination(
    ws: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    """One more attempt at shutdown instead of the remaining backoff (7 s here), and a
    destination that never answers is given up when the grace ends."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    async with silent_server() as (hung_port, arrived):
        refused = Notify(webhook=f"http://127.0.0.1:{closed_port()}/", retries=3, retry_backoff=1.0)
        silent = Notify(webhook={"url": f"http://127.0.0.1:{hung_port}/", "timeout": 60})
        patterns = [
            FilePattern(name="refused", glob="refused/*", recipe="bad", notify=refused),
            FilePattern(name="silent", glob="silent/*", recipe="bad", notify=silent),
        ]
        async with ws.runner(patterns, [failing()], shutdown_timeout=1.0) as runner:
            ws.write("refused/a")
            ws.write("silent/a")
            async with asyncio.timeout(WAIT):
                await runner.wait_for(lambda s: s.finished >= 2)
                await arrived.wait()  # the silent destination's request is in
            t0 = time.monotonic()
        stopped_in = time.monotonic() - t0
    assert 0.9 <= stopped_in < 3.0  # the grace is min(5 s, shutdown_timeout): 1 s
    stats = runner.stats
    assert stats.notifications_sent == 0
    assert stats.notifications_failed == 1  # refused: its last attempt, at shutdown
    assert stats.notifications_dropped == 1  # silent: still waiting when the grace ended
    assert any(
        m.startswith(f"webhook http://127.0.0.1:{hung_port}/")
        and "not delivered within the 1s shutdown grace, dropped" in m
        for m in caplog.messages
    ), caplog.messages


async def test_a_cancelled_runner_gives_notifications_no_grace(ws: Workspace) -> None:
    """Cancelling ``run()`` (rather than stopping) drops what is pending at once."""
    async with silent_server() as (hung_port, arrived):
        notify = Notify(webhook={"url": f"http://127.0.0.1:{hung_port}/", "timeout": 60})
        pattern = FilePattern(name="silent", glob="*", recipe="bad", notify=notify)
        runner = ws.runner([pattern], [failing()], shutdown_timeout=30.0)
        task = asyncio.create_task(runner.run())
        async with asyncio.timeout(WAIT):
            await runner.started.wait()
            ws.write("a")
            await runner.wait_for(lambda s: s.finished >= 1)
            await arrived.wait()
        t0 = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        stopped_in = time.monotonic() - t0
    assert stopped_in < 2.0  # not the 5 s grace
    assert runner.stats.notifications_dropped == 1


async def test_a_burst_of_200_failures_sends_the_limit_and_one_digest(ws: Workspace) -> None:
    n, limit = 200, 5
    async with webhook_server() as hook, smtp_server() as smtp:
        notify = {
            "webhook": f"{hook.url}/burst",
            "email": {"host": "127.0.0.1", "port": smtp.port, "from": "m@x.example", "to": "o@x"},
            "limit": limit,
            "window": 600,  # longer than the test: the digest goes out at shutdown
        }
        pattern = FilePattern(name="burst", glob="in/*", recipe="bad", notify=notify)
        (ws.base / "in").mkdir()
        async with ws.runner([pattern], [failing()]) as runner:
            for i in range(n):
                (ws.base / "in" / f"{i:03d}").write_text("x")
            async with asyncio.timeout(WAIT * 2):
                await runner.wait_for(lambda s: s.finished >= n)
                await hook.inbox.wait(lambda items: len(items) >= limit)
                await smtp.inbox.wait(lambda items: len(items) >= limit)
            assert len(hook.inbox.items) == len(smtp.inbox.items) == limit  # no digest yet
    ids = sorted(j["id"] for j in ws.jobs_list())
    assert len(ids) == n

    posts = hook.inbox.items
    assert [p.headers["X-Meow-Notification"] for p in posts] == ["job"] * limit + ["digest"]
    digest = posts[-1].body
    assert digest["digest"] is True
    assert digest["count"] == digest["listed"] == n - limit
    assert (digest["limit"], digest["window"]) == (limit, 600)
    assert {j["outcome"] for j in digest["jobs"]} == {"failed"}
    posted = [p.body["id"] for p in posts[:-1]] + [j["id"] for j in digest["jobs"]]
    assert sorted(posted) == ids  # every job once, none twice

    mails = smtp.inbox.items
    assert len(mails) == limit + 1
    subjects = [m.message["Subject"] for m in mails]
    assert all(s.startswith("[meow_async] job burst-") for s in subjects[:-1])
    assert (
        subjects[-1] == f"[meow_async] digest: {n - limit} more job(s) ended ({n - limit} failed)"
    )
    text = mails[-1].message.get_content()
    mailed = [m.message["Subject"].split()[2] for m in mails[:-1]]
    mailed += [line.split()[0] for line in text.splitlines() if line.startswith("burst-")]
    assert sorted(mailed) == ids
    assert runner.stats.notifications_sent == 2 * (limit + 1)


async def test_the_digest_goes_out_when_its_window_ends_and_a_new_window_opens(
    ws: Workspace,
) -> None:
    """limit 1, window 1 s: four jobs that fail together make one message and, a second
    later, a digest of three; a fifth job after that opens a new window: a message of its
    own."""
    gate = ws.root / "go"
    recipe = py_recipe(
        "gated",
        "import os, sys, time\n"
        "while not os.path.exists(gate):\n    time.sleep(0.005)\n"
        "sys.exit('failed on purpose')\n",
        parameters={"gate": str(gate)},
    )
    async with webhook_server() as hook:
        notify = {"webhook": hook.url, "limit": 1, "window": 1.0}
        pattern = FilePattern(name="g", glob="*", recipe="gated", notify=notify)
        async with ws.runner([pattern], [recipe], max_jobs=4) as runner:
            for i in range(4):
                ws.write(f"{i}")
            async with asyncio.timeout(WAIT):
                await runner.wait_for(lambda s: s.running >= 4)
                gate.touch()
                await runner.wait_for(lambda s: s.finished >= 4)
                await hook.inbox.wait(lambda items: len(items) >= 2)  # before any shutdown
                await runner.wait_for(lambda s: s.notifications_sent >= 2)
                ws.write("late")
                await hook.inbox.wait(lambda items: len(items) >= 3)
    first, digest, late = (p.body for p in hook.inbox.items)
    assert "id" in first
    assert digest["digest"] is True
    assert digest["count"] == 3
    assert digest["until"] - digest["since"] >= 1.0 - 0.05  # sent at the window's end
    by_id = {j["id"]: j for j in ws.jobs_list()}
    assert sorted([first["id"], *(j["id"] for j in digest["jobs"])]) == sorted(
        i for i, j in by_id.items() if j["event"]["path"] != str(ws.base / "late")
    )
    assert by_id[late["id"]]["event"]["path"] == str(ws.base / "late")
    assert runner.stats.notifications_sent == 3


async def test_a_digest_lists_at_most_1000_jobs_and_counts_the_rest(tmp_path: Path) -> None:
    """The notifier on its own, fed 1202 job ends at once: one message, then one digest that
    lists 1000 of the other 1201 and counts them all."""
    async with webhook_server() as hook:
        notifier = Notifier()
        notify = Notify(webhook=hook.url, limit=1, window=600)
        for i in range(1202):
            job_id = f"r-{i:04d}"
            meta = {"id": job_id, "rule": "r", "timed_out": i % 2 == 0}
            job = Job(id=job_id, dir=tmp_path, argv=[], env={}, meta=meta)
            notifier.job_ended(job, JobState.failed, notify)
        await notifier.close(grace=WAIT)  # sends the held digest, then returns
    first, digest = (p.body for p in hook.inbox.items)
    assert (first["id"], first["outcome"]) == ("r-0000", "timed_out")
    assert digest["count"] == 1201
    assert digest["listed"] == len(digest["jobs"]) == 1000
    assert digest["outcomes"] == {"failed": 601, "timed_out": 600}
    assert [j["id"] for j in digest["jobs"]] == [f"r-{i:04d}" for i in range(1, 1001)]
    assert notifier.stats.notifications_sent == 2


@pytest.mark.parametrize(
    ("notify", "field", "words"),
    [
        ({"webhok": "http://x"}, "notify.webhok", "did you mean 'webhook'?"),
        ({"webhook": "ftp://x/y"}, "notify.webhook.url", "http:// or https:// URL"),
        ({"webhook": "http://"}, "notify.webhook.url", "http:// or https:// URL"),
        ({"webhook": "http://[::1/x"}, "notify.webhook.url", "http:// or https:// URL"),
        ({"webhook": {"url": "http://x", "tokn_env": "T"}}, "notify.webhook.tokn_env", "token_env"),
        (
            {"webhook": {"url": "http://x", "token_env": "MEOW_TEST_UNSET"}},
            "notify.webhook.token_env",
            "environment variable MEOW_TEST_UNSET (the bearer token) is not set",
        ),
        ({"email": {"host": "h", "to": "a@b"}}, "notify.email.from", "needs 'from'"),
        ({"email": {"host": "h", "from": "a@b", "to": ["x"]}}, "notify.email.to[0]", "address"),
        (
            {
                "email": {
                    "host": "h",
                    "from": "a@b",
                    "to": "c@d",
                    "starttls": True,
                    "username_env": "MEOW_TEST_UNSET",
                    "password_env": "MEOW_TEST_UNSET",
                }
            },
            "notify.email.username_env",
            "environment variable MEOW_TEST_UNSET (the SMTP username) is not set",
        ),
        (
            {"email": {"host": "h", "from": "a@b", "to": "c@d", "username_env": "U"}},
            "notify.email.password_env",
            "needs both",
        ),
        (
            {"email": {"host": "h", "from": "a@b", "to": "c@d", "tls": True, "starttls": True}},
            "notify.email.starttls",
            "not both",
        ),
        ({"webhook": "http://x", "on": ["finished"]}, "notify.on", "done, failed, timed_out"),
        ({"webhook": "http://x", "limit": 0}, "notify.limit", "at least 1"),
        ({"webhook": "http://x", "window": 0}, "notify.window", "above 0"),
        ({}, "notify", "a webhook, an email or both"),
        ("http://x", "notify", "mapping"),
    ],
)
def test_a_bad_notify_setting_is_a_config_error_naming_its_field(
    notify: Any, field: str, words: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MEOW_TEST_UNSET", raising=False)
    with pytest.raises(ConfigError) as info:
        FilePattern(name="p", glob="*", recipe="r", notify=notify)
    assert info.value.field == field
    assert info.value.where == "pattern 'p'"
    assert words in info.value.message
    assert str(info.value).startswith(f"pattern 'p'.{field}: ")


def test_workflow_files_take_notify_on_every_kind_of_pattern(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = trustme.CA()
    (tmp_path / "certs").mkdir()
    ca.cert_pem.write_to_path(str(tmp_path / "certs" / "ca.pem"))
    monkeypatch.delenv("MEOW_TEST_UNSET", raising=False)
    wf = tmp_path / "workflow.yaml"
    wf.write_text(
        "recipes:\n"
        "  r: {kind: bash, script: 'true'}\n"
        "patterns:\n"
        "  files:\n"
        "    glob: '*.txt'\n"
        "    recipe: r\n"
        "    notify:\n"
        "      email: {host: smtp.example, starttls: true, tls_ca: certs/ca.pem,\n"
        "              from: m@x.example, to: [a@x.example]}\n"
        "      on: [failed, skipped]\n"
        "  net:\n"
        "    port: 0\n"
        "    recipe: r\n"
        "    notify: {webhook: 'https://hooks.example/meow'}\n"
        "  web:\n"
        "    route: /in\n"
        "    port: 0\n"
        "    recipe: r\n"
        "    notify: {webhook: {url: 'https://hooks.example/meow', timeout: 3}, limit: 2}\n"
    )
    spec = load_workflow(wf)
    by_name = {p.name: p for p in spec.patterns}
    files, net, web_ = by_name["files"], by_name["net"], by_name["web"]
    assert isinstance(net, NetworkPattern)
    assert isinstance(web_, HttpPattern)
    assert isinstance(files.notify, Notify)
    assert isinstance(files.notify.email, Email)
    assert files.notify.email.tls_ca == str(tmp_path / "certs" / "ca.pem")
    assert files.notify.email.port == 587
    assert files.notify.on == {"failed", "skipped"}
    assert isinstance(net.notify, Notify)
    assert net.notify.webhook == Webhook(url="https://hooks.example/meow")
    assert isinstance(web_.notify, Notify)
    assert web_.notify.limit == 2

    wf.write_text(
        "recipes:\n"
        "  r: {kind: bash, script: 'true'}\n"
        "patterns:\n"
        "  files:\n"
        "    glob: '*.txt'\n"
        "    recipe: r\n"
        "    notify:\n"
        "      emial: {host: h}\n"
        "  web:\n"
        "    route: /in\n"
        "    port: 0\n"
        "    recipe: r\n"
        "    notify: {webhook: {url: 'http://h', token_env: MEOW_TEST_UNSET}}\n"
    )
    with pytest.raises(WorkflowFileError) as info:
        load_workflow(wf)
    unknown, unset = info.value.problems
    assert unknown.startswith(f"{wf}:8:")  # the nested key, located
    assert (
        "patterns.files.notify.emial: unknown setting (did you mean 'email'?); "
        "allowed: email, limit, on, retries, retry_backoff, webhook, window"
    ) in unknown
    assert unset.startswith(f"{wf}:13:")
    assert (
        "patterns.web.notify.webhook.token_env: environment variable MEOW_TEST_UNSET "
        "(the bearer token) is not set"
    ) in unset


def test_validate_refuses_a_webhook_login_in_its_url_with_a_token_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A URL's user and password become the Authorization header, and aiohttp refuses a second
    one: each message failed, was retried 3 times and given up. Now `validate` says so."""
    monkeypatch.setenv("MEOW_TEST_TOKEN", "t0k3n")
    (tmp_path / "data").mkdir()
    wf = tmp_path / "workflow.yaml"
    head = "runner: {base_dir: data}\nrecipes:\n  r: {kind: bash, script: 'exit 1'}\npatterns:\n"
    wf.write_text(
        head + "  a:\n"
        "    glob: '*.a'\n"
        "    recipe: r\n"
        "    notify:\n"
        "      webhook:\n"
        "        url: http://user:pw@127.0.0.1:9/hook\n"
        "        token_env: MEOW_TEST_TOKEN\n"
        "  b:\n"
        "    glob: '*.b'\n"
        "    recipe: r\n"
        "    notify: {webhook: {url: 'http://user@127.0.0.1:9/', headers: {authorization: x}}}\n"
    )
    res = meow("validate", "workflow.yaml", cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert res.stderr.splitlines()[1:] == [
        "  workflow.yaml:11:20: patterns.a.notify.webhook.token_env: the URL's user name and "
        "password are sent as Authorization already: give one or the other "
        '(value: "MEOW_TEST_TOKEN")',
        "  workflow.yaml:15:82: patterns.b.notify.webhook.headers.authorization: the URL's user "
        "name and password are sent as Authorization already: give one or the other "
        '(value: "x")',
    ]
    # A login in the URL alone is fine: it goes as Basic authorization.
    wf.write_text(head + "  a: {glob: '*.a', recipe: r, notify: {webhook: 'http://u:p@h/'}}\n")
    res = meow("validate", "workflow.yaml", cwd=tmp_path)
    assert res.returncode == 0, res.stderr


async def test_a_runner_without_notifications_makes_no_client(ws: Workspace) -> None:
    """Nothing is set up for patterns without ``notify``: no session, no task."""
    pattern = FilePattern(name="p", glob="*", recipe="bad")
    runner: Runner
    async with ws.runner([pattern], [failing()]) as runner:
        ws.write("a")
        async with asyncio.timeout(WAIT):
            await runner.wait_for(lambda s: s.finished >= 1)
        assert runner.notifier._outboxes == {}
        assert runner.notifier._session is None
    assert runner.stats.notifications_sent == 0
