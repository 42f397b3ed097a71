"""Minimising a shrunk counterexample: delta debugging over its scheduler steps and verbs.

Hypothesis shrinks the stream of choices as integers: a ``run 17`` stays a run of 17 steps when only
3 of them matter, and deleting one step shifts the meaning of every ``step`` choice after it (an
index into the tasks that may run), so a deletion that would leave the story intact looks to it like
another run. Here the run is rewritten as a program of *events*: each scheduler step is one event
that names the task it resumes (by the event that made the task, which survives deleting other
events: :data:`TaskKey`), each other verb (a post, a crash, a clock move) is one event, and the
platform's own choices (which cached copy a read sees, a page size, a consumer's work time) are kept
with the event they were made in and handed out to it again label by label, so a deletion that
changes what one event draws leaves the draws of the others as they were. Where a deletion moved the
timers, the clock jumps to the next wake-up when nothing can step, as a step's would; and, on the
last third of the budget, a task asleep while others can step gets the clock moved to its wake-up by
the protocol's ``advance`` verb, as a search may move it (a move that would lose a story of writes
within one second, so it comes after the passes without it). Two searches start from the shrunk run,
the first with at most half of the budget and the second with the rest, and the shorter result is
kept: in the first an event whose task is gone is skipped; in the second the first task of the same
actor's story that can step stands in for a task that is gone or cannot step (the request a deletion
made another step send; the loop a crash made anew). A task that no other task started (an actor's
loop, a client action) begins a *segment* at each of its steps; the steps of what it started (a
request, what the request calls) belong to that segment: a segment is one request told from its
sending.

Each round first makes the world smaller while that keeps the bug and shortens the run: one bot
fewer (the last only when the bug's invariant is not about the work being done; the world without
one is judged by the invariants that are not), or one frontend fewer, the events of the actor left
out skipped (its polls leave the story and the settle). The passes, repeated while one finds a
shorter run: a sweep deleting verbs other than a step (a post, a burst, a clock move), from the
last; delete two consecutive segments of one task (a request and the step that takes its answer, so
the task starts its next request as it would have started this one), or one; tell one segment first
(a post that lands before the bots' first poll); in the second search, when those find nothing, cut
an actor short (:func:`_cut_short`: it crashes where one of its segments began and picks up again at
one of its next few, after the clock has moved by as much as the part left out took, rounded down to
a tick; what its story still needs when the program ends runs until it waits): a bot that replied to
another message before polling again with its stale copy tells the same race as one that crashed and
polled again a second later; when they find nothing, the run is rewritten afresh from what it did
and they go on; then delete chunks of single events, halving the chunk as in delta debugging
(Zeller's ddmin). An event that cannot run where the deletions left it (its task is gone, or cannot
step) is skipped. A change is kept when the run still breaks the same invariant with the same rule,
costs no more KV operations up to where the bug is caught (through the settle when it is caught
there, so that moving the race into the settle's traffic is no gain) and tells it in no more log
lines, and is shorter in one of them (or in events). A candidate that did not break the bug is not
run again.

Each candidate is run from a fresh world through the driver (:class:`~qmodel.driver.Example`) with
every choice, the verbs' included, answered by :class:`ProgramBackend` and recorded as in any run;
the minimised world is therefore an ordinary run whose trace (:func:`qmodel.replay.trace_of`)
replays byte for byte. While the passes run, every step is its own ``run 1`` verb, so the safety
invariants are checked after every step and the story stops where the bug shows; the result is then
told with its consecutive steps as ``run N`` verbs (when that gives the same story, checked by
running it). The budget is a number of candidate runs (never wall time), and the search takes no
random decision: the same shrunk run gives the same minimised run.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs

from qmodel.check import Invariant, Violation
from qmodel.driver import VERB_LABEL, Example, InvariantViolation, bug_of, verb_label
from qmodel.errors import QmodelError
from qmodel.protocol import Protocol
from qmodel.sim.choices import Choice, RecordedBackend
from qmodel.sim.scheduler import Scheduler, Sleep, Task
from qmodel.world import World, WorldConfig

__all__ = [
    "DEFAULT_RUNS",
    "Event",
    "Minimised",
    "ProgramBackend",
    "events_of",
    "minimise",
    "story_kv_ops",
]

#: Candidate runs a minimisation may spend by default (each is one example from a fresh world,
#: settled when the bug is an eventual one): at most half for the first of its two searches,
#: the rest for the second.
DEFAULT_RUNS = 800

#: A task as an event names it: the event that made it (its ``uid``; ``-1`` for a task made
#: before any event, as an actor's loop), its place among the tasks that event made (for
#: ``-1``: its rank among the live tasks of its name and kind, 0 the oldest), its kind and its
#: name.
TaskKey = tuple[int, int, str, str]


@attrs.frozen
class Event:
    """One step of a program: a verb other than ``run`` with its argument (``task`` is
    ``None``), or one scheduler step of ``task`` (``verb`` is ``run``, ``arg`` 1), or, with
    ``verb`` ``run``, ``arg`` 0 and no task, the steps of ``actor``'s story until it waits
    (an actor cut short: see :func:`_cut_short`; the run records each of them as a step);
    ``choices`` are the platform's choices made while it ran."""

    verb: str
    arg: int
    task: TaskKey | None
    choices: tuple[Choice, ...] = ()
    #: The event's number in the program it was written in: the tasks it makes are named by it.
    uid: int = -1
    #: The name of the task whose story the step belongs to (the actor's loop or the client
    #: action its task descends from; see :func:`_root`); ``""`` for another verb.
    actor: str = ""


