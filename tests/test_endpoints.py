"""runner.http: /healthz, /metrics and /jobs of a real runner, read by a real HTTP client and
by prometheus_client's own parser, checked against what the test made happen."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from meow_async import (
    FilePattern,
    MonitorError,
    NetworkPattern,
    Runner,
    RunnerConfig,
    TimePattern,
)
from meow_async.exceptions import ConfigError

from .conftest import WAIT, Workspace, poll_until, py_recipe


async def until(runner: Runner, n: int) -> None:
    async with asyncio.timeout(WAIT):
        await runner.wait_for(lambda s: s.finished >= n)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as resp:
        if resp.content_type == "application/json":
            return resp.status, await resp.json()
        return resp.status, await resp.text()


async def test_healthz_metrics_and_jobs_tell_what_happened(ws: Workspace) -> None:
    ok = FilePattern(name="ok", glob="*.ok", recipe="fine")
    bad = FilePattern(name="bad", glob="*.bad", recipe="fails")
    recipes = [py_recipe("fine", "pass\n"), py_recipe("fails", "raise SystemExit(3)\n")]
    runner = ws.runner([ok, bad], recipes, http={"port": 0})
    async with runner, aiohttp.ClientSession() as session:
        assert runner.http_port
        base = f"http://127.0.0.1:{runner.http_port}"
        status, health = await get(session, f"{base}/healthz")
        assert (status, health["status"]) == (200, "ok")
        # no network or time pattern: those monitors have nothing to do; http serves
        # runner.http
        assert health["monitors"] == {
            "files": "live",
            "network": "idle",
            "http": "live",
            "time": "idle",
        }
        for name in ("a.ok", "b.ok", "c.bad"):
            ws.write(name)
        await until(runner, 3)

        status, text = await get(session, f"{base}/metrics")
        assert status == 200
        got = samples(text)
        assert got["meow_events_total", (("monitor", "file"), ("rule", "ok"))] == 2
        assert got["meow_events_total", (("monitor", "file"), ("rule", "bad"))] == 1
        assert got["meow_jobs_ended_total", (("state", "done"),)] == 2
        assert got["meow_jobs_ended_total", (("state", "failed"),)] == 1
        assert got["meow_jobs_made_total", ()] == 3
        assert got["meow_jobs_running", ()] == 0
        assert got["meow_job_duration_seconds_count", ()] == 3
        assert got["meow_job_duration_seconds_bucket", (("le", "+Inf"),)] == 3
        assert got["meow_queue_depth", (("queue", "events"),)] == 0

        status, listing = await get(session, f"{base}/jobs")
        assert status == 200
        assert sorted(j["state"] for j in listing["jobs"]) == ["done", "done", "failed"]
        status, failed = await get(session, f"{base}/jobs?state=failed")
        assert [j["rule"] for j in failed["jobs"]] == ["bad"]
        status, by_rule = await get(session, f"{base}/jobs?rule=ok&limit=1")
        assert [j["rule"] for j in by_rule["jobs"]] == ["ok"]
        one = failed["jobs"][0]
        status, job = await get(session, f"{base}/jobs/{one['id']}")
        assert (status, job["exit_code"], job["state"]) == (200, 3, "failed")
        status, missing = await get(session, f"{base}/jobs/no-such-job")
        assert status == 404
        assert "no-such-job" in missing["error"]
        status, wrong = await get(session, f"{base}/jobs?state=lost")
        assert status == 400
        assert "lost" in wrong["error"]
        runner.stop()
        # While it stops, it says so (until the server closes).
        try:
            status, health = await get(session, f"{base}/healthz")
        except aiohttp.ClientConnectionError:
            pass
        else:
            assert status == 503


async def test_a_running_job_shows_as_running(ws: Workspace, tmp_path: Path) -> None:
    release = tmp_path / "release"
    script = (
        "import os, time\n"
        "open('started', 'w').close()\n"
        f"while not os.path.exists({str(release)!r}):\n"
        "    time.sleep(0.01)\n"
    )
    runner = ws.runner(
        [FilePattern(name="p", glob="*.go", recipe="r")], [py_recipe("r", script)], http={"port": 0}
    )
    async with runner, aiohttp.ClientSession() as session:
        base = f"http://127.0.0.1:{runner.http_port}"
        ws.write("a.go")
        await poll_until(lambda: any(ws.jobs.glob("*/*/started")))
        status, listing = await get(session, f"{base}/jobs?state=running")
        assert status == 200
        assert len(listing["jobs"]) == 1
        assert listing["jobs"][0]["pid"]
        _, text = await get(session, f"{base}/metrics")
        assert samples(text)["meow_jobs_running", ()] == 1
        release.touch()
        await until(runner, 1)


def test_runner_http_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"runner.*http"):
        RunnerConfig(http={"port": "high"})
    with pytest.raises(ConfigError, match="host"):
        RunnerConfig(http={"prt": 9464})
    assert RunnerConfig(http={"port": 0}).http == {"host": "127.0.0.1", "port": 0}


async def test_a_port_in_use_is_an_error_naming_it(ws: Workspace) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        runner = ws.runner([], [], http={"port": port})
        with pytest.raises(MonitorError, match=rf"port {port}.*runner\.http.*in use"):
            async with runner:
                pass
    finally:
        taken.close()


async def test_http_requests_are_counted_by_status(ws: Workspace) -> None:
    from meow_async import HttpPattern

    pattern = HttpPattern(name="h", route="/in", port=0, recipe="r")
    runner = ws.runner([pattern], [py_recipe("r", "pass\n")], http={"port": 0})
    async with runner, aiohttp.ClientSession() as session:
        base = f"http://127.0.0.1:{runner.ports()['h']}"
        for path, body in (("/in", b"12345"), ("/in", b"678"), ("/nowhere", b"x")):
            async with session.post(base + path, data=body):
                pass
        async with session.get(base + "/in"):
            pass
        await until(runner, 2)
        _, text = await get(session, f"http://127.0.0.1:{runner.http_port}/metrics")
    got = samples(text)
    assert got["meow_http_responses_total", (("status", "202"),)] == 2
    assert got["meow_http_responses_total", (("status", "404"),)] == 1
    assert got["meow_http_responses_total", (("status", "405"),)] == 1
    assert got["meow_events_total", (("monitor", "http"), ("rule", "h"))] == 2
    assert got["meow_spooled_bytes_total", ()] == 8


async def test_runner_http_and_http_patterns_can_share_a_port(
    ws: Workspace, unused_tcp_port: int
) -> None:
    from meow_async import HttpPattern

    pattern = HttpPattern(name="h", route="/in", port=unused_tcp_port, recipe="r")
    runner = ws.runner([pattern], [py_recipe("r", "pass\n")], http={"port": unused_tcp_port})
    async with runner, aiohttp.ClientSession() as session:
        assert runner.http_port == runner.ports()["h"] == unused_tcp_port
        base = f"http://127.0.0.1:{unused_tcp_port}"
        async with session.post(base + "/in", data=b"x") as resp:
            assert resp.status == 202
        await until(runner, 1)
        status, health = await get(session, base + "/healthz")
        assert (status, health["status"]) == (200, "ok")
        status, listing = await get(session, base + "/jobs")
        assert [j["rule"] for j in listing["jobs"]] == ["h"]
        async with session.post(base + "/metrics") as resp:
            assert resp.status == 405


async def test_healthz_says_which_monitors_have_nothing_to_watch(ws: Workspace) -> None:
    """A workflow without file rules has no watch: its file monitor is idle, not "running"."""
    net = NetworkPattern(name="net", port=0, recipe="fine")
    runner = ws.runner([net], [py_recipe("fine", "pass\n")], http={"port": 0})
    async with runner, aiohttp.ClientSession() as session:
        base = f"http://127.0.0.1:{runner.http_port}"
        status, health = await get(session, f"{base}/healthz")
        assert (status, health) == (
            200,
            {
                "status": "ok",
                "monitors": {"files": "idle", "network": "live", "http": "live", "time": "idle"},
            },
        )
        runner.add_pattern(FilePattern(name="files", glob="*.txt", recipe="fine"))
        runner.add_pattern(TimePattern(name="hourly", every="1h", recipe="fine"))
        await runner.wait_ready()
        status, health = await get(session, f"{base}/healthz")
        assert (health["monitors"]["files"], health["monitors"]["time"]) == ("live", "live")
        _, answer = await get(session, f"{base}/status")
        assert answer["monitors"] == {
            "files": "live",
            "network": "live",
            "http": "live",
            "time": "live",
        }
