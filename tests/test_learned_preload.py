"""The fork server learns what warm jobs import and preloads it (issue 26, item 1).

Real runners, a real fork server, real jobs; each job writes which modules were already in
``sys.modules`` when its script began, so a test sees what the server held at its fork.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from meow_async import FilePattern, Runner
from meow_async.cli.main import main
from meow_async.conductors.learned_preload import LEARNED_FILE, SEEN_IN
from meow_async.conductors.zygote import fork_supported

from .conftest import WAIT, Workspace, poll_until, py_recipe

pytestmark = pytest.mark.skipif(not fork_supported(), reason="the fork server needs Linux")

#: Which of the modules it then imports were there at its start; the recipe users write.
READS = """
import sys
warm = [m for m in WATCHED if m in sys.modules]
from pathlib import Path
import decimal, fractions
Path("out.txt").write_text(" ".join(warm) or "-")
Path(input_file).read_text()
"""
STD = ["decimal", "fractions", "pathlib"]


def recipe(name: str = "r", modules: list[str] = STD, body: str = READS, **kw: Any) -> Any:
    return py_recipe(name, f"WATCHED = {modules!r}\n" + body, **kw)


async def until(runner: Runner, n: int) -> None:
    async with asyncio.timeout(WAIT):
        await runner.wait_for(lambda s: s.finished >= n)


def warm_at_start(ws: Workspace, name: str) -> list[str]:
    """The watched modules the job triggered by ``name`` found already imported."""
    (meta,) = [j for j in ws.jobs_list() if Path(j["event"]["path"]).name == name]
    assert meta["state"] == "done", meta
    text = (Path(meta["dir"]) / "out.txt").read_text()
    return [] if text == "-" else text.split()


def learned(ws: Workspace) -> dict[str, Any]:
    path = ws.jobs / LEARNED_FILE
    return json.loads(path.read_text()) if path.exists() else {}


async def run_jobs(runner: Runner, ws: Workspace, names: list[str], done: int) -> None:
    """One file at a time: each job ends before the next file is written."""
    for i, name in enumerate(names):
        ws.write(name)
        await until(runner, done + i + 1)


async def test_jobs_learn_what_they_import_and_a_restart_starts_warm(
    ws: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="meow_async.conductors")
    pattern = FilePattern(name="p", glob="*.in", recipe="r")
    names = [f"{i}.in" for i in range(SEEN_IN)]
    async with ws.runner([pattern], [recipe()]) as r:
        await run_jobs(r, ws, names, 0)
        await poll_until(lambda: set(STD) <= set(learned(ws).get("learned", [])))
        ws.write("after.in")
        await until(r, SEEN_IN + 1)
    assert [warm_at_start(ws, n) for n in names] == [[]] * SEEN_IN
    assert warm_at_start(ws, "after.in") == STD  # forked from the new generation
    record = learned(ws)
    assert record["refused"] == {}
    lines = [m for m in caplog.messages if "learned from jobs" in m]
    assert lines, caplog.messages
    assert "pathlib" in lines[-1]
    assert "decimal" in lines[-1]

    async with ws.runner([pattern], [recipe()]) as r:  # a restart: warm from its first job
        ws.write("restart.in")
        await until(r, 1)
    assert warm_at_start(ws, "restart.in") == STD
    # `meow-async status` shows what was learned.
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["status", str(ws.jobs)])
    shown = f"preload   {len(record['learned'])} module(s) learned from jobs: decimal, "
    assert shown in out.getvalue()


#: Modules on PYTHONPATH (a folder of the import path, like site-packages).
SITE = {
    "threader": "import threading, time\n"
    "threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\n",
    "fdopener": "import os\nHELD = os.open(os.devnull, os.O_RDONLY)\n",
    "notinserver": "import sys\n"
    "if sys.argv[0].endswith('forkserver.py'):\n"
    "    raise RuntimeError('not in a fork server')\n",
    "plain": "VALUE = 1\n",
    "envsetter": "import os\nos.environ['MEOW_TEST_SET_AT_IMPORT'] = '1'\n",
    # Stops its thread before each fork, as OpenBLAS (numpy) does: as safe as none.
    "forkaware": "import os, threading\n"
    "stop = threading.Event()\n"
    "t = threading.Thread(target=stop.wait, daemon=True)\n"
    "t.start()\n"
    "def before():\n"
    "    stop.set()\n"
    "    t.join()\n"
    "os.register_at_fork(before=before)\n",
}


async def test_a_module_that_starts_a_thread_or_opens_a_file_is_refused(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = ws.root / "site"
    site.mkdir()
    for name, text in SITE.items():
        (site / f"{name}.py").write_text(text)
    monkeypatch.setenv("PYTHONPATH", str(site))
    mods = sorted(SITE)
    body = (
        "import sys\n"
        "warm = [m for m in WATCHED if m in sys.modules]\n"
        + "".join(f"import {m}\n" for m in mods)
        + "open('out.txt', 'w').write(' '.join(warm) or '-')\n"
    )
    pattern = FilePattern(name="p", glob="*.in", recipe="r")
    names = [f"{i}.in" for i in range(SEEN_IN)]
    async with ws.runner([pattern], [recipe(modules=mods, body=body)]) as r:
        await run_jobs(r, ws, names, 0)
        await poll_until(lambda: {"plain", "forkaware"} <= set(learned(ws).get("learned", [])))
        ws.write("after.in")
        await until(r, SEEN_IN + 1)
    record = learned(ws)
    assert "plain" in record["learned"]  # with threading, which threader imports
    refused = record["refused"]
    assert not set(refused) & set(record["learned"])
    assert set(refused) == {"threader", "fdopener", "notinserver", "envsetter"}
    why = "changed the environment at import (MEOW_TEST_SET_AT_IMPORT)"
    assert refused["envsetter"] == why
    assert refused["threader"] == "started a thread at import"
    assert refused["fdopener"] == "opened 1 file descriptor(s) at import"
    assert "not in a fork server" in refused["notinserver"]
    # The jobs still ran, importing the refused ones themselves.
    assert warm_at_start(ws, "after.in") == ["forkaware", "plain"]


async def test_learning_is_off_with_learn_preload_false_or_preload_given(
    ws: Workspace,
) -> None:
    names = [f"{i}.in" for i in range(SEEN_IN + 1)]
    pattern = FilePattern(name="p", glob="*.in", recipe="r")
    async with ws.runner([pattern], [recipe()], learn_preload=False) as r:
        await run_jobs(r, ws, names, 0)
    assert [warm_at_start(ws, n) for n in names] == [[]] * len(names)
    assert not (ws.jobs / LEARNED_FILE).exists()

    quiet = FilePattern(name="q", glob="*.q", recipe="quiet")
    told = FilePattern(name="t", glob="*.t", recipe="told")
    recipes = [recipe("quiet", preload=[]), recipe("told", preload=["decimal"])]
    async with ws.runner([quiet, told], recipes) as r:
        await run_jobs(r, ws, [f"{i}.q" for i in range(SEEN_IN + 1)], 0)
        await run_jobs(r, ws, [f"{i}.t" for i in range(SEEN_IN + 1)], SEEN_IN + 1)
    assert warm_at_start(ws, f"{SEEN_IN}.q") == ["decimal"]  # told's preload, not learned
    assert warm_at_start(ws, f"{SEEN_IN}.t") == ["decimal"]
    assert not (ws.jobs / LEARNED_FILE).exists()


def servers(ws: Workspace) -> list[int]:
    """The fork servers (parents) the blocked jobs have recorded so far."""
    texts = [p.read_text() for p in ws.jobs.glob("*/*/server.txt")]
    return [int(t) for t in texts if t]


#: Records its fork server (its parent), then waits for the release file.
BLOCKED = """
import os, time
from pathlib import Path
Path("server.txt").write_text(str(os.getppid()))
while not Path(release).exists():
    time.sleep(0.01)
