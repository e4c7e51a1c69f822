"""Every documentation link the package prints or states leads to a page that exists.

--help, error messages and docstrings link to the documentation site (``DOCS_URL``, built from
docs/ by mkdocs). These tests check each such link against docs/ itself, anchor included,
without building the site (CI builds it too, with ``mkdocs build --strict``).
"""

from __future__ import annotations

import argparse
import ast
import re
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from meow_async.cli import job_actions
from meow_async.cli.main import _parser
from meow_async.cli.urls import DOCS_URL, REPO_URL

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "meow_async"
DOCS = ROOT / "docs"

#: A link into the site: the page's path (``cli/``, or a file: ``workflow.schema.json``) and
#: its anchor, if any.
SITE_LINK = re.compile(
    re.escape(DOCS_URL) + r"(?P<page>(?:[\w\-/.]*[\w/])?)(?:#(?P<anchor>[\w\-]+))?"
)
#: The same, written with the constant: f"{DOCS_URL}cli/#run".
CONST_LINK = re.compile(r"\{DOCS_URL\}(?P<page>(?:[\w\-/.]*[\w/])?)(?:#(?P<anchor>[\w\-]+))?")
#: A reference to a docs page, as a source comment may make one for developers.
FILE_LINK = re.compile(r"\bdocs/(?P<page>[\w\-/]+)\.md(?:#(?P<anchor>[\w\-]+))?")
#: Any file under docs/, which a pip user does not have.
DOCS_PATH = re.compile(r"\bdocs/[\w\-/]+\.\w+")


def slugify(heading: str) -> str:
    """A heading's anchor as GitHub makes it, and mkdocs.yml's toc (pymdownx.slugs.slugify
    with case: lower): lower case, inline markup dropped, only word characters, - and spaces
    kept, each space one -."""
    text = re.sub(r"</?[^>]*>", "", heading).strip().lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link's text
    text = text.replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def headings(text: str) -> list[str]:
    """The Markdown headings of a page, not counting lines in fenced code blocks."""
    out: list[str] = []
    fence: str | None = None
    for line in text.splitlines():
        stripped = line.lstrip()
        marker = re.match(r"(`{3,}|~{3,})", stripped)
        if marker:
            if fence is None:
                fence = marker[1]
            elif stripped.startswith(fence):
                fence = None
            continue
        if fence is None:
            m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
            if m:
                out.append(m[1])
    return out


def heading_anchors(text: str) -> set[str]:
    return {slugify(re.sub(r"\s*\{[^}]*\}\s*$", "", h)) for h in headings(text)}


def explicit_anchors(text: str) -> set[str]:
    ids = set(re.findall(r"\{[^}]*#([\w\-]+)[^}]*\}", text))  # attr_list: {#id}
    return ids | set(re.findall(r"""\bid=["']([\w\-]+)["']""", text))  # <a id="...">


@cache
def anchors(page: Path) -> frozenset[str]:
    text = page.read_text()
    return frozenset(heading_anchors(text) | explicit_anchors(text))


def page_file(page: str) -> Path:
    """The docs/ file behind a site path: "" is index.md, "cli/" is cli.md, a file itself."""
    path = page.strip("/")
    if not path:
        return DOCS / "index.md"
    if not page.endswith("/") and "." in path.rpartition("/")[2]:
        return DOCS / path  # copied to the site as it is
    flat = DOCS / f"{path}.md"
    return flat if flat.is_file() else DOCS / path / "index.md"


def problem(page_path: Path, anchor: str | None) -> str | None:
    if not page_path.is_file():
        return f"no page {page_path.relative_to(ROOT)}"
    if page_path.suffix != ".md":
        return "an anchor in a file that is no page" if anchor else None
    if anchor and anchor not in anchors(page_path):
        return f"no #{anchor} in {page_path.relative_to(ROOT)}"
    return None


def help_texts() -> dict[str, str]:
    parser = _parser()
    out = {"meow-async --help": parser.format_help()}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out[f"meow-async {name} --help"] = sub.format_help()
    for action in job_actions.parser()._actions:  # `jobs rerun|cancel|logs`
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out[f"meow-async jobs {name} --help"] = sub.format_help()
    return out


def links_in_src() -> list[tuple[str, str, str | None]]:
    """(where, site path, anchor) for every site link in src/ and in --help."""
    out: list[tuple[str, str, str | None]] = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        for pattern in (SITE_LINK, CONST_LINK):
            for m in pattern.finditer(text):
                line = text.count("\n", 0, m.start()) + 1
                out.append((f"{path.relative_to(ROOT)}:{line}", m["page"], m["anchor"]))
    for where, text in help_texts().items():
        out += [(where, m["page"], m["anchor"]) for m in SITE_LINK.finditer(text)]
    return out


