"""The live view (runner.http at /): pages of a real runner read by a real HTTP client (aiohttp,
curl) and through a real reverse proxy (nginx): hostile names as text, the token's cookie,
one SSE message per job change, a viewer that does not read let go, lineage edges.
The browser side is tests/test_live_view_browser.py."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import aiohttp
import pytest

from meow_async import FilePattern, Runner
from meow_async.runner.feed import Feed

from .conftest import WAIT, Workspace, poll_until, py_recipe

HOSTILE = '<script>alert(1)<\\script> "quo\'te" <img src=x onerror=alert(2)>.bad'


def _rules() -> tuple[list[FilePattern], list[Any]]:
    return (
        [
            FilePattern(name="ok", glob="*.ok", recipe="fine"),
            FilePattern(name="bad", glob="*.bad", recipe="fails"),
        ],
        [
            py_recipe("fine", "print('fine', input_file)\n"),
            py_recipe(
                "fails", "import sys\nprint('oops <b>bold</b>', file=sys.stderr)\nsys.exit(3)\n"
            ),
        ],
    )


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        got = dict(attrs)
        if tag == "script":
            self.scripts += 1
        for key in ("href", "src"):
            if got.get(key):
                self.links.append(str(got[key]))


def links_of(html: str) -> Links:
    parser = Links()
    parser.feed(html)
    return parser


async def test_pages_show_hostile_names_as_text(ws: Workspace) -> None:
    """A file name with markup, quotes, a newline and a byte that is not UTF-8 reaches every
    page as text: escaped, one line, the byte written out; only our own script runs."""
    patterns, recipes = _rules()
    runner = ws.runner(patterns, recipes, http={"port": 0})
    names = [HOSTILE, "two\nlines <i>.bad"]
    async with runner, aiohttp.ClientSession() as session:
        base = f"http://127.0.0.1:{runner.http_port}"
        for name in names:
            ws.write(name)
        # A name that is not UTF-8, dropped as bytes: the real path (file monitor, job.json
        # with surrogate escapes, the index with the stray byte as \xNN) to every page.
        (Path(os.fsdecode(bytes(ws.base) + b"/raw\xff<u>.bad"))).write_text("x")
        async with asyncio.timeout(WAIT):
            await runner.wait_for(lambda s: s.finished >= 3)
        raw = next(
            j
            for j in ws.jobs_list()
            if os.fsencode(j["event"]["path"]).endswith(b"/raw\xff<u>.bad")
        )
        pages = {}
        for path in ("/", "/?state=failed", "/view/rules", "/view/graph"):
            async with session.get(base + path) as resp:
                assert resp.status == 200, path
                assert resp.headers["Content-Type"].startswith("text/html")
                assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
                pages[path] = await resp.text()
        listing = pages["/"]
        assert "&lt;script&gt;alert(1)&lt;\\script&gt;" in listing
        assert "&lt;img src=x onerror=alert(2)&gt;" in listing
        assert "two\\nlines &lt;i&gt;.bad" in listing  # one line, the newline written out
        assert "raw\\xff&lt;u&gt;.bad" in listing  # from the index: the byte written out
        assert "<img" not in listing
        assert "<i>" not in listing
        assert "<u>" not in listing
        assert links_of(listing).scripts == 1  # ours, live.js
        ids = re.findall(r'data-id="(bad-[0-9a-f]+)"', listing)
        assert len(ids) == 3
        for job_id in ids:
            async with session.get(f"{base}/view/job/{job_id}") as resp:
                assert resp.status == 200
                page = await resp.text()
            assert "oops &lt;b&gt;bold&lt;/b&gt;" in page  # its stderr, as text
            assert "<b>" not in page
            assert "<img" not in page
            assert "<i>" not in page
            assert links_of(page).scripts == 1
        # The same names in the event stream's JSON: text the script sets with textContent.
        async with session.get(f"{base}/view/job/{ids[0]}/tail") as resp:
            assert "oops <b>bold</b>" in (await resp.json())["stderr.txt"]
        async with session.get(f"{base}/view/job/{raw['id']}") as resp:
            assert "raw\\xff&lt;u&gt;.bad" in await resp.text()  # the byte written out
        async with session.get(f"{base}/view/job/..%2F..%2Fetc") as resp:
            assert resp.status == 404
        async with session.get(f"{base}/view/nothing") as resp:
            assert resp.status == 404
            assert 'href="../view/rules"' in await resp.text()  # links still lead home
        async with session.post(f"{base}/") as resp:
            assert resp.status == 404  # read-only: not the view's (nor any route's here)
        async with session.get(f"{base}/?state=lost") as resp:
            assert resp.status == 200
            assert "unknown state &#39;lost&#39;" in await resp.text()


async def test_the_token_comes_once_in_the_address_then_in_a_cookie(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With runner.http's token: no page without it; ``?token=`` sets an HttpOnly,
    SameSite=Strict cookie and sends the browser on without it; the cookie opens the pages
    and the event stream, never a request that changes a job."""
    monkeypatch.setenv("MEOW_TEST_VIEW_TOKEN", "s3cret-token")
    patterns, recipes = _rules()
    runner = ws.runner(patterns, recipes, http={"port": 0, "token_env": "MEOW_TEST_VIEW_TOKEN"})
    async with runner:
        base = f"http://127.0.0.1:{runner.http_port}"
        async with aiohttp.ClientSession() as anon:
            for path in ("/", "/view/rules", "/view/events", "/view/job/x/tail"):
                async with anon.get(base + path) as resp:
                    assert resp.status == 401, path
            async with anon.get(base + "/?token=wrong") as resp:
                assert resp.status == 401
                assert "not this runner" in await resp.text()
            async with anon.get(base + "/view/static/live.js") as resp:
                assert resp.status == 200  # our script holds nothing of the runner's
        jar = aiohttp.CookieJar(unsafe=True)  # cookies for an IP address
        async with aiohttp.ClientSession(cookie_jar=jar) as browser:
            async with browser.get(
                base + "/view/rules?token=s3cret-token&x=1", allow_redirects=False
            ) as resp:
                assert resp.status == 303
                assert resp.headers["Location"] == "rules?x=1"  # relative: works under a prefix
                cookie = resp.headers["Set-Cookie"]
                assert "HttpOnly" in cookie
                assert "SameSite=Strict" in cookie
                assert "Path=/" in cookie
            async with browser.get(base + "/view/rules") as resp:
                assert resp.status == 200
            async with browser.get(base + "/jobs") as resp:
                assert resp.status == 401  # the JSON endpoints take the bearer header only
            ws.write("a.ok")
            async with asyncio.timeout(WAIT):
                await runner.wait_for(lambda s: s.finished >= 1)
            job = next(iter(ws.jobs_list()))["id"]
            async with browser.post(f"{base}/jobs/{job}/rerun") as resp:
                assert resp.status == 401  # the cookie changes nothing (CSRF)
        async with (
            aiohttp.ClientSession(headers={"Authorization": "Bearer s3cret-token"}) as tool,
            tool.get(base + "/") as resp,
        ):
            assert resp.status == 200