@attrs.frozen
class Minimised:
    """The result of :func:`minimise`: the minimised run's world and violation, its events,
    its KV operations up to where the bug was caught (through the settle when caught there)
    and the shrunk run's; ``runs`` candidate runs were spent."""

    world: World
    violation: Violation
    events: tuple[Event, ...]
    kv_ops: int
    shrunk_kv_ops: int
    shrunk_steps: int
    runs: int
    #: The invariants the minimised run was judged by: those given, or the bug's own alone
    #: when another one breaks first in the rewritten run (see :func:`minimise`); a trace of
    #: the minimised run records these, so its replay judges it as it was found.
    checked: tuple[Invariant, ...] = ()


class _Rejected(Exception):
    """A candidate that cannot run as written (a task it names is gone or cannot step, a verb
    it names is not enabled): not a run of the program, so not a counterexample."""


class _Births:
    """Which event made each task of a run, so an event names its task by the event that made
    it and its place among the tasks that event made (:data:`TaskKey`): deleting another event
    does not change that, where a task's name or its rank among the live tasks of its name may
    (a deleted enqueue renumbers the names of every later one's tasks, and the ranks of a
    Durable Object's requests)."""

    def __init__(self, sched: Scheduler) -> None:
        self.sched = sched
        self.made: dict[int, tuple[int, int]] = {}
        self.tasks: dict[tuple[int, int], Task] = {}

    def live(self) -> set[int]:
        return {t.tid for t in self.sched.tasks}

    def made_by(self, uid: int, before: set[int]) -> None:
        """The tasks alive now and not in ``before`` were made by event ``uid``."""
        new = [t for t in self.sched.tasks if t.tid not in before and t.tid not in self.made]
        for place, t in enumerate(new):
            self.made[t.tid] = (uid, place)
            self.tasks[(uid, place)] = t

    def key(self, task: Task) -> TaskKey:
        maker = self.made.get(task.tid)
        if maker is None:
            same = [t for t in self.sched.tasks if t.name == task.name and t.kind == task.kind]
            maker = (-1, same.index(task))
        return maker[0], maker[1], task.kind, task.name

    def task(self, key: TaskKey) -> Task | None:
        """The live task ``key`` names in this run (made where it says, of its kind: its name
        may differ, as an enqueue's attempt numbers do), or ``None``."""
        uid, place, kind, name = key
        if uid == -1:
            same = [t for t in self.sched.tasks if t.name == name and t.kind == kind]
            return same[place] if place < len(same) else None
        t = self.tasks.get((uid, place))
        if t is None or t.kind != kind:
            return None
        return t if t in self.sched.tasks else None


def _root(task: Task) -> Task:
    """The task no other task started that ``task`` descends from: an actor's loop, a client
    action."""
    while task.parent is not None:
        task = task.parent
    return task


def _is_verb(label: str) -> bool:
    return label == VERB_LABEL or label.startswith(VERB_LABEL + ".")


