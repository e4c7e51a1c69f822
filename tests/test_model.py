"""Patterns, recipes, rules, sweeps, globs and templates validate when made."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from meow_async import (
    BashRecipe,
    Change,
    ConfigError,
    FilePattern,
    PythonRecipe,
    Rule,
    Sweep,
    Workflow,
)
from meow_async.model.globs import compile_glob
from meow_async.model.templates import KEYWORDS, expand, keyword_values

from .conftest import py_recipe, sh_recipe


def fp(**kw: object) -> FilePattern:
    args: dict[str, object] = {"name": "p", "glob": "*.txt", "recipe": "r"}
    args.update(kw)
    return FilePattern(**args)  # type: ignore[arg-type]


# -- patterns -----------------------------------------------------------------------------------


def test_file_pattern_defaults() -> None:
    p = fp()
    assert p.variable == "input_file"
    assert p.changes == {Change.created, Change.modified, Change.moved}
    assert p.retroactive is False
    assert p.matches("a.txt")
    assert not p.matches("sub/a.txt")


@pytest.mark.parametrize(
    ("kw", "field", "says"),
    [
        ({"name": "bad name"}, "name", "invalid name 'bad name'"),
        ({"name": ""}, "name", "invalid name ''"),
        ({"recipe": "no/slash"}, "recipe", "invalid name 'no/slash'"),
        ({"glob": ""}, "glob", "the glob is empty"),
        ({"glob": "/abs/*.txt"}, "glob", "relative"),
        ({"glob": "../up/*.txt"}, "glob", "'..'"),
        ({"glob": "a/[bc.txt"}, "glob", "unclosed '['"),
        ({"glob": "a**b/c"}, "glob", "whole path segment"),
        ({"variable": "1abc"}, "variable", "invalid variable name '1abc'"),
        ({"variable": "class"}, "variable", "Python keyword"),
        ({"variable": "MEOW_X"}, "variable", "MEOW_"),
        ({"changes": ["created", "renamed"]}, "changes", "unknown change"),
        ({"changes": []}, "changes", "at least one"),
        ({"changes": "created"}, "changes", "list of changes"),
        ({"parameters": {"x": object()}}, "parameters.x", "type object is not allowed"),
        ({"parameters": {"x": float("nan")}}, "parameters.x", "finite"),
        ({"parameters": {"bad-name": 1}}, "parameters.bad-name", "invalid variable name"),
        ({"parameters": [1, 2]}, "parameters", "expected a mapping"),
        ({"outputs": {"input_file": "x"}}, "outputs", "already the triggering variable"),
        ({"sweep": {"t": {"start": 0, "stop": 1}}}, "sweep.t", "start, stop and jump"),
        ({"sweep": {"t": {"start": 0, "stop": 1, "jump": 0}}}, "sweep.t.jump", "must not be 0"),
        ({"sweep": {"t": {"start": 0, "stop": 5, "jump": -1}}}, "sweep.t.jump", "moves away"),
        ({"sweep": {"t": {"start": 0, "stop": "x", "jump": 1}}}, "sweep.t.stop", "finite number"),
        ({"retroactive": "yes"}, "retroactive", "true or false"),
    ],
)
def test_file_pattern_rejects(kw: dict[str, object], field: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        fp(**kw)
    assert info.value.field == field
    assert says in str(info.value)
    assert str(info.value).startswith("pattern")


def test_pattern_is_frozen_and_picklable() -> None:
    p = fp(parameters={"a": [1, {"b": None}]}, sweep={"t": {"start": 1, "stop": 3, "jump": 1}})
    with pytest.raises(AttributeError):
        p.glob = "x"  # type: ignore[misc]
    q = pickle.loads(pickle.dumps(p))
    assert q == p
    assert q.matches("a.txt")


def test_config_error_survives_pickling() -> None:
    with pytest.raises(ConfigError) as info:
        fp(glob="")
    again = pickle.loads(pickle.dumps(info.value))
    assert str(again) == str(info.value)
    assert again.field == "glob"


@pytest.mark.parametrize(
    ("glob", "yes", "no"),
    [
        ("*.txt", ["a.txt"], ["a/b.txt", "a.txtx", ".txt"]),  # hidden: only .* matches
        ("in/*.txt", ["in/a.txt"], ["in/x/a.txt", "a.txt", "out/a.txt"]),
        ("**/*.h5", ["a.h5", "x/a.h5", "x/y/z/a.h5"], ["a.h55", "x/a.h5/b"]),
        ("runs/**/raw/*.dat", ["runs/raw/1.dat", "runs/a/b/raw/1.dat"], ["runs/a/raw/x/1.dat"]),
        ("runs/**", ["runs/a", "runs/a/b"], ["run/a", "runs"]),
        ("d?ta/[ab]*.csv", ["data/a1.csv", "dota/b.csv"], ["data/c.csv", "dta/a.csv"]),
        ("[!x]*.csv", ["a.csv"], ["x.csv"]),
        ("a+b (1).txt", ["a+b (1).txt"], ["aab (1).txt"]),
    ],
)
def test_glob_matching(glob: str, yes: list[str], no: list[str]) -> None:
    rx = compile_glob(glob)
    for path in yes:
        assert rx.fullmatch(path), (glob, path)
    for path in no:
        assert not rx.fullmatch(path), (glob, path)


# -- sweeps -------------------------------------------------------------------------------------


def test_sweep_values_include_stop_and_do_not_drift() -> None:
    assert Sweep(start=1, stop=5, jump=2).values() == [1, 3, 5]
    assert Sweep(start=1, stop=6, jump=2).values() == [1, 3, 5]
    assert Sweep(start=5, stop=1, jump=-2).values() == [5, 3, 1]
    vals = Sweep(start=0, stop=1, jump=0.1).values()
    assert len(vals) == 11
    assert vals[-1] == 1.0
    assert vals[3] == 0.3


def test_sweep_points_are_the_cartesian_product() -> None:
    p = fp(
        sweep={"a": {"start": 1, "stop": 2, "jump": 1}, "b": {"start": 10, "stop": 30, "jump": 10}}
    )
    points = list(p.sweep_points())
    assert len(points) == 6
    assert {"a": 2, "b": 30} in points
    assert list(fp().sweep_points()) == [{}]


def test_sweep_refuses_huge_sweeps() -> None:
    with pytest.raises(ConfigError, match="more than"):
        Sweep(start=0, stop=10**9, jump=1)


# -- recipes ------------------------------------------------------------------------------------


def test_recipe_needs_exactly_one_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exactly one of 'script'"):
        PythonRecipe(name="r")
    with pytest.raises(ConfigError, match="exactly one of 'script'"):
        PythonRecipe(name="r", script="x=1", file=tmp_path / "x.py")
    with pytest.raises(ConfigError, match="empty"):
        BashRecipe(name="r", script="  \n")


def test_recipe_file_is_read_and_missing_file_is_named(tmp_path: Path) -> None:
    f = tmp_path / "s.py"
    f.write_text("print(1)\n")
    assert PythonRecipe(name="r", file=f).source == "print(1)\n"
    with pytest.raises(ConfigError) as info:
        PythonRecipe(name="r", file=tmp_path / "nope.py")
    assert info.value.field == "file"
    assert "nope.py" in str(info.value)
    assert "does not exist" in str(info.value)


def test_python_recipe_syntax_error_is_caught_when_made() -> None:
    with pytest.raises(ConfigError, match="syntax error at line 2"):
        PythonRecipe(name="r", script="x = 1\nif x\n")


def _run_python(source: str, tmp_path: Path) -> str:
    script = tmp_path / "job.py"
    script.write_text(source)
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=True
    ).stdout


def test_python_parameters_are_literals_not_code(tmp_path: Path) -> None:
    hostile = '\'); import os; os._exit(3) #\n""" {PATH}'
    r = PythonRecipe(
        name="r",
        script='"""Doc."""\nfrom __future__ import annotations\nprint(repr(evil), n, xs, flag)\n',
    )
    rendered = r.render({"evil": hostile, "n": 3, "xs": [1, {"a": None}], "flag": True})
    assert rendered.startswith('"""Doc."""\nfrom __future__ import annotations\n')
    out = _run_python(rendered, tmp_path)
    assert out.strip() == f"{hostile!r} 3 [1, {{'a': None}}] True"


