"""`meow-async docs`: the documentation without a network, and the wheel that carries it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from .test_cli import meow

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def test_docs_lists_the_pages_and_prints_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)  # no browser: the list
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    res = meow("docs", cwd=tmp_path)
    assert (res.returncode, res.stderr) == (0, "")
    assert "The documentation is online at https://meow-async.github.io/meow_async/" in res.stdout
    assert f"and its pages are here, as Markdown ({DOCS}):" in res.stdout
    for page in DOCS.glob("*.md"):
        title = page.read_text().partition("\n")[0].lstrip("# ")
        assert re.search(rf"^  {re.escape(page.stem)} +{re.escape(title)}$", res.stdout, re.M)
    res = meow("docs", "workflow-file", cwd=tmp_path)
    assert res.returncode == 0
    assert res.stdout == (DOCS / "workflow-file.md").read_text()
    assert meow("docs", "cli.md", cwd=tmp_path).stdout == (DOCS / "cli.md").read_text()
    res = meow("docs", "--path", cwd=tmp_path)
    assert (res.returncode, res.stdout) == (0, f"{DOCS}\n")


def test_docs_names_the_pages_when_one_is_unknown(tmp_path: Path) -> None:
    for page in ("clii", "../README", "/etc/passwd"):
        res = meow("docs", page, cwd=tmp_path)
        assert res.returncode == 1, page
        assert res.stdout == ""
        assert f"meow-async: error: no page {page!r}: choose from api, architecture, cli," in (
            res.stderr
        )


def test_every_page_ships_in_the_wheel() -> None:
    """pyproject.toml force-includes each page into meow_async/docs/ (hatch would not
    exclude the figures from a whole folder), so a new page must be listed there too."""
    wheel = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]
    shipped = wheel["targets"]["wheel"]["force-include"]
    assert shipped == {f"docs/{p.name}": f"meow_async/docs/{p.name}" for p in DOCS.glob("*.md")}
