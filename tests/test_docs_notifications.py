"""docs/notifications.md's "Slack in five minutes", done as the page says: its workflow and its
commands, with the stand-in for Slack (tests/chat_services.py) behind ``LAB_SLACK_URL``."""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
from pathlib import Path

from .chat_services import chat_services
from .conftest import WAIT
from .test_notify_restart import Cli

PAGE = Path(__file__).resolve().parent.parent / "docs" / "notifications.md"


def section(title: str) -> str:
    text = PAGE.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


def blocks(text: str) -> list[tuple[str, str]]:
    """The section's fenced blocks, as (language, code), indentation removed."""
    found = re.findall(r"^( *)```(\w*)\n(.*?)^\1```", text, flags=re.M | re.S)
    return [(lang, textwrap.dedent(code)) for _, lang, code in found]


async def test_slack_in_five_minutes(tmp_path: Path) -> None:
    code = blocks(section("Slack in five minutes"))
    (workflow,) = [c for lang, c in code if lang == "yaml"]
    setup, trigger = [c for lang, c in code if lang == "sh"]
    (shown,) = [json.loads(c) for lang, c in code if lang == "json"]
    (tmp_path / "workflow.yaml").write_text(workflow)
    assert "export LAB_SLACK_URL=" in setup
    assert "meow-async run workflow.yaml" in setup
    for line in setup.splitlines():  # what the page has one type, but the export and the run
        if line.startswith(("export ", "meow-async run")) or not line.strip():
            continue
        subprocess.run(["bash", "-c", line], cwd=tmp_path, check=True, timeout=WAIT)

    async with chat_services() as slack:
        run = Cli(tmp_path, "run", {"LAB_SLACK_URL": slack.url("slack")})
        try:
            await run.started()
            subprocess.run(["bash", "-c", trigger], cwd=tmp_path, check=True, timeout=WAIT)
            await slack.wait(lambda got: len(got) >= 1)
            await run.stop()
        finally:
            run.close()
    (got,) = slack.received
    assert (got.status, got.problems) == (200, [])
    body = got.body
    # The page's example is this message, but for the job id, the times and the folder.
    assert list(body) == list(shown)
    assert [b["type"] for b in body["blocks"]] == [b["type"] for b in shown["blocks"]]
    job_id = re.search(r"scans-[0-9a-f]{16}", body["text"])
    assert job_id is not None
    headline = body["text"].splitlines()[0]
    assert headline == shown["text"].splitlines()[0].replace("scans-d821e7883ab0e7b9", job_id[0])
    assert f"empty file: {tmp_path}/data/raw/day1.csv" in body["text"]
    assert "Input: raw/day1.csv · Exit code: 1 · Ran for: " in body["text"]
    assert "Input: raw/day1.csv · Exit code: 1 · Ran for: " in shown["text"]
