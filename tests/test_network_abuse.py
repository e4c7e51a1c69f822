"""Network listeners against senders that misbehave, or merely behave like real tools.

Every client here is a separate process (socat, nc, bash's /dev/tcp, openssl s_client, or a
`python -c` raw-socket script), so what the listener sees is what a real peer's kernel sends:
FINs, RSTs, unread acknowledgements, connections that never send a byte. Each wait is on a
condition with a timeout.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from meow_async import NetworkPattern, Runner

from .conftest import PYTHON, WAIT, Workspace, poll_until, sh_recipe

NET_LOGGER = "meow_async.monitors.network"

#: Bound for waits whose failure mode is "it never happens"; normally well under a second.
SHORT = 10.0

N_LINES = 1000


def net(name: str = "n", **kw: Any) -> NetworkPattern:
    """A port-0 pattern whose job gets the message as ``input_file`` (the default variable)."""
    return NetworkPattern(name=name, port=0, recipe="r", **kw)


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed")
    return path


async def run(
    argv: list[str], *, stdin: bytes | None = None, timeout: float = WAIT
) -> subprocess.CompletedProcess[bytes]:
    """Run a client process to its end, off the loop (the runner serves meanwhile)."""
    return await asyncio.to_thread(
        subprocess.run,
        argv,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


async def py_client(code: str, *args: object, timeout: float = WAIT) -> str:
    """A `python -c` raw-socket client; its stdout. It must exit 0."""
    res = await run([PYTHON, "-c", code, *map(str, args)], timeout=timeout)
    assert res.returncode == 0, res.stderr.decode()
    return res.stdout.decode()


async def cli_send(port: int, data: bytes) -> tuple[subprocess.CompletedProcess[bytes], float]:
    """`meow-async send --ack --timeout 5` as a process; the result and its wall time."""
    argv = [PYTHON, "-m", "meow_async", "send", "--ack", "--timeout", "5", f"127.0.0.1:{port}", "-"]
    t0 = time.monotonic()
    res = await run(argv, stdin=data)
    return res, time.monotonic() - t0


def contents(ws: Workspace) -> list[bytes]:
    """Each job's copy of its message (the file its ``input_file`` names)."""
    return [Path(j["parameters"]["input_file"]).read_bytes() for j in ws.jobs_list()]


