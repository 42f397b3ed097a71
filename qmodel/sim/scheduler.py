"""The scheduler: every task is a coroutine, every platform call a scheduling point.

A target's KV binding, a Durable Object's storage, ``sleep`` and outgoing HTTP calls are all
``async``: each call *suspends* the task and hands an :class:`Op` to the scheduler. A *step*
resumes one task: it performs the task's pending operation now (a KV read sees the store as it
is at this step) and runs the task's code up to its next suspension. Code between two awaits is
atomic, exactly as in a Worker isolate ([W-HOW] in ``docs/reference/workers-kv-semantics.md`` §6:
"other requests may (or may not) be processed during awaiting any async tasks").

Which runnable task steps next is a choice (label ``step``; options are the runnable tasks in
spawn order), so schedules are recorded, replayed and shrunk like any other decision. Time moves
only through :meth:`Scheduler.advance` (or :meth:`Scheduler.advance_to_next_wakeup` when every
task sleeps); steps take no virtual time.

Killing a task (:meth:`Scheduler.kill`) stops it at its suspension point: writes it already
performed stay, nothing after runs (§6, "Partial writes when a request is killed"). A pending
write may be applied or not, as the caller decides.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Generator
from types import CoroutineType
from typing import Any, NamedTuple

import attrs

from qmodel.errors import QmodelError, StepLimitExceeded
from qmodel.sim.choices import ChoiceSource
from qmodel.sim.clock import Clock

__all__ = [
    "Call",
    "Join",
    "Op",
    "Scheduler",
    "SchedulerStats",
    "Sleep",
    "Step",
    "Task",
    "TaskCancelled",
    "UncaughtExit",
    "current_choices",
    "current_task",
    "date_now",
    "give_up",
    "sleep",
    "suspend",
    "unique_suffix",
]


#: The scheduler whose task is running right now (one thread runs a world at a time; steps of
#: different worlds never nest except through a world's own eager starts, which restore it).
_CURRENT: list[Scheduler | None] = [None]


#: The task whose code is running right now (see :func:`current_task`).
_TASK: list[Task | None] = [None]


#: Steps completed by every scheduler in this process, and whether one is running now: a
#: watchdog thread reads them to tell a target stuck inside one step.
_PROGRESS = [0, False]


#: Set by :func:`halt`: every step refuses to run from then on, until :func:`unhalt`.
_HALT: list[str | None] = [None]


class Halted(KeyboardInterrupt):
    """Raised by every step after :func:`halt`: the run was stopped from outside (a watchdog
    found a target stuck inside one step). An interrupt, so that nothing (a machine's teardown
    settling the world, Hypothesis shrinking) steps the stuck target again."""


def halt(reason: str) -> None:
    """Stop every scheduler in this process: each later step raises :class:`Halted`."""
    _HALT[0] = reason


def halted() -> str | None:
    """Why the schedulers were halted (see :func:`halt`), or ``None`` while they may step.
    An interrupt seen while halted comes from outside the target and must propagate."""
    return _HALT[0]


def unhalt() -> None:
    """Let schedulers step again (a new run begins)."""
    _HALT[0] = None


def progress() -> int:
    """How many steps every scheduler in this process has completed."""
    return _PROGRESS[0]


def in_step() -> bool:
    """Whether a step is running right now."""
    return bool(_PROGRESS[1])


def _current(what: str) -> Scheduler:
    sched = _CURRENT[0]
    if sched is None:
        raise RuntimeError(f"{what} is only available inside a task of a simulated world")
    return sched


def current_task() -> Task | None:
    """The task whose code is running now (``None`` outside any step). A request's task
    carries its invocation record (``task.invocation``)."""
    return _TASK[0]


def give_up(reason: str) -> None:
    """Stop the running task as the step limit would, as soon as it suspends: its target found
    it can never finish (``reason`` says why; the task's error is a
    :class:`~qmodel.errors.StepLimitExceeded` with it)."""
    task = _TASK[0]
    if task is None:
        raise RuntimeError("give_up() is only available inside a task of a simulated world")
    task.stuck = reason


def current_choices() -> ChoiceSource:
    """The choice source of the world whose task is running (for a target that draws its own
    choices, such as the Node lane's seed for a module instance)."""
    return _current("current_choices()").choices


def date_now() -> int:
    """``Date.now()`` for code running in a simulated task: the virtual clock, in ms."""
    return _current("date_now()").clock.now_ms


def unique_suffix() -> str:
    """A short string unique within the world (for generated message ids), from a counter, so
    runs stay deterministic without spending choices on randomness nobody branches on."""
    sched = _current("unique_suffix()")
    sched.id_counter += 1
    return format(sched.id_counter, "x").rjust(6, "0")


class TaskCancelled(Exception):
    """Raised into a waiter whose awaited task was killed (a request that never answered)."""


class UncaughtExit(RuntimeError):
    """A task's own code raised ``SystemExit`` or ``KeyboardInterrupt`` (``sys.exit()`` in a
    worker): a failure of that task like any uncaught exception, never an exit of qmodel.

    ``original`` is the exception raised."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(f"{type(original).__name__}: {original}")
        self.original = original


#: What a task's code raises that is not an ``Exception`` but is still the task's own failure.
#: (GeneratorExit is how a killed task's coroutine is closed; it is never caught here.)
TASK_EXITS = (SystemExit, KeyboardInterrupt)


class Op:
    """A pending platform operation. Subclasses say when it is ready and what it does."""

    __slots__ = ()

    #: Ops of kind ``storage`` hold a Durable Object's input gate while outstanding; ops of
    #: kind ``kv`` are always ready and need no :meth:`issue` (the scheduler does not ask them).
    kind: str = "op"

    def issue(self, sched: Scheduler, task: Task) -> None:
        """Called once, when ``task`` suspends on this op."""

    def ready(self, sched: Scheduler) -> bool:
        """Whether a step may perform this op now."""
        return True

    def perform(self, sched: Scheduler, task: Task) -> Any:
        """Do the operation; the return value is sent into the task, an exception thrown."""
        return None

    def describe(self) -> str:
        return type(self).__name__

    def __await__(self) -> Generator[Op, Any, Any]:
        """``await op`` suspends the current task on it and gives its result."""
        return (yield self)


def suspend(op: Op) -> Op:
    """Return an awaitable that suspends the current task on ``op`` and yields its result (an
    op is its own awaitable; this names the intent at call sites)."""
    return op


def sleep(ms: int) -> Sleep:
    """``await sleep(ms)``: let ``ms`` milliseconds of virtual time pass (a timer)."""
    return Sleep(ms)


class Call(Op):
    """An operation performed at the step that resumes the task: ``fn()`` gives its result."""

    __slots__ = ("fn", "label", "kind")

    def __init__(self, kind: str, label: str, fn: Callable[[], Any]) -> None:
        self.kind = kind
        self.label = label
        self.fn = fn

    def perform(self, sched: Scheduler, task: Task) -> Any:
        return self.fn()

    def describe(self) -> str:
        return self.label


class Sleep(Op):
    """Wait ``ms`` milliseconds of virtual time from the moment the task suspends."""

    __slots__ = ("ms", "until_ms")
    kind = "sleep"

    def __init__(self, ms: int) -> None:
        if ms < 0:
            raise ValueError(f"sleep({ms}): a duration is >= 0 ms")
        self.ms = ms
        self.until_ms = 0

    def issue(self, sched: Scheduler, task: Task) -> None:
        self.until_ms = sched.clock.now_ms + self.ms

    def ready(self, sched: Scheduler) -> bool:
        return sched.clock.now_ms >= self.until_ms

    def describe(self) -> str:
        return f"sleep until {self.until_ms}"


class Join(Op):
    """Wait for another task (a request sent, a Durable Object call) and take its result.

    ``start`` spawns the awaited task when the waiter suspends, so the request is "sent" at
    that moment and runs on its own steps.
    """

    __slots__ = ("start", "child", "label")
    kind = "join"

    def __init__(self, label: str, start: Callable[[], Task]) -> None:
        self.label = label
        self.start = start
        self.child: Task | None = None

    def issue(self, sched: Scheduler, task: Task) -> None:
        self.child = self.start()
        self.child.parent = task

    def ready(self, sched: Scheduler) -> bool:
        return self.child is not None and self.child.finished

    def perform(self, sched: Scheduler, task: Task) -> Any:
        assert self.child is not None
        if self.child.killed:
            raise TaskCancelled(f"{self.child.name} was killed before it answered")
        if self.child.error is not None:
            raise self.child.error
        return self.child.result

    def describe(self) -> str:
        return self.label


@attrs.define(eq=False)
class Task:
    """A running coroutine. ``owner`` is the Durable Object instance it runs in, if any."""

    tid: int
    name: str
    #: The coroutine, created from ``factory`` at the task's first step (so a task that never
    #: runs leaves no un-awaited coroutine behind).
    coro: Coroutine[Any, Any, Any] | None
    factory: Callable[[], Coroutine[Any, Any, Any]] | None = None
    kind: str = "task"
    owner: Any = None
    pending: Op | None = None
    started: bool = False
    finished: bool = False
    killed: bool = False
    result: Any = None
    error: BaseException | None = None
    steps: int = 0
    deadline_ms: int | None = None
    parent: Task | None = None
    children: list[Task] = attrs.field(factory=list)
    on_finish: list[Callable[[Task], None]] = attrs.field(factory=list)
    #: The invocation record of a request task (counters, errors), if it serves one.
    invocation: Any = None
    #: Why the task is to be stopped at its next suspension (see :func:`give_up`).
    stuck: str | None = None

    def __repr__(self) -> str:
        state = "killed" if self.killed else "done" if self.finished else "live"
        return f"<Task #{self.tid} {self.name} {state}>"


class Step(NamedTuple):
    """One step of the trace: which task, at what time, performing what, with what outcome.

    (A named tuple rather than an attrs class: one is made per step, on the hot path.)
    """

    index: int
    time_ms: int
    tid: int
    task: str
    op: str
    outcome: str

    def render(self) -> str:
        return f"{self.index} t={self.time_ms} #{self.tid} {self.task}: {self.op} -> {self.outcome}"


@attrs.frozen
class SchedulerStats:
    """A snapshot of the scheduler's counters."""

    steps: int
    tasks_spawned: int
    tasks_live: int
    tasks_killed: int
    now_ms: int


def _short(value: Any) -> str:
    """``repr(value)``, cut to a readable length (and safe if the repr itself fails)."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a hostile __repr__ must not hide the finding
        text = f"<{type(value).__name__} object>"
    return text if len(text) <= 80 else text[:77] + "..."


def _outcome(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"<{len(value)} chars>"
    if isinstance(value, BaseException):
        return f"raise {type(value).__name__}: {value}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@attrs.define
class Scheduler:
    """Owns the live tasks and steps them one at a time, choosing through ``choices``."""

    clock: Clock
    choices: ChoiceSource
    #: A task that takes more steps than this is killed and reported (a worker that never
    #: answers); ``None`` for no limit.
    max_task_steps: int | None = 10_000
    #: Whether steps are recorded as :class:`Step` records (benchmarks may turn it off).
    record: bool = True
    tasks: list[Task] = attrs.field(factory=list)
    trace: list[Step] = attrs.field(factory=list)
    steps: int = 0
    spawned: int = 0
    killed_count: int = 0
    id_counter: int = 0
    #: Tasks stopped by the step limit, with the error describing it.
    overruns: list[StepLimitExceeded] = attrs.field(factory=list)
    #: Told ``(task, value, error)`` at every resume: what the task is about to observe (the
    #: exhaustive explorer fingerprints what each task has seen); ``None`` costs nothing.
    observe: Callable[[Task, Any, BaseException | None], None] | None = None

    # -- tasks ---------------------------------------------------------------------------------

    def spawn(
        self,
        start: Coroutine[Any, Any, Any] | Callable[[], Coroutine[Any, Any, Any]],
        name: str,
        *,
        kind: str = "task",
        owner: Any = None,
        deadline_ms: int | None = None,
        eager: bool = False,
        invocation: Any = None,
    ) -> Task:
        """Add a task running ``start`` (a coroutine, or a function making one at the first
        step). It runs nothing until a step chooses it, unless ``eager``: then its code runs
        now up to its first suspension, as a JavaScript async function starts synchronously
        when called. ``invocation`` is the record of the request the task serves."""
        self.spawned += 1
        if isinstance(start, CoroutineType):
            task = Task(self.spawned, name, start, kind=kind, owner=owner, deadline_ms=deadline_ms)
        else:
            task = Task(
                self.spawned, name, None, start, kind=kind, owner=owner, deadline_ms=deadline_ms
            )
        task.invocation = invocation
        self.tasks.append(task)
        if eager:
            self._resume(task)
        return task

    def _gate_free(self, task: Task) -> bool:
        owner = task.owner
        if owner is None:
            return True
        holder = owner.gate_holder
        return holder is None or holder is task

    def runnable(self) -> list[Task]:
        """The tasks a step may choose, in spawn order (a stable order, never hash order)."""
        out = []
        for t in self.tasks:
            op = t.pending
            # A KV call is always ready: skip asking (this loop runs at every step).
            if op is not None and op.kind != "kv" and not op.ready(self):
                continue
            owner = t.owner
            if owner is not None and owner.gate_holder is not None and owner.gate_holder is not t:
                continue
            out.append(t)
        return out

    def live(self) -> list[Task]:
        return list(self.tasks)

    # -- stepping ------------------------------------------------------------------------------

    def step(self, task: Task | None = None) -> Task | None:
        """Step one runnable task: ``task`` if given (the choice is recorded as if chosen), else
        one chosen by the ``step`` choice. Returns the task, or ``None`` if nothing can run."""
        if _HALT[0] is not None:
            raise Halted(_HALT[0])
        ready = self.runnable()
        if not ready:
            return None
        if task is None:
            task = ready[self.choices.choose("step", len(ready))] if len(ready) > 1 else ready[0]
        else:
            try:
                index = ready.index(task)
            except ValueError:
                raise QmodelError(
                    f"{task!r} cannot step now: it is finished, waiting, or behind a Durable "
                    "Object's input gate"
                ) from None
            self.choices.force("step", len(ready), index)
        self._resume(task)
        return task

    def _resume(self, task: Task) -> None:
        op = task.pending
        value: Any = None
        error: BaseException | None = None
        if op is not None and task.started:
            try:
                value = op.perform(self, task)
            except Exception as exc:  # the platform raised into the task, as JS rejects
                error = exc
            except TASK_EXITS as exc:
                if _HALT[0] is not None:
                    raise
                error = UncaughtExit(exc)
        if self.observe is not None:
            self.observe(task, value, error)
        task.started = True
        task.pending = None
        self.steps += 1
        task.steps += 1
        if self.record:
            self.trace.append(
                Step(
                    self.steps,
                    self.clock.now_ms,
                    task.tid,
                    task.name,
                    "start" if op is None else op.describe(),
                    _outcome(value if error is None else error),
                )
            )
        coro = task.coro
        if coro is None:
            assert task.factory is not None
            coro = task.coro = task.factory()
        outer = _CURRENT[0]
        outer_task = _TASK[0]
        _CURRENT[0] = self
        _TASK[0] = task
        _PROGRESS[1] = True
        try:
            nxt = coro.send(value) if error is None else coro.throw(error)
        except StopIteration as stop:
            self._finish(task, result=stop.value)
            return
        except Exception as exc:
            self._finish(task, error=exc)
            return
        except TASK_EXITS as exc:
            # sys.exit() or a KeyboardInterrupt raised by the task's own code is its failure;
            # while halted (the watchdog, Ctrl-C) the interrupt is the run's and propagates.
            if _HALT[0] is not None or isinstance(exc, Halted):
                raise
            self._finish(task, error=UncaughtExit(exc))
            return
        finally:
            _CURRENT[0] = outer
            _TASK[0] = outer_task
            _PROGRESS[0] += 1
            _PROGRESS[1] = outer is not None
            # The error's traceback holds this frame: drop the frame's reference to the error so
            # the two do not form a cycle that only the garbage collector can free.
            error = None
        if not isinstance(nxt, Op):
            # Nothing in the simulated world will ever settle what the task awaits (an asyncio
            # future, a foreign event loop's sleep): it can never finish. That is a liveness
            # failure of the task, reported as the step limit's is, not an error that dies
            # with whoever awaited it.
            exc = StepLimitExceeded(
                f"{task.name} awaited {_short(nxt)}, which is not a simulated platform call, so "
                "nothing can ever settle it and it can never answer; inside a simulated world "
                "await only the env bindings, request/response methods and qmodel's sleep "
                "(not asyncio)",
                task=task.name,
                steps=task.steps,
            )
            self.overruns.append(exc)
            self.kill(task)
            task.error = exc
            return
        task.pending = nxt
        if nxt.kind != "kv":  # a KV call needs no issuing and is no join (the hot case)
            nxt.issue(self, task)
            if nxt.kind == "join":
                child = getattr(nxt, "child", None)
                if child is not None:
                    task.children.append(child)
        if task.owner is not None:
            self._update_gate(task, op, nxt)
        if task.stuck is not None or (
            self.max_task_steps is not None and task.steps >= self.max_task_steps
        ):
            exc = StepLimitExceeded(
                task.stuck
                or f"{task.name} took {task.steps} steps without finishing (limit "
                f"{self.max_task_steps}); a worker that never answers is stopped here",
                task=task.name,
                steps=task.steps,
            )
            self.overruns.append(exc)
            self.kill(task)
            task.error = exc

    def _update_gate(self, task: Task, done: Op | None, nxt: Op | None) -> None:
        owner = task.owner
        if owner is None:
            return
        # The input gate: while a storage operation is outstanding no other event is delivered
        # to the object (DO-BLOG, reference §5.2); any other await opens it.
        if nxt is not None and nxt.kind == "storage":
            owner.gate_holder = task
        elif owner.gate_holder is task:
            owner.gate_holder = None

    def _finish(
        self, task: Task, *, result: Any = None, error: BaseException | None = None
    ) -> None:
        task.finished = True
        task.result = result
        task.error = error
        task.pending = None
        if task.owner is not None:
            self._update_gate(task, None, None)
        self.tasks.remove(task)
        for cb in task.on_finish:
            cb(task)

    # -- killing -------------------------------------------------------------------------------

    def kill(self, task: Task, *, apply_pending: bool = False, cascade: bool = True) -> None:
        """Stop ``task`` where it is suspended.

        Earlier writes stay in place. ``apply_pending`` performs the operation it was suspended
        on first (a write sent whose answer never came may have landed: reference §6). With
        ``cascade`` the requests it is waiting on are cancelled too (a client that disconnects
        cancels its request: [W-LIM] "When the client disconnects, all tasks associated with
        that client request are canceled"), except Durable Object requests and ``waitUntil``
        work, which outlive their caller.
        """
        if task.finished:
            return
        if (
            apply_pending
            and task.started
            and task.pending is not None
            and task.pending.kind
            in (
                "kv",
                "storage",
            )
        ):
            try:
                task.pending.perform(self, task)
            except Exception:
                pass  # a rejected write (429, validation) had no effect either way
        if cascade:
            # Work handed to waitUntil survives its request, and a Durable Object finishes
            # what it was asked ("the request context extends at least 60 seconds after the
            # last client disconnects", reference §5.7).
            for child in list(task.children):
                if not child.finished and child.kind not in ("background", "durable"):
                    self.kill(child, apply_pending=apply_pending, cascade=True)
        if task.coro is not None:
            task.coro.close()
        task.killed = True
        self.killed_count += 1
        if self.record:
            self.trace.append(
                Step(self.steps, self.clock.now_ms, task.tid, task.name, "kill", "killed")
            )
        self._finish(task, result=None, error=None)
        task.killed = True

    # -- time ----------------------------------------------------------------------------------

    def advance(self, ms: int) -> None:
        """Move the clock forward and stop background work whose grace period ran out."""
        self.clock.advance(ms)
        self._expire()

    def advance_to(self, t_ms: int) -> None:
        self.clock.advance_to(t_ms)
        self._expire()

    def next_wakeup(self) -> int | None:
        """The earliest time a sleeping task becomes ready, or ``None``."""
        times = [
            t.pending.until_ms
            for t in self.tasks
            if t.started and isinstance(t.pending, Sleep) and t.pending.until_ms > self.clock.now_ms
        ]
        return min(times) if times else None

    def advance_to_next_wakeup(self) -> bool:
        """Jump to the next wake-up when nothing can run; ``False`` if no task will ever wake."""
        t = self.next_wakeup()
        if t is None:
            return False
        self.advance_to(t)
        return True

    def _expire(self) -> None:
        now = self.clock.now_ms
        for t in [t for t in self.tasks if t.deadline_ms is not None and t.deadline_ms <= now]:
            self.kill(t, cascade=True)

    # -- driving -------------------------------------------------------------------------------

    def run(self, *, max_steps: int = 100_000, until: Callable[[], bool] | None = None) -> int:
        """Step chosen tasks until nothing is runnable (jumping the clock over sleeps only if
        ``until`` is given and not yet true), ``until()`` holds, or ``max_steps`` are taken.
        Returns the number of steps taken."""
        taken = 0
        while taken < max_steps:
            if until is not None and until():
                break
            if self.step() is None:
                if until is None or not self.advance_to_next_wakeup():
                    break
                continue
            taken += 1
        return taken

    def stats(self) -> SchedulerStats:
        return SchedulerStats(
            steps=self.steps,
            tasks_spawned=self.spawned,
            tasks_live=len(self.tasks),
            tasks_killed=self.killed_count,
            now_ms=self.clock.now_ms,
        )

    def check(self) -> None:
        """Assert the scheduler's structural invariants."""
        tids = [t.tid for t in self.tasks]
        assert tids == sorted(tids), "live tasks are kept in spawn order"
        assert len(set(tids)) == len(tids), "task ids are unique"
        for t in self.tasks:
            assert not t.finished, f"{t!r} is finished but still listed"
            if t.owner is not None and t.owner.gate_holder is not None:
                assert not t.owner.gate_holder.finished, "a finished task holds an input gate"
