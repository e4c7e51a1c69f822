"""Two runner processes that trigger each other over the network (the report's future work)."""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

from .conftest import wait_until_sync
from .test_cli import MeowRun, meow

EXAMPLE = Path(__file__).parent.parent / "examples" / "pingpong"
ROUNDS = 6


def test_two_runners_bounce_a_message_for_a_bounded_number_of_rounds(
    tmp_path: Path, unused_tcp_port_factory: Callable[[], int]
) -> None:
    """1. Start ping and pong (the shipped example, on ports from the OS).
    2. Send round 1 to ping with an acknowledgement.
    3. Each job sends the next round to the other runner, until ROUNDS.
    4. Both stop cleanly on SIGINT; each runner ran exactly its own rounds.
    """
    shutil.copy(EXAMPLE / "bounce.sh", tmp_path)
    ports = {"ping": unused_tcp_port_factory(), "pong": unused_tcp_port_factory()}
    for me, other in (("ping", "pong"), ("pong", "ping")):
        text = (EXAMPLE / "ping.yaml").read_text()
        text = text.replace("7301", str(ports[me])).replace("ping", me)
        text = text.replace('peer: "127.0.0.1:7302"', f'peer: "127.0.0.1:{ports[other]}"')
        text = text.replace("rounds: 10", f"rounds: {ROUNDS}")
        (tmp_path / f"{me}.yaml").write_text(text)
    with MeowRun("ping.yaml", cwd=tmp_path) as ping, MeowRun("pong.yaml", cwd=tmp_path) as pong:
        ping.wait_ready()
        pong.wait_ready()
        assert f"tcp 127.0.0.1:{ports['ping']}" in ping.stdout
        (tmp_path / "one").write_text("1\n")
        sent = meow("send", "--ack", f"127.0.0.1:{ports['ping']}", "one", cwd=tmp_path)
        assert sent.returncode == 0, sent.stderr
        assert len(sent.stdout.strip()) > 10  # the message id

        def done(me: str) -> list[dict[str, object]]:
            return [
                json.loads(line)
                for line in meow(
                    "jobs", "--json", tmp_path / ".meow" / me / "jobs", cwd=tmp_path
                ).stdout.splitlines()
            ]

        wait_until_sync(
            lambda: sum(1 for me in ports for j in done(me) if j["state"] == "done") == ROUNDS
        )
        for run in (ping, pong):
            run.signal(signal.SIGINT)
        assert ping.wait_exit() == 0, ping.report()
        assert pong.wait_exit() == 0, pong.report()
    rounds: dict[str, list[int]] = {}
    for me in ports:
        for j in done(me):
            assert j["state"] == "done", j
            out = (Path(str(j["dir"])) / "stdout.txt").read_text().splitlines()
            rounds.setdefault(me, []).append(int(out[0].split()[-1]))
    assert sorted(rounds["ping"]) == list(range(1, ROUNDS + 1, 2))
    assert sorted(rounds["pong"]) == list(range(2, ROUNDS + 1, 2))
