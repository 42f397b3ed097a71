"""The command line of ``qmodel explore`` (see :mod:`qmodel.explore` for the search).

Flags make a :class:`~qmodel.explore.Scope`; the answer is ``check``'s: a human summary, or
with ``--json`` exactly one JSON object; exit 0 ok, 1 violation, 2 unknown or a bad flag or
target, 3 a target stuck inside one step. A counterexample's trace is made by
:func:`qmodel.replay.trace_of` and its report by :func:`qmodel.report.write_report`, as
``check`` makes them.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from typing import Any

import attrs

from qmodel.check import select
from qmodel.explore import (
    DEFAULT_PINNED,
    Explorer,
    Found,
    Scope,
    ScopeError,
    cited_kv_ops,
)

__all__ = ["add_parser", "explore_command", "explore_main", "scope_of"]


def add_parser(sub: Any) -> None:
    """Add ``qmodel explore`` to the command line's subparsers ``sub``."""
    e = sub.add_parser(
        "explore",
        help="search a bounded scope exhaustively, breadth-first: the shortest counterexample",
        description="Search every interleaving of a small scope, breadth-first, so the first "
        "violation found is the shortest; ok with exhaustive: true when the whole scope was "
        "covered, unknown when a bound was hit.",
    )
    e.add_argument("--target", help="as for qmodel check (default seed-000)")
    e.add_argument(
        "--env",
        metavar="NAME",
        help="as for qmodel check: the Wrangler environment of a JavaScript or TypeScript target",
    )
    e.add_argument("--protocol", metavar="NAME", help="as for qmodel check (default: the target's)")
    e.add_argument(
        "--bots",
        type=int,
        default=1,
        help="bot processes (default 1; with 0, the invariants about the work being done are "
        "not judged)",
    )
    e.add_argument("--frontends", type=int, default=1, help="frontends (default 1)")
    e.add_argument("--posts", type=int, default=2, help="messages posted (default 2)")
    e.add_argument(
        "--bursts",
        type=int,
        default=0,
        help="bursts of another app's messages, of every size the protocol offers; a burst "
        "lands whole, its requests stepped to their end before anything else (default 0)",
    )
    e.add_argument("--crashes", type=int, default=0, help="bot crashes (default 0)")
    e.add_argument(
        "--advances",
        type=int,
        default=0,
        help="clock moves while tasks may still run, of every tick the protocol offers "
        "(default 0: the clock moves only when nothing can run)",
    )
    e.add_argument(
        "--landed",
        type=int,
        default=0,
        help="the first N posts are answered before anything else steps (default 0)",
    )
    e.add_argument(
        "--polled",
        action="store_true",
        help="once the landed posts are answered, every bot polls once before anything else "
        "steps: the race starts from a state where every bot knows the stored messages (its "
        "KV operations are reported apart, as the initial state)",
    )
    e.add_argument("--depth", type=int, default=80, help="verbs per example at most (default 80)")
    e.add_argument("--kv", choices=("strict", "local"), default="local", help="default local")
    e.add_argument(
        "--horizon-ms",
        type=int,
        default=0,
        help="how far the clock may jump to a sleeping task's wake-up (default 0: never)",
    )
    e.add_argument(
        "--options",
        action="append",
        metavar="LABEL=K",
        help="explore the first K options of choice LABEL, or with LABEL=@N the Nth only "
        "(repeatable; the default scope "
        f"takes option 0 of {', '.join(DEFAULT_PINNED)})",
    )
    e.add_argument("--invariant", action="append", metavar="ID", help="check only this one")
    e.add_argument("--skip-invariant", action="append", metavar="ID", help="do not check it")
    e.add_argument("--max-states", type=int, default=200_000, help="default 200000")
    e.add_argument("--max-seconds", type=float, default=60.0, help="wall seconds (default 60)")
    e.add_argument(
        "--no-dedup",
        action="store_true",
        help="explore every interleaving, even of states already seen (to measure)",
    )
    e.add_argument(
        "--no-reduce",
        action="store_true",
        help="branch on every step, even one nothing else can observe (to measure)",
    )
    e.add_argument("--step-limit", type=int, default=10_000, help="as for qmodel check")
    e.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    e.add_argument("--report", metavar="DIR", help="on a violation, write the report files")


def _options(raw: Sequence[str] | None) -> tuple[dict[str, int], dict[str, int]]:
    """The caps (``LABEL=K``: the first K options) and the single options (``LABEL=@N``: the
    Nth option only, counted from 1) of ``--options``."""
    caps, only = dict(DEFAULT_PINNED), {}
    for item in raw or ():
        label, sep, k = item.partition("=")
        one = k.startswith("@")
        digits = k[1:] if one else k
        if not sep or not label or not digits.strip().lstrip("-").isdigit():
            raise ScopeError(
                f"--options {item}: give LABEL=K (the first K options, e.g. bot.generate=3) or "
                "LABEL=@N (the Nth only, e.g. consumer.work_ms=@4)"
            )
        if one:
            caps.pop(label, None)
            only[label] = int(digits) - 1
        else:
            only.pop(label, None)
            caps[label] = int(digits)
    return caps, only