def test_the_collector_finds_the_links_we_know_of() -> None:
    found = {(page, anchor) for _, page, anchor in links_in_src()}
    assert ("cli/", None) in found  # the top --help
    assert ("network/", "meow-async-send") in found  # send --help
    assert ("concepts/", "warm-starts") in found  # a docstring


@pytest.mark.parametrize(("where", "page", "anchor"), links_in_src())
def test_every_site_link_in_src_and_help_exists(where: str, page: str, anchor: str | None) -> None:
    assert problem(page_file(page), anchor) is None, f"{where}: {DOCS_URL}{page}#{anchor or ''}"


def test_every_docs_file_named_in_src_exists() -> None:
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        for m in FILE_LINK.finditer(text):
            why = problem(DOCS / f"{m['page']}.md", m["anchor"])
            if why:
                bad.append(f"{path.relative_to(ROOT)}: {m[0]}: {why}")
    assert not bad, "\n".join(bad)


def test_no_message_names_a_docs_file() -> None:
    """Error messages and help texts are read by people without docs/: they link to the site
    (``DOCS_URL``). Docstrings and comments, read in the source, may name docs/ files."""
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        bad += [
            f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
            and DOCS_PATH.search(node.value)
        ]
    assert not bad, "\n".join(bad)


def test_help_names_no_file_a_pip_user_lacks() -> None:
    """Someone who installed the package has no docs/ folder: --help links to the site."""
    for where, text in help_texts().items():
        assert not DOCS_PATH.search(text), where
        if where != "meow-async --help":  # each command ends with its page, unbroken
            assert re.search(rf"\ndocs:\s+{re.escape(DOCS_URL)}\S*\n*$", text), where


def test_readme_links_to_pages_that_exist() -> None:
    text = (ROOT / "README.md").read_text()
    site = [(m["page"], m["anchor"]) for m in SITE_LINK.finditer(text)]
    assert site, "the README links to the documentation site"
    bad = [f"{p}#{a}: {problem(page_file(p), a)}" for p, a in site if problem(page_file(p), a)]
    local = re.findall(r"\]\((?!https?:|#)([^)#\s]+)", text)
    bad += [f"{target}: not in the repository" for target in local if not (ROOT / target).exists()]
    assert not bad, "\n".join(bad)


def test_the_urls_are_stated_alike_everywhere() -> None:
    """mkdocs.yml and pyproject.toml name the same site and repository as the code."""
    mkdocs = (ROOT / "mkdocs.yml").read_text()  # not yaml.safe_load: it has a !!python tag
    assert re.search(rf"^site_url: {re.escape(DOCS_URL)}$", mkdocs, re.M)
    assert re.search(rf"^repo_url: {re.escape(REPO_URL)}$", mkdocs, re.M)
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
    assert urls["Documentation"] == DOCS_URL
    assert urls["Repository"] == REPO_URL
    # Links from the docs into the repository (examples/, CHANGELOG.md) use the same address.
    for page in [*sorted(DOCS.rglob("*.md")), ROOT / "README.md", ROOT / "mkdocs.yml"]:
        text = page.read_text()
        for url in re.findall(r"https://github\.com/[\w.-]+/meow[_-]async\b", text, re.I):
            assert url == REPO_URL, f"{page.relative_to(ROOT)}: {url}"


def test_every_page_is_in_the_site_nav() -> None:
    """A page left out of mkdocs.yml's nav would be built but not reachable from the menu."""
    mkdocs = (ROOT / "mkdocs.yml").read_text()
    nav = set(re.findall(r"^\s*- [^:\n]+:\s*([\w\-/]+\.md)\s*$", mkdocs, re.M))
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert pages - nav == set(), "add these pages to nav in mkdocs.yml"
    assert nav - pages == set(), "nav names pages that do not exist"


def test_our_anchors_are_the_sites() -> None:
    """Where the site's Markdown and slugifier are installed (the docs extra), render each
    page as mkdocs.yml configures it and compare its headings' anchors with ours, so the
    checks above hold for the built site."""
    markdown = pytest.importorskip("markdown")
    slugs = pytest.importorskip("pymdownx.slugs")

    def ids(tokens: list[Any]) -> set[str]:
        return {str(t["id"]) for t in tokens} | {i for t in tokens for i in ids(t["children"])}

    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text()
        md = markdown.Markdown(
            extensions=["admonition", "attr_list", "tables", "toc", "pymdownx.superfences"],
            extension_configs={"toc": {"slugify": slugs.slugify(case="lower")}},
        )
        md.convert(text)
        # A repeated heading gets _1, _2 on the site (-1 on GitHub): link to the first one.
        theirs = {i for i in ids(md.toc_tokens) if not re.search(r"_\d+$", i)}
        assert theirs == heading_anchors(text), page.name