def test_python_parameters_go_below_a_shebang(tmp_path: Path) -> None:
    r = PythonRecipe(name="r", script="#!/usr/bin/env python3\nprint(x)\n")
    rendered = r.render({"x": "ok"})
    assert rendered.startswith("#!/usr/bin/env python3\n# --- parameters")
    assert _run_python(rendered, tmp_path).strip() == "ok"


def test_bash_parameters_are_quoted_data(tmp_path: Path) -> None:
    hostile = "$(touch pwned); `touch pwned2` ' \" \n; exit 7"
    r = BashRecipe(
        name="r", script='#!/bin/bash\nprintf "%s|%s|%s|%s" "$evil" "$n" "$xs" "$none"\n'
    )
    rendered = r.render({"evil": hostile, "n": 2.5, "xs": [1, "a"], "none": None})
    script = tmp_path / "job.sh"
    script.write_text(rendered)
    out = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, check=True, cwd=tmp_path
    ).stdout
    assert out == f"{hostile}|2.5|{json.dumps([1, 'a'])}|"
    assert not (tmp_path / "pwned").exists()
    assert not (tmp_path / "pwned2").exists()


# -- rules and the workflow registry ------------------------------------------------------------


def test_rule_checks_the_recipe_name() -> None:
    with pytest.raises(ConfigError, match="names recipe 'r', not 'other'"):
        Rule(pattern=fp(), recipe=py_recipe("other"))
    with pytest.raises(ConfigError, match="expected a recipe"):
        Rule(pattern=fp(), recipe="r")  # type: ignore[arg-type]
    rule = Rule(pattern=fp(), recipe=py_recipe("r"))
    assert rule.name == "p"


