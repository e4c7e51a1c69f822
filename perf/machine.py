"""What the numbers were measured on: machine, versions, source state, and the scratch disk."""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from .procs import ROOT


def _version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def _mem_gb() -> float | None:
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    return None


def _git() -> dict[str, Any]:
    git = shutil.which("git")

    def run(*args: str) -> str:
        if git is None:
            return ""
        try:
            return subprocess.run(
                [git, *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    changed = [line[3:] for line in run("status", "--porcelain", "--", "src").splitlines()]
    digest = hashlib.sha256()
    for path in sorted((ROOT / "src").rglob("*.py")):
        digest.update(path.read_bytes())
    return {
        "commit": run("rev-parse", "HEAD"),
        "src_changed": changed,
        "src_sha256": digest.hexdigest()[:16],
    }


def scratch_disk(path: Path) -> dict[str, Any]:
    """The file system the scratch folders live on (it dominates file-creation costs)."""
    out: dict[str, Any] = {"path": str(path)}
    best = ""
    with contextlib.suppress(OSError), open("/proc/mounts") as f:
        for line in f:
            dev, mnt, fstype, *_ = line.split()
            if str(path).startswith(mnt) and len(mnt) > len(best):
                best = mnt
                out.update(device=dev, mount=mnt, fs=fstype)
    return out


def describe(scratch: Path, loop: str) -> dict[str, Any]:
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gb": _mem_gb(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "loop": loop,
        "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "scratch": scratch_disk(scratch),
        "versions": {
            d: _version(d)
            for d in ("meow-async", "meow_base", "uvloop", "watchfiles", "matplotlib")
        },
        "git": _git(),
    }
