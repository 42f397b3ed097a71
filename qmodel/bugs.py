"""Every distinct bug of one search, as ``qmodel check`` and the pytest lane both report them.

A bug is an invariant and the rule it broke (:func:`qmodel.driver.bug_of`). After the first
one, the search goes on within its budget with the bugs found so far *known*: an example that
meets one of them ends there without failing, so the next failure is another bug. Each search
keeps its saved examples apart (:func:`known_key`), each bug is minimised after Hypothesis has
shrunk it (:func:`minimise_found`), and each gets a report of its own (:func:`report_name`).

A found bug is a dict: ``world`` and ``violation`` (the run it is told with), ``first_at``
(examples run when it was first seen), ``shrunk`` and ``minimised`` (``(steps, kv_ops)`` of
the run Hypothesis shrunk and of the run :mod:`qmodel.minimise` made of it, ``None`` when it
was not minimised; ``kv_ops`` counts the KV operations up to where the bug was caught, through
the settle when it was caught there).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

__all__ = [
    "MAX_DISTINCT_BUGS",
    "Bug",
    "describe",
    "known_key",
    "lengths",
    "minimise_found",
    "report_name",
    "summary",
]

#: The most distinct bugs one search reports before it stops searching.
MAX_DISTINCT_BUGS = 8

#: An invariant id and the rule it broke (``None`` for an invariant without rules).
Bug = tuple[str, str | None]


def known_key(key: bytes, known: Iterable[Bug]) -> bytes:
    """The example-database key of a search that knows the bugs ``known``: its failures are
    its own, apart from those of the search that found them."""
    known = sorted(known, key=str)
    if not known:
        return key
    return key + ("|" + ",".join(f"{i}:{r}" for i, r in known)).encode()


def minimise_found(
    found: dict[str, Any], factory: Callable[[], Any], checked: Any, runs: int
) -> None:
    """Minimise one found bug (:func:`qmodel.minimise.minimise`) within ``runs`` candidate
    runs, in place: its ``world`` and ``violation`` become the minimised run's when that is
    shorter (fewer KV operations or log lines, and more of neither), and ``shrunk`` /
    ``minimised`` are set (``minimised`` is ``None`` when ``runs`` is 0 or the bug could not be
    run again); with the minimised run, ``checked`` is the invariants it was judged by."""
    from qmodel.minimise import minimise, story_kv_ops

    world, violation = found["world"], found["violation"]
    done = minimise(world, violation, factory, checked, runs=runs) if runs > 0 else None
    if done is None:
        found["shrunk"] = (len(world.log), story_kv_ops(world))
        found["minimised"] = None
        return
    found["shrunk"] = (done.shrunk_steps, done.shrunk_kv_ops)
    steps = len(done.world.log)
    if (
        done.kv_ops <= done.shrunk_kv_ops
        and steps <= done.shrunk_steps
        and ((done.kv_ops, steps) != (done.shrunk_kv_ops, done.shrunk_steps))
    ):
        found["world"], found["violation"] = done.world, done.violation
        found["minimised"] = (len(done.world.log), done.kv_ops)
        # The invariants its trace records: the minimised run is judged as it was found.
        found["checked"] = done.checked
    else:  # nothing shorter: the shrunk run stands
        found["minimised"] = found["shrunk"]


def lengths(found: dict[str, Any]) -> dict[str, int | None]:
    """``shrunk_steps``, ``shrunk_kv_ops``, ``minimised_steps`` and ``minimised_kv_ops`` of a
    found bug (``None`` where not known), as a trace's search and ``--json`` record them."""
    shrunk = found.get("shrunk") or (None, None)
    minimised = found.get("minimised") or (None, None)
    return {
        "shrunk_steps": shrunk[0],
        "shrunk_kv_ops": shrunk[1],
        "minimised_steps": minimised[0],
        "minimised_kv_ops": minimised[1],
    }


def summary(found: dict[str, Any]) -> dict[str, Any]:
    """One entry of ``violations`` in ``qmodel check --json``: the bug, the run it is told with
    (``steps``, ``kv_ops``, ``trace``: the minimised run when there is one), and the lengths of
    the shrunk and the minimised runs."""
    world, v = found["world"], found["violation"]
    rule = v.values.get("rule")
    sizes = lengths(found)
    told = "minimised" if sizes["minimised_kv_ops"] is not None else "shrunk"
    return {
        "invariant": v.invariant,
        "rule": None if rule is None else str(rule),
        "found_at_example": found["first_at"],
        "steps": len(world.log),
        "kv_ops": sizes[f"{told}_kv_ops"],
        **sizes,
        "trace": list(world.log),
        "report": None,
    }


def describe(found: dict[str, Any]) -> str:
    """One line about a found bug: its invariant and rule, and its lengths."""
    s = summary(found)
    rule = f" (rule {s['rule']})" if s["rule"] else ""
    shrunk = ""
    if s["minimised_kv_ops"] is not None and s["shrunk_kv_ops"] != s["kv_ops"]:
        shrunk = f" (shrunk: {s['shrunk_steps']} steps, {s['shrunk_kv_ops']} KV operations)"
    return (
        f"{s['invariant']}{rule}: {s['steps']} steps, {s['kv_ops']} KV operations{shrunk}, "
        f"first seen at example {s['found_at_example']}"
    )


def report_name(trace: Any, violation: Any, *, first: bool) -> str | None:
    """The file name of a bug's report: the usual one (``None``) for the first bug, else one
    with the invariant and rule in it, so the reports of one search do not overwrite each
    other."""
    from qmodel.report import report_id

    if first:
        return None
    rule = violation.values.get("rule")
    return re.sub(r"\W", "_", f"{report_id(trace)}__{violation.invariant}_{rule or ''}".rstrip("_"))
