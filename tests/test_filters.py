"""``when:`` filters: compiled at load, evaluated per event before any job folder exists, on
files, TCP messages and HTTP requests (GitHub-shaped webhooks signed with openssl, sent with
curl), counted, and failing safe."""

# ruff: noqa: S105, S106 - the secrets here are made up for the tests, and names of variables

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from meow_async import (
    ConfigError,
    FilePattern,
    HttpPattern,
    NetworkPattern,
    Runner,
    WorkflowFileError,
    load_workflow,
)
from meow_async.model.filters import Facts, compile_filter
from meow_async.monitors.filtering import Filtering

from .conftest import WAIT, Workspace, poll_until, py_recipe, sh_recipe

SECRET = "webhook-secret-for-tests"
OPENSSL = shutil.which("openssl")
CURL = shutil.which("curl")


# -- compiling ---------------------------------------------------------------------------------


def test_a_filter_that_does_not_compile_is_a_load_error_with_its_place(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(
        "recipes:\n"
        "  py: {kind: python, script: pass}\n"
        "patterns:\n"
        "  hook:\n"
        "    route: /hook\n"
        "    port: 0\n"
        "    when: 'body.ref == \"main\" &&'\n"
        "    recipe: py\n"
        "  files:\n"
        "    glob: '*.csv'\n"
        "    when: 'payload.size > 3'\n"
        "    recipe: py\n"
        "  sizes:\n"
        "    glob: '*.csv'\n"
        "    when: 'size + 1'\n"
        "    recipe: py\n"
    )
    with pytest.raises(WorkflowFileError) as e:
        load_workflow(path)
    text = str(e.value)
    assert (
        f"{path}:7:11: patterns.hook.when: the filter does not compile: line 1, column 22 of "
        "the expression: Syntax error" in text
    )
    assert (
        f"{path}:11:11: patterns.files.when: the filter does not compile: line 1, column 8 of "
        "the expression: undeclared reference to 'payload.size'; a file pattern's filter "
        "knows path, name, size, change" in text
    )
    assert f"{path}:15:11: patterns.sizes.when: a filter must give true or false" in text


def test_each_kind_of_pattern_takes_a_filter_on_its_own_names() -> None:
    FilePattern(name="f", glob="*", recipe="r", when='name.endsWith(".csv") && size > 0')
    NetworkPattern(name="n", port=0, recipe="r", when='payload.kind == "scan" && size < 100')
    HttpPattern(name="h", route="/x", port=0, recipe="r", when='method == "POST"')
    with pytest.raises(ConfigError) as e:
        NetworkPattern(name="n", port=0, recipe="r", when="body.x == 1")
    assert e.value.field == "when"


def test_run_time_errors_are_no_match_with_a_rate_limited_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from meow_async import Rule

    rule = Rule(
        pattern=HttpPattern(name="h", route="/x", port=0, recipe="r", when="body.n > 3"),
        recipe=py_recipe("r"),
    )
    filtering = Filtering()

    def names(body: Any) -> Facts:
        return Facts(
            "http",
            lambda: {
                "body": body,
                "headers": {},
                "query": {},
                "route": {},
                "method": "POST",
                "identity": None,
            },
        )

    async def run() -> None:
        with caplog.at_level(logging.WARNING, "meow_async.monitors.filtering"):
            assert filtering.passes(rule, names({"n": 5}))
            assert not filtering.passes(rule, names({"n": 2}))
            for _ in range(50):  # a missing field, a wrong type: no match, one warning
                assert not filtering.passes(rule, names({"other": 1}))
                assert not filtering.passes(rule, names({"n": "five"}))
            # JSON integers beyond 64 bits are compared as doubles, not failed on
            assert filtering.passes(rule, names({"n": 2**70, "id": 2**80}))

    asyncio.run(run())
    assert filtering.filtered["h"] == 101
    assert filtering.failed["h"] == 100
    warnings = [r for r in caplog.records if "its filter failed" in r.getMessage()]
    assert len(warnings) == 1
    assert "rule h" in warnings[0].getMessage()


def test_names_are_made_once_per_event_however_many_rules_look() -> None:
    from meow_async import Rule

    made = []

    def names() -> dict[str, Any]:
        made.append(1)
        return {"path": "a/b.csv", "name": "b.csv", "size": 10, "change": "created"}

    rules = [
        Rule(
            pattern=FilePattern(name=f"r{i}", glob="*", recipe="py", when=f"size > {i}"),
            recipe=py_recipe(),
        )
        for i in range(20)
    ]
    wanted = Filtering().wanted(rules, "file", names)
    assert [r.name for r in wanted] == [f"r{i}" for i in range(10)]
    assert made == [1]
    assert compile_filter("file", "size > 1").test(Facts("file", names))


# -- on real events ----------------------------------------------------------------------------


async def test_file_events_the_filter_rejects_make_no_job(ws: Workspace) -> None:
    big = FilePattern(name="big", glob="*.dat", recipe="py", when="size >= 10")
    csv = FilePattern(name="csv", glob="*", recipe="py", when='name.endsWith(".csv")')
    async with ws.runner([big, csv], [py_recipe()]) as runner:
        ws.write("small.dat", "123")
        ws.write("large.dat", "0123456789abc")
        ws.write("table.csv", "a,b")
        async with asyncio.timeout(WAIT):
            await runner.wait_for(lambda s: s.finished >= 2)
        await poll_until(lambda: runner.filtering.filtered == {"big": 1, "csv": 2})
    made = sorted((j["rule"], Path(j["event"]["path"]).name) for j in ws.jobs_list())
    assert made == [("big", "large.dat"), ("csv", "table.csv")]


async def test_tcp_messages_filtered_by_their_json_payload_are_still_acknowledged(
    ws: Workspace,
) -> None:
    scans = NetworkPattern(
        name="scans", port=0, recipe="py", ack=True, framing="delimiter",
        when='payload.kind == "scan" && peer.startsWith("127.0.0.1:")',
    )  # fmt: skip
    async with ws.runner([scans], [py_recipe()]) as runner:
        port = runner.ports()["scans"]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for line in (b'{"kind": "scan", "n": 1}', b'{"kind": "dark"}', b"not json", b"[1,2]"):
            writer.write(line + b"\n")
        await writer.drain()
        acks = [await asyncio.wait_for(reader.readline(), WAIT) for _ in range(4)]
        writer.close()
        assert all(a.startswith(b"ok ") for a in acks), acks
        async with asyncio.timeout(WAIT):
            await runner.wait_for(lambda s: s.finished >= 1)
        assert runner.filtering.filtered["scans"] == 3
        assert runner.filtering.failed["scans"] == 2  # no payload (not JSON), a list's .kind
    jobs = ws.jobs_list()
    assert len(jobs) == 1
    assert json.loads(Path(jobs[0]["parameters"]["input_file"]).read_text())["n"] == 1
    assert not list(runner.spool_dir.glob("*.msg"))  # the rejected ones left nothing


async def test_a_body_over_filter_max_body_is_not_parsed(ws: Workspace) -> None:
    hook = HttpPattern(name="hook", route="/h", port=0, recipe="py", when="has(body.ok)")
    async with ws.runner([hook], [py_recipe()], filter_max_body=64) as runner:
        url = f"http://127.0.0.1:{runner.ports()['hook']}/h"
        small = json.dumps({"ok": True}).encode()
        large = json.dumps({"ok": True, "pad": "x" * 100}).encode()
        async with aiohttp.ClientSession() as s:
            for body in (small, large):
                async with s.post(url, data=body) as r:
                    assert r.status == 202
        async with asyncio.timeout(WAIT):
            await runner.wait_for(lambda s: s.finished >= 1)
        assert runner.filtering.filtered["hook"] == 1
    assert len(ws.jobs_list()) == 1


# -- GitHub-shaped webhooks, signed with openssl, sent with curl ----------------------------------


def github_push(ref: str) -> dict[str, Any]:
    """The parts of a GitHub push delivery a filter looks at, at about a real one's size."""
    return {
        "ref": ref,
        "before": "9" * 40,
        "after": "a" * 40,
        "repository": {
            "id": 123456789,
            "full_name": "lab/instrument-analysis",
            "default_branch": "main",
            "owner": {"login": "lab", "id": 987654},
        },
        "pusher": {"name": "someone", "email": "someone@example.org"},
        "commits": [{"id": "a" * 40, "message": "Calibrate the detector", "modified": ["cal.py"]}],
        "head_commit": {"id": "a" * 40, "message": "Calibrate the detector"},
    }


def openssl_signature(stamp: str, body: bytes) -> str:
    assert OPENSSL is not None
    out = subprocess.run(
        [OPENSSL, "dgst", "-sha256", "-hmac", SECRET],
        input=stamp.encode() + b"." + body,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return "sha256=" + out.rsplit("=", 1)[1].strip()  # "SHA2-256(stdin)= <hex>"


async def curl_post(url: str, event: str, body: bytes, tmp: Path) -> tuple[int, dict[str, Any]]:
    assert CURL is not None
    stamp = str(int(time.time()))
    payload = tmp / f"payload-{time.monotonic_ns()}.json"
    payload.write_bytes(body)
    proc = await asyncio.create_subprocess_exec(
        CURL, "-sS", "-o", "-", "-w", "\n%{http_code}", "--data-binary", f"@{payload}",
        "-H", "Content-Type: application/json",
        "-H", f"X-GitHub-Event: {event}",
        "-H", f"X-GitHub-Delivery: {time.monotonic_ns()}",
        "-H", f"X-Timestamp: {stamp}",
        "-H", f"X-Signature-256: {openssl_signature(stamp, body)}",
        url,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), WAIT)
    text, _, status = out.decode().rpartition("\n")
    return int(status), json.loads(text)


@pytest.mark.skipif(OPENSSL is None or CURL is None, reason="needs openssl and curl (.ci/run)")
async def test_github_webhooks_only_pushes_to_main_make_jobs(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEOW_TEST_GH_SECRET", SECRET)
    common: dict[str, Any] = {
        "route": "/hooks/github",
        "port": 0,
        "hmac_secret_env": "MEOW_TEST_GH_SECRET",
        "headers": ("X-GitHub-Event",),
    }
    build = HttpPattern(
        name="build",
        recipe="sh",
        when='headers["x-github-event"] == "push" && body.ref == "refs/heads/main"',
        **common,
    )
    recipe = sh_recipe("sh", 'cat "$input_file" > /dev/null')
    async with ws.runner([build], [recipe], http={"port": 0}) as runner:
        port = runner.ports()["build"]
        # a second rule on the same route, with its own filter: every delivery
        runner.add_pattern(
            HttpPattern(
                name="audit", recipe="sh", when='method == "POST"', **common | {"port": port}
            )
        )
        await runner.wait_ready()
        url = f"http://127.0.0.1:{port}/hooks/github"
        deliveries = [
            ("push", github_push("refs/heads/main")),
            ("push", github_push("refs/heads/feature/x")),
            ("ping", {"zen": "Keep it logically awesome.", "hook_id": 1}),
            ("push", github_push("refs/heads/main") | {"after": "b" * 40}),
        ]
        answers = []
        for event, body in deliveries:
            raw = json.dumps(body).encode()
            answers.append(await curl_post(url, event, raw, ws.root))
        assert [status for status, _ in answers] == [202] * 4, answers
        # each answer names the jobs it made: build's for the main pushes, audit's for all
        rules = [sorted(j.rsplit("-", 1)[0] for j in a["jobs"]) for _, a in answers]
        assert rules == [["audit", "build"], ["audit"], ["audit"], ["audit", "build"]]
        async with asyncio.timeout(WAIT):
            await runner.wait_for(lambda s: s.finished >= 6)
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"http://127.0.0.1:{runner.http_port}/metrics") as r,
        ):
            metrics = await r.text()
        assert 'meow_events_filtered_total{rule="build"} 2.0' in metrics
        assert 'meow_events_filtered_total{rule="audit"}' not in metrics
    built = [j for j in ws.jobs_list() if j["rule"] == "build"]
    assert len(built) == 2
    for job in built:
        assert json.loads(Path(job["parameters"]["input_file"]).read_text())["ref"] == (
            "refs/heads/main"
        )