async def read_events(resp: aiohttp.ClientResponse, n: int) -> list[dict[str, Any]]:
    """The next ``n`` SSE messages (``event`` and parsed ``data``) of a stream."""
    out: list[dict[str, Any]] = []
    event: dict[str, Any] = {}
    while len(out) < n:
        line = (await resp.content.readline()).decode().rstrip("\n")
        if not line:
            if event:
                out.append(event)
            event = {}
        elif line.startswith("event: "):
            event["event"] = line[7:]
        elif line.startswith("data: "):
            event["data"] = json.loads(line[6:])
        elif line.startswith("id: "):
            event["id"] = line[4:]
    return out


async def test_each_job_change_is_one_message_to_each_viewer(ws: Workspace) -> None:
    """Two viewers each get queued, running, done for a job (the same message, once), and a
    job's page's stream only that job's; without viewers nothing is written."""
    patterns, recipes = _rules()
    runner = ws.runner(patterns, recipes, http={"port": 0})
    async with runner, aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{runner.http_port}/view/events"
        ws.write("first.ok")
        async with asyncio.timeout(WAIT):
            await runner.wait_for(lambda s: s.finished >= 1)
        assert runner.feed.seq == 0  # no viewer: no message was even made
        async with session.get(url) as one, session.get(url) as two:
            assert one.headers["Content-Type"] == "text/event-stream"
            hello = await read_events(one, 1)
            assert hello[0]["event"] == "hello"
            await read_events(two, 1)
            ws.write("a.ok")
            async with asyncio.timeout(WAIT):
                got = await read_events(one, 3)
                assert await read_events(two, 3) == got
            assert [(e["event"], e["data"]["state"]) for e in got] == [
                ("job", "queued"),
                ("job", "running"),
                ("job", "done"),
            ]
            done = got[2]["data"]
            assert done["trigger"] == "a.ok"
            assert done["exit_code"] == 0
            job_id = done["id"]
            async with session.get(url, params={"job": "someone-else"}) as other:
                await read_events(other, 1)
                ws.write("b.ok")
                async with asyncio.timeout(WAIT):
                    await runner.wait_for(lambda s: s.finished >= 3)
                    await read_events(one, 3)
                assert other.content.at_eof() is False
                assert not other.content._buffer  # nothing for a job it does not show
            assert runner.feed.sent == 3 * 2 + 3 * 2
            assert job_id
        await poll_until(lambda: not runner.feed.viewers)  # closed streams leave


