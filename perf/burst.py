"""``python -m perf burst``: a burst of small POSTs against a real runner (``meow-async run``,
default settings, a Bash ``true`` recipe), ``concurrency`` in flight from a client process
(aiohttp's client). Reported: the answers by status (all 202 is the aim: accepted requests
beyond the events queue wait in the spool journal's backlog), the intake's requests per
second, and the runner's RSS at start, at its peak (VmHWM) and after the intake, with the jobs
made by then. The runner is stopped after; what it had not made stays in the journal.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

_CLIENT = """
import asyncio, collections, json, sys, time
import aiohttp
url, n, conc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
async def main():
    got = collections.Counter()
    sem = asyncio.Semaphore(conc)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=conc), timeout=timeout
    ) as s:
        async def one(i):
            async with sem:
                try:
                    async with s.post(url, data=b"x" * 32) as r:
                        await r.read()
                        got[r.status] += 1
                except Exception as e:
                    got[type(e).__name__] += 1
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        took = time.perf_counter() - t0
    print(json.dumps({"statuses": {str(k): v for k, v in got.items()}, "s": took}))
asyncio.run(main())
"""

_WORKFLOW = """\
runner: {base_dir: data, jobs_dir: jobs, shutdown_timeout: 1}
recipes:
  r: {kind: bash, script: "true"}
patterns:
  ingest: {route: /in, port: 0, recipe: r}
"""


def _rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def run(n: int, concurrency: int, scratch: Path) -> dict[str, Any]:
    root = scratch / "burst"
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "workflow.yaml").write_text(_WORKFLOW)
    proc = subprocess.Popen(
        [sys.executable, "-m", "meow_async", "run", "workflow.yaml", "-q"],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = None
        for line in proc.stdout:
            found = re.search(r"(http://127\.0\.0\.1:\d+/in)", line)
            if found:
                url = found.group(1)
            if line.startswith("Then:"):
                break
        if url is None:
            raise RuntimeError("the runner printed no HTTP address")
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # drain
        time.sleep(1.0)  # the fork server and the first look at the folders settle
        start_kib = _rss_kib(proc.pid)
        client = subprocess.run(
            [sys.executable, "-c", _CLIENT, url, str(n), str(concurrency)],
            capture_output=True,
            text=True,
            check=True,
        )
        res = json.loads(client.stdout)
        after_kib = _rss_kib(proc.pid)
        peak_kib = _rss_kib(proc.pid, "VmHWM")
        made = sum(1 for _ in (root / "jobs").glob("*/*/job.json"))
    finally:
        proc.send_signal(2)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    out = {
        "n": n,
        "concurrency": concurrency,
        "statuses": res["statuses"],
        "intake_s": res["s"],
        "requests_per_s": n / res["s"],
        "rss_start_mb": start_kib / 1024,
        "rss_peak_mb": peak_kib / 1024,
        "rss_after_mb": after_kib / 1024,
        "jobs_made_by_then": made,
    }
    print(
        f"burst: {n} POSTs, {concurrency} at once: {res['statuses']} in {res['s']:.1f} s "
        f"({out['requests_per_s']:.0f}/s); RSS {out['rss_start_mb']:.1f} MB at start, peak "
        f"{out['rss_peak_mb']:.1f} MB, {out['rss_after_mb']:.1f} MB after; {made} jobs made "
        "by then (the rest wait in the journal)"
    )
    return out
