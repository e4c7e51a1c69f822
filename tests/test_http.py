"""HTTP triggers on real sockets (127.0.0.1, ports from the OS), driven by aiohttp's client,
by curl in a subprocess, and by raw sockets for what well-behaved clients never send.

Every wait is on a condition with a timeout (``WAIT`` bounds it; it is no timing claim).

Some tests reproduce bugs found while they were written (fixed in src since): a retry
waiting on a refused first attempt, Expect: 100-continue, a route added back while its server
closes, a port shared with a port-0 pattern or between two addresses, a client gone while its
accepted request waits for the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import shutil
import signal
import socket
import struct
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from meow_async import HttpPattern, MonitorError, Runner
from meow_async.monitors.spool import Journal

from .conftest import WAIT, Workspace, poll_until, py_recipe, sh_recipe, wait_until_sync
from .test_cli import MeowRun

TOKEN_ENV = "MEOW_TEST_HTTP_TOKEN"  # noqa: S105 - the variable's name, not a token
HTTP_LOGGER = "meow_async.monitors.http"
CAT = 'cat "$input_file"'
#: The recipe behind the flow-control tests: it waits until the file ``release`` names exists.
BLOCK = 'while [ ! -e "$release" ]; do sleep 0.01; done\ncat "$input_file"'


def http(name: str = "h", route: str = "/in", port: int = 0, **kw: Any) -> HttpPattern:
    kw.setdefault("recipe", "r")
    return HttpPattern(name=name, route=route, port=port, **kw)


def url(r: Runner, name: str, path: str) -> str:
    return f"http://127.0.0.1:{r.ports()[name]}{path}"


def spooled(folder: Path) -> list[Path]:
    """Message bodies in the spool folder, arriving or waiting for their jobs."""
    return sorted(folder.glob("*.msg"))


def stdout_of(job: dict[str, Any]) -> str:
    return (Path(job["dir"]) / "stdout.txt").read_text()


async def until_finished(r: Runner, n: int) -> None:
    async with asyncio.timeout(WAIT):
        await r.wait_for(lambda s: s.finished >= n)


@contextlib.asynccontextmanager
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as session:
        yield session


async def post(
    session: aiohttp.ClientSession, target: str, data: Any = b"", **kw: Any
) -> tuple[int, dict[str, Any], Any]:
    """Status, JSON body and headers of one request."""
    async with session.post(target, data=data, **kw) as resp:
        return resp.status, await resp.json(), resp.headers


async def raw_request(port: int, data: bytes) -> bytes:
    """Send bytes as they are; read the server's whole answer (it closes after it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(WAIT):
            return await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


# -- 1. the happy path --------------------------------------------------------------------------


async def test_post_runs_a_job_with_body_route_parts_query_and_headers(ws: Workspace) -> None:
    script = (
        "print(open(input_file).read())\n"
        "print('instrument', instrument)\n"
        "print('query', sorted(query.items()))\n"
        "print('headers', sorted(headers.items()))\n"
    )
    pattern = http(route="/ingest/{instrument}", headers=["X-Trace", "X-Absent"])
    async with ws.runner([pattern], [py_recipe("r", script)]) as r, client() as s:
        status, body, _ = await post(
            s,
            url(r, "h", "/ingest/spectro-7?run=42&note=a%20b"),
            b"hello over http",
            headers={"X-Trace": "abc-123", "X-Not-Chosen": "no"},
        )
        assert status == 202, body
        assert set(body) == {"message_id", "jobs"}
        await until_finished(r, 1)
    (job,) = ws.jobs_list()
    assert body["jobs"] == [job["id"]]  # the id promised is the job made
    assert job["state"] == "done"
    assert stdout_of(job).splitlines() == [
        "hello over http",
        "instrument spectro-7",
        "query [('note', 'a b'), ('run', '42')]",
        "headers [('x-trace', 'abc-123')]",
    ]
    event = job["event"]
    assert event["kind"] == "http"
    assert event["message_id"] == body["message_id"]
    assert (event["method"], event["route"]) == ("POST", "/ingest/{instrument}")
    assert event["request_path"] == "/ingest/spectro-7"
    assert re.fullmatch(r"127\.0\.0\.1(:\d+)?", event["peer"]), event["peer"]
    assert event["size"] == len(b"hello over http")
    assert event["identity"] is None
    # The job folder holds its own link to the body; the spool copy is gone.
    body_file = Path(job["parameters"]["input_file"])
    assert body_file.parent == Path(job["dir"])
    assert body_file.read_bytes() == b"hello over http"
    assert event["path"] == str(body_file)  # as for network events: the job's own copy
    assert spooled(r.spool_dir) == []


