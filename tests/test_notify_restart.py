"""Jobs settled at start-up are notified: a real `meow-async run` is SIGKILLed while jobs run
(one cut off, one that ends while the runner is frozen), and started again, twice; the jobs'
failures reach a chat webhook once, "found after a restart", and not again."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from meow_async import Notify
from meow_async.model.jobs import read_meta
from meow_async.notify import Notifier
from meow_async.notify.message import AFTER_RESTART

from .chat_services import ChatServices, chat_services
from .conftest import PYTHON, WAIT, poll_until
from .test_job_start import alive, cli_loop, kinds, log_lines

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="a killed runner's orphans: /proc")

WORKFLOW = """\
runner: {{base_dir: data, jobs_dir: jobs, shutdown_timeout: 5, kill_timeout: 1, max_jobs: 2}}
recipes:
  r:
    kind: python
    parameters: {{gate: {gate}}}
    script: |
      import sys, time
      from pathlib import Path
      name = Path(input_file).name
      Path(gate, "started-" + name).touch()
      while not Path(gate, "release-" + name).exists():
          time.sleep(0.01)
      print("reading", name, "<module>", file=sys.stderr)
      sys.exit(name + " could not be read")
patterns:
  p:
    glob: "*.in"
    recipe: r
    on_restart: fail
    notify:
      webhook: {{url_env: MEOW_TEST_CHAT_URL, format: slack}}
"""


class Cli:
    """`meow-async run workflow.yaml` in the background, its output in files."""

    def __init__(self, root: Path, tag: str, env: dict[str, str]) -> None:
        self.err = root / f"{tag}.stderr"
        env = {**os.environ, **env}
        with open(root / f"{tag}.stdout", "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                [PYTHON, "-m", "meow_async", "run", "--loop", cli_loop(), "workflow.yaml"],
                cwd=root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )

    def log(self) -> str:
        return self.err.read_text()

    async def started(self) -> None:
        await poll_until(lambda: "runner started" in self.log() or self.proc.poll() is not None)
        assert "runner started" in self.log(), self.log()

    async def stop(self) -> None:
        """SIGINT, and a clean exit."""
        self.proc.send_signal(signal.SIGINT)
        await poll_until(lambda: self.proc.poll() is not None)
        assert self.proc.returncode == 0, self.log()

    async def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        await poll_until(lambda: self.proc.poll() is not None)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(WAIT)


@contextlib.asynccontextmanager
async def cli(root: Path, tag: str, services: ChatServices) -> AsyncIterator[Cli]:
    run = Cli(root, tag, {"MEOW_TEST_CHAT_URL": services.url("slack")})
    try:
        await run.started()
        yield run
    finally:
        run.close()


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "gate").mkdir()
    (tmp_path / "workflow.yaml").write_text(
        WORKFLOW.format(gate=json.dumps(str(tmp_path / "gate")))
    )
    return tmp_path


async def start_jobs(lab: Path, *names: str) -> dict[str, Path]:
    """Drop the files in, and wait until each job's process runs."""
    for name in names:
        (lab / "data" / name).write_text("x")
    await poll_until(lambda: all((lab / "gate" / f"started-{n}").exists() for n in names))
    dirs = {n: job_dir(lab, n) for n in names}
    await poll_until(lambda: all("pid" in kinds(d) for d in dirs.values()))
    return dirs


def job_dir(lab: Path, name: str) -> Path:
    (found,) = [
        d
        for d in (lab / "jobs").glob("*/*")  # day folders
        if d.is_dir()
        and (d / "job.json").exists()
        and read_meta(d)["event"]["path"].endswith("/" + name)
    ]
    return found


def posts(services: ChatServices) -> list[dict[str, Any]]:
    return [r.body for r in services.of("slack")]


