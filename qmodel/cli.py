"""``qmodel``: the command line.

    qmodel check [--target T] [--protocol patch|queue|do] [--bots N] [--frontends N]
                 [--kv strict|local] [--invariant ID ...] [--profile dev|ci|nightly]
                 [--max-examples N] [--seed N] [--json] [--report DIR]
    qmodel replay TRACE.json [--target T] [--json] [--report DIR]
    qmodel catalog [--json]

``check`` exits 0 when no invariant broke within the budget, 1 on a violation, 2 on a usage or
target error (with a message that says what to do), 3 when the run could not finish (a target
stuck inside one step, or the Node process of the JavaScript lane failed). This interface is
relied on by users' CI scripts: it stays stable. With ``--report DIR`` a violation is also
written as ``DIR/<id>.md`` (the bug report), ``DIR/<id>.json`` (the trace) and
``DIR/test_regression_<id>.py``.

``replay`` runs a trace again exactly: exit 1 when it shows the recorded violation again, 2
when the trace is malformed or does not match (another target, another version of the design
or of qmodel), with a message naming the field.
"""

from __future__ import annotations

import _thread
import argparse
import contextlib
import json
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from qmodel.errors import QmodelError

__all__ = ["main"]

EXIT_OK, EXIT_VIOLATION, EXIT_USAGE, EXIT_STUCK = 0, 1, 2, 3
#: A target that makes no progress for this long (wall seconds) inside one step is stopped
#: (``QMODEL_HANG_SECONDS`` overrides it).
HANG_SECONDS = 20.0
#: Seconds the watchdog waits for an interrupted main thread before it ends the process.
GRACE_SECONDS = 3.0