def test_a_viewer_that_does_not_read_is_let_go() -> None:
    """The runner never waits for a viewer: past its queue's bound, it is dropped (its
    stream ends; its browser reconnects), the others keep theirs."""

    async def run() -> None:
        feed = Feed(max_waiting=3)
        slow, fast = feed.join(), feed.join()
        for i in range(4):
            feed.publish(f"j{i}", {"rule": "r", "event": {"path": "x"}}, "queued")
            fast.waiting.clear()  # it reads
        assert slow.dropped
        assert slow not in feed.viewers
        assert not fast.dropped
        assert fast in feed.viewers
        assert feed.dropped == 1
        assert not slow.waiting

    asyncio.run(run())


#: A rule whose jobs declare two outputs, each of which triggers the second rule.
LINEAGE_FLOW = """\
runner: {base_dir: data, jobs_dir: jobs, kill_timeout: 1, http: {port: 0}}
recipes:
  split:
    kind: python
    script: |
      from pathlib import Path
      Path(one).write_text("1")
      Path(two).write_text("2")
  noop: {kind: python, script: "pass"}
patterns:
  raw:
    glob: "*.raw"
    recipe: split
    outputs: {one: "{BASE}/{PREFIX}.clean", two: "{BASE}/{PREFIX}.more.clean"}
  clean: {glob: "*.clean", recipe: noop}
"""


