"""A protocol is a value: everything a checker needs to know about one queue API.

qmodel's core (the world, the example driver, the search, replay, reports) knows no queue API.
A :class:`Protocol` tells it:

* the **verbs** an example applies, each with a weight and a finite list of arguments (the
  core's own ``run`` and ``advance`` are among them: :data:`RUN` and :data:`ADVANCE`);
* how to **start** its actors in a world (the clients that speak the API to the target);
* its **routes**: ``(method, path)`` to operation, for reports and readers of traces;
* its reference model: the spec's initial state and its pure ``step`` over answered exchanges;
* how to **observe** the settled world through the API (the settle probes), and when the
  settled world has nothing left to do;
* its **invariants**, and the figures they use (``params``);
* its **happy path**: the verbs of one unit of work (a message posted, processed and read back),
  which the conformance run drives before a search.

A protocol is written against the public names of :mod:`qmodel.protocol`, :mod:`qmodel.world`
(``World.call``, ``World.spawn``, ``World.crash``, the platform's ``choices`` and clock) and
:mod:`qmodel.check`. The built-in ones live in :mod:`qmodel.protocols`; a user's is named by
``package.module:NAME`` wherever a protocol is asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import attrs

from qmodel.check import Invariant
from qmodel.history import Exchange

#: The :class:`qmodel.world.World` a verb or a protocol's hook acts on. The world is built on
#: protocols, not the other way round, so it is named here without being imported.
World = Any
#: The :class:`qmodel.world.WorldConfig` a protocol's spec starts from.
WorldConfig = Any

__all__ = ["ADVANCE", "RUN", "Protocol", "Route", "TICKS_MS", "Verb", "fold_waiting"]


def _always(world: World) -> bool:
    return True


@attrs.frozen(kw_only=True)
class Verb:
    """One thing an example may do next.

    ``args`` is the finite list of its arguments, least surprising first (shrinking moves
    toward ``args[0]``); ``weight`` how often a search tries it, against the other verbs'
    weights; ``apply(world, arg)`` does it; ``enabled(world)`` says whether it may be drawn now
    (a crash needs a bot; one burst per example).
    """

    name: str
    weight: int
    args: tuple[int, ...]
    apply: Callable[[World, int], Any]
    enabled: Callable[[World], bool] = _always
    doc: str = ""

    def __attrs_post_init__(self) -> None:
        if self.weight < 1:
            raise ValueError(f"verb {self.name!r}: the weight must be at least 1")
        if not self.args:
            raise ValueError(f"verb {self.name!r} has no arguments; give it at least one")


@attrs.frozen(kw_only=True)
class Route:
    """One request of the API: ``method`` and ``path`` (``{id}`` marks a message id) and the
    operation name the history records it under."""

    method: str
    path: str
    operation: str
    doc: str = ""


def _run(world: World, steps: int) -> None:
    world.run(steps)


def _advance(world: World, ms: int) -> None:
    world.advance(ms)


#: Clock moves an example may make (ms): within a second, a poll interval, past a minute.
TICKS_MS = (100, 1_000, 3_000, 15_000, 61_000)

#: The core verb every protocol has: take up to N scheduler steps (each a choice).
RUN = Verb(
    name="run",
    weight=10,
    args=tuple(range(1, 41)),
    apply=_run,
    doc="take up to N scheduler steps, each one a choice of which task runs",
)
#: The core verb every protocol has: the clock moves on.
ADVANCE = Verb(
    name="advance",
    weight=3,
    args=TICKS_MS,
    apply=_advance,
    doc="the clock moves N ms (timers and leases fire as they fall due)",
)


def _no_params() -> Mapping[str, Any]:
    return {}


def _bots(config: WorldConfig) -> int:
    return config.bots


@attrs.frozen(kw_only=True)
class Protocol:
    """Everything the core needs to check targets that speak one queue API.

    ``start(world)`` makes the actors (``world.add_actor``) and starts their loops;
    ``spec(config)`` is the reference model's initial state, ``step(state, exchange)`` its pure
    step over each exchange as it is answered; ``observe(world)`` looks at the settled world
    through the API (with ``world.probe``) and returns what the eventual invariants read as
    ``ctx.settled``; ``unfinished(spec)`` is true while acknowledged work is not yet done (the
    settle runs on until it is done); ``progress(spec)`` grows with every change of a unit of
    work's status (the settle stops when it stops growing); ``evidence(spec)`` counts the
    acknowledged units of work (a search in which it stayed 0 exercised nothing);
    ``happy_path`` is the verbs of the conformance run.
    """

    name: str
    doc: str
    verbs: tuple[Verb, ...]
    start: Callable[[World], None]
    spec: Callable[[WorldConfig], Any]
    step: Callable[[Any, Exchange], Any]
    invariants: tuple[Invariant, ...]
    observe: Callable[[World], Any]
    unfinished: Callable[[Any], bool]
    progress: Callable[[Any], int]
    evidence: Callable[[Any], int]
    happy_path: tuple[tuple[str, int], ...]
    routes: tuple[Route, ...] = ()
    params: Mapping[str, Any] = attrs.field(factory=_no_params)
    #: How long the settled world runs fairly without progress before it is judged (ms).
    settle_ms: int = 2 * 60_000
    #: Past every staleness window of the platform and every lease of the protocol (ms).
    quiet_ms: int = 61_000
    #: Words for a unit of work in messages (``message``, ``job``).
    unit: str = "message"
    #: The target's KV namespace bindings when the target names none.
    kv_bindings: tuple[str, ...] = ("COMMENTS_KV",)
    #: ``describe(spec, id)``: what the spec expects of unit ``id``, in words for a report
    #: (``None`` when it was never acknowledged); ``None``: reports show no such column.
    describe: Callable[[Any, str], str | None] | None = None
    #: ``workers(config)``: how many do the work in a world of ``config`` (its bots; a design
    #: whose platform does the work, as a push consumer, has one whatever the bots).
    workers: Callable[[WorldConfig], int] = _bots

    @property
    def work_verb(self) -> str | None:
        """The verb that makes work (the chat's ``post``, the jobs' ``enqueue``): the first of
        the happy path, ``None`` without one."""
        return self.happy_path[0][0] if self.happy_path else None

    def judged(
        self, invariants: tuple[Invariant, ...], config: WorldConfig
    ) -> tuple[Invariant, ...]:
        """The ``invariants`` a world of ``config`` judges: all of them, less those about the
        work being done (:attr:`Invariant.needs_worker`) when nobody in it does the work."""
        if self.workers(config) > 0:
            return invariants
        return tuple(i for i in invariants if not i.needs_worker)

    def __attrs_post_init__(self) -> None:
        names = [v.name for v in self.verbs]
        if len(set(names)) != len(names):
            raise ValueError(f"protocol {self.name!r}: two verbs share a name in {names}")
        if "run" not in names:
            raise ValueError(
                f"protocol {self.name!r} has no 'run' verb; add qmodel.protocol.RUN to its verbs"
            )
        for verb, _arg in self.happy_path:
            if verb not in names:
                raise ValueError(
                    f"protocol {self.name!r}: its happy path uses verb {verb!r}, which it does "
                    f"not have (its verbs: {', '.join(names)})"
                )
        ids = [i.id for i in self.invariants]
        if len(set(ids)) != len(ids):
            raise ValueError(f"protocol {self.name!r}: two invariants share an id in {ids}")

    def verb(self, name: str) -> Verb:
        """The verb called ``name``; ``KeyError`` naming the protocol's verbs if none."""
        for v in self.verbs:
            if v.name == name:
                return v
        raise KeyError(
            f"protocol {self.name!r} has no verb {name!r}; its verbs are "
            f"{', '.join(v.name for v in self.verbs)}"
        )

    def invariant(self, id: str) -> Invariant:
        """The invariant ``id`` of this protocol (:class:`~qmodel.check.UnknownInvariant`)."""
        from qmodel.check import select

        return select(self.invariants, (id,), protocol=self.name)[0]


def fold_waiting(state: Any, key: str, step: Callable[[Any, Exchange], Any]) -> Any:
    """``state`` after folding, in order, the exchanges kept aside in ``state.orphans[key]``.

    For a spec's step: a request's effect lands before its answer reaches the client, so an
    answered exchange can concern a unit of work whose creating request is not answered yet (a
    claim of a message whose POST is still on its way back). A spec keeps such exchanges in a
    mapping ``orphans`` (unit id -> exchanges) and, once the creating request is acknowledged,
    calls this to fold them right after it: the one order real time allows.
    """
    waiting = state.orphans.get(key)
    if not waiting:
        return state
    orphans = dict(state.orphans)
    del orphans[key]
    state = attrs.evolve(state, orphans=MappingProxyType(orphans))
    for earlier in waiting:
        state = step(state, earlier)
    return state