@attrs.define
class ProgramBackend:
    """Answers the choices of a program's run: the verb and argument of the event being run
    (``verb``, ``arg``), the task it steps (``task``), and every other choice from the
    platform's choices of the event being run (``current``), label by label in order; when it
    has none left of a label (or between events: as the world begins, in the settle), from the
    choices no event has taken, in the events' order. Option 0 when none is left, or when the
    recorded one had another number of options.

    An event's own choices come first: a deletion that changes what an earlier event draws (a
    lease that now finds no job draws no work time) leaves the draws of every later event as
    they were, where one queue per label would hand each later draw its predecessor's; and a
    draw an event did not make before (a generation that now runs a step later) still gets
    what the longer run drew there."""

    example: Example | None = None
    verb: str = ""
    arg: int = 0
    task: Task | None = None
    #: Per event, its choices by label.
    own: list[dict[str, deque[Choice]]] = attrs.field(factory=list)
    #: Per label, the events holding a choice of it (once per choice), in order.
    order: dict[str, deque[int]] = attrs.field(factory=dict)
    #: The index of the event being run; ``None`` between events.
    current: int | None = None

    @classmethod
    def of(cls, events: Iterable[Event]) -> ProgramBackend:
        own: list[dict[str, deque[Choice]]] = []
        order: dict[str, deque[int]] = {}
        for i, e in enumerate(events):
            mine: dict[str, deque[Choice]] = {}
            for c in e.choices:
                mine.setdefault(c.label, deque()).append(c)
                order.setdefault(c.label, deque()).append(i)
            own.append(mine)
        return cls(own=own, order=order)

    def _queue(self, label: str) -> deque[Choice] | None:
        if self.current is not None and self.current >= 0:
            mine = self.own[self.current].get(label)
            if mine:
                return mine
        holders = self.order.get(label)
        while holders and not self.own[holders[0]].get(label):
            holders.popleft()
        return self.own[holders[0]][label] if holders else None

    def pick(self, label: str, n: int, weights: tuple[int, ...] | None) -> int:
        if label == VERB_LABEL:
            assert self.example is not None
            names = [v.name for v in self.example.enabled()]
            if self.verb not in names:
                raise _Rejected(f"verb {self.verb} is not enabled")
            return names.index(self.verb)
        if _is_verb(label):
            assert self.example is not None
            args = self.example.protocol.verb(self.verb).args
            if self.arg not in args:
                raise _Rejected(f"verb {self.verb} has no argument {self.arg}")
            return args.index(self.arg)
        if label == "step":
            assert self.example is not None
            ready = self.example.world.platform.scheduler.runnable()
            if self.task is None or self.task not in ready:
                raise _Rejected("the task to step cannot step now")
            return ready.index(self.task)
        queue = self._queue(label)
        if queue:
            c = queue.popleft()
            if c.n == n:
                return c.index
        return 0


@attrs.frozen
class _Run:
    events: tuple[Event, ...]
    world: World
    violation: Violation
    #: KV operations up to where the bug was caught (through the settle if caught there).
    kv_ops: int
    #: KV operations before the settle.
    before_settle: int
    #: Per event, the *segment* it belongs to: a step of a task that no other task started
    #: (an actor's loop, a client action) begins a segment of that task, and the steps of the
    #: tasks it started (its requests, what they call) belong to it, until its next step. A
    #: segment is a request told from its sending: a unit of the story.
    segments: tuple[int, ...]
    #: Per event, the task whose segment it is (its id in the run; ``-1`` for another verb).
    roots: tuple[int, ...]
    #: Per event, the clock (ms) as it ran.
    times: tuple[int, ...]


def story_kv_ops(world: World) -> int:
    """The KV operations of a world so far: of a failed example, those up to where its bug was
    caught (through the settle when it was caught there)."""
    return world.platform.kv_stats().operations


def events_of(
    world: World,
    factory: Callable[[], Any],
    protocol: Protocol,
    checked: Sequence[Invariant],
) -> tuple[list[Event], int, bool]:
    """The program of events of ``world``'s run, its KV operations before the settle, and
    whether it broke before the settle.

    The run is replayed from its recorded choices, a ``run N`` verb as ``N`` single steps
    (the same steps: a run of ``N`` is ``N`` runs of one), so each step's task is known as it
    starts: the first step the scheduler records in it (a request the step starts may run its
    first part inside it, recorded after it).
    """
    log = [c for c in world.platform.choices.log if not _is_verb(c.label)]
    example = Example.begin(factory(), protocol, world.config, RecordedBackend(log), checked)
    w = example.world
    sched = w.platform.scheduler
    choices = w.platform.choices
    events: list[Event] = []
    births = _Births(sched)
    try:
        example.check_safety()
        for verb, arg in world.verbs:
            if verb != "run":
                first, before = len(choices.log), births.live()
                w.apply(verb, arg)
                births.made_by(len(events), before)
                events.append(Event(verb, arg, None, _own(choices.log[first:]), len(events)))
                example.check_safety()
                continue
            for _ in range(arg):
                alive = {t.tid: t for t in sched.tasks}
                keys = {tid: births.key(t) for tid, t in alive.items()}
                mark, first = len(sched.trace), len(choices.log)
                w.run(1)
                if len(sched.trace) > mark:
                    tid = sched.trace[mark].tid
                    key = keys[tid]
                    births.made_by(len(events), set(alive))
                    events.append(
                        Event(
                            "run",
                            1,
                            key,
                            _own(choices.log[first:]),
                            len(events),
                            _root(alive[tid]).name,
                        )
                    )
            w.verbs.append((verb, arg))
            w.counts[verb] = w.counts.get(verb, 0) + 1
            example.check_safety()
    except InvariantViolation:
        return events, story_kv_ops(w), True
    return events, story_kv_ops(w), False