def scope_of(args: argparse.Namespace) -> Scope:
    """The :class:`Scope` a command line asks for (:class:`ScopeError` if it cannot be)."""
    caps, only = _options(args.options)
    scope = Scope(
        bots=args.bots,
        frontends=args.frontends,
        posts=args.posts,
        bursts=args.bursts,
        crashes=args.crashes,
        advances=args.advances,
        depth=args.depth,
        kv=args.kv,
        horizon_ms=args.horizon_ms,
        max_states=args.max_states,
        max_seconds=args.max_seconds,
        dedup=not args.no_dedup,
        landed=args.landed,
        polled=args.polled,
        reduce=not args.no_reduce,
        options=caps,
        only=only,
    )
    scope.check()
    if args.step_limit < 10:
        raise ScopeError(f"--step-limit {args.step_limit}: give at least 10")
    return scope


def explore_command(args: argparse.Namespace) -> str:
    """The ``qmodel explore`` command line that runs the same search as ``args``."""
    cmd = ["qmodel", "explore"]
    if args.target:
        cmd += ["--target", args.target]
    if getattr(args, "env", None):
        cmd += ["--env", args.env]
    if args.protocol:
        cmd += ["--protocol", args.protocol]
    cmd += ["--bots", str(args.bots), "--frontends", str(args.frontends)]
    cmd += ["--posts", str(args.posts), "--depth", str(args.depth), "--kv", args.kv]
    if args.bursts:
        cmd += ["--bursts", str(args.bursts)]
    if args.crashes:
        cmd += ["--crashes", str(args.crashes)]
    if args.advances:
        cmd += ["--advances", str(args.advances)]
    if args.landed:
        cmd += ["--landed", str(args.landed)]
    if args.polled:
        cmd += ["--polled"]
    if args.horizon_ms:
        cmd += ["--horizon-ms", str(args.horizon_ms)]
    for item in args.options or ():
        cmd += ["--options", item]
    for i in args.invariant or ():
        cmd += ["--invariant", i]
    for i in args.skip_invariant or ():
        cmd += ["--skip-invariant", i]
    return " ".join(shlex.quote(c) for c in cmd)


