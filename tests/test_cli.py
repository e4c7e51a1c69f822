"""The command line, as a user meets it: real `python -m meow_async` processes, real files.

`run` is started as a subprocess whose stdout/stderr are read line by line by threads, so no
read can hang the test; every wait is on a condition (a line, a file, a job state) with a
timeout, and every started process is killed in a `finally` if it is still there.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import pytest

from .conftest import PYTHON, WAIT, wait_until_sync

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "linked"

#: Runner settings for the workflows written here: short kill timeout, generous graceful one.
RUNNER = "runner: {base_dir: data, jobs_dir: jobs, shutdown_timeout: 20, kill_timeout: 1}\n"

#: Bound for waits whose failure mode is "it never happens" (a missed event), so a failing test
#: does not take the full WAIT; what it waits for normally takes well under a second.
SHORT = 10.0

HAVE_PROC = Path("/proc/self/stat").exists()


# -- helpers ------------------------------------------------------------------------------------


def meow(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run one short CLI command to its end."""
    return subprocess.run(
        [PYTHON, "-m", "meow_async", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )


LineHook = Callable[["MeowRun", str], None]


class MeowRun:
    """`meow-async run ...` in the background; threads collect its output as it comes.

    ``on_stdout`` is called from the reader thread with each stdout line as soon as it is read,
    for tests that must act the moment something is printed.
    """

    def __init__(
        self,
        *args: str | Path,
        cwd: Path,
        on_stdout: LineHook | None = None,
        preexec_fn: Callable[[], None] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.args = [str(a) for a in args]
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "meow_async", "run", *self.args],
            cwd=cwd,
            env=env,
            preexec_fn=preexec_fn,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._lock = threading.Lock()
        self._job_groups: list[int] = []
        self._out: list[str] = []
        self._err: list[str] = []
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        self._readers = [
            threading.Thread(
                target=self._read, args=(self.proc.stdout, self._out, on_stdout), daemon=True
            ),
            threading.Thread(
                target=self._read, args=(self.proc.stderr, self._err, None), daemon=True
            ),
        ]
        for t in self._readers:
            t.start()

    def _read(self, stream: IO[str], sink: list[str], hook: LineHook | None) -> None:
        for line in stream:
            if hook is not None:
                hook(self, line)
            with self._lock:
                sink.append(line)

    @property
    def stdout(self) -> str:
        with self._lock:
            return "".join(self._out)

    @property
    def stderr(self) -> str:
        with self._lock:
            return "".join(self._err)

    def report(self) -> str:
        return (
            f"meow-async run {' '.join(self.args)}: exit code {self.proc.returncode}\n"
            f"--- stdout ---\n{self.stdout}--- stderr ---\n{self.stderr}"
        )

    def _join_readers(self) -> None:
        for t in self._readers:
            t.join(timeout=5)

    def wait_for(self, text: str, *, stream: str = "stdout", timeout: float = WAIT) -> None:
        """Wait until ``text`` is printed (or the process ends, which fails the test)."""

        def seen() -> bool:
            return text in (self.stdout if stream == "stdout" else self.stderr)

        wait_until_sync(lambda: seen() or self.proc.poll() is not None, timeout)
        if not seen():
            self._join_readers()  # the process ended: take its last lines too
        assert seen(), f"{text!r} not in {stream}\n{self.report()}"

    def wait_ready(self) -> None:
        """The banner, then the runner's own 'started' line: from then on no change is missed."""
        self.wait_for("Try it:")
        self.wait_for("runner started", stream="stderr")

    def still_running(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        assert self.still_running(), self.report()
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = WAIT) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running after {timeout}s\n{self.report()}")
        self._join_readers()
        return code

    def adopt_job(self, pid: int) -> None:
        """A job's process (its own group's leader): killed at close if a failed test left it."""
        self._job_groups.append(pid)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=WAIT)
        for pgid in self._job_groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        self._join_readers()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> MeowRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def copy_example(tmp_path: Path) -> Path:
    """The shipped example, without whatever an earlier run left in it."""
    dest = tmp_path / "linked"
    shutil.copytree(
        EXAMPLE,
        dest,
        ignore=shutil.ignore_patterns(".meow", "counted", "report", "*.txt", "__pycache__"),
    )
    (dest / "data" / "incoming").mkdir(parents=True, exist_ok=True)
    # A port from the OS, so a developer's own run of the example cannot collide.
    wf = dest / "workflow.yaml"
    wf.write_text(wf.read_text().replace("port: 7300", "port: 0"))
    return dest


def write_workflow(root: Path, text: str, name: str = "workflow.yaml") -> Path:
    (root / "data").mkdir(exist_ok=True)
    path = root / name
    path.write_text(text)
    return path


