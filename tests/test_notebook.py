"""Notebook recipes: real notebooks executed by a real kernel (papermill, ipykernel).

Each job starts a kernel (seconds), so the module keeps to a few jobs; waits are on the
runner's counters with a timeout.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("papermill")

from meow_async import (
    ConfigError,
    FilePattern,
    NotebookRecipe,
    WorkflowFileError,
    load_workflow,
    read_meta,
)
from meow_async.conductors.forkserver import start_time_of

from .conftest import WAIT, Workspace, poll_until

#: Kernels take seconds to start on a loaded machine.
NB_WAIT = 2 * WAIT


def notebook(*cells: tuple[str, list[str]]) -> str:
    """A format-4 notebook of code cells: (source, tags)."""
    return json.dumps(
        {
            "cells": [
                {
                    "cell_type": "code",
                    "execution_count": None,
                    "id": f"cell-{i}",
                    "metadata": {"tags": tags},
                    "outputs": [],
                    "source": source,
                }
                for i, (source, tags) in enumerate(cells)
            ],
            "metadata": {
                "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}
            },
            "nbformat": 4,
            "nbformat_minor": 5,
        }
    )


ANALYSIS = notebook(
    ("threshold = 1\ninput_file = ''\n", ["parameters"]),
    (
        "from pathlib import Path\n"
        "words = Path(input_file).read_text().split()\n"
        "print('words', len(words), 'threshold', threshold)\n"
        "len(words) * threshold\n",
        [],
    ),
)


async def run_one(ws: Workspace, recipe: NotebookRecipe, **pattern: Any) -> dict[str, Any]:
    patterns = [FilePattern(name="nb", glob="in/*.txt", recipe=recipe.name, **pattern)]
    async with ws.runner(patterns, [recipe]) as runner:
        await runner.wait_ready()
        ws.write("in/a.txt", "one two three")
        async with asyncio.timeout(NB_WAIT):
            await runner.wait_for(lambda s: s.finished >= 1)
    (job,) = ws.jobs_list()
    return job


def _text(value: str | list[str]) -> str:
    """Notebook text fields are a string or a list of lines."""
    return value if isinstance(value, str) else "".join(value)


def cells_of(path: Path) -> list[dict[str, Any]]:
    cells: list[dict[str, Any]] = json.loads(path.read_text())["cells"]
    return cells


async def test_parameters_are_injected_and_the_executed_notebook_is_kept(ws: Workspace) -> None:
    recipe = NotebookRecipe(name="count", script=ANALYSIS)
    job = await run_one(ws, recipe, parameters={"threshold": 7})
    assert job["state"] == "done", job["error"]
    job_dir = Path(job["dir"])
    cells = cells_of(job_dir / "output.ipynb")
    tags = [c["metadata"].get("tags", []) for c in cells]
    assert tags[0] == ["parameters"]
    assert "injected-parameters" in tags[1]  # right after the tagged cell, as papermill does
    injected = "".join(cells[1]["source"])
    assert "threshold = 7" in injected
    assert f"input_file = {str(ws.base / 'in/a.txt')!r}" in injected.replace('"', "'")
    outputs = cells[2]["outputs"]
    printed = "".join(_text(o.get("text", "")) for o in outputs if o["output_type"] == "stream")
    assert printed == "words 3 threshold 7\n"
    results = [o for o in outputs if o["output_type"] == "execute_result"]
    assert _text(results[0]["data"]["text/plain"]) == "21"
    assert "words 3 threshold 7" in (job_dir / "stdout.txt").read_text()  # also as it ran
    assert job["exit_code"] == 0
    # The kernel is spoken to over Unix sockets, not TCP: ipykernel has no warning to give,
    # and a job that wrote nothing to stderr keeps no stderr.txt (removed at its end).
    err = job_dir / "stderr.txt"
    stderr = err.read_text() if err.exists() else ""
    assert "without encryption" not in stderr, stderr
    assert "TCP" not in stderr, stderr


async def test_a_file_name_that_is_not_utf8_reaches_the_notebook_as_its_bytes(
    ws: Workspace,
) -> None:
    """papermill records the parameters in the executed notebook, as JSON text, which has no
    place for the name's bytes: they are kept as JSON escapes that read back to the name."""
    source = notebook(
        ("input_file = ''\n", ["parameters"]),
        ("import os\nopen('name.bin', 'wb').write(os.fsencode(input_file))\n", []),
    )
    patterns = [FilePattern(name="nb", glob="in/*", recipe="nb")]
    (ws.base / "in").mkdir()
    raw = bytes(ws.base) + b"/in/bad\xff\xfe.txt"
    async with ws.runner(patterns, [NotebookRecipe(name="nb", script=source)]) as runner:
        with open(raw, "wb") as f:
            f.write(b"x")
        async with asyncio.timeout(NB_WAIT):
            await runner.wait_for(lambda s: s.finished >= 1)
    (job,) = ws.jobs_list()
    assert job["state"] == "done", job["error"]
    job_dir = Path(job["dir"])
    assert (job_dir / "name.bin").read_bytes() == raw
    output = json.loads((job_dir / "output.ipynb").read_bytes().decode("utf-8"))  # valid UTF-8
    assert os.fsencode(output["metadata"]["papermill"]["parameters"]["input_file"]) == raw


