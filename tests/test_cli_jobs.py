"""`meow-async jobs`, `show PATH` and `status`, as an operator meets them: real `python -m
meow_async` processes on job folders made by real runs (file triggers, a sweep, a failing
rule, a message sent with `meow-async send`), and `status` against a real running runner.

Every wait is on a condition (a line, a file, an answer) with a timeout; every process started
is killed in a `finally` if it is still there. The runners use `--loop uvloop` when
MEOW_TEST_LOOP=uvloop, else asyncio's own loop.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .conftest import PYTHON, WAIT, wait_until_sync
from .test_cli import SHORT, MeowRun, job_metas, meow

LOOP = "uvloop" if os.environ.get("MEOW_TEST_LOOP") == "uvloop" else "asyncio"

WORKFLOW = """\
runner: {base_dir: data, jobs_dir: jobs, shutdown_timeout: 20, kill_timeout: 1%s}
recipes:
  ok: {kind: bash, script: 'echo "$input_file"'}
  bad: {kind: bash, script: 'echo "no header" >&2; exit 3'}
  slow:
    kind: bash
    script: |
      # Runs until the test says so (a file), so status sees it running; bounded.
      for i in $(seq 600); do [ -e "$release" ] && exit 0; sleep 0.05; done; exit 1
patterns:
  convert: {glob: "in/*.txt", recipe: ok}
  fit:
    glob: "sweep/*.txt"
    recipe: ok
    sweep: {a: {start: 0, stop: 1, jump: 1}, b: {start: 0.5, stop: 1.0, jump: 0.5}}
  check: {glob: "bad/*.txt", recipe: bad}
  wait: {glob: "slow/*.txt", recipe: slow, parameters: {release: "{DIR}/release"}}
  ingest: {port: 0, host: 127.0.0.1, recipe: ok, ack: true}
