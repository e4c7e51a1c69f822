"""A spawned Python job runs the code the runner compiled when it wrote the script (issue 26,
item 4): a fresh interpreter's first ``compile()`` builds every ``ast`` node type, 1-5 ms a
job. Python's audit hooks show which happened: a ``sitecustomize`` on the job's PYTHONPATH
records each ``compile`` of the script and each ``marshal.loads`` with the function that
called it. The job's script, its
tracebacks and a script changed after the job was made behave as before."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from meow_async import FilePattern, Runner
from meow_async.conductors.forkserver import SPAWN_BOOT
from meow_async.conductors.zygote import fork_supported
from meow_async.model.precompiled import ENV, MAX_BYTES, precompile

from .conftest import PYTHON, WAIT, Workspace, poll_until, py_recipe

#: Installed in every interpreter started with this folder on PYTHONPATH: appends the audit
#: events that say how the script became code to the file $AUDIT_LOG names.
SITECUSTOMIZE = """\
import os, sys
_log = os.environ.get("AUDIT_LOG")
def _hook(event, args):
    if event == "compile" and isinstance(args[1], str) and args[1].endswith("script.py"):
        line = "compile " + args[1] + "\\ncompile-by " + sys._getframe(1).f_code.co_name
    elif event == "marshal.loads":
        line = "marshal.loads in " + sys._getframe(1).f_code.co_name
    else:
        return
    with open(_log, "a") as f:
        f.write(line + "\\n")
if _log:
    sys.addaudithook(_hook)
"""


def audited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    log = tmp_path / "audit.log"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("AUDIT_LOG", str(log))
    return log


def boot(script: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-c", SPAWN_BOOT, str(script)],
        env={**os.environ, "MEOW_PROCESS_LOG": str(script.parent / "process.log"), **env},
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )


def test_the_bootstrap_runs_the_code_it_is_given_for_the_script_as_it_is(tmp_path: Path) -> None:
    """The payload is used, not the file, when it was made from the file's exact bytes."""
    script = tmp_path / "script.py"
    script.write_text("print('from the file')\n")
    payload = precompile(script.read_bytes(), str(script))
    assert payload is not None
    # The same header (magic, hash of these bytes), other code: which one ran shows.
    other = precompile(b"print('precompiled', __file__)\n", str(script))
    assert other is not None
    res = boot(script, {ENV: (payload[:12] + other[12:]).hex()})
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"precompiled {script}\n"
    # Changed since: the hash no longer matches, so the file is compiled as before.
    script.write_text("print('changed')\n")
    res = boot(script, {ENV: payload.hex()})
    assert (res.returncode, res.stdout) == (0, "changed\n"), res.stderr
    # Another interpreter's bytecode (another magic number), or garbage: the file.
    bad = (b"\0\0\0\0" + payload[4:]).hex()
    for value in (bad, "not hex", ""):
        res = boot(script, {ENV: value})
        assert (res.returncode, res.stdout) == (0, "changed\n"), res.stderr


def test_a_script_over_the_size_or_not_compiling_is_not_precompiled(tmp_path: Path) -> None:
    big = b"x = [" + b"1, " * MAX_BYTES + b"]\n"
    assert precompile(big, str(tmp_path / "script.py")) is None
    assert precompile(b"def (:\n", str(tmp_path / "script.py")) is None
    assert precompile(b"x = 1\0\n", str(tmp_path / "script.py")) is None


def test_a_script_that_warns_as_it_compiles_warns_in_its_job(tmp_path: Path) -> None:
    """A SyntaxWarning is the job's (its stderr), not the runner's: such a script is left to
    the job to compile."""
    script = tmp_path / "script.py"
    script.write_text("x = 1\nif x is 1:\n    print('one')\n")
    assert precompile(script.read_bytes(), str(script)) is None
    res = boot(script, {})
    assert res.stdout == "one\n"
    assert "SyntaxWarning" in res.stderr


SEES = "import os, sys\nprint(__file__, os.environ.get('MEOW_BOOT_CODE'), sys.argv[0])\n"
FAILS = "x = 1\nraise ValueError('on line 2')\n"


@pytest.mark.parametrize("containment", ["auto", "none"])
async def test_a_spawned_python_job_runs_the_runners_code_and_fails_as_before(
    ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, containment: str
) -> None:
    """From the fork server (contained) and from the runner's own thread (``none``): the job
    unmarshals its code and compiles nothing; the variable is gone from its environment (its
    own children do not get it); a failing one's traceback names its script and line."""
    log = audited(tmp_path, monkeypatch)
    async with Runner(
        [
            FilePattern(name="ok", glob="*.in", recipe="sees"),
            FilePattern(name="bad", glob="*.bad", recipe="fails"),
        ],
        [py_recipe("sees", SEES, fork=False), py_recipe("fails", FAILS, fork=False)],
        config=ws.config(containment=containment),
    ) as r:
        ws.write("a.in")
        await poll_until(lambda: r.stats.finished >= 1)
        events = log.read_text().splitlines()  # before the failing job's traceback compiles
        ws.write("b.bad")
        await poll_until(lambda: r.stats.finished >= 2)
    metas = {m["rule"]: m for m in ws.jobs_list()}
    ok, bad = Path(metas["ok"]["dir"]), Path(metas["bad"]["dir"])
    assert metas["ok"]["state"] == "done"
    script = ok / "script.py"
    assert (ok / "stdout.txt").read_text() == f"{script} None {script}\n"
    assert "marshal.loads in _meow_precompiled" in events, events
    assert f"compile {script}" not in events, events
    assert "MEOW_BOOT_CODE" not in json.dumps(metas["ok"])  # job.json says nothing of it

    assert metas["bad"]["state"] == "failed"
    script = bad / "script.py"
    line = script.read_text().splitlines().index("raise ValueError('on line 2')") + 1
    err = (bad / "stderr.txt").read_text()
    assert f'File "{script}", line {line}, in <module>' in err, err
    assert "ValueError: on line 2" in err


@pytest.mark.skipif(not fork_supported(), reason="the fork server needs Linux")
async def test_a_warm_python_job_is_not_compiled_by_the_handler(
    ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fork of the warm server has compiled before: nothing is sent, the job compiles."""
    log = audited(tmp_path, monkeypatch)
    async with ws.runner(
        [FilePattern(name="p", glob="*.in", recipe="r")], [py_recipe("r", "print('hi')\n")]
    ) as r:
        ws.write("a.in")
        await poll_until(lambda: r.stats.finished >= 1)
    (meta,) = ws.jobs_list()
    assert meta["state"] == "done"
    events = log.read_text().splitlines()
    assert f"compile {Path(meta['dir']) / 'script.py'}" in events
    assert "marshal.loads in _meow_precompiled" not in events
