"""A world: one simulated platform, one target, the actors of a protocol, the history and the
protocol's spec.

The core of qmodel: it knows no queue API. The protocol (:class:`~qmodel.protocol.Protocol`)
starts its actors in the world (:meth:`World.add_actor`), and its verbs act on it; the world
gives them the means: :meth:`World.call` (send a request to the target, wait for the answer,
record the exchange and fold it into the spec), :meth:`World.spawn` (start a client action
beside the actors' loops), :meth:`World.crash` (an actor dies where it stands and restarts
empty), :meth:`World.run` (steps of the schedule) and :meth:`World.advance` (the clock moves).
:meth:`World.settle` stops traffic, lets every staleness window and lease pass, runs the actors
on a fair schedule until the work is done, lets the windows pass again, and has the protocol
look at the result through the target's API. Every decision in all of it goes through the
platform's one choice source.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from qmodel.check import CheckContext
from qmodel.errors import StepLimitExceeded
from qmodel.history import Exchange, History, KvWrite
from qmodel.protocol import Protocol
from qmodel.sim.choices import Backend, FirstOptionBackend
from qmodel.sim.http import Request
from qmodel.sim.kv import KvConfig
from qmodel.sim.runtime import Invocation, Platform
from qmodel.sim.scheduler import Join, Task, TaskCancelled, date_now, suspend

__all__ = ["Client", "World", "WorldConfig"]

#: The fair run ends ``settle_ms`` after the last status change, and at the latest this many
#: times ``settle_ms`` after it began.
SETTLE_CAP = 10
#: The most actors of each group a world has: more adds nothing a race needs (two suffice for
#: every race of the catalog) and makes each example slower.
MAX_ACTORS = 16


@attrs.frozen(kw_only=True)
class WorldConfig:
    """The shape of a world: which protocol the actors speak, how many of them, which KV.

    ``frontends`` counts the actors that bring work (a chat's frontends, a job queue's
    producers), ``bots`` the actors that do it (a chat's bots, a job queue's consumers).
    """

    protocol: str = "queue"
    bots: int = 2
    frontends: int = 2
    kv: str = "strict"
    #: A claim or lease older than this may be taken over (the spec's lease).
    lease_ms: int | None = 60_000
    bot_poll_ms: int = 3_000
    frontend_poll_ms: int = 3_000
    #: How often every actor polls while the world settles: calm clients may poll slowly, and
    #: a settle of minutes then costs tens of requests rather than hundreds.
    settle_poll_ms: int = 15_000
    #: Clock offsets of the frontends (ms), one per frontend, cycled.
    skews_ms: tuple[int, ...] = (0,)
    max_task_steps: int = 10_000

    def kv_config(self) -> KvConfig:
        return KvConfig.named(self.kv)

    def problems(self) -> list[str]:
        """What is wrong with this configuration, in words (empty when nothing is)."""
        found = []
        if not 0 <= self.bots <= MAX_ACTORS:
            # No bot is a scope the explorer uses for races between frontends alone.
            found.append(f"bots is {self.bots}; it must be from 0 to {MAX_ACTORS}")
        if not 1 <= self.frontends <= MAX_ACTORS:
            found.append(f"frontends is {self.frontends}; it must be from 1 to {MAX_ACTORS}")
        if self.kv not in ("strict", "local"):
            found.append(f"kv is {self.kv!r}; it must be 'strict' (production) or 'local'")
        if self.max_task_steps < 10:
            found.append(f"max_task_steps is {self.max_task_steps}; it must be at least 10")
        if self.lease_ms is not None and self.lease_ms < 1:
            found.append(f"lease_ms is {self.lease_ms}; it must be positive or null")
        for name in ("bot_poll_ms", "frontend_poll_ms", "settle_poll_ms"):
            if getattr(self, name) < 1:
                found.append(f"{name} is {getattr(self, name)}; it must be positive")
        if not self.skews_ms:
            found.append("skews_ms is empty; give at least one clock offset (0)")
        return found


@attrs.define(eq=False)
class Client:
    """A client that is none of the protocol's actors: another app, or the settle's probe."""

    name: str
    location: str


@attrs.define(eq=False)
class World:
    """Everything one run simulates."""

    config: WorldConfig
    target: Any
    platform: Platform
    protocol: Protocol
    history: History = attrs.field(factory=History)
    spec: Any = None
    #: The protocol's actors by group (``{"frontends": [...], "bots": [...]}``), in order.
    actors: dict[str, list[Any]] = attrs.field(factory=dict)
    #: Each actor's main loop, by actor name.
    tasks: dict[str, Task] = attrs.field(factory=dict)
    crashes: int = 0
    #: How many times each verb was applied in this example.
    counts: dict[str, int] = attrs.field(factory=dict)
    #: Requests sent and not answered yet, as ``(operation, message id)`` with their count.
    in_flight: dict[tuple[str, str | None], int] = attrs.field(factory=dict)
    #: Human-readable log of what the machine did, for traces and reports.
    log: list[str] = attrs.field(factory=list)
    #: The verbs applied, in order, as ``(verb, argument)``.
    verbs: list[tuple[str, int]] = attrs.field(factory=list)
    #: What the protocol observed of the settled world (``None`` until :meth:`settle`).
    settled: Any = None
    #: Every task started for the protocol's actors (loops and client actions), in order.
    actor_tasks: list[Task] = attrs.field(factory=list)

    @classmethod
    def create(
        cls, target: Any, config: WorldConfig, backend: Backend, protocol: Protocol
    ) -> World:
        """A world of ``protocol``'s actors around ``target``, every choice from ``backend``."""
        platform = Platform.create(
            backend=backend,
            kv=config.kv_config(),
            # The target's KV bindings (a JavaScript worker names its own); the first is the
            # namespace the invariants read.
            kv_bindings=getattr(target, "kv_bindings", None) or protocol.kv_bindings,
            durable=getattr(target, "durable_objects", None),
            max_task_steps=config.max_task_steps,
        )
        world = cls(config, target, platform, protocol, spec=protocol.spec(config))
        protocol.start(world)
        return world

    # -- actors ------------------------------------------------------------------------------

    def add_actor(self, group: str, actor: Any) -> None:
        """Add ``actor`` (with a ``name``, a ``location``, an ``async run()`` loop and a
        ``restarted()`` that gives its fresh self after a crash) to ``group``; start its loop."""
        self.actors.setdefault(group, []).append(actor)
        self._start(actor)

    def _start(self, actor: Any) -> None:
        self.tasks[actor.name] = self.spawn(actor.name, actor.run)

    def spawn(self, name: str, action: Callable[[], Any]) -> Task:
        """Start ``action`` (an ``async`` callable) as a client task beside the actors' loops;
        a task named ``"{actor}:..."`` dies with that actor's crash."""
        task = self.platform.scheduler.spawn(action, name, kind="actor")
        self.actor_tasks.append(task)
        return task

    def dead_actor(self) -> Task | None:
        """The first actor task that ended with an exception of its own (not killed by a crash
        or the step limit): an actor of the protocol is broken, and nothing it should have done
        was done, so no verdict may rest on the run."""
        for task in self.actor_tasks:
            error = task.error
            if (
                task.finished
                and error is not None
                and not isinstance(error, TaskCancelled | GeneratorExit | StepLimitExceeded)
            ):
                return task
        return None

    def crash(self, group: str, index: int) -> None:
        """Actor ``index`` (modulo the group's size) of ``group`` dies where it stands and
        restarts with empty memory.

        Its in-flight requests are cancelled (a write it had sent may or may not land: the
        choice ``crash.pending_write_lands``), and so are its client tasks (``"{name}:..."``);
        ``actor.restarted()`` gives the fresh actor, whose loop starts at once.
        """
        members = self.actors.get(group) or []
        if not members:
            return
        old = members[index % len(members)]
        task = self.tasks.get(old.name)
        if task is None or task.finished:
            return
        self.crashes += 1
        lands = bool(self.platform.choices.choose("crash.pending_write_lands", 2))
        self.log.append(f"t={self.platform.clock.now_ms} {old.name} crashes and restarts")
        sched = self.platform.scheduler
        for t in list(sched.tasks):  # its concurrent actions die too
            if t.name.startswith(f"{old.name}:") and t.kind == "actor":
                sched.kill(t, apply_pending=lands)
        sched.kill(task, apply_pending=lands)
        fresh = old.restarted()
        members[members.index(old)] = fresh
        self._start(fresh)

    # -- talking to the target ---------------------------------------------------------------

    def call(
        self,
        actor: Any,
        kind: str,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: dict[str, Any] | None = None,
        mid: str | None = None,
    ) -> Any:
        """``await world.call(...)`` from an actor task: send the request, wait for the answer,
        record the exchange (operation ``kind``, about message ``mid``) and fold it into the
        spec; gives ``(status, parsed answer)``, or ``(0, None)`` when the step limit stopped
        the request."""
        return self._call(actor, kind, method, path, body, query, mid)

    async def _call(
        self,
        actor: Any,
        kind: str,
        method: str,
        path: str,
        body: Any,
        query: dict[str, Any] | None,
        mid: str | None,
    ) -> tuple[int, Any]:
        request = Request.make(method, path, query=query, json_body=body)
        sent = date_now()
        name = f"{actor.name}:{kind}"
        op = Join(
            f"{actor.name} {request.describe()}",
            lambda: self.platform.send(self.target, request, location=actor.location, name=name),
        )

        def unanswered(why: str) -> None:
            inv = op.child.invocation if op.child is not None else None
            self._record(actor, kind, request, body, sent, None, None, mid, inv, (why,))

        flight = (kind, mid)
        self.in_flight[flight] = self.in_flight.get(flight, 0) + 1
        try:
            response = await suspend(op)
        except GeneratorExit:
            # The actor died waiting (a crash): the request was sent and its answer is lost.
            self._landed(flight)
            unanswered("no answer: the client stopped waiting")
            raise
        except TaskCancelled:
            # The request was killed before it answered: by the step limit (a worker that
            # never answers), or with its client.
            self._landed(flight)
            assert op.child is not None
            overrun = op.child.error if isinstance(op.child.error, StepLimitExceeded) else None
            if overrun is None:
                raise
            unanswered(f"stopped by the step limit: {overrun}")
            return 0, None
        self._landed(flight)
        assert op.child is not None
        answer = response.json_body()
        text = response.body[:200] if answer is None and response.body else None
        self._record(
            actor,
            kind,
            request,
            body,
            sent,
            response.status,
            answer,
            mid,
            op.child.invocation,
            (),
            text=text,
        )
        return response.status, answer

    def _landed(self, flight: tuple[str, str | None]) -> None:
        left = self.in_flight[flight] - 1
        if left:
            self.in_flight[flight] = left
        else:
            del self.in_flight[flight]

    def _record(
        self,
        actor: Any,
        kind: str,
        request: Request,
        body: Any,
        sent: int,
        status: int | None,
        answer: Any,
        mid: str | None,
        inv: Any,
        extra_errors: tuple[str, ...],
        *,
        text: str | None = None,
    ) -> None:
        if inv is None:  # never sent: nothing of the worker to report
            inv = Invocation(0, actor.location, "unsent")
        ex = Exchange(
            seq=len(self.history) + 1,
            actor=actor.name,
            location=actor.location,
            kind=kind,
            method=request.method,
            path=request.describe().split(" ", 1)[1],
            body=body,
            sent_ms=sent,
            answered_ms=self.platform.clock.now_ms if status is not None else None,
            status=status,
            answer=answer,
            message_id=mid,
            kv_reads=inv.kv_reads,
            kv_writes=inv.kv_writes,
            kv_lists=inv.kv_lists,
            kv_deletes=inv.kv_deletes,
            kv_errors=tuple(str(e) for e in inv.kv_errors),
            writes=tuple(KvWrite(k, s) for k, s in inv.writes),
            errors=tuple(inv.errors) + extra_errors,
            logs=tuple(inv.logs),
            text=text,
        )
        self.history.add(ex)
        self.spec = self.protocol.step(self.spec, ex)
        note = f" ({'; '.join(extra_errors)})" if extra_errors else ""
        self.log.append(f"t={self.platform.clock.now_ms} {ex.describe()}{note}")

    # -- verbs -------------------------------------------------------------------------------

    def apply(self, verb: str, arg: int) -> None:
        """Apply the protocol's verb ``verb`` with ``arg``, and record it."""
        v = self.protocol.verb(verb)
        self.verbs.append((verb, arg))
        self.counts[verb] = self.counts.get(verb, 0) + 1
        v.apply(self, arg)

    def run(self, steps: int) -> int:
        """Take up to ``steps`` scheduler steps (each a choice); jump the clock to the next
        wake-up when nothing can run. Returns the steps taken."""
        sched = self.platform.scheduler
        taken = 0
        while taken < steps:
            if sched.step() is None:
                if not sched.advance_to_next_wakeup():
                    break
                continue
            taken += 1
        return taken

    def advance(self, ms: int) -> None:
        """The clock moves ``ms`` on (timers fall due as it passes them)."""
        self.log.append(f"t={self.platform.clock.now_ms} clock +{ms} ms")
        self.platform.scheduler.advance(ms)

    # -- settling and looking ----------------------------------------------------------------

    def settle(
        self, *, settle_ms: int | None = None, watch: Callable[[], None] | None = None
    ) -> Any:
        """Stop traffic and faults, pass the staleness windows, run fairly, pass them again,
        then observe.

        In order: what is in flight finishes (no new traffic starts); the clock jumps past
        every KV cache TTL, list view and lease (the protocol's ``quiet_ms``); then the actors
        run on a fair schedule (always the first runnable task; every read fresh, every
        generation quick and successful), every actor polling every
        :attr:`WorldConfig.settle_poll_ms`, until the protocol has no unfinished work and each
        actor has polled twice since, or ``settle_ms`` (the protocol's by default) of virtual
        time has passed without progress (at most :data:`SETTLE_CAP` times ``settle_ms`` in
        all). The last writes of that run may still be inside a staleness window, so the clock
        passes ``quiet_ms`` again and the actors poll twice more (every client then reads what
        is really stored) before the protocol observes the world through the target's API.

        ``watch`` is called whenever the history has grown (a request was answered), so the
        safety invariants are judged during the settle as after every verb: a violation the
        settle's traffic shows stops the example there, not once the world is observed.
        """
        platform = self.platform
        protocol = self.protocol
        platform.choices.backend = FirstOptionBackend()
        sched = platform.scheduler
        self.log.append(f"t={platform.clock.now_ms} settle: traffic stops")
        loops = set(self.tasks.values())

        def in_flight() -> bool:
            return any(t not in loops for t in sched.tasks)

        told = [len(self.history)]

        def step() -> bool:
            went = sched.step() is not None or sched.advance_to_next_wakeup()
            if watch is not None and len(self.history) != told[0]:
                told[0] = len(self.history)
                watch()
            return went

        for _ in range(200_000):
            if not in_flight() or not step():
                break
        quiet = protocol.quiet_ms
        sched.advance(quiet)
        self.log.append(f"t={platform.clock.now_ms} settle: {quiet // 1000} s later, fair run")
        if settle_ms is None:
            settle_ms = protocol.settle_ms
        begin = platform.clock.now_ms
        end = begin + settle_ms
        done_at: int | None = None
        poll_ms = max(self.config.settle_poll_ms, self.config.frontend_poll_ms)
        for group in self.actors.values():
            for actor in group:
                if hasattr(actor, "poll_ms"):
                    actor.poll_ms = max(actor.poll_ms, poll_ms)
        grace = 2 * poll_ms + 1
        progress = protocol.progress(self.spec)
        while platform.clock.now_ms < end:
            now = protocol.progress(self.spec)
            if now != progress:
                # Still working through a backlog: the deadline counts from the last progress,
                # so a slow but steady design is not taken for a stuck one.
                progress = now
                end = min(
                    max(end, platform.clock.now_ms + settle_ms), begin + SETTLE_CAP * settle_ms
                )
            if done_at is None and not protocol.unfinished(self.spec):
                done_at = platform.clock.now_ms
            if done_at is not None and platform.clock.now_ms >= done_at + grace and not in_flight():
                break
            if not step():
                break
        # What the fair run wrote last may still be behind a cache or a list view somewhere:
        # judge only once every window has passed since, and every actor has looked again.
        sched.advance(quiet)
        self.log.append(f"t={platform.clock.now_ms} settle: {quiet // 1000} s later, last polls")
        again = platform.clock.now_ms + grace
        for _ in range(200_000):
            if (platform.clock.now_ms >= again and not in_flight()) or not step():
                break
        self.settled = protocol.observe(self)
        return self.settled

    def probe(
        self, location: str, method: str, path: str, query: dict[str, Any] | None = None
    ) -> tuple[int, Any]:
        """Send one request as a fresh client at ``location`` (one that never read before)
        and run the schedule until it is answered; ``(0, None)`` if it never is. For a
        protocol's ``observe``: the exchange is recorded with operation ``probe``."""
        who = Client("probe", location)
        sched = self.platform.scheduler
        task = sched.spawn(
            lambda: self._call(who, "probe", method, path, None, query, None),
            location,
            kind="actor",
        )
        while not task.finished:
            if sched.step() is None and not sched.advance_to_next_wakeup():
                break
        if not task.finished or task.error is not None:
            return 0, None
        return task.result

    def context(self) -> CheckContext:
        """What the invariants look at now."""
        return CheckContext(
            history=self.history,
            spec=self.spec,
            settled=self.settled,
            protocol=self.protocol.name,
            params=self.protocol.params,
            in_flight=frozenset(self.in_flight),
        )