def job_metas(jobs_dir: Path) -> list[dict[str, Any]]:
    """Every job.json under ``jobs_dir`` (written by rename, so never half a file), oldest
    first, as `meow-async jobs` lists them."""
    metas = [json.loads(p.read_text()) for p in jobs_dir.glob("*/*/job.json")]
    return sorted(metas, key=lambda m: (m["created"], m["id"]))


def finished_jobs(jobs_dir: Path) -> list[dict[str, Any]]:
    return [m for m in job_metas(jobs_dir) if m["state"] in ("done", "failed")]


def line_of(text: str, needle: str) -> int:
    """1-based number of the only line of ``text`` that contains ``needle``."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(hits) == 1, (needle, hits)
    return hits[0]


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie (nobody may reap orphans in a container)."""
    if HAVE_PROC:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        return stat.rpartition(")")[2].split()[0] != "Z"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def read_pid(path: Path) -> int:
    wait_until_sync(lambda: re.fullmatch(r"\d+\n", _text(path)) is not None, SHORT)
    return int(path.read_text())


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


# -- --help and usage ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "mentions"),
    [
        ((), ["run", "validate", "jobs", "show", "status", "send", "--version", "examples:"]),
        (("run",), ["workflow", "--loop", "asyncio", "uvloop", "--max-jobs", "--quiet", "SIGTERM"]),
        (("validate",), ["workflow", "every problem"]),
        (("jobs",), ["--state", "failed", "--json", ".meow/jobs", "--input", "--since", "--tail"]),
        (("show",), ["job id", "--jobs", "--json", "--lines", "triggered"]),
        (("status",), ["--watch", "--json", "runner.http", "uptime", "Exits 0"]),
        (("send",), ["HOST:PORT", "--ack", "--framing", "--tls", "--timeout"]),
    ],
)
def test_help_exits_0_and_names_the_options(
    tmp_path: Path, command: tuple[str, ...], mentions: list[str]
) -> None:
    res = meow(*command, "--help", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"usage: meow-async {' '.join(command)}".rstrip() + " ")
    for word in mentions:
        assert word in res.stdout, word
    assert res.stderr == ""


def test_no_command_is_a_usage_error(tmp_path: Path) -> None:
    res = meow(cwd=tmp_path)
    assert res.returncode == 2
    assert "usage: meow-async" in res.stderr
    assert "COMMAND" in res.stderr
    assert "Traceback" not in res.stderr


def test_version(tmp_path: Path) -> None:
    from meow_async import __version__

    res = meow("--version", cwd=tmp_path)
    assert res.returncode == 0
    assert res.stdout.strip() == f"meow_async {__version__}"


# -- validate -----------------------------------------------------------------------------------


def test_validate_the_shipped_example(tmp_path: Path) -> None:
    res = meow("validate", EXAMPLE / "workflow.yaml", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == (
        f"{EXAMPLE / 'workflow.yaml'}: OK: 3 pattern(s), 2 recipe(s), 3 rule(s)"
    )


def test_validate_bad_yaml_names_the_line(tmp_path: Path) -> None:
    text = "runner:\n  base_dir: data\n   jobs_dir: [jobs\nrecipes: {}\n"
    write_workflow(tmp_path, text)
    res = meow("validate", "workflow.yaml", cwd=tmp_path)
    assert res.returncode == 1
    assert "workflow.yaml:3:12: not valid YAML" in res.stderr
    assert "Traceback" not in res.stderr
    assert res.stdout == ""


def test_validate_lists_every_problem_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "broken.py").write_text("print('unclosed'\n")
    (tmp_path / "recipes" / "count_words.py").write_text("print(input_file)\n")
    text = (
        "runner:\n"
        "  base_dir: data\n"
        "  jobs_dir: jobs\n"
        "  shutdown_timout: 3\n"  # unknown key, close to shutdown_timeout
        "recipes:\n"
        "  count_words:\n"
        "    file: recipes/count_words.py\n"
        "  gone:\n"
        "    file: recipes/missing.py\n"  # no such file
        "  broken:\n"
        "    file: recipes/broken.py\n"  # Python syntax error
        "patterns:\n"
        "  good:\n"
        "    glob: 'incoming/*.txt'\n"
        "    recipe: count_words\n"
        "  badglob:\n"
        "    glob: 'incoming/[abc'\n"  # unclosed [
        "    recipe: count_words\n"
        "  typo:\n"
        "    glob: '*.csv'\n"
        "    recipe: count_wrds\n"  # no such recipe
        "  badvar:\n"
        "    glob: '*.dat'\n"
        "    recipe: count_words\n"
        "    variable: 1st_file\n"  # not a variable name
        "  swept:\n"
        "    glob: '*.h5'\n"
        "    recipe: count_words\n"
        "    sweep:\n"
        "      n: {start: 0, stop: 10, jump: -1}\n"  # never reaches stop
    )
    write_workflow(tmp_path, text)
    res = meow("validate", "workflow.yaml", cwd=tmp_path)
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    assert res.stdout == ""  # no "OK"
    expected = [
        (
            line_of(text, "shutdown_timout"),
            "runner.shutdown_timout",
            "did you mean 'shutdown_timeout'?",
        ),
        (line_of(text, "missing.py"), "recipes.gone.file", "recipes/missing.py' does not exist"),
        (line_of(text, "broken.py"), "recipes.broken.file", "Python syntax error at line 1"),
        (line_of(text, "[abc"), "patterns.badglob.glob", "invalid glob 'incoming/[abc'"),
        (line_of(text, "count_wrds"), "patterns.typo.recipe", "no recipe named 'count_wrds'"),
        (line_of(text, "1st_file"), "patterns.badvar.variable", "invalid variable name '1st_file'"),
        # located at the value the model's error names, however deep
        (line_of(text, "jump: -1"), "patterns.swept.sweep.n.jump", "moves away from stop"),
    ]
    assert f"workflow.yaml: {len(expected)} problem(s)" in res.stderr
    problems = [line.strip() for line in res.stderr.splitlines() if line.startswith("  ")]
    assert len(problems) == len(expected), res.stderr
    for (line, where, message), problem in zip(expected, problems, strict=True):
        assert re.match(rf"workflow\.yaml:{line}:\d+: {re.escape(where)}: ", problem), problem
        assert message in problem, problem


