"""The command line: run, validate, jobs, show. The only module that exits or sets up logging.

Each command imports what it uses when it runs (and the parser only the options of the command
asked for): ``--version``, ``send`` and ``jobs`` must not wait for aiohttp and the runner to
load (tests/test_cli_imports.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import textwrap
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..exceptions import MeowError, WorkflowFileError, WorkflowProblem
from .urls import DOCS_URL

if TYPE_CHECKING:
    import signal

    from ..model.patterns import HttpPattern
    from ..model.workflow_file import WorkflowSpec
    from ..runner.runner import Runner

__all__ = ["main"]

logger = logging.getLogger("meow_async.cli")

_EPILOG = f"""\
examples:
  meow-async init my-project                          write a small workflow to start from
  meow-async run workflow.yaml                        run a workflow until Ctrl+C
  meow-async validate workflow.yaml                   list every problem in a workflow file
  meow-async schema > workflow.schema.json            the workflow file's JSON Schema
  meow-async jobs workflow.yaml --state failed        list the workflow's failed jobs
  meow-async jobs workflow.yaml --since 2h --tail 20  the newest 20 jobs of the last 2 hours
  meow-async jobs workflow.yaml --input data/a.csv    the jobs a file triggered
  meow-async show incoming_text --jobs workflow.yaml  print a rule's newest job (or one by id)
  meow-async show data/a.csv --jobs workflow.yaml     print the job a file triggered (newest)
  meow-async jobs logs -f incoming_text --jobs workflow.yaml   follow the rule's newest job
  meow-async jobs cancel ID --jobs workflow.yaml      stop a running job (SIGTERM, SIGKILL)
  meow-async jobs rerun ID --jobs workflow.yaml       run a finished job again
  meow-async status workflow.yaml --watch             what the runner is doing, every 2 s
  meow-async reload workflow.yaml                     the runner reads its file again
  meow-async jobs workflow.yaml --lineage data/r.txt  from a raw file or result, every job
  meow-async graph workflow.yaml | dot -Tsvg > g.svg  draw the rules and recorded edges
  meow-async prune --older-than 30d workflow.yaml     remove finished jobs older than 30 days
  printf 'hi' | meow-async send --ack workflow.yaml -  send data to its network trigger

docs: {DOCS_URL} (offline: meow-async docs)
  commands        {DOCS_URL}cli/
  workflow files  {DOCS_URL}workflow-file/
"""

#: Each command's page (--help ends with it); a command not named here gets the cli page.
_PAGES = {
    "init": "cli/#init",
    "docs": "cli/#docs",
    "run": "cli/#run",
    "validate": "workflow-file/#checking-a-file-meow-async-validate",
    "schema": "cli/#schema",
    "jobs": "cli/#jobs",
    "show": "cli/#show",
    "status": "cli/#status",
    "reindex": "cli/#reindex",
    "prune": "cli/#prune",
    "send": "network/#meow-async-send",
    "reload": "cli/#reload",
    "graph": "cli/#graph",
}


#: The commands whose options are defined by another module (imported only when asked for).
_ELSEWHERE = ("jobs", "show", "status", "prune", "graph")


def _command(argv: Sequence[str]) -> str:
    """The command ``argv`` asks for ("" if none: ``--version``, ``--help``)."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg
    return ""


