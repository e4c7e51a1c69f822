"""What a notification says: one job's end, or a digest of many, as JSON or as mail text."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from ..model.jobs import exit_text

__all__ = ["Message", "summary"]


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
                f"Exit code: {_exit(job.get('exit_code'))}",
                f"Started:   {_when(job.get('started'))}",
                f"Finished:  {_when(job.get('finished'))}",
                f"Folder:    {job.get('dir')}",
                f"Trigger:   {(job.get('event') or {}).get('path')}",
                "",
                "Its record (job.json):",
                json.dumps(job, indent=2, default=str),
            ]
            return "\n".join(lines) + "\n"
        lines = [
            f"{self.count} more job(s) ended between {_when(self.since)} and "
            f"{_when(self.until)} ({self._tally()}).",
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


def _when(t: object) -> str:
    if isinstance(t, int | float) and not isinstance(t, bool):
        return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")
    return "-"


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """What a digest keeps of a job: enough to find it."""
    return {
        k: record.get(k)
        for k in ("id", "rule", "state", "outcome", "error", "exit_code", "finished", "dir")
    }


def _exit(code: object) -> str:
    return exit_text(code) if isinstance(code, int) and not isinstance(code, bool) else str(code)
