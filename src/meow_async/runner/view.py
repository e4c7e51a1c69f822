"""The live view: read-only HTML pages served by ``runner.http`` at ``/`` (docs/live-view.md).

Pages are rendered here (Jinja2, autoescaped: every value from outside is text, never markup)
and read without JavaScript; a small script of our own (``web/static/live.js``, no build
step, no CDN) keeps them current from ``view/events``, a Server-Sent Events stream fed by the
runner's own job state changes (``feed.py``). Every link is relative, so the view works
behind a reverse proxy's path prefix with no setting.

The token: with ``runner.http``'s token a page needs it, and a browser cannot send a bearer
header when it opens a link. Opened once as ``/?token=...``, the view answers with an
``HttpOnly``, ``SameSite=Strict`` cookie holding it and sends the browser on without it in the
address; the cookie is accepted for these GET pages only, never by the POSTs that change a
job, so another site cannot use it (CSRF).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import re
import sqlite3
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlencode

from aiohttp import web

from ..model.index import JobIndex
from ..model.jobs import JobState
from ..model.rules import Rule
from ..monitors import TimeMonitor
from ..monitors.filtering import Filtering
from .feed import Feed
from .graph_svg import graph_svg
from .shown import shown, shown_text
from .view_pages import MAX_LIST, job_folder, job_page, job_rows, rule_rows, tail_of, took, when

if TYPE_CHECKING:
    from jinja2 import Environment

    from ..model.workflow import Workflow
    from .reload import Reloads

__all__ = ["COOKIE", "LiveView", "Viewed"]

#: The cookie that carries runner.http's token for the pages.
COOKIE = "meow_async_token"
#: Seconds between comments on an idle event stream (proxies close silent connections).
KEEPALIVE = 15.0
WEB = Path(__file__).parent / "web"
STATIC = {"live.js": "text/javascript", "style.css": "text/css"}
#: No script or style but our own files, nothing framed, no address leaked to another site.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_PREFIX = re.compile(r"/[A-Za-z0-9._~/-]*")


class Viewed(Protocol):
    """**Protocol:** what the live view reads of the runner (a ``Runner``)."""

    jobs_dir: Path
    events_by: Counter[tuple[str, str]]
    jobs_running: dict[str, Any]
    time: TimeMonitor
    filtering: Filtering
    index: JobIndex | None
    feed: Feed
    #: The rules and the workflow file's version they were loaded from (None: made in code).
    workflow: Workflow
    #: The workflow file followed and reloaded (None: rules made in code).
    reloads: Reloads | None

    @property
    def stopping(self) -> bool: ...

    @property
    def rules(self) -> dict[str, Rule]: ...

    def ports(self) -> dict[str, int]: ...


class LiveView:
    """The answers to ``GET /`` and ``/view/...`` (None for any other path)."""

    def __init__(self, runner: Viewed, token: bytes | None, trigger_text: Any) -> None:
        self.runner = runner
        self._token = token
        self._trigger_text = trigger_text
        self._env: Environment | None = None

    @property
    def needs_token(self) -> bool:
        return self._token is not None

    # -- routing --------------------------------------------------------------------------------

    async def answer(self, request: web.BaseRequest) -> web.StreamResponse | None:
        path = request.path
        if path != "/" and not path.startswith("/view/"):
            return None
        if request.method not in ("GET", "HEAD"):
            return None  # read-only; on a shared port, an HTTP pattern's route may take it
        parts = path.split("/")[2:]  # ["job", ID, ...] for /view/job/ID/...
        if parts[:1] == ["static"] and len(parts) == 2 and parts[1] in STATIC:
            return self.static(parts[1])
        refused = self.allowed(request)
        if refused is not None:
            return refused
        if path == "/":
            return await self.jobs_page(request)
        if parts == ["events"]:
            return await self.events(request)
        if parts == ["rules"]:
            return await self.rules_page()
        if parts == ["graph"]:
            return await self.graph_page()
        if len(parts) == 2 and parts[0] == "job":
            return await self.job_page(parts[1])
        if len(parts) == 3 and parts[0] == "job" and parts[2] == "tail":
            return await self.tail(parts[1])
        return self.page("missing.html", _root(path), status=404, what=path)

    # -- the token ------------------------------------------------------------------------------

    def allowed(self, request: web.BaseRequest) -> web.StreamResponse | None:
        """None if the request may see the view, else the answer (a refusal, or the cookie
        and a redirect to the same page without ``?token=``)."""
        token = self._token
        if token is None:
            return None
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token):
            return None
        cookie = request.cookies.get(COOKIE)
        if cookie is not None and hmac.compare_digest(cookie.encode(), token):
            return None
        given = request.query.get("token")
        if given is not None and hmac.compare_digest(given.encode(), token):
            rest = urlencode([(k, v) for k, v in request.query.items() if k != "token"])
            here = request.path.rpartition("/")[2] or "./"
            resp = web.Response(
                status=303, headers={"Location": here + (f"?{rest}" if rest else "")}
            )
            resp.set_cookie(
                COOKIE,
                token.decode(),
                path=_cookie_path(request),
                httponly=True,
                samesite="Strict",
                secure=request.secure or request.headers.get("X-Forwarded-Proto") == "https",
            )
            resp.headers.update(HEADERS)
            return resp
        return self.page(
            "token.html",
            _root(request.path),
            status=401,
            wrong=given is not None,
            headers={"WWW-Authenticate": 'Bearer realm="meow_async runner"'},
        )

    # -- pages ----------------------------------------------------------------------------------

    def env(self) -> Environment:
        """The templates, loaded at the first page (Jinja2 is imported only then)."""
        if self._env is None:
            from jinja2 import Environment, FileSystemLoader, select_autoescape

            env = Environment(
                loader=FileSystemLoader(WEB / "templates"),
                autoescape=select_autoescape(default=True, default_for_string=True),
                finalize=_finalize,
                trim_blocks=True,
                lstrip_blocks=True,
            )
            env.filters.update(when=when, shown=shown)
            self._env = env
        return self._env

    def page(
        self,
        name: str,
        root: str,
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
        **values: Any,
    ) -> web.Response:
        html = self.env().get_template(name).render(root=root, **values)
        resp = web.Response(
            body=html.encode("utf-8", "backslashreplace"),
            status=status,
            content_type="text/html",
            charset="utf-8",
            headers={**HEADERS, "Cache-Control": "no-store", **(headers or {})},
        )
        return resp

    def static(self, name: str) -> web.Response:
        body = (WEB / "static" / name).read_bytes()
        return web.Response(
            body=body,
            content_type=STATIC[name],
            charset="utf-8",
            headers={**HEADERS, "Cache-Control": "max-age=300"},
        )

    def _running(self) -> set[str]:
        return set(self.runner.jobs_running)

    async def jobs_page(self, request: web.BaseRequest) -> web.Response:
        q = request.query
        rule = q.get("rule") or None
        state = q.get("state") or None
        problems = []
        if state is not None and state not in {s.value for s in JobState}:
            problems.append(f"unknown state {state!r}: one of {', '.join(JobState)}")
            state = None
        if rule is not None and rule not in self.runner.rules:
            problems.append(f"no rule {rule!r} in the loaded workflow (showing its kept jobs)")
        try:
            limit = min(MAX_LIST, max(1, int(q.get("limit", "100"))))
        except ValueError:
            problems.append("limit must be a whole number")
            limit = 100
        index, running = self.runner.index, self._running()
        rows = await asyncio.to_thread(self._read, job_rows, index, running, rule, state, limit)
        return self.page(
            "jobs.tbody.html" if q.get("fragment") == "rows" else "jobs.html",
            "./",
            page="jobs",
            title="Jobs",
            rows=rows,
            rule=rule or "",
            state=state or "",
            limit=limit,
            rules=list(self.runner.rules),
            states=[s.value for s in JobState],
            problems=problems,
        )

    def _read(self, read: Any, *args: Any) -> Any:
        """A read from the index; what it cannot read is shown empty, not an error page."""
        try:
            return read(*args)
        except sqlite3.Error:
            return []

    async def rules_page(self) -> web.Response:
        r = self.runner
        ports = r.ports()
        triggers = {
            n: self._trigger_text(rule.pattern, ports.get(n)) for n, rule in r.rules.items()
        }
        events: dict[str, int] = {}
        for (_, rule), n in r.events_by.items():
            events[rule] = events.get(rule, 0) + n
        running: dict[str, int] = {}
        for job, _ in r.jobs_running.values():
            running[job.rule] = running.get(job.rule, 0) + 1
        rows = await asyncio.to_thread(
            rule_rows,
            r.rules,
            triggers,
            events,
            dict(r.filtering.filtered),
            r.time.next_ticks(),
            r.index,
            running,
        )
        return self.page(
            "rules.html",
            "../",
            page="rules",
            title="Rules",
            rows=rows,
            version=r.workflow.version,
            workflow=None if r.reloads is None else r.reloads.state(),
        )

    async def graph_page(self) -> web.Response:
        r, index = self.runner, self.runner.index
        edges: dict[tuple[str, str], int] = {}
        counts: dict[tuple[str, str], int] = {}
        if index is not None:
            with contextlib.suppress(sqlite3.Error):
                edges = await asyncio.to_thread(index.rule_edges)
                counts = await asyncio.to_thread(index.counts)
        jobs: dict[str, int] = {}
        failed: dict[str, int] = {}
        for (rule, state), n in counts.items():
            jobs[rule] = jobs.get(rule, 0) + n
            if state == JobState.failed:
                failed[rule] = n
        names = list(r.rules)
        svg = graph_svg(
            [shown(n) for n in names],
            {(shown(a), shown(b)): n for (a, b), n in edges.items()},
            {shown(k): v for k, v in jobs.items()},
            {shown(k): v for k, v in failed.items()},
        )
        from markupsafe import Markup  # with Jinja2: the SVG escaped its names itself

        return self.page(
            "graph.html",
            "../",
            page="graph",
            title="Graph",
            svg=Markup(svg),  # noqa: S704 - every name in it went through html.escape
            edges=sorted(edges.items()),
        )

    async def job_page(self, job_id: str) -> web.Response:
        r = self.runner
        running = job_id in r.jobs_running
        page = await asyncio.to_thread(job_page, r.index, r.jobs_dir, job_id, running)
        if page is None:
            return self.page("missing.html", "../../", status=404, what=f"job {shown(job_id)}")
        return self.page(
            "job.html",
            "../../",
            page="job",
            title=f"Job {shown(job_id)}",
            job=page,
            meta=page.meta,
            took=took(page.meta),
        )

    async def tail(self, job_id: str) -> web.Response:
        """A running job's stdout and stderr (the end of each), for its page's script."""
        r = self.runner

        def read() -> dict[str, str] | None:
            folder = job_folder(r.index, r.jobs_dir, job_id)
            if folder is None:
                return None
            return {n: tail_of(folder / n)[0] for n in ("stdout.txt", "stderr.txt", "process.log")}

        out = await asyncio.to_thread(read)
        if out is None:
            return web.json_response({"error": f"no job {shown(job_id)}"}, status=404)
        return web.json_response(
            {"running": job_id in r.jobs_running, **out},
            headers={**HEADERS, "Cache-Control": "no-store"},
        )

    # -- the event stream -----------------------------------------------------------------------

    async def events(self, request: web.BaseRequest) -> web.StreamResponse:
        """``text/event-stream``: ``hello`` first (a page that reconnected reloads what it
        shows), then one ``job`` message per state change, until the runner stops or the
        viewer falls too far behind (it is dropped; its browser reconnects)."""
        feed = self.runner.feed
        job = request.query.get("job") or None
        resp = web.StreamResponse(
            headers={
                **HEADERS,
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",  # nginx: pass each message on at once
            }
        )
        protocol = request.protocol
        handling = getattr(protocol, "handling", None)
        if callable(handling):
            handling()  # no body comes: the request's body deadlines do not apply
        await resp.prepare(request)
        viewer = feed.join(job)
        try:
            hello = json.dumps({"boot": feed.boot})
            await resp.write(f"retry: 2000\nevent: hello\ndata: {hello}\n\n".encode())
            while not viewer.dropped and not self.runner.stopping:
                if not viewer.waiting:
                    viewer.wake.clear()
                    try:
                        await asyncio.wait_for(viewer.wake.wait(), KEEPALIVE)
                    except TimeoutError:
                        await resp.write(b": keep-alive\n\n")
                        continue
                if viewer.waiting:
                    chunk = b"".join(viewer.waiting)
                    viewer.waiting.clear()
                    await resp.write(chunk)
        except ConnectionError:
            pass  # the viewer went away: nothing to answer, nothing to log
        finally:
            feed.leave(viewer)
        return resp


def _root(path: str) -> str:
    """The relative way from ``path`` up to the view's root (``../../`` from /view/job/ID)."""
    return "../" * (path.count("/") - 1) or "./"


def _finalize(value: Any) -> Any:
    """Undecodable bytes written out in every value a template shows (markup is ours)."""
    if isinstance(value, str) and not hasattr(value, "__html__"):
        return shown_text(value)
    return value


def _cookie_path(request: web.BaseRequest) -> str:
    """Where the cookie is sent: under a proxy's ``X-Forwarded-Prefix``, else everywhere."""
    prefix = request.headers.get("X-Forwarded-Prefix", "").rstrip("/")
    return prefix + "/" if _PREFIX.fullmatch(prefix + "/") else "/"
