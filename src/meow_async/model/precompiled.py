"""A spawned Python job's script, compiled by the runner, so the new interpreter need not.

A fresh interpreter's first ``compile()`` builds every ``ast`` node type first: 1.3-5 ms
here, more than the rest of the bootstrap that runs the script (``SPAWN_BOOT`` in
``conductors/forkserver.py``). The runner has compiled before, so compiling the script it
has just rendered costs it tens of microseconds; the job gets the code object through its
environment and only unmarshals it. The payload names the interpreter's bytecode (its magic
number) and the exact bytes of the script, so a job run by another Python, or whose
``script.py`` was changed after it was made, compiles the file as before.
"""

from __future__ import annotations

import importlib.util
import marshal
import warnings

from .caught import CATCHING

__all__ = ["ENV", "MAX_BYTES", "precompile"]

#: The variable the job's bootstrap reads (and removes, so the job's children never see it).
ENV = "MEOW_BOOT_CODE"
#: Code objects larger than this (marshalled) are not sent: compiling is then a small part of
#: the job, an environment string may hold 128 kB, and a queued job holds its payload in memory.
MAX_BYTES = 16384


def precompile(source: bytes, path: str) -> bytes | None:
    """The payload for ``source`` (the script's bytes as written to ``path``): magic number,
    source hash, marshalled code; None if it does not compile or warns as it compiles (the job
    then says so itself, in its stderr) or is over :data:`MAX_BYTES`. The job decodes it from
    the hex of :data:`ENV`."""
    with CATCHING, warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        try:
            code = compile(source, path, "exec", dont_inherit=True, optimize=0)
        except Exception:  # SyntaxError, null bytes, too deeply nested: the job says which
            code = None
    for w in said:  # another thread's, caught while we listened: through the filters again
        if w.filename != path:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if code is None or any(w.filename == path for w in said):
        return None  # a SyntaxWarning belongs in the job's stderr: it compiles the script
    try:
        data = marshal.dumps(code)
    except ValueError:  # never for compiled code; a job is made whatever this says
        return None
    if len(data) > MAX_BYTES:
        return None
    return importlib.util.MAGIC_NUMBER + importlib.util.source_hash(source) + data