def _parser(commands: Collection[str] = _ELSEWHERE) -> argparse.ArgumentParser:
    """The whole command line; only ``commands`` get the options other modules define."""
    p = argparse.ArgumentParser(
        prog="meow-async",
        description="Event-triggered workflows: files that land in a watched folder become "
        "jobs that run at once.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"meow_async {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ini = sub.add_parser(
        "init",
        help="write a small working workflow to start from",
        description="Write FOLDER/workflow.yaml: one file rule and its Python recipe, a comment "
        "on every key and the schema line editors read; and FOLDER/data/incoming/, the folder "
        "it watches. `meow-async run workflow.yaml` in FOLDER runs it as it is. An existing "
        "workflow.yaml is never replaced.",
    )
    ini.add_argument(
        "folder",
        nargs="?",
        type=Path,
        default=Path(),
        help="where (default: here; made if missing)",
    )
    doc = sub.add_parser(
        "docs",
        help="the documentation, offline too",
        description="With a display, open the documentation in a browser (the site built in a "
        "source checkout, else the online one); without, list its pages, which are installed "
        "with meow_async as Markdown. PAGE prints one page.",
    )
    doc.add_argument("page", nargs="?", help="a page to print, e.g. cli or workflow-file")
    doc.add_argument(
        "--path", action="store_true", help="print the folder that holds the pages, and exit"
    )

    run = sub.add_parser(
        "run",
        help="run a workflow file until stopped (Ctrl+C)",
        description="Run a workflow until Ctrl+C or SIGTERM. The first signal "
        "stops gracefully (running jobs get runner.shutdown_timeout seconds); a "
        "second stops running jobs at once.",
    )
    run.add_argument("workflow", type=Path, help="workflow file (YAML)")
    run.add_argument(
        "--loop",
        choices=["auto", "asyncio", "uvloop"],
        default="auto",
        help="event loop (default: auto = uvloop when installed)",
    )
    run.add_argument(
        "--max-jobs", type=int, metavar="N", help="jobs running at once (overrides runner.max_jobs)"
    )
    run.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="run jobs on a Dask cluster: a scheduler's address (tcp://host:8786) or local:N "
        "for N local worker processes (sets runner.conductor: dask; needs the dask extra)",
    )
    run.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="text (default) or json: one object per line with time, level, logger, message "
        "and, where a line is about one, job, rule, event and jobs (for log shippers)",
    )
    _verbosity(run)

    val = sub.add_parser(
        "validate",
        help="check a workflow file and list every problem",
        description="Check a workflow file without running it. Exits 1 and "
        "lists every problem with its line and column if there are any.",
    )
    val.add_argument("workflow", type=Path, help="workflow file (YAML)")
    val.add_argument(
        "--json",
        action="store_true",
        help="print {file, valid, problems: [{line, column, where, message, value}], warnings: "
        "[...]} as one JSON document on stdout, for editors and CI (same exit status)",
    )
    sub.add_parser(
        "schema",
        help="print the workflow file's JSON Schema (for editors)",
        description="Print the JSON Schema (draft 2020-12) of workflow files, made from the "
        f"definitions validate checks with; {DOCS_URL}workflow.schema.json is a copy.",
    )

    jobs = sub.add_parser(
        "jobs",
        help="list jobs and their states",
        description="List the jobs under a jobs folder, oldest first, with what triggered "
        "each (a file relative to the watched folder, or a message id and its sender) and its "
        "sweep point. Filters combine: every one given must hold. `meow-async jobs rerun ID`, "
        "`jobs cancel ID` and `jobs logs -f ID` act on one job (each has its --help).",
    )
    jobs.add_argument(
        "where",
        nargs="?",
        type=Path,
        default=Path(".meow/jobs"),
        help="a jobs folder, or a workflow file to take it from (default: ./.meow/jobs)",
    )
    if "jobs" in commands:
        from . import listing

        listing.add_arguments(jobs)

    show = sub.add_parser(
        "show",
        help="print one job: metadata, parameters, output",
        description="Print one job's metadata and the end of its output. JOB may also be "
        "the file (or message id) that triggered it; if it triggered several jobs, the newest "
        "is shown and stderr says how many there were.",
    )
    show.add_argument(
        "job",
        help="job id (or a unique start of one), a job folder, or the input file (a path from "
        "here or from the watched folder) or message id that triggered it",
    )
    if "show" in commands:
        from . import job_actions

        job_actions.add_jobs_option(show)
    show.add_argument("--json", action="store_true", help="print the metadata as JSON")
    show.add_argument(
        "--lines",
        type=int,
        default=20,
        metavar="N",
        help="lines of stdout/stderr to show (default: 20)",
    )
    st = sub.add_parser(
        "status",
        help="what a running runner is doing now",
        description="Show what the runner of a workflow is doing now, without stopping it: "
        "uptime, rules, events, jobs by state, running jobs and their age, queue depths (from "
        "its runner.http, if the workflow sets one; else jobs by state from the job folders). "
        f"Exits 0 if it runs, {NOT_RUNNING} if not.",
    )
    st.add_argument(
        "where",
        nargs="?",
        type=Path,
        help="a workflow file, or its jobs folder (default: ./.meow/jobs)",
    )
    if "status" in commands:
        from . import status

        status.add_arguments(st)
    gr = sub.add_parser(
        "graph",
        help="draw the workflow's rules and how files flow between them",
        description="Print the workflow as a graph (Graphviz DOT or Mermaid): rules as nodes; "
        "an edge A -> B, labelled with a count, where B's jobs were triggered by files A's "
        "jobs declared as outputs (as recorded in the jobs folder); dashed where A's declared "
        "outputs would match B's glob but no job has gone that way yet. "
        "`meow-async graph workflow.yaml | dot -Tsvg > workflow.svg` draws it.",
    )
    gr.add_argument("workflow", type=Path, help="workflow file (YAML)")
    if "graph" in commands:
        from .graph import FORMATS

        gr.add_argument("--format", choices=FORMATS, default="dot", help="dot (default) or mermaid")
    rl = sub.add_parser(
        "reload",
        help="make a running runner read its workflow file again",
        description="Ask the runner of WORKFLOW to read the file (and its recipe files) "
        "again: through its runner.http (POST /reload, with the token the file names) if it "
        "has one, else by SIGHUP to its process. The runner checks the whole file first: if "
        "anything is wrong it changes nothing and the problems are printed (exit 1). A "
        "runner also reloads by itself when the file is saved.",
    )
    rl.add_argument("workflow", type=Path, help="the workflow file the runner runs")
    rx = sub.add_parser(
        "reindex",
        help="make the job index again from the job folders",
        description="Make the jobs folder's index (.meow-index.sqlite3) again from the job "
        "folders, which are the record. A runner does it by itself at start when the index is "
        "missing, unreadable or of an older version; this is for doing it by hand (with no "
        "runner running).",
    )
    rx.add_argument(
        "where",
        nargs="?",
        type=Path,
        default=Path(".meow/jobs"),
        help="a workflow file, or its jobs folder (default: ./.meow/jobs)",
    )
    pr = sub.add_parser(
        "prune",
        help="remove finished jobs older than a given age",
        description="Remove finished jobs (their folders and index rows) that ended longer "
        "ago than --older-than, oldest first, a slice at a time: a runner on the same folder "
        "goes on meanwhile. runner.retention in the workflow file does the same in the "
        "background.",
    )
    pr.add_argument(
        "where",
        nargs="?",
        type=Path,
        default=Path(".meow/jobs"),
        help="a workflow file, or its jobs folder (default: ./.meow/jobs)",
    )
    if "prune" in commands:
        from . import history

        history.add_prune_arguments(pr)
    snd = sub.add_parser(
        "send",
        help="send data to a network trigger (one message)",
        description="Send one message to a meow_async network listener (or any TCP server). "
        "Exits 0 once sent, or, with --ack, once the listener has stored and queued it.",
    )
    snd.add_argument(
        "address",
        help="HOST:PORT, e.g. 127.0.0.1:7301 or [::1]:7301; or a workflow file, to send to "
        "its network pattern (the port its runner listens on, even with port: 0)",
    )
    snd.add_argument("file", nargs="?", default="-", help="file to send, or - for stdin (default)")
    snd.add_argument(
        "--ack",
        action="store_true",
        help="wait for the listener's acknowledgement and print the message id",
    )
    snd.add_argument(
        "--framing",
        choices=["connection", "delimiter", "length"],
        help="must match the pattern's (default: the workflow pattern's, else connection)",
    )
    snd.add_argument(
        "--delimiter",
        help="with --framing delimiter (default: the workflow pattern's, else newline; \\n "
        "and \\0 understood)",
    )
    snd.add_argument(
        "--rule",
        metavar="NAME",
        help="with a workflow file: the network pattern to send to, if it has several",
    )
    snd.add_argument("--tls", action="store_true", help="connect with TLS")
    snd.add_argument("--cafile", type=Path, help="CA certificate to trust (with --tls)")
    snd.add_argument("--cert", type=Path, help="client certificate (for mutual TLS)")
    snd.add_argument("--key", type=Path, help="client certificate's key")
    snd.add_argument("--server-name", help="TLS name to check (default: the host)")
    snd.add_argument(
        "--timeout", type=float, default=30.0, help="seconds before giving up (default: 30)"
    )
    for name, command in sub.choices.items():
        command.epilog = f"docs: {DOCS_URL}{_PAGES.get(name, 'cli/')}"
        command.formatter_class = _HelpFormatter
    return p


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps at spaces only, so a URL (with its hyphens) stays whole and clickable."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return textwrap.fill(
            " ".join(text.split()),
            width,
            initial_indent=indent,
            subsequent_indent=indent,
            break_on_hyphens=False,
            break_long_words=False,
        )