def _own(made: Sequence[Choice]) -> tuple[Choice, ...]:
    """The platform's choices among ``made`` (not a verb's, not which task steps)."""
    return tuple(c for c in made if not _is_verb(c.label) and c.label != "step")


class _Program:
    def __init__(
        self,
        factory: Callable[[], Any],
        protocol: Protocol,
        config: WorldConfig,
        checked: Sequence[Invariant],
        bug: tuple[str, str | None],
    ) -> None:
        self.factory = factory
        self.protocol = protocol
        self.config = config
        self.checked = tuple(checked)
        self.bug = bug
        self.runs = 0
        #: Whether a task asleep where the program steps it gets the clock moved first.
        self.nudge = False
        #: Whether a step whose task is gone, or cannot step, steps another task of the same
        #: actor's story that can (see :func:`minimise`).
        self.kin = False
        self._crashable: tuple[WorldConfig, dict[str, int]] | None = None
        #: The candidates run so far that did not break the bug, with what judged them: one
        #: asked again (a pass in a later round, the same cut in the next phase) is not run.
        self._failed: set[tuple[Any, ...]] = set()

    def crashable(self) -> dict[str, int]:
        """The actors the protocol's ``crash`` verb can crash in this world, each with the
        argument that crashes it (found by crashing each in a fresh world: the crashed actor is
        replaced in its group by its restarted self)."""
        if self._crashable is not None and self._crashable[0] == self.config:
            return self._crashable[1]
        out: dict[str, int] = {}
        verb = _verb(self.protocol, "crash")
        if verb is not None:
            example = Example.begin(
                self.factory(), self.protocol, self.config, ProgramBackend(), ()
            )
            world = example.world
            for arg in verb.args:
                if not verb.enabled(world):
                    break
                before = {name: [id(a) for a in group] for name, group in world.actors.items()}
                verb.apply(world, arg)
                for name, group in world.actors.items():
                    for old, actor in zip(before.get(name, []), group, strict=False):
                        if old != id(actor):
                            out.setdefault(actor.name, arg)
        self._crashable = (self.config, out)
        return out

    def run(self, events: Sequence[Event]) -> _Run | None:
        """Run ``events`` from a fresh world; the run when it breaks the bug, else ``None``."""
        key = (tuple(events), self.config, self.checked, self.nudge, self.kin)
        if key in self._failed:
            return None
        got = self._run(events)
        if got is None:
            self._failed.add(key)
        return got

    def _run(self, events: Sequence[Event]) -> _Run | None:
        self.runs += 1
        backend = ProgramBackend.of(events)
        example = Example.begin(self.factory(), self.protocol, self.config, backend, self.checked)
        drained = 0
        backend.example = example
        world = example.world
        sched = world.platform.scheduler
        done: list[Event] = []
        segments: list[int] = []
        roots: list[int] = []
        times: list[int] = []
        current: dict[int, int] = {}
        started: dict[int, int] = {}
        violation: Violation | None = None
        births = _Births(sched)
        try:
            example.check_safety()
            todo = deque(enumerate(events))
            spare = max((e.uid for e in events), default=-1) + 1
            nudged: set[int] = set()
            while todo:
                i, ev = todo.popleft()
                backend.verb, backend.arg, backend.task = ev.verb, ev.arg, None
                backend.current = i
                mark = len(sched.trace)
                if ev.verb == "run" and ev.task is None:
                    # The actor's story runs until it waits: one step of its first task that
                    # can, then this event again (see _cut_short).
                    kin = next((t for t in sched.runnable() if _root(t).name == ev.actor), None)
                    if kin is not None and drained < _MAX_DRAIN:
                        drained += 1
                        step = Event("run", 1, births.key(kin), (), spare, ev.actor)
                        spare += 1
                        todo.extendleft([(i, ev), (-1, step)])
                    continue
                if ev.task is not None:
                    backend.task = births.task(ev.task)
                    ready = sched.runnable()
                    if self.kin and ev.actor and backend.task not in ready:
                        # The first task of the same actor's story that can step stands in
                        # (a deletion made the request another step sends, or a crash made
                        # the loop anew); the program then names that task.
                        kin = next((t for t in ready if _root(t).name == ev.actor), None)
                        if kin is not None:
                            backend.task = kin
                            ev = attrs.evolve(ev, task=births.key(kin))
                    if backend.task is not None and not ready:
                        # Nothing can step: the clock jumps to the next wake-up, as a step's
                        # would; another task may wake first (a deletion moved the timers).
                        while sched.advance_to_next_wakeup() and not sched.runnable():
                            pass
                        ready = sched.runnable()
                    pending = backend.task.pending if backend.task is not None else None
                    if (
                        self.nudge
                        and ready
                        and backend.task not in ready
                        and isinstance(pending, Sleep)
                    ):
                        # Asleep while others can step (a deletion moved its timers): the
                        # clock moves to its wake-up first, by the protocol's advance verb
                        # (as a search may move it), then the event again.
                        ticks = _ticks(pending.until_ms - sched.clock.now_ms, self.protocol)
                        if (
                            ticks
                            and i not in nudged
                            and "advance" in {v.name for v in example.enabled()}
                        ):
                            nudged.add(i)
                            extra = [
                                (-1, Event("advance", ms, None, (), spare + k))
                                for k, ms in enumerate(ticks)
                            ]
                            spare += len(ticks)
                            todo.extendleft([(i, ev), *reversed(extra)])
                            continue
                    if backend.task is None or (ready and backend.task not in ready):
                        # What the deletions left of a task cannot step here: the event is
                        # skipped (the run records what it did, not what was asked).
                        continue
                elif ev.verb not in {v.name for v in example.enabled()}:
                    continue
                done.append(ev)
                if backend.task is None:
                    segments.append(len(done))
                    roots.append(-1)
                else:
                    root = _root(backend.task)
                    if root is backend.task or root.tid not in current:
                        # A client action's first step continues the verb that started it.
                        current[root.tid] = started.pop(root.tid, len(done))
                    segments.append(current[root.tid])
                    roots.append(root.tid)
                before = {t.tid for t in sched.tasks}
                times.append(sched.clock.now_ms)
                try:
                    example.step()
                finally:
                    births.made_by(ev.uid, before)
                    if backend.task is None:
                        for t in sched.tasks:
                            if t.tid not in before and t.parent is None:
                                started[t.tid] = segments[-1]
                                roots[-1] = t.tid
                    if world.verbs[-1:] != [(ev.verb, ev.arg)]:
                        raise _Rejected("another verb was applied")
                    if ev.task is not None and (
                        len(sched.trace) <= mark or sched.trace[mark].tid != backend.task.tid
                    ):
                        raise _Rejected("another task stepped")
        except InvariantViolation as exc:
            violation = exc.violation
        except (_Rejected, QmodelError):
            # Not a run of the program (or one qmodel cannot judge: an actor died): no candidate.
            return None
        before = story_kv_ops(world)
        # The settle draws from the choices no event took.
        backend.current = None
        if violation is None:
            try:
                example.finish()
            except InvariantViolation as exc:
                violation = exc.violation
            except QmodelError:
                return None
        if violation is None or bug_of(violation) != self.bug:
            return None
        # Caught in the settle, the settle's traffic is part of the story: a deletion that only
        # moves the race into the settle is no shorter.
        return _Run(
            tuple(done),
            world,
            violation,
            story_kv_ops(world),
            before,
            tuple(segments),
            tuple(roots),
            tuple(times),
        )


