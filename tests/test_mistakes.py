"""Every mistake in tests/data/mistakes.yaml is caught by `validate` and by the JSON Schema.

Both are made from the same definitions (model/settings.py: each setting's kind holds its
check and its schema), so a key, type, range or choice one of them knows the other knows too.
The documents marked ``schema: no`` are what a schema cannot say (files that exist, recipe
names, the environment): `validate` alone catches those, and the schema must let them through,
so the line between the two stays where the catalogue says.
"""

from __future__ import annotations

import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from meow_async import Runner, WorkflowFileError, load_workflow
from meow_async.model.schema import workflow_schema

CATALOGUE = Path(__file__).parent / "data" / "mistakes.yaml"


class Yaml12Loader(yaml.SafeLoader):
    """YAML as editors read it (1.2 core schema): ``on:`` is a key, not the boolean true."""


Yaml12Loader.yaml_implicit_resolvers = {
    first: [r for r in resolvers if r[0] != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def mistakes() -> list[tuple[str, str, str, bool]]:
    """(id, where validate must point, the document, whether the schema must catch it)."""
    out = []
    text = CATALOGUE.read_text()
    start = 1
    for doc in text.split("\n---\n")[1:]:
        start = text.index(doc, start)
        line = text[:start].count("\n") + 1
        where = re.search(r"^# where: (.+)$", doc, re.M)
        assert where is not None, f"mistakes.yaml:{line}: no '# where:' line"
        schema = not re.search(r"^# schema: no\b", doc, re.M)
        out.append((f"line{line}-{where[1]}", where[1], doc, schema))
    return out


MISTAKES = mistakes()


def test_the_catalogue_is_large() -> None:
    assert len(MISTAKES) >= 60
    assert sum(schema for *_, schema in MISTAKES) >= 50


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(workflow_schema())


@pytest.mark.parametrize(
    ("where", "doc", "schema"), [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES]
)
def test_validate_and_the_schema_both_catch_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    validator: jsonschema.Draft202012Validator,
    where: str,
    doc: str,
    schema: bool,
) -> None:
    monkeypatch.delenv("MEOW_TEST_NO_SUCH_VARIABLE", raising=False)
    path = tmp_path / "workflow.yaml"
    path.write_text(doc)
    with pytest.raises(WorkflowFileError) as info:
        Runner.from_spec(load_workflow(path))  # what `validate` runs
    found = [r.where for r in info.value.records]
    assert where in found, info.value
    assert all(r.line is not None for r in info.value.records), info.value
    errors = [e.message for e in validator.iter_errors(yaml.load(doc, Yaml12Loader))]  # noqa: S506
    if schema:
        assert errors, "the schema lets this mistake through"
    else:
        assert errors == [], "the schema catches it after all: drop its 'schema: no'"
