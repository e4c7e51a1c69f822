"""Where `meow-async send WORKFLOW` sends: the workflow's network pattern, on its port.

A network pattern with ``port: 0`` gets a free port from the OS when the runner starts, so two
people running the same example cannot clash, but nobody knows the port in advance. A running
runner says which ports it got in ``.meow-live.json`` in its jobs folder (``live.py``, also
read by ``meow-async status``); a pattern with a fixed port needs no file.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..exceptions import MeowError
from ..model.addresses import host_port
from ..model.patterns import NetworkPattern
from ..model.workflow_file import WorkflowSpec
from ..runner.live import LIVE_FILE, read_live

__all__ = ["Target", "target"]


@dataclass(frozen=True, slots=True)
class Target:
    """Where to send to reach a workflow's network pattern."""

    host: str
    port: int
    pattern: NetworkPattern


def target(spec: WorkflowSpec, rule: str | None = None) -> Target:
    """The address of ``spec``'s network pattern (``rule``, or its only one)."""
    patterns = {p.name: p for p in spec.patterns if isinstance(p, NetworkPattern)}
    if rule is not None:
        if rule not in patterns:
            known = ", ".join(patterns) or "none"
            raise MeowError(f"{spec.path}: no network pattern {rule!r} (network patterns: {known})")
        pattern = patterns[rule]
    elif len(patterns) == 1:
        (pattern,) = patterns.values()
    elif not patterns:
        raise MeowError(f"{spec.path}: no network pattern to send to")
    else:
        raise MeowError(
            f"{spec.path}: {len(patterns)} network patterns ({', '.join(patterns)}); "
            "choose one with --rule NAME"
        )
    host = _connect_to(pattern.host)
    if pattern.port != 0:
        return Target(host, pattern.port, pattern)
    live = read_live(spec.config.jobs_dir)
    try:
        port = int(live.raw["ports"][pattern.name]) if live is not None and live.alive else 0
    except (KeyError, TypeError, ValueError):
        port = 0
    if not port:
        if live is None:
            why = (
                "no runner of this workflow is running (none has written "
                f"{spec.config.jobs_dir / LIVE_FILE})"
            )
        elif live.alive is False:  # killed, or crashed: its file stays behind
            why = (
                f"no runner of this workflow is running (the one that wrote {live.path}, "
                f"pid {live.pid}, is gone)"
            )
        elif live.alive is None:
            why = f"its runner runs on {live.host}, not on this machine"
        else:
            why = f"its runner, pid {live.pid}, did not write its port to {live.path}"
        raise MeowError(
            f"{spec.path}: pattern {pattern.name!r} gets a free port when its runner starts "
            f"(port: 0), and {why}: start one with `meow-async run {spec.path}`, or give "
            f"{host_port(host, 'PORT')} from its banner"
        )
    return Target(host, port, pattern)


def _connect_to(host: str) -> str:
    """A listener on every address is reached on the loopback one."""
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104
