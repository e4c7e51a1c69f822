"""HTTP patterns' authentication, from outside: bearer tokens (accepted, missing, wrong, valid
for another route: 403) and HMAC signatures (accepted; wrong secret, stale timestamp and a
replayed signature refused), each refusal making no job and leaving no spool file."""

# ruff: noqa: S105, S106 - the secrets here are made up for the tests, and names of variables

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from typing import Any

import aiohttp
import pytest

from meow_async import HttpPattern, Runner

from .conftest import WAIT, Workspace, sh_recipe

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