class _Line:
    """The progress line on a terminal (standard error), cleared at the end."""

    def __init__(self, shown: bool) -> None:
        self.shown = shown

    def __call__(self, level: int, states: int, transitions: int, queued: int, secs: float) -> None:
        if not self.shown:
            return
        rate = states / secs if secs > 0 else 0.0
        sys.stderr.write(
            f"\rexplore: level {level}, {states} states, {transitions} transitions, "
            f"{queued} queued, {rate:,.0f} states/s, {secs:.1f} s "
        )
        sys.stderr.flush()

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def explore_main(args: argparse.Namespace, cli: Any) -> int:
    """Run ``qmodel explore``: exit 0 for ok, 1 for a violation, 2 for unknown (a bound was hit
    before the scope was covered; said on stderr and in ``verdict``, as ``check`` says a search
    without a verdict); a bad flag or target raises a :class:`~qmodel.errors.QmodelError` the
    command line answers with exit 2.

    ``cli`` is the command line's module, which calls this: its exit codes, watchdog and
    answers are the ones every subcommand shares (passed in, so this module sits below it)."""
    from qmodel import protocols
    from qmodel.targets import DEFAULT_TARGET, resolve

    scope = scope_of(args)
    if args.report:
        cli._check_report_dir(args.report)
    target = resolve(args.target, env=getattr(args, "env", None))
    name = target.name if args.target else DEFAULT_TARGET
    proto = protocols.get(args.protocol or target.protocol)
    checked = select(
        proto.invariants, args.invariant, skipped=args.skip_invariant or (), protocol=proto.name
    )
    if not checked:
        raise ScopeError("--skip-invariant leaves no invariant to check; skip fewer")
    line = _Line(sys.stderr.isatty() and not args.json)
    explorer = Explorer(
        target.factory, proto, scope, checked, step_limit=args.step_limit, progress=line
    )
    unjudged = [i.id for i in checked if i not in explorer.checked]
    if unjudged and (args.invariant or len(unjudged) == len(checked)):
        raise ScopeError(
            f"--bots {scope.bots}: nobody does the work in this world, so "
            f"{', '.join(unjudged)} (about the work being done) would break whatever the "
            "design; give --bots 1 or more, or an invariant that does not need a worker"
        )
    checked = explorer.checked
    started = time.perf_counter()  # wall-clock-ok: reporting only
    # A target stuck inside one step is stopped as check stops it (exit 3, never a hang).
    watchdog = cli._Watchdog(cli._hang_seconds(), lambda message: cli._abandon(args, message))
    try:
        with watchdog:
            result = explorer.run()
    except KeyboardInterrupt:
        if not watchdog.fired:
            raise
        raise cli._Stuck(watchdog.message) from None
    finally:
        line.done()
    out: dict[str, Any] = {
        "verdict": result.verdict,
        "exhaustive": result.exhaustive,
        "invariant": None,
        "target": name,
        "scope": attrs.asdict(scope),
        "states": result.states,
        "transitions": result.transitions,
        "executions": result.executions,
        "levels": result.levels,
        "states_per_second": round(result.states / result.seconds) if result.seconds else None,
        "seconds": None,
        "steps": None,
        "scheduler_steps": None,
        "kv_ops": None,
        "settle_kv_ops": None,
        "cited_kv_ops": None,
        "setup_kv_ops": None,
        "setup_steps": None,
        "at": None,
        "bound": result.bound,
        "trace": [],
        # Left unjudged: about the work being done, in a world where nobody does it.
        "not_judged": unjudged,
        "report": None,
        "error": None,
        "versions": cli.versions(),
    }
    found = result.found
    if found is not None:
        from qmodel.replay import trace_of
        from qmodel.trace import Search

        trace = trace_of(
            found.world,
            found.violation,
            target=name,
            checked=checked,
            search=Search(examples=result.executions, command=explore_command(args)),
        )
        log = list(trace.expected.log)
        out.update(
            invariant=found.violation.invariant,
            steps=len(log),
            scheduler_steps=sum(1 for v, _ in trace.verbs if v == "run"),
            kv_ops=found.kv_ops,
            settle_kv_ops=found.settle_kv_ops,
            cited_kv_ops=cited_kv_ops(found.world, found.violation),
            setup_kv_ops=found.setup_kv_ops,
            setup_steps=found.setup_steps,
            at=trace.expected.at,
            trace=log,
        )
        if args.report:
            from qmodel.report import write_report

            files = write_report(trace, args.report)
            out["report"] = {
                "markdown": str(files.markdown),
                "trace": str(files.trace),
                "test": str(files.test),
            }
    if result.verdict == "unknown":
        out["error"] = {
            "kind": "unknown",
            "message": f"the search hit {result.bound} before covering the scope; raise it, or "
            "narrow the scope",
        }
    out["seconds"] = round(time.perf_counter() - started, 3)  # wall-clock-ok
    if args.json:
        print(json.dumps(out))
    else:
        _human(out, found)
    if result.verdict == "unknown":
        sys.stderr.write(f"qmodel: no verdict: {out['error']['message']}\n")
    if found is not None:
        return cli.EXIT_VIOLATION
    return cli.EXIT_USAGE if result.verdict == "unknown" else cli.EXIT_OK


def _human(out: dict[str, Any], found: Found | None) -> None:
    if out["not_judged"]:
        print(
            f"not judged: {', '.join(out['not_judged'])} (about the work being done; nobody "
            "does it in this world)"
        )
    rate = out["states_per_second"]
    counts = f"{out['states']} states, {out['transitions']} transitions, {out['seconds']:.2f} s" + (
        f", {rate:,} states/s" if rate else ""
    )
    if found is None:
        what = "exhaustive" if out["exhaustive"] else f"bound hit: {out['bound']}"
        print(f"{out['verdict']}: no invariant broke ({what}; {counts})")
        return
    print(
        f"VIOLATION of {out['invariant']} (caught at {out['at']}): the shortest counterexample "
        f"in this scope, {out['scheduler_steps']} scheduler steps, {out['kv_ops']} KV "
        f"operations ({counts})"
    )
    print(f"  {found.violation.render()}")
    setup = out["setup_steps"]
    if setup is not None:
        print(
            f"  Initial state (steps 1-{setup}, {out['setup_kv_ops']} KV operations): the landed "
            "posts are stored and every bot has polled once; the race from there: "
            f"{out['kv_ops'] - out['setup_kv_ops']} KV operations"
        )
    print()
    for i, text in enumerate(out["trace"], 1):
        if setup is not None and i == setup + 1:
            print("  --- the initial state above; the race below ---")
        print(f"  {i:3}. {text}")
    if out["report"]:
        r = out["report"]
        print(f"Report: {r['markdown']}")
        print(f"Trace:  {r['trace']}   (qmodel replay {r['trace']})")
        print(f"Test:   {r['test']}   (pytest {r['test']})")
