"""HTTP patterns' authentication, from outside: bearer tokens (accepted, missing, wrong, valid
for another route: 403) and HMAC signatures (accepted; wrong secret, stale timestamp and a
replayed signature refused), each refusal making no job and leaving no spool file."""

# ruff: noqa: S105, S106 - the secrets here are made up for the tests, and names of variables

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from meow_async import HttpPattern, Runner

from .conftest import WAIT, Workspace, sh_recipe, wait_until_sync
from .test_cli import MeowRun

SECRET = "s3cret-for-tests"


def signed(body: bytes, *, secret: str = SECRET, at: float | None = None) -> dict[str, str]:
    stamp = str(int(time.time() if at is None else at))
    digest = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-Timestamp": stamp, "X-Signature-256": f"sha256={digest}"}


async def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as s, s.post(url, data=body, headers=headers) as r:
        return r.status, await r.json()


def no_spool_left(runner: Runner) -> bool:
    return not list(runner.spool_dir.glob("*.msg"))


async def test_hmac_signatures_accepted_and_refused(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEOW_TEST_HOOK_SECRET", SECRET)
    hook = HttpPattern(
        name="hook", route="/hook", port=0, recipe="r", hmac_secret_env="MEOW_TEST_HOOK_SECRET"
    )
    async with ws.runner([hook], [sh_recipe("r", 'cat "$input_file"')]) as r:
        url = f"http://127.0.0.1:{r.ports()['hook']}/hook"
        good = signed(b"payload")
        status, answer = await post(url, b"payload", good)
        assert status == 202, answer
        refusals = {
            "replayed": (b"payload", good),
            "wrong secret": (b"other", signed(b"other", secret="not-the-secret")),
            "stale": (b"late", signed(b"late", at=time.time() - 3600)),
            "body changed": (b"tampered", signed(b"original")),
            "unsigned": (b"plain", {}),
        }
        for why, (body, headers) in refusals.items():
            status, refused = await post(url, body, headers)
            assert status == 401, (why, refused)
            assert refused["error"], why
        async with asyncio.timeout(WAIT):
            await r.wait_for(lambda s: s.finished >= 1)
        assert no_spool_left(r)
    (job,) = ws.jobs_list()
    assert job["id"] == answer["jobs"][0]
    assert job["event"]["identity"] == "HMAC signature of pattern hook"


async def test_bearer_tokens_accepted_refused_and_forbidden(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, unused_tcp_port: int
) -> None:
    monkeypatch.setenv("MEOW_TEST_TOKEN_A", "token-a")
    monkeypatch.setenv("MEOW_TEST_TOKEN_B", "token-b")
    a = HttpPattern(
        name="a", route="/a", port=unused_tcp_port, recipe="r", token_env="MEOW_TEST_TOKEN_A"
    )
    b = HttpPattern(
        name="b", route="/b", port=unused_tcp_port, recipe="r", token_env="MEOW_TEST_TOKEN_B"
    )
    async with ws.runner([a, b], [sh_recipe("r", "true")]) as r:
        url = f"http://127.0.0.1:{unused_tcp_port}/a"
        assert (await post(url, b"x", {"Authorization": "Bearer token-a"}))[0] == 202
        assert (await post(url, b"x", {}))[0] == 401
        assert (await post(url, b"x", {"Authorization": "Bearer nope"}))[0] == 401
        assert (await post(url, b"x", {"Authorization": "Basic dG9rZW4tYQ=="}))[0] == 401
        status, forbidden = await post(url, b"x", {"Authorization": "Bearer token-b"})
        assert status == 403, forbidden
        async with asyncio.timeout(WAIT):
            await r.wait_for(lambda s: s.finished >= 1)
        assert no_spool_left(r)
    assert [j["event"]["identity"] for j in ws.jobs_list()] == ["bearer token of pattern a"]


def test_a_missing_secret_is_an_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from meow_async import ConfigError

    monkeypatch.delenv("MEOW_TEST_UNSET_SECRET", raising=False)
    with pytest.raises(ConfigError, match="MEOW_TEST_UNSET_SECRET"):
        HttpPattern(
            name="h", route="/h", port=0, recipe="r", hmac_secret_env="MEOW_TEST_UNSET_SECRET"
        )
    with pytest.raises(ConfigError, match="no-such-token-file"):
        HttpPattern(name="h", route="/h", port=0, recipe="r", token_file="no-such-token-file")


# -- the timestamp a signature covers (issue 20, item 1) ----------------------------------------


async def test_a_signed_request_needs_a_whole_number_timestamp(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each stamp below is signed correctly with the right secret; only whole seconds in
    ASCII digits are a timestamp. ``nan`` was accepted before (NaN passes any comparison)."""
    monkeypatch.setenv("MEOW_TEST_HOOK_SECRET", SECRET)
    hook = HttpPattern(
        name="hook", route="/hook", port=0, recipe="r", hmac_secret_env="MEOW_TEST_HOOK_SECRET"
    )
    now = str(int(time.time()))
    bad = ["nan", "NaN", "-nan", "inf", "-inf", "1e309", "1e9", "+" + now, "-1", "0x10"]
    bad += [now + ".5", now[:2] + "_" + now[2:], "", " ", " 1", "1 2"]
    async with ws.runner([hook], [sh_recipe("r", "true")]) as r:
        url = f"http://127.0.0.1:{r.ports()['hook']}/hook"
        for stamp in bad:
            body = f"for {stamp!r}".encode()
            digest = hmac.new(SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256)
            headers = {"X-Timestamp": stamp, "X-Signature-256": f"sha256={digest.hexdigest()}"}
            status, answer = await post(url, body, headers)
            assert status == 401, (stamp, answer)
            assert "X-Timestamp" in answer["error"], (stamp, answer)
        status, answer = await post(url, b"fine", signed(b"fine"))
        assert status == 202, answer
        async with asyncio.timeout(WAIT):
            await r.wait_for(lambda s: s.finished >= 1)
        assert r.stats.events == 1
        assert no_spool_left(r)


# -- replays across a SIGKILL (item 2) ----------------------------------------------------------


def curl_signed(port: int, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    exe = shutil.which("curl")
    assert exe is not None, "curl is not installed (.ci/run installs it)"
    args = [exe, "-sS", "--max-time", str(WAIT), "-w", "\n%{http_code}", "--data-binary", "@-"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    done = subprocess.run(
        [*args, f"http://127.0.0.1:{port}/hook"], input=body, capture_output=True, check=False
    )
    assert done.returncode == 0, done.stderr
    text, _, code = done.stdout.rpartition(b"\n")
    return int(code), json.loads(text)


def test_a_signed_delivery_replayed_after_a_sigkill_makes_no_second_job(tmp_path: Path) -> None:
    """The real `meow-async run`: a signed delivery is accepted and its job made; the runner
    is SIGKILLed, started again, and the captured delivery sent again byte for byte: refused
    (before the change the seen signatures lived in memory only: a second job)."""
    (tmp_path / "data").mkdir()
    (tmp_path / "secret").write_text(SECRET)
    (tmp_path / "workflow.yaml").write_text(
        "runner: {base_dir: data, jobs_dir: jobs, kill_timeout: 1}\n"
        "recipes:\n  r: {kind: bash, script: 'cat \"$input_file\"'}\n"
        "patterns:\n  hook: {route: /hook, port: 0, recipe: r, hmac_secret_file: secret}\n"
    )
    body = b"one delivery"
    captured = signed(body)
    jobs = tmp_path / "jobs"

    def port_of(run: MeowRun) -> int:
        run.wait_for("Then:")  # the banner (no "Try it:" hint for a signed route)
        run.wait_for("runner started", stream="stderr")
        found = re.search(r"http://127\.0\.0\.1:(\d+)/hook", run.stdout)
        assert found is not None, run.report()
        return int(found.group(1))

    with MeowRun("workflow.yaml", cwd=tmp_path) as run:
        status, answer = curl_signed(port_of(run), body, captured)
        assert status == 202, answer
        wait_until_sync(lambda: len(list(jobs.glob("*/*/job.json"))) == 1)
        run.proc.kill()
        assert run.wait_exit() == -signal.SIGKILL
    with MeowRun("workflow.yaml", cwd=tmp_path) as run:
        status, refused = curl_signed(port_of(run), body, captured)
        assert status == 401, refused
        assert "replay" in refused["error"]
        status, fresh = curl_signed(port_of(run), body, signed(body, at=time.time() + 1))
        assert status == 202, fresh  # the same body, signed anew: a delivery of its own
        wait_until_sync(lambda: len(list(jobs.glob("*/*/job.json"))) == 2)
    assert sorted(p.parent.name for p in jobs.glob("*/*/job.json")) == sorted(
        answer["jobs"] + fresh["jobs"]
    )


async def test_a_signature_journaled_just_before_a_kill_is_refused_again(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A runner killed between journaling a signed request and recording its signature left
    the signature in the journal only: the next start refuses a replay of it all the same."""
    monkeypatch.setenv("MEOW_TEST_HOOK_SECRET", SECRET)
    hook = HttpPattern(
        name="hook", route="/hook", port=0, recipe="r", hmac_secret_env="MEOW_TEST_HOOK_SECRET"
    )
    body = b"journaled"
    headers = signed(body)
    spool = ws.jobs.parent / "spool"
    spool.mkdir()
    (spool / "20260101-000000-aaaaaaaaaaaa.msg").write_bytes(body)
    entry = {
        "id": "20260101-000000-aaaaaaaaaaaa",
        "time": time.time(),
        "rules": ["hook"],
        "extras": {"message_id": "20260101-000000-aaaaaaaaaaaa", "size": len(body)},
        "kind": "http",
        "signature": [headers["X-Signature-256"], time.time() + 600],
    }
    (spool / "accepted.log").write_text(json.dumps(entry) + "\n")
    async with ws.runner([hook], [sh_recipe("r", 'cat "$input_file"')]) as r:
        async with asyncio.timeout(WAIT):
            await r.wait_for(lambda s: s.finished >= 1)  # the journaled one makes its job
        status, refused = await post(f"http://127.0.0.1:{r.ports()['hook']}/hook", body, headers)
        assert status == 401, refused
    assert len(ws.jobs_list()) == 1


def github_signed(body: bytes, *, secret: str = SECRET) -> dict[str, str]:
    """GitHub's own signature: the body alone, no timestamp."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-GitHub-Event": "push", "X-Hub-Signature-256": f"sha256={digest}"}


async def test_a_github_signature_is_refused_again_as_meows_are(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``signature: github`` carries no timestamp, but its signature is remembered as a
    ``meow`` one is (in signatures.log, twice hmac_window): a delivery sent again after a
    restart is refused, two copies sent at once make one job, and a delivery no rule's
    filter wants (202, no job) has used its signature all the same."""
    monkeypatch.setenv("MEOW_TEST_GH_SECRET", SECRET)
    hook = HttpPattern(
        name="gh",
        route="/gh",
        port=0,
        recipe="r",
        hmac_secret_env="MEOW_TEST_GH_SECRET",
        signature="github",
        when='body.ref == "refs/heads/main"',
    )
    recipe = sh_recipe("r", 'cat "$input_file"')
    first = json.dumps({"ref": "refs/heads/main", "after": "1"}).encode()
    twice = json.dumps({"ref": "refs/heads/main", "after": "2"}).encode()
    other = json.dumps({"ref": "refs/heads/dev", "after": "3"}).encode()
    async with ws.runner([hook], [recipe]) as r:
        url = f"http://127.0.0.1:{r.ports()['gh']}/gh"
        status, answer = await post(url, first, github_signed(first))
        assert status == 202, answer
        assert len(answer["jobs"]) == 1
        both = await asyncio.gather(*(post(url, twice, github_signed(twice)) for _ in range(2)))
        assert sorted(status for status, _ in both) == [202, 401], both
        status, filtered = await post(url, other, github_signed(other))
        assert (status, filtered["jobs"]) == (202, []), filtered
        status, refused = await post(url, other, github_signed(other))
        assert status == 401, refused
        assert "replay" in refused["error"]
        async with asyncio.timeout(WAIT):
            await r.wait_for(lambda s: s.finished >= 2)
    async with ws.runner([hook], [recipe]) as r:  # a restart: the signatures are remembered
        url = f"http://127.0.0.1:{r.ports()['gh']}/gh"
        for body in (first, twice, other):
            status, refused = await post(url, body, github_signed(body))
            assert status == 401, (body, refused)
            assert "replay" in refused["error"]
        assert no_spool_left(r)
    assert len(ws.jobs_list()) == 2


def test_seen_signatures_and_answers_are_bounded_by_their_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The files are rewritten with only the live entries once they have grown to twice
    those (here from 8 lines), and when loaded: expired entries do not pile up."""
    from meow_async.monitors import http_records

    monkeypatch.setattr(http_records, "MIN_LINES", 8)
    log = http_records.SeenSignatures(tmp_path)
    log.load()
    now = time.time()
    for i in range(100):
        log.put(f"sha256={i:064x}", now + (0.2 if i < 90 else 600))
    lines = log.path.read_text().splitlines()
    assert len(lines) <= 2 * 100  # never more than twice what is live
    time.sleep(0.25)  # the first 90 expire
    for i in range(100, 120):
        log.put(f"sha256={i:064x}", time.time() + 600)
    assert f"sha256={5:064x}" not in log
    assert f"sha256={95:064x}" in log
    log.close()
    again = http_records.SeenSignatures(tmp_path)
    again.load()
    assert len(again) == 30
    assert len(again.path.read_text().splitlines()) == 30  # rewritten short when loaded
    assert all(json.loads(line)["until"] > time.time() for line in again.path.read_text().split())


# -- Idempotency-Key scope (item 3) -------------------------------------------------------------


async def test_an_idempotency_key_is_scoped_by_method_and_concrete_path(ws: Workspace) -> None:
    """The same key sent to /ingest/a and to /ingest/b (one route pattern), and with POST and
    PUT, is four requests: four jobs (before: b's and PUT's got a's answer, no job). Sent
    again to /ingest/a with POST, it gets a's answer."""
    pattern = HttpPattern(
        name="i", route="/ingest/{x}", port=0, recipe="r", methods=("POST", "PUT")
    )
    async with ws.runner([pattern], [sh_recipe("r", 'cat "$input_file"')]) as r:
        base = f"http://127.0.0.1:{r.ports()['i']}/ingest"
        key = {"Idempotency-Key": "same-key"}
        answers = {}
        async with aiohttp.ClientSession() as s:
            for method, path in [("POST", "a"), ("POST", "b"), ("PUT", "a"), ("PUT", "b")]:
                async with s.request(method, f"{base}/{path}", data=path, headers=key) as resp:
                    assert resp.status == 202
                    assert "Idempotent-Replayed" not in resp.headers, (method, path)
                    answers[method, path] = await resp.json()
            async with s.post(f"{base}/a", data=b"again", headers=key) as resp:
                assert resp.headers["Idempotent-Replayed"] == "true"
                assert await resp.json() == answers["POST", "a"]
        async with asyncio.timeout(WAIT):
            await r.wait_for(lambda st: st.finished >= 4)
    assert len(ws.jobs_list()) == 4


@pytest.mark.parametrize(
    ("extra", "header"),
    [
        ("", "Authorization"),
        (", token_header: X-Gitlab-Token, tls_cert: server.pem, tls_key: server.key", None),
    ],
    ids=["bearer", "gitlab-header-https"],
)
def test_the_banner_s_curl_hint_works_when_pasted(
    tmp_path: Path, extra: str, header: str | None
) -> None:
    """The "Try it: curl ..." line, pasted into a shell with $TOKEN set and the CA beside it,
    makes a job: the token goes in the header the pattern reads (it said Authorization even
    for token_header patterns) and an HTTPS route is asked over https with the CA."""
    import trustme

    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(str(tmp_path / "CA.pem"))
    server.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    server.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    (tmp_path / "data").mkdir()
    (tmp_path / "token").write_text("s3cret-token\n")
    (tmp_path / "workflow.yaml").write_text(
        "runner: {base_dir: data, jobs_dir: jobs}\n"
        "recipes:\n  r: {kind: bash, script: 'cat \"$input_file\"'}\n"
        f"patterns:\n  hook: {{route: /hook, port: 0, recipe: r, token_file: token{extra}}}\n"
    )
    with MeowRun("workflow.yaml", cwd=tmp_path) as run:
        run.wait_for("Try it: curl")
        run.wait_for("runner started", stream="stderr")
        (hint,) = [
            line.split("Try it: ", 1)[1]
            for line in run.stdout.splitlines()
            if line.startswith("Try it: curl")
        ]
        if header:
            assert f'-H "{header}: Bearer $TOKEN"' in hint, hint
        else:
            assert '-H "X-Gitlab-Token: $TOKEN"' in hint, hint
            assert "--cacert CA.pem" in hint, hint
            assert "https://" in hint, hint
        pasted = subprocess.run(
            ["bash", "-c", hint + " --fail-with-body -sS"],
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin", "TOKEN": "s3cret-token"},
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
        assert pasted.returncode == 0, (hint, pasted.stdout, pasted.stderr)
        (job_id,) = json.loads(pasted.stdout)["jobs"]
        wait_until_sync(lambda: len(list((tmp_path / "jobs").glob("*/*/stdout.txt"))) == 1)
    (out,) = (tmp_path / "jobs").glob(f"*/{job_id}/stdout.txt")
    assert out.read_text() == "hello world"
