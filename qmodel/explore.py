"""``qmodel explore``: a bounded exhaustive breadth-first search over the driver's own choices.

Every nondeterministic decision of an example is a numbered choice from one source (the verb
and its argument, which task steps, which cached copy a read sees, page sizes, faults), so the
examples within a scope form a tree, and a node is the prefix of choices that leads to it. A
world holds coroutines and cannot be copied, so a node is reached by running its prefix again
from a fresh world: :class:`PathBackend` answers the prefix, then takes the first option of
every new choice and notes the others, so one run replays a prefix once and then walks on as
far as it can, noting every branch it passes. States are compared by
:mod:`qmodel.fingerprint`; a state reached before (by another interleaving) is not explored
again. The other reduction: a step nothing else can observe is taken at once, not interleaved
(an ample set of one, see :meth:`Explorer._eager`).

The search goes in order of verbs, and every ``run`` of the scope is one scheduler step, so
the violation reported has the fewest verbs of any in the scope among the schedules the
reduction keeps (it keeps every behaviour, but a step it takes early that the story did not
need can add one verb). The safety invariants are checked after every verb, as the driver
does; every invariant at every quiescent state (no request, client action or background work
left, only the actors' loops), where the world is settled exactly as an example's end settles
it (the driver checks them all there: a safety invariant may read the settled world too, as
``one-reply`` counts the replies once settled).

A counterexample is recorded with :func:`qmodel.replay.trace_of`, as ``qmodel check`` records
its own, so ``qmodel replay`` runs it again byte for byte and ``--report`` writes the same
report, trace and regression test.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from qmodel.check import Invariant, Violation
from qmodel.driver import VERB_LABEL, Example, InvariantViolation, verb_label
from qmodel.errors import QmodelError
from qmodel.fingerprint import Fingerprinter, Observations, digest
from qmodel.protocol import Protocol
from qmodel.sim.scheduler import Join
from qmodel.world import World, WorldConfig

__all__ = [
    "DEFAULT_PINNED",
    "Explorer",
    "Found",
    "PathBackend",
    "Result",
    "Scope",
    "ScopeError",
    "cited_kv_ops",
]

#: Choices the default scope does not branch on (it takes option 0, the unsurprising one):
#: the client clock's straddle between id and timestamp, how long a generation takes and how
#: it ends. Each multiplies the space and none is needed by the races of the catalog that a
#: strongly consistent store shows; ``--options LABEL=K`` widens any of them.
DEFAULT_PINNED: Mapping[str, int] = {
    "frontend.clock_straddle": 1,
    "bot.generate_ms": 1,
    "bot.generate": 1,
}

#: The verbs a scope may use besides the protocol's work verb (the first of its happy path: the
#: chat's ``post``, the jobs' ``enqueue``; the scope's ``posts`` counts them): another app's
#: bursts, crashes and clock advances (each up to the scope's count), and single scheduler
#: steps. Otherwise the clock moves only where nothing can run (``run`` jumps to the next
#: wake-up), within the horizon.
SCOPE_VERBS = ("burst", "run", "crash", "advance")


#: Task kinds whose answers nobody else reads as they arrive (see :meth:`Explorer._eager`).
_LOCAL_KINDS = ("request", "background")


class ScopeError(QmodelError, ValueError):
    """A scope flag that cannot be explored (the message says which and what to give)."""


@attrs.frozen(kw_only=True)
class Scope:
    """What the search covers: the world's shape and the bounds of an example.

    ``posts`` messages are posted (by any frontend, at any point); ``bursts`` times another app
    floods the chat (each burst of any of the protocol's sizes, landing whole: see
    ``bursts``); ``run`` verbs are single scheduler steps; ``crashes`` bot crashes may happen;
    the clock may jump to a sleeping task's wake-up while it stays within ``horizon_ms`` of the
    start. ``depth`` bounds the verbs of an example (a burst's steps are one), ``max_states``
    the distinct states, ``max_seconds`` the wall time.
    ``options`` caps how many options of a choice label are explored (the first ``K``);
    ``only`` takes one option of a label and no other (its index from 0).
    """

    bots: int = 1
    frontends: int = 1
    posts: int = 2
    #: Bursts of another app's messages (the protocol's ``burst`` verb, every size it offers).
    #: A burst lands whole: once its verb is taken, its requests step to their end before
    #: anything else steps (as the landed posts do), so a burst of 201 messages is one story
    #: step, not 201 interleaved ones. The scope holds every order of bursts among the other
    #: verbs, not the interleavings of a burst's own requests with other requests.
    bursts: int = 0
    crashes: int = 0
    #: Clock moves (the protocol's ``advance`` verb, each of its ticks) while tasks may still
    #: run: a request that takes long, a timeout that fires first. Without them the clock
    #: moves only when nothing can run.
    advances: int = 0
    depth: int = 80
    kv: str = "local"
    horizon_ms: int = 0
    max_states: int = 200_000
    max_seconds: float = 60.0
    dedup: bool = True
    #: The first ``landed`` posts are answered before any other task steps (a message already
    #: stored when the race begins, as a hand-written model starts).
    landed: int = 0
    #: Once the landed posts are answered, every bot polls once (its first request runs to its
    #: answer, one bot after the other) before anything else steps: the race starts from a
    #: state where every bot knows the stored messages, as a hand-written model of a claim
    #: race starts. The KV operations up to there are reported apart (``Found.setup_kv_ops``).
    polled: bool = False
    #: Take steps nothing else can observe at once (see :meth:`Explorer._eager`).
    reduce: bool = True
    options: Mapping[str, int] = attrs.field(factory=lambda: dict(DEFAULT_PINNED))
    #: One option of a label, and no other (a long work time, one clock tick): a scope that
    #: names the one it needs instead of exploring the first ``K``.
    only: Mapping[str, int] = attrs.field(factory=dict)

    def check(self) -> None:
        """Refuse a scope that cannot be explored, saying which flag and what to give."""
        if not 0 <= self.bots <= 4:
            raise ScopeError(f"--bots {self.bots}: give 0 to 4 bots")
        if not 1 <= self.frontends <= 4:
            raise ScopeError(f"--frontends {self.frontends}: give 1 to 4 frontends")
        if self.posts < 0:
            raise ScopeError(f"--posts {self.posts}: give 0 or more posts")
        if not 0 <= self.landed <= self.posts:
            raise ScopeError(f"--landed {self.landed}: give 0 to --posts ({self.posts})")
        if self.polled and (not self.landed or not self.bots):
            raise ScopeError(
                "--polled: the bots poll the landed posts; give --landed 1 or more and --bots 1 "
                "or more"
            )
        if self.bursts < 0:
            raise ScopeError(f"--bursts {self.bursts}: give 0 or more bursts")
        if self.crashes < 0:
            raise ScopeError(f"--crashes {self.crashes}: give 0 or more crashes")
        if self.advances < 0:
            raise ScopeError(f"--advances {self.advances}: give 0 or more clock moves")
        if self.crashes and not self.bots:
            raise ScopeError("--crashes needs a bot to crash: give --bots 1 or more")
        if self.depth < 1:
            raise ScopeError(f"--depth {self.depth}: give at least 1 verb")
        if self.kv not in ("local", "strict"):
            raise ScopeError(f"--kv {self.kv}: give local or strict")
        if self.horizon_ms < 0:
            raise ScopeError(f"--horizon-ms {self.horizon_ms}: give 0 or more milliseconds")
        if self.max_states < 1:
            raise ScopeError(f"--max-states {self.max_states}: give at least 1")
        if self.max_seconds <= 0:
            raise ScopeError(f"--max-seconds {self.max_seconds}: give a positive number")
        for label, k in self.options.items():
            if k < 1:
                raise ScopeError(f"--options {label}={k}: explore at least 1 option")
        for label, i in self.only.items():
            if i < 0:
                raise ScopeError(f"--options {label}=@{i + 1}: options are counted from 1")

    def describe(self) -> str:
        """The scope in one line, for the progress line and reports."""
        return (
            f"{self.frontends} frontends, {self.bots} bots, {self.posts} posts, "
            f"{self.bursts} bursts, {self.crashes} crashes, {self.advances} advances, "
            f"depth {self.depth}, kv {self.kv}, horizon {self.horizon_ms} ms"
        )


@attrs.define
class PathBackend:
    """Answers ``prefix``, then the first allowed option of every new choice, noting the
    other allowed options as ``branches`` (``(position, options)``); ``taken`` is every index
    given, in order (the choices of a run, since one-option choices never reach a backend)."""

    prefix: Sequence[int]
    allowed: Callable[[str, int], Sequence[int]]
    taken: list[int] = attrs.field(factory=list)
    branches: list[tuple[int, tuple[int, ...], int]] = attrs.field(factory=list)
    #: The verb being taken (0-based), noted with each branch.
    verb: int = 0

    def pick(self, label: str, n: int, weights: tuple[int, ...] | None) -> int:
        i = len(self.taken)
        if i < len(self.prefix):
            index = self.prefix[i]
        else:
            options = self.allowed(label, n)
            if len(options) > 1:
                self.branches.append((i, tuple(options[1:]), self.verb))
            index = options[0]
        self.taken.append(index)
        return index


@attrs.frozen
class Found:
    """A counterexample: the world it broke in, the violation, and where it was caught
    (``"verb N"`` or ``"settled"``); ``kv_ops`` counts the KV operations before the settle
    (the story), ``settle_kv_ops`` those of the settle (the fair run every example ends with)."""

    world: World
    violation: Violation
    at: str
    kv_ops: int
    settle_kv_ops: int
    #: With a scope's ``polled``: the KV operations and log lines of the setup (the landed
    #: posts and every bot's first poll), counted in ``kv_ops`` too; ``None`` otherwise.
    setup_kv_ops: int | None = None
    setup_steps: int | None = None


@attrs.frozen
class Result:
    """What a search found: ``verdict`` is ``violation``, ``ok`` (with ``exhaustive``: the
    whole scope was covered) or ``unknown`` (``bound`` names the bound that was hit)."""

    verdict: str
    exhaustive: bool
    states: int
    transitions: int
    executions: int
    levels: int
    seconds: float
    found: Found | None
    bound: str | None


@attrs.define
class _Run:
    example: Example
    backend: PathBackend
    observed: Observations
    fingerprinter: Fingerprinter
    #: The client task of each post, in the order of the posts.
    clients: list[Any] = attrs.field(factory=list)
    #: Whether the posts that land first are answered.
    landed: bool = False
    #: With a scope's ``polled``: the KV operations and log lines when every bot had its first
    #: poll answered (the initial state), ``None`` until then.
    polled: bool = False
    setup: tuple[int, int] | None = None
    #: How many posts land first (the scope's ``landed``).
    landing: int = 0
    #: The task of each burst, in order (each lands whole before anything else steps).
    bursts: list[Any] = attrs.field(factory=list)
    #: The scheduler steps that served a burst: they do not count towards the scope's depth
    #: (a burst is one verb of the story, however many requests it makes).
    burst_steps: int = 0
    #: The protocol's work verb (see :data:`SCOPE_VERBS`).
    work: str = "post"

    def bursting(self) -> list[Any]:
        """The bursts not over yet."""
        return [t for t in self.bursts if not t.finished]

    def has_landed(self) -> bool:
        """Whether the posts that land first are answered (known from the tasks themselves: a
        replayed prefix does not ask the scope's choices, which note it in ``landed``)."""
        first = self.clients[: self.landing]
        return len(first) == self.landing and all(t.finished for t in first)

    def step(self, *, check: bool = True) -> None:
        """Take the next verb, noting the client task a post starts; ``check=False`` skips the
        safety invariants (a replayed prefix, checked when it was first run)."""
        bursting = bool(self.bursting())
        try:
            if check:
                self.example.step()
            else:
                self.example.world.apply(*self.example.draw())
        finally:
            world = self.example.world
            if bursting and world.verbs and world.verbs[-1][0] == "run":
                self.burst_steps += 1
            if self.polled and self.setup is None and self.has_landed() and _all_polled(world):
                # Each run verb is one step, so this is the state right after the last answer.
                self.setup = (world.platform.kv_stats().operations, len(world.log))
        if world.verbs[-1][0] in (self.work, "burst"):
            loops = set(world.tasks.values())
            newest = [
                t for t in world.platform.scheduler.tasks if t not in loops and t.parent is None
            ]
            (self.clients if world.verbs[-1][0] == self.work else self.bursts).append(newest[-1])


class Explorer:
    """The breadth-first search of ``scope`` against fresh targets from ``factory``."""

    def __init__(
        self,
        factory: Callable[[], Any],
        protocol: Protocol,
        scope: Scope,
        checked: Sequence[Invariant],
        *,
        step_limit: int = 10_000,
        progress: Callable[[int, int, int, int, float], None] | None = None,
        clock: Callable[[], float] = time.perf_counter,  # wall-clock-ok: bounds, progress
    ) -> None:
        scope.check()
        self.factory = factory
        self.protocol = protocol
        self.scope = scope
        self.config = WorldConfig(
            protocol=protocol.name,
            bots=scope.bots,
            frontends=scope.frontends,
            kv=scope.kv,
            max_task_steps=step_limit,
        )
        # A world where nobody does the work does not judge the invariants about it.
        self.checked = protocol.judged(tuple(checked), self.config)
        self.progress = progress
        self._clock = clock
        self._run: _Run | None = None
        self._start_ms = 0
        names = {v.name for v in protocol.verbs}
        #: The verb that makes work (a message posted, a job enqueued): the first of the
        #: protocol's happy path; ``posts`` counts it.
        self.work = protocol.work_verb or "post"
        missing = [v for v in (self.work, "run") if v not in names]
        if missing:
            raise ScopeError(
                f"protocol {protocol.name!r} has no {' or '.join(missing)} verb; the explorer "
                "makes work with the first verb of the protocol's happy path and runs single "
                f"steps (its verbs: {', '.join(sorted(names))})"
            )

    # -- the choices a scope allows ------------------------------------------------------------

    def _verb_allowed(self, world: World, name: str) -> bool:
        s = self.scope
        if name == self.work:
            # Posts come first: with the clock still, a post task made now and stepped later is
            # the same as a post made later, so posting after a step adds no behaviour. (With a
            # horizon, a post after the clock moved is not in the scope.)
            return world.counts.get(name, 0) < s.posts and not world.counts.get("run", 0)
        if name == "burst":
            # At any point (not first, as posts): a burst lands whole once taken, so when it
            # is taken says where it falls among the other requests.
            going = self._run is not None and self._run.bursting()
            return world.counts.get("burst", 0) < s.bursts and not going
        if name == "advance":
            return world.counts.get("advance", 0) < s.advances
        if name == "crash":
            # Not while the initial state is being set up.
            setting_up = s.polled and (self._run is None or self._run.setup is None)
            return world.counts.get("crash", 0) < s.crashes and not setting_up
        if name == "run":
            sched = world.platform.scheduler
            if sched.runnable():
                return True
            wake = sched.next_wakeup()
            return wake is not None and wake - self._start_ms <= s.horizon_ms
        return False

    def allowed_verbs(self, example: Example) -> list[int]:
        """Indices into ``example.enabled()`` of the verbs the scope allows now."""
        world = example.world
        return [
            i
            for i, v in enumerate(example.enabled())
            if (v.name in SCOPE_VERBS or v.name == self.work) and self._verb_allowed(world, v.name)
        ]

    def _allowed(self, label: str, n: int) -> Sequence[int]:
        run = self._run
        assert run is not None
        if label == VERB_LABEL:
            return self.allowed_verbs(run.example)
        if label == verb_label(self.work):
            # Frontends in order (post by 0 then 1, never 1 then 0): the two orders only swap
            # which task was spawned first, so one of them stands for both.
            posted = [a for v, a in run.example.world.verbs if v == self.work]
            return range(posted[-1] if posted else 0, min(n, self.scope.frontends))
        if label == verb_label("run"):
            return (0,)  # one scheduler step per verb: levels are steps
        if label == verb_label("crash"):
            return range(min(n, max(self.scope.bots, 1)))
        if label == "step":
            landing = self._bursting(run)
            if landing is None:
                landing = self._landing(run)
            if landing is None:
                landing = self._polling(run)
            if landing is not None:
                return (landing,)
            if self.scope.reduce:
                eager = self._eager(run.example.world)
                if eager is not None:
                    return (eager,)
        one = self.scope.only.get(label)
        if one is not None:
            # The one option named, when the choice has it (else its last).
            return (min(one, n - 1),)
        cap = self.scope.options.get(label)
        return range(n if cap is None else min(n, cap))

    def _landing(self, run: _Run) -> int | None:
        """While the scope's first ``landed`` posts are not answered: the index among the
        runnable tasks of the first one that serves them (nothing else steps), else ``None``."""
        if not self.scope.landed or run.landed:
            return None
        first = run.clients[: self.scope.landed]
        if len(first) < self.scope.landed:
            return None  # still posting
        sched = run.example.world.platform.scheduler
        serving = _serving(sched.runnable(), first)
        if serving is not None:
            return serving
        if all(t.finished for t in first):
            run.landed = True  # they are answered: from now on every task may step
        return None

    def _bursting(self, run: _Run) -> int | None:
        """While a burst is not over: the index among the runnable tasks of the first one that
        serves it (a burst lands whole), else ``None``."""
        going = run.bursting()
        if not going:
            return None
        return _serving(run.example.world.platform.scheduler.runnable(), going)

    def _polling(self, run: _Run) -> int | None:
        """With ``polled``, once the landed posts are answered and until every bot has had its
        first answer: the index among the runnable tasks of the first such bot's (its loop or
        what it started); else ``None``."""
        if not self.scope.polled or run.setup is not None or not run.has_landed():
            return None
        world = run.example.world
        answered = {ex.actor for ex in world.history if ex.status is not None}
        ready = world.platform.scheduler.runnable()
        for bot in world.actors.get("bots", []):
            if bot.name in answered:
                continue
            return _serving(ready, [world.tasks[bot.name]])
        return None

    def _eager(self, world: World) -> int | None:
        """The index among the runnable tasks of one whose next step nothing else can observe
        or disturb, or ``None``.

        Such a step commutes with every other task's step, so taking it first loses no
        behaviour (an ample set of one, as in partial-order reduction):

        * a client task or background work that has not started yet (its first step only
          builds a request and sends it);
        * a Durable Object's storage call (it holds the object's input gate, so no other task
          of the object can run, and nothing outside the object reads its storage);
        * a request (or its background work) taking the answer of a call it made to a Durable
          Object, or waking from a timer (the answer is fixed once given; what runs next is the
          request's own code up to its next platform call).

        A Durable Object task's first step is never eager (it may touch the object's memory),
        nor an actor taking an answer (that is when the exchange enters the history the
        invariants read, in order).
        """
        for i, t in enumerate(world.platform.scheduler.runnable()):
            if t.owner is not None:
                # A storage call holds the object's input gate: no other task of the object
                # can run until it is done, and nothing outside the object reads its storage.
                if t.pending is not None and t.pending.kind == "storage":
                    return i
                continue
            if not t.started:
                return i
            op = t.pending
            if op is not None and op.kind in ("join", "sleep") and t.kind in _LOCAL_KINDS:
                return i
        return None

    # -- one run -------------------------------------------------------------------------------

    def _begin(self, prefix: Sequence[int]) -> _Run:
        backend = PathBackend(prefix, self._allowed)
        example = Example.begin(self.factory(), self.protocol, self.config, backend, self.checked)
        fp = Fingerprinter({})
        observed = Observations(fp.of)
        run = _Run(
            example,
            backend,
            observed,
            fp,
            polled=self.scope.polled,
            landing=self.scope.landed,
            work=self.work,
        )
        self._tokens(run)
        sched = example.world.platform.scheduler
        sched.observe = observed
        # Step records are for reports; a counterexample is replayed with them on.
        sched.record = False
        self._run = run
        return run

    def _tokens(self, run: _Run) -> None:
        world = run.example.world
        p = world.platform
        tokens: dict[int, Any] = {
            id(world): ("@world",),
            id(p): ("@platform",),
            id(p.scheduler): ("@scheduler",),
            id(p.clock): ("@clock",),
            id(p.choices): ("@choices",),
            id(world.target): ("@target",),
            id(world.history): ("@history",),
        }
        for name, store in p.kv.items():
            tokens[id(store)] = ("@kv", name)
        for group in world.actors.values():
            for actor in group:
                tokens[id(actor)] = ("@actor", actor.name)
        run.fingerprinter.tokens = tokens

    def state(self, run: _Run) -> bytes:
        """The digest of the world's state now (see :mod:`qmodel.fingerprint`)."""
        self._tokens(run)
        world = run.example.world
        fp = run.fingerprinter.of
        p = world.platform
        sched = p.scheduler
        live = sched.tasks
        seen = run.observed
        seen.forget([t for t in seen.seen if t.finished])
        # As a set, not in spawn order: two requests that spawned their calls in the other
        # order are in the same place (the order only renumbers the options of a step).
        tasks = list(
            (
                t.name,
                t.kind,
                t.started,
                t.pending.describe() if t.pending is not None else None,
                _answer(t.pending, fp),
                t.deadline_ms,
                # How a task was started matters until it starts; from then on, what it has
                # observed says where it stands.
                None if t.started else fp(t.factory),
                seen.of(t),
            )
            for t in live
        )
        tasks.sort(key=repr)
        inside = run.fingerprinter.inside
        actors = tuple(inside(a) for group in world.actors.values() for a in group)
        target = world.target
        whole = (
            p.clock.now_ms,
            sched.id_counter,
            tuple((name, inside(store)) for name, store in p.kv.items()),
            tuple((name, fp(ns.instances)) for name, ns in p.namespaces.items()),
            tuple(tasks),
            actors,
            inside(target),
            # The spec and the exchanges are frozen values of plain data, whose repr (made
            # by attrs) says everything; cheaper than walking them.
            repr(world.spec),
            repr(tuple(world.history)),
            tuple(sorted(world.in_flight.items(), key=repr)),
            # How many verbs of each budget were spent (runs are the path, not the state).
            tuple(sorted((v, n) for v, n in world.counts.items() if v != "run")),
            world.crashes,
        )
        return digest(whole)

    def _quiescent(self, world: World) -> bool:
        loops = set(world.tasks.values())
        return all(t in loops for t in world.platform.scheduler.tasks)

    # -- the search ----------------------------------------------------------------------------

    def _forced(self, example: Example) -> bool:
        """Whether the next verb has one allowed form only: a single step the scope leaves no
        choice about (no post or crash left to make, one task that may step)."""
        world = example.world
        verbs = self.allowed_verbs(example)
        if len(verbs) != 1 or example.enabled()[verbs[0]].name != "run":
            return False
        ready = world.platform.scheduler.runnable()
        if len(ready) <= 1:
            return True
        assert self._run is not None
        run = self._run
        if any(f(run) is not None for f in (self._bursting, self._landing, self._polling)):
            return True
        return self.scope.reduce and self._eager(world) is not None

    def run(self) -> Result:
        """Search the scope in order of verbs; return the violation with the fewest verbs.

        An item is a prefix of choices and the verbs it replays; its run replays them, then
        goes on as far as it can: it takes the first allowed option of every new choice
        (noting the others as items of their own, from the verb they belong to), registers
        each state where the search branches, and stops at a state seen before (with no more
        verbs), at a violation, at a settled or final state, or at the depth. Steps nothing
        can observe, and steps with no alternative, are taken without registering the state
        between them. Items are taken in order of their verbs, so once a violation is found,
        only items that could still give a shorter one are run.
        """
        started = self._clock()
        s = self.scope
        best: tuple[int, int] | None = None  # (verbs, kv_ops) of the best counterexample
        found: Found | None = None
        seen: dict[bytes, int] = {}
        states = transitions = executions = 0
        heap: list[tuple[int, int, tuple[int, ...], bytes | None]] = []
        serial = 0
        bound: str | None = None
        deepest = 0

        def result(verdict: str) -> Result:
            return Result(
                verdict=verdict,
                exhaustive=verdict == "ok",
                states=states,
                transitions=transitions,
                executions=executions,
                levels=deepest,
                seconds=self._clock() - started,
                found=found,
                bound=bound,
            )

        # The root: the fresh world, checked as the driver checks it before any verb.
        run = self._begin(())
        self._start_ms = run.example.world.platform.clock.now_ms
        executions += 1
        try:
            run.example.check_safety()
        except InvariantViolation as exc:
            found = self._found(run, exc.violation, "start")
            return result("violation")
        root = self.state(run)
        # The example without a verb ends settled too, as the driver's would.
        try:
            run.example.finish()
        except InvariantViolation as exc:
            found = self._found(run, exc.violation, "settled", 0)
            return result("violation")
        seen[root] = 0
        states = 1
        heapq.heappush(heap, (0, serial, (), root))
        while heap:
            base, _, q, node = heapq.heappop(heap)
            if best is not None and base + 1 >= best[0]:
                break
            if node is not None and seen[node] < base:
                continue  # reached again with fewer verbs: that item stands for this one
            if self._clock() - started > s.max_seconds:
                bound = f"--max-seconds {s.max_seconds:g}"
                return result("unknown" if found is None else "violation")
            run = self._begin(q)
            executions += 1
            example = run.example
            world = example.world
            b = run.backend
            done = base
            try:
                # The prefix was checked when it was first run: replay it unchecked.
                for i in range(base):
                    b.verb = i
                    run.step(check=False)
                while True:
                    b.verb = done
                    done += 1
                    run.step()
                    quiet = self._quiescent(world)
                    depth = done - run.burst_steps
                    if depth < s.depth and not quiet and self._forced(example):
                        continue  # a chain of forced steps: nothing to register between
                    transitions += 1
                    deepest = max(deepest, done)
                    key = self.state(run) if s.dedup else None
                    if key is not None:
                        before = seen.get(key)
                        if before is not None and before <= done:
                            break  # explored from there already, with no more verbs
                        # A state reached again with fewer verbs is explored again from here
                        # (its stories are shorter), but counted once.
                        seen[key] = done
                        if before is None:
                            states += 1
                    else:
                        states += 1
                    terminal = not self.allowed_verbs(example)
                    if quiet or terminal:
                        kv_before = world.platform.kv_stats().operations
                        try:
                            example.finish()
                        except InvariantViolation as exc:
                            total = world.platform.kv_stats().operations
                            if best is None or (done, kv_before) < best:
                                best = (done, kv_before)
                                found = Found(
                                    world,
                                    exc.violation,
                                    "settled",
                                    kv_before,
                                    total - kv_before,
                                    *(run.setup or (None, None)),
                                )
                            break
                        if not terminal and depth < s.depth and states < s.max_states:
                            # A settled world cannot go on: its state is run again from there.
                            serial += 1
                            heapq.heappush(heap, (done, serial, tuple(b.taken), key))
                        elif not terminal:
                            bound = self._bound(depth, states)
                        break
                    if terminal:
                        break
                    if depth >= s.depth or states >= s.max_states:
                        bound = self._bound(depth, states)
                        break
                    if self.progress is not None and states % 64 == 0:
                        self.progress(done, states, transitions, len(heap), self._clock() - started)
            except InvariantViolation as exc:
                kv = world.platform.kv_stats().operations
                if best is None or (done, kv) < best:
                    best = (done, kv)
                    found = self._found(run, exc.violation, f"verb {done}")
            # The other options of every new choice: each replayed up to the verb it belongs
            # to, which is then the first verb it takes.
            for pos, options, verb in b.branches:
                for option in options:
                    serial += 1
                    heapq.heappush(heap, (verb, serial, (*b.taken[:pos], option), None))
        if found is not None:
            return result("violation")
        return result("unknown" if bound else "ok")

    def _bound(self, done: int, states: int) -> str:
        s = self.scope
        return f"--depth {s.depth}" if done >= s.depth else f"--max-states {s.max_states}"

    def _found(
        self, run: _Run, violation: Violation, at: str, kv_before: int | None = None
    ) -> Found:
        world = run.example.world
        total = world.platform.kv_stats().operations
        before = total if kv_before is None else kv_before
        return Found(world, violation, at, before, total - before, *(run.setup or (None, None)))


def _serving(ready: Sequence[Any], roots: Sequence[Any]) -> int | None:
    """The index among ``ready`` of the first task that is one of ``roots`` or was started by
    one of them (through any chain of parents), else ``None``."""
    for i, t in enumerate(ready):
        root = t
        while root.parent is not None:
            root = root.parent
        if any(root is r for r in roots):
            return i
    return None


def _all_polled(world: World) -> bool:
    """Whether every bot has had an answer (its first poll)."""
    answered = {ex.actor for ex in world.history if ex.status is not None}
    return all(bot.name in answered for bot in world.actors.get("bots", []))


def cited_kv_ops(world: World, violation: Violation) -> int:
    """The KV operations of the requests the violation cites (for ``single-claim``, the two
    claims): the race itself, without the posts and polls that set it up."""
    cited = set(violation.exchanges)
    return sum(
        ex.kv_reads + ex.kv_writes + ex.kv_lists + ex.kv_deletes
        for ex in world.history
        if ex.seq in cited
    )


def _answer(op: Any, fp: Callable[[Any], Any]) -> Any:
    """What a task waiting on another will be handed: the awaited task's answer once it has
    one (it lives in the finished task, which no longer appears among the live ones)."""
    if not isinstance(op, Join) or op.child is None or not op.child.finished:
        return None
    child = op.child
    return (child.killed, fp(child.result), fp(child.error))