"""

HTTP = ", http: {host: 127.0.0.1, port: 0}"


def workflow(root: Path, *, http: bool) -> Path:
    for sub in ("in", "sweep", "bad", "slow"):
        (root / "data" / sub).mkdir(parents=True, exist_ok=True)
    path = root / "workflow.yaml"
    path.write_text(WORKFLOW % (HTTP if http else ""))
    return path


def start(root: Path) -> MeowRun:
    run = MeowRun("--loop", LOOP, "workflow.yaml", cwd=root)
    try:
        run.wait_ready()
    except BaseException:
        run.close()
        raise
    return run


def network_port(run: MeowRun) -> int:
    match = re.search(r"tcp 127\.0\.0\.1:(\d+)", run.stdout)
    assert match, run.report()
    return int(match[1])


def done(jobs: Path, n: int) -> bool:
    return sum(m["state"] in ("done", "failed") for m in job_metas(jobs)) >= n


@dataclass
class Made:
    """A project whose runner ran and stopped, and what its jobs were triggered by."""

    root: Path
    jobs: Path
    metas: list[dict[str, Any]]
    message_id: str

    def by_rule(self, rule: str) -> list[dict[str, Any]]:
        return [m for m in self.metas if m["rule"] == rule]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Made:
    """One real run: two files, a sweep of 4 points, a failing job, a network message."""
    root = tmp_path_factory.mktemp("made")
    workflow(root, http=False)
    jobs = root / "jobs"
    with start(root) as run:
        data = root / "data"
        (data / "in" / "a.txt").write_text("a")
        wait_until_sync(lambda: done(jobs, 1), SHORT)  # a.txt's job is the oldest
        (data / "in" / "b.txt").write_text("b")
        (data / "sweep" / "s.txt").write_text("s")
        (data / "bad" / "c.txt").write_text("c")
        (root / "msg.txt").write_text("hello")
        sent = meow("send", "--ack", f"127.0.0.1:{network_port(run)}", "msg.txt", cwd=root)
        assert sent.returncode == 0, sent.stderr
        wait_until_sync(lambda: done(jobs, 8), SHORT)
        run.signal(signal.SIGINT)
        assert run.wait_exit() == 0, run.report()
    return Made(root=root, jobs=jobs, metas=job_metas(jobs), message_id=sent.stdout.strip())


def rows_of(stdout: str) -> list[list[str]]:
    """The table's rows as cells: ID STATE RULE DATE TIME TOOK EXIT SWEEP TRIGGER (CREATED
    is a date and a time; only the TRIGGER of a message has spaces)."""
    lines = stdout.splitlines()
    assert lines[0].split() == [
        "ID", "STATE", "RULE", "CREATED", "TOOK", "EXIT", "SWEEP", "TRIGGER"
    ], stdout  # fmt: skip
    return [line.split(maxsplit=8) for line in lines[1:-1]]


def ids(stdout: str) -> list[str]:
    return [r[0] for r in rows_of(stdout)]


# -- jobs -----------------------------------------------------------------------------------------


def test_jobs_shows_what_triggered_each_job_and_its_sweep_point(made: Made) -> None:
    res = meow("jobs", "workflow.yaml", cwd=made.root)
    assert res.returncode == 0, res.stderr
    rows = {r[0]: r for r in rows_of(res.stdout)}
    assert list(rows) == [m["id"] for m in made.metas]  # oldest first
    (a,) = [m for m in made.by_rule("convert") if m["event"]["path"].endswith("a.txt")]
    assert rows[a["id"]][1:3] == ["done", "convert"]
    assert rows[a["id"]][6:] == ["0", "-", "in/a.txt"]  # relative to the watched folder
    assert re.fullmatch(r"\d+\.\d\ds", rows[a["id"]][5])
    sweep = {rows[m["id"]][7] for m in made.by_rule("fit")}
    assert sweep == {"a=0,b=0.5", "a=0,b=1.0", "a=1,b=0.5", "a=1,b=1.0"}
    assert {rows[m["id"]][8] for m in made.by_rule("fit")} == {"sweep/s.txt"}
    (bad,) = made.by_rule("check")
    assert rows[bad["id"]][1] == "failed"
    assert rows[bad["id"]][6] == "3"
    (net,) = made.by_rule("ingest")
    assert re.fullmatch(
        rf"{re.escape(made.message_id)} from 127\.0\.0\.1:\d+", rows[net["id"]][8]
    ), res.stdout
    assert res.stdout.splitlines()[-1] == "8 job(s): 7 done, 1 failed"


@pytest.mark.parametrize(
    ("args", "rules"),
    [
        (["--rule", "fit"], {"fit": 4}),
        (["--rule", "fit", "--rule", "check"], {"fit": 4, "check": 1}),
        (["--state", "failed"], {"check": 1}),
        (["--state", "failed", "--state", "done", "--rule", "convert"], {"convert": 2}),
        (["--input", "data/sweep/s.txt"], {"fit": 4}),  # from the current folder
        (["--input", "sweep/s.txt"], {"fit": 4}),  # from the watched folder
        (["--input", "in/b.txt", "--input", "data/bad/c.txt"], {"convert": 1, "check": 1}),
        (["--since", "1h"], {"convert": 2, "fit": 4, "check": 1, "ingest": 1}),
        (["--rule", "fit", "--state", "failed"], {}),
    ],
)
def test_jobs_filters(made: Made, args: list[str], rules: dict[str, int]) -> None:
    res = meow("jobs", "workflow.yaml", *args, cwd=made.root)
    assert res.returncode == 0, res.stderr
    if not rules:
        assert res.stdout.startswith("no failed jobs in jobs (rule fit)"), res.stdout
        return
    listed = rows_of(res.stdout)
    got: dict[str, int] = {}
    for r in listed:
        got[r[2]] = got.get(r[2], 0) + 1
    assert got == rules, res.stdout
    assert ids(res.stdout) == [m["id"] for m in made.metas if m["id"] in set(ids(res.stdout))]


def test_jobs_input_by_absolute_path_and_message_id(made: Made) -> None:
    target = made.root / "data" / "in" / "a.txt"
    res = meow("jobs", made.root / "workflow.yaml", "--input", target, cwd=made.root.parent)
    assert res.returncode == 0, res.stderr
    assert [r[2] for r in rows_of(res.stdout)] == ["convert"]
    (net,) = made.by_rule("ingest")
    res = meow("jobs", "jobs", "--input", made.message_id, cwd=made.root)
    assert ids(res.stdout) == [net["id"]], res.stdout
    res = meow("jobs", "jobs", "--input", "data/in/never.txt", cwd=made.root)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "no jobs in jobs (triggered by data/in/never.txt)"


def test_jobs_tail_limit_since(made: Made) -> None:
    order = [m["id"] for m in made.metas]
    res = meow("jobs", "workflow.yaml", "--tail", "3", cwd=made.root)
    assert res.returncode == 0, res.stderr
    assert ids(res.stdout) == order[-3:]
    assert res.stdout.splitlines()[-1].startswith("the newest 3 job(s): ")
    res = meow("jobs", "workflow.yaml", "--limit", "2", cwd=made.root)
    assert ids(res.stdout) == order[:2]
    assert res.stdout.splitlines()[-1] == "the first 2 job(s): 2 done"
    res = meow("jobs", "workflow.yaml", "--tail", "2", "--rule", "fit", cwd=made.root)
    assert ids(res.stdout) == [m["id"] for m in made.by_rule("fit")][-2:]
    res = meow("jobs", "workflow.yaml", "--since", "2999-01-01T00:00", cwd=made.root)
    assert res.stdout.startswith("no jobs in jobs (made since 2999-01-01 00:00:00)"), res.stdout
    res = meow("jobs", "workflow.yaml", "--since", "2000-01-01", "--tail", "1", cwd=made.root)
    assert ids(res.stdout) == order[-1:]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--since", "yesterday"], "expected a duration"),
        (["--tail", "0"], "at least 1"),
        (["--tail", "2", "--limit", "2"], "not allowed with argument"),
        (["--state", "lost"], "invalid choice"),
    ],
)
def test_jobs_bad_filters_are_usage_errors(made: Made, args: list[str], says: str) -> None:
    res = meow("jobs", "workflow.yaml", *args, cwd=made.root)
    assert res.returncode == 2
    assert says in res.stderr
    assert "Traceback" not in res.stderr


def test_jobs_json_is_one_record_per_line_with_the_filters(made: Made) -> None:
    res = meow("jobs", "workflow.yaml", "--json", "--rule", "fit", "--tail", "3", cwd=made.root)
    assert res.returncode == 0, res.stderr
    listed = [json.loads(line) for line in res.stdout.splitlines()]
    assert [m["id"] for m in listed] == [m["id"] for m in made.by_rule("fit")][-3:]
    assert all(m["sweep"] and m["state"] == "done" for m in listed)
    assert {m["dir"] for m in listed} == {str(next(made.jobs.glob(f"*/{m['id']}"))) for m in listed}
    res = meow("jobs", "workflow.yaml", "--json", "--state", "skipped", cwd=made.root)
    assert res.returncode == 0
    assert res.stdout == ""


def test_jobs_read_by_several_processes_list_the_same(made: Made) -> None:
    """Big jobs folders without an index (no runner of this version has opened them) are read
    by forked copies of the process (one per CPU): the same rows, in the same order, as one
    process reads them (forced here for 8 jobs)."""
    with_index = meow("jobs", "workflow.yaml", cwd=made.root).stdout
    aside = made.root / "index-aside"
    aside.mkdir()
    for f in made.jobs.glob(".meow-index.sqlite3*"):
        f.rename(aside / f.name)
    try:
        _listed_from_folders(made, with_index)
    finally:
        for f in aside.iterdir():
            f.rename(made.jobs / f.name)
        aside.rmdir()


def _listed_from_folders(made: Made, with_index: str) -> None:
    def listing(processes: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PYTHON, "-m", "meow_async", "jobs", "workflow.yaml", *args],
            cwd=made.root,
            env={**os.environ, "MEOW_LISTING_PROCESSES": processes},
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=False,
        )

    for args in ([], ["--json"], ["--rule", "fit"], ["--since", "1d"]):
        one, three = listing("1", *args), listing("3", *args)
        assert one.returncode == 0, one.stderr
        assert three.returncode == 0, three.stderr
        assert three.stdout == one.stdout, args
        assert len(one.stdout.splitlines()) >= 4
    assert listing("1").stdout == with_index  # the index lists what the folders hold
    res = listing("none")
    assert res.returncode == 1
    assert "MEOW_LISTING_PROCESSES: expected a whole number >= 1, got 'none'" in res.stderr


# -- show PATH ------------------------------------------------------------------------------------


def test_show_the_job_a_file_triggered(made: Made) -> None:
    (a,) = [m for m in made.by_rule("convert") if m["event"]["path"].endswith("a.txt")]
    for given in ("data/in/a.txt", "in/a.txt", str(made.root / "data" / "in" / "a.txt")):
        res = meow("show", given, "--jobs", "workflow.yaml", cwd=made.root)
        assert res.returncode == 0, res.stderr
        assert res.stdout.splitlines()[0] == f"job       {a['id']}", given
        assert res.stderr == ""


def test_show_a_file_that_triggered_several_jobs_shows_the_newest(made: Made) -> None:
    newest = made.by_rule("fit")[-1]
    res = meow("show", "sweep/s.txt", "--jobs", "workflow.yaml", "--json", cwd=made.root)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["id"] == newest["id"]
    assert "sweep/s.txt triggered 4 jobs; showing the newest" in res.stderr
    assert "jobs --input sweep/s.txt lists them all" in res.stderr


def test_show_by_message_id_and_what_is_wrong(made: Made) -> None:
    (net,) = made.by_rule("ingest")
    res = meow("show", made.message_id, "--jobs", "jobs", cwd=made.root)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0] == f"job       {net['id']}"
    res = meow("show", "data/in/never.txt", "--jobs", "jobs", cwd=made.root)
    assert res.returncode == 1
    assert "no job in jobs was triggered by data/in/never.txt" in res.stderr
    res = meow("show", "nothing-like-it", "--jobs", "jobs", cwd=made.root)
    assert res.returncode == 1
    assert "no job 'nothing-like-it' in jobs" in res.stderr
    # A rule's name (the --help example): its newest job, with a note saying so.
    res = meow("show", "fit", "--jobs", "jobs", cwd=made.root)
    assert res.returncode == 0, res.stderr
    newest = json.loads(
        meow("jobs", "jobs", "--rule", "fit", "--tail", "1", "--json", cwd=made.root).stdout
    )
    assert res.stdout.splitlines()[0] == f"job       {newest['id']}"
    assert res.stderr == (
        "meow-async: note: rule fit has 4 jobs; showing the newest (meow-async jobs --rule fit "
        "lists them all)\n"
    )
    res = meow("show", "fit-", "--jobs", "jobs", cwd=made.root)  # an id's start
    assert res.returncode == 1
    assert "'fit-' matches 4 jobs (fit-" in res.stderr


# -- status ---------------------------------------------------------------------------------------


def status_json(root: Path) -> dict[str, Any]:
    res = meow("status", "workflow.yaml", "--json", cwd=root)
    assert res.returncode in (0, 3), res.stderr
    answer: dict[str, Any] = json.loads(res.stdout)
    return answer


class Watch:
    """`meow-async status --watch ...` in the background, its stdout collected by a thread."""

    def __init__(self, *args: str, cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "meow_async", "status", *args],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def output(self) -> str:
        return "".join(list(self.lines))

    def stop(self) -> tuple[int, str, str]:
        """SIGINT, as Ctrl+C: the exit status, stdout and stderr."""
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"status --watch still running {WAIT}s after SIGINT:\n{self.output()}")
        self._reader.join(5)
        assert self.proc.stderr is not None
        err = self.proc.stderr.read()
        self.close()
        return code, self.output(), err

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(WAIT)
        self._reader.join(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def watches() -> Iterator[list[Watch]]:
    started: list[Watch] = []
    yield started
    for w in started:
        w.close()


def test_status_of_a_running_runner_from_its_http_endpoint(
    tmp_path: Path, watches: list[Watch]
) -> None:
    workflow(tmp_path, http=True)
    jobs = tmp_path / "jobs"
    with start(tmp_path) as run:
        # Written before the banner: the runner.http port the OS gave (port: 0), and who.
        live = json.loads((jobs / ".meow-live.json").read_text())
        assert live["pid"] == run.proc.pid
        port = live["http"]["port"]
        assert port > 0
        assert live["http"]["host"] == "127.0.0.1"
        assert f"  live view http://127.0.0.1:{port}/\n" in run.stdout

        (tmp_path / "data" / "slow" / "x.txt").write_text("x")
        wait_until_sync(lambda: len(status_json(tmp_path)["status"]["running"]) == 1, SHORT)

        res = meow("status", "workflow.yaml", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        out = res.stdout
        assert re.search(rf"^runner    running  pid {run.proc.pid}, up \S+", out, re.M), out
        assert f"          http://127.0.0.1:{port}\n" in out
        assert re.search(r"^rules     convert\s+in/\*\.txt -> bash recipe ok$", out, re.M), out
        assert re.search(r"^\s+ingest\s+tcp 127\.0\.0\.1:[1-9]\d* -> bash recipe ok$", out, re.M)
        assert "events    1  (wait 1)\n" in out
        assert "jobs      1 made: 1 running, 0 done, 0 failed, 0 skipped" in out
        assert "queues    events 0, jobs 0, backlog 0\n" in out
        assert "kept      1 in the jobs folder: 1 queued\n" in out  # the index: running is queued
        (job,) = [m for m in job_metas(jobs) if m["rule"] == "wait"]
        assert re.search(rf"^running   {job['id']}  wait  \d+\.\ds$", out, re.M), out

        answer = status_json(tmp_path)
        assert answer["running"] is True
        assert answer["source"] == "http"
        st = answer["status"]
        assert st["pid"] == run.proc.pid
        assert st["uptime"] > 0
        assert st["jobs"]["running"] == 1
        assert st["running"][0]["id"] == job["id"]
        assert st["running"][0]["age"] >= 0
        assert {r["name"] for r in st["rules"]} == {"convert", "fit", "check", "wait", "ingest"}
        assert st["queues"] == {"events": 0, "jobs": 0, "backlog": 0}
        assert st["kept"] == {"queued": 1}  # the jobs folder, all runs, from the index
        # /status is read-only, as the runner's other endpoints are.
        post = urllib.request.Request(f"http://127.0.0.1:{port}/status", data=b"", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.build_opener(urllib.request.ProxyHandler({})).open(post, timeout=WAIT)
        assert refused.value.code == 405
        assert refused.value.headers["Allow"] == "GET"
        refused.value.close()

        # --watch redraws until Ctrl+C, which ends it with status 0.
        w = Watch("--watch", "0.1", "workflow.yaml", cwd=tmp_path)
        watches.append(w)
        wait_until_sync(lambda: w.output().count("Ctrl+C ends)") >= 2, SHORT)
        code, text, err = w.stop()
        assert code == 0, err
        assert "Traceback" not in err
        assert text.count(f"runner    running  pid {run.proc.pid}") >= 2, text
        # `--watch WORKFLOW` (no number): WORKFLOW is what to watch, every 2 s; --json: lines.
        w = Watch("--json", "--watch", "workflow.yaml", cwd=tmp_path)
        watches.append(w)
        wait_until_sync(lambda: len(w.lines) >= 1, SHORT)
        code, text, err = w.stop()
        assert code == 0, err
        assert json.loads(text.splitlines()[0])["status"]["pid"] == run.proc.pid

        (tmp_path / "data" / "slow" / "release").write_text("")
        wait_until_sync(lambda: done(jobs, 1), SHORT)
        run.signal(signal.SIGINT)
        assert run.wait_exit() == 0, run.report()

    # A clean stop removes the file: not running, exit status 3.
    assert not (jobs / ".meow-live.json").exists()
    res = meow("status", "workflow.yaml", cwd=tmp_path)
    assert res.returncode == 3, res.stderr
    assert res.stdout.startswith("runner    not running (no .meow-live.json here"), res.stdout
    assert "jobs      1 in " in res.stdout
    assert ": 1 done" in res.stdout
    assert status_json(tmp_path)["running"] is False


def test_status_without_runner_http_reads_the_folders_and_sees_a_killed_runner(
    tmp_path: Path,
) -> None:
    workflow(tmp_path, http=False)
    jobs = tmp_path / "jobs"
    with start(tmp_path) as run:
        (tmp_path / "data" / "in" / "a.txt").write_text("a")
        wait_until_sync(lambda: done(jobs, 1), SHORT)
        (tmp_path / "data" / "slow" / "x.txt").write_text("x")
        wait_until_sync(lambda: "running" in [r["state"] for r in rows(tmp_path)], SHORT)
        (job,) = [m for m in job_metas(jobs) if m["rule"] == "wait"]
        pid = int((Path(job["dir"]) / "process.log").read_text().split("\npid ")[1].split()[0])
        run.adopt_job(pid)  # killed at the end if the test fails before it ends

        res = meow("status", "workflow.yaml", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        out = res.stdout
        assert f"runner    running  pid {run.proc.pid}, up " in out
        assert "note      live figures (events, queues) need runner.http" in out
        assert re.search(r"^rules     convert\s+in/\*\.txt -> bash recipe ok$", out, re.M), out
        assert f"jobs      2 in {jobs}: 1 done, 1 running\n" in out
        assert re.search(rf"^running   {job['id']}  wait  \d+\.\ds$", out, re.M), out

        run.proc.kill()  # as kill -9: the file stays, its pid is gone
        run.wait_exit()
        res = meow("status", "workflow.yaml", cwd=tmp_path)
        assert res.returncode == 3, res.stderr
        assert re.match(
            rf"runner    not running \(last seen \S+ \S+; pid {run.proc.pid} is gone", res.stdout
        ), res.stdout
        # the file's rules are not shown as a runner's: none runs
        assert not re.search(r"^rules ", res.stdout, re.M), res.stdout
        assert (
            "workflow  workflow.yaml: 5 rule(s) (convert, fit, check, wait, ingest), none running\n"
        ) in res.stdout
        answer = status_json(tmp_path)
        assert answer["running"] is False
        assert answer["runner"]["alive"] is False
        assert "rules" not in answer
        assert answer["workflow"] == {
            "file": "workflow.yaml",
            "rules": ["convert", "fit", "check", "wait", "ingest"],
        }
        (tmp_path / "data" / "slow" / "release").write_text("")  # the job goes on alone


def rows(root: Path) -> list[dict[str, Any]]:
    res = meow("jobs", "workflow.yaml", "--json", cwd=root)
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines()]


def test_status_of_a_folder_where_no_runner_ran(tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    res = meow("status", "jobs", cwd=tmp_path)
    assert res.returncode == 3
    assert res.stdout.splitlines() == [
        "runner    not running (no .meow-live.json here: the last runner stopped cleanly, "
        "or none ran)",
        f"jobs      0 in {tmp_path / 'jobs'}",
        "running   none",
    ]
    res = meow("status", "nowhere", cwd=tmp_path)
    assert res.returncode == 1
    assert "no jobs folder at nowhere" in res.stderr
    res = meow("status", "--watch", "soon", "jobs", cwd=tmp_path)
    assert res.returncode == 1
    assert "--watch: expected seconds, got 'soon'" in res.stderr
