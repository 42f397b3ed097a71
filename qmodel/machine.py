"""The Hypothesis state machine that searches a target for invariant violations.

A :class:`QueueMachine` runs one :class:`~qmodel.driver.Example` per Hypothesis example. Its one
rule is the example's next step: a verb of the protocol drawn by weight (a frontend posts, the
schedule runs some steps, the clock moves, a bot crashes and restarts, another app floods the
chat), with every choice the world makes inside it (which task steps, which cached value a read
sees, how long a generation takes) drawn from that rule's Hypothesis data, so Hypothesis
shrinks the verbs, the schedule, the staleness and the faults together. Safety invariants are
checked after every step; at teardown the world is settled and the eventual ones are checked.

:func:`machine_for` builds the machine class for a target:

    TestMyWorker = qmodel.machine.machine_for(MyWorker, protocol="queue").TestCase
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from qmodel import protocols
from qmodel.check import Invariant, Violation, select
from qmodel.driver import Example, InvariantViolation
from qmodel.exampledb import database_key, target_name
from qmodel.protocol import Protocol
from qmodel.sim.choices import HypothesisBackend
from qmodel.testcase import test_case_for
from qmodel.world import World, WorldConfig

__all__ = ["InvariantViolation", "QueueMachine", "machine_for"]


class QueueMachine(RuleBasedStateMachine):
    """The machine; subclasses made by :func:`machine_for` set the class attributes."""

    target_factory: ClassVar[Callable[[], Any]]
    protocol: ClassVar[Protocol]
    config: ClassVar[WorldConfig] = WorldConfig()
    checked: ClassVar[tuple[Invariant, ...]] = ()
    #: Called with each world when an example ends (the CLI keeps the last failing one).
    on_world: ClassVar[Callable[[World, Violation | None], None] | None] = None
    #: Bugs already found (``(invariant, rule)``): an example meeting one ends without failing.
    known: ClassVar[frozenset[tuple[str, str | None]]] = frozenset()

    def __init__(self) -> None:
        super().__init__()
        self.backend = HypothesisBackend(None)
        cls = type(self)
        self.example = Example.begin(
            cls.target_factory(),
            cls.protocol,
            cls.config,
            self.backend,
            cls.checked or None,
            on_end=cls.on_world,
            known=cls.known,
        )

    @property
    def world(self) -> World:
        return self.example.world

    @rule(data=st.data())
    def act(self, data: Any) -> None:
        """One step of the example: a verb of the protocol, drawn by weight, with its
        argument, both through the world's choice source."""
        self.backend.data = data
        self.example.step()

    @invariant()
    def safety_holds(self) -> None:
        self.example.check_safety()

    def teardown(self) -> None:
        self.example.finish()


def machine_for(
    target: Any,
    *,
    protocol: str | Protocol = "queue",
    bots: int = 2,
    frontends: int = 2,
    kv: str = "strict",
    invariants: Iterable[str] | None = None,
    config: WorldConfig | None = None,
) -> type[QueueMachine]:
    """A :class:`QueueMachine` subclass for ``target`` (an instance, a class or a factory).

    ``protocol`` is a built-in protocol name, ``package.module:NAME`` or a
    :class:`~qmodel.protocol.Protocol` (an unknown name raises
    :class:`~qmodel.protocols.UnknownProtocol` with the closest ones). ``invariants`` selects
    invariant ids of the protocol (default all; an unknown id raises with the known ones
    listed). Its ``TestCase`` attribute is a ``unittest.TestCase`` pytest collects, run
    under qmodel's bounded settings unless a profile was chosen (:mod:`qmodel.testcase`); its
    examples are saved under a key of the target and configuration (:mod:`qmodel.exampledb`).
    """
    if isinstance(protocol, Protocol) or config is None:
        proto = protocols.get(protocol)
    else:
        proto = protocols.get(config.protocol)
    ref = protocol if isinstance(protocol, str) else proto.name
    cfg = config or WorldConfig(protocol=ref, bots=bots, frontends=frontends, kv=kv)
    checked = select(proto.invariants, invariants, protocol=proto.name)
    name = f"Machine_{getattr(target, '__name__', type(target).__name__)}"
    # Hypothesis keys saved examples by a digest of the class, which for a class made here is
    # its name alone: this attribute, which that digest includes, keeps targets apart.
    key = database_key(target_name(target), repr(cfg), (i.id for i in checked))
    machine = type(
        name,
        (QueueMachine,),
        {
            "target_factory": staticmethod(_factory(target)),
            "protocol": proto,
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
