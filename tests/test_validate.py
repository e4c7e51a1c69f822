"""`meow-async validate` and `meow-async schema` as a user or an editor meets them.

`validate` runs as a real `python -m meow_async` process: every problem of a file in one run, in
file order, each with its line, column and value, as text or as JSON; the JSON Schema is checked
against the committed copy, the shipped examples and the workflows in the docs.
"""

from __future__ import annotations

import json
import pickle
import re
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from meow_async import Runner, WorkflowFileError, load_workflow
from meow_async.model.schema import schema_text, workflow_schema

from .test_cli import meow

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_FILE = ROOT / "docs" / "workflow.schema.json"
REGENERATE = ".venv/bin/python -m meow_async schema > docs/workflow.schema.json"


def spot(text: str, before: str, value: str) -> tuple[int, int]:
    """Line and column (from 1) of ``value`` where the text says ``before + value`` (once)."""
    found = [m.start() + len(before) for m in re.finditer(re.escape(before + value), text)]
    assert len(found) == 1, (before, value, found)
    head = text[: found[0]]
    return head.count("\n") + 1, found[0] - head.rfind("\n")


def listed(stderr: str) -> list[str]:
    """The problem lines of `validate`'s report, without their indent."""
    return [line[2:] for line in stderr.splitlines() if line.startswith("  ")]


# -- ten mistakes, one run ----------------------------------------------------------------------

TEN = """\
runner:
  base_dir: data
  max_jobs: 0
  shutdown_timeout: soon
recipes:
  count:
    kind: python
    script: |
      print(input_file)
    timeout: -5
    fork: sometimes
  tidy:
    kind: bash
    script: rm -f "$input_file"
    interpreter: python3
patterns:
  texts:
    glob: "/incoming/*.txt"
    recipe: count
    retries: many
    changes: [created, renamed]
  later:
    glob: "raw/*.h5"
    recipe: cuont
    sweep:
      t: {start: 0, stop: 1, jump: -0.5}
"""

#: (text before the value, the value as written, where, what the message says, the value)
TEN_EXPECTED: list[tuple[str, str, str, str, Any]] = [
    ("max_jobs: ", "0", "runner.max_jobs", "expected a whole number of at least 1", 0),
    ("timeout: ", "soon", "runner.shutdown_timeout", "seconds, 0 or more", "soon"),
    ("timeout: ", "-5", "recipes.count.timeout", "seconds, above 0", -5),
    ("fork: ", "sometimes", "recipes.count.fork", "expected true or false", "sometimes"),
    (
        "interpreter: ",
        "python3",
        "recipes.tidy.interpreter",
        "only python recipes take 'interpreter'",
        "python3",
    ),
    (
        "glob: ",
        '"/incoming',
        "patterns.texts.glob",
        "must be relative to the watched folder",
        "/incoming/*.txt",
    ),
    ("retries: ", "many", "patterns.texts.retries", "from 0 to 100", "many"),
    (
        "changes: ",
        "[created",
        "patterns.texts.changes",
        "unknown change in ['created', 'renamed']",
        ["created", "renamed"],
    ),
    (
        "recipe: ",
        "cuont",
        "patterns.later.recipe",
        "no recipe named 'cuont' (did you mean 'count'?)",
        "cuont",
    ),
    ("jump: ", "-0.5", "patterns.later.sweep.t.jump", "moves away from stop 1", -0.5),
]


def test_ten_mistakes_are_all_reported_in_one_run_in_file_order(tmp_path: Path) -> None:
    (tmp_path / "workflow.yaml").write_text(TEN)
    res = meow("validate", "workflow.yaml", cwd=tmp_path)
    assert res.returncode == 1, res.stdout
    assert res.stdout == ""
    assert "Traceback" not in res.stderr
    assert res.stderr.startswith("meow-async: error: workflow.yaml: 10 problem(s)\n"), res.stderr
    got = listed(res.stderr)
    assert len(got) == len(TEN_EXPECTED), res.stderr
    places = []
    for problem, (before, written, where, says, value) in zip(got, TEN_EXPECTED, strict=True):
        line, column = spot(TEN, before, written)
        places.append((line, column))
        assert problem.startswith(f"workflow.yaml:{line}:{column}: {where}: "), problem
        assert says in problem, problem
        assert problem.endswith(f" (value: {json.dumps(value)})"), problem
    assert places == sorted(places)  # file order