class _UsageError(QmodelError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"qmodel: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="qmodel", description="Search a Workers/KV queue worker for race bugs.")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="search a target for invariant violations")
    c.add_argument(
        "--target",
        help="catalog:ID, sound, pkg.module:attr, path/to/worker.py[:attr] or "
        "path/to/worker.mjs (a JavaScript Workers module, run under Node) "
        "(default: the queue-era worker of seed 000, which has real bugs)",
    )
    c.add_argument(
        "--kv-binding",
        action="append",
        metavar="NAME",
        help="a KV binding of a JavaScript target (repeatable; the first is the world's KV); "
        "overrides its Wrangler configuration (default COMMENTS_KV)",
    )
    c.add_argument(
        "--do-binding",
        action="append",
        metavar="NAME=Class",
        help="a Durable Object binding of a JavaScript target and the exported class it runs "
        "(repeatable); overrides its Wrangler configuration",
    )
    c.add_argument(
        "--protocol",
        metavar="NAME",
        help="the protocol the actors speak: patch, queue, do (the chat protocol's eras), jobs, "
        "or package.module:NAME for your own (default: the target's, else queue)",
    )
    c.add_argument("--bots", type=int, default=2, help="bot processes (default 2)")
    c.add_argument("--frontends", type=int, default=2, help="frontends (default 2)")
    c.add_argument("--kv", choices=("strict", "local"), default="strict", help="KV semantics")
    c.add_argument(
        "--invariant", action="append", metavar="ID", help="check only this invariant (repeatable)"
    )
    c.add_argument("--profile", choices=("dev", "ci", "nightly"), default="ci")
    c.add_argument("--max-examples", type=int, help="override the profile's number of examples")
    c.add_argument("--seed", type=int, default=0, help="the search's seed (default 0)")
    c.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    c.add_argument(
        "--report",
        metavar="DIR",
        help="on a violation, write DIR/<id>.md (bug report), DIR/<id>.json (trace) and "
        "DIR/test_regression_<id>.py",
    )
    c.add_argument(
        "--step-limit",
        type=int,
        default=10_000,
        help="steps one request may take before it is stopped as never answering (default 10000)",
    )
    r = sub.add_parser("replay", help="run a trace written by --report again, exactly")
    r.add_argument("trace", metavar="TRACE.json", help="the trace file")
    r.add_argument("--target", help="refuse to run unless the trace's target is this one")
    r.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    r.add_argument("--report", metavar="DIR", help="write the report files again into DIR")
    cat = sub.add_parser("catalog", help="list the known bugs")
    cat.add_argument("--json", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from qmodel.node.errors import NodeLaneAborted

    args = _parser().parse_args(argv)
    try:
        if args.command == "catalog":
            return _catalog(args)
        if args.command == "replay":
            from qmodel.replay import replay_main

            return replay_main(args)
        return _check(args)
    except KeyboardInterrupt:
        # Ctrl-C: the conventional status of a process stopped by SIGINT, never 1 (a violation).
        sys.stderr.write("qmodel: interrupted\n")
        return 130
    except (_Stuck, NodeLaneAborted) as err:
        # The run could not finish: a stuck target, or the Node process of the lane failed.
        _abandon(args, str(err))
        return EXIT_STUCK
    except QmodelError as err:
        sys.stderr.write(f"qmodel: error: {err}\n")
        return EXIT_USAGE


def _abandon(args: argparse.Namespace, message: str, out: Any = None) -> None:
    """Say why the run ended without a verdict (exit 3): on stderr, and with ``--json`` as the
    one JSON object on stdout (``out``, by default the current ``sys.stdout``)."""
    out = out or sys.stdout
    sys.stderr.write(f"qmodel: error: {message}\n")
    sys.stderr.flush()
    if getattr(args, "json", False):
        out.write(json.dumps({"verdict": "error", "error": message}) + "\n")
        out.flush()


def _seed_of(source: str) -> str | None:
    """``"000"`` for ``"seed 000, A"``: the seed document a catalog entry comes from."""
    words = source.replace(",", " ").split()
    return next((w for i, w in enumerate(words) if i and words[i - 1] == "seed"), None)


def _catalog(args: argparse.Namespace) -> int:
    from qmodel.catalog import CATALOG

    rows = [
        {
            "id": e.id,
            "source": e.source,
            "seed": _seed_of(e.source),
            "summary": e.summary,
            "target": f"catalog:{e.id}" if e.id != "sound" else "sound",
            "design": repr(e.target()),
            "invariants": list(e.invariants),
            "protocol": e.protocol,
            "needs_production_kv": e.needs_production_kv,
        }
        for e in CATALOG.values()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    for r in rows:
        print(f"{r['id']}  ({r['source']})")
        print(f"    {r['summary']}")
        print(
            f"    target: --target {r['target']} --protocol {r['protocol']}   design: {r['design']}"
        )
        if r["invariants"]:
            print(f"    caught by: {', '.join(r['invariants'])}")
    return EXIT_OK


class _Stuck(QmodelError):
    """The run was stopped because the target made no progress inside one step (exit 3)."""


def _hang_seconds() -> float:
    """The watchdog's allowance: :data:`HANG_SECONDS`, or ``QMODEL_HANG_SECONDS``."""
    raw = os.environ.get("QMODEL_HANG_SECONDS")
    if raw:
        try:
            return max(0.5, float(raw))
        except ValueError:
            pass
    return HANG_SECONDS


def _stuck_task() -> str:
    """The request (or task) the scheduler is stepping right now, for the watchdog's message."""
    from qmodel.sim import scheduler

    task = scheduler.current_task()
    if task is None:
        return "the target"
    inv = task.invocation
    label = getattr(inv, "label", None)
    if not label:
        return f"task {task.name}"
    return f"request {label}" if label == task.name else f"request {label} (task {task.name})"


class _Watchdog:
    """Stops a target stuck inside one scheduler step for ``seconds``: a loop with no await,
    a blocking call (``time.sleep``, a lock, a blocked read) or a JavaScript worker that never
    returns to Node's event loop. The step limit cannot stop those: no step ends.

    It halts every scheduler (nothing may step the stuck target again), then sends SIGALRM to
    the main thread, whose handler raises :class:`~qmodel.sim.scheduler.Halted` there: a
    signal interrupts a blocking system call, which ``_thread.interrupt_main`` cannot. If the
    main thread is still stuck :data:`GRACE_SECONDS` later (code that swallows the interrupt,
    or a call that does not return on a signal), the process ends at once with exit status 3
    and a message naming the request: never a hang. ``on_abandon`` writes what the process
    prints before it ends that way.
    """

    def __init__(self, seconds: float, on_abandon: Callable[[str], None]) -> None:
        self.seconds = seconds
        self.fired = False
        #: What the watchdog stopped, and why (set when it fires).
        self.message = ""
        self._on_abandon = on_abandon
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._main = threading.main_thread().ident
        self._signals = threading.current_thread() is threading.main_thread() and hasattr(
            signal, "pthread_kill"
        )
        self._previous: Any = None
        self._previous_interrupt: Any = None

    def _watch(self) -> None:
        from qmodel.sim import scheduler

        period = min(1.0, self.seconds / 4)
        last = scheduler.progress()
        since = time.monotonic()  # wall-clock-ok: the watchdog measures real time by design
        while not self._stop.wait(period):
            now = scheduler.progress()
            moment = time.monotonic()  # wall-clock-ok
            if now != last or not scheduler.in_step():
                last, since = now, moment
                continue
            if moment - since < self.seconds:
                continue
            self.fired = True
            self.message = (
                f"{_stuck_task()} made no progress for {self.seconds:.0f} s inside one step: its "
                "code did not return to the scheduler (a loop without await, a blocking call "
                "such as time.sleep or a lock, or JavaScript that never awaits); every step of "
                "a worker must return to the scheduler at its next await"
            )
            # Halt first: after the interrupt, nothing may step the stuck target again.
            scheduler.halt(self.message)
            self._interrupt(scheduler, now)
            return

    def _interrupt(self, scheduler: Any, stuck_at: int) -> None:
        deadline = time.monotonic() + GRACE_SECONDS  # wall-clock-ok
        while True:
            if self._signals and self._main is not None:
                signal.pthread_kill(self._main, signal.SIGALRM)
            else:
                _thread.interrupt_main()
            if self._stop.wait(0.5):
                return
            if scheduler.progress() != stuck_at or not scheduler.in_step():
                return  # the main thread left the step: the interrupt is on its way out
            if time.monotonic() >= deadline:  # wall-clock-ok
                break
        self._on_abandon(
            f"{self.message}. The interrupt did not stop it within {GRACE_SECONDS:.0f} s "
            "(the worker swallows it, or blocks where a signal cannot reach), so the run ends "
            "here."
        )
        os._exit(EXIT_STUCK)

    def _on_alarm(self, signum: int, frame: Any) -> None:
        from qmodel.sim import scheduler

        reason = scheduler.halted()
        if reason is not None:
            raise scheduler.Halted(reason)

    def _on_interrupt(self, signum: int, frame: Any) -> None:
        from qmodel.sim import scheduler

        # Ctrl-C: halt first, so a KeyboardInterrupt landing inside a worker's code stops the
        # run instead of being taken for the worker's own failure (a 500).
        scheduler.halt("interrupted (Ctrl-C)")
        raise KeyboardInterrupt

    def __enter__(self) -> _Watchdog:
        if self._signals:
            self._previous = signal.signal(signal.SIGALRM, self._on_alarm)
            self._previous_interrupt = signal.signal(signal.SIGINT, self._on_interrupt)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        from qmodel.sim import scheduler

        self._stop.set()
        self._thread.join()
        if self._signals:
            signal.signal(signal.SIGALRM, self._previous)
            signal.signal(signal.SIGINT, self._previous_interrupt)
        scheduler.unhalt()


def _check(args: argparse.Namespace) -> int:
    from qmodel.progress import progress_for

    total = args.max_examples
    if total is None:
        from hypothesis import settings

        from qmodel.profiles import register

        register()
        total = settings.get_profile(args.profile).max_examples
    with progress_for(total, json_output=args.json) as shown:
        result = run_check(args, progress=shown)
    out = {k: result[k] for k in JSON_FIELDS}
    if args.json:
        print(json.dumps(out))
    else:
        _human(
            {
                **out,
                "verbs_run": result["verbs_run"],
                "scheduler_steps_run": result["scheduler_steps_run"],
            },
            result["violation"],
            args,
            result["protocol"],
        )
    if args.report and result["violation"] is not None:
        _write_report(args, result)
    return {"violation": EXIT_VIOLATION, "unknown": EXIT_USAGE}.get(out["verdict"], EXIT_OK)


def _write_report(args: argparse.Namespace, result: dict[str, Any]) -> None:
    from qmodel.replay import trace_of
    from qmodel.report import write_report
    from qmodel.trace import Search

    trace = trace_of(
        result["world"],
        result["violation"],
        target=result["target"],
        checked=result["checked"],
        search=Search(
            profile=args.profile,
            seed=args.seed,
            max_examples=args.max_examples,
            examples=result["examples"],
            command=check_command(args),
        ),
    )
    files = write_report(trace, args.report)
    # With --json, stdout holds exactly one object: say where the files went on stderr.
    say = sys.stderr if args.json else sys.stdout
    print(f"Report: {files.markdown}", file=say)
    print(f"Trace:  {files.trace}   (qmodel replay {files.trace})", file=say)
    print(f"Test:   {files.test}   (pytest {files.test})", file=say)


#: The fields of ``qmodel check --json``, in order (a stable interface).
JSON_FIELDS = ("verdict", "invariant", "target", "seed", "examples", "steps", "seconds", "trace")


def check_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``qmodel check`` arguments (for programs that call :func:`run_check`)."""
    return _parser().parse_args(["check", *argv])


def run_check(args: argparse.Namespace, progress: Any = None) -> dict[str, Any]:
    """Run ``qmodel check`` and return its result: the JSON fields plus ``violation`` (the
    record or ``None``), ``first_violation_at`` (examples run when the first violation
    was found, before shrinking), ``world`` (the world it broke in, or ``None``) and
    ``checked`` (the invariants checked), ``verbs_run`` and ``scheduler_steps_run`` (what the
    search ran over all its examples). ``progress``, if given, is told of every example (see
    :class:`qmodel.progress.NoProgress`)."""
    from hypothesis import seed as hypothesis_seed
    from hypothesis import settings
    from hypothesis.reporting import with_reporter
    from hypothesis.stateful import get_state_machine_test

    from qmodel import machine as machine_mod
    from qmodel import protocols
    from qmodel.check import select
    from qmodel.conformance import conform
    from qmodel.profiles import register, shrink_budget
    from qmodel.targets import DEFAULT_TARGET, resolve
    from qmodel.world import WorldConfig

    if args.bots < 0 or args.frontends < 1:
        raise _UsageError("--bots must be >= 0 and --frontends >= 1")
    target = resolve(args.target, kv_bindings=args.kv_binding, do_bindings=args.do_binding)
    protocol = args.protocol or target.protocol
    proto = protocols.get(protocol)
    checked = select(proto.invariants, args.invariant, protocol=proto.name)
    register()
    chosen = settings.get_profile(args.profile)
    if args.max_examples is not None:
        if args.max_examples < 1:
            raise _UsageError("--max-examples must be at least 1")
        chosen = settings(chosen, max_examples=args.max_examples)
    if args.step_limit < 10:
        raise _UsageError("--step-limit must be at least 10")
    config = WorldConfig(
        protocol=protocol,
        bots=args.bots,
        frontends=args.frontends,
        kv=args.kv,
        max_task_steps=args.step_limit,
    )
    state: dict[str, Any] = {
        "evidence": 0,
        "examples": 0,
        "failure": None,
        "first_at": None,
        "verbs": 0,
        "scheduler_steps": 0,
    }

    def on_world(world: Any, violation: Any) -> None:
        state["examples"] += 1
        state["verbs"] += len(world.verbs)
        state["scheduler_steps"] += world.platform.scheduler.steps
        state["evidence"] += 1 if proto.evidence(world.spec) else 0
        if progress is not None:
            progress.example(len(world.verbs), len(world.log) if violation is not None else None)
        if violation is not None:
            state["failure"] = (world, violation)
            if state["first_at"] is None:
                state["first_at"] = state["examples"]

    cls = type(
        "CheckMachine",
        (machine_mod.QueueMachine,),
        {
            "target_factory": staticmethod(target.factory),
            "protocol": proto,
            "config": config,
            "checked": checked,
            "on_world": staticmethod(on_world),
        },
    )
    test = hypothesis_seed(args.seed)(get_state_machine_test(cls, settings=chosen))
    started = time.perf_counter()  # wall-clock-ok: reporting only
    error: BaseException | None = None
    watchdog = _Watchdog(_hang_seconds(), partial(_abandon, args, out=sys.stdout))
    try:
        # Hypothesis reports (the falsifying example, shrink warnings) go to stderr: stdout is
        # ours, and with --json holds exactly one object.
        with (
            watchdog,
            shrink_budget(args.profile),
            contextlib.redirect_stdout(sys.stderr),
            with_reporter(_hypothesis_report(args.profile)),
        ):
            # No verdict without evidence: a target that cannot do one unit of work on a quiet
            # platform is refused before the search, naming the request it refused.
            conform(target.factory(), proto, config)
            test()
    except machine_mod.InvariantViolation as exc:
        error = exc
    except KeyboardInterrupt:
        if not watchdog.fired:
            raise
        raise _Stuck(watchdog.message) from None
    seconds = time.perf_counter() - started  # wall-clock-ok
    name = target.name if args.target else DEFAULT_TARGET
    failure = state["failure"] if error is not None else None
    trace: list[str] = failure[0].log if failure else []
    violation = failure[1] if failure else None
    if error is not None:
        verdict = "violation"
    elif state["evidence"] == 0:
        # No example acknowledged any work: the search exercised nothing, so it proves nothing.
        verdict = "unknown"
    else:
        verdict = "ok"
    return {
        "verdict": verdict,
        "invariant": violation.invariant if violation else None,
        "target": name,
        "seed": args.seed,
        "examples": state["examples"],
        "steps": len(trace),
        "seconds": round(seconds, 3),
        "trace": trace,
        "violation": violation,
        "first_violation_at": state["first_at"],
        # What the search ran in all, over every example (shrinking included).
        "verbs_run": state["verbs"],
        "scheduler_steps_run": state["scheduler_steps"],
        "world": failure[0] if failure else None,
        "checked": checked,
        "protocol": proto,
        "examples_with_evidence": state["evidence"],
    }


def _hypothesis_report(profile: str) -> Callable[[str], None]:
    """Hypothesis's reports go to stderr as they are, except its warning that shrinking ran
    out of time, which names five minutes whatever the limit: that is said plainly instead."""
    from qmodel.profiles import SHRINK_BUDGETS

    def report(text: str) -> None:
        if "spent more than five minutes working to shrink" in text:
            limit = SHRINK_BUDGETS[profile][2]
            text = (
                f"qmodel: shrinking stopped at the {profile} profile's time limit ({limit} s) "
                "before its budget of test runs was spent; the counterexample below is partly "
                "shrunk, and on a quieter machine the same seed may shrink further"
            )
        print(text, file=sys.stderr)

    return report


def _human(out: dict[str, Any], violation: Any, args: argparse.Namespace, protocol: Any) -> None:
    if out["verdict"] == "unknown":
        print(
            f"unknown: no example of {out['examples']} against {out['target']} had any "
            f"{protocol.unit} acknowledged by the target, so nothing was exercised "
            f"({out['seconds']:.1f} s, profile {args.profile}, seed {out['seed']})"
        )
        return
    if violation is None:
        print(
            f"ok: no invariant broke in {out['examples']} examples against {out['target']} "
            f"({out['seconds']:.1f} s, profile {args.profile}, seed {out['seed']}; "
            f"{out['verbs_run']} verbs, {out['scheduler_steps_run']} scheduler steps)"
        )
        return
    inv = protocol.invariant(violation.invariant)
    print(f"VIOLATION of {inv.id} ({inv.kind})")
    print(f"  {inv.doc}")
    print()
    print(f"  {violation.summary}")
    for k, v in violation.values.items():
        print(f"    {k}: {v}")
    print()
    print(
        f"Shrunk run ({out['steps']} steps), found after {out['examples']} examples "
        f"in {out['seconds']:.1f} s:"
    )
    for i, line in enumerate(out["trace"], 1):
        print(f"  {i:3}. {line}")
    print()
    print("Replay it (the same seed and profile give the same run):")
    print("  " + check_command(args))


def check_command(args: argparse.Namespace) -> str:
    """The ``qmodel check`` command line that runs the same search as ``args``."""
    cmd = ["qmodel", "check"]
    if args.target:
        cmd += ["--target", args.target]
    if args.protocol:
        cmd += ["--protocol", args.protocol]
    for flag, default in (("bots", 2), ("frontends", 2)):
        if getattr(args, flag) != default:
            cmd += [f"--{flag}", str(getattr(args, flag))]
    if args.kv != "strict":
        cmd += ["--kv", args.kv]
    for i in args.invariant or ():
        cmd += ["--invariant", i]
    cmd += ["--profile", args.profile, "--seed", str(args.seed)]
    if args.max_examples:
        cmd += ["--max-examples", str(args.max_examples)]
    return " ".join(shlex.quote(c) for c in cmd)


if __name__ == "__main__":
    raise SystemExit(main())
