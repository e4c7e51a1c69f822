"""Slow, idle, too many and malformed HTTP clients, and a full disk, from outside: raw sockets
sending a byte at a time, curl uploading slowly, garbage request lines and headers over 8 KiB,
and a spool folder on a real 1 MiB tmpfs under the real `meow-async run`.

Each limit is set short in the test (a second or less) so that a connection the server failed
to close shows up as a wait that ends only at the test's bound, not as a slow test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from meow_async import HttpPattern, Runner

from .conftest import WAIT, Workspace, poll_until, sh_recipe, wait_until_sync
from .test_cli import MeowRun
from .test_endpoints import samples

#: What the tests allow a connection the server should close (its limit is a second or less).
BOUND = 8.0
URL = "http://127.0.0.1:%d/in"
FAST = {"header_timeout": 0.6, "body_timeout": 0.6, "body_min_rate": 100, "idle_timeout": 0.6}


def http(**kw: Any) -> HttpPattern:
    kw.setdefault("recipe", "r")
    return HttpPattern(name="h", route="/in", port=0, **kw)


async def trickle(
    port: int, data: bytes, every: float, first: bytes = b""
) -> tuple[bytes, float, int]:
    """Send ``first`` at once, then ``data`` a byte every ``every`` seconds, reading what
    comes back meanwhile; the answer, the seconds until the server closed, and how many bytes
    of ``data`` went out by then."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    t0 = time.monotonic()
    sent = 0
    answer = b""
    writer.write(first)
    try:
        async with asyncio.timeout(BOUND):
            for i in range(len(data)):
                with contextlib.suppress(ConnectionError):
                    writer.write(data[i : i + 1])
                    await writer.drain()
                    sent += 1
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(every):
                        answer += await reader.read(4096)
                if reader.at_eof():
                    break
            else:
                with contextlib.suppress(ConnectionError):
                    answer += await reader.read()  # everything sent: wait for the close
    except ConnectionError:
        pass
    finally:
        writer.close()
    return answer, time.monotonic() - t0, sent


@contextlib.asynccontextmanager
async def running(ws: Workspace, pattern: HttpPattern) -> AsyncIterator[Runner]:
    async with ws.runner([pattern], [sh_recipe("r", 'cat "$input_file"')], http={"port": 0}) as r:
        yield r


async def metrics(r: Runner) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{r.http_port}/metrics") as resp,
    ):
        return samples(await resp.text())


def listener_of(r: Runner, port: int) -> Any:
    """The server's own count of a port's open and idle connections."""
    (listener,) = [
        server.listener
        for server, _ in r.http._servers.values()
        if server.listener.name.endswith(f":{port}")
    ]
    return listener


def closed(got: dict[Any, float], reason: str) -> float:
    return got["meow_connections_closed_total", (("reason", reason),)]


async def test_slow_headers_slow_bodies_and_idle_connections_are_closed(ws: Workspace) -> None:
    """One byte every 0.2 s: headers that never end, a body that never comes, a body that
    comes too slowly, and a connection that sends nothing, all at once. Each is closed within
    a second or so of its limit (before the change they stayed open: each wait below ran to
    BOUND), the first three with a JSON 408; no job, nothing spooled; a normal request is
    then served."""
    async with running(ws, http(**FAST)) as r:
        port = r.ports()["h"]
        head = b"POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
        before = await metrics(r)
        slow_headers, no_body, slow_body, silent = await asyncio.gather(
            trickle(port, head + b"X-Pad: " + b"a" * 200, 0.2),
            trickle(port, b"", 0.0, head + b"\r\n"),  # then nothing: the body never starts
            trickle(port, b"b" * 1000, 0.2, head + b"\r\n"),
            trickle(port, b"", 0.0),
        )
        for name, (answer, took, _) in {
            "slow headers": slow_headers,
            "no body": no_body,
            "slow body": slow_body,
        }.items():
            assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), (name, answer)
            assert b"Content-Type: application/json" in answer, name
            assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"], name
            assert took < BOUND - 1, (name, took)
        assert slow_headers[2] < len(head)  # cut off long before its headers were in
        assert slow_body[2] < 100
        assert silent[0] == b""
        assert silent[1] < BOUND - 1
        async with (
            aiohttp.ClientSession() as s,
            s.post(f"http://127.0.0.1:{port}/in", data=b"fine") as resp,
        ):
            assert resp.status == 202  # a well-behaved client is served
        async with asyncio.timeout(WAIT):
            await r.wait_for(lambda st: st.finished >= 1)
        got = await metrics(r)
        assert closed(got, "header") - closed(before, "header") == 1
        assert closed(got, "body") - closed(before, "body") == 2
        assert closed(got, "idle") - closed(before, "idle") == 1
        assert not list(r.spool_dir.glob("*.msg"))
    assert [j["event"]["size"] for j in ws.jobs_list()] == [4]


