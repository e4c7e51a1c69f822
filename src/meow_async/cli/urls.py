"""Where the documentation and the source live, for --help, error messages and docstrings.

A page is ``f"{DOCS_URL}cli/"`` (docs/cli.md), a section ``f"{DOCS_URL}cli/#run"``; the home
page is ``DOCS_URL``. mkdocs.yml's ``site_url`` and ``repo_url`` say the same, and
tests/test_docs_links.py checks that every page and anchor linked from src/ exists in docs/.
"""

from __future__ import annotations

__all__ = ["DOCS_URL", "REPO_URL"]

#: The documentation site (built from docs/ by ``mkdocs build``), ending in ``/``.
DOCS_URL = "https://meow-async.github.io/meow_async/"

#: The source repository.
REPO_URL = "https://github.com/meow-async/meow_async"
