"""What a notification says: one job's end, or a digest of many, as JSON or as mail text."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from ..model.jobs import exit_text

__all__ = ["AFTER_RESTART", "Message", "exit_of", "summary", "when"]

#: What a notification of a job settled at start-up says about it.
AFTER_RESTART = (
    "Found after a restart: this job ended while no runner was running, and was settled "
    "when the runner started again."
)


@dataclass(slots=True)
class Message:
    """One job's end, or a digest of many."""

    kind: Literal["job", "digest"]
    jobs: list[dict[str, Any]]
    count: int = 1
    since: float = 0.0
    until: float = 0.0
    limit: int = 0
    window: float = 0.0
    #: A digest's jobs by outcome, those not listed too.
    tally: Counter[str] = field(default_factory=Counter)
    #: Jobs settled at start whose job.json waits for this message (see ``Notifier``).
    marks: list[str] = field(default_factory=list)
    #: The job's last lines of stderr, once read (a chat message shows them for failures).
    tail: list[str] | None = None

    def payload(self) -> dict[str, Any]:
        if self.kind == "job":
            return self.jobs[0]
        return {
            "digest": True,
            "count": self.count,
            "outcomes": dict(sorted(self.tally.items())),
            "listed": len(self.jobs),
            "since": self.since,
            "until": self.until,
            "limit": self.limit,
            "window": self.window,
            "jobs": self.jobs,
        }

    def subject(self, template: str) -> str:
        if self.kind == "job":
            job = self.jobs[0]
            return (
                template.replace("{JOB}", str(job.get("id")))
                .replace("{RULE}", str(job.get("rule")))
                .replace("{STATE}", str(job.get("outcome")))
            )
        return f"[meow_async] digest: {self.count} more job(s) ended ({self._tally()})"

    def text(self) -> str:
        if self.kind == "job":
            job = self.jobs[0]
            lines = [
                f"Job {job.get('id')} (rule {job.get('rule')}) ended: {job.get('outcome')}.",
                "",
                f"Error:     {job.get('error') or '-'}",
                f"Exit code: {exit_of(job.get('exit_code'))}",
                f"Started:   {when(job.get('started'))}",
                f"Finished:  {when(job.get('finished'))}",
                f"Folder:    {job.get('dir')}",
                f"Trigger:   {(job.get('event') or {}).get('path')}",
                *([f"Link:      {job['link']}"] if job.get("link") else []),
                *([f"\n{AFTER_RESTART}"] if job.get("after_restart") else []),
                "",
                "Its record (job.json):",
                json.dumps(job, indent=2, default=str),
            ]
            return "\n".join(lines) + "\n"
        lines = [
            f"{self.count} more job(s) ended between {when(self.since)} and "
            f"{when(self.until)} ({self._tally()}).",
            f"Each destination gets at most {self.limit} message(s) of their own per "
            f"{self.window:g}s; the jobs over that are listed here.",
            "",
        ]
        lines += [
            f"{j.get('id')}  rule {j.get('rule')}  {j.get('outcome')}  {j.get('error') or ''}"
            for j in self.jobs
        ]
        if self.count > len(self.jobs):
            lines.append(f"... and {self.count - len(self.jobs)} more, not listed.")
        return "\n".join(lines) + "\n"

    def _tally(self) -> str:
        return ", ".join(f"{n} {what}" for what, n in sorted(self.tally.items()))


def when(t: object) -> str:
    """A Unix time as ISO 8601 in UTC, to the second; ``-`` for none."""
    if isinstance(t, int | float) and not isinstance(t, bool):
        return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")
    return "-"


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """What a digest keeps of a job: enough to find it."""
    out = {
        k: record.get(k)
        for k in ("id", "rule", "state", "outcome", "error", "exit_code", "finished", "dir")
    }
    for k in ("after_restart", "link"):  # a job settled at start; runner.http's page
        if record.get(k):
            out[k] = record[k]
    return out


def exit_of(code: object) -> str:
    """An exit code as people read it: ``SIGTERM`` for a job killed by a signal."""
    return exit_text(code) if isinstance(code, int) and not isinstance(code, bool) else str(code)
