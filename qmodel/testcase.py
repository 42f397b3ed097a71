"""The ``unittest.TestCase`` of a machine made by :func:`qmodel.machine.machine_for`.

pytest (or unittest) runs it as one test. Its settings, in this order:

1. ``TestCase.settings``, when the test file assigns one;
2. the profile the user chose (``--hypothesis-profile``, or ``settings.load_profile``), unless
   that is Hypothesis's ``default`` profile or its ``ci`` profile, which Hypothesis loads by
   itself on a CI machine and which has no bound on shrinking;
3. otherwise qmodel's ``qmodel-ci`` profile: 150 examples, deterministic.

Shrinking is bounded by the budget of the qmodel profile in use (``ci``'s when the settings are
not a qmodel profile), as ``qmodel check`` bounds it. After the first bug the search goes on
within the budget for every other distinct bug (invariant and rule), as ``qmodel check`` does
(:mod:`qmodel.bugs`; not under the dev profile), and each bug is minimised
(:mod:`qmodel.minimise`). A failure's message lists the bugs and tells each one's story as
requests (:func:`qmodel.story.story`), then how to get the bug reports; the exception is the
first bug's :class:`~qmodel.machine.InvariantViolation`, with every bug in its ``bugs``.
"""

from __future__ import annotations

import os
import unittest
from typing import Any

from hypothesis import settings as Settings
from hypothesis.stateful import run_state_machine_as_test

__all__ = ["effective_settings", "test_case_for"]

#: Hypothesis's own profiles, which do not count as a user's choice of settings for a machine.
_NOT_A_CHOICE = ("default", "ci")


def effective_settings(explicit: Settings | None) -> tuple[Settings, str]:
    """The settings a machine's test runs with, and the short name of the qmodel profile whose
    shrink budget bounds it (see the module's docstring for the order)."""
    from qmodel.profiles import current_profile_name, hypothesis_name, short_name

    current = current_profile_name()
    profile = short_name(current) or "ci"
    if explicit is not None:
        return explicit, profile
    if current in _NOT_A_CHOICE:
        return Settings.get_profile(hypothesis_name("ci")), "ci"
    return Settings.get_profile(current), profile


def _report_hint() -> str:
    # pytest names the running test in this variable ("path::name (call)").
    current = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]
    where = f" {current}" if current else ""
    return (
        "The bug report (Markdown, with a sequence diagram), its trace and a regression test: "
        f"pytest --qmodel-report DIR{where}"
    )


def test_case_for(machine: type[Any]) -> type[unittest.TestCase]:
    """A ``TestCase`` class running ``machine`` (a :class:`~qmodel.machine.QueueMachine`
    subclass) under qmodel's bounded settings."""
    from qmodel.driver import InvariantViolation

    class MachineTestCase(unittest.TestCase):
        #: Settings for this machine; ``None`` means the profile chosen, else ``qmodel-ci``.
        settings: Settings | None = None

        def runTest(self) -> None:
            from qmodel.profiles import PINNED_SEEDS, ensure_registered, shrink_budget

            __tracebackhide__ = True  # the failure is the machine's, not this runner's
            ensure_registered()
            explicit = type(self).settings
            chosen, profile = effective_settings(explicit)
            run = machine
            seed = PINNED_SEEDS.get(profile) if explicit is None else None
            if seed is not None and not chosen.derandomize:
                # With an example database Hypothesis cannot derandomize; a pinned seed keeps
                # the gate's search the same on every run (@seed would drop the database).
                run = type(machine.__name__, (machine,), {"_hypothesis_internal_use_seed": seed})
            seen = _Counts(run.on_world)
            run = type(machine.__name__, (run,), {"on_world": staticmethod(seen.on_world)})
            try:
                with shrink_budget(profile):
                    run_state_machine_as_test(run, settings=chosen)
            except InvariantViolation as found:
                raise _every_bug(run, chosen, profile, found, seen) from None

        # Hypothesis's pytest plugin recognises its tests by these attributes.
        runTest.is_hypothesis_test = True  # type: ignore[attr-defined]
        runTest._hypothesis_state_machine_class = machine  # type: ignore[attr-defined]

    MachineTestCase.__name__ = f"{machine.__name__}.TestCase"
    MachineTestCase.__qualname__ = f"{machine.__qualname__}.TestCase"
    return MachineTestCase


