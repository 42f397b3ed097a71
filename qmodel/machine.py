"""The Hypothesis state machine that searches a target for invariant violations.

A :class:`QueueMachine` drives one :class:`~qmodel.world.World` per example. Its rules are the
world's verbs: a frontend posts, the schedule runs some steps, the clock moves, a bot crashes
and restarts, another app floods the chat. Every choice the world makes inside a rule (which
task steps, which cached value a read sees, how long a generation takes) is drawn from that
rule's Hypothesis data, so Hypothesis shrinks the schedule, the staleness and the faults
together. Safety invariants are checked after every rule; at teardown the world is settled and
the eventual ones are checked.

:func:`machine_for` builds the machine class for a target:

    TestMyWorker = qmodel.machine_for(MyWorker).TestCase
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import invariants as invariant_registry
from invariants.base import Invariant, Violation
from qmodel.errors import QmodelError
from qmodel.exampledb import database_key, target_name
from qmodel.sim.choices import HypothesisBackend
from qmodel.testcase import test_case_for
from qmodel.world import World, WorldConfig

__all__ = ["InvariantViolation", "QueueMachine", "machine_for"]

#: Clock moves the machine may make (ms): within a second, a poll interval, past a minute.
TICKS_MS = (100, 1_000, 3_000, 15_000, 61_000)
#: Sizes of another app's bursts: small, and past the seeds' 200-message cache.
BURST_SIZES = (5, 201)
#: The machine's verbs and how often it tries each (out of their sum). One rule draws them by
#: weight rather than one rule per verb: Hypothesis's per-example rule subsets would otherwise
#: spend whole examples crashing bots or moving the clock while nothing runs.
VERB_WEIGHTS = (("run", 10), ("post", 4), ("tick", 3), ("crash", 2), ("burst", 1))
#: Bursts per example (they are the costliest rule; one past the cache is enough).
MAX_BURSTS = 1


class InvariantViolation(QmodelError, AssertionError):
    """An invariant broke. ``violation`` is the record; ``world`` the world it broke in;
    ``checked`` the invariants the machine checked (a report's trace records them)."""

    def __init__(
        self, violation: Violation, world: World, checked: tuple[Invariant, ...] = ()
    ) -> None:
        super().__init__(violation.render())
        self.violation = violation
        self.world = world
        self.checked = checked


class QueueMachine(RuleBasedStateMachine):
    """The machine; subclasses made by :func:`machine_for` set the class attributes."""

    target_factory: ClassVar[Callable[[], Any]]
    config: ClassVar[WorldConfig] = WorldConfig()
    checked: ClassVar[tuple[Invariant, ...]] = invariant_registry.ALL
    #: Called with each world when an example ends (the CLI keeps the last failing one).
    on_world: ClassVar[Callable[[World, Violation | None], None] | None] = None

    def __init__(self) -> None:
        super().__init__()
        self.backend = HypothesisBackend(None)
        self.failed = False
        self.world = World.create(type(self).target_factory(), self.config, self.backend)
        self._verbs = st.sampled_from(self._weighted_verbs(bursts=True))
        self._verbs_after_bursts = st.sampled_from(self._weighted_verbs(bursts=False))
        self.safety = tuple(i for i in self.checked if i.kind == "safety")
        self.eventual = tuple(i for i in self.checked if i.kind == "eventual")

    def _weighted_verbs(self, *, bursts: bool) -> list[str]:
        verbs: list[str] = []
        for verb, weight in VERB_WEIGHTS:
            if verb == "crash" and self.world.config.bots == 0:
                continue
            # The PATCH era's bot finds work only in the newest messages of a listing, so a
            # burst past the listing hides messages by the protocol itself.
            if verb == "burst" and (self.world.config.protocol == "patch" or not bursts):
                continue
            verbs += [verb] * weight
        return verbs

    def _with(self, data: Any) -> World:
        self.backend.data = data
        return self.world

    @rule(data=st.data())
    def act(self, data: Any) -> None:
        """One verb of the world, drawn by weight (:data:`VERB_WEIGHTS`), with its argument."""
        world = self._with(data)
        verbs = self._verbs if world.bursts < MAX_BURSTS else self._verbs_after_bursts
        verb = data.draw(verbs, label="verb")
        if verb == "run":
            world.run(data.draw(st.integers(1, 40), label="steps"))
        elif verb == "post":
            world.post(data.draw(st.integers(0, 3), label="frontend"))
        elif verb == "tick":
            world.advance(data.draw(st.sampled_from(TICKS_MS), label="ms"))
        elif verb == "crash":
            world.crash(data.draw(st.integers(0, 3), label="bot"))
        else:
            world.burst(data.draw(st.sampled_from(BURST_SIZES), label="size"))

    def _check(self, checks: Iterable[Invariant]) -> None:
        ctx = self.world.context()
        for inv in checks:
            found = inv.check(ctx)
            if found is not None:
                self.failed = True
                if type(self).on_world is not None:
                    type(self).on_world(self.world, found)
                raise InvariantViolation(found, self.world, self.checked)

    @invariant()
    def safety_holds(self) -> None:
        self._check(self.safety)

    def teardown(self) -> None:
        world = self.world
        # After a violation the example is over: settling it would only cost time.
        if not self.failed and world.settled is None and world.history is not None:
            world.settle()
            self._check(self.safety + self.eventual)
            if type(self).on_world is not None:
                type(self).on_world(world, None)


def machine_for(
    target: Any,
    *,
    protocol: str = "queue",
    bots: int = 2,
    frontends: int = 2,
    kv: str = "strict",
    invariants: Iterable[str] | None = None,
    config: WorldConfig | None = None,
) -> type[QueueMachine]:
    """A :class:`QueueMachine` subclass for ``target`` (an instance, a class or a factory).

    ``invariants`` selects invariant ids (default all; an unknown id raises with the known
    ones listed). Its ``TestCase`` attribute is a ``unittest.TestCase`` pytest collects, run
    under qmodel's bounded settings unless a profile was chosen (:mod:`qmodel.testcase`); its
    examples are saved under a key of the target and configuration (:mod:`qmodel.exampledb`).
    """
    factory = _factory(target)
    cfg = config or WorldConfig(protocol=protocol, bots=bots, frontends=frontends, kv=kv)  # type: ignore[arg-type]
    checked = invariant_registry.select(invariants)
    name = f"Machine_{getattr(target, '__name__', type(target).__name__)}"
    # Hypothesis keys saved examples by a digest of the class, which for a class made here is
    # its name alone: this attribute, which that digest includes, keeps targets apart.
    key = database_key(target_name(target), repr(cfg), (i.id for i in checked))
    machine = type(
        name,
        (QueueMachine,),
        {
            "target_factory": staticmethod(factory),
            "config": cfg,
            "checked": checked,
            "_hypothesis_internal_add_digest": key,
        },
    )
    machine.TestCase = test_case_for(machine)  # qmodel's bounded settings; the story on failure
    return machine


def _factory(target: Any) -> Callable[[], Any]:
    if isinstance(target, type):
        return target
    if callable(target) and not hasattr(target, "fetch"):
        return target
    # An instance or a module: each example gets the same object, so a target with state of
    # its own should be given as a class or a factory.
    return lambda: target
