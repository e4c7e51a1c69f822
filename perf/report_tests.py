"""The report's network tests (section 4.1) plus a paced latency test, for every variant.

a) one listener, N messages; b) 1000 messages over L listeners of one monitor; c) 1000
messages over M monitors of one listener each. Every message is its own TCP connection. Each
point runs every variant back to back (meow_async, the floor on both loops, meow_base), so
their ratios come from the same minute of the same noisy machine.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .floor import FloorIntake
from .loops import loop_factory
from .meow_async_side import MeowAsyncIntake
from .meow_base_side import run_capped
from .rounds import Intake, PointSpec, Sender, run_point
from .sender_process import InProcessSender, SenderProcess
from .sizes import Sizes
from .summaries import label, latency_summary, median_ms, ratio, status

TITLES = {
    "a": "Test a: one listener, N messages",
    "b": "Test b: 1000 messages over L listeners (one monitor)",
    "c": "Test c: 1000 messages over M monitors (one listener each)",
    "paced": "Latency: 1000 messages, one every millisecond, one listener",
}
X_NAMES = {"a": "messages", "b": "listeners", "c": "monitors", "paced": "messages"}
PACED_INTERVAL_S = 0.001


@dataclass(frozen=True, slots=True)
class Variant:
    impl: str  # meow_async | floor | meow_base
    loop: str  # asyncio | uvloop | threads (meow_base)
    sender: str  # process | in-process


@dataclass(frozen=True, slots=True)
class Options:
    sizes: Sizes
    repeats: int
    loop: str
    concurrency: int
    payload: int
    meow_base: bool
    scratch: Path
    tests: tuple[str, ...] = ("a", "b", "c", "paced")


def variants(opts: Options, *, paced: bool = False) -> list[Variant]:
    # With a separate sender, meow_async on both loops (the runner's default is uvloop when it
    # is installed; asyncio's own loop is what a plain embedding gets), each against the floor
    # on the same loop.
    out = [
        Variant("meow_async", "asyncio", "process"),
        Variant("meow_async", "uvloop", "process"),
        Variant("floor", "asyncio", "process"),
        Variant("floor", "uvloop", "process"),
    ]
    if opts.meow_base:
        out.append(Variant("meow_base", "threads", "process"))
    if paced:
        return out
    out += [
        Variant("meow_async", opts.loop, "in-process"),
        Variant("floor", opts.loop, "in-process"),
    ]
    if opts.meow_base and opts.sizes.name == "full":
        out.append(Variant("meow_base", "threads", "in-process"))
    return out


def specs(sizes: Sizes) -> list[PointSpec]:
    out = [PointSpec("a", n, n, 1, 1) for n in sizes.a]
    out += [PointSpec("b", k, sizes.messages, 1, k) for k in sizes.b]
    out += [PointSpec("c", k, sizes.messages, k, 1) for k in sizes.c]
    return out


#: Rounds of a point are run in this many chunks, the variants taking turns (see run_turns).
CHUNKS = 5


def run(opts: Options, log: Callable[[str], None] = print) -> dict[str, Any]:
    points: list[dict[str, Any]] = []
    plan = [(s, variants(opts), opts.repeats, 0.0) for s in specs(opts.sizes)]
    plan = [p for p in plan if p[0].test in opts.tests]
    if "paced" in opts.tests:
        paced = PointSpec("paced", opts.sizes.paced_n, opts.sizes.paced_n, 1, 1)
        plan.append((paced, variants(opts, paced=True), min(opts.repeats, 3), PACED_INTERVAL_S))
    for spec, vs, repeats, interval in plan:
        recs = run_turns([v for v in vs if v.impl != "meow_base"], spec, opts, repeats, interval)
        # meow_base in one block: its child process runs under one time cap.
        recs += [run_one(v, spec, opts, repeats, interval) for v in vs if v.impl == "meow_base"]
        for rec in recs:
            points.append(rec)
            log(_line(rec))
        log(_ratios(recs))
    return {
        "settings": {
            "size": opts.sizes.name,
            "repeats": opts.repeats,
            "concurrency": opts.concurrency,
            "payload_bytes": opts.payload,
            "paced_interval_s": PACED_INTERVAL_S,
            "quiet_s": opts.sizes.quiet_s,
            "sender_loop": "uvloop",
            "meow_async_loop": opts.loop,
            "chunks": CHUNKS,
        },
        "points": points,
    }


def run_turns(
    vs: list[Variant], spec: PointSpec, opts: Options, repeats: int, interval_s: float
) -> list[dict[str, Any]]:
    """Run a point's rounds in chunks, the variants taking turns and each leading once.

    On this kind of disk one variant's thousands of deleted spool files make the next one's
    file creations slower for minutes (ext4 skips recently freed inodes): running each
    variant's rounds in one block would favour whichever runs first.
    """
    k = max(1, min(CHUNKS, repeats))
    sizes = [repeats // k + (1 if i < repeats % k else 0) for i in range(k)]
    merged: dict[Variant, dict[str, Any]] = {}
    for c, n in enumerate(sizes):
        turn = c % len(vs) if vs else 0
        for v in vs[turn:] + vs[:turn]:
            rec = run_one(v, spec, opts, n, interval_s)
            if v not in merged:
                merged[v] = rec
                continue
            m = merged[v]
            m["rounds"] += rec["rounds"]
            m["repeats"] += rec["repeats"]
            m["killed_at_cap"] = m["killed_at_cap"] or rec["killed_at_cap"]
            m["error"] = m["error"] or rec["error"]
    return [merged[v] for v in vs]


def run_one(
    v: Variant, spec: PointSpec, opts: Options, repeats: int, interval_s: float
) -> dict[str, Any]:
    folder = opts.scratch / f"net-{spec.test}{spec.x}-{v.impl}-{v.loop}-{v.sender}"
    folder.mkdir(parents=True, exist_ok=True)
    cap = opts.sizes.meow_base_cap_s if v.impl == "meow_base" else opts.sizes.cap_s
    rec: dict[str, Any] = {
        **asdict(spec),
        **asdict(v),
        "repeats": repeats,
        "interval_s": interval_s,
        "cap_s": cap,
        "killed_at_cap": False,
        "error": "",
        "rounds": [],
    }
    common: dict[str, Any] = {
        "repeats": repeats,
        "cap_s": cap,
        "size": opts.payload,
        "concurrency": opts.concurrency,
        "interval_s": interval_s,
        "quiet_s": opts.sizes.quiet_s,
    }
    try:
        if v.impl == "meow_base":
            rounds, info = run_capped(spec, sender=v.sender, scratch=folder, **common)
            rec.update(rounds=rounds, **info)
        else:
            with asyncio.Runner(loop_factory=loop_factory(v.loop)) as runner:
                res = runner.run(
                    run_point(_intake_factory(v, folder), _sender_factory(v), spec, **common)
                )
            rec["rounds"] = [r.to_json() for r in res]
    except Exception as e:  # one broken point must not lose the others
        rec["error"] = f"{type(e).__name__}: {e}"
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return rec


def _intake_factory(v: Variant, folder: Path) -> Callable[[int], Intake]:
    def make(restart: int) -> Intake:
        where = folder / f"spool{restart}"
        return MeowAsyncIntake(where) if v.impl == "meow_async" else FloorIntake(where)

    return make


def _sender_factory(v: Variant) -> Callable[[], Any]:
    async def make() -> Sender:
        if v.sender == "process":
            return await SenderProcess.start()
        return InProcessSender()

    return make


def _line(rec: dict[str, Any]) -> str:
    med = median_ms(rec)
    head = f"{rec['test']:>5} {rec['x']:>5}  {label(rec):<44}"
    if med is None:
        return f"{head} no complete round: {status(rec)}"
    text = f"{head} median {med:9.1f} ms  {med / rec['n']:7.3f} ms/event"
    lat = latency_summary(rec)
    if lat is not None:
        text += f"  latency p50 {lat['p50_ms']:.2f} p99 {lat['p99_ms']:.2f} ms"
    st = status(rec)
    return f"{text}  [{st}]" if st else text


def _ratios(recs: list[dict[str, Any]]) -> str:
    by = {(r["impl"], r["loop"], r["sender"]): median_ms(r) for r in recs}
    parts = []
    for (impl, loop, sender), med in by.items():
        if impl != "meow_async":
            continue
        floor = ratio(med, by.get(("floor", loop, sender)))
        if floor is not None:
            parts.append(f"meow_async/floor({loop}, {sender}) = {floor:.2f}")
        base = ratio(med, by.get(("meow_base", "threads", sender)))
        if base is not None:
            parts.append(f"meow_async/meow_base({sender}) = {base:.3f}")
    return "      " + ("; ".join(parts) or "no ratio (a variant did not finish)")