class _Counts:
    """Counts the examples of a search, and the one at which it first failed; then tells
    ``then`` (the machine's own ``on_world``), if any."""

    def __init__(self, then: Any = None) -> None:
        self.examples = 0
        self.first_at: int | None = None
        self.then = then

    def on_world(self, world: Any, violation: Any) -> None:
        if self.then is not None:
            self.then(world, violation)
        self.examples += 1
        if violation is not None and self.first_at is None:
            self.first_at = self.examples


def _every_bug(
    run: type[Any], chosen: Settings, profile: str, first: Any, seen: _Counts
) -> BaseException:
    """After the first bug, search on within the budget for every other distinct bug (as
    ``qmodel check`` does: :mod:`qmodel.bugs`), minimise each, and give the failure to raise:
    the first bug's :class:`~qmodel.driver.InvariantViolation`, its message the story of each
    bug, its ``bugs`` the bugs found (for ``--qmodel-report``)."""
    from qmodel.bugs import MAX_DISTINCT_BUGS, known_key, minimise_found
    from qmodel.driver import InvariantViolation, bug_of
    from qmodel.profiles import MINIMISE_RUNS, shrink_budget

    found = [{"world": first.world, "violation": first.violation, "first_at": seen.first_at}]
    budget = chosen.max_examples - (seen.first_at or chosen.max_examples)
    key = getattr(run, "_hypothesis_internal_add_digest", b"")
    # The dev profile stops at the first bug (fast feedback), as qmodel check does.
    while profile != "dev" and budget >= 1 and len(found) < MAX_DISTINCT_BUGS:
        known = frozenset(bug_of(f["violation"]) for f in found)
        before, seen.first_at = seen.examples, None
        search = type(
            run.__name__,
            (run,),
            {"known": known, "_hypothesis_internal_add_digest": known_key(key, known)},
        )
        try:
            with shrink_budget(profile):
                run_state_machine_as_test(search, settings=Settings(chosen, max_examples=budget))
            break
        except InvariantViolation as more:
            found.append(
                {"world": more.world, "violation": more.violation, "first_at": seen.first_at}
            )
        # The examples this search ran until its failure are spent.
        budget -= (seen.first_at if seen.first_at is not None else before + budget) - before
    checked = run.checked or run.protocol.invariants
    for f in found:
        minimise_found(f, run.target_factory, checked, MINIMISE_RUNS[profile])
    told = InvariantViolation(found[0]["violation"], found[0]["world"], first.checked)
    told.bugs = found  # type: ignore[attr-defined]
    notes = [""]
    if len(found) > 1:
        from qmodel.bugs import describe

        notes += [f"The search found {len(found)} distinct bugs:"]
        notes += [f"  {i}. {describe(f)}" for i, f in enumerate(found, 1)]
        notes += [""]
    for i, f in enumerate(found, 1):
        if len(found) > 1:
            notes += [f"Bug {i} of {len(found)}:"]
        notes += [_story(f), ""]
    # Hypothesis's notes list its draws ("Draw 1 (verb): 'run'"); the requests tell the same
    # runs in the user's terms.
    told.__notes__ = [*notes, _report_hint()]
    return told


def _story(found: dict[str, Any]) -> str:
    from qmodel.bugs import lengths
    from qmodel.story import story
    from qmodel.targets import target_spec

    world = found["world"]
    try:
        name = target_spec(world.target)
    except Exception:  # noqa: BLE001 - a name is a nicety; the story must still be told
        name = repr(world.target)
    sizes = lengths(found)
    how = ""
    if (
        sizes["minimised_kv_ops"] is not None
        and sizes["minimised_kv_ops"] != sizes["shrunk_kv_ops"]
    ):
        how = (
            f"minimised from {sizes['shrunk_steps']} steps and {sizes['shrunk_kv_ops']} KV "
            f"operations to {sizes['minimised_steps']} and {sizes['minimised_kv_ops']}"
        )
    return story(found["violation"], world.log, protocol=world.protocol, target=name, found=how)