# -- 2. every status ----------------------------------------------------------------------------


async def test_unknown_route_wrong_method_and_bodies_over_max_size(ws: Workspace) -> None:
    async with ws.runner([http(max_size=1000)], [sh_recipe("r", CAT)]) as r, client() as s:
        status, body, _ = await post(s, url(r, "h", "/elsewhere"), b"x")
        assert (status, body) == (404, {"error": "no route /elsewhere"})

        async with s.get(url(r, "h", "/in")) as resp:
            assert resp.status == 405
            assert resp.headers["Allow"] == "POST"
            assert "error" in await resp.json()

        status, body, _ = await post(s, url(r, "h", "/in"), b"x" * 1001)  # by Content-Length
        assert status == 413
        assert "max_size (1000)" in body["error"]

        async def growing() -> AsyncIterator[bytes]:  # chunked: no Content-Length to refuse
            for _ in range(4):
                yield b"y" * 400

        status, body, _ = await post(s, url(r, "h", "/in"), growing())
        assert status == 413
        assert "max_size (1000)" in body["error"]
        assert spooled(r.spool_dir) == []  # the 800 bytes written before the limit are gone

        # Exactly max_size, chunked, is fine; only it makes a job.
        async def exactly() -> AsyncIterator[bytes]:
            for _ in range(4):
                yield b"z" * 250

        status, body, _ = await post(s, url(r, "h", "/in"), exactly())
        assert status == 202, body
        await until_finished(r, 1)
    (job,) = ws.jobs_list()
    assert stdout_of(job) == "z" * 1000
    assert r.stats.events == 1
    assert spooled(r.spool_dir) == []


async def test_bearer_token(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "s3cret-token")
    pattern = http(token_env=TOKEN_ENV)
    async with ws.runner([pattern], [sh_recipe("r", CAT)]) as r, client() as s:
        target = url(r, "h", "/in")
        for headers, says in [
            ({}, "a bearer token is needed"),
            ({"Authorization": "Basic czNjcmV0LXRva2Vu"}, "a bearer token is needed"),
            ({"Authorization": "Bearer s3cret-tokeN"}, "the bearer token is wrong"),
        ]:
            status, body, got = await post(s, target, b"refused", headers=headers)
            assert (status, body) == (401, {"error": says}), headers
            assert got["WWW-Authenticate"].startswith("Bearer ")
        good = {"Authorization": "Bearer s3cret-token"}
        status, body, _ = await post(s, target, b"let in", headers=good)
        assert status == 202, body
        await until_finished(r, 1)
    (job,) = ws.jobs_list()
    assert stdout_of(job) == "let in"
    assert job["event"]["identity"] == "bearer token of pattern h"
    assert r.stats.events == 1


async def test_malformed_request_is_answered_400_and_the_server_goes_on(ws: Workspace) -> None:
    async with ws.runner([http()], [sh_recipe("r", CAT)]) as r:
        port = r.ports()["h"]
        for garbage in [
            b"POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: banana\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # a TLS hello
            b"POST /in HTTP/1.1\r\nHost x\r\n\r\n",  # a header without its colon
        ]:
            answer = await raw_request(port, garbage)
            assert re.match(rb"HTTP/1\.[01] 400 ", answer), (garbage, answer)
        async with client() as s:
            status, body, _ = await post(s, url(r, "h", "/in"), b"after the garbage")
        assert status == 202, body
        await until_finished(r, 1)
    (job,) = ws.jobs_list()
    assert stdout_of(job) == "after the garbage"
    assert r.stats.events == 1


@pytest.mark.parametrize("backlog", [3, 0])
async def test_full_queue_and_backlog_are_answered_503_and_a_retry_after_it_drains_succeeds(
    ws: Workspace, backlog: int, caplog: pytest.LogCaptureFixture
) -> None:
    """The 503 says what is full and the setting that sizes it (the backlog, or with the
    backlog off the events queue), in its body and in one log line."""
    caplog.set_level(logging.WARNING, logger="meow_async")
    release = ws.root / "release"
    pattern = http(parameters={"release": str(release)})
    settings = {"queue_size": 1, "max_jobs": 1, "handlers": 1, "max_backlog": backlog}
    async with (
        ws.runner([pattern], [sh_recipe("r", BLOCK)], **settings) as r,
        client() as s,
    ):
        target = url(r, "h", "/in")
        accepted: list[str] = []
        for i in range(50):  # each 202 takes a place, until the queue and the backlog are full
            status, body, headers = await post(s, target, f"body {i}".encode())
            if status == 503:
                break
            assert status == 202, body
            accepted.append(f"body {i}")
        else:
            pytest.fail("50 requests against queue_size=1 and a blocked job: never a 503")
        assert headers["Retry-After"] == "1"
        if backlog:
            why = "backlog is full (3 accepted requests"
            assert why in body["error"], body
            assert "runner.max_backlog 3" in body["error"], body
        else:
            why = "events queue is full (runner.queue_size; the backlog is off"
            assert why in body["error"], body
        assert r.network.backlog()[0] == backlog
        refusals = [m for m in caplog.messages if "refused (503)" in m]
        assert len(refusals) == 1, caplog.messages
        assert why in refusals[0]
        refused = f"body {len(accepted)}"
        release.touch()
        for _ in range(int(WAIT * 10)):  # a client honouring Retry-After, in quicker steps
            status, body, _ = await post(s, target, refused.encode())
            if status != 503:
                break
            await asyncio.sleep(0.1)
        assert status == 202, body
        await until_finished(r, len(accepted) + 1)
    outputs = Counter(stdout_of(j) for j in ws.jobs_list())
    assert outputs == Counter([*accepted, refused])  # the 503 made no job, its retry one
    assert r.stats.events == len(accepted) + 1
    assert all(j["state"] == "done" for j in ws.jobs_list())