def _verb(protocol: Protocol, name: str) -> Any:
    """The protocol's verb ``name``, or ``None``."""
    return next((v for v in protocol.verbs if v.name == name), None)


def _clock_ticks(protocol: Protocol) -> tuple[int, ...]:
    """The moves (ms) of the protocol's ``advance`` verb; none without one."""
    verb = _verb(protocol, "advance")
    return tuple(verb.args) if verb is not None else ()


def _ticks(gap: int, protocol: Protocol) -> list[int] | None:
    """Clock moves of the protocol's advance verb that pass ``gap`` ms (the fewest, largest
    first; at most 6), or ``None``."""
    args = sorted(_clock_ticks(protocol), reverse=True)
    if gap <= 0 or not args:
        return None
    out: list[int] = []
    for t in args:
        while gap >= t:
            out.append(t)
            gap -= t
    if gap > 0:
        out.append(min(args))
    return out if len(out) <= 6 else None


def _better(got: _Run | None, than: _Run) -> bool:
    """Whether ``got`` tells the bug in less: no more KV operations and no more log lines (a
    run that saves an operation by moving the race into the settle, whose polls the story then
    tells, is no shorter), and fewer of one of them, or else fewer events."""
    if got is None:
        return False
    lines, before = len(got.world.log), len(than.world.log)
    if got.kv_ops > than.kv_ops or lines > before:
        return False
    return (got.kv_ops, got.before_settle, lines, len(got.events)) < (
        than.kv_ops,
        than.before_settle,
        before,
        len(than.events),
    )


