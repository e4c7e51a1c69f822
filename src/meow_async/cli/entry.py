"""The ``meow-async`` console script and ``python -m meow_async``: ``--version`` is answered
here, before the parser, ``pathlib`` and the error types load (about half of the command's
start-up); everything else goes to :func:`meow_async.cli.main.main`."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--version"]:
        from .. import __version__

        print(f"meow_async {__version__}")  # as argparse's version action prints it
        return 0
    from .main import main as full

    return full(args)
