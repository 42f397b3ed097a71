"""``qmodel``: the command line.

    qmodel check [--target T] [--protocol patch|queue|do] [--bots N] [--frontends N]
                 [--kv strict|local] [--invariant ID ...] [--skip-invariant ID ...]
                 [--profile dev|ci|nightly] [--max-examples N] [--seed N] [--json] [--report DIR]
    qmodel replay TRACE.json [--target T] [--json] [--report DIR]
    qmodel catalog [--json]
    qmodel --version        (also: python -m qmodel ...)

Exit status, a stable interface users' CI scripts rely on: 0 no invariant broke within the
budget (``ok``); 1 a violation; 2 a usage, target or configuration error, or no verdict (the
search could not decide: ``unknown``); 3 an internal error of qmodel; 130 interrupted (Ctrl-C).

With ``--json``, stdout holds exactly one JSON object in every one of these cases: ``verdict``
(``ok``, ``violation``, ``unknown``, ``error``), ``invariant``, ``target``, ``seed``,
``examples``, ``found_at_example``, ``steps``, ``seconds``, ``trace``, ``report`` (the paths of
the files written, or ``null``), ``error`` (``{"kind", "message"}`` or ``null``) and ``versions``
(qmodel's, Hypothesis's, Python's). Everything else goes to stderr.

With ``--report DIR``, the directory is checked before the search; a violation is written as
``DIR/<id>.md`` (the bug report), ``DIR/<id>.json`` (the trace) and
``DIR/test_regression_<id>.py``, each file replaced whole or not at all.

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
import platform
import shlex
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from qmodel import __version__
from qmodel.errors import QmodelError

__all__ = ["JSON_FIELDS", "check_args", "check_command", "main", "run_check", "versions"]

EXIT_OK, EXIT_VIOLATION, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
#: The shell's convention for a program stopped by SIGINT, so a loop of runs stops too.
EXIT_INTERRUPTED = 130
#: Stdout's reader went away (``| head``): 128 + SIGPIPE, as a shell reports such a process.
EXIT_PIPE = 141
#: A target that makes no progress for this long (wall seconds) inside one step is stopped.
HANG_SECONDS = 20.0
#: Seconds the watchdog waits for an interrupted main thread before it ends the process.
GRACE_SECONDS = 3.0

#: The fields of ``qmodel check --json``, in order (a stable interface).
JSON_FIELDS = (
    "verdict",
    "invariant",
    "target",
    "seed",
    "examples",
    "found_at_example",
    "steps",
    "seconds",
    "trace",
    "report",
    "violations",
    "error",
    "versions",
)


class _UsageError(QmodelError):
    """A command line qmodel cannot run (a bad option value, a bad --report directory)."""


class _ArgumentError(Exception):
    """argparse refused the command line; ``usage`` is the usage line of the (sub)command."""

    def __init__(self, message: str, usage: str) -> None:
        super().__init__(message)
        self.usage = usage


class _NoVerdict(Exception):
    """The search ended without a verdict: ``why`` says why and what to do; ``partial`` holds
    what was counted until then."""

    def __init__(self, why: str, partial: dict[str, Any]) -> None:
        super().__init__(why)
        self.partial = partial


class _Interrupted(Exception):
    """Ctrl-C during a search; ``partial`` holds what was counted until then."""

    def __init__(self, partial: dict[str, Any]) -> None:
        super().__init__("interrupted")
        self.partial = partial


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # Raised, not printed: with --json the answer must be a JSON object.
        raise _ArgumentError(message, self.format_usage())


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's tables as written."""


def versions() -> dict[str, str]:
    """The versions a run depends on: qmodel, Hypothesis (the same seed gives another search on
    another Hypothesis version) and Python."""
    import hypothesis

    return {
        "qmodel": __version__,
        "hypothesis": hypothesis.__version__,
        "python": platform.python_version(),
    }


def _version_text() -> str:
    v = versions()
    return f"qmodel {v['qmodel']} (Hypothesis {v['hypothesis']}, Python {v['python']})"