async def test_a_failing_cell_fails_the_job_with_its_error(ws: Workspace) -> None:
    source = notebook(
        ("x = 1\n", ["parameters"]),
        ("y = x / 0\n", []),
        ("print('never')\n", []),
    )
    job = await run_one(ws, NotebookRecipe(name="broken", script=source))
    assert job["state"] == "failed"
    assert job["exit_code"] == 1
    assert job["error"].endswith("ZeroDivisionError: division by zero (cell 3)"), job["error"]
    assert job["notebook_error"] == {
        "cell": 3,
        "index": 2,
        "ename": "ZeroDivisionError",
        "evalue": "division by zero",
    }
    cells = {_text(c["source"]): c for c in cells_of(Path(job["dir"]) / "output.ipynb")}
    assert [o["ename"] for o in cells["y = x / 0\n"]["outputs"] if o["output_type"] == "error"] == [
        "ZeroDivisionError"
    ]
    assert cells["print('never')\n"]["outputs"] == []  # not run after the failure


async def test_a_timeout_stops_the_kernel_too(ws: Workspace) -> None:
    source = notebook(
        ("pass\n", ["parameters"]),
        ("import os, time\nopen('kernel.pid', 'w').write(str(os.getpid()))\ntime.sleep(600)\n", []),
    )
    recipe = NotebookRecipe(name="slow", script=source, timeout=10.0)
    patterns = [FilePattern(name="nb", glob="in/*.txt", recipe="slow")]
    async with ws.runner(patterns, [recipe]) as runner:
        await runner.wait_ready()
        ws.write("in/a.txt")
        await poll_until(
            lambda: any((Path(j["dir"]) / "kernel.pid").exists() for j in ws.jobs_list()),
            timeout=NB_WAIT,
        )
        (job,) = ws.jobs_list()
        pid_file = Path(job["dir"]) / "kernel.pid"
        await poll_until(lambda: pid_file.read_text().strip().isdigit())
        kernel = int(pid_file.read_text())
        started = start_time_of(kernel)
        assert started is not None  # the kernel is running the cell
        async with asyncio.timeout(NB_WAIT):
            await runner.wait_for(lambda s: s.finished >= 1)
    meta = read_meta(Path(job["dir"]))
    assert meta["state"] == "failed"
    assert meta["timed_out"] is True
    await poll_until(lambda: start_time_of(kernel) != started)  # the kernel is gone


async def test_a_notebook_naming_no_kernel_runs_on_python3(ws: Workspace) -> None:
    nb = json.loads(ANALYSIS)
    del nb["metadata"]["kernelspec"]  # e.g. written by hand, or by a tool that leaves it out
    job = await run_one(ws, NotebookRecipe(name="plain", script=json.dumps(nb)))
    assert job["state"] == "done", job["error"]
    assert "words 3 threshold 1" in (Path(job["dir"]) / "stdout.txt").read_text()


def test_notebooks_are_checked_at_load_time(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a notebook: invalid JSON"):
        NotebookRecipe(name="bad", script="{not json")
    sloppy = {"cells": [{"cell_type": "code", "source": "1"}], "metadata": {}, "nbformat": 4}
    with pytest.raises(ConfigError, match=r"not a valid notebook: .* missing an expected key"):
        NotebookRecipe(name="bad", script=json.dumps(sloppy))  # papermill's reader rejects it
    with pytest.raises(ConfigError, match="not a Jupyter notebook in format 4"):
        NotebookRecipe(name="bad", script='{"cells": []}')
    with pytest.raises(ConfigError, match="the notebook has no code cell"):
        NotebookRecipe(name="bad", script='{"cells": [], "nbformat": 4}')
    (tmp_path / "analysis.ipynb").write_text(ANALYSIS)
    (tmp_path / "data").mkdir()
    wf = tmp_path / "workflow.yaml"
    wf.write_text(
        "runner: {base_dir: data}\n"
        "recipes:\n"
        "  count: {file: analysis.ipynb}\n"  # the kind from the file's extension
        "  other: {kind: notebook, file: missing.ipynb}\n"
        "patterns:\n"
        "  texts: {glob: '*.txt', recipe: count}\n"
    )
    with pytest.raises(WorkflowFileError) as e:
        load_workflow(wf)
    assert len(e.value.problems) == 1
    assert "missing.ipynb" in e.value.problems[0]
    wf.write_text(wf.read_text().replace("  other: {kind: notebook, file: missing.ipynb}\n", ""))
    spec = load_workflow(wf)
    assert isinstance(spec.recipes[0], NotebookRecipe)


def test_a_missing_extra_is_an_error_at_load_time_naming_it(tmp_path: Path) -> None:
    (tmp_path / "analysis.ipynb").write_text(ANALYSIS)
    wf = tmp_path / "workflow.yaml"
    wf.write_text(
        "recipes:\n  count: {file: analysis.ipynb}\n"
        "patterns:\n  t: {glob: '*.txt', recipe: count}\n"
    )
    # As if papermill were not installed: Python's documented way to hide a module.
    code = (
        "import sys; sys.modules['papermill'] = None\n"
        "from meow_async.cli.main import main\n"
        f"sys.exit(main(['validate', {str(wf)!r}]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode != 0
    assert "notebook recipes need papermill: pip install 'meow-async[notebook]'" in out.stderr + (
        out.stdout
    )
