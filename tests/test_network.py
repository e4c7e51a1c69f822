"""Network triggers on real sockets (127.0.0.1 / ::1, ports from the OS).

The report's list (section 3.4) first, then what goes past it: framing, acknowledgements,
TLS, limits, bad peers, port errors and run-time port changes.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trustme

from meow_async import (
    ConfigError,
    Event,
    MonitorError,
    NetworkMonitor,
    NetworkPattern,
    Runner,
    SendError,
    Workflow,
    send,
)
from meow_async.monitors.spool import Journal

from .conftest import WAIT, Workspace, poll_until, py_recipe, sh_recipe

CAT = 'cat "$message"'


def net(name: str = "n", port: int = 0, recipe: str = "r", **kw: Any) -> NetworkPattern:
    return NetworkPattern(name=name, port=port, recipe=recipe, variable="message", **kw)


def spooled(folder: Path) -> list[Path]:
    """Messages in the spool folder, arriving or waiting for their jobs (not the journal)."""
    return [p for p in folder.iterdir() if p.suffix in (".part", ".msg")]


def outputs(ws: Workspace, rule: str | None = None) -> list[str]:
    """What each job printed (a job that printed nothing keeps no stdout.txt)."""
    out = [
        Path(j["dir"]) / "stdout.txt" for j in ws.jobs_list() if rule is None or j["rule"] == rule
    ]
    return sorted(p.read_text() if p.exists() else "" for p in out)


async def until_finished(runner: Runner, n: int) -> None:
    async with asyncio.timeout(WAIT):
        await runner.wait_for(lambda s: s.finished >= n)


async def raw_send(port: int, data: bytes, host: str = "127.0.0.1") -> None:
    """A sender like nc: connect, write, close."""
    _, writer = await asyncio.open_connection(host, port)
    writer.write(data)
    await writer.drain()
    writer.close()
    await writer.wait_closed()


# -- the report's tests -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "field", "says"),
    [
        ({"port": 65536}, "port", "1 to 65535"),
        ({"port": -1}, "port", "1 to 65535"),
        ({"port": "80"}, "port", "1 to 65535"),
        ({"port": True}, "port", "1 to 65535"),
        ({"host": ""}, "host", "address"),
        ({"framing": "lines"}, "framing", "unknown framing"),
        ({"delimiter": ""}, "delimiter", "non-empty"),
        ({"max_size": 0}, "max_size", "at least 1"),
        ({"max_connections": 0}, "max_connections", "at least 1"),
        ({"idle_timeout": 0}, "idle_timeout", "above 0"),
        ({"idle_timeout": float("nan")}, "idle_timeout", "above 0"),
        ({"tls_cert": "/nonexistent.pem", "tls_key": "/nonexistent.pem"}, "tls_cert", "no such"),
        ({"tls_client_ca": __file__}, "tls_client_ca", "need TLS"),
        ({"variable": "not valid"}, "variable", "invalid variable name"),
    ],
)
def test_network_pattern_rejects(kw: dict[str, Any], field: str, says: str) -> None:
    args: dict[str, Any] = {"name": "n", "port": 5000, "recipe": "r"}
    args.update(kw)
    with pytest.raises(ConfigError) as info:
        NetworkPattern(**args)
    assert info.value.field == field
    assert says in str(info.value)


def test_network_pattern_defaults_and_parameters() -> None:
    p = NetworkPattern(
        name="n",
        port=5000,
        recipe="r",
        parameters={"a": 1},
        outputs={"o": "{JOB}.out"},
        sweep={"s": {"start": 1, "stop": 2, "jump": 1}},
    )
    assert (p.host, p.framing, p.ack, p.tls) == ("127.0.0.1", "connection", False, False)
    assert p.variable == "input_file"
    assert len(list(p.sweep_points())) == 2


async def test_monitor_receives_data_writes_a_file_and_makes_an_event(tmp_path: Path) -> None:
    wf = Workflow([net()], [py_recipe("r")])
    monitor = NetworkMonitor(wf, tmp_path / "spool", base_dir=tmp_path / "watched")
    events: asyncio.Queue[Event] = asyncio.Queue()
    stop = asyncio.Event()
    task = asyncio.create_task(monitor.run(events, stop))
    async with asyncio.timeout(WAIT):
        await monitor.ready.wait()
        port = monitor.ports()["n"]
        payload = b"x" * 300_000 + b"end"  # several chunks
        await raw_send(port, payload)
        ev = await events.get()
    assert ev.kind == "network"
    assert ev.rule.name == "n"
    assert ev.base == str(tmp_path / "watched")  # {BASE}: where outputs go, as for files
    assert Path(ev.path).parent == tmp_path / "spool"
    assert Path(ev.path).read_bytes() == payload
    assert ev.extras["size"] == len(payload)
    assert ev.extras["port"] == port
    assert ev.extras["peer"].startswith("127.0.0.1:")
    assert ev.extras["tls"] is False
    assert ev.release is not None
    ev.release()  # the last user frees the spool file
    assert not Path(ev.path).exists()
    stop.set()
    async with asyncio.timeout(WAIT):
        await task
    assert spooled(tmp_path / "spool") == []


async def test_received_data_runs_a_job_like_a_file_event(ws: Workspace) -> None:
    params = {"tag": "{FILENAME}", "out": "{BASE}/out/{PREFIX}.txt", "rel": "{REL_PATH}"}
    async with ws.runner([net(parameters=params)], [sh_recipe("r", CAT)]) as r:
        await raw_send(r.ports()["n"], b"hello over tcp")
        await until_finished(r, 1)
    (meta,) = ws.jobs_list()
    assert meta["state"] == "done"
    assert (Path(meta["dir"]) / "stdout.txt").read_text() == "hello over tcp"
    msg = Path(meta["parameters"]["message"])
    assert msg.parent == Path(meta["dir"])  # the job keeps its own copy (a hard link)
    assert meta["parameters"]["tag"] == msg.name
    assert meta["parameters"]["rel"] == msg.name
    assert meta["parameters"]["out"] == f"{ws.base}/out/{msg.stem}.txt"
    assert meta["event"]["kind"] == "network"
    assert meta["event"]["peer"].startswith("127.0.0.1:")
    assert spooled(r.spool_dir) == []  # removed once no job needs it


async def test_every_rule_on_a_port_fires(ws: Workspace) -> None:
    async with ws.runner([net("a", recipe="r")], [sh_recipe("r", CAT)]) as r:
        port = r.ports()["a"]
        r.add_pattern(net("b", port=port, recipe="r"))
        r.add_pattern(net("c", port=port, recipe="r", parameters={"x": 1}))
        assert r.ports() == {"a": port, "b": port, "c": port}
        await raw_send(port, b"one message")
        await until_finished(r, 3)
    assert sorted(j["rule"] for j in ws.jobs_list()) == ["a", "b", "c"]
    assert outputs(ws) == ["one message"] * 3
    assert spooled(r.spool_dir) == []


async def test_listeners_follow_rules_at_run_time(ws: Workspace) -> None:
    """Only patterns with a rule open ports; adding, updating and removing follows."""
    async with ws.runner([], [sh_recipe("r", CAT)]) as r:
        r.add_pattern(net("n", recipe="missing"))
        assert r.ports() == {}  # no recipe, no rule, no listener
        r.add_recipe(sh_recipe("missing", "echo second recipe"))
        await r.wait_ready()
        port = r.ports()["n"]
        await raw_send(port, b"1")
        await until_finished(r, 1)
        r.update_pattern(net("n", recipe="r"))  # same port, other recipe
        await raw_send(port, b"2")
        await until_finished(r, 2)
        r.remove_recipe("r")  # removes the rule, so the port closes
        assert r.ports() == {}
        await poll_until(lambda: _refused(port))
    assert outputs(ws) == ["2", "second recipe\n"]


def _refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


async def test_many_concurrent_senders_all_delivered(ws: Workspace) -> None:
    n = 250
    async with ws.runner([net(max_connections=64)], [sh_recipe("r", CAT)], max_jobs=4) as r:
        port = r.ports()["n"]
        await asyncio.gather(*(raw_send(port, f"msg-{i}".encode()) for i in range(n)))
        async with asyncio.timeout(WAIT * 3):  # 250 subprocesses on a loaded 2-core machine
            await r.wait_for(lambda s: s.finished >= n)
    assert outputs(ws) == sorted(f"msg-{i}" for i in range(n))
    assert r.stats.done == n


# -- framing and acknowledgements ---------------------------------------------------------------


async def test_delimiter_framing_many_messages_per_connection(ws: Workspace) -> None:
    pattern = net(framing="delimiter", delimiter="\r\n")
    async with ws.runner([pattern], [sh_recipe("r", CAT)]) as r:
        _, w = await asyncio.open_connection("127.0.0.1", r.ports()["n"])
        # A delimiter split across writes, an empty message, and a last one without delimiter.
        for piece in (b"alpha\r", b"\nbeta\r\n\r\ngam", b"ma\r\n", b"tail"):
            w.write(piece)
            await w.drain()
        w.close()
        await w.wait_closed()
        await until_finished(r, 5)
    assert outputs(ws) == sorted(["alpha", "beta", "", "gamma", "tail"])


async def test_length_framing_and_ack(ws: Workspace) -> None:
    pattern = net(framing="length", ack=True)
    async with ws.runner([pattern], [sh_recipe("r", CAT)]) as r:
        port = r.ports()["n"]
        reader, w = await asyncio.open_connection("127.0.0.1", port)
        ids = []
        for body in (b"first", b"", b"\x00\n binary \xff" * 1000):
            w.write(struct.pack(">I", len(body)) + body)
            await w.drain()
            line = await asyncio.wait_for(reader.readline(), WAIT)
            assert line.startswith(b"ok ")
            ids.append(line[3:].strip().decode())
        w.close()
        await until_finished(r, 3)
        msg_id = await send("127.0.0.1", port, b"via send()", framing="length", ack=True)
        await until_finished(r, 4)
    jobs = ws.jobs_list()
    assert {j["event"]["message_id"] for j in jobs} == {*ids, msg_id}
    bodies = sorted(Path(j["parameters"]["message"]).read_bytes() for j in jobs)
    assert bodies == sorted([b"first", b"", b"\x00\n binary \xff" * 1000, b"via send()"])


async def test_ack_comes_after_the_event_is_queued_and_raw_senders_still_work(
    ws: Workspace,
) -> None:
    async with ws.runner([net(ack=True)], [sh_recipe("r", CAT)]) as r:
        port = r.ports()["n"]
        msg_id = await send("127.0.0.1", port, b"acked", ack=True)
        assert msg_id is not None
        assert r.stats.events >= 0  # the event was put on the queue before the reply
        await raw_send(port, b"raw sender ignores the reply")
        await until_finished(r, 2)
    assert outputs(ws) == ["acked", "raw sender ignores the reply"]
    assert msg_id in {j["event"]["message_id"] for j in ws.jobs_list()}


async def test_acks_come_at_once_past_the_queue_and_wait_only_past_the_backlog(
    ws: Workspace,
) -> None:
    """The only job slot is held and the events queue holds 2: the next messages are
    acknowledged at once all the same (they wait in the spool journal's backlog, issue 26),
    up to max_backlog (5); the one after that waits for its ack (TCP back-pressure) until the
    backlog drains, and then every acknowledged message runs once."""
    release = ws.root / "release"
    block = 'while [ ! -e "$release" ]; do sleep 0.01; done\ncat "$message"'
    pattern = net(ack=True, framing="length", parameters={"release": str(release)})
    settings = {"queue_size": 2, "max_jobs": 1, "handlers": 1, "max_backlog": 5}
    async with ws.runner([pattern], [sh_recipe("r", block)], **settings) as r:
        to = ("127.0.0.1", r.ports()["n"])
        acked = []
        for i in range(40):
            try:
                async with asyncio.timeout(1.0):
                    acked.append(await send(*to, f"m{i}".encode(), ack=True, framing="length"))
            except TimeoutError:
                break
        else:
            pytest.fail("40 acks while no job could end: the backlog has no limit")
        assert r.network.backlog()[0] == 5
        waiting = asyncio.create_task(send(*to, b"late", ack=True, framing="length"))
        await poll_until(lambda: r.network._blocked >= 1)
        assert not waiting.done()
        release.touch()
        async with asyncio.timeout(WAIT):
            acked.append(await waiting)
        await until_finished(r, len(acked) + 1)  # the one cut off by the timeout ran too
    assert r.network.backlog() == (0, 0)
    assert len(set(acked)) == len(acked)
    assert set(acked) <= {j["event"]["message_id"] for j in ws.jobs_list()}
    assert sorted(outputs(ws)) == sorted([f"m{i}" for i in range(len(acked))] + ["late"])


@pytest.mark.parametrize("no_backlog", [{"max_backlog": 0}, {"max_backlog_bytes": 0}])
async def test_without_a_backlog_an_ack_waits_for_the_queue(
    ws: Workspace, no_backlog: dict[str, int]
) -> None:
    """Either limit at 0: no backlog, as before it existed: past the full events queue the
    sender waits for its ack, and gets it once a job slot frees."""
    release = ws.root / "release"
    block = 'while [ ! -e "$release" ]; do sleep 0.01; done\ncat "$message"'
    pattern = net(ack=True, framing="length", parameters={"release": str(release)})
    settings = {"queue_size": 1, "max_jobs": 1, "handlers": 1, **no_backlog}
    async with ws.runner([pattern], [sh_recipe("r", block)], **settings) as r:
        to = ("127.0.0.1", r.ports()["n"])
        sends = [
            asyncio.create_task(send(*to, f"m{i}".encode(), ack=True, framing="length"))
            for i in range(12)  # more than a job slot, the job and events queues hold
        ]
        await poll_until(lambda: r.network._blocked >= 1)  # one waits for room in the queue
        assert r.network.backlog() == (0, 0)
        release.touch()
        async with asyncio.timeout(WAIT):
            acked = await asyncio.gather(*sends)
        await until_finished(r, len(sends))
    assert len(set(acked)) == len(sends)
    assert sorted(outputs(ws)) == sorted(f"m{i}" for i in range(len(sends)))


def test_parked_journal_entries_survive_a_rewrite_and_a_restart(tmp_path: Path) -> None:
    """Backlogged entries are dropped from memory (parked) and read back from accepted.log:
    through the journal's rewrite (most entries done) and after a restart, each comes back
    whole, and only the ones not done."""
    journal = Journal(tmp_path, durable=False)
    journal.open()
    n = 2500
    kept = list(range(1, n, 10))
    for i in range(n):
        journal.add({"id": f"m{i}", "time": i, "rules": ["r"], "extras": {"size": 1, "n": i}})
        journal.park(f"m{i}")
    assert all(e is None for e in journal.pending.values())
    for i in set(range(n)) - set(kept):  # past 4096 lines, 4 a pending entry: rewritten
        journal.done(f"m{i}")
    for i in kept:
        (tmp_path / f"m{i}.msg").write_text("x")  # still spooled
    assert journal._lines < n  # rewritten short
    assert journal.unpark("m1") == {
        "id": "m1",
        "time": 1,
        "rules": ["r"],
        "extras": {"size": 1, "n": 1},
    }
    assert journal.unpark("m0") is None  # done
    assert sorted(e["extras"]["n"] for e in journal.entries()) == kept
    journal.close()
    again = Journal(tmp_path, durable=False)
    assert sorted(e["extras"]["n"] for e in again.recover()) == kept


async def test_send_streams_a_file(ws: Workspace, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * 20_000)  # 5 MB
    async with ws.runner([net(ack=True)], [sh_recipe("r", "true")]) as r:
        await send("127.0.0.1", r.ports()["n"], big, ack=True)
        await until_finished(r, 1)
    (meta,) = ws.jobs_list()
    assert Path(meta["parameters"]["message"]).read_bytes() == big.read_bytes()


async def test_ipv6_loopback(ws: Workspace) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("::1 is not configured here")
    async with ws.runner([net(host="::1")], [sh_recipe("r", CAT)]) as r:
        await raw_send(r.ports()["n"], b"over ipv6", host="::1")
        await until_finished(r, 1)
    (meta,) = ws.jobs_list()
    assert meta["event"]["peer"].startswith("[::1]:")
    assert outputs(ws) == ["over ipv6"]


# -- limits and bad peers -----------------------------------------------------------------------


async def test_oversized_message_is_dropped_and_the_listener_goes_on(ws: Workspace) -> None:
    async with ws.runner([net(max_size=1000)], [sh_recipe("r", CAT)]) as r:
        port = r.ports()["n"]
        reader, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"x" * 5000)
        async with asyncio.timeout(WAIT):
            assert await _closed_on_us(reader, w)
        w.close()
        await raw_send(port, b"small is fine")
        await until_finished(r, 1)
        assert spooled(r.spool_dir) == []  # no partial file left
    assert outputs(ws) == ["small is fine"]
    assert r.stats.events == 1


async def _closed_on_us(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
    """The listener hung up: EOF or a reset, mid-send or at the next read."""
    try:
        await w.drain()
        while await reader.read(1024):
            pass
    except ConnectionError:
        return True
    return True


async def test_peer_that_disconnects_mid_message_leaves_nothing(ws: Workspace) -> None:
    async with ws.runner([net(framing="length")], [sh_recipe("r", CAT)]) as r:
        port = r.ports()["n"]
        _, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(struct.pack(">I", 1000) + b"only part of it")
        await w.drain()
        w.close()  # 985 bytes short
        await w.wait_closed()
        # And an abrupt reset on a whole-connection listener.
        r.add_pattern(net("conn", recipe="r"))
        await r.wait_ready()
        s = socket.create_connection(("127.0.0.1", r.ports()["conn"]))
        s.sendall(b"half")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()  # RST, not FIN: the message never ended
        await send("127.0.0.1", port, b"complete", framing="length")
        await until_finished(r, 1)
        await poll_until(lambda: spooled(r.spool_dir) == [])
    assert outputs(ws) == ["complete"]
    assert r.stats.events == 1


async def test_idle_peer_is_closed(ws: Workspace) -> None:
    async with ws.runner([net(idle_timeout=0.2)], [sh_recipe("r", CAT)]) as r:
        reader, w = await asyncio.open_connection("127.0.0.1", r.ports()["n"])
        w.write(b"started but never finished")
        await w.drain()
        async with asyncio.timeout(WAIT):
            assert await reader.read() == b""  # the listener hung up on us
        w.close()
        await poll_until(lambda: spooled(r.spool_dir) == [])
    assert r.stats.events == 0


async def test_connection_limit_waits_instead_of_dropping(ws: Workspace) -> None:
    """Over max_connections a peer is not read until a slot frees: back-pressure, no loss."""
    async with ws.runner([net(max_connections=1)], [sh_recipe("r", CAT)]) as r:
        port = r.ports()["n"]
        _, first = await asyncio.open_connection("127.0.0.1", port)
        first.write(b"first holds the only slot")
        await first.drain()
        second = asyncio.create_task(raw_send(port, b"second waits"))
        await asyncio.wait_for(asyncio.shield(second), WAIT)  # its bytes sit in the kernel
        await asyncio.sleep(0)
        assert r.stats.events == 0
        first.close()
        await until_finished(r, 2)
    assert outputs(ws) == ["first holds the only slot", "second waits"]


# -- TLS ----------------------------------------------------------------------------------------


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Any]:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("client@example.org", common_name="lab-instrument-7")
    paths = {
        "ca": tmp_path / "ca.pem",
        "cert": tmp_path / "server.pem",
        "key": tmp_path / "server.key",
        "client": tmp_path / "client.pem",
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    server.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    server.private_key_pem.write_to_path(str(paths["key"]))
    client.private_key_and_cert_chain_pem.write_to_path(str(paths["client"]))
    return {"ca": ca, **paths}


async def test_tls_and_mutual_tls_record_the_peer(ws: Workspace, pki: dict[str, Any]) -> None:
    pattern = net(
        framing="length",
        ack=True,
        tls_cert=str(pki["cert"]),
        tls_key=str(pki["key"]),
        tls_client_ca=str(pki["ca"]),
    )
    async with ws.runner([pattern], [sh_recipe("r", CAT)]) as r:
        ctx = ssl.create_default_context(cafile=str(pki["ca"]))
        ctx.load_cert_chain(str(pki["client"]))
        msg_id = await send(
            "127.0.0.1", r.ports()["n"], b"secret", framing="length", ack=True, tls=ctx
        )
        await until_finished(r, 1)
    (meta,) = ws.jobs_list()
    assert meta["event"]["message_id"] == msg_id
    assert meta["event"]["tls"] is True
    assert "commonName=lab-instrument-7" in meta["event"]["peer_cert_subject"]
    assert outputs(ws) == ["secret"]


async def test_tls_client_without_a_required_certificate_is_refused(
    ws: Workspace, pki: dict[str, Any]
) -> None:
    pattern = net(
        framing="length",
        ack=True,
        tls_cert=str(pki["cert"]),
        tls_key=str(pki["key"]),
        tls_client_ca=str(pki["ca"]),
    )
    async with ws.runner([pattern], [sh_recipe("r", CAT)]) as r:
        port = r.ports()["n"]
        no_cert = ssl.create_default_context(cafile=str(pki["ca"]))
        with pytest.raises(SendError):
            await send("127.0.0.1", port, b"let me in", framing="length", ack=True, tls=no_cert)
        # Garbage instead of a handshake, then a good client: the listener is unharmed.
        await raw_send(port, b"GET / HTTP/1.0\r\n\r\n")
        good = ssl.create_default_context(cafile=str(pki["ca"]))
        good.load_cert_chain(str(pki["client"]))
        await send("127.0.0.1", port, b"with cert", framing="length", ack=True, tls=good)
        await until_finished(r, 1)
    assert outputs(ws) == ["with cert"]
    assert r.stats.events == 1


def test_ack_over_tls_needs_framing(pki: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="cannot half-close"):
        net(ack=True, tls_cert=str(pki["cert"]), tls_key=str(pki["key"]))


# -- port errors and run-time changes -----------------------------------------------------------


async def test_port_in_use_at_start_names_port_and_pattern(ws: Workspace) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        runner = ws.runner([net("busy", port=port)], [sh_recipe("r")])
        with pytest.raises(MonitorError) as info:
            await runner.run()
    assert f"port {port}" in str(info.value)
    assert "'busy'" in str(info.value)
    assert "already in use" in str(info.value)


async def test_port_in_use_at_run_time_is_refused_and_nothing_changes(ws: Workspace) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with ws.runner([net("ok")], [sh_recipe("r", CAT)]) as r:
            before = r.ports()
            with pytest.raises(MonitorError, match=rf"port {port} .*'clash'.*already in use"):
                r.add_pattern(net("clash", port=port))
            assert "clash" not in r.workflow.patterns
            assert r.ports() == before
            await raw_send(before["ok"], b"still serving")
            await until_finished(r, 1)


async def test_patterns_sharing_a_port_must_agree(ws: Workspace) -> None:
    async with ws.runner([net("a")], [sh_recipe("r")]) as r:
        port = r.ports()["a"]
        with pytest.raises(MonitorError, match=r"share port .* differ in framing"):
            r.add_pattern(net("b", port=port, framing="length"))
        assert set(r.rules) == {"a"}


def test_privileged_port_without_rights(tmp_path: Path) -> None:
    """Bind port 80 without CAP_NET_BIND_SERVICE (root has it, so drop it with setpriv)."""
    code = (
        "from meow_async import NetworkPattern\n"
        "from meow_async.monitors.network import _bind\n"
        "_bind(NetworkPattern(name='low', port=80, recipe='r'))\n"
    )
    argv = [sys.executable, "-c", code]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv to drop the capability")
        argv = [setpriv, "--bounding-set", "-net_bind_service", *argv]
    res = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, check=False)
    assert res.returncode == 1
    assert "MonitorError: network: port 80 on 127.0.0.1 (pattern 'low'): permission denied" in (
        res.stderr
    )


async def test_runtime_port_change_while_messages_arrive(ws: Workspace) -> None:
    """Move a rule to a new listener mid-stream: every acknowledged message makes its job;
    a sender caught by the close gets an error, never a silent loss."""
    async with ws.runner([net("mover", ack=True)], [sh_recipe("r", CAT)], max_jobs=4) as r:
        old = r.ports()["mover"]
        acked: list[str] = []

        async def keep_sending(port: int) -> None:
            for i in range(10_000):
                try:
                    await send("127.0.0.1", port, f"a{i}".encode(), ack=True)
                except SendError:
                    return  # the old port closed under us; this one was not accepted
                acked.append(f"a{i}")

        sender = asyncio.create_task(keep_sending(old))
        await poll_until(lambda: len(acked) >= 10)
        r.update_pattern(net("mover", ack=True, idle_timeout=5))  # reopens on a new port
        async with asyncio.timeout(WAIT):
            await sender
            await r.wait_ready()
        new = r.ports()["mover"]
        assert new != old
        for i in range(10):
            await send("127.0.0.1", new, f"b{i}".encode(), ack=True)
            acked.append(f"b{i}")
        await until_finished(r, len(acked))
    assert outputs(ws) == sorted(acked)
    assert r.stats.events == len(acked)


async def test_spool_files_are_removed_on_stop(ws: Workspace) -> None:
    async with ws.runner([net()], [sh_recipe("r", "sleep 0.2")]) as r:
        _, w = await asyncio.open_connection("127.0.0.1", r.ports()["n"])
        w.write(b"partial, sender still connected")
        await w.drain()
        await poll_until(lambda: bool(spooled(r.spool_dir)))  # the unfinished message
    assert spooled(r.spool_dir) == []
    w.close()


async def test_bad_tls_files_are_refused_at_the_call(ws: Workspace, pki: dict[str, Any]) -> None:
    other = trustme.CA().issue_cert("127.0.0.1")
    wrong_key = ws.root / "wrong.key"
    other.private_key_pem.write_to_path(str(wrong_key))
    async with ws.runner([net("ok")], [sh_recipe("r", CAT)]) as r:
        with pytest.raises(MonitorError, match=r"pattern 'bad'.*cannot load TLS files"):
            r.add_pattern(
                net("bad", framing="length", tls_cert=str(pki["cert"]), tls_key=str(wrong_key))
            )
        assert set(r.rules) == {"ok"}
        await raw_send(r.ports()["ok"], b"the runner is still up")
        await until_finished(r, 1)


def test_patterns_sharing_a_port_that_disagree_fail_when_made(ws: Workspace) -> None:
    with pytest.raises(MonitorError, match="share port 7399 but differ in ack"):
        ws.runner([net("a", port=7399), net("b", port=7399, ack=True)], [sh_recipe("r")])