async def test_a_request_every_rule_rejects_is_answered_202_with_no_jobs(ws: Workspace) -> None:
    only = HttpPattern(name="only", route="/in", port=0, recipe="py", when='query.mode == "go"')
    async with ws.runner([only], [py_recipe()]) as runner:
        url = f"http://127.0.0.1:{runner.ports()['only']}/in"
        async with aiohttp.ClientSession() as s:
            async with s.post(url + "?mode=wait", data=b"x") as r:
                assert r.status == 202
                answer = await r.json()
            assert answer["jobs"] == []
            assert answer["message_id"]
            async with s.post(url + "?mode=go", data=b"x") as r:
                assert (r.status, len((await r.json())["jobs"])) == (202, 1)
        async with asyncio.timeout(WAIT):
            await runner.wait_for(lambda s: s.finished >= 1)
        assert not list(runner.spool_dir.glob("*.msg"))
    assert len(ws.jobs_list()) == 1


def test_the_runner_counts_filtered_events_per_rule() -> None:
    runner = Runner([FilePattern(name="f", glob="*", recipe="py", when="size > 1")], [py_recipe()])
    assert runner.filtering.filtered == {}


def test_filters_read_only_the_keys_they_name_and_all_of_what_they_cannot_tell() -> None:
    from meow_async.model.filters import used_paths

    assert used_paths('body.ref == "x" && body["a"].b > 1', "body") == frozenset(
        {("ref",), ("a", "b")}
    )
    assert used_paths('body.ref.startsWith("refs/tags/")', "body") == frozenset({("ref",)})
    assert used_paths('body.commits.exists(c, c.id == "body.x")', "body") == frozenset(
        {("commits",)}
    )
    assert used_paths('"body" == method && x.body == 1', "body") == frozenset()
    for whole in ("size(body) > 1", "body[headers.k] == 1", '"k" in body', "body.?x == 1"):
        assert used_paths(whole, "body") is None, whole
    # and the answers are the same as on the whole body
    body = {"ref": "refs/heads/main", "a": {"b": 2, "c": 3}, "commits": [{"id": 1}], "n": 2**70}
    for source in (
        'body.ref == "refs/heads/main" && body.a.b == 2',
        "has(body.a.c) && !has(body.a.d) && size(body.commits) == 1",
        "body.commits[0].id == 1 && body.n > 1.0",
    ):
        f = compile_filter("http", source)
        assert f.test(Facts("http", lambda: {"body": body}, f.paths)), source