def test_workflow_derives_rules_like_meow_base() -> None:
    calls: list[int] = []
    wf = Workflow([fp(name="a", recipe="r1"), fp(name="b", recipe="r2")], [py_recipe("r1")])
    wf.subscribe(lambda: calls.append(1))
    assert set(wf.rules) == {"a"}  # b waits for its recipe
    wf.add_recipe(sh_recipe("r2"))
    assert set(wf.rules) == {"a", "b"}
    assert isinstance(wf.rules["b"].recipe, BashRecipe)
    wf.update_pattern(fp(name="a", recipe="r2", glob="*.csv"))
    assert wf.rules["a"].recipe.name == "r2"
    assert wf.rules["a"].pattern == fp(name="a", recipe="r2", glob="*.csv")
    wf.remove_recipe("r2")  # removing a recipe removes its rules
    assert wf.rules == {}
    wf.remove_pattern("b")
    assert set(wf.patterns) == {"a"}
    assert len(calls) == 4


def test_workflow_errors_name_what_is_wrong() -> None:
    wf = Workflow([fp(name="a")], [py_recipe("r")])
    with pytest.raises(ConfigError, match="already exists; use update_pattern"):
        wf.add_pattern(fp(name="a"))
    with pytest.raises(ConfigError, match="no recipe named 'zz' to update"):
        wf.update_recipe(py_recipe("zz"))
    with pytest.raises(ConfigError, match=r"no pattern named 'nope'; known: \['a'\]"):
        wf.remove_pattern("nope")


# -- templates ----------------------------------------------------------------------------------


def test_keyword_values() -> None:
    v = keyword_values("/d/base/in/run1/sample.tar.gz", "/d/base", "J1")
    assert v == {
        "PATH": "/d/base/in/run1/sample.tar.gz",
        "REL_PATH": "in/run1/sample.tar.gz",
        "DIR": "/d/base/in/run1",
        "REL_DIR": "in/run1",
        "FILENAME": "sample.tar.gz",
        "PREFIX": "sample.tar",
        "EXTENSION": ".gz",
        "BASE": "/d/base",
        "JOB": "J1",
    }
    assert set(v) == set(KEYWORDS)
    assert keyword_values("/b/x", "/b", "J")["REL_DIR"] == "."


def test_expand_is_substitution_only() -> None:
    v = keyword_values("/b/a.txt", "/b", "J")
    out = expand({"o": "{BASE}/out/{PREFIX}.{JOB}", "l": ["{FILENAME}", 3], "k": "{UNKNOWN}"}, v)
    assert out == {"o": "/b/out/a.J", "l": ["a.txt", 3], "k": "{UNKNOWN}"}
    assert expand("{__import__('os')}", v) == "{__import__('os')}"


def test_python_parameters_go_below_the_module_docstring(tmp_path: Path) -> None:
    r = PythonRecipe(name="r", script='"""Doc\nstring."""\nprint(__doc__, x)')
    rendered = r.render({"x": 1})
    assert rendered.startswith('"""Doc\nstring."""\n# --- parameters')
    assert _run_python(rendered, tmp_path).strip() == "Doc\nstring. 1"


@pytest.mark.parametrize("name", ["PATH", "IFS", "HOME", "LD_PRELOAD"])
def test_bash_rules_refuse_shell_variable_names(name: str) -> None:
    with pytest.raises(ConfigError, match=f"'{name}' is a shell variable"):
        Rule(pattern=fp(parameters={name: "x"}), recipe=sh_recipe("r"))
    Rule(pattern=fp(parameters={name: "x"}), recipe=py_recipe("r"))  # fine for Python
