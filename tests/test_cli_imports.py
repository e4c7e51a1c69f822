"""The quick commands load only what they use (issue 26): ``python -X importtime`` lists every
module a command imported, and a heavy one creeping back into ``--version``, ``send``,
``jobs``, ``status``, ``validate``, ``graph`` or ``reload`` fails here rather than in a user's
shell. None of them loads the live view (its modules, Jinja2)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from meow_async.cli import main as cli_main
from meow_async.cli import status

EXAMPLE = Path(__file__).parent.parent / "examples" / "linked" / "workflow.yaml"

#: The HTTP server, the metrics, the monitors and the runner: what `run` needs.
SERVING = {
    "aiohttp",
    "prometheus_client",
    "meow_async.monitors.http",
    "meow_async.monitors.network",
    "meow_async.runner.runner",
    "meow_async.runner.endpoints",
}
#: Never needed by a command that only reads or checks: the optional extras.
EXTRAS = {"distributed", "dask", "papermill", "cel_expr_python", "aiosmtplib"}
#: The live view's pages: loaded by a runner at its first page, by no other command.
VIEW = {
    "jinja2",
    "markupsafe",
    "meow_async.runner.view",
    "meow_async.runner.view_pages",
    "meow_async.runner.graph_svg",
}

pytestmark = pytest.mark.skipif(
    os.environ.get("MEOW_TEST_LOOP") == "uvloop",
    reason="no event loop of the tests' own is involved: one run is enough",
)


def imported(*args: str, cwd: Path) -> set[str]:
    """Every module ``meow-async ARGS`` imported, from ``-X importtime``'s report."""
    res = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "meow_async", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    modules = {
        line.rpartition("|")[2].strip()
        for line in res.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "meow_async" in modules, res.stderr[-2000:]
    return modules


def creeping(modules: set[str], heavy: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in heavy or m in heavy)


def test_version_loads_no_asyncio_nor_yaml(tmp_path: Path) -> None:
    mods = imported("--version", cwd=tmp_path)
    assert not creeping(mods, SERVING | EXTRAS | VIEW | {"asyncio", "yaml", "sqlite3", "ssl"})
    assert not [m for m in mods if m.startswith("meow_async.model.")], "no workflow model either"
    # answered before the parser: argparse, pathlib and the error types are half its start-up
    assert not creeping(mods, {"argparse", "pathlib", "meow_async.cli.main"})


def test_version_says_what_the_parser_says(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The quick answer and argparse's (``--version`` among other arguments) are the same line."""
    quick = subprocess.run(
        [sys.executable, "-m", "meow_async", "--version"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    with pytest.raises(SystemExit) as exit_:
        cli_main.main(["--version", "-v"])
    assert exit_.value.code == 0
    assert quick == capsys.readouterr().out
    assert quick.startswith("meow_async ")


def test_send_loads_no_server_and_no_workflow_model(tmp_path: Path) -> None:
    """``send HOST:PORT``: a real listener takes the message (the kernel's backlog accepts)."""
    data = tmp_path / "msg.txt"
    data.write_text("hello")
    with socket.create_server(("127.0.0.1", 0)) as srv:
        port = srv.getsockname()[1]
        mods = imported("send", f"127.0.0.1:{port}", str(data), cwd=tmp_path)
    assert not creeping(mods, SERVING | EXTRAS | VIEW | {"yaml", "sqlite3"})
    assert "meow_async.model.patterns" not in mods


def test_jobs_loads_no_asyncio(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    mods = imported("jobs", str(jobs), cwd=tmp_path)
    assert not creeping(mods, SERVING | EXTRAS | VIEW | {"asyncio", "yaml"})


def test_status_loads_no_server(tmp_path: Path) -> None:
    mods = imported("status", str(EXAMPLE), cwd=tmp_path)
    assert not creeping(mods, SERVING | EXTRAS | VIEW)


#: What a runner only made (as ``validate`` makes one) never needs: aiohttp's server and client,
#: the metrics, the watcher only some platforms use, the fast JSON parser of filters' bodies.
NOT_FOR_CHECKING = {
    "aiohttp",
    "prometheus_client",
    "meow_async.runner.endpoints",
    "meow_async.monitors.http_server",
    "meow_async.notify.senders",
    "watchfiles",
    "orjson",
    "difflib",
}


def test_validate_loads_no_server_nor_extra(tmp_path: Path) -> None:
    """``validate`` makes the runner (its checks are the runner's), but nothing it serves
    with, sends with or only some platforms use: they load as a runner starts them."""
    mods = imported("validate", str(EXAMPLE), cwd=tmp_path)
    assert "meow_async.runner.runner" in mods
    assert not creeping(mods, NOT_FOR_CHECKING | EXTRAS | VIEW)


def test_graph_loads_no_server(tmp_path: Path) -> None:
    """``graph`` reads the workflow file and the job index: no server, no runner, no view."""
    mods = imported("graph", str(EXAMPLE), cwd=tmp_path)
    assert "meow_async.cli.graph" in mods
    assert not creeping(mods, SERVING | EXTRAS | VIEW | {"asyncio"})


def test_reload_loads_no_server(tmp_path: Path) -> None:
    """``reload`` asks the runner (urllib, or SIGHUP from its live file): no server, no runner
    of its own, no view (here no runner runs: it says so, having imported what it uses)."""
    mods = imported("reload", str(EXAMPLE), cwd=tmp_path)
    assert "meow_async.cli.reload" in mods
    assert not creeping(mods, SERVING | EXTRAS | VIEW)


def test_the_parser_without_a_command_says_what_status_returns() -> None:
    """``--help`` states status's exit code without loading cli/status.py: the same number."""
    assert cli_main.NOT_RUNNING == status.NOT_RUNNING