def test_ten_mistakes_as_json(tmp_path: Path) -> None:
    (tmp_path / "workflow.yaml").write_text(TEN)
    res = meow("validate", "--json", "workflow.yaml", cwd=tmp_path)
    assert res.returncode == 1
    assert res.stderr == ""
    doc = json.loads(res.stdout)
    assert set(doc) == {"file", "valid", "problems", "warnings"}
    assert doc["file"] == "workflow.yaml"
    assert doc["valid"] is False
    assert len(doc["problems"]) == len(TEN_EXPECTED)
    for problem, (before, written, where, says, value) in zip(
        doc["problems"], TEN_EXPECTED, strict=True
    ):
        assert set(problem) == {"line", "column", "where", "message", "value"}
        assert (problem["line"], problem["column"]) == spot(TEN, before, written)
        assert problem["where"] == where
        assert says in problem["message"]
        assert "(value:" not in problem["message"]  # the value is a field of its own
        assert problem["value"] == value


def test_where_each_kind_of_problem_points(tmp_path: Path) -> None:
    """An unknown key at the key; a duplicate by its whole path; a missing one at its entry's
    name; one bad item of a list at that item; a value JSON has no word for as YAML says it."""
    text = textwrap.dedent(
        """\
        recipes:
          r: {kind: bash, script: 'true'}
        patterns:
          a:
            glob: "*.txt"
            recipe: r
            setle: 2
            recipe: r
          b:
            glob: "*.csv"
          h: {route: /in, port: 0, recipe: r, methods: [GET, FETCH]}
          n: {glob: "*.n", recipe: r, retry_backoff: .inf}
        """
    )
    (tmp_path / "workflow.yaml").write_text(text)
    res = meow("validate", "--json", "workflow.yaml", cwd=tmp_path)
    assert res.returncode == 1, res.stdout
    got = [
        (p["line"], p["column"], p["where"], p["value"]) for p in json.loads(res.stdout)["problems"]
    ]
    assert got == [
        (*spot(text, "    ", "setle"), "patterns.a.setle", 2),
        (*spot(text, "setle: 2\n    ", "recipe"), "patterns.a.recipe", "r"),
        (*spot(text, "  ", "b:"), "patterns.b.recipe", None),
        (*spot(text, "[GET, ", "FETCH"), "patterns.h.methods", "FETCH"),
        (*spot(text, "retry_backoff: ", ".inf"), "patterns.n.retry_backoff", ".inf"),
    ]


def test_a_yaml_syntax_error_has_its_line_and_column(tmp_path: Path) -> None:
    text = "runner:\n  base_dir: data\n   jobs_dir: [jobs\nrecipes: {}\n"
    (tmp_path / "workflow.yaml").write_text(text)
    res = meow("validate", "workflow.yaml", cwd=tmp_path)
    assert res.returncode == 1
    # the ':' after jobs_dir, which the deeper indent makes a mapping inside a value
    assert listed(res.stderr) == [
        "workflow.yaml:3:12: not valid YAML: mapping values are not allowed here"
    ]
    res = meow("validate", "--json", "workflow.yaml", cwd=tmp_path)
    assert res.returncode == 1
    (problem,) = json.loads(res.stdout)["problems"]
    assert (problem["line"], problem["column"]) == (3, 12)
    assert problem["message"].startswith("not valid YAML: ")


def test_a_character_yaml_forbids_has_its_column(tmp_path: Path) -> None:
    (tmp_path / "workflow.yaml").write_text('patterns:\n  p: {glob: "a\x07b"}\n')
    res = meow("validate", "workflow.yaml", cwd=tmp_path)
    assert res.returncode == 1
    assert "Traceback" not in res.stderr, res.stderr
    assert listed(res.stderr) == [
        "workflow.yaml:2:15: not valid YAML: unacceptable character #x0007: special characters "
        "are not allowed"
    ]


# -- exit status --------------------------------------------------------------------------------

GOOD = "recipes:\n  r: {kind: bash, script: 'true'}\npatterns:\n  p: {glob: '*.txt', recipe: r}\n"


