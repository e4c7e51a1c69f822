"""Developer tasks: `nox` runs tests, tests on uvloop, lint and mypy; `nox -s perf` benchmarks;
`nox -s docs` builds the documentation site."""

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
def docs(session: nox.Session) -> None:
    """The site from docs/ into site/ (mkdocs.yml); --strict: a broken link or #anchor, or a
    page missing from the nav, fails the build. `nox -s docs -- serve` previews it instead."""
    session.install("-e", ".[docs]")
    env = {"NO_MKDOCS_2_WARNING": "1"}  # material's notice about MkDocs 2.0, not about us
    if session.posargs[:1] == ["serve"]:
        session.run("mkdocs", "serve", "--strict", *session.posargs[1:], env=env)
    else:
        session.run("mkdocs", "build", "--strict", *session.posargs, env=env)


@nox.session(python="3.11")
def perf(session: nox.Session) -> None:
    """Benchmarks, not in the default sessions: `nox -s perf` runs every suite at --size small
    and writes perf/results/; `nox -s perf -- network --size full --json out.json` runs one."""
    session.install("-e", ".[perf]")
    out = "perf/results"
    default = ["all", "--json", f"{out}/latest.json", "--markdown", f"{out}/latest.md"]
    session.run("python", "-m", "perf", *(session.posargs or [*default, "--plots", out]))
