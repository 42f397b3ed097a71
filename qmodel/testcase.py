"""The ``unittest.TestCase`` of a machine made by :func:`qmodel.machine.machine_for`.

pytest (or unittest) runs it as one test. Its settings, in this order:

1. ``TestCase.settings``, when the test file assigns one;
2. the profile the user chose (``--hypothesis-profile``, or ``settings.load_profile``), unless
   that is Hypothesis's ``default`` profile or its ``ci`` profile, which Hypothesis loads by
   itself on a CI machine and which has no bound on shrinking;
3. otherwise qmodel's ``qmodel-ci`` profile: 150 examples, deterministic.

Shrinking is bounded by the budget of the qmodel profile in use (``ci``'s when the settings are
not a qmodel profile), as ``qmodel check`` bounds it. A failure's message is the shrunk story as
requests (:func:`qmodel.story.story`) and how to get the bug report; the exception is still the
machine's :class:`~qmodel.machine.InvariantViolation`.
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
            try:
                with shrink_budget(profile):
                    run_state_machine_as_test(run, settings=chosen)
            except InvariantViolation as found:
                # Hypothesis's notes list its draws ("Draw 1 (verb): 'run'"); the requests tell
                # the same run in the user's terms.
                found.__notes__ = ["", _story(found), "", _report_hint()]
                raise

        # Hypothesis's pytest plugin recognises its tests by these attributes.
        runTest.is_hypothesis_test = True  # type: ignore[attr-defined]
        runTest._hypothesis_state_machine_class = machine  # type: ignore[attr-defined]

    MachineTestCase.__name__ = f"{machine.__name__}.TestCase"
    MachineTestCase.__qualname__ = f"{machine.__qualname__}.TestCase"
    return MachineTestCase


def _story(found: Any) -> str:
    from qmodel.story import story
    from qmodel.targets import target_spec

    try:
        name = target_spec(found.world.target)
    except Exception:  # noqa: BLE001 - a name is a nicety; the story must still be told
        name = repr(found.world.target)
    return story(found.violation, found.world.log, protocol=found.world.protocol, target=name)
