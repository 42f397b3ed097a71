"""Hypothesis profiles for the machines: ``dev``, ``ci`` and ``nightly``.

* ``dev``: fast feedback while editing (few examples, random).
* ``ci``: deterministic and bounded, for a gate: the same run every time (``derandomize``), no
  example database, a fixed number of examples.
* ``nightly``: long, with an example database shared by the runs (``.hypothesis/`` or the
  directory in ``QMODEL_EXAMPLE_DB``), so a counterexample found once is tried first next time.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis.database import DirectoryBasedExampleDatabase

__all__ = ["PROFILES", "SHRINK_BUDGETS", "register", "shrink_budget"]

PROFILES = ("dev", "ci", "nightly")

_COMMON = {
    # One bug per run: a violation caught after a step and the same one caught at teardown
    # must not come back as two "distinct" failures.
    "report_multiple_bugs": False,
    "deadline": None,
    "suppress_health_check": list(HealthCheck),
    "stateful_step_count": 40,
    # No explain phase: it reruns the shrunk example many times to mark which draws did not
    # matter, which the machine's own trace does not show; the time goes to the search.
    "phases": (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink),
}


def register() -> None:
    """Register the three profiles with Hypothesis (idempotent)."""
    settings.register_profile("dev", max_examples=30, **_COMMON)
    settings.register_profile(
        "ci", max_examples=150, derandomize=True, database=None, print_blob=False, **_COMMON
    )
    db = os.environ.get("QMODEL_EXAMPLE_DB", ".hypothesis/qmodel-examples")
    settings.register_profile(
        "nightly",
        max_examples=2_000,
        database=DirectoryBasedExampleDatabase(db),
        **_COMMON,
    )


#: How much shrinking each profile allows: (successful shrinks, test runs while shrinking, wall
#: seconds). The counts keep a run deterministic (the same seed gives the same shrunk trace on
#: any machine); the seconds are only a safety net for a very slow machine.
SHRINK_BUDGETS = {"dev": (40, 150, 60), "ci": (60, 250, 180), "nightly": (500, 5_000, 600)}


@contextlib.contextmanager
def shrink_budget(profile: str) -> Iterator[None]:
    """Bound Hypothesis's shrinking by the profile's budget while the block runs.

    Hypothesis has no setting for this. Its engine reads two module constants (successful
    shrinks, seconds), which this sets and restores; the count of test runs while shrinking is
    kept by wrapping the engine's ``test_function``, which ends the run the way the engine's own
    limits do once the count is spent, keeping the smallest failure found so far.
    """
    from hypothesis.internal.conjecture import engine

    shrinks, calls, seconds = SHRINK_BUDGETS[profile]
    runner = engine.ConjectureRunner
    saved = (engine.MAX_SHRINKS, engine.MAX_SHRINKING_SECONDS, runner.test_function)
    original = runner.test_function

    def test_function(self: Any, data: Any) -> None:
        if getattr(self, "finish_shrinking_deadline", None) is not None:
            spent = self.__dict__.get("_qmodel_shrink_runs", 0) + 1
            self.__dict__["_qmodel_shrink_runs"] = spent
            if spent > calls:
                self.exit_with(engine.ExitReason.max_shrinks)
        original(self, data)

    engine.MAX_SHRINKS, engine.MAX_SHRINKING_SECONDS = shrinks, seconds
    runner.test_function = test_function  # type: ignore[method-assign]
    try:
        yield
    finally:
        engine.MAX_SHRINKS, engine.MAX_SHRINKING_SECONDS, runner.test_function = saved