def test_validate_suggests_the_recipe_meant(tmp_path: Path) -> None:
    write_workflow(
        tmp_path,
        RUNNER + "recipes:\n  count_words: {kind: bash, script: 'true'}\n"
        "patterns:\n  p: {glob: '*.txt', recipe: count_wrds}\n",
    )
    res = meow("validate", "workflow.yaml", cwd=tmp_path)
    assert res.returncode == 1
    assert (
        "workflow.yaml:5:30: patterns.p.recipe: no recipe named 'count_wrds' "
        "(did you mean 'count_words'?)" in res.stderr
    )


def test_validate_suggests_a_misspelt_trigger_key(tmp_path: Path) -> None:
    # With no trigger key the pattern's kind is unknown: the suggestion comes from every kind's
    # keys, not only a file pattern's.
    write_workflow(
        tmp_path,
        RUNNER + "recipes:\n  r: {kind: bash, script: 'true'}\n"
        "patterns:\n  tick: {everyy: 1s, recipe: r}\n",
    )
    res = meow("validate", "workflow.yaml", cwd=tmp_path)
    assert res.returncode == 1
    assert "patterns.tick.everyy: unknown setting (did you mean 'every'?)" in res.stderr


def test_validate_a_missing_workflow_file(tmp_path: Path) -> None:
    res = meow("validate", "nowhere.yaml", cwd=tmp_path)
    assert res.returncode == 1
    assert "nowhere.yaml" in res.stderr
    assert "does not exist" in res.stderr
    assert "Traceback" not in res.stderr


def test_validate_a_mapping_key_that_is_a_list(tmp_path: Path) -> None:
    """YAML allows `? [a, b]` keys; the loader must report it, not crash on hashing it."""
    write_workflow(
        tmp_path,
        RUNNER + "recipes:\n  r: {kind: bash, script: 'true'}\n"
        "patterns:\n  p: {glob: '*.txt', recipe: r}\n"
        "? [a, b]\n: 1\n",
    )
    res = meow("validate", "workflow.yaml", cwd=tmp_path)
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode == 1
    assert "workflow.yaml:6:" in res.stderr


def test_validate_rejects_a_shutdown_timeout_that_is_not_a_number(tmp_path: Path) -> None:
    """`.nan` is a float that is not below 0; `run` later crashes on it under uvloop."""
    write_workflow(
        tmp_path,
        "runner: {base_dir: data, jobs_dir: jobs, shutdown_timeout: .nan}\n"
        "recipes:\n  r: {kind: bash, script: 'true'}\n"
        "patterns:\n  p: {glob: '*.txt', recipe: r}\n",
    )
    res = meow("validate", "workflow.yaml", cwd=tmp_path)
    assert res.returncode == 1, res.stdout
    assert "workflow.yaml:1:60: runner.shutdown_timeout:" in res.stderr


# -- run: the example end to end ----------------------------------------------------------------