def _without_segments(program: _Program, best: _Run, runs: int) -> _Run | None:
    """The first better run left by deleting whole segments of one task: two consecutive ones
    (a request and the step that takes its answer: the task then starts its next segment as it
    would have started that one), else one; ``None`` when no deletion is better."""
    order: dict[int, list[int]] = {}
    for seg, root in zip(best.segments, best.roots, strict=True):
        mine = order.setdefault(root, [])
        if not mine or mine[-1] != seg:
            mine.append(seg)
    units: list[set[int]] = []
    for root, segs in order.items():
        if root == -1:
            continue
        units += [{a, b} for a, b in zip(segs, segs[1:], strict=False)]
    units += [{seg} for root, segs in order.items() for seg in segs]
    # Earlier parts of the story first: what precedes the race is what a story can lose.
    units.sort(key=min)
    paired = list(zip(best.events, best.segments, strict=True))
    for unit in units:
        if program.runs >= runs:
            return None
        got = program.run([e for e, seg in paired if seg not in unit])
        if _better(got, best):
            return got
    # A segment told first: a request sent before the others may show the bug before the
    # others' traffic (a post that lands before the bots' first poll).
    for seg in sorted({s for s, r in zip(best.segments, best.roots, strict=True)}):
        if program.runs >= runs:
            return None
        first = [e for e, s in paired if s == seg]
        got = program.run(first + [e for e, s in paired if s != seg])
        if _better(got, best):
            return got
    return None


def _without_verbs(program: _Program, best: _Run, runs: int) -> _Run | None:
    """One sweep deleting verbs other than a step (a post, a burst, a clock move, a crash),
    from the last to the first, each deletion kept when the run is better; ``None`` when none
    was. A post left out takes its request, and all the settle does for its message, out of
    the story: few candidates (a run has few such verbs) for what single events reach only
    late. From the last: the sweep goes on from where a deletion was kept rather than starting
    again, and a later post gone leaves the earlier ones' story as it was."""
    found = None
    i = len(best.events) - 1
    while i >= 0 and program.runs < runs:
        event = best.events[i] if i < len(best.events) else None
        if event is not None and event.task is None:
            got = program.run(best.events[:i] + best.events[i + 1 :])
            if _better(got, best):
                assert got is not None
                best = found = got
        i -= 1
    return found


def _cut_short(program: _Program, best: _Run, runs: int) -> _Run | None:
    """The first better run in which an actor that the ``crash`` verb can crash is cut short:
    it crashes where one of its segments began, what it did from there up to one of its next
    few segments is left out, the clock moves on before that segment (by the largest tick
    within the time the left-out part took, or not at all), and whatever its story still
    needs once the program has ended runs until it waits. A bot that cached what it read,
    replied to another message and then polled again with its stale copy tells the same race
    as one that crashed after reading and polled again a second later. Cut points in the order
    of the story; ``None`` when no cut is better."""
    crashable = program.crashable()
    if not crashable:
        return None
    ticks = sorted(_clock_ticks(program.protocol))
    spare = max((e.uid for e in best.events), default=-1) + 1
    events = best.events
    starts: dict[str, list[int]] = {}
    for i, (e, seg) in enumerate(zip(events, best.segments, strict=True)):
        if e.task is not None and seg == i + 1 and e.actor in crashable:
            starts.setdefault(e.actor, []).append(i)
    cuts = sorted(
        (i, j, actor)
        for actor, mine in starts.items()
        for k, i in enumerate(mine)
        for j in mine[k + 1 : k + 1 + _CUT_REACH]
    )
    for i, j, actor in cuts:
        between = [e for e in events[i:j] if e.actor != actor]
        crash = Event("crash", crashable[actor], None, (), spare)
        rest = Event("run", 0, None, (), spare + 1, actor)
        took = best.times[j] - best.times[i]
        within = [t for t in ticks if t <= took]
        for lead in ((), within[-1:]):
            if program.runs >= runs:
                return None
            moves = [Event("advance", ms, None, (), spare + 2) for ms in lead]
            got = program.run([*events[:i], crash, *between, *moves, *events[j:], rest])
            if _better(got, best):
                return got
            if not within:
                break
    return None