"""


def blocking(release: Path, quick: Any) -> tuple[list[FilePattern], list[Any]]:
    """Rules: ``*.block`` files make jobs that wait for ``release``, ``*.in`` ones ``quick``'s."""
    blocked = py_recipe("blocked", BLOCKED, parameters={"release": str(release)}, preload=[])
    patterns = [
        FilePattern(name="b", glob="*.block", recipe="blocked"),
        FilePattern(name="p", glob="*.in", recipe="r"),
    ]
    return patterns, [blocked, quick]


async def swap(runner: Runner, ws: Workspace, done: int) -> None:
    """Jobs that teach the server, until a new generation starts ``after.in``'s job."""
    await run_jobs(runner, ws, [f"{i}.in" for i in range(SEEN_IN)], done)
    await poll_until(lambda: set(STD) <= set(learned(ws).get("learned", [])))
    ws.write("after.in")
    await until(runner, done + SEEN_IN + 1)
    assert warm_at_start(ws, "after.in") == STD


async def test_jobs_on_the_old_generation_end_and_are_cancelled_as_before(ws: Workspace) -> None:
    release = ws.root / "release"
    quick = recipe(body=READS + "import os\nPath('server.txt').write_text(str(os.getppid()))\n")
    patterns, recipes = blocking(release, quick)
    async with ws.runner(patterns, recipes, max_jobs=4) as r:
        ws.write("a.block")
        ws.write("b.block")
        await poll_until(lambda: len(servers(ws)) == 2)
        old = set(servers(ws))
        assert len(old) == 1
        await swap(r, ws, 0)
        (after,) = [j for j in ws.jobs_list() if j["event"]["path"].endswith("after.in")]
        new = int((Path(after["dir"]) / "server.txt").read_text())
        assert new not in old
        (old_pid,) = old
        assert os.path.exists(f"/proc/{old_pid}")  # retired: it serves its running jobs
        # One of the old generation's jobs is cancelled (`meow-async jobs cancel`)...
        (b,) = [j for j in ws.jobs_list() if j["event"]["path"].endswith("b.block")]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = await asyncio.to_thread(
                main, ["jobs", "cancel", b["id"], "--jobs", str(ws.jobs)]
            )
        assert code == 0, out.getvalue()
        await until(r, SEEN_IN + 2)
        # ... the other ends as usual.
        release.write_text("")
        await until(r, SEEN_IN + 3)
        release.unlink()
    # Both were recorded as they ended; then the old server was gone.
    jobs = {Path(j["event"]["path"]).name: j for j in ws.jobs_list()}
    assert jobs["a.block"]["state"] == "done"
    assert jobs["b.block"]["state"] == "failed"
    assert jobs["b.block"]["cancelled"] is True
    assert jobs["b.block"]["exit_code"] == -15
    await poll_until(lambda: not os.path.exists(f"/proc/{old_pid}"))