async def test_a_burst_beyond_the_queue_is_taken_whole_and_kept_in_the_journal(
    ws: Workspace,
) -> None:
    """1,000 POSTs, 200 at a time, while the only job slot is held: far past the events queue
    (20), every one is answered 202 at once (issue 26; it was 503 once the queue filled). The
    ones beyond the queue wait in the backlog, each in the spool journal on disk; stopped
    there, every accepted request has exactly one job made or is in the journal for the next
    start, never both, never neither."""
    release = ws.root / "release"  # never made: the first job holds the only slot
    pattern = http(parameters={"release": str(release)})
    settings: dict[str, Any] = {"queue_size": 20, "max_jobs": 1, "handlers": 1}
    settings.update(shutdown_timeout=0.2, http={"port": 0})  # runner.http shows the backlog
    n, at_once = 1000, 200
    async with ws.runner([pattern], [sh_recipe("r", BLOCK)], **settings) as r:
        target = url(r, "h", "/in")
        gate = asyncio.Semaphore(at_once)
        connector = aiohttp.TCPConnector(limit=at_once)
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=WAIT)
        ) as s:

            async def one(i: int) -> tuple[int, dict[str, Any], Any]:
                async with gate:
                    return await post(s, target, f"m{i}".encode())

            answers = await asyncio.gather(*(one(i) for i in range(n)))
        assert Counter(status for status, _, _ in answers) == {202: n}
        accepted = {body["message_id"] for _, body, _ in answers}
        assert len(accepted) == n
        waiting, size = r.network.backlog()
        assert waiting > n // 2, "the burst did not reach past the events queue"
        assert waiting * 2 <= size <= waiting * 4  # each body is "m" and 1-3 digits
        async with client() as s:
            async with s.get(f"http://127.0.0.1:{r.http_port}/status") as resp:
                shown = await resp.json()
            async with s.get(f"http://127.0.0.1:{r.http_port}/metrics") as resp:
                metrics = await resp.text()
        assert shown["queues"]["backlog"] == waiting  # nothing drains while the slot is held
        assert f'meow_queue_depth{{queue="backlog"}} {waiting}.0' in metrics
        assert f"meow_backlog_bytes {size}.0" in metrics
    made = [j["event"]["message_id"] for j in ws.jobs_list()]
    assert len(made) == len(set(made))
    journal = Journal(r.spool_dir, durable=False)
    pending = {e["id"] for e in journal.recover()}
    assert not pending & set(made)
    assert pending | set(made) == accepted


# -- 3. curl ------------------------------------------------------------------------------------


async def curl(*args: str, stdin: bytes = b"") -> bytes:
    """curl as a process (the loop keeps serving meanwhile); its stdout. It must exit 0."""
    exe = shutil.which("curl")
    assert exe is not None, "curl is not installed (.ci/run installs it): these tests need it"
    proc = await asyncio.create_subprocess_exec(
        exe,
        "-sS",
        "--max-time",
        str(WAIT),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin)
    assert proc.returncode == 0, err.decode()
    return out


def split_curl(out: bytes) -> tuple[int, str]:
    """What ``-w '\\n%{http_code}'`` printed after the body: the status, and the body."""
    body, _, code = out.rpartition(b"\n")
    return int(code), body.decode()