def _fewer_actors(program: _Program, best: _Run, runs: int) -> _Run:
    """The same events in a world with one bot fewer, or one frontend fewer, as long as the
    bug still breaks and the run is better: an actor the story does not need adds its polls to
    the story and to the settle. The events of the actor left out are skipped (its tasks are
    never made); its posts fall to the frontends left (a post names its frontend modulo their
    number). The last bot goes only when the bug's invariant does not need one: a world where
    nobody does the work breaks every invariant about the work being done, whatever the design,
    so such a world judges the others only (:meth:`qmodel.protocol.Protocol.judged`). The world
    the run keeps, and the invariants that judged it, are recorded in its trace, so it replays
    alike."""
    own = program.bug[0]
    while program.runs < runs:
        config, checked = program.config, program.checked
        smaller = []
        if config.bots > 1:
            smaller.append(attrs.evolve(config, bots=config.bots - 1))
        elif config.bots == 1:
            fewer = attrs.evolve(config, bots=0)
            if own in {i.id for i in program.protocol.judged(checked, fewer)}:
                smaller.append(fewer)
        if config.frontends > 1:
            smaller.append(attrs.evolve(config, frontends=config.frontends - 1))
        for candidate in smaller:
            if program.runs >= runs:
                break
            program.config = candidate
            program.checked = program.protocol.judged(checked, candidate)
            got = program.run(best.events)
            if _better(got, best):
                assert got is not None
                best = got
                break
            program.config, program.checked = config, checked
        else:
            return best
    return best