def test_exit_status_and_output_of_a_valid_file(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "workflow.yaml").write_text("runner: {base_dir: data}\n" + GOOD)
    res = meow("validate", "workflow.yaml", cwd=tmp_path)
    assert (res.returncode, res.stderr) == (0, "")
    assert res.stdout == "workflow.yaml: OK: 1 pattern(s), 1 recipe(s), 1 rule(s)\n"
    res = meow("validate", "--json", "workflow.yaml", cwd=tmp_path)
    assert (res.returncode, res.stderr) == (0, "")
    assert json.loads(res.stdout) == {
        "file": "workflow.yaml",
        "valid": True,
        "problems": [],
        "warnings": [],
    }


def test_exit_status_of_a_missing_file_and_of_usage_errors(tmp_path: Path) -> None:
    res = meow("validate", "--json", "nowhere.yaml", cwd=tmp_path)
    assert res.returncode == 1
    assert json.loads(res.stdout) == {
        "file": "nowhere.yaml",
        "valid": False,
        "problems": [
            {
                "line": None,
                "column": None,
                "where": "",
                "message": "the workflow file does not exist",
                "value": None,
            }
        ],
        "warnings": [],
    }
    for args in (("validate",), ("validate", "--jsn", "w.yaml"), ("schema", "extra")):
        res = meow(*args, cwd=tmp_path)
        assert res.returncode == 2, args
        assert "usage: meow-async" in res.stderr


def test_a_problem_found_only_when_the_rules_are_made_is_json_too(tmp_path: Path) -> None:
    """Two network patterns on one port that disagree about its listener: no single place."""
    (tmp_path / "workflow.yaml").write_text(
        "recipes:\n  r: {kind: bash, script: 'true'}\n"
        "patterns:\n"
        "  a: {port: 7399, recipe: r, framing: length}\n"
        "  b: {port: 7399, recipe: r, framing: delimiter}\n"
    )
    text = meow("validate", "workflow.yaml", cwd=tmp_path)
    res = meow("validate", "--json", "workflow.yaml", cwd=tmp_path)
    assert text.returncode == res.returncode == 1, (text.stderr, res.stdout)
    (problem,) = json.loads(res.stdout)["problems"]
    assert problem["line"] is None
    assert problem["message"] in text.stderr


def test_the_error_keeps_its_records_through_pickle(tmp_path: Path) -> None:
    (tmp_path / "workflow.yaml").write_text(TEN)
    with pytest.raises(WorkflowFileError) as info:
        load_workflow(tmp_path / "workflow.yaml")
    err = info.value
    assert err.problems == [str(r) for r in err.records]
    assert len(err.records) == 10
    again = pickle.loads(pickle.dumps(err))
    assert (again.path, again.problems, again.records) == (err.path, err.problems, err.records)


# -- the JSON Schema ----------------------------------------------------------------------------


def test_the_committed_schema_is_the_generated_one() -> None:
    assert SCHEMA_FILE.read_text() == schema_text(), (
        f"docs/workflow.schema.json is out of date (a workflow setting changed); regenerate it "
        f"from the project folder with:  {REGENERATE}"
    )


def test_the_schema_command_prints_it(tmp_path: Path) -> None:
    res = meow("schema", cwd=tmp_path)
    assert (res.returncode, res.stderr) == (0, "")
    assert res.stdout == schema_text()
    jsonschema.Draft202012Validator.check_schema(json.loads(res.stdout))


def validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(workflow_schema())


def doc_workflows() -> list[tuple[str, str]]:
    """Every ```yaml block in docs/*.md and README.md that is a whole workflow (has
    `patterns`), named by file and line."""
    out = []
    for page in [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]:
        text = page.read_text()
        for m in re.finditer(r"^( *)```yaml\n(.*?)^\1```", text, re.S | re.M):
            block = textwrap.dedent(m[2])
            doc = yaml.safe_load(block)
            if isinstance(doc, dict) and "patterns" in doc:
                line = text[: m.start()].count("\n") + 1
                out.append((f"{page.relative_to(ROOT)}:{line}", block))
    return out


DOC_WORKFLOWS = doc_workflows()
EXAMPLES = sorted((ROOT / "examples").rglob("*.yaml"))


def test_there_are_examples_to_check() -> None:
    assert len(EXAMPLES) >= 3
    assert len(DOC_WORKFLOWS) >= 5


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_schema_takes_every_shipped_example(path: Path) -> None:
    errors = [e.message for e in validator().iter_errors(yaml.safe_load(path.read_text()))]
    assert errors == []


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_validate_takes_every_shipped_example(path: Path) -> None:
    """What `validate` runs: settings given relative to the file (a secret's file, a
    certificate) are checked where the file says, as paths."""
    Runner.from_spec(load_workflow(path))