def test_run_the_example_then_jobs_and_show(tmp_path: Path) -> None:
    root = copy_example(tmp_path)
    jobs_dir = root / ".meow" / "jobs"
    report = root / "data" / "report" / "summary.txt"
    with MeowRun("workflow.yaml", cwd=root) as run:
        run.wait_ready()
        banner = run.stdout
        assert "running workflow.yaml" in banner
        assert f"watching  {root / 'data'}" in banner
        assert "incoming/*.txt -> python recipe count_words" in banner
        assert "Try it: echo 'hello world' > data/incoming/hello.txt" in banner

        (root / "data" / "incoming" / "hello.txt").write_text("hello world\n")
        wait_until_sync(lambda: "hello.txt" in _text(report), SHORT)
        wait_until_sync(lambda: len(finished_jobs(jobs_dir)) == 2)
        assert run.still_running(), run.report()
        run.signal(signal.SIGINT)
        assert run.wait_exit() == 0, run.report()
    assert "Traceback" not in run.stderr

    (line,) = report.read_text().splitlines()
    assert line.endswith('{"file": "hello.txt", "lines": 1, "words": 2, "bytes": 12}')
    assert json.loads((root / "data" / "counted" / "hello.json").read_text())["words"] == 2

    metas = job_metas(jobs_dir)
    assert [m["state"] for m in metas] == ["done", "done"]
    first = next(m for m in metas if m["rule"] == "incoming_text")

    res = meow("jobs", cwd=root)
    assert res.returncode == 0, res.stderr
    rows = res.stdout.splitlines()
    assert rows[0].split() == [
        "ID", "STATE", "RULE", "CREATED", "TOOK", "EXIT", "SWEEP", "TRIGGER"
    ]  # fmt: skip
    for m in metas:
        assert any(r.split()[:3] == [m["id"], "done", m["rule"]] for r in rows[1:-1]), res.stdout
    assert rows[-1] == "2 job(s): 2 done"

    # The jobs folder can also be named through the workflow file, from anywhere.
    res = meow("jobs", root / "workflow.yaml", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-1] == "2 job(s): 2 done"

    res = meow("show", first["id"][:-4], cwd=root)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert f"job       {first['id']}" in out
    assert "state     done  (exit code 0)" in out
    assert "rule      incoming_text  (pattern incoming_text, python recipe count_words)" in out
    assert f"event     created {root / 'data' / 'incoming' / 'hello.txt'}" in out
    assert "--- stdout.txt (last 20 lines) ---" in out
    assert out.splitlines()[-1] == "counted 2 words in hello.txt"

    res = meow("show", "--json", first["id"], cwd=root)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["parameters"]["result_file"] == str(
        root / "data" / "counted" / "hello.json"
    )

    res = meow("jobs", "--state", "failed", cwd=root)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"no failed jobs in {Path('.meow/jobs')}"

    res = meow("jobs", "--json", cwd=root)
    assert res.returncode == 0, res.stderr
    listed = [json.loads(line) for line in res.stdout.splitlines()]
    assert [m["id"] for m in listed] == [m["id"] for m in metas]
    assert {m["state"] for m in listed} == {"done"}


def test_show_and_jobs_say_what_is_wrong(tmp_path: Path) -> None:
    jobs_dir = tmp_path / "jobs"
    for job_id in ("20260101-000000.000-aaaa0001", "20260101-000000.000-aaaa0002"):
        (jobs_dir / job_id).mkdir(parents=True)
        (jobs_dir / job_id / "job.json").write_text(json.dumps({"id": job_id, "state": "done"}))

    res = meow("show", "--jobs", jobs_dir, "2026", cwd=tmp_path)
    assert res.returncode == 1
    assert (
        "'2026' matches 2 jobs (20260101-000000.000-aaaa0001, 20260101-000000.000-aaaa0002); "
        "give more of the id"
    ) in res.stderr

    res = meow("show", "--jobs", jobs_dir, "2027", cwd=tmp_path)
    assert res.returncode == 1
    assert f"no job '2027' in {jobs_dir}" in res.stderr

    res = meow("jobs", tmp_path / "nothing", cwd=tmp_path)
    assert res.returncode == 1
    assert f"no jobs folder at {tmp_path / 'nothing'}" in res.stderr

    for res in (
        meow("show", "--jobs", jobs_dir, "2026", cwd=tmp_path),
        meow("jobs", tmp_path / "nothing", cwd=tmp_path),
    ):
        assert "Traceback" not in res.stderr


def test_a_file_dropped_as_soon_as_the_banner_shows_is_not_missed(tmp_path: Path) -> None:
    """The banner says "Try it: echo ... > data/incoming/hello.txt": doing so must work."""
    root = copy_example(tmp_path)
    dropped = threading.Event()

    def drop_on_banner(run: MeowRun, line: str) -> None:
        # Once: a second write is a second complete version of the file, and a second job.
        if line.startswith("Try it: echo"):
            (root / "data" / "incoming" / "hello.txt").write_text("hello world\n")
            dropped.set()

    with MeowRun("workflow.yaml", cwd=root, on_stdout=drop_on_banner) as run:
        wait_until_sync(dropped.is_set)
        run.wait_for("runner started", stream="stderr")
        wait_until_sync(lambda: len(finished_jobs(root / ".meow" / "jobs")) == 2, SHORT)
        run.signal(signal.SIGINT)
        assert run.wait_exit() == 0, run.report()


