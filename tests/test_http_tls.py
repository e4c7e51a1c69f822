"""HTTPS on HTTP patterns, driven by curl: the server's certificate, a client certificate
required and recorded as the request's identity, and a client without one refused."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from meow_async import HttpPattern, MonitorError

from .conftest import WAIT, Workspace, sh_recipe
from .test_network import pki

__all__ = ["pki"]  # the fixture, imported for its use here


async def curl(*args: str) -> tuple[int, str, str]:
    curl = shutil.which("curl")
    assert curl is not None, "these tests drive the server with curl: install it"
    proc = await asyncio.create_subprocess_exec(
        curl, "-sS", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(WAIT):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_https_with_a_required_client_certificate(ws: Workspace, pki: dict[str, Any]) -> None:
    pattern = HttpPattern(
        name="secure",
        route="/in",
        port=0,
        recipe="r",
        tls_cert=str(pki["cert"]),
        tls_key=str(pki["key"]),
        tls_client_ca=str(pki["ca"]),
    )
    async with ws.runner([pattern], [sh_recipe("r", 'cat "$input_file"')]) as runner:
        url = f"https://127.0.0.1:{runner.ports()['secure']}/in"
        code, out, _ = await curl(
            "--cacert", str(pki["ca"]), "--cert", str(pki["client"]), "--data-binary", "hi", url
        )
        assert code == 0, out
        answer = json.loads(out)
        # Without a client certificate the handshake is refused: no answer, no job.
        code, out, _ = await curl("--cacert", str(pki["ca"]), "--data-binary", "no", url)
        assert code != 0
        async with asyncio.timeout(WAIT):
            await runner.wait_for(lambda s: s.finished >= 1)
    (job,) = ws.jobs_list()
    assert job["id"] == answer["jobs"][0]
    assert (Path(job["dir"]) / "stdout.txt").read_text() == "hi"
    assert "lab-instrument-7" in job["event"]["identity"]


async def test_patterns_sharing_a_port_must_agree_on_tls(
    ws: Workspace, pki: dict[str, Any], unused_tcp_port: int
) -> None:
    plain = HttpPattern(name="plain", route="/a", port=unused_tcp_port, recipe="r")
    secure = HttpPattern(
        name="secure",
        route="/b",
        port=unused_tcp_port,
        recipe="r",
        tls_cert=str(pki["cert"]),
        tls_key=str(pki["key"]),
    )
    with pytest.raises(MonitorError, match=r"'plain' and 'secure' share .* TLS"):
        ws.runner([plain, secure], [sh_recipe("r", "true")])