def _ddmin(program: _Program, best: _Run, runs: int) -> _Run:
    """Delete chunks of events, halving the chunk when none can go (ddmin's complement
    steps), within the budget of runs."""
    size = max(1, len(best.events) // 2)
    while program.runs < runs:
        progressed = False
        start = 0
        while start < len(best.events) and program.runs < runs:
            current = best.events
            got = program.run(current[:start] + current[start + size :])
            if got is not None and _better(got, best):
                best, progressed = got, True
            else:
                start += size
        if not progressed:
            if size == 1:
                break
            size = max(1, size // 2)
        else:
            size = min(size, max(1, len(best.events) // 2))
    return best


#: The largest argument of the ``run`` verb (the steps one verb may take).
_MAX_RUN = 40

#: The most steps an actor cut short takes after its restart until it waits (see _cut_short).
_MAX_DRAIN = 200
#: How many of an actor's next segments a cut may reach (see _cut_short).
_CUT_REACH = 4


def _compacted(program: _Program, best: _Run) -> World | None:
    """The minimised run told with its consecutive steps as one ``run N`` verb each (up to
    :data:`_MAX_RUN`), as Hypothesis's runs are told, the last verb apart; ``None`` when that
    does not give the same story (then the run of single steps stands).

    A run of ``N`` takes the same steps as ``N`` runs of one; only the safety invariants are
    checked less often, and none broke before the last verb.
    """
    world = best.world
    verbs = list(world.verbs)
    if len(verbs) < 3:
        return None
    # The choices of each verb: a verb's choices start at its ``verb`` choice, or at its
    # argument's when it was the only verb enabled.
    chunks: list[list[Choice]] = []
    for c in world.platform.choices.log:
        starts = c.label == VERB_LABEL or (
            _is_verb(c.label) and not (chunks and chunks[-1][-1].label == VERB_LABEL)
        )
        if starts or not chunks:
            chunks.append([])
        chunks[-1].append(c)
    if len(chunks) != len(verbs) or any(
        next((c for c in chunk if c.label != VERB_LABEL), None) is None for chunk in chunks
    ):
        return None
    out: list[Choice] = []
    told: list[tuple[str, int]] = []
    group: list[int] = []

    def flush() -> None:
        if not group:
            return
        head = chunks[group[0]]
        if head[0].label == VERB_LABEL:
            out.append(head[0])
        out.append(Choice(verb_label("run"), _MAX_RUN, len(group) - 1))
        for i in group:
            out.extend(c for c in chunks[i] if not _is_verb(c.label))
        told.append(("run", len(group)))
        group.clear()

    for i, verb in enumerate(verbs):
        if verb == ("run", 1) and i < len(verbs) - 1 and len(group) < _MAX_RUN:
            group.append(i)
            continue
        flush()
        if verb == ("run", 1) and i < len(verbs) - 1:
            group.append(i)
            continue
        out.extend(chunks[i])
        told.append(verb)
    flush()
    if len(told) == len(verbs):
        return None
    example = Example.begin(
        program.factory(), program.protocol, program.config, RecordedBackend(out), program.checked
    )
    again = example.world
    program.runs += 1
    try:
        example.check_safety()
        for _ in told:
            example.step()
        example.finish()
    except InvariantViolation as exc:
        same = (
            exc.violation == best.violation
            and again.log == world.log
            and story_kv_ops(again) == story_kv_ops(world)
        )
        return again if same and again.verbs == told else None
    except QmodelError:
        return None
    return None


def _rounds(program: _Program, best: _Run, runs: int) -> _Run:
    """The passes, round after round, until a round finds nothing or ``runs`` are spent."""
    factory, protocol = program.factory, program.protocol
    rewritten: set[tuple[Event, ...]] = set()
    while program.runs < runs:
        # A smaller world first, again after every round: once the posts of a frontend are
        # gone, the frontend may go too.
        best = _fewer_actors(program, best, runs)
        while program.runs < runs:
            # A sweep over the verbs, then whole requests while one goes; again while either
            # pass found something (a request gone may free a verb, and the other way round).
            swept = _without_verbs(program, best, runs)
            best = swept or best
            found = None
            while program.runs < runs:
                one = _without_segments(program, best, runs)
                if one is None:
                    break
                best = found = one
            if swept is None and found is None:
                cut = _cut_short(program, best, runs) if program.kin else None
                if cut is None:
                    break
                best = cut
        # The run rewritten again from what it did: a kept deletion leaves events whose
        # platform choices were made for the longer run, and steps that were skipped.
        if program.runs < runs and best.events not in rewritten:
            rewritten.add(best.events)
            fresh = program.run(events_of(best.world, factory, protocol, program.checked)[0])
            if fresh is not None and fresh.events != best.events and not _better(best, fresh):
                best = fresh
                continue
        # What single events can still lose; a deletion there may free a segment again.
        fine = _ddmin(program, best, runs)
        if fine is best:
            break
        best = fine
    return best


def _search(program: _Program, best: _Run, runs: int) -> _Run:
    """The passes on ``program`` until it has spent ``runs``: first the steps as the program
    names them; then, with what is left (at least a third), a task asleep where the program
    steps it also gets the clock moved to its wake-up (see :meth:`_Program.run`): that finds
    stories of timed polls, and loses others (a write refused for coming within a second of
    another is no longer refused)."""
    start = program.runs
    best = _rounds(program, best, start + max(0, runs - start) * 2 // 3)
    program.nudge = True
    return _rounds(program, best, runs)


def minimise(
    world: World,
    violation: Violation,
    factory: Callable[[], Any],
    checked: Sequence[Invariant],
    *,
    runs: int = DEFAULT_RUNS,
) -> Minimised | None:
    """Minimise the failing run of ``world`` (a fresh target from ``factory`` per candidate;
    the invariants ``checked`` as the search checked them) within ``runs`` candidate runs.

    Gives ``None`` when the run cannot be rewritten as a program that breaks the same bug
    again (a target that is not deterministic); else the shortest run found, which may be the
    shrunk run itself.
    """
    protocol = world.protocol
    events, _, _ = events_of(world, factory, protocol, checked)
    judged = tuple(checked)
    program = _Program(factory, protocol, world.config, judged, bug_of(violation))
    best = program.run(events)
    if best is None:
        # The search checks after each verb, the program after each step: another invariant
        # may break first at a step inside a verb (a 5xx before the double claim it leads to).
        # The bug's own invariant alone then judges the program.
        judged = tuple(i for i in checked if i.id == violation.invariant)
        program = _Program(factory, protocol, world.config, judged, bug_of(violation))
        best = program.run(events)
    if best is None:
        return None
    # One run is kept for telling the result with runs of several steps (see _compacted).
    total, runs = runs, max(1, runs - 1)
    # Two searches from the shrunk run, each on its own program, the shorter result kept: the
    # first names tasks exactly (a step whose task is gone is skipped), with at most half the
    # budget; the second, with the rest, lets another task of the same actor's story stand in
    # for one that is gone or cannot step. Each finds stories the other loses: standing in
    # takes a deletion through where a request is now sent from another step (a job enqueued
    # once fewer), and also keeps candidates that lead the search elsewhere.
    exact = program
    best = _search(exact, best, max(1, runs // 2))
    kin = _Program(factory, protocol, world.config, judged, bug_of(violation))
    kin.kin = True
    other = kin.run(events) if exact.runs < runs else None
    if other is not None:
        other = _search(kin, other, runs - exact.runs)
        if _better(other, best):
            program, best = kin, other
    told = _compacted(program, best) if exact.runs + kin.runs < total else None
    return Minimised(
        world=best.world if told is None else told,
        violation=best.violation,
        events=best.events,
        kv_ops=best.kv_ops,
        # A failed example stops where its bug is caught (settled only if caught there).
        shrunk_kv_ops=story_kv_ops(world),
        shrunk_steps=len(world.log),
        runs=exact.runs + kin.runs,
        checked=program.checked,
    )
