"""Hypothesis profiles for the machines, registered as ``qmodel-dev``, ``qmodel-ci`` and
``qmodel-nightly`` (Hypothesis's own ``default`` and ``ci`` profiles are left alone).

* ``qmodel-dev``: fast feedback while editing (30 examples, random), with the example database.
* ``qmodel-ci``: deterministic and bounded, for a gate: 150 examples, the same run every time.
  Without ``QMODEL_EXAMPLE_DB`` it keeps no example database (``derandomize``); with it, the
  search is pinned to a seed instead (:data:`PINNED_SEEDS`) and saves to and reads from the
  local and the shared database, so a failure found on one machine is tried first on the next.
* ``qmodel-nightly``: long (2,000 examples), with the example database.

The command line's ``--profile dev|ci|nightly`` are these three; :func:`hypothesis_name` maps
the short name to the registered one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from hypothesis import HealthCheck, Phase, settings

__all__ = [
    "PINNED_SEEDS",
    "PROFILES",
    "MINIMISE_RUNS",
    "SHRINK_BUDGETS",
    "current_profile_name",
    "ensure_registered",
    "hypothesis_name",
    "register",
    "short_name",
    "shrink_budget",
]

#: The profiles' short names, as ``qmodel check --profile`` takes them.
PROFILES = ("dev", "ci", "nightly")
#: What each profile is for, as ``qmodel check --help`` lists it.
PURPOSES = {
    "dev": "fast feedback while editing (random)",
    "ci": "a gate: deterministic and bounded",
    "nightly": "long searches",
}
#: Profiles whose searches run from a fixed seed when no seed is given: a gate must give the
#: same verdict on every run, and with an example database Hypothesis does not derandomize.
PINNED_SEEDS = {"ci": 0}
_PREFIX = "qmodel-"
#: Examples per profile.
EXAMPLES = {"dev": 30, "ci": 150, "nightly": 2_000}

_COMMON: dict[str, Any] = {
    # One bug per run: a violation caught after a step and the same one caught at teardown
    # must not come back as two "distinct" failures.
    "report_multiple_bugs": False,
    "deadline": None,
    "suppress_health_check": list(HealthCheck),
    "stateful_step_count": 40,
    # No explain phase: it reruns the shrunk example many times to mark which draws did not
    # matter, which the machine's own trace does not show; the time goes to the search.
    "phases": (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink),
    # The story of a failure is the machine's own report; Hypothesis's blob would only repeat it.
    "print_blob": False,
}


def hypothesis_name(profile: str) -> str:
    """``"qmodel-ci"`` for ``"ci"``: the name the profile is registered under."""
    return _PREFIX + profile


def short_name(name: str) -> str | None:
    """``"ci"`` for ``"qmodel-ci"``; ``None`` for a profile that is not qmodel's."""
    if name.startswith(_PREFIX) and name[len(_PREFIX) :] in PROFILES:
        return name[len(_PREFIX) :]
    return None


def current_profile_name() -> str:
    """The name of the Hypothesis profile in force (``default`` unless one was loaded)."""
    public = getattr(settings, "get_current_profile_name", None)
    if public is not None:
        return str(public())
    # Hypothesis before 6.14x has no public accessor; the attribute it reads is the same.
    return str(getattr(settings, "_current_profile", None) or "default")


def ensure_registered() -> None:
    """Register the profiles unless they are (outside pytest, nothing else registers them)."""
    from hypothesis.errors import InvalidArgument

    try:
        settings.get_profile(hypothesis_name("ci"))
    except InvalidArgument:
        register()


def register(environ: dict[str, str] | None = None) -> None:
    """Register the three profiles with Hypothesis (idempotent; a profile registered again
    picks up a changed ``QMODEL_EXAMPLE_DB``). Raises
    :class:`~qmodel.exampledb.InvalidExampleDatabase` when that variable names no database."""
    from qmodel.exampledb import ENV_VAR, example_database

    env = os.environ if environ is None else environ
    database = example_database(env)
    # On Hypothesis's defaults, not on the profile loaded now (which unset values would
    # otherwise come from): a qmodel profile is the same whichever profile is in force.
    base = settings.get_profile("default")
    for profile in PROFILES:
        options: dict[str, Any] = {**_COMMON, "max_examples": EXAMPLES[profile]}
        if profile == "ci" and ENV_VAR not in env:
            options["derandomize"] = True
        else:
            options.update(derandomize=False, database=database)
        settings.register_profile(hypothesis_name(profile), parent=base, **options)


#: How much shrinking each profile allows: (successful shrinks, test runs while shrinking, wall
#: seconds). The counts keep a run deterministic (the same seed gives the same shrunk trace on
#: any machine); the seconds are only a safety net for a very slow machine.
SHRINK_BUDGETS = {"dev": (40, 150, 60), "ci": (60, 250, 180), "nightly": (500, 5_000, 600)}
#: Candidate runs each profile lets :func:`qmodel.minimise.minimise` spend on one bug after
#: Hypothesis has shrunk it (a count, so the same seed gives the same counterexample; the first
#: of its two searches has at most half).
MINIMISE_RUNS = {"dev": 300, "ci": 800, "nightly": 4_000}


@contextlib.contextmanager
def shrink_budget(profile: str) -> Iterator[None]:
    """Bound Hypothesis's shrinking by the budget of ``profile`` (a short name) while the block
    runs.

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