async def test_jobs_settled_at_start_are_notified_once_however_many_restarts(lab: Path) -> None:
    pids: list[int] = []
    try:
        async with chat_services() as services:
            async with cli(lab, "first", services) as first:
                dirs = await start_jobs(lab, "a.in", "b.in")
                pids += [int(log_lines(d)[1][1]) for d in dirs.values()]
                first.proc.send_signal(signal.SIGSTOP)  # b ends while no runner watches
                (lab / "gate" / "release-b.in").touch()
                await poll_until(lambda: "exit" in kinds(dirs["b.in"]))
                await first.kill()  # a is cut off
            assert posts(services) == []
            assert {read_meta(d)["state"] for d in dirs.values()} == {"queued"}

            async with cli(lab, "second", services) as second:
                await services.wait(lambda got: len(got) >= 2)
                await second.stop()
            assert "2 settled job(s) to notify" in second.log()

            async with cli(lab, "third", services) as third:
                await third.stop()  # what it filed would be delivered by now
            assert "to notify" not in third.log()
    finally:
        for pid in pids:
            if alive(pid):
                os.killpg(pid, signal.SIGKILL)

    assert [(r.status, r.problems) for r in services.received] == [(200, []), (200, [])]
    by_job = {p["blocks"][0]["text"]["text"].rpartition(" ")[2]: p for p in posts(services)}
    metas = {name: read_meta(d) for name, d in dirs.items()}
    assert sorted(by_job) == sorted(m["id"] for m in metas.values())
    for name, meta in metas.items():
        assert meta["state"] == "failed"
        assert isinstance(meta["settled_at_start"], float)
        assert "notify_pending" not in meta
        text = by_job[meta["id"]]["text"]
        assert AFTER_RESTART in text
        assert f"Input: {name}" in text
    cut_off = by_job[metas["a.in"]["id"]]["text"]
    assert "Error: `the runner died while the job was running`" in cut_off
    ended = by_job[metas["b.in"]["id"]]["text"]
    assert "Error: `exit code 1: b.in could not be read`" in ended
    assert "reading b.in <module>\nb.in could not be read\n```" in ended  # its stderr


async def test_a_runner_killed_between_sending_and_marking_sends_again(lab: Path) -> None:
    """At least once: the runner is frozen the moment its notification arrives, before it
    can mark the job notified, and SIGKILLed; the next start sends it again, and marks it."""
    pids: list[int] = []
    try:
        async with chat_services() as services:
            async with cli(lab, "first", services) as first:
                dirs = await start_jobs(lab, "a.in")
                pids.append(int(log_lines(dirs["a.in"])[1][1]))
                await first.kill()

            second = Cli(lab, "second", {"MEOW_TEST_CHAT_URL": services.url("slack")})
            try:  # frozen as its request arrives: it never reads the answer
                services.on_request = lambda got: second.proc.send_signal(signal.SIGSTOP)
                await services.wait(lambda got: len(got) >= 1)
                await second.kill()
            finally:
                second.close()
            services.on_request = None
            assert read_meta(dirs["a.in"])["notify_pending"] is True

            async with cli(lab, "third", services) as third:
                await services.wait(lambda got: len(got) >= 2)
                await third.stop()
    finally:
        for pid in pids:
            if alive(pid):
                os.killpg(pid, signal.SIGKILL)
    first_post, again = posts(services)
    assert first_post["text"] == again["text"]
    assert "notify_pending" not in read_meta(dirs["a.in"])


async def test_a_settled_job_counts_as_notified_once_every_destination_had_it() -> None:
    """Two destinations: the mark goes after both delivered, not after the first. Its JSON
    record says ``after_restart`` and carries no ``notify_pending``; its mail says it too."""
    from .test_notify import smtp_server, webhook_server

    async with webhook_server() as hook, smtp_server() as smtp:
        notifier = Notifier()
        notifier.links = "https://lab.example.org/meow"
        notify = Notify(
            webhook=hook.url,
            email={"host": "127.0.0.1", "port": smtp.port, "from": "m@x.example", "to": "o@x"},
        )
        meta = {
            "id": "p-1",
            "rule": "p",
            "state": "failed",
            "error": "the runner died while the job was running",
            "settled_at_start": 1.0,
            "notify_pending": True,
        }
        notified: list[str] = []
        assert notifier.settled_at_start(meta, notify, lambda: notified.append("p-1"))
        await hook.inbox.wait(lambda items: len(items) == 1)
        await smtp.inbox.wait(lambda items: len(items) == 1)
        await notifier.close(grace=WAIT)
        # `on` (failed, timed_out) does not ask for a done job: nothing is filed.
        done = {**meta, "id": "p-2", "state": "done"}
        assert not notifier.settled_at_start(done, notify, lambda: notified.append("p-2"))
    assert notified == ["p-1"]
    (post,) = hook.inbox.items
    assert post.body["after_restart"] is True
    assert post.body["outcome"] == "failed"
    assert post.body["link"] == "https://lab.example.org/meow/jobs/p-1"
    assert "notify_pending" not in post.body
    text = smtp.inbox.items[0].message.get_content()
    assert "Link:      https://lab.example.org/meow/jobs/p-1" in text
    assert AFTER_RESTART in text