async def test_a_kept_alive_connection_is_closed_once_idle(ws: Workspace) -> None:
    async with running(ws, http(**FAST)) as r:
        reader, writer = await asyncio.open_connection("127.0.0.1", r.ports()["h"])
        writer.write(b"POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        async with asyncio.timeout(BOUND):
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 202 ")
            length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            t0 = time.monotonic()
            assert await reader.read() == b""  # closed by the server, not by us
        assert time.monotonic() - t0 < BOUND - 1
        writer.close()


async def test_curl_uploading_slowly_gets_a_408(ws: Workspace) -> None:
    """curl streams its stdin as the body (chunked); the test feeds it a byte every 0.2 s."""
    exe = shutil.which("curl")
    assert exe is not None, "curl is not installed (.ci/run installs it)"
    async with running(ws, http(methods=["PUT"], **FAST)) as r:
        before = await metrics(r)
        proc = await asyncio.create_subprocess_exec(
            exe,
            "-sS",
            "--max-time",
            str(WAIT),
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "-T",
            "-",
            f"http://127.0.0.1:{r.ports()['h']}/in",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdin is not None
        t0 = time.monotonic()
        with contextlib.suppress(ConnectionError):
            async with asyncio.timeout(BOUND):
                while proc.returncode is None:
                    proc.stdin.write(b"x")
                    await proc.stdin.drain()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.2):
                            await proc.wait()
        took = time.monotonic() - t0
        with contextlib.suppress(ConnectionError):
            proc.stdin.close()
        out, err = await proc.communicate()
        assert took < BOUND - 1, (out, err)
        body, _, code = out.rpartition(b"\n")
        assert code == b"408", (out, err)
        assert "body" in json.loads(body)["error"]
        assert closed(await metrics(r), "body") - closed(before, "body") == 1
        assert r.stats.events == 0
        assert not list(r.spool_dir.glob("*.msg"))


async def test_over_max_connections_the_oldest_idle_goes_else_503(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """max_connections 2: two silent connections, then a request: the one idle longest is
    closed to make room, and the request is served. Then two connections half-way through
    their headers (not idle), and a third request: answered 503 with Retry-After."""
    monkeypatch.setattr("meow_async.monitors.http_server.GRACE", 0.1)
    async with running(ws, http(max_connections=2)) as r:
        port = r.ports()["h"]
        listener = listener_of(r, port)
        before = await metrics(r)
        await poll_until(lambda: listener.open == 0)  # /metrics' connection is gone
        first = await asyncio.open_connection("127.0.0.1", port)
        second = await asyncio.open_connection("127.0.0.1", port)
        await poll_until(lambda: listener.open == 2)
        await asyncio.sleep(0.1)  # GRACE: from then on the first may be closed for another
        async with (
            aiohttp.ClientSession() as s,
            s.post(f"http://127.0.0.1:{port}/in", data=b"one") as resp,
        ):
            assert resp.status == 202
        async with asyncio.timeout(BOUND):
            assert await first[0].read() == b""  # closed to make room
        for _, w in (first, second):
            w.close()
        # The server has seen both go (else the second, idle, is closed for the cap below).
        await poll_until(lambda: listener.open == 0)
        busy = []
        for _ in range(2):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /in HTTP/1.1\r\nHost: x\r\n")  # headers begun: not idle
            busy.append((reader, writer))
        await poll_until(lambda: listener.open == 2 and not listener.idle)
        await asyncio.sleep(0.1)  # GRACE again: the busy ones are past it, and still not idle
        async with (
            aiohttp.ClientSession() as s,
            s.post(f"http://127.0.0.1:{port}/in", data=b"two") as resp,
        ):
            assert resp.status == 503
            assert resp.headers["Retry-After"] == "1"
            assert "too many connections" in (await resp.json())["error"]
        for _, w in busy:
            w.close()
        async with asyncio.timeout(WAIT):
            await r.wait_for(lambda st: st.finished >= 1)
        assert closed(await metrics(r), "cap") - closed(before, "cap") == 2
    assert [j["event"]["size"] for j in ws.jobs_list()] == [3]


async def test_closed_connections_are_forgotten(ws: Workspace) -> None:
    """Clients gone half-way through their bodies (their handlers cancelled) and clients
    served and gone: the server's count of open connections and its idle list go back to
    nothing (a cancelled handler once put its closed connection back among the idle ones)."""
    async with running(ws, http()) as r:
        port = r.ports()["h"]
        listener = listener_of(r, port)
        for _ in range(10):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nhalf")
            await writer.drain()
            writer.transport.abort()
        async with aiohttp.ClientSession() as s:
            for i in range(10):
                async with s.post(f"http://127.0.0.1:{port}/in", data=b"%d" % i) as resp:
                    assert resp.status == 202
        await poll_until(lambda: listener.open == 0 and not listener.idle)
        async with asyncio.timeout(WAIT):
            await r.wait_for(lambda st: st.finished >= 10)


def test_limits_are_checked() -> None:
    from meow_async import ConfigError

    for field, bad in [
        ("idle_timeout", 0),
        ("header_timeout", float("nan")),
        ("body_timeout", -1),
        ("body_min_rate", 0),
        ("max_connections", 0),
    ]:
        with pytest.raises(ConfigError, match=field):
            http(**{field: bad})


# -- the real CLI: malformed requests and a full disk -------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A real small file system (root only): a disk that fills up for real."""
    path.mkdir(parents=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def raw(port: int, data: bytes) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
        s.sendall(data)  # no half-close: aiohttp takes one for the end of the connection
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def curl_post(port: int, body: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    exe = shutil.which("curl")
    assert exe is not None, "curl is not installed (.ci/run installs it)"
    done = subprocess.run(
        [exe, "-sS", "-i", "--max-time", str(WAIT), "--data-binary", "@-", f"{URL % port}"],
        input=body,
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    head, _, text = done.stdout.replace(b"HTTP/1.1 100 Continue\r\n\r\n", b"").partition(
        b"\r\n\r\n"
    )
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(text)


def test_malformed_requests_and_a_full_disk_each_log_one_line(tmp_path: Path) -> None:
    """The real `meow-async run`, its spool folder on a 1 MiB tmpfs. Garbage request lines,
    a header over 8 KiB and a bad Content-Length are answered with JSON 400s; 2 MiB bodies
    are answered 507 with Retry-After and the JSON error body. stderr gets one line for
    the first of each kind (the rest are counted, not written at once) and no traceback
    (before the change: a traceback per request and aiohttp's plain-text 500). A small
    body then makes its job: nothing was kept of the refused ones."""
    spool = tmpfs(tmp_path / "small", "1m")
    with spool as folder:
        (tmp_path / "data").mkdir()
        (tmp_path / "workflow.yaml").write_text(
            f"runner: {{base_dir: data, jobs_dir: jobs, spool_dir: {folder}, kill_timeout: 1}}\n"
            "recipes:\n  r: {kind: bash, script: 'cat \"$input_file\"'}\n"
            "patterns:\n  h: {route: /in, port: 0, recipe: r}\n"
        )
        with MeowRun("workflow.yaml", cwd=tmp_path) as run:
            run.wait_ready()
            port = int(re.search(r"http://127\.0\.0\.1:(\d+)/in", run.stdout).group(1))  # type: ignore[union-attr]
            for garbage in [
                b"GARBAGE\x00\x01 / HTTP/1.1\r\n\r\n",
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,
                b"POST /in HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n",
                b"POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: banana\r\n\r\n",
            ]:
                answer = raw(port, garbage)
                assert re.match(rb"HTTP/1\.[01] 400 ", answer), answer[:200]
                assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]
            for _ in range(3):
                status, headers, body = curl_post(port, b"x" * (2 * 1024 * 1024))
                assert status == 507, body
                assert headers["Retry-After"] == "60"
                assert "disk is full" in body["error"]
            assert not list(folder.glob("*.msg"))
            status, _, body = curl_post(port, b"small")
            assert status == 202, body
            made = f"*/{body['jobs'][0]}/job.json"  # in its day folder
            wait_until_sync(lambda: any((tmp_path / "jobs").glob(made)))
            run.wait_for("done", stream="stderr")
            run.signal(__import__("signal").SIGINT)
            assert run.wait_exit() == 0
        err = run.stderr
        assert "Traceback" not in err, err
        assert "Server got itself in trouble" not in err
        assert len(re.findall(r"malformed request from 127\.0\.0\.1:\d+, answered 400", err)) == 1
        assert len(re.findall(r"refused \(507\)", err)) == 1, err
