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
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import invariants as invariant_registry
from invariants.base import Invariant, Violation
from qmodel.errors import QmodelError
from qmodel.sim.choices import HypothesisBackend
from qmodel.world import World, WorldConfig

__all__ = ["InvariantViolation", "QueueMachine", "machine_for"]

#: Clock moves the machine may make (ms): within a second, a poll interval, past a minute.
TICKS_MS = (100, 1_000, 3_000, 15_000, 61_000)
#: Sizes of another app's bursts: small, and past the seeds' 200-message cache.
BURST_SIZES = (5, 201)
#: Bursts per example (they are the costliest rule; one past the cache is enough).
MAX_BURSTS = 1


class InvariantViolation(QmodelError, AssertionError):
    """An invariant broke. ``violation`` is the record; ``world`` the world it broke in."""

    def __init__(self, violation: Violation, world: World) -> None:
        super().__init__(violation.render())
        self.violation = violation
        self.world = world


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
        self.world = World.create(type(self).target_factory(), self.config, self.backend)
        self.safety = tuple(i for i in self.checked if i.kind == "safety")
        self.eventual = tuple(i for i in self.checked if i.kind == "eventual")

    def _with(self, data: Any) -> World:
        self.backend.data = data
        return self.world

    @rule(data=st.data(), frontend=st.integers(0, 3))
    def post(self, data: Any, frontend: int) -> None:
        self._with(data).post(frontend)

    @rule(data=st.data(), steps=st.integers(1, 40))
    def run(self, data: Any, steps: int) -> None:
        self._with(data).run(steps)

    @rule(data=st.data(), ms=st.sampled_from(TICKS_MS))
    def tick(self, data: Any, ms: int) -> None:
        self._with(data).advance(ms)

    @precondition(lambda self: self.world.config.bots > 0)
    @rule(data=st.data(), bot=st.integers(0, 3))
    def crash(self, data: Any, bot: int) -> None:
        self._with(data).crash(bot)

    # The PATCH era's bot finds work only in the newest messages of a listing, so a burst past
    # the listing hides messages by the protocol itself; bursts are for the other eras.
    @precondition(lambda self: self.world.bursts < MAX_BURSTS and self.world.config.protocol != "patch")
    @rule(data=st.data(), size=st.sampled_from(BURST_SIZES))
    def burst(self, data: Any, size: int) -> None:
        self._with(data).burst(size)

    def _check(self, checks: Iterable[Invariant]) -> None:
        ctx = self.world.context()
        for inv in checks:
            found = inv.check(ctx)
            if found is not None:
                if type(self).on_world is not None:
                    type(self).on_world(self.world, found)
                raise InvariantViolation(found, self.world)

    @invariant()
    def safety_holds(self) -> None:
        self._check(self.safety)

    def teardown(self) -> None:
        world = self.world
        if world.settled is None and world.history is not None:
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
    ones listed). Its ``TestCase`` attribute is a ``unittest.TestCase`` pytest collects.
    """
    factory = _factory(target)
    cfg = config or WorldConfig(protocol=protocol, bots=bots, frontends=frontends, kv=kv)  # type: ignore[arg-type]
    checked = invariant_registry.select(invariants)
    name = f"Machine_{getattr(target, '__name__', type(target).__name__)}"
    return type(
        name,
        (QueueMachine,),
        {"target_factory": staticmethod(factory), "config": cfg, "checked": checked},
    )


def _factory(target: Any) -> Callable[[], Any]:
    if isinstance(target, type):
        return target
    if callable(target) and not hasattr(target, "fetch"):
        return target
    # An instance or a module: each example gets the same object, so a target with state of
    # its own should be given as a class or a factory.
    return lambda: target