async def test_lineage_makes_the_graph_edges_and_the_job_links(ws: Workspace) -> None:
    """Jobs caused through declared outputs (lineage: ``caused_by``) draw the edge between
    their rules with its count, and link up- and downstream; the rules page shows the workflow
    version loaded, a reload's, and a refused reload's problems."""
    workflow = ws.root / "workflow.yaml"
    workflow.write_text(LINEAGE_FLOW)
    runner = Runner.from_file(workflow)
    async with runner, aiohttp.ClientSession() as session:
        base = f"http://127.0.0.1:{runner.http_port}"
        ws.write("a.raw")
        async with asyncio.timeout(WAIT):
            await runner.wait_for(lambda s: s.finished >= 3)
        jobs = {os.path.basename(j["event"]["path"]): j for j in ws.jobs_list()}
        up = jobs["a.raw"]
        for name in ("a.clean", "a.more.clean"):
            assert jobs[name]["caused_by"] == {"job": up["id"], "rule": "raw"}
        async with session.get(base + "/view/graph") as resp:
            graph = await resp.text()
        assert "<svg" in graph
        assert "raw → clean: 2 jobs" in graph
        assert re.search(r"<td>raw</td><td>clean</td><td>2</td>", graph)
        async with session.get(f"{base}/view/job/{up['id']}") as resp:
            page = await resp.text()
        assert page.count('href="../../view/job/clean-') == 2  # downstream
        async with session.get(f"{base}/view/job/{jobs['a.clean']['id']}") as resp:
            page = await resp.text()
        assert f'href="../../view/job/{up["id"]}"' in page  # upstream

        async def rules() -> str:
            async with session.get(base + "/view/rules") as resp:
                return await resp.text()

        first = runner.workflow.version
        assert first
        assert f'<span id="workflow-version">{first}</span>' in await rules()
        # An edit of the file: reloaded (followed by the runner), the page shows the new one.
        workflow.write_text(LINEAGE_FLOW.replace('script: "pass"', 'script: "print(1)"'))
        await poll_until(lambda: runner.workflow.version != first)
        page = await rules()
        assert f'<span id="workflow-version">{runner.workflow.version}</span>' in page
        assert "(1 reload)" in page
        # A broken edit is refused: the page says so, with the problem, and the version kept.
        workflow.write_text(LINEAGE_FLOW + "  lost: {glob: '*.x', recipe: nowhere}\n")
        assert runner.reloads is not None
        await poll_until(lambda: runner.reloads is not None and runner.reloads.refused is not None)
        page = await rules()
        assert "Reload refused: the runner goes on" in page  # no "(version ?)"
        assert "nowhere" in page
        assert f'<span id="workflow-version">{runner.workflow.version}</span>' in page


NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


@pytest.fixture
def nginx(tmp_path: Path) -> object:
    if not os.path.exists(NGINX):
        pytest.skip("nginx is not installed (.ci/run installs nginx-light)")
    return NGINX


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_behind_a_reverse_proxy_under_a_path_prefix(
    ws: Workspace, tmp_path: Path, nginx: str
) -> None:
    """nginx serves the view under /meow/ (the prefix stripped, as proxies do): every link of
    every page resolves under the prefix, and the event stream comes through unbuffered."""
    patterns, recipes = _rules()
    runner = ws.runner(patterns, recipes, http={"port": 0})
    async with runner, aiohttp.ClientSession() as session:
        port = _free_port()
        conf = tmp_path / "nginx.conf"
        conf.write_text(
            f"""daemon off; pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;
worker_processes 1; events {{ worker_connections 64; }}
http {{
  access_log off; client_body_temp_path {tmp_path}; proxy_temp_path {tmp_path};
  server {{
    listen 127.0.0.1:{port};
    location /meow/ {{
      proxy_pass http://127.0.0.1:{runner.http_port}/;
      proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header X-Forwarded-Prefix /meow;
    }}
  }}
}}
"""
        )
        proc = await asyncio.create_subprocess_exec(
            nginx, "-c", str(conf), "-e", str(tmp_path / "e.log")
        )
        try:
            base = f"http://127.0.0.1:{port}/meow/"

            def up() -> bool:
                with socket.socket() as s:
                    return s.connect_ex(("127.0.0.1", port)) == 0

            await poll_until(up)
            ws.write("a.bad")
            async with asyncio.timeout(WAIT):
                await runner.wait_for(lambda s: s.finished >= 1)
            seen: set[str] = set()
            todo = [base]
            while todo:
                url = todo.pop()
                if url in seen:
                    continue
                seen.add(url)
                async with session.get(url) as resp:
                    assert resp.status == 200, url
                    if resp.content_type == "text/html":
                        for link in links_of(await resp.text()).links:
                            target = urljoin(url, link)
                            assert target.startswith(base), (url, link)
                            todo.append(target.split("#")[0])
            assert any("/meow/view/job/bad-" in u for u in seen)
            assert f"{base}view/static/live.js" in seen
            async with session.get(base + "view/events") as stream:
                assert (await read_events(stream, 1))[0]["event"] == "hello"
                ws.write("b.ok")
                async with asyncio.timeout(WAIT):
                    got = await read_events(stream, 3)
                assert got[-1]["data"]["state"] == "done"
        finally:
            proc.terminate()
            async with asyncio.timeout(WAIT):
                await proc.wait()