def test_ctrl_c_as_soon_as_the_banner_shows_stops_cleanly(tmp_path: Path) -> None:
    root = copy_example(tmp_path)

    def interrupt_on_banner(run: MeowRun, line: str) -> None:
        if line.startswith("Try it:"):
            run.proc.send_signal(signal.SIGINT)

    with MeowRun("workflow.yaml", cwd=root, on_stdout=interrupt_on_banner) as run:
        code = run.wait_exit()
    assert "Traceback" not in run.stderr, run.report()
    assert "KeyboardInterrupt" not in run.stderr, run.report()
    assert code in (0, 130), run.report()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_run_on_each_event_loop(tmp_path: Path, loop: str) -> None:
    root = copy_example(tmp_path)
    report = root / "data" / "report" / "summary.txt"
    with MeowRun("--loop", loop, "workflow.yaml", cwd=root) as run:
        run.wait_ready()
        assert f"(loop: {loop})" in run.stdout
        if HAVE_PROC:  # the loop asked for is the one in use
            maps = Path(f"/proc/{run.proc.pid}/maps").read_text()
            assert ("uvloop" in maps) == (loop == "uvloop")
        (root / "data" / "incoming" / "a.txt").write_text("one two three\n")
        wait_until_sync(lambda: '"words": 3' in _text(report), SHORT)
        run.signal(signal.SIGINT)
        assert run.wait_exit() == 0, run.report()
    assert [m["state"] for m in job_metas(root / ".meow" / "jobs")] == ["done", "done"]


# -- run: failing jobs --------------------------------------------------------------------------


FAILING = RUNNER + (
    "recipes:\n"
    "  check:\n"
    "    kind: python\n"
    "    script: |\n"
    "      from pathlib import Path\n"
    "      name = Path(input_file).name\n"
    "      if 'boom' in Path(input_file).read_text():\n"
    "          raise ValueError(f'cannot process {name}')\n"
    "      print(f'checked {name}')\n"
    "patterns:\n"
    "  inbox: {glob: 'in/*.txt', recipe: check}\n"
)


