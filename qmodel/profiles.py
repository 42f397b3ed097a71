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

from hypothesis import HealthCheck, settings
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
}


def register() -> None:
    """Register the three profiles with Hypothesis (idempotent)."""
    settings.register_profile("dev", max_examples=30, **_COMMON)
    settings.register_profile(
        "ci", max_examples=60, derandomize=True, database=None, print_blob=False, **_COMMON
    )
    db = os.environ.get("QMODEL_EXAMPLE_DB", ".hypothesis/qmodel-examples")
    settings.register_profile(
        "nightly",
        max_examples=2_000,
        database=DirectoryBasedExampleDatabase(db),
        **_COMMON,
    )


#: How much shrinking each profile allows: (successful shrinks, wall seconds). The count keeps a
#: ``ci`` run deterministic; the seconds are only a safety net for slow machines.
SHRINK_BUDGETS = {"dev": (40, 30), "ci": (60, 60), "nightly": (500, 300)}


@contextlib.contextmanager
def shrink_budget(profile: str) -> Iterator[None]:
    """Bound Hypothesis's shrinking by the profile's budget while the block runs.

    Hypothesis has no setting for this; its engine reads two module constants, which this sets
    and restores.
    """
    from hypothesis.internal.conjecture import engine

    shrinks, seconds = SHRINK_BUDGETS[profile]
    saved = (engine.MAX_SHRINKS, engine.MAX_SHRINKING_SECONDS)
    engine.MAX_SHRINKS, engine.MAX_SHRINKING_SECONDS = shrinks, seconds
    try:
        yield
    finally:
        engine.MAX_SHRINKS, engine.MAX_SHRINKING_SECONDS = saved

