"""``python -m perf boot``: a spawned Python job's own start, the interpreter included.

The same one-line script run three ways, taking turns, each a new process: ``python
script.py`` (the floor), ``python -c SPAWN_BOOT script.py`` as a job ran before issue 26
(the bootstrap compiles the script: a fresh interpreter's first ``compile()`` builds every
``ast`` node type), and the same bootstrap given the runner's compiled code
(``MEOW_BOOT_CODE``, model/precompiled.py), as a spawned job starts now.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from meow_async.conductors.forkserver import SPAWN_BOOT
from meow_async.model.precompiled import ENV, precompile


def run(repeats: int, scratch: Path, log: Any = print) -> dict[str, Any]:
    folder = scratch / "boot"
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "script.py"
    script.write_text("x = 1\n")
    payload = precompile(script.read_bytes(), str(script))
    assert payload is not None  # a one-line script compiles
    env = {**os.environ, "MEOW_PROCESS_LOG": str(folder / "process.log")}
    variants = {
        "python script.py": ([sys.executable, str(script)], env),
        "bootstrap, compiling": ([sys.executable, "-c", SPAWN_BOOT, str(script)], env),
        "bootstrap, precompiled": (
            [sys.executable, "-c", SPAWN_BOOT, str(script)],
            {**env, ENV: payload.hex()},
        ),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    for i in range(repeats):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            argv, e = variants[name]
            t0 = time.perf_counter()
            subprocess.run(argv, env=e, check=True)
            times[name].append((time.perf_counter() - t0) * 1000)
    floor = statistics.median(times["python script.py"])
    out: dict[str, Any] = {"repeats": repeats, "variants": {}}
    for name, ts in times.items():
        p50 = statistics.median(ts)
        out["variants"][name] = {"p50_ms": p50, "min_ms": min(ts), "over_floor_ms": p50 - floor}
        log(
            f"boot {name:<24} p50 {p50:6.2f} ms (min {min(ts):6.2f}), "
            f"{p50 - floor:+.2f} ms over python script.py"
        )
    return out