@pytest.mark.parametrize(("name", "text"), DOC_WORKFLOWS, ids=[n for n, _ in DOC_WORKFLOWS])
def test_the_schema_takes_every_workflow_in_the_docs(name: str, text: str) -> None:
    """A block that starts with a comment about its mistakes is there to show them: the schema
    must find some too. Every other one must pass."""
    errors = [e.message for e in validator().iter_errors(yaml.safe_load(text))]
    if "mistake" in text.splitlines()[0] and text.startswith("#"):
        assert errors, name
    else:
        assert errors == [], name


WRONG = {
    "unknown top-level key": ("extra: 1\n" + GOOD, ["extra"]),
    "a count given as text": (GOOD.replace("recipe: r}", "recipe: r, retries: '3'}"), ["3"]),
    "glob and port": (GOOD.replace("recipe: r}", "recipe: r, port: 7000}"), ["glob"]),
    "interpreter on a bash recipe": (
        GOOD.replace("script: 'true'}", "script: 'true', interpreter: python3}"),
        ["False schema"],
    ),
    "an unknown change": (
        GOOD.replace("recipe: r}", "recipe: r, changes: [renamed]}"),
        ["renamed"],
    ),
    "no kind and no file to tell it": (GOOD.replace("kind: bash, ", ""), ["not valid under any"]),
    "a pattern without its recipe": (GOOD.replace(", recipe: r}", "}"), ["recipe"]),
    "runner max_jobs as words": ("runner: {max_jobs: four}\n" + GOOD, ["four"]),
    "no patterns": ("recipes:\n  r: {kind: bash, script: 'true'}\n", ["patterns"]),
}


@pytest.mark.parametrize("case", list(WRONG))
def test_the_schema_rejects_wrong_files_as_validate_does(tmp_path: Path, case: str) -> None:
    text, mentions = WRONG[case]
    errors = list(validator().iter_errors(yaml.safe_load(text)))
    assert errors, case
    said = " ".join(e.message for e in errors)
    for word in mentions:
        assert word in said, said
    (tmp_path / "workflow.yaml").write_text(text)
    with pytest.raises(WorkflowFileError):
        load_workflow(tmp_path / "workflow.yaml")


def test_the_schema_follows_the_dataclasses() -> None:
    """Types, defaults, required keys and descriptions come from the fields themselves."""
    defs = workflow_schema()["$defs"]
    file_pattern = defs["FilePattern"]
    assert file_pattern["required"] == ["recipe", "glob"]
    assert file_pattern["properties"]["changes"] == {
        "description": "Which changes trigger: any of created, modified, moved, deleted.",
        "type": "array",
        "items": {"enum": ["created", "modified", "moved", "deleted"]},
        "minItems": 1,
        "default": ["created", "modified", "moved"],
    }
    assert file_pattern["properties"]["on_restart"]["enum"] == ["rerun", "fail"]
    assert "restart" in file_pattern["properties"]["on_restart"]["description"]
    assert defs["HttpPattern"]["required"] == ["recipe", "route", "port"]
    runner = defs["runner"]["properties"]
    assert runner["max_jobs"] == {
        "description": "jobs running at once (default: the CPUs this process may use).",
        "type": "integer",
        "minimum": 1,
    }  # no default: it depends on the machine
    assert runner["spool_dir"]["type"] == ["string", "null"]
    assert defs["recipe"]["properties"]["timeout"]["type"] == ["number", "null"]
    assert {"python", "bash"} <= set(defs["recipe"]["properties"]["kind"]["enum"])


# -- nested blocks, YAML's `on`, type names, warnings, quotes -----------------------------------

NOTIFY_MISTAKES = """\
recipes:
  r: {kind: bash, script: 'true'}
patterns:
  p:
    glob: "*.txt"
    recipe: r
    notify:
      on: [failed, exploded]
      limit: 0
      webhook:
        url: ftp://127.0.0.1/
        timeout: -1
        tokn_env: HOOK_TOKEN
      email:
        host: 127.0.0.1
        sender: lab@example.org
        to: [ops@example.org, nobody]
        port: 70000
"""


