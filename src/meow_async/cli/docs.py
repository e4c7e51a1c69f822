"""``meow-async docs``: the documentation without a network.

The site's Markdown pages ship inside the package (``meow_async/docs/``, about 100 KB in the
wheel; the site's figures stay online), and a source checkout has them in ``docs/``, with the
built site in ``site/`` after ``mkdocs build``. ``docs PAGE`` prints a page (it reads well in a
pager); with a display, ``docs`` opens the built site, or the online one, in a browser.
"""

from __future__ import annotations

import os
import re
import sys
import webbrowser
from pathlib import Path

from ..exceptions import MeowError
from .urls import DOCS_URL

__all__ = ["docs_command", "docs_folder", "pages"]

_PACKAGE = Path(__file__).resolve().parents[1]


def docs_folder() -> Path | None:
    """The Markdown pages: shipped in the package, or a source checkout's docs/."""
    for folder in (_PACKAGE / "docs", _PACKAGE.parents[1] / "docs"):
        if (folder / "index.md").is_file():
            return folder
    return None


def _built_site() -> Path | None:
    """A source checkout's site/, built by ``mkdocs build`` (``nox -s docs``)."""
    index = _PACKAGE.parents[1] / "site" / "index.html"
    return index if index.is_file() else None


def pages(folder: Path) -> dict[str, str]:
    """Each page's name (``cli`` for cli.md) and its title."""
    out = {}
    for page in sorted(folder.glob("*.md")):
        first = page.read_text(encoding="utf-8").partition("\n")[0]
        out[page.stem] = re.sub(r"^#+\s*", "", first).strip() or page.stem
    return out


def _has_display() -> bool:
    return sys.platform == "darwin" or bool(
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )


def docs_command(page: str | None, *, path: bool) -> int:
    folder = docs_folder()
    if path:
        if folder is None:
            raise MeowError(f"no documentation is installed here; it is online at {DOCS_URL}")
        print(folder)
        return 0
    if page is not None:
        if folder is None:
            raise MeowError(f"no documentation is installed here; it is online at {DOCS_URL}")
        name = page.removesuffix(".md").strip("/")
        file = folder / f"{name}.md"
        if not re.fullmatch(r"[\w-]+", name) or not file.is_file():
            raise MeowError(
                f"no page {page!r}: choose from {', '.join(pages(folder))} (meow-async docs "
                "lists them)"
            )
        sys.stdout.write(file.read_text(encoding="utf-8"))
        return 0
    site = _built_site()
    if _has_display():
        url = site.as_uri() if site is not None else DOCS_URL
        if webbrowser.open(url):
            print(f"opened {url}")
            return 0
    lines = [f"The documentation is online at {DOCS_URL}"]
    if site is not None:
        lines.append(f"built here too: {site.as_uri()}")
    if folder is not None:
        lines.append(f"and its pages are here, as Markdown ({folder}):")
        titles = pages(folder)
        width = max(map(len, titles), default=0)
        lines += [f"  {name:<{width}}  {title}" for name, title in titles.items()]
        lines.append("meow-async docs PAGE prints one, e.g.: meow-async docs cli | less")
    print("\n".join(lines))
    return 0
