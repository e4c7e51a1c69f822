"""A job's output is capped: ``max_output`` bytes per stream, its head and its tail kept.

The files are the job's own stdout and stderr (no pipe through the runner); while it runs,
what passes the limit is freed on disk from the middle of the file, and at its end the file
is compacted to head, one line saying what was cut, and tail.

Real runners, real processes and files; every wait is on a condition with a timeout.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Any

import pytest

from meow_async import ConfigError, FilePattern, Recipe
from meow_async.conductors.output import punch

from .conftest import WAIT, Workspace, poll_until, py_recipe, sh_recipe

#: Numbered lines to stdout and stderr: ``lines`` of them, 100 bytes each.
LOUD_PY = """\
import sys
for i in range(lines):
    line = f"{i:09d} " + "x" * 89 + "\\n"
    sys.stdout.write(line)
    sys.stderr.write(line)
"""
LOUD_SH = """\
python3 -c '
import sys
for i in range(int(sys.argv[1])):
    line = f"{i:09d} " + "x" * 89 + "\\n"
    sys.stdout.write(line)
    sys.stderr.write(line)
' "$lines"
"""

LIMIT = 64 * 1024


async def until(runner: Any, n: int) -> None:
    async with asyncio.timeout(WAIT):
        await runner.wait_for(lambda s: s.finished >= n)


def check_cut(path: Path, lines: int, limit: int, cut: dict[str, int]) -> None:
    """Head, one line saying what was cut, tail: whole lines, the numbers in order."""
    data = path.read_bytes()
    (marker,) = re.finditer(rb"\[meow_async: (\d+) bytes cut here[^\n]*\]\n", data)
    head, tail = data[: marker.start()], data[marker.end() :]
    assert int(marker[1]) == cut["cut"]
    assert len(head) == cut["kept_head"]
    assert len(tail) == cut["kept_tail"]
    assert cut["kept_head"] + cut["cut"] + cut["kept_tail"] == cut["size"] == lines * 100
    assert limit - 200 <= cut["kept_head"] + cut["kept_tail"] <= limit
    head_lines = head.decode().splitlines()
    tail_lines = tail.decode().splitlines()
    numbers = [int(line[:9]) for line in head_lines + tail_lines]
    assert numbers == [*range(len(head_lines)), *range(lines - len(tail_lines), lines)]
    assert all(len(line) == 99 for line in head_lines + tail_lines)


async def test_output_over_max_output_keeps_its_head_and_tail(ws: Workspace) -> None:
    lines = 50_000  # 5 MB per stream
    recipes: list[Recipe] = [
        py_recipe("warm", LOUD_PY, parameters={"lines": lines}, max_output=LIMIT),
        py_recipe("spawned", LOUD_PY, parameters={"lines": lines}, fork=False),
        sh_recipe("sh", LOUD_SH, parameters={"lines": lines}),
        py_recipe("quiet", LOUD_PY, parameters={"lines": 10}),
    ]
    patterns = [FilePattern(name=r.name, glob=f"*.{r.name}", recipe=r.name) for r in recipes]
    # The runner's default for the recipes that set none.
    async with ws.runner(patterns, recipes, max_output=LIMIT, max_jobs=4) as r:
        for recipe in recipes:
            ws.write(f"a.{recipe.name}")
        await until(r, len(recipes))
    jobs = {j["rule"]: j for j in ws.jobs_list()}
    for name in ("warm", "spawned", "sh"):
        job = jobs[name]
        assert job["state"] == "done", (name, job["error"])
        assert job["max_output"] == LIMIT
        assert set(job["output_cut"]) == {"stdout.txt", "stderr.txt"}, name
        for stream, cut in job["output_cut"].items():
            check_cut(Path(job["dir"]) / stream, lines, LIMIT, cut)
    quiet = jobs["quiet"]
    assert "output_cut" not in quiet
    assert len((Path(quiet["dir"]) / "stdout.txt").read_bytes()) == 1000


#: Writes 40 MB to stdout, a megabyte at a time, then waits to be released.
FLOOD_PY = """\
import sys, time
from pathlib import Path
block = ("y" * 99 + "\\n") * 10_000
for i in range(40):
    sys.stdout.write(block)
    sys.stdout.flush()
    time.sleep(0.02)
Path("written").touch()
while not Path("release").exists():
    time.sleep(0.01)
"""


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


async def test_a_running_job_s_output_takes_little_disk_past_max_output(ws: Workspace) -> None:
    """Past the limit the middle is freed while the job writes on: 40 MB written, a few kept
    on disk; its end then compacts the file."""
    probe = ws.root / "probe"
    probe.write_bytes(b"z" * 65536)
    if not punch(str(probe), 4096, 61440):
        pytest.skip(f"the file system under {ws.root} cannot punch holes")
    limit = 1024 * 1024
    pattern = FilePattern(name="p", glob="*.in", recipe="r")
    async with ws.runner([pattern], [py_recipe("r", FLOOD_PY, max_output=limit)]) as r:
        ws.write("a.in")
        await poll_until(lambda: any(ws.jobs.glob("*/*/written")))
        (job_dir,) = [p.parent for p in ws.jobs.glob("*/*/written")]
        out = job_dir / "stdout.txt"
        assert out.stat().st_size == 40 * 1_000_000  # all of it written, at its offset...
        await poll_until(lambda: allocated(out) <= 4 * limit)  # ...little of it on disk
        (job_dir / "release").touch()
        await until(r, 1)
    (job,) = ws.jobs_list()
    cut = job["output_cut"]["stdout.txt"]
    assert cut["size"] == 40 * 1_000_000
    assert cut["kept_head"] + cut["kept_tail"] <= limit
    assert out.stat().st_size < limit + 200
    assert b"\0" not in out.read_bytes()  # the freed middle is gone, not left as zeros


@pytest.mark.parametrize("value", [0, -1, 1.5, "1M", True])
def test_max_output_is_a_count_of_bytes(value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        py_recipe("r", "pass\n", max_output=value)
    assert info.value.field == "max_output"