def _check_epilog() -> str:
    from qmodel.profiles import EXAMPLES, PROFILES, PURPOSES, SHRINK_BUDGETS

    try:
        from qmodel import protocols

        rows = []
        for name in protocols.names():
            proto = protocols.get(name)
            rows.append(f"  protocol {name}: {proto.doc}")
            rows += [
                f"    {i.id:<16} {i.kind:<9} {_first_sentence(i.doc)}" for i in proto.invariants
            ]
    except Exception as err:  # noqa: BLE001 - help must print even if the registry is broken
        rows = [f"  (the invariants could not be listed: {err})"]
    profiles = [
        f"  {p:<8} {EXAMPLES[p]:>5} examples, shrinking at most {SHRINK_BUDGETS[p][1]} runs: "
        f"{PURPOSES[p]}"
        for p in PROFILES
    ]
    return "\n".join(
        [
            "invariants of each protocol (--invariant / --skip-invariant ID; default: all):",
            *rows,
            "",
            "profiles (--profile; default ci; pytest: --hypothesis-profile=qmodel-NAME):",
            *profiles,
            "",
            "QMODEL_EXAMPLE_DB=DIR | redis://HOST:PORT/DB | github:OWNER/REPO[/ARTIFACT] adds a",
            "shared example database to the local one (profiles nightly and dev; ci when set).",
            "",
            "exit status: 0 ok, 1 violation, 2 usage/target error or no verdict, 3 internal "
            "error or a run that could not finish (a stuck target, a failed Node process), "
            "130 Ctrl-C",
        ]
    )


