"""One example, the same way for every engine: the Hypothesis machine, replay, regression
tests and the conformance run.

An :class:`Example` is a world and the invariants it is checked against. :meth:`Example.step`
draws the next verb and its argument through the world's one choice source (labels ``verb``
and ``verb.NAME``), applies it, and checks the safety invariants; :meth:`Example.finish`
settles the world and checks every invariant. So a run is one stream of choices: the verbs
and the platform's decisions, in the order they were made, and replaying the stream replays
the example.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import attrs

from qmodel.check import Invariant, Violation
from qmodel.errors import QmodelError
from qmodel.protocol import Protocol, Verb
from qmodel.sim.choices import Backend
from qmodel.world import World, WorldConfig

__all__ = ["ActorDied", "Example", "InvariantViolation", "VERB_LABEL", "bug_of", "verb_label"]

#: The label of the choice of a verb; its argument's label is ``verb.NAME``.
VERB_LABEL = "verb"


def verb_label(name: str) -> str:
    """The label of the choice of verb ``name``'s argument."""
    return f"{VERB_LABEL}.{name}"


class ActorDied(QmodelError, RuntimeError):
    """An actor of the protocol ended with an exception of its own: the protocol's client code
    is broken, so the run proves nothing. ``task`` names it, ``error`` is what it raised."""

    def __init__(self, task: str, error: BaseException) -> None:
        super().__init__(
            f"the protocol's actor task {task} died of {type(error).__name__}: {error}; the "
            "run proves nothing until the protocol's client code is fixed"
        )
        self.task = task
        self.error = error


class InvariantViolation(QmodelError, AssertionError):
    """An invariant broke. ``violation`` is the record; ``world`` the world it broke in;
    ``checked`` the invariants the example checked (a report's trace records them)."""

    def __init__(
        self, violation: Violation, world: World, checked: tuple[Invariant, ...] = ()
    ) -> None:
        super().__init__(violation.render())
        self.violation = violation
        self.world = world
        self.checked = checked


def bug_of(violation: Violation) -> tuple[str, str | None]:
    """What makes a violation a distinct bug: its invariant and the rule it broke (``None``
    for an invariant without rules)."""
    rule = violation.values.get("rule")
    return violation.invariant, None if rule is None else str(rule)


@attrs.define(eq=False)
class Example:
    """One example against a target: the world, what is checked, and whether it failed.

    ``known`` holds bugs (see :func:`bug_of`) already found: an example that meets one of them
    ends there without failing, so a search goes on to the bugs it has not found yet.
    """

    world: World
    checked: tuple[Invariant, ...]
    #: Called with the world and the violation (``None`` when it held) as the example ends.
    on_end: Callable[[World, Violation | None], None] | None = None
    known: frozenset[tuple[str, str | None]] = frozenset()
    failed: bool = False
    safety: tuple[Invariant, ...] = attrs.field(init=False)
    eventual: tuple[Invariant, ...] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.safety = tuple(i for i in self.checked if i.kind == "safety")
        self.eventual = tuple(i for i in self.checked if i.kind == "eventual")

    @classmethod
    def begin(
        cls,
        target: Any,
        protocol: Protocol,
        config: WorldConfig,
        backend: Backend,
        checked: Iterable[Invariant] | None = None,
        *,
        world_type: type[World] = World,
        on_end: Callable[[World, Violation | None], None] | None = None,
        known: frozenset[tuple[str, str | None]] = frozenset(),
    ) -> Example:
        """A fresh world of ``protocol`` around ``target``; ``checked`` defaults to all of the
        protocol's invariants."""
        world = world_type.create(target, config, backend, protocol)
        chosen = protocol.invariants if checked is None else tuple(checked)
        return cls(world, chosen, on_end, known)

    @property
    def protocol(self) -> Protocol:
        return self.world.protocol

    def enabled(self) -> list[Verb]:
        """The verbs that may be drawn now, in the protocol's order."""
        return [v for v in self.protocol.verbs if v.enabled(self.world)]

    def draw(self) -> tuple[str, int]:
        """Draw the next verb and its argument through the world's choice source.

        The verb's weights are the search's frequencies, not rare outcomes of the platform, so
        a search backend takes them as they are (see
        :class:`~qmodel.sim.choices.HypothesisBackend`).
        """
        verbs = self.enabled()
        choices = self.world.platform.choices
        verb = verbs[choices.choose(VERB_LABEL, len(verbs), tuple(v.weight for v in verbs))]
        arg = verb.args[choices.choose(verb_label(verb.name), len(verb.args))]
        return verb.name, arg

    def step(self) -> tuple[str, int]:
        """Draw a verb, apply it, check the safety invariants (raises
        :class:`InvariantViolation`); gives the verb applied."""
        verb, arg = self.draw()
        self.world.apply(verb, arg)
        self.check_safety()
        return verb, arg

    def check_safety(self) -> None:
        self._check(self.safety)

    def _check(self, checks: Iterable[Invariant]) -> None:
        if self.failed:  # a known bug ended the example; nothing more is judged
            return
        world = self.world
        dead = world.dead_actor()
        if dead is not None:
            assert dead.error is not None
            raise ActorDied(dead.name, dead.error)
        ctx = world.context()
        for inv in checks:
            found = inv.check(ctx)
            if found is not None:
                self.failed = True
                if bug_of(found) in self.known:
                    if self.on_end is not None:
                        self.on_end(world, None)
                    return
                if self.on_end is not None:
                    self.on_end(world, found)
                raise InvariantViolation(found, world, self.checked)

    def finish(self) -> None:
        """Settle the world and check every invariant (raises :class:`InvariantViolation`).

        The safety invariants are checked during the settle too, whenever a request is answered,
        so a violation the settle's traffic shows ends the story there. After a violation the
        example is over: settling it would only cost time, so a failed example is not settled.
        """
        world = self.world
        if self.failed or world.settled is not None:
            return
        world.settle(watch=self.check_safety)
        if self.failed:
            return  # a known bug the settle showed: nothing more is judged
        self._check(self.safety + self.eventual)
        if self.on_end is not None:
            self.on_end(world, None)