def test_a_notebook_jobs_cells_are_shown_as_text(tmp_path: Path) -> None:
    """output.ipynb's code cells and their text outputs (streams, results, an error's
    traceback without its colour codes), not a rendering: markup in them stays text."""
    from meow_async.runner.view_pages import notebook_outputs

    nb = {
        "cells": [
            {"cell_type": "markdown", "source": ["# title"]},
            {
                "cell_type": "code",
                "source": ["x = 6 * 7\n", "print(x)"],
                "outputs": [{"output_type": "stream", "name": "stdout", "text": ["42\n"]}],
            },
            {
                "cell_type": "code",
                "source": "x",
                "outputs": [
                    {"output_type": "execute_result", "data": {"text/plain": "<b>42</b>"}},
                    {"output_type": "display_data", "data": {"image/png": "iVBOR"}},
                ],
            },
            {
                "cell_type": "code",
                "source": "1/0",
                "outputs": [
                    {
                        "output_type": "error",
                        "ename": "ZeroDivisionError",
                        "evalue": "division by zero",
                        "traceback": ["\x1b[0;31mZeroDivisionError\x1b[0m: division by zero"],
                    }
                ],
            },
        ]
    }
    path = tmp_path / "output.ipynb"
    path.write_text(json.dumps(nb))
    assert notebook_outputs(path) == [
        ("x = 6 * 7\nprint(x)", "42\n"),
        ("x", "<b>42</b>\n"),
        ("1/0", "ZeroDivisionError: division by zero\n"),
    ]
    assert notebook_outputs(tmp_path / "none.ipynb") is None
    path.write_text("{not json")
    assert notebook_outputs(path) is None


async def test_the_longest_list_stays_under_100_kB(ws: Workspace) -> None:
    """200 jobs (the most a list shows) with long file names: the page is under 100 kB, and
    it is read from the index alone (these rows have no folders)."""
    runner = ws.runner(
        [FilePattern(name="ingest", glob="*.dat", recipe="r")], [py_recipe("r")], http={"port": 0}
    )
    async with runner, aiohttp.ClientSession() as session:
        assert runner.index is not None
        name = "instrument-7/2026-12-07/run-000123_calibrated_spectrum_{}.dat"
        runner.index.put_metas(
            [
                (
                    {
                        "id": f"ingest-{i:016x}",
                        "rule": "ingest",
                        "state": "done",
                        "created": 1.8e9 + i,
                        "started": 1.8e9 + i,
                        "finished": 1.8e9 + i + 0.5,
                        "exit_code": 0,
                        "event": {"path": str(ws.base / name.format(i)), "base": str(ws.base)},
                    },
                    ws.jobs / f"2027-01-15/ingest-{i:016x}",
                )
                for i in range(300)
            ]
        )
        async with session.get(f"http://127.0.0.1:{runner.http_port}/?limit=500") as resp:
            page = await resp.read()
        assert page.count(b"<tr id=") == 200
        assert b"run-000123_calibrated_spectrum_299.dat" in page  # newest first
        assert len(page) < 100_000