async def test_curl_posts_a_body_and_is_refused_without_the_token(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "curl-token")
    script = 'cat "$input_file"; echo; echo "$site"'
    pattern = http(route="/at/{site}", token_env=TOKEN_ENV)
    async with ws.runner([pattern], [sh_recipe("r", script)]) as r:
        target = url(r, "h", "/at/north")
        write = ["-o", "-", "-w", "\n%{http_code}"]
        out = await curl(*write, "--data-binary", "@-", target, stdin=b"from curl")
        status, text = split_curl(out)
        assert status == 401
        assert json.loads(text) == {"error": "a bearer token is needed"}
        out = await curl("-i", "-H", "Authorization: Bearer nope", "--data-binary", "x", target)
        assert out.startswith(b"HTTP/1.1 401 ")
        assert b'\r\nWWW-Authenticate: Bearer realm="' in out
        auth = ["-H", "Authorization: Bearer curl-token"]
        out = await curl(*write, *auth, "--data-binary", "@-", target, stdin=b"from curl")
        status, text = split_curl(out)
        assert status == 202, text
        answer = json.loads(text)
        await until_finished(r, 1)
    (job,) = ws.jobs_list()
    assert answer == {"message_id": job["event"]["message_id"], "jobs": [job["id"]]}
    assert stdout_of(job) == "from curl\nnorth\n"
    assert job["event"]["kind"] == "http"
    assert r.stats.events == 1


async def expect_100(port: int, size: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Headers of a request that asks before sending its body (as curl does past 1 MiB)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n" % size
    )
    await writer.drain()
    return reader, writer


async def test_expect_100_continue_is_answered_before_the_body(ws: Workspace) -> None:
    async with ws.runner([http(max_size=1000)], [sh_recipe("r", CAT)]) as r:
        reader, writer = await expect_100(r.ports()["h"], 5)
        try:
            async with asyncio.timeout(2):  # curl sends the body anyway after 1 s
                interim = await reader.readuntil(b"\r\n\r\n")
            assert interim.startswith(b"HTTP/1.1 100 Continue\r\n"), interim
            writer.write(b"hello")
            await writer.drain()
            async with asyncio.timeout(WAIT):
                final = await reader.readuntil(b"\r\n\r\n")
            assert final.startswith(b"HTTP/1.1 202 "), final
        finally:
            writer.close()
        # A body that would be refused is refused at once, never invited.
        reader, writer = await expect_100(r.ports()["h"], 1001)
        try:
            async with asyncio.timeout(WAIT):
                final = await reader.readuntil(b"\r\n\r\n")
            assert final.startswith(b"HTTP/1.1 413 "), final
        finally:
            writer.close()
        await until_finished(r, 1)
    (job,) = ws.jobs_list()
    assert stdout_of(job) == "hello"
    assert r.stats.events == 1


# -- 4. a large body, streamed ------------------------------------------------------------------

BIG_CHUNK = 256 * 1024
BIG_CHUNKS = 128  # 32 MiB


