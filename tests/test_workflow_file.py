"""Workflow files: everything they describe is built, every problem is reported with its line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from meow_async import BashRecipe, FilePattern, PythonRecipe, WorkflowFileError, load_workflow

EXAMPLE = Path(__file__).parent.parent / "examples" / "linked" / "workflow.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "wf.yaml"
    path.write_text(text)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(WorkflowFileError) as info:
        load_workflow(path)
    assert info.value.path == str(path)
    return info.value.problems


def test_shipped_example_loads() -> None:
    spec = load_workflow(EXAMPLE)
    folder = EXAMPLE.parent
    assert spec.config.base_dir == folder / "data"
    assert spec.config.jobs_dir == folder / ".meow" / "jobs"
    assert spec.config.max_jobs == 4
    assert [p.name for p in spec.patterns] == ["incoming_text", "counted", "from_network"]
    kinds = {r.name: type(r).__name__ for r in spec.recipes}
    assert kinds == {"count_words": "PythonRecipe", "summarise": "BashRecipe"}


def test_everything_a_file_can_say(tmp_path: Path) -> None:
    (tmp_path / "s.sh").write_text("echo hi\n")
    path = write(
        tmp_path,
        """
runner:
  base_dir: in
  jobs_dir: /tmp/elsewhere/jobs
  max_jobs: 3
  queue_size: 10
  shutdown_timeout: 1.5
  kill_timeout: 0
  watch_step_ms: 2
  watch_debounce_ms: 20
recipes:
  py:
    kind: python
    script: |
      print(x)
    parameters: {x: 1}
    interpreter: /usr/bin/python3
  sh:
    file: s.sh
    shell: /bin/bash
patterns:
  p:
    glob: "**/*.h5"
    recipe: py
    variable: h5
    changes: [created, moved]
    parameters: {a: "{PREFIX}"}
    outputs: {out: "{BASE}/out/{PREFIX}.json"}
    sweep: {t: {start: 0, stop: 1, jump: 0.5}}
    retroactive: true
""",
    )
    spec = load_workflow(path)
    cfg = spec.config
    assert cfg.base_dir == tmp_path / "in"
    assert cfg.jobs_dir == Path("/tmp/elsewhere/jobs")
    assert (cfg.max_jobs, cfg.queue_size, cfg.shutdown_timeout, cfg.kill_timeout) == (3, 10, 1.5, 0)
    (p,) = spec.patterns
    assert isinstance(p, FilePattern)
    assert p.variable == "h5"
    assert {c.value for c in p.changes} == {"created", "moved"}
    assert p.retroactive is True
    assert [pt["t"] for pt in p.sweep_points()] == [0.0, 0.5, 1.0]
    py, sh = spec.recipes
    assert isinstance(py, PythonRecipe)
    assert py.interpreter == "/usr/bin/python3"
    assert py.parameters == {"x": 1}
    assert isinstance(sh, BashRecipe)
    assert sh.source == "echo hi\n"
    assert sh.shell == "/bin/bash"


def test_every_problem_is_listed_with_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """runner:
  max_job: 3
  kill_timeout: -1
recipes:
  good:
    kind: bash
    script: echo ok
  broken:
    kind: python
    script: |
      if x
  missing:
    file: nope.py
  unknown:
    kind: ruby
    script: puts 1
patterns:
  a:
    glob: "/abs/*.txt"
    recipe: good
  b:
    glob: "*.txt"
    recipe: gooood
  c:
    glob: "*.txt"
    recipe: good
    variable: 2x
  d:
    glob: "*.txt"
    recipe: good
    sweep: {t: {start: 0, stop: 2, jump: -1}}
  e:
    recipe: good
  f:
    glob: "*.txt"
    recipe: broken
""",
    )
    got = problems(path)
    expected = [
        (2, "runner.max_job", "did you mean 'max_jobs'"),
        (3, "runner.kill_timeout", "0 or more"),
        (10, "recipes.broken.script", "syntax error"),
        (13, "recipes.missing.file", "does not exist"),
        (15, "recipes.unknown.kind", "unknown kind 'ruby'"),
        (19, "patterns.a.glob", "relative"),
        (23, "patterns.b.recipe", "no recipe named 'gooood' (did you mean 'good'?)"),
        (27, "patterns.c.variable", "invalid variable name '2x'"),
        (31, "patterns.d.sweep.t.jump", "moves away"),
        (32, "patterns.e.glob", "a pattern needs 'glob' (files"),
    ]
    assert len(got) == len(expected), got
    for line, (n, where, says) in zip(got, expected, strict=True):
        assert re.match(rf"{re.escape(str(path))}:{n}:\d+: {re.escape(where)}: ", line), line
        assert says in line, line


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("patterns: [1, 2\n", ":2:1: not valid YAML"),
        ("patterns: 1\n  glob: 2\n", ":2:7: not valid YAML: mapping values are not allowed"),
        ("just a string\n", "expected a mapping with 'patterns'"),
        ("recipes: {}\n", "no patterns"),
        (
            "patterns:\n  p: {glob: '*', recipe: r}\n  p: {glob: '*', recipe: r}\nrecipes:\n  r: "
            "{kind: bash, script: x}\n",
            ":3:3: patterns.p: this key appears more than once",
        ),
        ("patterns: 5\n", "patterns: expected a mapping of names to entries"),
        ("patterns:\n  p: 5\n", "patterns.p: expected a mapping of settings"),
        ("extra: 1\npatterns: {}\n", "workflow.extra: unknown setting"),
        (
            "patterns:\n  'bad name': {glob: '*', recipe: r}\n"
            "recipes:\n  r: {kind: bash, script: x}\n",
            "invalid name 'bad name'",
        ),
        ("recipes:\n  r: {script: x}\npatterns: {}\n", "say which kind of recipe"),
        (
            "recipes:\n  r: {kind: bash, script: x, interpreter: py}\npatterns: {}\n",
            "only python recipes take 'interpreter'",
        ),
    ],
)
def test_malformed_files(tmp_path: Path, text: str, says: str) -> None:
    got = problems(write(tmp_path, text))
    assert any(says in p for p in got), got


def test_missing_file(tmp_path: Path) -> None:
    assert problems(tmp_path / "nope.yaml") == ["the workflow file does not exist"]
