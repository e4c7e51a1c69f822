"""``meow-async reload WORKFLOW``: ask the running runner to read its workflow file again.

Through ``POST /reload`` on its runner.http (with the token the file names) when it has one;
else by SIGHUP to the process its live file names (same machine only), then waiting for the
live file to say how the reload went. Either way the runner checks the whole file first and
changes nothing if anything is wrong.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from ..exceptions import MeowError, WorkflowFileError
from ..model.config import http_token
from ..model.workflow_file import load_workflow
from ..runner.live import Live, read_live
from .runner_http import post_json

__all__ = ["reload_command"]

#: Seconds to wait for the runner's answer.
TIMEOUT = 30.0


def reload_command(path: Path) -> int:
    """0 once the runner runs the file as it is now, 1 if it refused it (problems printed).

    A file with problems is not sent: the runner would refuse it (and it is the file that
    says where the runner is); its problems are printed as ``validate`` prints them."""
    try:
        spec = load_workflow(path)
    except WorkflowFileError as e:
        print(f"reload not asked: {e}\nthe runner keeps running its version", file=sys.stderr)
        return 1
    live = read_live(spec.config.jobs_dir)
    if live is None or live.alive is False:
        raise MeowError(f"no runner is running {spec.path} (no live runner in its jobs folder)")
    answer = _post(live, http_token(spec.config.http)) if live.http else _hangup(live)
    return _report(answer)


def _report(answer: dict[str, Any]) -> int:
    if answer.get("result") == "refused":
        problems = answer.get("problems") or []
        print(f"reload refused: {len(problems)} problem(s); the runner keeps the old version")
        for p in problems:
            print(f"  {p}")
        return 1
    if answer.get("result") == "unchanged":
        print(f"reload: unchanged (workflow {answer.get('version')})")
    else:
        changes = answer.get("changes") or "no rule changed"
        print(f"reload: workflow {answer.get('version')}: {changes}")
    return 0


def _post(live: Live, token: str | None) -> dict[str, Any]:
    """The runner's answer; a refused file (409 with its problems) is an answer too."""
    return post_json(
        live,
        "/reload",
        token,
        TIMEOUT,
        keep=lambda code, body: code == 409 and body.get("result") == "refused",
    )


def _hangup(live: Live) -> dict[str, Any]:
    """SIGHUP, then the live file's word on the reload it made."""
    if live.alive is None:
        raise MeowError(
            f"the runner runs on {live.host}, and has no runner.http to ask: run "
            "`meow-async reload` there"
        )
    before = live.raw.get("workflow") or {}
    os.kill(live.pid, signal.SIGHUP)
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        now = read_live(live.path.parent)
        state = (now.raw.get("workflow") if now is not None else None) or {}
        if state.get("answers", 0) != before.get("answers", 0):
            return dict(state.get("last") or {})
        time.sleep(0.05)
    raise MeowError(f"no answer from the runner (pid {live.pid}) within {TIMEOUT:g}s")