def _first_sentence(doc: str) -> str:
    text = " ".join(doc.split())
    head = text.split(": ", 1)[0] if ": " in text[:90] else text.split(". ", 1)[0]
    return head if len(head) <= 90 else head[:87] + "..."


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="qmodel",
        description="Search a Cloudflare Workers/KV queue worker for race bugs, shrink what "
        "breaks to its shortest story, and write the bug report.",
    )
    p.add_argument("--version", action="version", version=_version_text())
    sub = p.add_subparsers(dest="command", required=True, metavar="{check,explore,replay,catalog}")
    c = sub.add_parser(
        "check",
        help="search a target for invariant violations",
        description="Search a target for invariant violations.",
        epilog=_check_epilog(),
        formatter_class=_Formatter,
    )
    c.add_argument(
        "--target",
        help="catalog:ID, sound, pkg.module:attr, path/to/worker.py[:attr], "
        "path/to/worker.mjs or src/index.ts (a JavaScript or TypeScript Workers module, run "
        "under Node), or a Workers project's folder or Wrangler file (its main) "
        "(default: seed-000, the queue-era worker of seed 000, which has real bugs)",
    )
    c.add_argument(
        "--env",
        metavar="NAME",
        help="the Wrangler environment of a JavaScript or TypeScript target: its [env.NAME] "
        "bindings, vars and flags, as wrangler --env NAME reads them",
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
        help="the protocol the actors speak: patch, queue or do (the chat protocol's eras), "
        "or package.module:NAME / path/to/file.py:NAME for your own (default: the target's; "
        "queue for your own worker)",
    )
    c.add_argument("--bots", type=int, default=2, help="bot processes (default 2)")
    c.add_argument("--frontends", type=int, default=2, help="frontends (default 2)")
    c.add_argument(
        "--kv",
        choices=("strict", "local"),
        default="strict",
        help="KV semantics: strict, as in production (default), or local, as Miniflare",
    )
    c.add_argument(
        "--invariant",
        action="append",
        metavar="ID",
        help="check only this invariant (repeatable; default all, listed below)",
    )
    c.add_argument(
        "--skip-invariant",
        action="append",
        metavar="ID",
        help="do not check this invariant (repeatable)",
    )
    c.add_argument(
        "--profile",
        choices=("dev", "ci", "nightly"),
        default="ci",
        help="search budget (default ci; listed below)",
    )
    c.add_argument("--max-examples", type=int, help="override the profile's number of examples")
    c.add_argument("--seed", type=int, default=0, help="the search's seed (default 0)")
    c.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    c.add_argument(
        "--report",
        metavar="DIR",
        help="on a violation, write DIR/<id>.md (bug report), DIR/<id>.json (trace) and "
        "DIR/test_regression_<id>.py (DIR is checked before the search); for every distinct "
        "bug found",
    )
    bugs = c.add_mutually_exclusive_group()
    bugs.add_argument(
        "--stop-at-first",
        action="store_true",
        help="stop at the first violation (the default of profile dev)",
    )
    bugs.add_argument(
        "--all-bugs",
        action="store_true",
        help="after a violation, search on within the budget for every distinct bug (invariant "
        "and rule), each with its own shrunk run and report (the default of ci and nightly)",
    )
    c.add_argument(
        "--no-minimise",
        action="store_true",
        help="keep Hypothesis's shrunk run as the counterexample: do not minimise it further "
        "(deleting steps and verbs that the bug does not need)",
    )
    c.add_argument(
        "--step-limit",
        type=int,
        default=10_000,
        help="steps one request may take before it is stopped as never answering (default 10000)",
    )
    r = sub.add_parser(
        "replay",
        help="run a trace written by --report again, exactly",
        description="Run a trace written by --report again, exactly.",
    )
    r.add_argument("trace", metavar="TRACE.json", help="the trace file")
    r.add_argument(
        "--target",
        help="the trace's target, named by you: a target whose code did not ship with qmodel "
        "(a worker file, a module) is run only when named here, and must be the trace's",
    )
    r.add_argument(
        "--protocol",
        metavar="NAME",
        help="the trace's protocol when it is your own (package.module:NAME): loaded only when "
        "named here",
    )
    r.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    r.add_argument("--report", metavar="DIR", help="write the report files again into DIR")
    from qmodel.explore_cli import add_parser as add_explore

    add_explore(sub)
    cat = sub.add_parser("catalog", help="list the known bugs", description="List the known bugs.")
    cat.add_argument("--json", action="store_true", help="print the list as JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    from qmodel.node.errors import NodeLaneAborted

    argv = list(sys.argv[1:] if argv is None else argv)
    wants_json = "--json" in argv
    command = next((a for a in argv if a in ("check", "explore", "replay", "catalog")), "")
    try:
        args = _parser().parse_args(argv)
    except _ArgumentError as err:
        sys.stderr.write(err.usage)
        return _failed(
            EXIT_USAGE,
            "usage",
            f"{err}; see qmodel {command or ''} --help".replace("  ", " "),
            wants_json,
        )
    try:
        if args.command == "catalog":
            return _catalog(args)
        if args.command == "replay":
            return _replay(args)
        if args.command == "explore":
            from qmodel.explore_cli import explore_main

            return explore_main(args, sys.modules[__name__])
        return _check(args)
    except BrokenPipeError:
        # The reader went away (``qmodel ... | head``): nothing more can be said on stdout,
        # and Python's own flush at exit must not fail again on it.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE
    except KeyboardInterrupt:
        return _interrupted({}, wants_json)
    except _Interrupted as stop:
        return _interrupted(stop.partial, wants_json)
    except _NoVerdict as unknown:
        return _failed(EXIT_USAGE, "unknown", str(unknown), wants_json, **unknown.partial)
    except _Stuck as err:
        # The run could not finish: the target is stuck inside one step.
        return _failed(EXIT_INTERNAL, "stuck", str(err), wants_json, target=args_target(args))
    except NodeLaneAborted as err:
        # The Node process of the lane failed (it is a BaseException, so no worker catches it):
        # the run could not finish.
        return _failed(EXIT_INTERNAL, "node", str(err), wants_json, target=args_target(args))
    except QmodelError as err:
        return _failed(EXIT_USAGE, _kind(err), str(err), wants_json, target=args_target(args))
    except Exception as err:  # noqa: BLE001 - the contract: one answer, exit 3, never a crash
        traceback.print_exc(file=sys.stderr)
        return _failed(
            EXIT_INTERNAL,
            "internal",
            f"internal error: {type(err).__name__}: {err}. This is a bug in qmodel, not in "
            "your worker: please report it with the command line and the traceback above",
            wants_json,
            target=args_target(args),
        )


def args_target(args: argparse.Namespace) -> str | None:
    """The target a command line names (``seed-000`` for ``check`` without one)."""
    from qmodel.targets import DEFAULT_TARGET

    if getattr(args, "command", None) == "check":
        return args.target or DEFAULT_TARGET
    return getattr(args, "target", None)


def _kind(err: QmodelError) -> str:
    """The ``error.kind`` of a JSON answer: ``target``, ``trace``, ``example-database`` or
    ``usage``."""
    from qmodel.errors import InvalidTarget, TraceMismatch
    from qmodel.exampledb import InvalidExampleDatabase

    if isinstance(err, InvalidTarget):
        return "target"
    if (
        isinstance(err, TraceMismatch)
        or "Trace" in type(err).__name__
        or "Replay" in type(err).__name__
    ):
        return "trace"
    if isinstance(err, InvalidExampleDatabase):
        return "example-database"
    return "usage"


def _answer(**fields: Any) -> dict[str, Any]:
    """One ``--json`` object: every field of :data:`JSON_FIELDS`, ``None`` where not known."""
    out: dict[str, Any] = {k: None for k in JSON_FIELDS}
    out.update(trace=[], violations=[], versions=versions())
    out.update({k: v for k, v in fields.items() if k in out})
    return out


def _failed(code: int, kind: str, message: str, wants_json: bool, **fields: Any) -> int:
    verdict = "unknown" if kind == "unknown" else "error"
    sys.stderr.write(f"qmodel: {'no verdict' if verdict == 'unknown' else 'error'}: {message}\n")
    if wants_json:
        error = {"kind": kind, "message": message}
        print(json.dumps(_answer(**{**fields, "verdict": verdict, "error": error})))
    return code


def _abandon(args: argparse.Namespace, message: str) -> None:
    """Say why the run ends here without a verdict (the watchdog is about to end the process
    with exit 3): on stderr, and with ``--json`` as the one JSON object on stdout."""
    sys.stderr.write(f"qmodel: error: {message}\n")
    sys.stderr.flush()
    if getattr(args, "json", False):
        error = {"kind": "stuck", "message": message}
        answer = _answer(verdict="error", error=error, target=args_target(args))
        sys.__stdout__.write(json.dumps(answer) + "\n")
        sys.__stdout__.flush()


def _interrupted(partial: dict[str, Any], wants_json: bool) -> int:
    examples = partial.get("examples")
    seconds = partial.get("seconds")
    done = "" if examples is None else f" after {examples} examples in {seconds:.1f} s"
    # One line, no traceback: the user asked for it (on a terminal, below the progress line).
    fresh_line = "\n" if sys.stderr.isatty() else ""
    sys.stderr.write(f"{fresh_line}qmodel: interrupted{done}; no verdict\n")
    if wants_json:
        error = {"kind": "interrupted", "message": f"interrupted{done}"}
        print(json.dumps(_answer(**{**partial, "verdict": "unknown", "error": error})))
    return EXIT_INTERRUPTED


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
        os._exit(EXIT_INTERNAL)

    def _on_alarm(self, signum: int, frame: Any) -> None:
        from qmodel.sim import scheduler

        reason = scheduler.halted()
        if reason is not None:
            raise scheduler.Halted(reason)

    def __enter__(self) -> _Watchdog:
        if self._signals:
            self._previous = signal.signal(signal.SIGALRM, self._on_alarm)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        from qmodel.sim import scheduler

        self._stop.set()
        self._thread.join()
        if self._signals:
            signal.signal(signal.SIGALRM, self._previous)
        scheduler.unhalt()


def _in_gc_callback(frame: Any) -> bool:
    """Whether ``frame`` runs inside a garbage-collection callback (Hypothesis times the
    collector with one), where an exception raised is printed and ignored."""
    for _ in range(8):
        if frame is None:
            return False
        if frame.f_code.co_name == "gc_callback":
            return True
        frame = frame.f_back
    return False


class _CtrlC:
    """While a search runs, the first Ctrl-C ends it at the end of the running example (a
    KeyboardInterrupt raised anywhere in Hypothesis can land in its garbage-collection
    callback, where Python ignores it and the search goes on); one that comes inside a step of
    the target (which may block for ever), a second one, or one after the watchdog fired,
    raises at once."""

    def __init__(self) -> None:
        self.requested = False
        self.watchdog: Any = None
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        from qmodel.sim import scheduler

        # Inside a worker's step (which may block for ever) the interrupt is raised at once;
        # halted first, it stops the run instead of being taken for the worker's failure. Not
        # inside a garbage-collection callback, where Python would print and drop it.
        urgent = self.requested or (self.watchdog is not None and self.watchdog.fired)
        in_worker = scheduler.in_step() and not _in_gc_callback(frame)
        self.requested = True
        if urgent or in_worker:
            scheduler.halt("interrupted (Ctrl-C)")
            raise KeyboardInterrupt

    def check(self) -> None:
        """Raise ``KeyboardInterrupt`` if a Ctrl-C came during the example that just ended."""
        if self.requested:
            raise KeyboardInterrupt

    def __enter__(self) -> _CtrlC:
        # Signal handlers can only be set from the main thread; elsewhere Python's own stays.
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _check(args: argparse.Namespace) -> int:
    from qmodel.progress import progress_for

    _validate(args)
    if args.report:
        _check_report_dir(args.report)
    total = args.max_examples
    if total is None:
        from hypothesis import settings

        from qmodel.profiles import hypothesis_name, register

        register()
        total = settings.get_profile(hypothesis_name(args.profile)).max_examples
    with progress_for(total, json_output=args.json) as shown:
        result = run_check(args, progress=shown)
    report: dict[str, str] | None = None
    error: dict[str, str] | None = None
    if args.report and result["violation"] is not None:
        try:
            for i, (found, summary) in enumerate(
                zip(result["found"], result["violations"], strict=True)
            ):
                summary["report"] = _write_report(args, result, found, first=i == 0)
            report = result["violations"][0]["report"]
        except KeyboardInterrupt:
            raise
        except Exception as err:  # noqa: BLE001 - the verdict stands; say why no report
            error = {
                "kind": "report",
                "message": f"the violation was found but its report could not be written to "
                f"{args.report}: {type(err).__name__}: {err}",
            }
            sys.stderr.write(f"qmodel: error: {error['message']}\n")
    out = {k: result[k] for k in JSON_FIELDS if k in result}
    out.update(report=report, error=error, versions=versions())
    if args.json:
        print(json.dumps(_answer(**out)))
    else:
        _human(result, args)
    if report is not None:
        # With --json, stdout holds exactly one object (which has the paths): say it on stderr.
        say = sys.stderr if args.json else sys.stdout
        print(f"Report: {report['markdown']}", file=say)
        print(f"Trace:  {report['trace']}   (qmodel replay {report['trace']})", file=say)
        print(f"Test:   {report['test']}   (pytest {report['test']})", file=say)
        for more in result["violations"][1:]:
            if more["report"] is not None:
                print(f"Report: {more['report']['markdown']}   ({more['invariant']})", file=say)
    return EXIT_VIOLATION if out["verdict"] == "violation" else EXIT_OK


def _replay(args: argparse.Namespace) -> int:
    """``qmodel replay TRACE.json [--target T] [--json] [--report DIR]``: exit 1 when the
    recorded violation is shown again; a trace that cannot be used or does not match raises
    (answered exit 2 with the message)."""
    from qmodel.replay import replay_strict, retrace
    from qmodel.story import relative_times
    from qmodel.trace import load

    if args.report:
        _check_report_dir(args.report)
    trace = load(args.trace)
    started = time.perf_counter()  # wall-clock-ok: reporting only
    with contextlib.redirect_stdout(sys.stderr):  # a worker's prints are no part of the answer
        outcome = replay_strict(trace, target=args.target, protocol=args.protocol)
    seconds = time.perf_counter() - started  # wall-clock-ok: reporting only
    v = outcome.violation
    assert v is not None  # replay_strict compared it with the record
    log = list(outcome.world.log)
    report: dict[str, str] | None = None
    if args.report:
        from qmodel.report import write_report

        files = write_report(retrace(trace, outcome), args.report)
        report = {
            "markdown": str(files.markdown),
            "trace": str(files.trace),
            "test": str(files.test),
        }
    if args.json:
        out = _answer(
            verdict="violation",
            invariant=v.invariant,
            target=trace.target,
            seed=trace.search.seed,
            examples=1,
            found_at_example=1,
            steps=len(log),
            seconds=round(seconds, 3),
            trace=log,
            report=report,
        )
        print(json.dumps(out))
    else:
        inv = outcome.world.protocol.invariant(v.invariant)
        print(
            f"VIOLATION of {inv.id} ({inv.kind}) against {trace.target} reproduced exactly: "
            f"{len(log)} steps, caught at {outcome.at}"
        )
        print(f"  {v.render()}")
        print()
        for i, line in enumerate(relative_times(log), 1):
            print(f"  {i:3}. {line}")
    if report is not None:
        say = sys.stderr if args.json else sys.stdout
        print(f"Report: {report['markdown']}", file=say)
    return EXIT_VIOLATION


def _same_protocol_as_the_catalog(args: argparse.Namespace, protocol: str) -> None:
    """A catalog bug shows only under its own protocol: another one would search a design for
    a bug it cannot show, and say ok."""
    from qmodel.catalog import CATALOG

    spec = args.target or ""
    if not spec.startswith("catalog:") or args.protocol is None:
        return
    e = CATALOG.get(spec.split(":", 1)[1])
    if e is not None and e.protocol != protocol:
        raise _UsageError(
            f"{spec} is a bug of the {e.protocol} protocol; under --protocol {protocol} its "
            f"actors never make the requests that show it, so the search would say ok. Drop "
            f"--protocol, or pass --protocol {e.protocol}"
        )


def _validate(args: argparse.Namespace) -> None:
    """Refuse option values argparse lets through, before anything runs."""
    from qmodel.world import MAX_ACTORS

    if not 1 <= args.bots <= MAX_ACTORS or not 1 <= args.frontends <= MAX_ACTORS:
        raise _UsageError(
            f"--bots and --frontends must be from 1 to {MAX_ACTORS} (got {args.bots} and "
            f"{args.frontends}): with no bot nothing does the work, and more than "
            f"{MAX_ACTORS} add nothing a race needs"
        )
    if args.max_examples is not None and args.max_examples < 1:
        raise _UsageError("--max-examples must be at least 1")
    if args.step_limit < 10:
        raise _UsageError("--step-limit must be at least 10")
    if args.seed < 0:
        raise _UsageError("--seed must be >= 0")


def _check_report_dir(directory: str) -> None:
    """Fail before the search when ``--report DIR`` could not be written: ``DIR`` is a file, or
    the nearest existing folder on its way cannot be written to."""
    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise _UsageError(
            f"--report {directory}: that path is a file; give a directory (it is created if "
            "missing)"
        )
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise _UsageError(
            f"--report {directory}: {existing} is a file, so the directory cannot be created; "
            "give another path"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise _UsageError(
            f"--report {directory}: {existing} is not writable; give a directory you can write to"
        )


def _write_report(
    args: argparse.Namespace, result: dict[str, Any], found: dict[str, Any], *, first: bool
) -> dict[str, str]:
    """Write the report of one bug ``found`` of the search; the first bug takes the usual name,
    each other one a name with its invariant and rule in it."""
    from qmodel.bugs import lengths, report_name
    from qmodel.replay import trace_of
    from qmodel.report import write_report
    from qmodel.trace import Search

    trace = trace_of(
        found["world"],
        found["violation"],
        target=result["target"],
        checked=found.get("checked") or result["checked"],
        search=Search(
            profile=args.profile,
            seed=args.seed,
            max_examples=args.max_examples,
            examples=result["examples"],
            command=check_command(args),
            **lengths(found),
        ),
    )
    name = report_name(trace, found["violation"], first=first)
    files = write_report(trace, args.report, name=name)
    return {"markdown": str(files.markdown), "trace": str(files.trace), "test": str(files.test)}


def check_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``qmodel check`` arguments (for programs that call :func:`run_check`)."""
    return _parser().parse_args(["check", *argv])


def _checked(args: argparse.Namespace, protocol: Any) -> tuple[Any, ...]:
    from qmodel.check import select

    kept = select(
        protocol.invariants,
        args.invariant,
        skipped=args.skip_invariant or (),
        protocol=protocol.name,
    )
    if not kept:
        raise _UsageError(
            "--skip-invariant leaves no invariant to check; skip fewer, or list the ones to "
            "check with --invariant"
        )
    return kept


def _constructing(factory: Callable[[], Any], name: str) -> Callable[[], Any]:
    """``factory``, with a target that raises while it is being made reported as the target's
    fault (exit 2), not as an error of qmodel."""
    from qmodel.errors import InvalidTarget

    def make() -> Any:
        try:
            return factory()
        except QmodelError:
            raise
        except Exception as err:  # noqa: BLE001 - any exception of the user's constructor
            raise InvalidTarget(
                f"making the target {name} raised {type(err).__name__}: {err}; a class target "
                "must be constructible with no arguments (or give a factory function)",
                target=name,
            ) from err

    return make


def run_check(args: argparse.Namespace, progress: Any = None) -> dict[str, Any]:
    """Run ``qmodel check`` and return its result: the JSON fields plus ``violation`` (the
    record or ``None``), ``first_violation_at`` (the same as ``found_at_example``: examples run
    when the first violation was found, before shrinking; 1 when a saved example broke it at
    once), ``world`` (the world of the first bug's counterexample, or ``None``), ``checked``
    (the invariants checked), ``found`` (every distinct bug, as :mod:`qmodel.bugs` describes
    them: each shrunk by Hypothesis, then minimised by :mod:`qmodel.minimise` unless
    ``--no-minimise``), ``verbs_run`` and ``scheduler_steps_run`` (what the search ran over all
    its examples). ``progress``, if given, is told of every example (see
    :class:`qmodel.progress.NoProgress`).

    Raises :class:`~qmodel.errors.QmodelError` for a bad target or option, and ends without a
    verdict (an exception the command line answers with verdict ``unknown``) when the failure
    seen does not happen again on the same example, or on Ctrl-C.
    """
    from hypothesis import settings
    from hypothesis.errors import Flaky
    from hypothesis.reporting import with_reporter
    from hypothesis.stateful import get_state_machine_test

    from qmodel import machine as machine_mod
    from qmodel import protocols
    from qmodel.bugs import MAX_DISTINCT_BUGS, known_key, minimise_found
    from qmodel.conformance import conform
    from qmodel.driver import bug_of
    from qmodel.exampledb import database_key
    from qmodel.profiles import MINIMISE_RUNS, hypothesis_name, register, shrink_budget
    from qmodel.targets import DEFAULT_TARGET, resolve
    from qmodel.world import WorldConfig

    _validate(args)
    # What a worker prints while it is imported is no part of the answer: stdout is ours.
    with contextlib.redirect_stdout(sys.stderr):
        target = resolve(
            args.target,
            kv_bindings=args.kv_binding,
            do_bindings=args.do_binding,
            env=getattr(args, "env", None),
        )
    name = target.name if args.target else DEFAULT_TARGET
    protocol = args.protocol or target.protocol
    _same_protocol_as_the_catalog(args, protocol)
    with contextlib.redirect_stdout(sys.stderr):
        proto = protocols.get(protocol)
    checked = _checked(args, proto)
    register()
    chosen = settings.get_profile(hypothesis_name(args.profile))
    if args.max_examples is not None:
        chosen = settings(chosen, max_examples=args.max_examples)
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

    stop = _CtrlC()

    def on_world(world: Any, violation: Any) -> None:
        stop.check()
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

    def search(known: frozenset[tuple[str, str | None]], budget: int) -> Any:
        # Another search (bugs known) keeps its saved failures apart.
        key = known_key(database_key(name, repr(config), (i.id for i in checked)), known)
        cls = type(
            "CheckMachine",
            (machine_mod.QueueMachine,),
            {
                "target_factory": staticmethod(_constructing(target.factory, name)),
                "protocol": proto,
                "config": config,
                "checked": checked,
                "on_world": staticmethod(on_world),
                "known": known,
                # Saved examples are keyed by target and configuration, not by this class's
                # name (the same for every target), which Hypothesis's own key would use.
                "_hypothesis_internal_add_digest": key,
                # The search's seed, as @seed sets it, but without @seed's turning off the
                # example database: a failure saved by an earlier run is tried first.
                "_hypothesis_internal_use_seed": args.seed,
            },
        )
        return get_state_machine_test(cls, settings=settings(chosen, max_examples=budget))

    found: list[dict[str, Any]] = []
    started = time.perf_counter()  # wall-clock-ok: reporting only

    def partial() -> dict[str, Any]:
        return {
            "target": name,
            "seed": args.seed,
            "examples": state["examples"],
            "found_at_example": state["first_at"],
            "seconds": round(time.perf_counter() - started, 3),  # wall-clock-ok
        }

    error: BaseException | None = None
    watchdog = _Watchdog(_hang_seconds(), lambda message: _abandon(args, message))
    stop.watchdog = watchdog
    try:
        # Hypothesis reports (the falsifying example, shrink warnings) go to stderr: stdout is
        # ours, and with --json holds exactly one object.
        with (
            stop,
            watchdog,
            shrink_budget(args.profile),
            contextlib.redirect_stdout(sys.stderr),
            with_reporter(_hypothesis_report(args.profile)),
        ):
            # No verdict without evidence: a target that cannot do one unit of work on a quiet
            # platform is refused before the search, naming the request it refused.
            conform(_constructing(target.factory, name)(), proto, config)
            # Every distinct bug in one run: after each violation the search goes on, within
            # the budget, with the bugs found so far ending an example without failing it.
            budget = chosen.max_examples
            while True:
                state["failure"], state["first_at"], before = None, None, state["examples"]
                try:
                    search(frozenset(bug_of(f["violation"]) for f in found), budget)()
                    break
                except machine_mod.InvariantViolation as exc:
                    error = error or exc
                world, violation = state["failure"]
                first = state["first_at"] - before
                found.append(
                    {"world": world, "violation": violation, "first_at": state["first_at"]}
                )
                budget -= first
                if _first_only(args) or budget < 1 or len(found) >= MAX_DISTINCT_BUGS:
                    break
            runs = 0 if getattr(args, "no_minimise", False) else MINIMISE_RUNS[args.profile]
            for f in found:
                minimise_found(f, _constructing(target.factory, name), checked, runs)
            if found:
                state["failure"], state["first_at"] = (
                    (found[0]["world"], found[0]["violation"]),
                    found[0]["first_at"],
                )
    except Flaky as exc:
        seen = state["failure"][1].invariant if state["failure"] else "an invariant"
        raise _NoVerdict(
            f"a violation of {seen} was seen, but the same example did not break it again "
            f"({type(exc).__name__}): the target does not behave the same on the same choices. "
            "Does it read the wall clock, random numbers or state kept between examples (a "
            "module-level variable, or an instance given instead of a class)? Make it depend "
            "only on its requests and env, then check again",
            partial(),
        ) from None
    except KeyboardInterrupt:
        if not watchdog.fired:
            raise _Interrupted(partial()) from None
        raise _Stuck(watchdog.message) from None
    seconds = time.perf_counter() - started  # wall-clock-ok
    if error is None and state["evidence"] == 0:
        # No example had any work acknowledged: the search exercised nothing, so it proves
        # nothing (the conformance run passed, so the target can do the work: it stopped).
        raise _NoVerdict(
            f"no example of {state['examples']} had any {proto.unit} acknowledged by "
            f"{name}, so the search exercised nothing and cannot say ok; does the target keep "
            "state between examples (an instance or module given instead of a class), or "
            "refuse work after its first requests? Give more examples with --max-examples",
            partial(),
        )
    failure = state["failure"] if error is not None else None
    trace: list[str] = failure[0].log if failure else []
    violation = failure[1] if failure else None
    return {
        "verdict": "violation" if error is not None else "ok",
        "invariant": violation.invariant if violation else None,
        "target": name,
        "seed": args.seed,
        "examples": state["examples"],
        "found_at_example": state["first_at"] if error is not None else None,
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
        "found": found,
        "violations": [_violation_summary(f) for f in found],
    }


def _first_only(args: argparse.Namespace) -> bool:
    """Whether the search stops at its first violation: asked for, or the dev profile's way
    (fast feedback while editing) unless every bug was asked for."""
    if getattr(args, "stop_at_first", False):
        return True
    if getattr(args, "all_bugs", False):
        return False
    return args.profile == "dev"


def _violation_summary(found: dict[str, Any]) -> dict[str, Any]:
    """One entry of ``violations`` in ``--json`` (see :func:`qmodel.bugs.summary`)."""
    from qmodel.bugs import summary

    return summary(found)


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


def _human(result: dict[str, Any], args: argparse.Namespace) -> None:
    from qmodel.bugs import describe
    from qmodel.story import story

    violation = result["violation"]
    if violation is None:
        print(
            f"ok: no invariant broke in {result['examples']} examples against "
            f"{result['target']} ({result['seconds']:.1f} s, profile {args.profile}, seed "
            f"{result['seed']}; {result['verbs_run']} verbs, {result['scheduler_steps_run']} "
            "scheduler steps)"
        )
        return
    first = result["violations"][0]
    found = (
        f"first seen at example {result['found_at_example']}, shrunk by example "
        f"{result['examples']}, {result['seconds']:.1f} s in all"
    )
    if first["minimised_steps"] is not None and first["minimised_kv_ops"] != first["shrunk_kv_ops"]:
        found += (
            f"; minimised from {first['shrunk_steps']} steps and {first['shrunk_kv_ops']} KV "
            f"operations to {first['minimised_steps']} and {first['minimised_kv_ops']}"
        )
    print(
        story(
            violation,
            result["trace"],
            protocol=result["protocol"],
            target=result["target"],
            found=found,
        )
    )
    print()
    print("Replay it (the same seed and profile give the same run):")
    print("  " + check_command(args))
    others = result["violations"][1:]
    if others:
        print()
        print(f"The same search found {len(others)} other distinct bug(s):")
        for more in result["found"][1:]:
            print(f"  {describe(more)}")


def check_command(args: argparse.Namespace) -> str:
    """The ``qmodel check`` command line that runs the same search as ``args``."""
    cmd = ["qmodel", "check"]
    if args.target:
        cmd += ["--target", args.target]
    if getattr(args, "env", None):
        cmd += ["--env", args.env]
    for name in getattr(args, "kv_binding", None) or ():
        cmd += ["--kv-binding", name]
    for pair in getattr(args, "do_binding", None) or ():
        cmd += ["--do-binding", pair]
    if args.protocol:
        cmd += ["--protocol", args.protocol]
    for flag, default in (("bots", 2), ("frontends", 2)):
        if getattr(args, flag) != default:
            cmd += [f"--{flag}", str(getattr(args, flag))]
    if args.kv != "strict":
        cmd += ["--kv", args.kv]
    for i in args.invariant or ():
        cmd += ["--invariant", i]
    for i in getattr(args, "skip_invariant", None) or ():
        cmd += ["--skip-invariant", i]
    cmd += ["--profile", args.profile, "--seed", str(args.seed)]
    if args.max_examples:
        cmd += ["--max-examples", str(args.max_examples)]
    if getattr(args, "stop_at_first", False):
        cmd += ["--stop-at-first"]
    if getattr(args, "all_bugs", False):
        cmd += ["--all-bugs"]
    if getattr(args, "no_minimise", False):
        cmd += ["--no-minimise"]
    return " ".join(shlex.quote(c) for c in cmd)


if __name__ == "__main__":
    raise SystemExit(main())