def open_server_side(port: int) -> int:
    """Connections to ``port`` that the listener has not closed yet (/proc/net/tcp):
    ESTABLISHED, SYN_RECV or CLOSE_WAIT on our side, in the accept queue or accepted.
    A connection reset by its peer leaves this list at once, whether we read it or not."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        if local_port == port and fields[3] in ("01", "03", "08"):
            count += 1
    return count


async def all_connections_handled(port: int) -> None:
    await poll_until(lambda: open_server_side(port) == 0, timeout=SHORT)


def ensure_fds(n: int) -> None:
    """This process holds the listener's ends of ``n`` connections: raise the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < n:
        want = n if hard == resource.RLIM_INFINITY else min(n, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        if want < n:
            pytest.skip(f"needs {n} file descriptors, the hard limit is {hard}")


async def wait_events(r: Runner, n: int, timeout: float = SHORT) -> None:
    """Until ``n`` events were handled; a shortfall is left for the assertions to show."""
    try:
        async with asyncio.timeout(timeout):
            await r.wait_for(lambda s: s.events >= n)
    except TimeoutError:
        pass


async def until_finished(r: Runner, n: int) -> None:
    async with asyncio.timeout(WAIT):
        await r.wait_for(lambda s: s.finished >= n)


def records(caplog: pytest.LogCaptureFixture, *words: str) -> list[logging.LogRecord]:
    return [
        rec
        for rec in caplog.records
        if rec.name == NET_LOGGER and all(w in rec.getMessage() for w in words)
    ]


# Holds N idle connections: connects them all, prints "ready", then waits for stdin to close.
HOLD_IDLE = """
import resource, socket, sys
n, port = int(sys.argv[1]), int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
want = n + 64
if hard != resource.RLIM_INFINITY:
    want = min(want, hard)
if soft != resource.RLIM_INFINITY and soft < want:
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
print("ready", flush=True)
sys.stdin.read()
"""


@asynccontextmanager
async def idle_connections(port: int, n: int) -> AsyncIterator[None]:
    """A process holding ``n`` connections that never send a byte, for the block's length."""
    proc = await asyncio.create_subprocess_exec(
        PYTHON,
        "-c",
        HOLD_IDLE,
        str(n),
        str(port),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stdin is not None
    try:
        async with asyncio.timeout(WAIT):
            line = await proc.stdout.readline()
        if line != b"ready\n":
            _, err = await proc.communicate()  # it ended: say why
            pytest.fail(f"the holder did not get its {n} connections: {err.decode()}")
        yield
    finally:
        proc.stdin.close()
        try:
            async with asyncio.timeout(SHORT):
                await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.communicate()


# -- 1. senders that close without reading their acknowledgements ----------------------------

SENDALL_LINES = """
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"".join(b"%d\\n" % i for i in range(1, int(sys.argv[2]) + 1)))
s.close()  # acknowledgements unread: the kernel answers them with a reset
"""

SENDALL_FRAMES = """
import socket, struct, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
bodies = [b"%d" % i for i in range(1, int(sys.argv[2]) + 1)]
s.sendall(b"".join(struct.pack(">I", len(b)) + b for b in bodies))
s.close()
"""


def _client_argv(kind: str, port: int) -> list[str]:
    if kind == "socat":
        need("socat")
        script = f"set -o pipefail; seq 1 {N_LINES} | socat -u - TCP:127.0.0.1:{port}"
        return ["bash", "-c", script]
    if kind == "bash":
        script = f"set -e; exec 3<>/dev/tcp/127.0.0.1/{port}; seq 1 {N_LINES} >&3; exec 3>&-"
        return ["bash", "-c", script]
    code = SENDALL_FRAMES if kind == "python-length" else SENDALL_LINES
    return [PYTHON, "-c", code, str(port), str(N_LINES)]


@pytest.mark.parametrize("chunk_size", [None, 256], ids=["default-chunk", "chunk-256"])
@pytest.mark.parametrize("kind", ["socat", "bash", "python", "python-length"])
async def test_senders_that_close_without_reading_acks_lose_nothing(
    ws: Workspace, kind: str, chunk_size: int | None
) -> None:
    """A sender that writes 1000 messages and closes without reading a single `ok` line
    (so its kernel resets the connection when the acks arrive) still gets every message
    that reached us made into exactly one job: the reset must not throw away what is
    already in our receive buffer. All 1000 (4-8 KB) fit in our receive buffer, so they
    always reach us; with chunk_size=256 the listener needs many reads for them, as it would at the
    default size for a sender with more than 64 KiB to send."""
    framing = "length" if kind == "python-length" else "delimiter"
    pattern = net(framing=framing, ack=True)
    config: dict[str, Any] = {"max_jobs": 2, "queue_size": 2000}
    if chunk_size is not None:
        config["chunk_size"] = chunk_size  # many reads, as for a bigger sender's data
    async with ws.runner([pattern], [sh_recipe("r", "true")], **config) as r:
        port = r.ports()["n"]
        res = await run(_client_argv(kind, port))
        assert res.returncode == 0, res.stderr.decode()
        await wait_events(r, N_LINES)
    # Stopped cleanly: every accepted message has its job (queued ones stay on disk).
    got = contents(ws)
    expected = {str(i).encode() for i in range(1, N_LINES + 1)}
    missing = sorted(expected - set(got), key=int)
    assert not missing, f"{len(missing)} message(s) lost, e.g. {missing[:10]}"
    assert len(got) == N_LINES
    assert set(got) == expected


# -- 2 and 3. connections that never send a byte ---------------------------------------------


async def test_idle_connections_do_not_starve_a_real_sender(ws: Workspace) -> None:
    """2000 connections that never send a byte hold no slot: with max_connections=16 a real
    sender behind them still has its message acknowledged within seconds, not after the
    idle ones time out."""
    n_idle = 2000
    ensure_fds(n_idle + 512)
    pattern = net(ack=True, max_connections=16, idle_timeout=30)
    async with ws.runner([pattern], [sh_recipe("r", 'cat "$input_file"')]) as r:
        port = r.ports()["n"]
        async with idle_connections(port, n_idle):
            res, took = await cli_send(port, b"behind the idle crowd")
            print(f"ack after {took:.2f}s (process start included) behind {n_idle} idle")
            assert res.returncode == 0, res.stderr.decode()
            msg_id = res.stdout.decode().strip()
            assert msg_id
            assert took < 5.0
            await until_finished(r, 1)
    (job,) = ws.jobs_list()
    assert job["event"]["message_id"] == msg_id
    assert contents(ws) == [b"behind the idle crowd"]


async def test_idle_connections_are_capped(ws: Workspace, caplog: pytest.LogCaptureFixture) -> None:
    """Past max_waiting (and max_waiting_per_peer) the connections waiting longest are
    closed: with 200 idle ones held, real senders still get through, at most 50 idle ones
    stay open, and the closing is logged in a few rate-limited lines, not one per connection."""
    caplog.set_level(logging.INFO, logger=NET_LOGGER)
    # Its own name: the product rate-limits this line per listener, across runners.
    pattern = net("capped", ack=True, max_waiting=50, max_waiting_per_peer=50)
    async with ws.runner([pattern], [sh_recipe("r", 'cat "$input_file"')]) as r:
        port = r.ports()["capped"]
        async with idle_connections(port, 200):
            res, _ = await cli_send(port, b"still served")
            assert res.returncode == 0, res.stderr.decode()
            assert res.stdout.decode().strip()
            await until_finished(r, 1)
            # Still responsive: a second one, while the idle ones are held.
            res, _ = await cli_send(port, b"and again")
            assert res.returncode == 0, res.stderr.decode()
            await until_finished(r, 2)
            await poll_until(lambda: bool(over_cap(caplog)), timeout=SHORT)
            await poll_until(lambda: open_server_side(port) <= 50, timeout=SHORT)
    assert sorted(contents(ws)) == [b"and again", b"still served"]
    lines = over_cap(caplog)
    assert len(lines) <= 5, lines


def over_cap(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Log lines about closing waiting connections over a cap."""
    return [
        rec.getMessage()
        for rec in records(caplog, "waiting")
        if "clos" in rec.getMessage() and rec.levelno >= logging.INFO
    ]


# -- 4. connections that send nothing -----------------------------------------------------------

CONNECT_CLOSE = """
import socket, sys
for _ in range(int(sys.argv[2])):
    socket.create_connection(("127.0.0.1", int(sys.argv[1]))).close()
"""


async def test_a_connection_that_sends_nothing_is_no_message(ws: Workspace) -> None:
    """Port probes (`nc -z`) and connect-then-close make no job; a real message still does."""
    need("nc")
    socat = need("socat")
    async with ws.runner([net()], [sh_recipe("r", "true")]) as r:
        port = r.ports()["n"]
        for _ in range(20):
            res = await run(["nc", "-z", "127.0.0.1", str(port)])
            assert res.returncode == 0, res.stderr.decode()
        await py_client(CONNECT_CLOSE, port, 20)
        await all_connections_handled(port)
        res = await run([socat, "-u", "-", f"TCP:127.0.0.1:{port}"], stdin=b"real message")
        assert res.returncode == 0, res.stderr.decode()
        await until_finished(r, 1)
        await all_connections_handled(port)
    assert contents(ws) == [b"real message"]
    assert r.stats.events == 1


async def test_allow_empty_makes_a_job_of_an_empty_connection(ws: Workspace) -> None:
    """With allow_empty=True, a connection closed without a byte is an empty message."""
    async with ws.runner([net(allow_empty=True)], [sh_recipe("r", "true")]) as r:
        await py_client(CONNECT_CLOSE, r.ports()["n"], 1)
        await until_finished(r, 1)
    assert contents(ws) == [b""]


@pytest.mark.parametrize(
    "data",
    [b"\x16\x03\x01binary data", b"\x16", b"\x16\x03", b"\x16\x03\x01\x00\x05\x02hello"],
    ids=["hello-like-start", "one-byte", "two-bytes", "not-a-client-hello"],
)
async def test_binary_that_starts_like_tls_is_still_a_message(ws: Workspace, data: bytes) -> None:
    """Only a whole ClientHello header (6 bytes) is taken for TLS: binary data that merely
    starts like one, or is too short to tell, is a message like any other."""
    socat = need("socat")
    async with ws.runner([net()], [sh_recipe("r", "true")]) as r:
        res = await run([socat, "-u", "-", f"TCP:127.0.0.1:{r.ports()['n']}"], stdin=data)
        assert res.returncode == 0, res.stderr.decode()
        await until_finished(r, 1)
    assert contents(ws) == [data]


# -- 5. TLS to a plain port ---------------------------------------------------------------------


async def test_tls_client_hello_on_a_plain_port_is_no_message(
    ws: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    """A TLS client (openssl s_client) on a plain listener is told off, not spooled: no job,
    a log line saying what happened, and the port still serves plain senders."""
    openssl = need("openssl")
    caplog.set_level(logging.INFO, logger=NET_LOGGER)
    # Its own name: the product rate-limits this line per listener, across runners.
    pattern = net("plain", ack=True)
    async with ws.runner([pattern], [sh_recipe("r", 'cat "$input_file"')]) as r:
        port = r.ports()["plain"]
        hung = False
        try:
            await run([openssl, "s_client", "-connect", f"127.0.0.1:{port}"], timeout=5.0)
        except subprocess.TimeoutExpired:
            hung = True  # killed by subprocess.run: its close would end a "message"
        await all_connections_handled(port)
        res, _ = await cli_send(port, b"plain after TLS")
        assert res.returncode == 0, res.stderr.decode()
        msg_id = res.stdout.decode().strip()
    # Stopped: every accepted message has its job by now.
    assert [j["event"]["message_id"] for j in ws.jobs_list()] == [msg_id], contents(ws)
    assert contents(ws) == [b"plain after TLS"]
    assert not hung, "the listener did not hang up on the TLS client"
    assert records(caplog, "a TLS client connected to a plain port")


# -- 6 and 7. idle and lost connections -------------------------------------------------------

ONE_LINE_THEN_IDLE = """
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"one\\n")
s.settimeout(float(sys.argv[2]))
try:
    print(repr(s.recv(100)))  # b"" once the listener closes it
except ConnectionResetError:
    print("reset")
"""


async def test_idle_between_complete_messages_is_not_a_warning(
    ws: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    """A delimiter connection that sent a complete message and then goes quiet is closed after
    idle_timeout, but nothing was lost, so that is no WARNING."""
    caplog.set_level(logging.INFO, logger=NET_LOGGER)
    pattern = net(framing="delimiter", idle_timeout=1)
    async with ws.runner([pattern], [sh_recipe("r", 'cat "$input_file"')]) as r:
        out = await py_client(ONE_LINE_THEN_IDLE, r.ports()["n"], SHORT)
        assert out.strip() in ("b''", "reset"), out  # the listener closed it
        await until_finished(r, 1)
    assert contents(ws) == [b"one"]
    warned = [
        rec.getMessage()
        for rec in caplog.records
        if rec.levelno >= logging.WARNING and "idle" in rec.getMessage()
    ]
    assert warned == []


RESET_MID_MESSAGE = """
import socket, struct, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"".join(b"line %d\\n" % i for i in range(5)) + sys.argv[2].encode())
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()  # RST, not FIN
"""


async def test_connection_lost_mid_message_is_logged_with_counts(
    ws: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    """A delimiter sender that resets in the middle of its sixth message: the five complete
    ones make jobs, and the warning says how many completed and how many bytes were dropped."""
    caplog.set_level(logging.INFO, logger=NET_LOGGER)
    half = "an unfinished line, " * 3  # 60 bytes, no delimiter
    async with ws.runner([net(framing="delimiter")], [sh_recipe("r", "true")]) as r:
        await py_client(RESET_MID_MESSAGE, r.ports()["n"], half)
        await until_finished(r, 5)
        await poll_until(lambda: bool(records(caplog, "connection lost")), timeout=SHORT)
    assert sorted(contents(ws)) == [b"line %d" % i for i in range(5)]
    (rec,) = records(caplog, "connection lost")
    assert rec.levelno == logging.WARNING
    assert "5 complete message(s)" in rec.getMessage(), rec.getMessage()
    assert f"{len(half.encode())} bytes" in rec.getMessage(), rec.getMessage()