def test_a_failing_recipe_is_recorded_and_the_runner_goes_on(tmp_path: Path) -> None:
    write_workflow(tmp_path, FAILING)
    (tmp_path / "data" / "in").mkdir()
    jobs_dir = tmp_path / "jobs"
    with MeowRun("workflow.yaml", cwd=tmp_path) as run:
        run.wait_ready()
        (tmp_path / "data" / "in" / "bad.txt").write_text("boom\n")
        wait_until_sync(lambda: len(finished_jobs(jobs_dir)) == 1, SHORT)
        (failed,) = job_metas(jobs_dir)
        assert failed["state"] == "failed"
        assert failed["exit_code"] == 1
        assert failed["error"] == "exit code 1: ValueError: cannot process bad.txt"
        run.wait_for(f"job {failed['id']} failed", stream="stderr")
        assert run.still_running(), run.report()

        (tmp_path / "data" / "in" / "good.txt").write_text("fine\n")
        wait_until_sync(lambda: len(finished_jobs(jobs_dir)) == 2, SHORT)
        run.signal(signal.SIGINT)
        assert run.wait_exit() == 0, run.report()  # failed jobs are data, not a failed run

    good = next(m for m in job_metas(jobs_dir) if m["id"] != failed["id"])
    assert good["state"] == "done"

    res = meow("show", failed["id"], "--jobs", "jobs", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "state     failed  (exit code 1)" in res.stdout
    assert "error     exit code 1: ValueError: cannot process bad.txt" in res.stdout
    assert "--- stderr.txt (last 20 lines) ---" in res.stdout
    assert res.stdout.splitlines()[-1] == "ValueError: cannot process bad.txt"

    res = meow("jobs", "jobs", "--state", "failed", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert failed["id"] in res.stdout
    assert good["id"] not in res.stdout
    assert res.stdout.splitlines()[-1] == "1 job(s): 1 failed"

    res = meow("jobs", "workflow.yaml", cwd=tmp_path)
    assert res.stdout.splitlines()[-1] == "2 job(s): 1 done, 1 failed"


# -- run: stopping ------------------------------------------------------------------------------


def slow_workflow(root: Path, script: str, runner: str = RUNNER) -> Path:
    """One bash rule on data/*.txt; the script gets `$MEOW_JOB_DIR`."""
    body = "".join(f"      {line}\n" for line in script.splitlines())
    return write_workflow(
        root,
        runner + "recipes:\n  slow:\n    kind: bash\n    script: |\n" + body + "patterns:\n"
        "  p: {glob: '*.txt', recipe: slow}\n",
    )


def start_one_job(run: MeowRun, root: Path, marker: str) -> Path:
    """Trigger the rule once; return the job's folder once its script wrote ``marker``."""
    run.wait_ready()
    (root / "data" / "go.txt").write_text("go\n")
    wait_until_sync(lambda: any((root / "jobs").glob(f"*/*/{marker}")), SHORT)
    (job_dir,) = (p.parent for p in (root / "jobs").glob(f"*/*/{marker}"))
    assert json.loads((job_dir / "job.json").read_text())["state"] == "queued"  # until it ends
    assert (job_dir / "process.log").read_text().splitlines()[1].startswith("pid ")  # started
    return job_dir


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_one_signal_waits_for_the_running_job(tmp_path: Path, sig: signal.Signals) -> None:
    slow_workflow(tmp_path, 'touch "$MEOW_JOB_DIR/started"\nsleep 2\necho finished')
    with MeowRun("workflow.yaml", cwd=tmp_path) as run:
        job_dir = start_one_job(run, tmp_path, "started")
        run.signal(sig)
        run.wait_for(f"{sig.name}: stopping gracefully", stream="stderr")
        assert run.wait_exit() == 0, run.report()
    meta = json.loads((job_dir / "job.json").read_text())
    assert meta["state"] == "done", run.report()
    assert meta["exit_code"] == 0
    assert (job_dir / "stdout.txt").read_text() == "finished\n"
    assert "1 job(s): 1 done, 0 failed, 0 skipped, 0 left queued" in run.stderr
    assert "Traceback" not in run.stderr


def test_sighup_reloads_and_stops_nothing(tmp_path: Path) -> None:
    """SIGHUP to the runner's whole process group, as a closed terminal sends it: the runner
    reads its workflow file again (unchanged here), its fork server ignores it (a warm Python
    job runs after it); never a silent death (before: the runner died of it without a
    line)."""
    write_workflow(
        tmp_path,
        RUNNER + "recipes:\n  r: {kind: python, script: 'print(open(input_file).read())'}\n"
        "patterns:\n  p: {glob: '*.txt', recipe: r}\n",
    )
    with MeowRun("workflow.yaml", cwd=tmp_path, preexec_fn=os.setsid) as run:
        run.wait_ready()
        (tmp_path / "data" / "before.txt").write_text("before")
        wait_until_sync(lambda: len(finished_jobs(tmp_path / "jobs")) == 1, SHORT)
        os.killpg(run.proc.pid, signal.SIGHUP)
        run.wait_for("reload (SIGHUP): unchanged", stream="stderr")
        assert run.still_running(), run.report()
        (tmp_path / "data" / "after.txt").write_text("after")
        wait_until_sync(lambda: len(finished_jobs(tmp_path / "jobs")) == 2, SHORT)
        run.signal(signal.SIGINT)
        assert run.wait_exit() == 0, run.report()
    assert [j["state"] for j in finished_jobs(tmp_path / "jobs")] == ["done", "done"]
    assert "Traceback" not in run.stderr


#: A job that would take a minute; it writes its own pid and its child's (by rename: whole).
STUCK = """\
cd "$MEOW_JOB_DIR"
echo $$ > .pid && mv .pid pid
sleep 60 &
echo $! > .sleep && mv .sleep sleep
wait
echo finished
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_second_signal_stops_running_jobs_at_once(tmp_path: Path, sig: signal.Signals) -> None:
    slow_workflow(tmp_path, STUCK)
    with MeowRun("workflow.yaml", cwd=tmp_path) as run:
        job_dir = start_one_job(run, tmp_path, "sleep")
        pids = [read_pid(job_dir / "pid"), read_pid(job_dir / "sleep")]
        run.adopt_job(pids[0])
        run.signal(sig)
        run.wait_for(f"{sig.name}: stopping gracefully", stream="stderr")
        assert run.still_running(), run.report()  # waiting for the job, up to 20 s
        t0 = time.monotonic()
        run.signal(sig)
        code = run.wait_exit(SHORT)
        took = time.monotonic() - t0
    assert took < 5, run.report()
    assert f"{sig.name} again: stopping running jobs now" in run.stderr
    assert "Traceback" not in run.stderr, run.report()
    assert code == 0, run.report()
    meta = json.loads((job_dir / "job.json").read_text())
    assert meta["state"] == "failed"
    assert "stop" in meta["error"], meta["error"]
    assert meta["finished"] is not None
    assert not (job_dir / "stdout.txt").exists()  # never got to "finished": empty, removed
    # The script and what it started are gone, not left running as orphans.
    wait_until_sync(lambda: not any(alive(pid) for pid in pids), SHORT)

    res = meow("show", job_dir.name, "--jobs", "jobs", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "state     failed" in res.stdout
    assert f"error     {meta['error']}" in res.stdout


def test_a_graceful_stop_gives_up_after_shutdown_timeout(tmp_path: Path) -> None:
    runner = "runner: {base_dir: data, jobs_dir: jobs, shutdown_timeout: 0.5, kill_timeout: 1}\n"
    slow_workflow(tmp_path, STUCK, runner=runner)
    with MeowRun("workflow.yaml", cwd=tmp_path) as run:
        job_dir = start_one_job(run, tmp_path, "sleep")
        run.adopt_job(read_pid(job_dir / "pid"))
        t0 = time.monotonic()
        run.signal(signal.SIGINT)
        code = run.wait_exit(SHORT)
        took = time.monotonic() - t0
    assert code == 0, run.report()
    assert took < 5, run.report()
    assert "stopping 1 running job(s)" in run.stderr
    meta = json.loads((job_dir / "job.json").read_text())
    assert meta["state"] == "failed"
    assert "stop" in meta["error"]


def test_a_stop_leaves_jobs_that_had_not_started_queued(tmp_path: Path) -> None:
    """--max-jobs 1: the second job waits; a stop fails the running one, keeps the other."""
    runner = "runner: {base_dir: data, jobs_dir: jobs, shutdown_timeout: 0.5, kill_timeout: 1}\n"
    slow_workflow(tmp_path, STUCK, runner=runner)
    jobs_dir = tmp_path / "jobs"
    with MeowRun("--max-jobs", "1", "workflow.yaml", cwd=tmp_path) as run:
        run.wait_ready()
        run.wait_for("up to 1 at once", stream="stderr")
        (tmp_path / "data" / "one.txt").write_text("1\n")
        wait_until_sync(lambda: any(jobs_dir.glob("*/*/sleep")), SHORT)
        run.adopt_job(read_pid(next(jobs_dir.glob("*/*/pid"))))
        (tmp_path / "data" / "two.txt").write_text("2\n")
        wait_until_sync(lambda: len(job_metas(jobs_dir)) == 2, SHORT)
        run.signal(signal.SIGINT)
        assert run.wait_exit(SHORT) == 0, run.report()
    assert "2 job(s): 0 done, 1 failed, 0 skipped, 1 left queued" in run.stderr, run.report()
    by_file = {Path(m["event"]["path"]).name: m for m in job_metas(jobs_dir)}
    assert by_file["one.txt"]["state"] == "failed"
    assert by_file["two.txt"]["state"] == "queued"
    assert by_file["two.txt"]["started"] is None

    res = meow("jobs", "workflow.yaml", "--state", "queued", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert by_file["two.txt"]["id"] in res.stdout
    assert res.stdout.splitlines()[-1] == "1 job(s): 1 queued"


# -- run: what stops it from starting -----------------------------------------------------------


RULES = "recipes:\n  r: {kind: bash, script: 'true'}\npatterns:\n  p: {glob: '*.txt', recipe: r}\n"


def test_run_makes_a_missing_watched_folder_of_its_project(tmp_path: Path) -> None:
    """The README's workflow: `data/` and `data/incoming/` do not exist yet. `validate` says
    `run` will make them, `run` makes them (and says so), and a file dropped in runs a job."""
    rules = RULES.replace("'*.txt'", "'incoming/*.txt'")
    (tmp_path / "workflow.yaml").write_text("runner: {base_dir: data, jobs_dir: jobs}\n" + rules)
    res = meow("validate", "workflow.yaml", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    data = tmp_path / "data"
    assert f"`run` will make the missing folder(s) {data}, {data / 'incoming'}\n" in res.stderr
    assert not data.exists()
    with MeowRun("workflow.yaml", cwd=tmp_path) as run:
        run.wait_ready()
        assert "made the folder data (the workflow watches it)" in run.stderr
        assert "made the folder data/incoming (the workflow watches it)" in run.stderr
        (tmp_path / "data" / "incoming" / "a.txt").write_text("x")
        wait_until_sync(lambda: len(finished_jobs(tmp_path / "jobs")) == 1)
        run.signal(signal.SIGINT)
        assert run.wait_exit() == 0, run.report()


def test_run_without_a_watched_folder_outside_its_project(tmp_path: Path) -> None:
    """A watched folder elsewhere (an unmounted share?) is not made: `run` stops, and
    `validate` says it will."""
    outside = tmp_path / "mnt" / "nodata"
    project = tmp_path / "project"
    project.mkdir()
    write_workflow(project, f"runner: {{base_dir: {outside}, jobs_dir: jobs}}\n" + RULES)
    res = meow("validate", "workflow.yaml", cwd=project)
    assert res.returncode == 0, res.stderr
    assert f"the watched folder {outside} does not exist; `run` stops until it does" in res.stderr
    with MeowRun("workflow.yaml", cwd=project) as run:
        code = run.wait_exit()
    assert code == 1, run.report()
    assert "meow-async: error:" in run.stderr
    assert f"the watched folder {outside} does not exist" in run.stderr
    assert "Traceback" not in run.stderr, run.report()
    assert not outside.exists()


def test_run_with_a_jobs_folder_that_cannot_be_made(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("a file, not a folder\n")
    write_workflow(tmp_path, "runner: {base_dir: data, jobs_dir: afile/jobs}\n" + RULES)
    with MeowRun("workflow.yaml", cwd=tmp_path) as run:
        code = run.wait_exit()
    assert code == 1, run.report()
    assert f"cannot write job directories in {tmp_path / 'afile' / 'jobs'}" in run.stderr
    assert "Traceback" not in run.stderr, run.report()


def test_run_a_missing_or_broken_workflow(tmp_path: Path) -> None:
    with MeowRun("nowhere.yaml", cwd=tmp_path) as run:
        assert run.wait_exit() == 1
    assert "nowhere.yaml" in run.stderr
    assert "does not exist" in run.stderr
    assert run.stdout == ""  # no banner for a workflow that never runs

    write_workflow(tmp_path, RUNNER + RULES.replace("recipe: r}", "recipe: q}"))
    with MeowRun("workflow.yaml", cwd=tmp_path) as run:
        assert run.wait_exit() == 1
    assert "workflow.yaml:5:30: patterns.p.recipe: no recipe named 'q'" in run.stderr
    assert "Traceback" not in run.stderr


def test_run_rejects_a_bad_max_jobs(tmp_path: Path) -> None:
    write_workflow(tmp_path, RUNNER + RULES)
    with MeowRun("--max-jobs", "0", "workflow.yaml", cwd=tmp_path) as run:
        assert run.wait_exit() == 1
    assert "--max-jobs must be at least 1, got 0" in run.stderr
    assert "Traceback" not in run.stderr


# -- send: data over the network ----------------------------------------------------------------


def test_send_to_the_example_runs_the_chain(tmp_path: Path) -> None:
    root = copy_example(tmp_path)
    report = root / "data" / "report" / "summary.txt"
    with MeowRun("workflow.yaml", cwd=root) as run:
        run.wait_ready()
        match = re.search(r"tcp 127\.0\.0\.1:(\d+)", run.stdout)
        assert match, run.report()
        # The hint names the program as it was started (here: python -m meow_async).
        assert f"-m meow_async send --ack 127.0.0.1:{match[1]} -" in run.stdout
        (tmp_path / "msg.txt").write_text("three little words")
        sent = meow("send", "--ack", f"127.0.0.1:{match[1]}", tmp_path / "msg.txt", cwd=root)
        assert sent.returncode == 0, sent.stderr
        msg_id = sent.stdout.strip()
        wait_until_sync(lambda: report.is_file() and msg_id in report.read_text())
        run.signal(signal.SIGINT)
        assert run.wait_exit() == 0, run.report()
    assert '"words": 3' in report.read_text()


def test_send_says_what_is_wrong(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        (tmp_path / "m").write_text("x")
        res = meow("send", f"127.0.0.1:{port}", "m", cwd=tmp_path)
    assert res.returncode == 1
    assert f"cannot connect to 127.0.0.1:{port}" in res.stderr
    assert "Traceback" not in res.stderr
    for bad in ("localhost", "127.0.0.1:http", "127.0.0.1:70000", ":80"):
        res = meow("send", bad, "-", cwd=tmp_path)
        assert res.returncode == 1, bad
        assert "expected HOST:PORT" in res.stderr
    res = meow("send", "127.0.0.1:9", tmp_path / "nope.bin", cwd=tmp_path)
    assert res.returncode == 1
    assert "no such file" in res.stderr


def test_validate_warns_about_a_template_word_that_is_no_keyword(tmp_path: Path) -> None:
    write_workflow(
        tmp_path,
        RUNNER + "recipes:\n  r: {kind: bash, script: 'true'}\n"
        "patterns:\n  p: {glob: '*.txt', recipe: r, outputs: {out: '{BASE}/{PREFX}.json'}}\n",
    )
    res = meow("validate", "workflow.yaml", cwd=tmp_path)
    assert res.returncode == 0
    assert (
        "workflow.yaml:5:48: patterns.p.outputs.out: {PREFX} is not a keyword (did you mean "
        '{PREFIX}?); it is passed on as written (value: "{BASE}/{PREFX}.json")' in res.stderr
    )


def test_an_unquoted_glob_gets_a_hint(tmp_path: Path) -> None:
    write_workflow(
        tmp_path,
        RUNNER + "recipes:\n  r: {kind: bash, script: 'true'}\n"
        "patterns:\n  p:\n    glob: *.txt\n    recipe: r\n",
    )
    res = meow("validate", "workflow.yaml", cwd=tmp_path)
    assert res.returncode == 1
    assert 'must be quoted, e.g. glob: "*.txt"' in res.stderr