def test_json_bodies_parse_as_cel_can_take_them() -> None:
    from meow_async.model.filters import parse_json

    # an integer past 64 bits is a double, as CEL has no bigger int
    ok, value = parse_json(b'{"n": 123456789012345678901234567890}')
    assert ok
    assert value == {"n": 1.2345678901234568e29}
    assert parse_json(b'{"x": NaN}')[0]  # json reads what orjson refuses
    assert parse_json(b"not json") == (False, None)
    assert parse_json(b"") == (False, None)


async def curl_status(url: str, body: bytes, headers: dict[str, str], tmp: Path) -> int:
    assert CURL is not None
    payload = tmp / f"payload-{time.monotonic_ns()}.json"
    payload.write_bytes(body)
    args = [CURL, "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--data-binary", f"@{payload}"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    proc = await asyncio.create_subprocess_exec(*args, url, stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), WAIT)
    return int(out)


@pytest.mark.skipif(OPENSSL is None or CURL is None, reason="needs openssl and curl (.ci/run)")
async def test_github_and_gitlab_native_webhook_headers(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEOW_TEST_GH_SECRET", SECRET)
    monkeypatch.setenv("MEOW_TEST_GL_TOKEN", "gitlab-token-for-tests")
    github = HttpPattern(
        name="github",
        route="/gh",
        port=0,
        recipe="py",
        hmac_secret_env="MEOW_TEST_GH_SECRET",
        signature="github",
        when='headers["x-github-event"] == "push" && body.ref == "refs/heads/main"',
    )
    gitlab = HttpPattern(
        name="gitlab",
        route="/gl",
        port=0,
        recipe="py",
        token_env="MEOW_TEST_GL_TOKEN",
        token_header="X-Gitlab-Token",
        when='headers["x-gitlab-event"] == "Push Hook" && body.ref == "refs/heads/main"',
    )
    assert OPENSSL is not None
    async with ws.runner([github, gitlab], [py_recipe()]) as runner:
        gh = f"http://127.0.0.1:{runner.ports()['github']}/gh"
        gl = f"http://127.0.0.1:{runner.ports()['gitlab']}/gl"
        push = json.dumps(github_push("refs/heads/main")).encode()
        # GitHub signs the body alone: openssl over exactly those bytes
        digest = subprocess.run(
            [OPENSSL, "dgst", "-sha256", "-hmac", SECRET, "-r"],
            input=push,
            capture_output=True,
            check=True,
        ).stdout.split()[0]
        signed = {"X-GitHub-Event": "push", "X-Hub-Signature-256": f"sha256={digest.decode()}"}
        assert await curl_status(gh, push, signed, ws.root) == 202
        assert await curl_status(gh, push, signed, ws.root) == 401  # the same again: a replay
        forged = {**signed, "X-Hub-Signature-256": "sha256=" + "0" * 64}
        assert await curl_status(gh, push + b" ", forged, ws.root) == 401
        token = {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": "gitlab-token-for-tests"}
        assert await curl_status(gl, push, token, ws.root) == 202
        wrong = {**token, "X-Gitlab-Token": "guess"}
        assert await curl_status(gl, push, wrong, ws.root) == 401
        assert await curl_status(gl, push, {"X-Gitlab-Event": "Push Hook"}, ws.root) == 401
        async with asyncio.timeout(WAIT):
            await runner.wait_for(lambda s: s.finished >= 2)
    identities = sorted(j["event"]["identity"] for j in ws.jobs_list())
    assert identities == [
        "HMAC signature of pattern github",
        "X-Gitlab-Token token of pattern gitlab",
    ]


async def test_a_held_file_that_changes_into_what_the_filter_rejects_makes_no_job(
    ws: Workspace,
) -> None:
    small = FilePattern(name="small", glob="*.dat", recipe="py", settle=1.0, when="size < 5")
    async with ws.runner([small], [py_recipe()]) as runner:
        ws.write("a.dat", "abc")  # wanted: held while it settles
        await poll_until(lambda: runner.files._gate.held() == 1)
        ws.write("a.dat", "abcdefgh")  # changed within the settle time, now too big
        ws.write("b.dat", "ok")  # wanted, and left alone: its job shows the gate ran
        async with asyncio.timeout(WAIT):
            await runner.wait_for(lambda s: s.finished >= 1)
        # nothing held, nothing queued, no handler busy: every trigger is through
        await poll_until(
            lambda: (
                runner.files._gate.held() == 0
                and runner.queues()["events"].empty()
                and not runner._handling
            )
        )
        assert runner.stats.events == 1
    made = [Path(j["event"]["path"]).name for j in ws.jobs_list()]
    assert made == ["b.dat"]


async def test_a_trigger_withdrawn_and_offered_again_at_once_stays_held(tmp_path: Path) -> None:
    """The gate's withdraw cancels the held wait; a new state offered before that wait has
    ended (same loop turn) is a new hold, which the old wait's end must leave alone: else the
    gate forgets it (no watermark, a later change makes a second hold and a second job)."""
    from meow_async.model.events import Event
    from meow_async.model.rules import Rule
    from meow_async.monitors.files.gate import Gate

    put: list[Event] = []

    async def to_queue(event: Event) -> None:
        put.append(event)

    (tmp_path / "a.dat").write_text("abc")
    pattern = FilePattern(name="p", glob="*.dat", recipe="py", settle=0.3)
    rule = Rule(pattern=pattern, recipe=py_recipe())
    gate = Gate(to_queue)

    def event() -> Event:
        return Event(
            kind="file", path=str(tmp_path / "a.dat"), base=str(tmp_path), rule=rule, key="a"
        )

    gate.offer(event())
    await asyncio.sleep(0.05)  # its wait has begun
    gate.withdraw("p", str(tmp_path / "a.dat"))
    gate.offer(event())  # a newer state the filter takes again, before the old wait ends
    await asyncio.sleep(0.05)
    assert gate.holds("p", str(tmp_path / "a.dat"))
    assert gate.held() == 1
    assert gate.oldest() is not None
    gate.offer(event())  # joins the hold, not a second one
    await poll_until(lambda: bool(put))
    await asyncio.sleep(0.4)
    assert len(put) == 1
    assert gate.held() == 0
    gate.close()