def _verbosity(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    g.add_argument("-q", "--quiet", action="store_true", help="log only warnings and errors")


#: ``meow-async status``'s exit status when no runner runs (as cli/status.py returns it).
NOT_RUNNING = 3

#: ``jobs ACTION ID`` (cli/job_actions.py's ACTIONS).
_JOB_ACTIONS = ("rerun", "cancel", "logs")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["jobs"] and argv[1:2] and argv[1] in _JOB_ACTIONS:
        # `jobs ACTION ID`: a folder named like an action is given as ./rerun
        from . import job_actions

        args = job_actions.parser().parse_args(argv[1:])
        args.command = "jobs " + args.action
    else:
        args = _parser([_command(argv)]).parse_args(argv)
    try:
        return _dispatch(args)
    except MeowError as e:
        print(f"meow-async: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `meow-async jobs | head`
        sys.stderr.close()
        return 0


def _dispatch(args: argparse.Namespace) -> int:
    if args.command.startswith("jobs "):
        from ..model.config import http_token
        from . import job_actions

        root, spec = _root_and_spec(args.jobs)
        token = http_token(spec.config.http) if spec is not None else None
        return job_actions.job_action(args, root, token)
    if args.command == "run":
        return _run(args)
    if args.command == "init":
        from .init import init_command

        return init_command(args.folder)
    if args.command == "docs":
        from .docs import docs_command

        return docs_command(args.page, path=args.path)
    if args.command == "validate":
        return _validate(args.workflow, as_json=args.json)
    if args.command == "schema":
        from ..model.schema import schema_text

        sys.stdout.write(schema_text())
        return 0
    if args.command == "jobs":
        return _jobs(args)
    if args.command == "send":
        return _send(args)
    if args.command == "status":
        from . import status

        return status.status_command(_read_only_root_and_spec, args.where, args.watch, args.json)
    if args.command == "graph":
        from ..model.workflow_file import load_workflow
        from .graph import graph_command

        return graph_command(load_workflow(args.workflow), args.format)
    if args.command == "reload":
        from .reload import reload_command

        return reload_command(args.workflow)
    if args.command in ("reindex", "prune"):
        from . import history

        if args.command == "reindex":
            return history.reindex_command(_jobs_root(args.where))
        return history.prune_command(_jobs_root(args.where), args)
    return _show(args)


# -- run ----------------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from ..model.config import dask_option
    from ..model.workflow_file import load_workflow
    from ..runner.loops import loop_factory
    from ..runner.runner import Runner
    from . import folders
    from .logs import setup_logging

    setup_logging(
        logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO,
        json_lines=args.log_format == "json",
    )
    if args.max_jobs is not None and args.max_jobs < 1:
        raise MeowError(f"--max-jobs must be at least 1, got {args.max_jobs}")
    spec = load_workflow(args.workflow)
    _warn(spec.warnings)
    dask = {"conductor": "dask", "dask": dask_option(args.dask)} if args.dask is not None else {}
    for made in folders.make(spec):
        logger.info("made the folder %s (the workflow watches it)", _rel(made))
    runner = Runner.from_spec(spec, max_jobs=args.max_jobs, **dask)
    try:
        with asyncio.Runner(loop_factory=loop_factory(args.loop)) as loop_runner:
            loop_runner.run(_serve(runner, spec, args.loop, json_lines=args.log_format == "json"))
    except ExceptionGroup as group:
        # A monitor that fails (e.g. its folder vanished) ends the runner's TaskGroup.
        ours, other = group.split(MeowError)
        if other is not None or ours is None:
            raise
        for e in _leaves(ours):
            print(f"meow-async: error: {e}", file=sys.stderr)
        return 1
    return 0


def _leaves(group: BaseExceptionGroup[MeowError]) -> list[BaseException]:
    out: list[BaseException] = []
    for e in group.exceptions:
        out.extend(_leaves(e) if isinstance(e, BaseExceptionGroup) else [e])
    return out


async def _serve(
    runner: Runner, spec: WorkflowSpec, loop_name: str, *, json_lines: bool = False
) -> None:
    import asyncio
    import signal

    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if runner.stopping:
            logger.warning("%s again: stopping running jobs now", sig.name)
        else:
            logger.warning("%s: stopping gracefully (again to stop running jobs at once)", sig.name)
        runner.stop()

    reloading: set[asyncio.Task[Any]] = set()

    def on_hangup() -> None:
        # `kill -HUP` is what daemons take for "reload" (a closed terminal sends it too: the
        # file is read again, which changes nothing if it did not change).
        task = asyncio.create_task(runner.reload("SIGHUP"))
        reloading.add(task)
        task.add_done_callback(reloading.discard)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    try:
        task = asyncio.create_task(runner.run())
        started = asyncio.create_task(runner.started.wait())
        await asyncio.wait([task, started], return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        if runner.started.is_set():
            if json_lines:  # stdout stays empty; the banner is one record for the shipper
                _banner_record(spec, runner, loop_name)
            else:
                _banner(spec, runner, loop_name)  # the runner's live file is written by now
        await task
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)


def _banner(spec: WorkflowSpec, runner: Runner, loop: str) -> None:
    from ..model.schedule import tick_name
    from ..model.triggers import trigger_text

    cfg = runner.config
    out = [
        f"meow_async {__version__}: running {spec.path} (loop: {loop})",
        f"  watching  {cfg.base_dir.absolute()}",
        f"  jobs in   {runner.jobs_dir}",
    ]
    view = runner.view_url()
    if view is not None:
        token = runner.endpoints is not None and runner.endpoints.needs_token
        out.append(f"  live view {view}" + ("  (open it once with ?token=...)" if token else ""))
    rules = runner.rules
    ports = runner.ports()
    ticks = runner.time.next_ticks()
    width = max((len(n) for n in rules), default=0)
    for i, (name, rule) in enumerate(rules.items()):
        trigger = trigger_text(rule.pattern, ports.get(name))
        nxt = f"; next {tick_name(ticks[name])}" if name in ticks else ""
        out.append(
            f"  {'rules' if i == 0 else '':<9} {name:<{width}}  {trigger} -> "
            f"{rule.recipe.kind} recipe {rule.recipe.name}{nxt}"
        )
    out.extend(f"Try it: {hint}" for hint in _hints(runner, ports))
    out.append(f"Then: {_prog()} jobs {_rel(runner.jobs_dir)}   (Ctrl+C stops)")
    print("\n".join(out), flush=True)


def _banner_record(spec: WorkflowSpec, runner: Runner, loop: str) -> None:
    """What the banner says, as one log record (``--log-format json``)."""
    from ..model.addresses import host_port
    from ..model.schedule import tick_name
    from ..model.triggers import trigger_text

    ports = runner.ports()
    ticks = runner.time.next_ticks()
    http, port = runner.config.http, runner.http_port
    rules = [
        {
            "name": name,
            "trigger": trigger_text(rule.pattern, ports.get(name)),
            "recipe": rule.recipe.name,
            "recipe_kind": rule.recipe.kind,
            **({"next_tick": tick_name(ticks[name])} if name in ticks else {}),
        }
        for name, rule in runner.rules.items()
    ]
    logger.info(
        "meow_async %s: running %s (loop: %s), %d rule(s)",
        __version__,
        spec.path,
        loop,
        len(rules),
        extra={
            "workflow": str(spec.path),
            "base_dir": str(runner.config.base_dir.absolute()),
            "jobs_dir": str(runner.jobs_dir),
            "rules": rules,
            "http": None if http is None or port is None else host_port(http["host"], port),
        },
    )


def _hints(runner: Runner, ports: dict[str, int]) -> list[str]:
    """Commands that make the first file rule and the first network rule fire."""

    from ..model.addresses import host_port
    from ..model.patterns import FilePattern, HttpPattern, NetworkPattern

    out: list[str] = []
    for rule in runner.rules.values():
        p = rule.pattern
        if isinstance(p, FilePattern) and not any(c in p.glob for c in "?[") and not out:
            target = runner.config.base_dir / p.glob.replace("**/", "").replace("*", "hello")
            if p.matches(os.path.relpath(target, runner.config.base_dir)):
                out.append(f"echo 'hello world' > {_rel(target)}")
    for rule in runner.rules.values():
        p = rule.pattern
        if isinstance(p, NetworkPattern):
            opts = "".join(
                [
                    " --tls --cafile CA.pem" if p.tls else "",
                    " --cert CLIENT.pem --key CLIENT.key" if p.tls_client_ca else "",
                    f" --framing {p.framing}" if p.framing != "connection" else "",
                    " --ack" if p.ack else "",
                ]
            )
            where = host_port(p.host, ports.get(rule.name, p.port))
            out.append(f"printf 'hello world' | {_prog()} send{opts} {where} -")
            break
    for rule in runner.rules.values():
        p = rule.pattern
        if isinstance(p, HttpPattern) and "POST" in p.methods and p.hmac_secret() is None:
            where = host_port(p.host, ports.get(rule.name, p.port))
            out.append(_curl_hint(p, where))
            break
    return out


def _curl_hint(p: HttpPattern, where: str) -> str:
    """A curl line that works when pasted: the token in the header the pattern reads, HTTPS
    with the CA to trust (and the client certificate it asks for)."""
    import re

    opts = ""
    if p.token() is not None:
        bearer = p.token_header.lower() == "authorization"
        opts += f' -H "{p.token_header}: {"Bearer " if bearer else ""}$TOKEN"'
    if p.tls_cert:
        opts += " --cacert CA.pem"
    if p.tls_client_ca:
        opts += " --cert CLIENT.pem --key CLIENT.key"
    scheme = "https" if p.tls_cert else "http"
    route = re.sub(r"\{\w+\}", "example", p.route)
    return f"curl{opts} --data-binary 'hello world' {scheme}://{where}{route}"


def _prog() -> str:
    """How the user started us, so hints can be pasted as they are (venv not activated)."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "meow-async"
    if argv0.endswith("__main__.py"):
        return f"{_short(sys.executable)} -m meow_async"
    if os.sep not in argv0:
        return argv0  # found on PATH
    return _short(argv0)


def _short(path: str) -> str:
    rel = _rel(Path(path))
    return rel if not rel.startswith("..") else path


def _rel(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


# -- send ---------------------------------------------------------------------------------------


def _send(args: argparse.Namespace) -> int:
    import asyncio

    from .send import client_tls_context, send

    framing: str = args.framing or "connection"
    delimiter = (args.delimiter or "\\n").encode().decode("unicode_escape").encode("latin-1")
    if _is_workflow(args.address):
        # The port its runner listens on (port: 0 too), and the pattern's own framing.
        from ..model.workflow_file import load_workflow
        from .listening import target

        to = target(load_workflow(Path(args.address)), args.rule)
        host, port_text = to.host, str(to.port)
        framing = args.framing or to.pattern.framing
        if args.delimiter is None:
            delimiter = to.pattern.delimiter.encode()  # as the listener splits on it
        if to.pattern.tls and not args.tls:
            raise MeowError(
                f"pattern {to.pattern.name!r} listens with TLS: add --tls (and --cafile CA.pem)"
            )
    else:
        if args.rule is not None:
            raise MeowError("--rule goes with a workflow file, not HOST:PORT")
        host, sep, port_text = args.address.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise MeowError(f"expected HOST:PORT or a workflow file, got {args.address!r}")
    if (args.cert is None) != (args.key is None) or ((args.cert or args.cafile) and not args.tls):
        raise MeowError("--cert and --key go together, and with --tls (as does --cafile)")
    tls = client_tls_context(args.cafile, args.cert, args.key) if args.tls else None
    if args.file == "-":
        data: bytes | Path = sys.stdin.buffer.read()
    else:
        data = Path(args.file)
        if not data.is_file():
            raise MeowError(f"no such file: {data}")

    async def go() -> str | None:
        async with asyncio.timeout(args.timeout):
            return await send(
                host,
                int(port_text),
                data,
                ack=args.ack,
                framing=framing,
                delimiter=delimiter,
                tls=tls,
                server_hostname=args.server_name,
            )

    try:
        msg_id = asyncio.run(go())
    except TimeoutError:
        if args.ack:
            raise MeowError(
                f"{args.address}: no acknowledgement within {args.timeout:g}s; the message may "
                "still have been accepted (a retry can make a second job)"
            ) from None
        raise MeowError(f"{args.address}: no answer within {args.timeout:g}s") from None
    except ValueError as e:
        raise MeowError(str(e)) from None
    if msg_id is not None:
        print(msg_id)
    return 0


def _is_workflow(address: str) -> bool:
    """A workflow file, not HOST:PORT (which is never a file, nor ends in .yaml)."""
    return address.endswith((".yaml", ".yml")) or Path(address).is_file()


# -- validate -----------------------------------------------------------------------------------


def _validate(path: Path, *, as_json: bool = False) -> int:
    if as_json:
        return _validate_json(path)
    from ..model.workflow_file import load_workflow
    from ..runner.runner import Runner
    from . import folders

    spec = load_workflow(path)
    _warn(spec.warnings)
    runner = Runner.from_spec(spec)  # rules are checked as they are made
    print(
        f"{path}: OK: {len(spec.patterns)} pattern(s), {len(spec.recipes)} recipe(s), "
        f"{len(runner.rules)} rule(s)"
    )
    note = folders.note(spec)
    if note:
        print(f"note: {note}", file=sys.stderr)
    return 0


def _validate_json(path: Path) -> int:
    """The same checks, as one JSON document on stdout: every problem, located, for tools."""
    import json

    from ..model.workflow_file import load_workflow
    from ..runner.runner import Runner

    warnings: list[WorkflowProblem] = []
    try:
        spec = load_workflow(path)
        warnings = spec.warnings
        Runner.from_spec(spec)
        problems = []
    except WorkflowFileError as e:
        problems = [r.as_json() for r in e.records]
        warnings = e.warnings
    except MeowError as e:  # found as the rules are made: not tied to one place in the file
        problems = [WorkflowProblem(str(path), None, None, "", str(e)).as_json()]
    doc = {
        "file": str(path),
        "valid": not problems,
        "problems": problems,
        "warnings": [w.as_json() for w in warnings],
    }
    print(json.dumps(doc, indent=2, ensure_ascii=False))
    return 1 if problems else 0


def _warn(warnings: list[WorkflowProblem]) -> None:
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)


# -- jobs and show ------------------------------------------------------------------------------


def _jobs_root(where: Path, *, lenient: bool = False) -> Path:
    """The jobs folder ``where`` names; ``lenient``: a workflow file with problems names its
    runner's (a command that only reads it)."""
    if where.is_file():
        from ..model.workflow_file import load_workflow

        try:
            return load_workflow(where).config.jobs_dir
        except WorkflowFileError as e:
            if not lenient:
                raise
            from .broken_file import or_jobs_dir

            return or_jobs_dir(where, e)
    if (where / ".meow" / "jobs").is_dir() and not any(where.glob("*/job.json")):
        return where / ".meow" / "jobs"  # a project folder: its runner's jobs
    if not where.exists():
        raise MeowError(f"no jobs folder at {where} (give the jobs folder or the workflow file)")
    return where


def _root_and_spec(where: Path, *, lenient: bool = False) -> tuple[Path, WorkflowSpec | None]:
    """The jobs folder, and the workflow if ``where`` is its file (``status`` shows its rules);
    ``lenient`` as for ``_jobs_root`` (then no workflow)."""
    if where.is_file():
        from ..model.workflow_file import load_workflow

        try:
            spec = load_workflow(where)
        except WorkflowFileError as e:
            if not lenient:
                raise
            from .broken_file import or_jobs_dir

            return or_jobs_dir(where, e), None
        return spec.config.jobs_dir, spec
    return _jobs_root(where), None


def _read_only_root_and_spec(where: Path) -> tuple[Path, WorkflowSpec | None]:
    return _root_and_spec(where, lenient=True)


def _jobs(args: argparse.Namespace) -> int:
    if args.lineage is not None:
        from .lineage import lineage_command

        root, spec = _root_and_spec(args.where, lenient=True)
        base = spec.config.base_dir if spec is not None else None
        return lineage_command(root, args.lineage, base, as_json=args.json)
    from . import listing

    return listing.jobs_command(_jobs_root(args.where, lenient=True), args)


def _show(args: argparse.Namespace) -> int:
    import json

    from ..conductors.process_log import current
    from ..model.jobs import META_FILE, STDERR_FILE, STDOUT_FILE, read_meta
    from . import listing

    job_dir = Path(args.job)
    if not (job_dir / META_FILE).is_file():
        job_dir = listing.find_one(_jobs_root(args.jobs, lenient=True), args.job)
    meta = current({**read_meta(job_dir), "dir": str(job_dir)})
    if args.json:
        print(json.dumps(meta, indent=2, sort_keys=True))
        return 0
    event = meta.get("event") or {}
    lines = [
        f"job       {meta.get('id')}",
        f"state     {meta.get('state')}"
        + (f"  ({_ended(meta['exit_code'])})" if meta.get("exit_code") is not None else ""),
        f"rule      {meta.get('rule')}  (pattern {meta.get('pattern')}, "
        f"{meta.get('recipe_kind')} recipe {meta.get('recipe')})",
        f"event     {event.get('change') or event.get('kind')} {event.get('path')}",
        f"created   {_when(meta.get('created'))}",
        f"started   {_when(meta.get('started'))}"
        + (f"  (pid {meta['pid']})" if meta.get("pid") else ""),
        f"finished  {_when(meta.get('finished'))}  (took {_took(meta)})",
        f"folder    {job_dir}",
    ]
    if meta.get("error"):
        lines.append(f"error     {meta['error']}")
    lines.append("parameters")
    lines += [f"  {k} = {json.dumps(v)}" for k, v in (meta.get("parameters") or {}).items()]
    for name in (STDOUT_FILE, STDERR_FILE):
        tail = _tail(job_dir / name, args.lines)
        if tail:
            lines.append(f"--- {name} (last {args.lines} lines) ---")
            lines += tail
    print("\n".join(lines))
    return 0


def _ended(code: Any) -> str:
    from ..model.jobs import ended_text

    return ended_text(code) if isinstance(code, int) else f"exit code {code}"


def _tail(path: Path, n: int) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            return f.read().decode("utf-8", "replace").splitlines()[-n:]
    except OSError:
        return []


def _when(t: Any) -> str:
    if not isinstance(t, int | float):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _took(m: dict[str, Any]) -> str:
    a, b = m.get("started"), m.get("finished")
    if isinstance(a, int | float) and isinstance(b, int | float):
        return f"{b - a:.2f}s"
    return "-"