def big_chunk(i: int) -> bytes:
    return hashlib.sha256(str(i).encode()).digest() * (BIG_CHUNK // 32)


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


async def test_large_streamed_body_is_byte_identical_and_never_held_in_memory(
    ws: Workspace,
) -> None:
    size = BIG_CHUNK * BIG_CHUNKS
    digest = hashlib.sha256()
    for i in range(BIG_CHUNKS):
        digest.update(big_chunk(i))
    async with ws.runner([http(max_size=size)], [sh_recipe("r", 'wc -c < "$input_file"')]) as r:
        async with client() as s:
            await post(s, url(r, "h", "/in"), b"warm up")  # the first request's own costs
            before = rss_kib()
            peak = before

            async def body() -> AsyncIterator[bytes]:
                nonlocal peak
                for i in range(BIG_CHUNKS):
                    peak = max(peak, rss_kib())
                    yield big_chunk(i)

            status, answer, _ = await post(s, url(r, "h", "/in"), body())
            peak = max(peak, rss_kib())
        assert status == 202, answer
        await until_finished(r, 2)
    job = next(j for j in ws.jobs_list() if j["event"]["message_id"] == answer["message_id"])
    assert stdout_of(job).strip() == str(size)
    with open(job["parameters"]["input_file"], "rb") as f:
        assert hashlib.file_digest(f, "sha256").digest() == digest.digest()
    growth = (peak - before) * 1024
    # Measured: under 1 MiB. A server holding the body would grow by all of it.
    assert growth < size // 4, f"RSS grew {growth >> 20} MiB for a {size >> 20} MiB body"


# -- 5. many at once ----------------------------------------------------------------------------


async def test_200_concurrent_requests_all_accepted_and_run(ws: Workspace) -> None:
    n = 200
    async with ws.runner([http()], [sh_recipe("r", CAT)]) as r:
        target = url(r, "h", "/in")
        async with client() as s:
            answers = await asyncio.gather(
                *(post(s, target, f"request {i}".encode()) for i in range(n))
            )
        assert [a[0] for a in answers] == [202] * n
        async with asyncio.timeout(WAIT * 2):  # 200 bash processes on a small machine
            await r.wait_for(lambda st: st.finished >= n)
    ids = {a[1]["message_id"] for a in answers}
    assert len(ids) == n
    jobs = ws.jobs_list()
    assert len(jobs) == n
    assert {j["event"]["message_id"] for j in jobs} == ids
    assert {job_id for a in answers for job_id in a[1]["jobs"]} == {j["id"] for j in jobs}
    assert sorted(stdout_of(j) for j in jobs) == sorted(f"request {i}" for i in range(n))
    assert all(j["state"] == "done" for j in jobs)
    assert spooled(r.spool_dir) == []


# -- 6. Idempotency-Key -------------------------------------------------------------------------


async def test_idempotency_key_answers_a_retry_once_also_after_a_restart(ws: Workspace) -> None:
    pattern = http()
    recipe = sh_recipe("r", CAT)
    key = {"Idempotency-Key": "order-17"}
    async with ws.runner([pattern], [recipe]) as r, client() as s:
        target = url(r, "h", "/in")
        status, first, headers = await post(s, target, b"once", headers=key)
        assert status == 202, first
        assert "Idempotent-Replayed" not in headers
        status, again, headers = await post(s, target, b"once", headers=key)
        assert (status, again) == (202, first)
        assert headers["Idempotent-Replayed"] == "true"
        # Two at once with a new key: still one job between them.
        both = await asyncio.gather(
            *(post(s, target, b"twice", headers={"Idempotency-Key": "order-18"}) for _ in "ab")
        )
        assert [b[0] for b in both] == [202, 202]
        assert both[0][1] == both[1][1]
        await until_finished(r, 2)
    assert (r.spool_dir / "idempotency.log").exists()
    async with ws.runner([pattern], [recipe]) as r2, client() as s:
        target = url(r2, "h", "/in")  # port 0: another port, the same route
        status, after, headers = await post(s, target, b"once", headers=key)
        assert (status, after) == (202, first)
        assert headers["Idempotent-Replayed"] == "true"
        status, fresh, headers = await post(s, target, b"new", headers={"Idempotency-Key": "o-19"})
        assert status == 202
        assert "Idempotent-Replayed" not in headers
        await until_finished(r2, 1)
    assert r2.stats.events == 1  # the replay made no event
    jobs = ws.jobs_list()
    assert sorted(stdout_of(j) for j in jobs) == ["new", "once", "twice"]
    assert {j["id"] for j in jobs} == {*first["jobs"], *both[0][1]["jobs"], *fresh["jobs"]}


async def test_a_retry_waiting_on_a_refused_first_attempt_goes_on_as_its_own_request(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with ws.runner([http(max_size=1000)], [sh_recipe("r", CAT)]) as r, client() as s:
        target, key = url(r, "h", "/in"), {"Idempotency-Key": "k"}
        # Seen from outside, nothing tells when the retry has reached the in-flight first
        # attempt: the answers store it looks in just before tells.
        looked: list[str] = []
        real_get = r.http._keys.get

        def spy(scope: str) -> dict[str, Any] | None:
            looked.append(scope)
            return real_get(scope)

        monkeypatch.setattr(r.http._keys, "get", spy)
        gate = asyncio.Event()

        async def too_big() -> AsyncIterator[bytes]:
            yield b"x" * 600
            await gate.wait()
            yield b"x" * 600  # over max_size: the first attempt ends 413

        first = asyncio.create_task(post(s, target, too_big(), headers=key))
        await poll_until(lambda: len(spooled(r.spool_dir)) == 1)
        retry = asyncio.create_task(post(s, target, b"small", headers=key))
        await poll_until(lambda: len(looked) == 2)  # the retry now waits for the first
        gate.set()
        assert (await first)[0] == 413
        status, body, headers = await retry
        # Not the first one's 413 replayed as a 202: accepted, with a job of its own.
        assert status == 202, body
        assert set(body) == {"message_id", "jobs"}, body
        assert "Idempotent-Replayed" not in headers
        status, again, headers = await post(s, target, b"small", headers=key)
        assert (status, again, headers["Idempotent-Replayed"]) == (202, body, "true")
        await until_finished(r, 1)
    (job,) = ws.jobs_list()
    assert [job["id"]] == body["jobs"]
    assert stdout_of(job) == "small"


# -- 7. routes at run time ----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def fresh_connections() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that opens a connection per request: each one meets the server as it is now,
    not a kept-alive connection to one that has since closed."""
    connector = aiohttp.TCPConnector(force_close=True)
    timeout = aiohttp.ClientTimeout(total=WAIT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        yield session


async def test_routes_follow_the_workflow_at_run_time(
    ws: Workspace, unused_tcp_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=HTTP_LOGGER)
    port = unused_tcp_port
    base = f"http://127.0.0.1:{port}"
    async with (
        ws.runner([http("a", "/a", port)], [sh_recipe("r", CAT)]) as r,
        fresh_connections() as s,
    ):
        assert (await post(s, f"{base}/b", b"early"))[0] == 404
        r.add_pattern(http("b", "/b", port))  # a second route on the same server
        assert r.ports() == {"a": port, "b": port}
        assert (await post(s, f"{base}/b", b"to b"))[0] == 202
        r.remove_pattern("b")
        assert (await post(s, f"{base}/b", b"late"))[0] == 404
        assert (await post(s, f"{base}/a", b"to a"))[0] == 202
        r.remove_pattern("a")  # nothing left on the port: its server closes
        assert r.ports() == {}
        await poll_until(lambda: f"closed listener on 127.0.0.1:{port}" in caplog.text)
        assert refused(port)
        r.add_pattern(http("a", "/a", port))  # and opens again
        await r.wait_ready()
        assert (await post(s, f"{base}/a", b"to a again"))[0] == 202
        await until_finished(r, 3)
    assert sorted(stdout_of(j) for j in ws.jobs_list()) == ["to a", "to a again", "to b"]


async def test_a_route_added_back_while_its_server_closes_is_served(
    ws: Workspace, unused_tcp_port: int
) -> None:
    port = unused_tcp_port
    async with (
        ws.runner([http("a", "/a", port)], [sh_recipe("r", CAT)]) as r,
        fresh_connections() as s,
    ):
        # A request still in its body keeps the closing server busy (its shutdown waits 1 s).
        _, half = await asyncio.open_connection("127.0.0.1", port)
        half.write(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nstarted")
        await half.drain()
        await poll_until(lambda: len(spooled(r.spool_dir)) == 1)
        r.remove_pattern("a")
        await poll_until(lambda: refused(port))  # the listening socket is closed
        r.add_pattern(http("a", "/a", port))
        await r.wait_ready()
        try:
            async with asyncio.timeout(5):  # what it waits for takes milliseconds
                status, body, _ = await post(s, f"http://127.0.0.1:{port}/a", b"back")
        finally:
            half.close()
        assert status == 202, body


async def test_a_route_on_the_port_a_port_0_pattern_got_joins_its_server(ws: Workspace) -> None:
    async with ws.runner([http("a", "/a")], [sh_recipe("r", CAT)]) as r, client() as s:
        port = r.ports()["a"]
        r.add_pattern(http("b", "/b", port))
        assert r.ports() == {"a": port, "b": port}
        assert (await post(s, url(r, "b", "/b"), b"to b"))[0] == 202
        await until_finished(r, 1)


def refused(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def can_bind(host: str) -> bool:
    try:
        with socket.socket() as sock:
            sock.bind((host, 0))
    except OSError:
        return False
    return True


async def test_one_port_on_two_addresses_serves_each_its_own_routes(
    ws: Workspace, unused_tcp_port: int
) -> None:
    if not can_bind("127.0.0.2"):
        pytest.skip("127.0.0.2 is not a loopback address here")
    port = unused_tcp_port
    patterns = [http("one", "/one", port), http("two", "/two", port, host="127.0.0.2")]
    async with ws.runner(patterns, [sh_recipe("r", CAT)]) as r, client() as s:
        got = {
            (host, path): (await post(s, f"http://{host}:{port}{path}", b"x"))[0]
            for host in ("127.0.0.1", "127.0.0.2")
            for path in ("/one", "/two")
        }
        await until_finished(r, 2)
    assert got == {
        ("127.0.0.1", "/one"): 202,
        ("127.0.0.1", "/two"): 404,
        ("127.0.0.2", "/one"): 404,
        ("127.0.0.2", "/two"): 202,
    }


# -- 8. two claims on one route -----------------------------------------------------------------


async def test_patterns_claiming_one_route_must_agree(ws: Workspace, unused_tcp_port: int) -> None:
    port = unused_tcp_port
    with pytest.raises(MonitorError, match=r"patterns 'one' and 'two' both claim /in on "):
        ws.runner([http("one", port=port), http("two", port=port, max_size=10)], [sh_recipe("r")])
    # Agreeing claims are fine: one request, a job for each rule.
    async with (
        ws.runner([http("one", port=port), http("two", port=port)], [sh_recipe("r", CAT)]) as r,
        client() as s,
    ):
        with pytest.raises(MonitorError, match=r"patterns 'one' and 'three' both claim /in"):
            r.add_pattern(http("three", port=port, methods=["POST", "PUT"]))
        assert set(r.rules) == {"one", "two"}
        status, body, _ = await post(s, f"http://127.0.0.1:{port}/in", b"to both")
        assert status == 202, body
        assert len(body["jobs"]) == 2
        await until_finished(r, 2)
    assert sorted(j["rule"] for j in ws.jobs_list()) == ["one", "two"]
    assert {j["id"] for j in ws.jobs_list()} == set(body["jobs"])


# -- 9. a port in use ---------------------------------------------------------------------------


async def test_port_in_use_names_the_port_and_the_pattern(ws: Workspace) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(MonitorError) as info:
            await ws.runner([http("busy", port=port)], [sh_recipe("r")]).run()
        assert f"port {port}" in str(info.value)
        assert "'busy'" in str(info.value)
        assert "already in use" in str(info.value)
        async with ws.runner([http("ok")], [sh_recipe("r", CAT)]) as r, client() as s:
            with pytest.raises(MonitorError, match=rf"port {port} .*'late'.*already in use"):
                r.add_pattern(http("late", "/late", port))
            assert set(r.rules) == {"ok"}
            assert (await post(s, url(r, "ok", "/in"), b"still serving"))[0] == 202
            await until_finished(r, 1)


# -- 10. SIGKILL after the 202 ------------------------------------------------------------------


def frozen(pid: int) -> bool:
    """Every thread of the process is stopped (SIGSTOP is delivered, not merely sent)."""
    states = []
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        with contextlib.suppress(FileNotFoundError):  # a thread that just ended
            states.append(stat.read_text().rpartition(")")[2].split()[0])
    return bool(states) and all(state in "tT" for state in states)


def test_sigkill_right_after_a_202_still_makes_its_one_job(tmp_path: Path) -> None:
    """The CLI runner is frozen (SIGSTOP) the moment a 202 arrives and SIGKILLed once that
    request has no job folder yet. One job slot and a job that waits make this certain
    within a few requests: accepted events then wait in the queue. A restart makes exactly
    one job for every 202."""
    (tmp_path / "data").mkdir()
    release = tmp_path / "release"
    (tmp_path / "workflow.yaml").write_text(
        "runner: {base_dir: data, jobs_dir: jobs, max_jobs: 1, handlers: 1, queue_size: 1,"
        " shutdown_timeout: 5, kill_timeout: 1}\n"
        "recipes:\n"
        f"  r: {{kind: bash, script: {json.dumps(BLOCK)}}}\n"
        "patterns:\n"
        f"  ingest: {{route: /ingest, port: 0, recipe: r, parameters: {{release: {release}}}}}\n"
    )
    jobs_dir = tmp_path / "jobs"

    def made(job_id: str) -> bool:
        return any(jobs_dir.glob(f"*/{job_id}/job.json"))  # written last: the job is made

    async def until_a_202_without_its_job(run: MeowRun) -> list[dict[str, Any]]:
        found = re.search(r"http POST (http://127\.0\.0\.1:\d+/ingest)", run.stdout)
        assert found is not None, run.report()
        accepted: list[dict[str, Any]] = []
        async with client() as s:
            for i in range(50):
                status, body, _ = await post(s, found.group(1), f"m{i}")
                run.proc.send_signal(signal.SIGSTOP)
                wait_until_sync(lambda: frozen(run.proc.pid))  # every thread, not just asked
                if status == 202:
                    accepted.append({**body, "sent": f"m{i}"})
                else:
                    assert status == 503, body  # the queue is full: retried below
                if not all(made(a["jobs"][0]) for a in accepted):
                    return accepted
                run.proc.send_signal(signal.SIGCONT)
        raise AssertionError("every accepted request had its job at once, 50 times")

    with MeowRun("workflow.yaml", "-q", cwd=tmp_path) as run:
        run.wait_for("Try it:")  # bound and listening from here on
        accepted = asyncio.run(until_a_202_without_its_job(run))
        run.proc.send_signal(signal.SIGKILL)
        assert run.proc.wait(WAIT) == -signal.SIGKILL
    promised = [a["jobs"][0] for a in accepted]
    made_at_kill = sum(map(made, promised))
    assert made_at_kill < len(promised)
    release.touch()

    def jobs() -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in jobs_dir.glob("*/*/job.json")]

    def settled() -> bool:
        now = jobs()
        return len(now) >= len(promised) and all(j["state"] == "done" for j in now)

    with MeowRun("workflow.yaml", "-q", cwd=tmp_path) as run:
        wait_until_sync(settled)
    done = jobs()
    assert sorted(j["id"] for j in done) == sorted(promised)
    assert Counter(j["event"]["message_id"] for j in done) == Counter(
        a["message_id"] for a in accepted
    )
    outputs = sorted((Path(j["dir"]) / "stdout.txt").read_text() for j in done)
    assert outputs == sorted(a["sent"] for a in accepted)
    print(f"\nkilled after {len(accepted)} 202s, {made_at_kill} of them with a job")
    assert not list((tmp_path / "spool").glob("*.msg"))


# -- 11. a client gone half-way -----------------------------------------------------------------


async def test_client_gone_half_way_through_the_body_leaves_nothing(ws: Workspace) -> None:
    async with ws.runner([http()], [sh_recipe("r", CAT)]) as r:
        port = r.ports()["h"]
        head = b"POST /in HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n"
        # A FIN after 10 of 1000 bytes, and a RST after 10 more.
        for linger in (False, True):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(head + b"0123456789")
            await poll_until(lambda: len(spooled(r.spool_dir)) == 1)  # its body is arriving
            if linger:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            await poll_until(lambda: spooled(r.spool_dir) == [])
        async with client() as s:
            status, body, _ = await post(s, url(r, "h", "/in"), b"whole")
        assert status == 202, body
        await until_finished(r, 1)
    (job,) = ws.jobs_list()
    assert stdout_of(job) == "whole"
    assert r.stats.events == 1


def server_side_open(port: int, peer_port: int) -> bool:
    """Whether the kernel still has the server's end of a connection from ``peer_port``:
    gone once the server has seen the peer go and closed its socket."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, remote = line.split()[1:3]
        if int(local.split(":")[1], 16) == port and int(remote.split(":")[1], 16) == peer_port:
            return True
    return False


async def test_a_request_accepted_while_the_queue_is_full_survives_its_client(
    ws: Workspace,
) -> None:
    """Requests that all passed the queue check end their bodies one by one while a job waits:
    once the queue is full they are journaled and wait for room (the network monitor counts
    them). The third one waiting loses its client (a reset; a moment's room would go to the
    two before it). Accepted is accepted: it still makes its job, in this run."""
    release = ws.root / "release"
    pattern = http(parameters={"release": str(release)})
    settings = {"queue_size": 1, "max_jobs": 1, "handlers": 1, "max_backlog": 1}
    async with ws.runner([pattern], [sh_recipe("r", BLOCK)], **settings) as r:
        port = r.ports()["h"]
        clients = []
        for i in range(16):
            body = f"slow {i}".encode()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
            writer.write(body[:5])
            await writer.drain()
            clients.append((body, writer, asyncio.create_task(reader.readline())))
        await poll_until(lambda: len(spooled(r.spool_dir)) == len(clients))  # all past the check
        opened: list[asyncio.Task[bytes]] = []
        for body, writer, answer in clients:
            writer.write(body[5:])
            await writer.drain()
            opened.append(answer)
            # Each complete body is answered, or waits for room.
            await poll_until(lambda: r.network._blocked == sum(not a.done() for a in opened))
            if r.network._blocked == 3:
                break
        else:
            pytest.fail("the queue never filled")
        victim = len(opened) - 1
        _, writer, answer = clients[victim]
        peer_port = writer.get_extra_info("sockname")[1]
        writer.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
        writer.close()  # the client gives up: a reset
        answer.cancel()
        await poll_until(lambda: not server_side_open(port, peer_port))  # the server saw it
        assert r.network._blocked == 3  # still waiting for room
        release.touch()
        rest = [c for i, c in enumerate(clients) if i != victim]
        for body, writer, _ in rest[victim:]:
            writer.write(body[5:])
        async with asyncio.timeout(WAIT):
            lines = await asyncio.gather(*(a for _, _, a in rest))
        for _, writer, _ in rest:
            writer.close()
        assert all(line.startswith(b"HTTP/1.1 202 ") for line in lines), lines
        await until_finished(r, len(clients))
    outputs = sorted(stdout_of(j) for j in ws.jobs_list())
    assert outputs == sorted(body.decode() for body, _, _ in clients)
    assert spooled(r.spool_dir) == []
    assert not (r.spool_dir / "accepted.log").exists()  # nothing accepted is pending


async def test_a_repeated_query_name_gives_its_last_value(ws: Workspace) -> None:
    """As docs/http.md says: ``query`` holds one value per name, the last."""
    async with ws.runner([http()], [sh_recipe("r", "true")]) as r, client() as s:
        status, _, _ = await post(s, url(r, "h", "/in?x=1&x=2&y=3"), b"q")
        assert status == 202
        await until_finished(r, 1)
    (job,) = ws.jobs_list()
    assert job["parameters"]["query"] == {"x": "2", "y": "3"}