def test_every_mistake_inside_one_notify_block_is_reported(tmp_path: Path) -> None:
    """Each setting of notify, its webhook and its email is checked on its own: seven mistakes,
    seven lines, each where it is (`on` at `on:`, though YAML 1.1 reads that key as true)."""
    (tmp_path / "workflow.yaml").write_text(NOTIFY_MISTAKES)
    res = meow("validate", "--json", "workflow.yaml", cwd=tmp_path)
    assert res.returncode == 1, res.stdout
    got = [(p["line"], p["column"], p["where"]) for p in json.loads(res.stdout)["problems"]]
    t = NOTIFY_MISTAKES
    assert got == [
        (*spot(t, "on: ", "[failed"), "patterns.p.notify.on"),
        (*spot(t, "limit: ", "0"), "patterns.p.notify.limit"),
        (*spot(t, "url: ", "ftp"), "patterns.p.notify.webhook.url"),
        (*spot(t, "timeout: ", "-1"), "patterns.p.notify.webhook.timeout"),
        (*spot(t, "        ", "tokn_env"), "patterns.p.notify.webhook.tokn_env"),
        (*spot(t, "      ", "email:"), "patterns.p.notify.email.from"),  # missing: at email
        (*spot(t, "        ", "sender"), "patterns.p.notify.email.sender"),
        (*spot(t, "ops@example.org, ", "nobody"), "patterns.p.notify.email.to[1]"),
        (*spot(t, "port: ", "70000"), "patterns.p.notify.email.port"),
    ], res.stdout
    text = meow("validate", "workflow.yaml", cwd=tmp_path).stderr
    assert "email.sender: unknown setting (did you mean 'from'?)" in text
    assert "email.port: expected a port number from 1 to 65535 (value: 70000)" in text


def test_no_message_names_the_loaders_own_types(tmp_path: Path) -> None:
    (tmp_path / "workflow.yaml").write_text(
        "recipes:\n  r: {kind: bash, script: 'true', parameters: [a, b]}\n"
        "patterns:\n  p: {glob: '*.txt', recipe: r, outputs: {out: {x: [1, {2: 3}]}}}\n"
    )
    res = meow("validate", "workflow.yaml", cwd=tmp_path)
    assert res.returncode == 1
    assert "expected a mapping of names to values, got a list" in res.stderr
    assert "_Seq" not in res.stderr, res.stderr
    assert "_Map" not in res.stderr, res.stderr


def test_warnings_are_in_the_json_too(tmp_path: Path) -> None:
    text = (
        "recipes:\n  r: {kind: bash, script: 'true'}\n"
        "patterns:\n  p: {glob: '*.txt', recipe: r, outputs: {out: '{BASE}/{PREFX}.json'}}\n"
    )
    (tmp_path / "data").mkdir()
    (tmp_path / "workflow.yaml").write_text(text)
    res = meow("validate", "--json", "workflow.yaml", cwd=tmp_path)
    assert (res.returncode, res.stderr) == (0, "")
    doc = json.loads(res.stdout)
    assert doc["valid"] is True
    assert doc["warnings"] == [
        {
            "line": 4,
            "column": spot(text, "out: ", "'{BASE}")[1],
            "where": "patterns.p.outputs.out",
            "message": "{PREFX} is not a keyword (did you mean {PREFIX}?); it is passed on as "
            "written",
            "value": "{BASE}/{PREFX}.json",
        }
    ]
    # and beside problems, when there are some
    (tmp_path / "workflow.yaml").write_text(text.replace("recipe: r,", "recipe: r, retries: -1,"))
    doc = json.loads(meow("validate", "--json", "workflow.yaml", cwd=tmp_path).stdout)
    assert [p["where"] for p in doc["problems"]] == ["patterns.p.retries"]
    assert [w["where"] for w in doc["warnings"]] == ["patterns.p.outputs.out"]


def test_an_unclosed_quote_is_placed_where_it_opens(tmp_path: Path) -> None:
    text = (
        "recipes:\n  r: {kind: bash, script: 'true'}\npatterns:\n"
        "  q: {glob: '*.csv', recipe: r}\n"
        '  p:\n    glob: "incoming/*.txt\n    recipe: r\n'
    )
    (tmp_path / "workflow.yaml").write_text(text)
    res = meow("validate", "workflow.yaml", cwd=tmp_path)
    assert res.returncode == 1
    line, column = spot(text, "glob: ", '"incoming')
    assert listed(res.stderr) == [
        f"workflow.yaml:{line}:{column}: not valid YAML: a quoted value is not closed (its "
        "closing quote is missing)"
    ]
