"""Each shipped example has a README that says what it shows, how to run it and what to see,
and its commands name files that exist. (The examples themselves run in test_cli.py,
test_pingpong.py and test_validate.py.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p for p in (ROOT / "examples").iterdir() if p.is_dir())


def test_there_are_examples() -> None:
    assert {p.name for p in EXAMPLES} >= {"http", "linked", "notebook", "pingpong"}


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_each_example_has_a_readme_that_runs_its_files(example: Path) -> None:
    readme = example / "README.md"
    assert readme.is_file(), f"{example.name} has no README.md"
    text = readme.read_text()
    assert text.startswith("# ")
    for part in ("What it shows", "What you should see"):
        assert part in text, f"{example.name}/README.md: no '{part}'"
    runs = re.findall(r"meow-async run (\S+)", text)
    assert runs, f"{example.name}/README.md: no `meow-async run` command"
    for path in runs:
        assert (ROOT / path).is_file(), f"{example.name}/README.md runs {path}: not there"
    for workflow in example.glob("*.yaml"):
        assert f"examples/{example.name}/{workflow.name}" in text, workflow.name
