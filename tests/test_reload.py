"""Reloading the workflow file while the runner runs (issue 24): in-process runners from real
files, real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
from pathlib import Path
from typing import Any

import aiohttp

from meow_async import Runner, send

from .conftest import WAIT, poll_until
from .test_network import pki

__all__ = ["pki"]  # the fixture, imported for its use here

RUNNER = "runner: {base_dir: data, jobs_dir: jobs, kill_timeout: 1}\n"


def _write(path: Path, text: str) -> None:
    """As an editor saves: a temporary file renamed into place (never half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _metas(jobs: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in jobs.glob("*/*/job.json")]


def _files(version: int) -> str:
    return RUNNER + (
        "recipes:\n"
        "  r:\n"
        "    kind: python\n"
        f"    script: print('v{version}')\n"
        "patterns:\n"
        "  p: {glob: '*.txt', recipe: r}\n"
    )


async def test_files_dropped_during_ten_reloads_each_make_exactly_one_job(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    wf = tmp_path / "workflow.yaml"
    wf.write_text(_files(0))
    dropped: list[str] = []
    stop = asyncio.Event()

    async def drop() -> None:
        while not stop.is_set():
            name = f"f{len(dropped)}.txt"
            (data / name).write_text("x")
            dropped.append(name)
            await asyncio.sleep(0.01)

    versions = set()
    async with Runner.from_file(wf) as runner:
        assert runner.reloads is not None
        versions.add(runner.reloads.version)
        dropping = asyncio.create_task(drop())
        for v in range(1, 11):
            _write(wf, _files(v))
            outcome = await runner.reload()
            # The runner follows the file too: whichever came first applied it.
            assert outcome.result in ("applied", "unchanged"), outcome
            assert runner.reloads.version == outcome.version
            versions.add(outcome.version)
            await asyncio.sleep(0.03)
        stop.set()
        await dropping
        async with asyncio.timeout(WAIT):
            await runner.wait_for(lambda s: s.done + s.failed >= len(dropped))
        assert runner.reloads.reloads == 10
    assert len(versions) == 11
    metas = _metas(tmp_path / "jobs")
    inputs = sorted(Path(str(m["parameters"]["input_file"])).name for m in metas)  # type: ignore[index]
    assert inputs == sorted(dropped)  # none lost, none twice
    assert {m["state"] for m in metas} == {"done"}
    assert {m["workflow_version"] for m in metas} <= versions
    assert len({m["workflow_version"] for m in metas}) > 1  # jobs made under several versions


def _net(port: int, tag: str) -> str:
    return RUNNER + (
        "recipes:\n"
        "  r:\n"
        "    kind: python\n"
        "    script: print(tag)\n"
        "patterns:\n"
        "  n:\n"
        f"    port: {port}\n"
        "    framing: delimiter\n"
        "    ack: true\n"
        "    recipe: r\n"
        f"    parameters: {{tag: {tag}}}\n"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_listener_whose_port_stayed_keeps_its_connection_one_that_moved_closes_after_acking(
    tmp_path: Path,
) -> None:
    (tmp_path / "data").mkdir()
    wf = tmp_path / "workflow.yaml"
    wf.write_text(_net(0, "one"))
    async with Runner.from_file(wf) as runner:
        port = runner.ports()["n"]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"first\n")
        assert (await asyncio.wait_for(reader.readline(), WAIT)).startswith(b"ok ")

        _write(wf, _net(0, "two"))  # a parameter changed, not the listener's settings
        assert (await runner.reload()).result in ("applied", "unchanged")
        await poll_until(runner.network.ready.is_set)
        writer.write(b"second\n")  # the same connection still works
        assert (await asyncio.wait_for(reader.readline(), WAIT)).startswith(b"ok ")
        assert runner.ports()["n"] == port

        writer.write(b"thi")  # a message under way when the port moves
        await writer.drain()
        await asyncio.sleep(0.05)  # read by the runner before the reload
        moved = _free_port()
        _write(wf, _net(moved, "three"))
        assert (await runner.reload()).result in ("applied", "unchanged")
        await poll_until(lambda: runner.ports().get("n") == moved)
        writer.write(b"rd\n")
        ack = await asyncio.wait_for(reader.readline(), WAIT)
        assert ack.startswith(b"ok "), ack  # the message under way was taken
        assert await asyncio.wait_for(reader.read(), WAIT) == b""  # then the connection closed
        writer.close()

        r2, w2 = await asyncio.open_connection("127.0.0.1", moved)
        w2.write(b"fourth\n")
        assert (await asyncio.wait_for(r2.readline(), WAIT)).startswith(b"ok ")
        w2.close()
        async with asyncio.timeout(WAIT):
            await runner.wait_for(lambda s: s.done >= 4)
    by_tag = {}
    for m in _metas(tmp_path / "jobs"):
        payload = Path(str(m["parameters"]["input_file"])).read_text()  # type: ignore[index]
        by_tag[payload] = m["parameters"]["tag"]  # type: ignore[index]
    # The message begun before the move is handled by the rules it began under.
    assert by_tag == {"first": "one", "second": "two", "third": "two", "fourth": "three"}


async def test_post_reload_needs_the_token_and_answers_what_changed_or_the_problems(
    tmp_path: Path,
) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "token").write_text("s3cret\n")
    http = "  http: {port: 0, token_file: token}\n"
    wf = tmp_path / "workflow.yaml"
    wf.write_text(_files(1).replace(RUNNER, "runner:\n  base_dir: data\n  jobs_dir: jobs\n" + http))
    async with Runner.from_file(wf) as runner, aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{runner.http_port}"
        auth = {"Authorization": "Bearer s3cret"}
        async with session.get(f"{url}/status", headers=auth) as r:
            before = (await r.json())["workflow"]
        assert before["version"] == runner.reloads.version  # type: ignore[union-attr]
        async with session.post(f"{url}/reload") as r:
            assert r.status == 401
        text = wf.read_text()
        _write(wf, text.replace("print('v1')", "print('v2')"))
        async with session.post(f"{url}/reload", headers=auth) as r:
            body = await r.json()
        assert r.status == 200, body
        # The file's own follower may have applied it first.
        assert body["result"] in ("applied", "unchanged")
        _write(wf, text.replace("glob:", "globb:"))
        async with session.post(f"{url}/reload", headers=auth) as r:
            body = await r.json()
        assert r.status == 409, body
        assert body["result"] == "refused"
        assert body["version"] is None  # a file with problems has no version (was "?")
        assert any("globb" in p for p in body["problems"])
        async with session.get(f"{url}/status", headers=auth) as r:
            after = (await r.json())["workflow"]
        assert after["version"] != before["version"]
        assert after["refused"]["problems"] == body["problems"]


async def test_editing_a_recipe_file_reloads_and_new_jobs_use_it(tmp_path: Path) -> None:
    """A recipe given as ``file:`` is part of the workflow: saving it reloads."""
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "step.py").write_text("print('old')\n")
    wf = tmp_path / "workflow.yaml"
    wf.write_text(
        RUNNER + "recipes:\n  r: {file: step.py}\npatterns:\n  p: {glob: '*.txt', recipe: r}\n"
    )
    async with Runner.from_file(wf) as runner:
        assert runner.reloads is not None
        before = runner.reloads.version
        (data / "a.txt").write_text("a")
        async with asyncio.timeout(WAIT):
            await runner.wait_for(lambda s: s.done >= 1)
        _write(tmp_path / "step.py", "print('new')\n")
        await poll_until(lambda: runner.reloads is not None and runner.reloads.version != before)
        (data / "b.txt").write_text("b")
        async with asyncio.timeout(WAIT):
            await runner.wait_for(lambda s: s.done >= 2)
    out = {}
    for m in _metas(tmp_path / "jobs"):
        name = Path(str(m["parameters"]["input_file"])).name  # type: ignore[index]
        out[name] = (Path(str(m["dir"])) / "stdout.txt").read_text()
    assert out == {"a.txt": "old\n", "b.txt": "new\n"}


