"""Reload through the command line (issue 24): `meow-async run` follows its workflow file as
editors and `sed -i` write it, reloads on SIGHUP and `meow-async reload`, and refuses a broken
edit while the old rules keep working. One runner goes through every kind of edit (about 5 s
here: each `meow-async` command is a new interpreter)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

from .conftest import PYTHON, wait_until_sync
from .test_cli import SHORT, MeowRun, job_metas, meow

#: The runner's loop: each of CI's two runs of the suite reloads on its own loop.
LOOP = "uvloop" if os.environ.get("MEOW_TEST_LOOP") == "uvloop" else "asyncio"

HEAD = (
    "runner: {base_dir: data, jobs_dir: jobs, shutdown_timeout: 20, kill_timeout: 1}\n"
    "recipes:\n"
    "  r:\n"
    "    kind: bash\n"
    "    script: echo VERSION\n"
    "patterns:\n"
    "  a: {glob: 'in/*.a', recipe: r}\n"
)
B = "  b: {glob: 'in/*.b', recipe: r}\n"


def _jobs_of(root: Path, name: str) -> list[dict[str, object]]:
    return [m for m in job_metas(root / "jobs") if Path(str(m["event"]["path"])).name == name]


def _done(root: Path, name: str) -> dict[str, object]:
    def ended() -> bool:
        return any(m["state"] == "done" for m in _jobs_of(root, name))

    wait_until_sync(ended, SHORT)
    (meta,) = _jobs_of(root, name)
    return meta


def _drop(root: Path, name: str) -> None:
    (root / "data" / "in" / name).write_text("x\n")


def _stdout(meta: dict[str, object]) -> str:
    return (Path(str(meta["dir"])) / "stdout.txt").read_text()


def test_reload_follows_editors_sed_and_sighup_and_refuses_broken_edits(tmp_path: Path) -> None:
    root = tmp_path
    (root / "data" / "in").mkdir(parents=True)
    wf = root / "workflow.yaml"
    wf.write_text(HEAD.replace("VERSION", "v1"))
    with MeowRun("--loop", LOOP, "workflow.yaml", cwd=root) as run:
        run.wait_ready()
        _drop(root, "1.a")
        first = _done(root, "1.a")
        assert _stdout(first) == "v1\n"

        # An editor's save: a temporary file renamed into place. A new glob takes effect.
        tmp = root / ".workflow.yaml.swp"
        tmp.write_text(HEAD.replace("VERSION", "v1") + B)
        os.replace(tmp, wf)
        run.wait_for("+1 pattern, +1 rule", stream="stderr")
        _drop(root, "2.b")
        assert _done(root, "2.b")["rule"] == "b"

        # In place: truncated, then written. A changed recipe is used by new jobs only.
        with open(wf, "r+") as f:
            f.truncate(0)
            f.write(HEAD.replace("VERSION", "v2") + B)
        run.wait_for("~1 recipe", stream="stderr")
        _drop(root, "3.a")
        third = _done(root, "3.a")
        assert _stdout(third) == "v2\n"
        assert _stdout(first) == "v1\n"
        assert third["recipe_hash"] != first["recipe_hash"]
        assert third["workflow_version"] != first["workflow_version"]

        # sed -i (a new file renamed over the old): a removed rule stops.
        subprocess.run(["sed", "-i", "/in[/][*][.]b/d", str(wf)], check=True)
        run.wait_for("-1 pattern, -1 rule", stream="stderr")
        _drop(root, "4.b")
        _drop(root, "5.a")
        _done(root, "5.a")
        assert _jobs_of(root, "4.b") == []

        # Broken edits are refused, with the problems in the log and in status; the old
        # rules keep working.
        good = wf.read_text()
        tmp.write_text(good + "  c: {glob: 'in/*.c', recipe: r\n")
        os.replace(tmp, wf)
        run.wait_for("reload refused", stream="stderr")
        status = meow("status", "jobs", cwd=root)
        assert "reload refused: 1 problem(s)" in status.stdout, status.stdout
        assert "not valid YAML" in status.stdout
        tmp.write_text(good.replace("glob: 'in/*.a'", "globb: 'in/*.a'"))
        os.replace(tmp, wf)
        wait_until_sync(lambda: "did you mean 'glob'" in run.stderr, SHORT)
        # Given the broken file, commands that only read show its runner's jobs folder (the
        # file's runner.jobs_dir, read leniently) rather than stop at the problems.
        status = meow("status", "workflow.yaml", cwd=root)
        assert "reload refused: 2 problem(s)" in status.stdout, (status.stdout, status.stderr)
        assert "did you mean 'glob'" in status.stdout
        assert "2 problem(s)" in status.stderr
        assert "showing the jobs folder jobs" in status.stderr
        listed = meow("jobs", "workflow.yaml", "--rule", "a", cwd=root)
        assert listed.returncode == 0, listed.stderr
        assert str(first["id"]) in listed.stdout
        assert meow("validate", "workflow.yaml", cwd=root).returncode == 1
        tmp.write_text(good.replace("base_dir: data", "base_dir: elsewhere"))
        os.replace(tmp, wf)
        wait_until_sync(lambda: "restart to change runner.base_dir" in run.stderr, SHORT)
        _drop(root, "6.a")
        assert _stdout(_done(root, "6.a")) == "v2\n"

        # Put right: the runner runs that version already; status shows no refusal.
        tmp.write_text(good)
        os.replace(tmp, wf)
        run.wait_for("the file is the running version again", stream="stderr")

        # A change the folder's watch cannot see (written through another link to the
        # file, as from another machine): SIGHUP applies it.
        other = root / "elsewhere"
        other.mkdir()
        os.link(wf, other / "wf.yaml")
        with open(other / "wf.yaml", "r+") as f:
            f.seek(0, os.SEEK_END)
            f.write("  c: {glob: 'in/*.c', recipe: r}\n")
        run.signal(signal.SIGHUP)
        run.wait_for("reload (SIGHUP)", stream="stderr")
        assert "+1 pattern, +1 rule" in run.stderr.split("reload (SIGHUP)")[1]
        _drop(root, "7.c")
        assert _done(root, "7.c")["rule"] == "c"

        # meow-async reload: without runner.http, by SIGHUP, waiting for the runner's word.
        asked = meow("reload", "workflow.yaml", cwd=root)
        assert asked.returncode == 0, asked.stderr
        assert "reload: unchanged" in asked.stdout

        run.signal(signal.SIGINT)
        assert run.wait_exit() == 0, run.report()


def test_a_port_0_pattern_added_by_a_reload_is_found_by_status_and_send(tmp_path: Path) -> None:
    """The port the OS gave a listener a reload opened reaches `.meow-live.json`: `status`
    and `send --ack WORKFLOW` find it as they find one opened at the start."""
    root = tmp_path
    (root / "data" / "in").mkdir(parents=True)
    wf = root / "workflow.yaml"
    wf.write_text(HEAD.replace("VERSION", "v1"))
    with MeowRun("--loop", LOOP, "workflow.yaml", cwd=root) as run:
        run.wait_ready()
        tmp = root / ".workflow.yaml.swp"
        tmp.write_text(wf.read_text() + "  t: {port: 0, ack: true, recipe: r}\n")
        os.replace(tmp, wf)
        run.wait_for("+1 pattern, +1 rule", stream="stderr")
        listening = re.compile(r"t +tcp 127\.0\.0\.1:([1-9][0-9]*)")

        def shown() -> bool:
            return bool(listening.search(meow("status", "workflow.yaml", cwd=root).stdout))

        wait_until_sync(shown, SHORT)
        sent = subprocess.run(
            [PYTHON, "-m", "meow_async", "send", "--ack", "workflow.yaml", "-"],
            cwd=root,
            input="hello\n",
            capture_output=True,
            text=True,
            timeout=SHORT,
            check=False,
        )
        assert sent.returncode == 0, sent.stderr

        def made() -> bool:
            return any(m["rule"] == "t" and m["state"] == "done" for m in job_metas(root / "jobs"))

        wait_until_sync(made, SHORT)
        run.signal(signal.SIGINT)
        assert run.wait_exit() == 0, run.report()
