"""TLS listeners under abuse, with real clients: refused certificates are said out loud (in the
runner's log and by `meow-async send`), stalled handshakes time out and are counted with the
waiting connections, and a sender whose acknowledgement times out is told what that means."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import PYTHON, WAIT, Workspace, sh_recipe
from .test_network import CAT, net, outputs, pki, until_finished

__all__ = ["pki"]  # the fixture, imported for its use here

NETWORK_LOG = "meow_async.monitors.network"


def tls_net(pki: dict[str, Any], *, client_ca: bool = True, **kw: Any) -> Any:
    extra: dict[str, Any] = {"tls_client_ca": str(pki["ca"])} if client_ca else {}
    return net(
        framing="length",
        ack=True,
        tls_cert=str(pki["cert"]),
        tls_key=str(pki["key"]),
        **extra,
        **kw,
    )


async def cli_send(*args: str, data: bytes = b"hello", timeout: float = WAIT) -> tuple[int, str]:
    """`meow-async send ...` as a separate process: exit code and stderr."""
    proc = await asyncio.create_subprocess_exec(
        PYTHON,
        "-m",
        "meow_async",
        "send",
        *args,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    async with asyncio.timeout(timeout):
        _, err = await proc.communicate(data)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_a_refused_client_certificate_is_an_error_for_send_and_a_log_line(
    ws: Workspace, pki: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """`send --tls` without the certificate a listener requires exits non-zero saying why,
    even without --ack; the runner logs the failed handshake with the peer."""
    caplog.set_level(logging.WARNING, NETWORK_LOG)
    async with ws.runner([tls_net(pki)], [sh_recipe("r", CAT)]) as r:
        where = f"127.0.0.1:{r.ports()['n']}"
        code, err = await cli_send(
            "--tls", "--cafile", str(pki["ca"]), "--framing", "length", where
        )
        assert code != 0
        assert "refused our client certificate" in err, err
        # With the certificate, the same command is accepted.
        good = ["--cert", str(pki["client"]), "--key", str(pki["client"])]
        code, err = await cli_send(
            "--tls", "--cafile", str(pki["ca"]), *good, "--framing", "length", "--ack", where
        )
        assert code == 0, err
        await until_finished(r, 1)
    assert outputs(ws) == ["hello"]
    failed = [m for m in caplog.messages if "TLS handshake with 127.0.0.1:" in m]
    assert len(failed) == 1, caplog.messages
    assert "failed" in failed[0]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_openssl_s_client_without_a_certificate_is_logged(
    ws: Workspace, pki: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A client nobody here wrote (openssl s_client) presenting no certificate: no job, and
    the log names the peer and the reason."""
    caplog.set_level(logging.WARNING, NETWORK_LOG)
    async with ws.runner([tls_net(pki)], [sh_recipe("r", CAT)]) as r:
        port = r.ports()["n"]
        proc = await asyncio.create_subprocess_exec(
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{port}",
            "-CAfile",
            str(pki["ca"]),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        async with asyncio.timeout(WAIT):
            await proc.wait()
        deadline = time.monotonic() + WAIT
        while not any("TLS handshake with" in m for m in caplog.messages):
            assert time.monotonic() < deadline, caplog.messages
            await asyncio.sleep(0.02)
        assert r.stats.events == 0


def _stall(port: int, n: int) -> subprocess.Popen[str]:
    """A process holding ``n`` connections that never start their TLS handshake."""
    code = (
        "import socket, sys\n"
        f"socks = [socket.create_connection(('127.0.0.1', {port})) for _ in range({n})]\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


async def test_stalled_handshakes_time_out_and_do_not_keep_senders_out(
    ws: Workspace, pki: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """60 connections that never say hello, against max_waiting 20: the oldest are closed
    past the cap, the rest after handshake_timeout; a real TLS sender gets through meanwhile,
    and the log says so a few times, not 60."""
    caplog.set_level(logging.WARNING, NETWORK_LOG)
    pattern = tls_net(pki, handshake_timeout=0.5, max_waiting=20, max_waiting_per_peer=20)
    async with ws.runner([pattern], [sh_recipe("r", CAT)]) as r:
        port = r.ports()["n"]
        staller = _stall(port, 60)
        try:
            assert staller.stdout is not None
            assert staller.stdout.readline().strip() == "ready"
            good = ["--cert", str(pki["client"]), "--key", str(pki["client"])]
            code, err = await cli_send(
                "--tls",
                "--cafile",
                str(pki["ca"]),
                *good,
                "--framing",
                "length",
                "--ack",
                f"127.0.0.1:{port}",
            )
            assert code == 0, err
            await until_finished(r, 1)
            # Every stalled one is closed within the timeout (or earlier, by the cap).
            monitor = r.network
            deadline = time.monotonic() + WAIT
            while any(c.lst.tls is not None for c in monitor.connections):
                assert time.monotonic() < deadline, len(monitor.connections)
                await asyncio.sleep(0.05)
        finally:
            staller.kill()
            staller.communicate(timeout=WAIT)  # reaped, its pipes closed
    lines = [m for m in caplog.messages if "TLS handshake" in m or "over max_waiting" in m]
    assert 1 <= len(lines) <= 6, lines
    assert any("handshake_timeout" in m or "max_waiting" in m for m in lines)


async def test_an_ack_timeout_says_the_message_may_have_been_accepted(ws: Workspace) -> None:
    """A listener that never acknowledges (ack off) and `send --ack --timeout 1`: the error
    says the message may still have been accepted, so a blind retry is a decision."""
    async with ws.runner([net(framing="delimiter")], [sh_recipe("r", CAT)]) as r:
        code, err = await cli_send(
            "--ack", "--timeout", "1", "--framing", "delimiter", f"127.0.0.1:{r.ports()['n']}"
        )
        assert code != 0
        assert "may still have been accepted" in err, err
        await until_finished(r, 1)  # it was


async def test_a_plain_client_on_a_tls_port_is_logged_not_a_job(
    ws: Workspace, pki: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Plain text to a TLS listener fails the handshake: logged with the reason, no job."""
    caplog.set_level(logging.WARNING, NETWORK_LOG)
    async with ws.runner([tls_net(pki, client_ca=False)], [sh_recipe("r", CAT)]) as r:
        reader, writer = await asyncio.open_connection("127.0.0.1", r.ports()["n"])
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        async with asyncio.timeout(WAIT):
            with contextlib.suppress(ConnectionError):
                assert await reader.read(100) == b""  # closed on us
        writer.close()
        deadline = time.monotonic() + WAIT
        while not any("TLS handshake with" in m for m in caplog.messages):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
    assert r.stats.events == 0
    assert not list(Path(ws.jobs).glob("*/*/job.json"))