def _http(port: int, tls: str = "") -> str:
    return RUNNER + (
        "recipes:\n  r: {kind: python, script: print(1)}\n"
        f"patterns:\n  h: {{route: /in, port: {port}, recipe: r{tls}}}\n"
    )


async def test_an_http_listener_is_started_again_when_its_tls_settings_change(
    tmp_path: Path, pki: dict[str, Any]
) -> None:
    """Same port, TLS added by a reload: the listener is rebound with it."""
    (tmp_path / "data").mkdir()
    wf = tmp_path / "workflow.yaml"
    port = _free_port()
    wf.write_text(_http(port))
    tls = f", tls_cert: {pki['cert']}, tls_key: {pki['key']}"
    ctx = ssl.create_default_context(cafile=str(pki["ca"]))
    async with Runner.from_file(wf) as runner, aiohttp.ClientSession() as session:
        async with session.post(f"http://127.0.0.1:{port}/in", data=b"plain") as r:
            assert r.status == 202, await r.text()
        _write(wf, _http(port, tls))
        assert (await runner.reload()).result in ("applied", "unchanged")
        await poll_until(runner.http.ready.is_set)  # cleared by the change until served
        async with session.post(f"https://127.0.0.1:{port}/in", data=b"tls", ssl=ctx) as r:
            assert r.status == 202, await r.text()
        async with asyncio.timeout(WAIT):
            await runner.wait_for(lambda s: s.done >= 2)


