"""File names as the file system allows them, and names a user means to leave out.

A name that is not valid UTF-8 (made here with a bytes path) reaches every kind of recipe as
its own bytes; an event whose job cannot be made is refused once, and later files trigger as
ever. Hidden names (a leading dot) are not matched by ``*``, ``?`` or ``**``, so the temporary
files of tools that write under a hidden name and rename into place (rsync) make no job.

Real runners on real folders; every wait is on a condition with a timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from meow_async import FilePattern, PythonRecipe, Recipe, read_meta
from meow_async.model.globs import compile_glob
from meow_async.model.index import JobIndex, job_folders
from meow_async.runner.bookkeeping import MARGIN

from .conftest import WAIT, Workspace, poll_until, py_recipe, sh_recipe

#: Not UTF-8: two bytes no UTF-8 sequence starts with, and a space.
RAW_NAME = b"bad\xff\xfe name.txt"

#: Writes the name as the recipe got it, as bytes: the parameter and $MEOW_EVENT_PATH.
PY_BYTES = (
    "import os\n"
    "open('name.bin', 'wb').write(os.fsencode(input_file))\n"
    "open('env.bin', 'wb').write(os.environb[b'MEOW_EVENT_PATH'])\n"
    "open('exists', 'w').write(str(os.path.exists(input_file)))\n"
)
SH_BYTES = (
    'printf "%s" "$input_file" > name.bin\n'
    'printf "%s" "$MEOW_EVENT_PATH" > env.bin\n'
    '[ -e "$input_file" ] && printf True > exists\n'
)


async def until(runner: Any, n: int) -> None:
    async with asyncio.timeout(WAIT):
        await runner.wait_for(lambda s: s.finished >= n)


def by_rule(ws: Workspace, name: bytes) -> dict[str, dict[str, Any]]:
    """The jobs the file ``in/NAME`` triggered, by rule."""
    path = os.fsdecode(bytes(ws.base) + b"/in/" + name)
    return {j["rule"]: j for j in ws.jobs_list() if j["event"]["path"] == path}


async def test_a_name_that_is_not_utf8_reaches_each_recipe_as_its_bytes(ws: Workspace) -> None:
    recipes: list[Recipe] = [
        py_recipe("warm", PY_BYTES),
        py_recipe("spawned", PY_BYTES, fork=False),
        sh_recipe("sh", SH_BYTES),
    ]
    patterns = [FilePattern(name=r.name, glob="in/*", recipe=r.name) for r in recipes]
    (ws.base / "in").mkdir()
    raw = bytes(ws.base) + b"/in/" + RAW_NAME
    async with ws.runner(patterns, recipes) as r:
        with open(raw, "wb") as f:
            f.write(b"x")
        await until(r, 3)
        ws.write("in/later.txt")  # what comes after triggers as ever
        await until(r, 6)
    assert r.stats.handler_errors == 0
    jobs = by_rule(ws, RAW_NAME)
    assert sorted(jobs) == ["sh", "spawned", "warm"]
    for rule, meta in jobs.items():
        job_dir = Path(meta["dir"])
        assert meta["state"] == "done", (rule, meta["error"])
        assert (job_dir / "name.bin").read_bytes() == raw, rule
        assert (job_dir / "env.bin").read_bytes() == raw, rule
        assert (job_dir / "exists").read_text() == "True", rule
        # JSON has no bytes: the name is a str with surrogate escapes, as os.listdir gives it,
        # which Python's json reads back to the same str, and os.fsencode to the bytes.
        params = json.loads((job_dir / "params.json").read_text())
        assert os.fsencode(params["input_file"]) == raw
        assert "\\udcff\\udcfe" in (job_dir / "params.json").read_text()
        assert os.fsencode(read_meta(job_dir)["event"]["path"]) == raw
    assert sorted(by_rule(ws, b"later.txt")) == ["sh", "spawned", "warm"]

    # Nothing is left for a restart to try again: the watermark moved past the file.
    async with ws.runner(patterns, recipes) as again:
        pass
    assert again.stats.jobs == again.stats.handler_errors == 0


async def test_the_job_index_lists_and_finds_a_name_that_is_not_utf8(ws: Workspace) -> None:
    """The index (SQLite: UTF-8 text only) holds such a name with its stray bytes as ``\\xNN``:
    before, binding it failed, so the event's jobs were never made (the index is written
    before the folders) and the rule was stuck at that file. ``jobs --input`` with the name's
    own bytes finds the job, and ``reindex`` rebuilds from folders that hold one."""
    patterns = [FilePattern(name="p", glob="in/*", recipe="sh")]
    recipes: list[Recipe] = [sh_recipe("sh", "true\n")]
    (ws.base / "in").mkdir()
    raw = bytes(ws.base) + b"/in/" + RAW_NAME
    async with ws.runner(patterns, recipes) as r:
        with open(raw, "wb") as f:
            f.write(b"x")
        await until(r, 1)
    assert r.stats.handler_errors == 0
    (job,) = ws.jobs_list()
    assert job["state"] == "done", job["error"]

    def cli(*args: str | bytes) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "meow_async", *args],
            capture_output=True,
            timeout=WAIT,
            check=False,
        )

    for _ in range(2):  # as the runner wrote it, then as reindex made it again from the folders
        listed = cli("jobs", str(ws.jobs), "--input", raw)
        assert listed.returncode == 0, listed.stderr
        assert job["id"].encode() in listed.stdout
        assert b"in/bad\\xff\\xfe name.txt" in listed.stdout
        made = cli("reindex", str(ws.jobs))
        assert made.returncode == 0, made.stderr


@dataclass(frozen=True, slots=True, kw_only=True)
class _Fussy(PythonRecipe):
    """A recipe that cannot render a script for one input (a stand-in for any input that
    can never become a job); every other input runs."""

    def render(self, params: Mapping[str, Any]) -> str:
        if str(params["input_file"]).endswith("refused.txt"):
            raise ValueError("this input can never be rendered")
        return PythonRecipe.render(self, params)


async def test_an_event_whose_job_cannot_be_made_is_refused_once(
    ws: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="meow_async")
    recipe = _Fussy(name="r", script="print(input_file)\n")
    patterns = [FilePattern(name="p", glob="*.txt", recipe="r")]
    async with ws.runner(patterns, [recipe]) as r:
        refused = ws.write("refused.txt")
        ws.write("after.txt")
        await until(r, 1)
        async with asyncio.timeout(WAIT):
            await r.wait_for(lambda s: s.handler_errors == 1)
        # A graceful stop saves the watermark a margin before now: stop once that is past
        # the refused file, which a held-back watermark never would be.
        await poll_until(lambda: time.time() > refused.stat().st_ctime + MARGIN + 0.1)
    (job,) = ws.jobs_list()
    assert Path(job["event"]["path"]).name == "after.txt"
    assert job["state"] == "done"
    # No half-made folder in any day folder, and no index row for the refused job.
    assert [Path(path).name for _, path in job_folders(ws.jobs)] == [job["id"]]
    index = JobIndex.read(ws.jobs)
    assert index is not None
    try:
        assert index.count() == 1
    finally:
        index.close()
    lines = [rec.getMessage() for rec in caplog.records if "refused" in rec.getMessage()]
    assert lines == [
        "created refused.txt (rule p): refused, its job cannot be made (not tried again): "
        "ValueError: this input can never be rendered"
    ]
    # The watermark is past the refused file: the next start does not try it again.
    state = json.loads((ws.jobs / ".meow-runner.json").read_text())
    assert state["watermark"] > refused.stat().st_ctime
    caplog.clear()
    async with ws.runner(patterns, [recipe]) as again:
        pass
    assert again.stats.events == again.stats.handler_errors == 0
    assert not [rec for rec in caplog.records if "refused" in rec.getMessage()]


# -- hidden names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("glob", "shown", "hidden"),
    [
        ("in/**", ["in/a", "in/b/c.txt"], ["in/.a.txt.Xy12Ab", "in/.~tmp~/a", "in/b/.c"]),
        ("**/*.txt", ["a.txt", "x/y/a.txt"], [".a.txt", ".x/a.txt", "x/.y/a.txt"]),
        ("*", ["a", "a.b"], [".a", ".a.b"]),
        ("?x", ["ax"], [".x"]),
        ("[.a]x", ["ax"], [".x"]),
        (".*", [".a", ".a.txt.Xy12Ab"], ["a"]),
        ("in/.cache/**", ["in/.cache/a", "in/.cache/b/c"], ["in/.cache/.d", "in/a"]),
        ("**/.*", [".a", "x/.a"], ["x/a", ".x/.a"]),
    ],
)
def test_hidden_names_match_only_a_segment_that_starts_with_a_dot(
    glob: str, shown: list[str], hidden: list[str]
) -> None:
    regex = compile_glob(glob)
    assert [p for p in shown if not regex.fullmatch(p)] == []
    assert [p for p in hidden if regex.fullmatch(p)] == []


@pytest.mark.parametrize(
    "options",
    [pytest.param([], id="rsync"), pytest.param(["--delay-updates"], id="delay-updates")],
)
async def test_rsync_into_a_watched_folder_makes_one_job_per_file(
    ws: Workspace, caplog: pytest.LogCaptureFixture, options: list[str]
) -> None:
    """rsync writes each file under a hidden temporary name (``.name.XXXXXX``, or, with
    --delay-updates, into a hidden ``.~tmp~`` folder) and renames it into place: those names
    match no ``**``, so 200 files make exactly 200 jobs, none skipped, no warning."""
    rsync = shutil.which("rsync")
    if rsync is None:
        pytest.skip("rsync is not installed (.ci/run installs it)")
    caplog.set_level(logging.INFO, logger="meow_async")
    src = ws.root / "src"
    (src / "sub").mkdir(parents=True)
    names = [f"f{i}.txt" for i in range(150)] + [f"sub/g{i}.txt" for i in range(50)]
    for name in names:
        (src / name).write_text(f"{name}\n" * 100)
    (ws.base / "in").mkdir()
    patterns = [FilePattern(name="p", glob="in/**", recipe="r")]
    async with ws.runner(patterns, [sh_recipe("r", "true")]) as r:
        await r.wait_ready()
        done = await asyncio.to_thread(
            subprocess.run,
            [rsync, "-a", *options, f"{src}/", f"{ws.base / 'in'}/"],
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
        assert done.returncode == 0, done.stderr
        await until(r, len(names))
    # Stopped: every event seen has its job folder (a graceful stop drains the queue).
    jobs = ws.jobs_list()
    made = sorted(os.path.relpath(j["event"]["path"], ws.base / "in") for j in jobs)
    assert made == sorted(names)
    assert {j["state"] for j in jobs} == {"done"}
    assert r.stats.skipped == 0
    assert [rec.getMessage() for rec in caplog.records if rec.levelno >= logging.WARNING] == []
