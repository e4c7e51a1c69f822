"""The live view in a real browser: Debian's headless Chromium driven by Playwright (its
Python package only: the browser is the system's, nothing is downloaded).

On one loop only (asyncio): the browser is the thing under test here, not the runner's loop.
``MEOW_SCREENSHOTS=docs/figures`` also writes the docs' screenshots of the main pages from
the same run (``MEOW_SCREENSHOTS=docs/figures .venv/bin/pytest tests/test_live_view_browser.py``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from meow_async import FilePattern, Runner

from .conftest import WAIT, Workspace, py_recipe

pytestmark = pytest.mark.skipif(
    os.environ.get("MEOW_TEST_LOOP") == "uvloop",
    reason="a real browser: run once, on asyncio's loop (the runner's side runs on both)",
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HOSTILE = '<img src=x onerror="window.pwned=1">\'q".bad'


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Any]:
    if CHROMIUM is None:
        pytest.skip("no chromium to drive (.ci/run installs Debian's chromium)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    async with async_playwright() as p:
        launched = await p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a new, empty profile
            executable_path=CHROMIUM,
            args=FLAGS,
            viewport={"width": 1200, "height": 760},
        )
        try:
            yield launched
        finally:
            await launched.close()


def _rules() -> tuple[list[FilePattern], list[Any]]:
    return (
        [
            # A chain (ingest's outputs trigger report), so the graph has an edge to draw
            # once jobs record their lineage.
            FilePattern(
                name="ingest",
                glob="incoming/*.dat",
                recipe="count",
                outputs={"result_file": "{BASE}/counted/{PREFIX}.txt"},
            ),
            FilePattern(name="report", glob="counted/*.txt", recipe="fine"),
            FilePattern(name="check", glob="*.bad", recipe="fails"),
        ],
        [
            py_recipe(
                "count",
                "n = len(open(input_file).read())\nprint(n, 'bytes')\n"
                "open(result_file, 'w').write(str(n))\n",
            ),
            py_recipe("fine", "print(open(input_file).read())\n"),
            py_recipe(
                "fails",
                "import sys\nprint('calibration out of range: <b>17</b>', file=sys.stderr)\n"
                "sys.exit(3)\n",
            ),
        ],
    )


async def _made(runner: Runner, n: int) -> None:
    async with asyncio.timeout(WAIT):
        await runner.wait_for(lambda s: s.jobs >= n)


async def _shot(page: Any, name: str) -> None:
    folder = os.environ.get("MEOW_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(folder) / f"live-view-{name}.png"), full_page=True)


async def test_rows_appear_live_failures_turn_red_names_stay_text(
    ws: Workspace, browser: Any
) -> None:
    """The page loads and goes live; each dropped file's row appears without a reload; a
    failing job's row turns red and its page shows its stderr; a file name made of markup is
    shown as its text and runs nothing."""
    patterns, recipes = _rules()
    (ws.base / "counted").mkdir()
    runner = ws.runner(patterns, recipes, http={"port": 0})
    async with runner:
        page = await browser.new_page()
        await page.goto(f"http://127.0.0.1:{runner.http_port}/")
        assert await page.title() == "Jobs · meow_async"
        await page.wait_for_selector("#live.on", timeout=WAIT * 1000)  # the stream is open
        await page.evaluate("window.notReloaded = true")
        for i in range(3):
            ws.write(f"incoming/run-{i}.dat", "x" * (i + 1))
            await _made(runner, i + 1)
            # The job exists: its row is there within a second, by the stream alone.
            await page.wait_for_selector(
                f"#jobs tbody tr:has(td.trigger:text-is('incoming/run-{i}.dat'))", timeout=1000
            )
        ws.write(HOSTILE)
        await _made(runner, 4)
        failed = page.locator("#jobs tbody tr.state-failed:has(td.rule:text-is('check'))")
        await failed.wait_for(timeout=WAIT * 1000)
        assert await failed.locator("td.trigger").text_content() == HOSTILE
        red = await failed.evaluate("row => getComputedStyle(row).backgroundColor")
        assert red == "rgb(253, 236, 234)"
        assert await page.locator("#jobs tbody tr.state-failed").count() == 1
        assert await page.evaluate("window.notReloaded") is True
        assert await page.evaluate("window.pwned") is None
        assert await page.locator("#jobs img").count() == 0
        await page.locator("#jobs tbody tr.state-done").nth(5).wait_for(timeout=WAIT * 1000)
        await _shot(page, "jobs")

        await failed.locator("td.id a").click()
        await page.wait_for_selector("h1.state-failed")
        stderr = await page.locator("#log-stderr\\.txt").text_content()
        assert stderr == "calibration out of range: <b>17</b>\n"
        assert await page.locator("main b").count() == 0
        assert HOSTILE in (await page.locator("table.facts").nth(1).text_content() or "")
        assert await page.evaluate("window.pwned") is None
        await _shot(page, "job")

        await page.click("nav >> text=Rules")
        row = page.locator("#rules tr[data-rule='check']")
        assert "1 failed" in (await row.text_content() or "")
        await _shot(page, "rules")
        await page.wait_for_selector("#live.on", timeout=WAIT * 1000)
        await page.evaluate("window.notReloaded = true")
        ws.write("second.bad")  # the counts follow, without a reload
        await page.wait_for_selector(
            "#rules tr[data-rule='check'] a.state-failed:text-is('2 failed')", timeout=WAIT * 1000
        )
        assert await page.evaluate("window.notReloaded") is True
        await page.click("nav >> text=Graph")
        await page.wait_for_selector("svg.graph")
        await _shot(page, "graph")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_the_page_reconnects_after_a_runner_restart(ws: Workspace, browser: Any) -> None:
    """The runner stops and starts again on its port: the page says it is reconnecting, comes
    back live, and shows the job made while it was away and those made after."""
    patterns, recipes = _rules()
    port = _free_port()
    runner = ws.runner(patterns, recipes, http={"port": port})
    async with runner:
        page = await browser.new_page()
        await page.goto(f"http://127.0.0.1:{port}/")
        await page.wait_for_selector("#live.on", timeout=WAIT * 1000)
        await page.evaluate("window.notReloaded = true")
    await page.wait_for_selector("#live.off", timeout=WAIT * 1000)
    ws.write("incoming/while-away.dat")  # found by the next start's catch-up scan
    runner = ws.runner(patterns, recipes, http={"port": port})
    async with runner:
        await page.wait_for_selector(
            "#jobs tbody tr:has(td.trigger:text-is('incoming/while-away.dat'))",
            timeout=WAIT * 1000,
        )
        ws.write("incoming/after.dat")
        await _made(runner, 2)
        await page.wait_for_selector(
            "#jobs tbody tr:has(td.trigger:text-is('incoming/after.dat'))", timeout=WAIT * 1000
        )
        assert await page.evaluate("window.notReloaded") is True


async def test_a_running_jobs_output_shows_while_it_runs(
    ws: Workspace, browser: Any, tmp_path: Path
) -> None:
    """A running job's page shows its stdout as it is written, then its end without being
    reopened; the list of running jobs shows it, and lets it go when it ends."""
    release = tmp_path / "release"
    script = (
        "import os, sys, time\n"
        "print('first line', flush=True)\n"
        f"while not os.path.exists({str(release)!r}):\n"
        "    time.sleep(0.02)\n"
        "print('last line')\n"
    )
    runner = ws.runner(
        [FilePattern(name="slow", glob="*.go", recipe="r")],
        [py_recipe("r", script)],
        http={"port": 0},
    )
    async with runner:
        ws.write("a.go")
        async with asyncio.timeout(WAIT):
            await runner.wait_for(lambda s: s.running >= 1)
        job_id = next(iter(runner.jobs_running))
        page = await browser.new_page()
        await page.goto(f"http://127.0.0.1:{runner.http_port}/view/job/{job_id}")
        await page.wait_for_selector("h1.state-running")
        stdout = page.locator("#log-stdout\\.txt")
        await page.wait_for_function(
            "document.getElementById('log-stdout.txt').textContent.includes('first line')",
            timeout=WAIT * 1000,
        )
        listed = await browser.new_page()
        await listed.goto(f"http://127.0.0.1:{runner.http_port}/?state=running")
        row = listed.locator(f"#jobs tbody tr[data-id='{job_id}']")
        assert await row.get_attribute("class") == "state-running"
        await listed.wait_for_selector("#live.on", timeout=WAIT * 1000)
        release.touch()
        await page.wait_for_selector("h1.state-done", timeout=WAIT * 1000)
        assert await stdout.text_content() == "first line\nlast line\n"
        await row.wait_for(state="detached", timeout=WAIT * 1000)  # no longer running
