"""Developer tasks: `nox` runs tests, tests on uvloop, lint and mypy; `nox -s perf` benchmarks."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "tests_uvloop", "lint", "mypy"]
nox.options.error_on_missing_interpreters = True


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python="3.11")
def tests_uvloop(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs, env={"MEOW_TEST_LOOP": "uvloop"})


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "src", "tests", "perf", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "perf", "noxfile.py")


@nox.session(python="3.11")
def mypy(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("mypy")


@nox.session(python="3.11")
def perf(session: nox.Session) -> None:
    """Benchmarks, not in the default sessions: `nox -s perf` runs every suite at --size small
    and writes perf/results/; `nox -s perf -- network --size full --json out.json` runs one."""
    session.install("-e", ".[perf]")
    out = "perf/results"
    default = ["all", "--json", f"{out}/latest.json", "--markdown", f"{out}/latest.md"]
    session.run("python", "-m", "perf", *(session.posargs or [*default, "--plots", out]))
