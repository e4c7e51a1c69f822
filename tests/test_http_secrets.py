"""Secrets over HTTP: header values that are credentials are recorded nowhere (issue 20, item
14), and runner.http's bearer token (item 16), from outside: aiohttp's client, curl, and
`meow-async validate` / `status` as processes."""

# ruff: noqa: S105 - the secrets here are made up for the tests

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from meow_async import HttpPattern

from .conftest import WAIT, Workspace, py_recipe, wait_until_sync
from .test_cli import MeowRun, meow, write_workflow

TOKEN_ENV = "MEOW_TEST_SECRETS_TOKEN"
SECRETS = {
    "Authorization": "Bearer tok-3f9a-SECRET",
    "X-Api-Key": "apikey-77-SECRET",
    "Cookie": "session=cookie-SECRET",
    "X-Auth-Token": "xauth-SECRET",
}
SHOWN = {"X-Trace": "trace-1234"}
PRINT_HEADERS = "import json\nprint(json.dumps(headers, sort_keys=True))\n"


def every_file_under(root: Path) -> dict[Path | str, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


async def test_secret_header_values_are_recorded_nowhere(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Authorization, X-Api-Key, Cookie and X-Auth-Token are listed in the pattern's
    ``headers`` (with X-Trace). The journal (held there by a jobs folder made immutable),
    then params.json, job.json, the script, what the script saw, /jobs and every other file
    the runner wrote hold ``[redacted]`` for each, and X-Trace as sent. Before the change the
    token and the key were copied into all of them."""
    monkeypatch.setenv(TOKEN_ENV, "tok-3f9a-SECRET")
    pattern = HttpPattern(
        name="h",
        route="/in",
        port=0,
        recipe="r",
        token_env=TOKEN_ENV,
        headers=(*SECRETS, *SHOWN),
    )
    assert set(pattern.secret_headers) == {h.lower() for h in SECRETS}
    recipes = [py_recipe("r", PRINT_HEADERS)]
    journal_text = None
    try:
        async with ws.runner([pattern], recipes) as r, aiohttp.ClientSession() as s:
            held = subprocess.run(["chattr", "+i", str(ws.jobs)], check=False).returncode == 0
            target = f"http://127.0.0.1:{r.ports()['h']}/in"
            async with s.post(target, data=b"body", headers={**SECRETS, **SHOWN}) as resp:
                assert resp.status == 202, await resp.text()
            if held:  # the event could not make its job: it stays in the journal
                async with asyncio.timeout(WAIT):
                    await r.wait_for(lambda st: st.handler_errors == 1)
                journal_text = (r.spool_dir / "accepted.log").read_text()
    finally:
        subprocess.run(["chattr", "-i", str(ws.jobs)], check=False)
    async with (
        ws.runner([pattern], recipes, http={"port": 0}) as r,
        aiohttp.ClientSession() as s,
    ):
        async with asyncio.timeout(WAIT):
            await r.wait_for(lambda st: st.finished >= 1)
        async with s.get(f"http://127.0.0.1:{r.http_port}/jobs") as resp:
            listed = await resp.text()
    (job,) = ws.jobs_list()
    folder = Path(job["dir"])
    want = {h.lower(): "[redacted]" for h in SECRETS} | {h.lower(): v for h, v in SHOWN.items()}
    assert json.loads((folder / "stdout.txt").read_text()) == want  # what the script saw
    assert json.loads((folder / "params.json").read_text())["headers"] == want
    assert job["parameters"]["headers"] == want
    assert job["event"]["parameters"]["headers"] == want
    assert "[redacted]" in (folder / "script.py").read_text()
    records: dict[Path | str, bytes] = {"/jobs": listed.encode(), **every_file_under(ws.root)}
    if journal_text is not None:
        records["journal"] = journal_text.encode()
        assert "[redacted]" in journal_text
        assert "trace-1234" in journal_text
    for where, data in records.items():
        for value in SECRETS.values():
            secret = value.split()[-1].split("=")[-1].encode()
            assert secret not in data, (where, value)


def test_validate_warns_about_a_secret_header(tmp_path: Path) -> None:
    write_workflow(
        tmp_path,
        "runner: {base_dir: data}\n"
        "recipes:\n  r: {kind: bash, script: 'true'}\n"
        "patterns:\n  h: {route: /in, port: 0, recipe: r, headers: [X-Trace, Authorization,"
        " X-Api-Key, Idempotency-Key]}\n",
    )
    res = meow("validate", "workflow.yaml", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, res.stderr
    # Located at the header in the list, as validate's other warnings are.
    assert "workflow.yaml:5:58: patterns.h.headers: authorization carries a secret" in warnings[0]
    assert "workflow.yaml:5:73: patterns.h.headers: x-api-key carries a secret" in warnings[1]
    assert "[redacted]" in warnings[0]
    # --json: among the document's warnings (stderr stays empty).
    res = meow("validate", "--json", "workflow.yaml", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    listed = json.loads(res.stdout)["warnings"]
    assert [(w["where"], w["line"], w["column"]) for w in listed] == [
        ("patterns.h.headers", 5, 58),
        ("patterns.h.headers", 5, 73),
    ]
    assert listed[0]["message"].startswith("authorization carries a secret")
    assert listed[1]["message"].startswith("x-api-key carries a secret")


# -- runner.http's token (item 16) --------------------------------------------------------------


async def test_runner_http_asks_for_its_token_except_on_healthz(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "operator-token")
    async with (
        ws.runner([], [], http={"port": 0, "token_env": TOKEN_ENV}) as r,
        aiohttp.ClientSession() as s,
    ):
        base = f"http://127.0.0.1:{r.http_port}"

        async def status(path: str, token: str | None) -> int:
            headers = {} if token is None else {"Authorization": f"Bearer {token}"}
            async with s.get(base + path, headers=headers) as resp:
                if resp.status == 401:
                    assert resp.headers["WWW-Authenticate"].startswith("Bearer ")
                    assert "token" in (await resp.json())["error"]
                return resp.status

        assert await status("/healthz", None) == 200  # load balancers probe it
        for path in ("/metrics", "/jobs", "/jobs/nothing", "/status"):
            assert await status(path, None) == 401, path
            assert await status(path, "wrong") == 401, path
            assert await status(path, "operator-token") in (200, 404), path


def _outside_address() -> str | None:
    """An address of this machine that is not loopback (none: no network but loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.254.254.254", 9))  # no packet is sent: it only picks a route
        except OSError:
            return None
        address = str(s.getsockname()[0])
    return None if address.startswith("127.") or address == "0.0.0.0" else address  # noqa: S104


async def test_the_job_requests_need_the_token_or_this_machine(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """POST /jobs/ID/rerun and /cancel change jobs: without runner.http's token they are taken
    from this machine only (403 from another address); with one, they need it (401) and are
    then taken from any address. 404 here: the request was let in (there is no such job)."""
    outside = _outside_address()

    async def answer(s: aiohttp.ClientSession, host: str, port: int, token: str | None) -> int:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        codes = set()
        for action in ("rerun", "cancel"):
            url = f"http://{host}:{port}/jobs/no-such-job/{action}"
            async with s.post(url, headers=headers) as resp:
                codes.add(resp.status)
        assert len(codes) == 1, codes
        return codes.pop()

    async with (
        ws.runner([], [], http={"host": "0.0.0.0", "port": 0}) as r,  # noqa: S104
        aiohttp.ClientSession() as s,
    ):
        port = r.http_port
        assert port is not None
        assert await answer(s, "127.0.0.1", port, None) == 404
        if outside is not None:
            assert await answer(s, outside, port, None) == 403
    monkeypatch.setenv(TOKEN_ENV, "operator-token")
    http = {"host": "0.0.0.0", "port": 0, "token_env": TOKEN_ENV}  # noqa: S104
    async with ws.runner([], [], http=http) as r, aiohttp.ClientSession() as s:
        port = r.http_port
        assert port is not None
        for host in ("127.0.0.1", outside) if outside is not None else ("127.0.0.1",):
            assert await answer(s, host, port, None) == 401, host
            assert await answer(s, host, port, "wrong") == 401, host
            assert await answer(s, host, port, "operator-token") == 404, host


def test_status_sends_the_token_the_workflow_names(tmp_path: Path) -> None:
    """`meow-async status workflow.yaml` reads /status with runner.http's token (from the
    same file the workflow names); given only the jobs folder, it cannot, and says so."""
    (tmp_path / "operator.token").write_text("file-token\n")
    write_workflow(
        tmp_path,
        "runner: {base_dir: data, jobs_dir: jobs, http: {port: 0, token_file: operator.token}}\n"
        "recipes:\n  r: {kind: bash, script: 'true'}\n"
        "patterns:\n  p: {glob: '*.txt', recipe: r}\n",
    )
    with MeowRun("workflow.yaml", cwd=tmp_path) as run:
        run.wait_ready()
        wait_until_sync(lambda: (tmp_path / "jobs" / ".meow-live.json").exists())
        res = meow("status", "--json", "workflow.yaml", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        got: dict[str, Any] = json.loads(res.stdout)
        assert got["source"] == "http", got
        assert got["status"]["status"] == "ok"
        res = meow("status", "--json", "jobs", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        got = json.loads(res.stdout)
        assert got["source"] == "folders"
        assert "token" in got["note"], got
        live = json.loads((tmp_path / "jobs" / ".meow-live.json").read_text())
        assert "file-token" not in json.dumps(live)


def test_a_missing_runner_http_token_is_an_error_naming_it(tmp_path: Path) -> None:
    os.environ.pop("MEOW_TEST_UNSET_OPERATOR_TOKEN", None)
    write_workflow(
        tmp_path,
        "runner: {base_dir: data, http: {port: 0, token_env: MEOW_TEST_UNSET_OPERATOR_TOKEN}}\n"
        "recipes:\n  r: {kind: bash, script: 'true'}\n"
        "patterns:\n  p: {glob: '*.txt', recipe: r}\n",
    )
    res = meow("validate", "workflow.yaml", cwd=tmp_path)
    assert res.returncode == 1
    assert (
        "runner.http.token_env: environment variable MEOW_TEST_UNSET_OPERATOR_TOKEN" in res.stderr
    )
    assert "is not set" in res.stderr
