"""Asking a running runner's ``runner.http`` from the command line (status, reload, jobs
rerun/cancel): one opener and one way of reading its answers and refusals, so each command
words a refused or silent runner the same way."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from ..exceptions import MeowError
from ..runner.live import Live

__all__ = ["get_json", "post_json"]


def _never(code: int, body: dict[str, Any]) -> bool:
    return False


def _open(request: urllib.request.Request, token: str | None, timeout: float) -> Any:
    """The answer's JSON. No proxy: the runner is asked directly, whatever HTTP_PROXY says."""
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=timeout) as resp:
        return json.loads(resp.read())


def get_json(url: str, token: str | None, timeout: float) -> dict[str, Any]:
    """GET ``url``'s JSON object; urllib's errors (HTTPError with the code) and ValueError
    for an answer that is not a JSON object, for the caller to word."""
    request = urllib.request.Request(url)  # noqa: S310 - http:// built from the live file
    answer = _open(request, token, timeout)
    if not isinstance(answer, dict):
        raise ValueError("not a JSON object")  # noqa: TRY004 - a bad answer, as bad JSON is
    return answer


def post_json(
    live: Live,
    path: str,
    token: str | None,
    timeout: float,
    *,
    keep: Callable[[int, dict[str, Any]], bool] = _never,
    unauthorized: str = "",
) -> dict[str, Any]:
    """POST (no body) to ``path`` on the runner's runner.http; its JSON answer.

    A refusal is a MeowError with the runner's ``error``, unless ``keep(code, body)`` says
    it is an answer the caller reads (reload's 409 with the file's problems); ``unauthorized``
    is added to a 401's message when no token was given (where the caller finds one)."""
    request = urllib.request.Request(  # noqa: S310 - our runner
        str(live.url(path)), data=b"", method="POST"
    )
    try:
        answer: dict[str, Any] = _open(request, token, timeout)
    except urllib.error.HTTPError as e:
        try:
            body = json.loads(e.read())
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        if keep(e.code, body):
            return body
        why = body.get("error") or e.reason
        if e.code == 401 and token is None and unauthorized:
            why = f"{why} ({unauthorized})"
        raise MeowError(f"the runner (pid {live.pid}) refused: {why}") from None
    except (OSError, ValueError) as e:
        raise MeowError(f"the runner's runner.http at {live.url()} did not answer: {e}") from None
    return answer