def _backlogged(release: Path, network: bool) -> str:
    """One job slot, an events queue of one: acknowledged messages past them wait in the
    backlog (issue 26). Without ``network`` the file drops the network rule."""
    rule = (
        "  n: {port: 0, recipe: r, variable: message, ack: true, framing: length,\n"
        f"      parameters: {{release: '{release}'}}}}\n"
    )
    return (
        "runner: {base_dir: data, jobs_dir: jobs, kill_timeout: 1, queue_size: 1, max_jobs: 1,\n"
        "         handlers: 1, max_backlog: 50}\n"
        "recipes:\n"
        "  r:\n"
        "    kind: bash\n"
        "    script: |\n"
        '      while [ ! -e "$release" ]; do sleep 0.01; done\n'
        '      cat "$message"\n'
        "patterns:\n"
        "  p: {glob: '*.txt', recipe: r, parameters: {release: '/'}}\n" + (rule if network else "")
    )


async def test_a_backlogged_message_keeps_its_rules_through_a_reload(tmp_path: Path) -> None:
    """Messages acknowledged while the events queue was full wait in the backlog; a reload
    that removes their rule meanwhile does not drop them (they were accepted: each makes its
    job under the version it came in under, as an event queued before the reload does)."""
    (tmp_path / "data").mkdir()
    release = tmp_path / "release"
    wf = tmp_path / "workflow.yaml"
    wf.write_text(_backlogged(release, network=True))
    async with Runner.from_file(wf) as runner:
        assert runner.reloads is not None
        first = runner.reloads.version
        to = ("127.0.0.1", runner.ports()["n"])
        acked: list[str] = []
        for i in range(20):
            msg_id = await send(*to, f"m{i}".encode(), ack=True, framing="length")
            assert msg_id is not None
            acked.append(msg_id)
            if runner.network.backlog()[0] >= 3:
                break
        assert runner.network.backlog()[0] >= 3, "nothing waits in the backlog"
        _write(wf, _backlogged(release, network=False))
        await poll_until(lambda: runner.reloads is not None and runner.reloads.version != first)
        assert "n" not in runner.rules
        release.touch()
        async with asyncio.timeout(WAIT):
            await runner.wait_for(lambda s: s.done + s.failed >= len(acked))
        assert runner.network.backlog() == (0, 0)
    metas = _metas(tmp_path / "jobs")
    by_message = {m["event"]["message_id"]: m for m in metas}  # type: ignore[index]
    assert sorted(by_message) == sorted(acked)
    for m in by_message.values():
        assert m["state"] == "done", m
        assert m["rule"] == "n"
        assert m["workflow_version"] == first