async def test_a_job_of_the_old_generation_is_stopped_through_it(ws: Workspace) -> None:
    release = ws.root / "release"
    patterns, recipes = blocking(release, recipe())
    async with ws.runner(patterns, recipes, max_jobs=4) as r:
        ws.write("a.block")
        await poll_until(lambda: len(servers(ws)) == 1)
        (old_pid,) = servers(ws)
        await swap(r, ws, 0)
        assert os.path.exists(f"/proc/{old_pid}")
    # The runner's stop reached the job through the retired server.
    jobs = {Path(j["event"]["path"]).name: j for j in ws.jobs_list()}
    assert jobs["a.block"]["state"] == "failed"
    assert "stopped" in jobs["a.block"]["error"]
    await poll_until(lambda: not os.path.exists(f"/proc/{old_pid}"))


def test_only_the_standard_library_site_packages_and_pythonpath_are_learned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder on sys.path otherwise (a .pth file's, as an editable install adds its sources)
    is not: its owner edits those while the runner runs."""
    from meow_async.conductors.forkserver import _roots, _under

    editable = tmp_path / "src"
    editable.mkdir()
    monkeypatch.syspath_prepend(str(editable))
    monkeypatch.delenv("PYTHONPATH", raising=False)
    roots = _roots()
    assert _under(json.__file__, roots)
    assert _under(pytest.__file__, roots)  # site-packages
    assert not _under(str(editable / "mine.py"), roots)
    monkeypatch.setenv("PYTHONPATH", str(editable))
    assert _under(str(editable / "mine.py"), _roots())
