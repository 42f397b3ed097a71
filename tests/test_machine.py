"""The state machine finds every catalog bug by itself, with the right invariant; the sound
designs pass; production-only bugs stay hidden on the local (Miniflare-like) KV.

The default run uses a small budget (the generation phase only, one seed); the ``slow`` marker
runs the full ``ci`` profile, shrinking included, over ten seeds.
"""

from __future__ import annotations

import unittest
from typing import Any

import pytest
from hypothesis import Phase, seed, settings
from hypothesis.stateful import get_state_machine_test
from qmodel.invariants.chat import ALL as CHAT_INVARIANTS

from qmodel.catalog import CATALOG, entry
from qmodel.cli import check_args, run_check
from qmodel.machine import InvariantViolation, machine_for
from qmodel.protocols import get as get_protocol
from qmodel.sim.choices import SeededBackend
from qmodel.workers import CommentsWorker, Fixes, SoundWorker
from qmodel.world import World, WorldConfig

BUGS = [i for i in CATALOG if CATALOG[i].invariants]
PRODUCTION_ONLY = [i for i in BUGS if CATALOG[i].needs_production_kv]


def search(
    target: Any, *, examples: int, kv: str = "strict", protocol: str = "queue", run_seed: int = 0
) -> InvariantViolation | None:
    """Run the machine's generation phase (no shrinking); the violation found, or ``None``."""
    cls = machine_for(target, protocol=protocol, kv=kv)
    budget = settings(
        settings.get_profile("qmodel-ci"), max_examples=examples, phases=[Phase.generate]
    )
    try:
        seed(run_seed)(get_state_machine_test(cls, settings=budget))()
    except InvariantViolation as found:
        return found
    return None


@pytest.mark.parametrize("catalog_id", BUGS)
def test_search_finds_the_catalog_bug(catalog_id: str) -> None:
    """Without a script, the machine reaches the bug and names one of its invariants."""
    e = entry(catalog_id)
    found = search(e.target, examples=200, protocol=e.protocol)
    assert found is not None, f"{catalog_id} not found in 200 examples"
    assert found.violation.invariant in e.invariants, found.violation.render()


@pytest.mark.parametrize("catalog_id", PRODUCTION_ONLY)
def test_local_kv_hides_what_production_kv_shows(catalog_id: str) -> None:
    """Works locally, fails in production: the local KV profile finds nothing where strict does."""
    e = entry(catalog_id)
    assert search(e.target, examples=50, kv="local", protocol=e.protocol) is None
    found = search(e.target, examples=200, kv="strict", protocol=e.protocol)
    assert found is not None and found.violation.invariant in e.invariants


@pytest.mark.parametrize(
    "target", [SoundWorker, lambda: CommentsWorker(Fixes.all())], ids=["sound", "all-fixes"]
)
def test_sound_designs_pass(target: Any) -> None:
    """The sound design and the seeds' worker with every fix on break no invariant."""
    assert search(target, examples=25) is None


def test_settle_waits_while_a_backlog_is_being_worked_through() -> None:
    """A settle ends two minutes after the last status change, not two minutes after it began:
    30 messages at one per bot and poll take four minutes, and the sound design answers all."""
    world = World.create(SoundWorker(), WorldConfig(), SeededBackend(3), get_protocol("queue"))
    for i in range(30):
        world.apply("post", i % 2)
    world.settle()
    assert world.spec.unfinished() == []
    assert [i.id for i in CHAT_INVARIANTS if i.check(world.context())] == []
    assert world.platform.clock.now_ms - world.history.exchanges[0].sent_ms > 4 * 60_000


def test_machine_for_gives_a_test_case() -> None:
    """machine_for(...).TestCase is a unittest case pytest can collect; it fails on a bug."""
    good = machine_for(SoundWorker)
    assert issubclass(good.TestCase, unittest.TestCase)
    good.TestCase.settings = settings(settings.get_profile("qmodel-ci"), max_examples=5)
    good.TestCase("runTest").runTest()
    bad = machine_for(entry("CLAIM_NOT_ATOMIC").target)
    bad.TestCase.settings = settings(
        settings.get_profile("qmodel-ci"), max_examples=50, phases=[Phase.generate]
    )
    with pytest.raises(InvariantViolation):
        bad.TestCase("runTest").runTest()


def test_invariant_selection_limits_what_is_checked() -> None:
    """--invariant checks only the named invariants: a bug caught by others goes unreported."""
    e = entry("POLL_MISSES_MESSAGE")
    budget = settings(settings.get_profile("qmodel-ci"), max_examples=40, phases=[Phase.generate])
    with pytest.raises(InvariantViolation) as everything:
        seed(0)(get_state_machine_test(machine_for(e.target), settings=budget))()
    assert everything.value.violation.invariant == "poll-delivery"
    only = machine_for(e.target, invariants=["single-claim"])
    assert [i.id for i in only.checked] == ["single-claim"]
    seed(0)(get_state_machine_test(only, settings=budget))()  # the same search, nothing to report


@pytest.mark.slow
@pytest.mark.parametrize("catalog_id", BUGS)
def test_full_budget_detection_rate(catalog_id: str) -> None:
    """qmodel check --profile ci finds the bug with its own invariant for at least 9 of 10 seeds."""
    e = entry(catalog_id)
    hits = 0
    for s in range(10):
        r = run_check(check_args(["--target", f"catalog:{catalog_id}", "--seed", str(s)]))
        hits += r["invariant"] in e.invariants
    assert hits >= 9


@pytest.mark.slow
def test_full_budget_sound_is_clean() -> None:
    """qmodel check --target sound --profile ci reports nothing for ten seeds."""
    for s in range(10):
        assert run_check(check_args(["--target", "sound", "--seed", str(s)]))["verdict"] == "ok"
