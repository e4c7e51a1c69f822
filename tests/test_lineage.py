"""Lineage (issue 24): which job made the file that triggered the next one, recorded as jobs
are made, kept across restarts, shown as a tree and drawn as a graph Graphviz renders."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from meow_async import Runner
from meow_async.cli.main import main
from meow_async.model.index import INDEX_FILE

from .conftest import WAIT, wait_until_sync
from .test_cli import SHORT, MeowRun, copy_example, finished_jobs

HAVE_DOT = shutil.which("dot") is not None


def _metas(jobs: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for p in jobs.glob("*/*/job.json"):
        m = json.loads(p.read_text())
        out[m["id"]] = m
    return out


def cli(*args: str, cwd: Path) -> tuple[int, str]:
    """A read-only command in this process (no new interpreter): its exit code and stdout."""
    out = io.StringIO()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out):
            code = main(list(args))
    finally:
        os.chdir(old)
    return code, out.getvalue()


def _render(dot_text: str) -> str:
    """Graphviz's own `dot` must take what `graph` prints."""
    done = subprocess.run(
        ["dot", "-Tsvg"], input=dot_text, capture_output=True, text=True, timeout=WAIT, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "<svg" in done.stdout
    return done.stdout


@pytest.mark.skipif(not HAVE_DOT, reason="Graphviz's dot is not installed (.ci/run installs it)")
def test_the_linked_example_lineage_and_graph(tmp_path: Path) -> None:
    root = copy_example(tmp_path)
    with MeowRun("workflow.yaml", cwd=root) as run:
        run.wait_ready()
        (root / "data" / "incoming" / "hello.txt").write_text("hello world\n")
        wait_until_sync(lambda: len(finished_jobs(root / ".meow" / "jobs")) == 2, SHORT)
        run.signal(signal.SIGINT)
        assert run.wait_exit() == 0, run.report()
    metas = _metas(root / ".meow" / "jobs")
    first = next(m for m in metas.values() if m["rule"] == "incoming_text")
    second = next(m for m in metas.values() if m["rule"] == "counted")
    assert first["caused_by"] is None  # a file dropped by hand: a root
    assert second["caused_by"] == {"job": first["id"], "rule": "incoming_text"}

    # From the result back to the raw file, and down again; after a reindex (a restart that
    # finds no index makes it from the folders) the same.
    for _ in range(2):
        code, shown = cli("jobs", "workflow.yaml", "--lineage", "data/report/summary.txt", cwd=root)
        assert code == 0
        lines = shown.splitlines()
        assert lines[0] == "incoming/hello.txt  (the root event)"
        assert f"{first['id']}  incoming_text  done  -> counted/hello.json" in lines[1]
        assert f"{second['id']}  counted  done  -> report/summary.txt  <- asked" in lines[2]
        (root / ".meow" / "jobs" / INDEX_FILE).unlink()
        assert cli("reindex", "workflow.yaml", cwd=root)[0] == 0

    code, graph = cli("graph", "workflow.yaml", cwd=root)
    assert code == 0
    assert '"incoming_text" -> "counted" [label="1"' in graph  # recorded, once
    assert '"from_network" -> "counted" [style=dashed]' in graph  # implied, never taken
    _render(graph)
    mermaid = cli("graph", "workflow.yaml", "--format", "mermaid", cwd=root)[1]
    assert mermaid.startswith("flowchart LR")
    assert "-->|1|" in mermaid
    assert "-.->" in mermaid


CHAIN = """\
runner: {base_dir: data, jobs_dir: jobs, kill_timeout: 1}
recipes:
  copy:
    kind: python
    script: |
      from pathlib import Path
      Path(out).parent.mkdir(parents=True, exist_ok=True)
      Path(out).write_text(Path(input_file).read_text() + f" {tag}")
patterns:
  clean:
    glob: raw/*.dat
    recipe: copy
    parameters: {tag: clean}
    outputs: {out: "{BASE}/clean/{PREFIX}.txt"}
  fit:
    glob: clean/*.txt
    recipe: copy
    parameters: {tag: fit}
    sweep: {k: {start: 1, stop: 3, jump: 1}}
    outputs: {out: "{BASE}/fits/{PREFIX}.{JOB}.txt"}
  plot:
    glob: fits/*.txt
    recipe: copy
    parameters: {tag: plot}
    outputs: {out: "plot.txt"}
"""


async def test_a_three_stage_chain_with_a_sweep_records_every_step(tmp_path: Path) -> None:
    (tmp_path / "data" / "raw").mkdir(parents=True)
    wf = tmp_path / "workflow.yaml"
    wf.write_text(CHAIN.replace("kill_timeout: 1}", "kill_timeout: 1, http: {port: 0}}"))
    async with Runner.from_file(wf) as runner, aiohttp.ClientSession() as session:
        (tmp_path / "data" / "raw" / "a.dat").write_text("a")
        async with asyncio.timeout(WAIT):
            await runner.wait_for(lambda s: s.done + s.failed >= 7)
        # /jobs/{id}: upstream and downstream ids.
        url = f"http://127.0.0.1:{runner.http_port}/jobs"
        by_id = {m["id"]: m for m in _metas(tmp_path / "jobs").values()}
        (clean_id,) = [i for i, m in by_id.items() if m["rule"] == "clean"]
        async with session.get(f"{url}/{clean_id}") as r:
            answer = await r.json()
        assert answer["upstream"] == []
        assert sorted(answer["downstream"]) == sorted(
            i for i, m in by_id.items() if m["rule"] == "fit"
        )
        fit_id = answer["downstream"][0]
        async with session.get(f"{url}/{fit_id}") as r:
            answer = await r.json()
        assert answer["upstream"] == [clean_id]
        assert len(answer["downstream"]) == 1
    metas = _metas(tmp_path / "jobs")
    by_rule: dict[str, list[dict[str, Any]]] = {}
    for m in metas.values():
        assert m["state"] == "done", m
        by_rule.setdefault(str(m["rule"]), []).append(m)
    assert {r: len(ms) for r, ms in by_rule.items()} == {"clean": 1, "fit": 3, "plot": 3}
    (clean,) = by_rule["clean"]
    assert clean["caused_by"] is None
    fits = {m["id"] for m in by_rule["fit"]}
    for m in by_rule["fit"]:
        assert m["caused_by"] == {"job": clean["id"], "rule": "clean"}
    # Each plot from its own fit: the sweep's outputs are named by {JOB}, so each is exact.
    assert sorted(m["caused_by"]["job"] for m in by_rule["plot"]) == sorted(fits)

    code, shown = cli("jobs", "workflow.yaml", "--lineage", "raw/a.dat", cwd=tmp_path)
    assert code == 0
    lines = shown.splitlines()
    assert lines[0] == "raw/a.dat  (the root event)"
    assert len(lines) == 8  # the root event, then every job of the chain
    assert sum("  fit  done" in line for line in lines) == 3
    assert sum("  plot  done" in line for line in lines) == 3
    if HAVE_DOT:
        graph = cli("graph", "workflow.yaml", cwd=tmp_path)[1]
        assert '"clean" -> "fit" [label="3"' in graph  # three jobs took that way
        assert '"fit" -> "plot" [label="3"' in graph
        _render(graph)


async def test_lineage_survives_a_restart(tmp_path: Path) -> None:
    """A job's output taken by a rule added after a restart (a retroactive one) still names
    the job that declared it, from the index made again from the folders."""
    (tmp_path / "data" / "raw").mkdir(parents=True)
    wf = tmp_path / "workflow.yaml"
    first, _, _ = CHAIN.partition("  fit:\n")
    wf.write_text(first)
    async with Runner.from_file(wf) as runner:
        (tmp_path / "data" / "raw" / "a.dat").write_text("a")
        async with asyncio.timeout(WAIT):
            await runner.wait_for(lambda s: s.done >= 1)
    (tmp_path / "jobs" / INDEX_FILE).unlink()  # made again from the job folders at start
    wf.write_text(
        first + "  later:\n    glob: clean/*.txt\n    recipe: copy\n    retroactive: true\n"
        "    parameters: {tag: later, out: later.txt}\n"
    )
    async with Runner.from_file(wf) as runner:
        async with asyncio.timeout(WAIT):
            await runner.wait_for(lambda s: s.done >= 1)
    metas = _metas(tmp_path / "jobs")
    (clean,) = [m for m in metas.values() if m["rule"] == "clean"]
    (later,) = [m for m in metas.values() if m["rule"] == "later"]
    assert later["caused_by"] == {"job": clean["id"], "rule": "clean"}


async def test_lineage_through_a_name_that_is_not_utf8(tmp_path: Path) -> None:
    """A raw file whose name is not UTF-8 makes its job, whose declared output (named from it)
    makes the next one with its cause recorded, and ``jobs --lineage`` finds it by that name:
    the index holds such paths with their stray bytes as ``\\xNN`` (its declared outputs too),
    and looks them up the same way (before, the cause's lookup raised and the raw file's job
    was never made)."""
    (tmp_path / "data" / "raw").mkdir(parents=True)
    wf = tmp_path / "workflow.yaml"
    first, _, _ = CHAIN.partition("  plot:\n")
    wf.write_text(first.replace("sweep: {k: {start: 1, stop: 3, jump: 1}}\n    ", ""))
    raw = bytes(tmp_path) + b"/data/raw/bad\xff name.dat"
    async with Runner.from_file(wf) as runner:
        with open(raw, "wb") as f:
            f.write(b"a")
        async with asyncio.timeout(WAIT):
            await runner.wait_for(lambda s: s.done + s.failed >= 2)
        assert runner.stats.handler_errors == 0
    metas = _metas(tmp_path / "jobs")
    by_rule = {m["rule"]: m for m in metas.values()}
    assert sorted(by_rule) == ["clean", "fit"]
    assert os.fsencode(by_rule["clean"]["event"]["path"]) == raw
    assert by_rule["clean"]["state"] == "done"
    assert by_rule["fit"]["caused_by"] == {"job": by_rule["clean"]["id"], "rule": "clean"}
    code, shown = cli("jobs", "workflow.yaml", "--lineage", os.fsdecode(raw), cwd=tmp_path)
    assert code == 0, shown
    lines = shown.splitlines()
    assert lines[0] == "raw/bad\\xff name.dat  (the root event)"
    assert f"{by_rule['clean']['id']}  clean  done  -> clean/bad\\xff name.txt" in lines[1]
    assert by_rule["fit"]["id"] in lines[2]


async def test_lineage_of_a_raw_file_that_started_a_sweep_shows_every_branch(
    tmp_path: Path,
) -> None:
    """A raw file whose rule sweeps makes three root jobs from one event: `--lineage RAWFILE`
    shows all three, each with the job its output caused (it showed the newest branch only)."""
    (tmp_path / "data" / "raw").mkdir(parents=True)
    wf = tmp_path / "workflow.yaml"
    head, _, rest = CHAIN.partition("  clean:\n")
    fit_and_plot = rest[rest.index("  fit:\n") :].replace("glob: clean/*.txt", "glob: raw/*.dat")
    wf.write_text(head + fit_and_plot)
    async with Runner.from_file(wf) as runner:
        (tmp_path / "data" / "raw" / "a.dat").write_text("a")
        async with asyncio.timeout(WAIT):
            await runner.wait_for(lambda s: s.done + s.failed >= 6)
    metas = _metas(tmp_path / "jobs")
    fits = sorted(i for i, m in metas.items() if m["rule"] == "fit")
    plots = sorted(i for i, m in metas.items() if m["rule"] == "plot")
    assert (len(fits), len(plots)) == (3, 3)
    code, shown = cli("jobs", "workflow.yaml", "--lineage", "raw/a.dat", cwd=tmp_path)
    assert code == 0, shown
    lines = shown.splitlines()
    assert lines[0] == "raw/a.dat  (the root event)"
    assert len(lines) == 7, shown  # the event, three fits, each with its plot
    for i in fits + plots:
        assert sum(i in line for line in lines) == 1, (i, shown)
    assert sum("<- asked" in line for line in lines) == 1
    code, doc = cli("jobs", "workflow.yaml", "--lineage", "raw/a.dat", "--json", cwd=tmp_path)
    tree = json.loads(doc)
    assert sorted(r["id"] for r in tree["roots"]) == fits
    assert tree["root"]["id"] == tree["job"]
    assert tree["more_roots"] == 0
