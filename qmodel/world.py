"""A world: one simulated platform, one target, its actors, the history and the spec.

The machine drives a world through a few verbs: :meth:`World.post` (a frontend posts),
:meth:`World.run` (steps of the schedule), :meth:`World.advance` (the clock moves),
:meth:`World.crash` (a bot dies and restarts empty), :meth:`World.burst` (another app floods
the chat). :meth:`World.settle` stops traffic, lets every staleness window and lease pass,
runs the actors on a fair schedule for a while, and looks at the result through the HTTP
contract. Every decision in all of it goes through the platform's one choice source.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import attrs

from invariants.base import CheckContext, Settled
from qmodel.actors.bot import Bot
from qmodel.actors.frontend import Frontend, _comments
from qmodel.errors import StepLimitExceeded
from qmodel.history import Exchange, History, KvWrite
from qmodel.sim.choices import Backend, FirstOptionBackend
from qmodel.sim.http import Request
from qmodel.sim.kv import KvConfig
from qmodel.sim.runtime import Invocation, Platform
from qmodel.sim.scheduler import Join, Task, TaskCancelled, date_now, suspend
from qmodel.spec import SpecState
from qmodel.spec import step as spec_step

__all__ = ["World", "WorldConfig"]

FRONTEND_LOCATIONS = ("fra", "iad", "nrt", "syd")
BOT_LOCATIONS = ("sin", "gru", "jnb", "bom")
#: How long the settled world runs on a fair schedule without progress (virtual ms); it stops once
#: every acknowledged message is answered and the frontends have polled.
SETTLE_MS = 2 * 60_000
#: The PATCH era retries a message only after 5 minutes (seed 004), so it settles longer.
SETTLE_PATCH_MS = 6 * 60_000
#: The fair run ends ``settle_ms`` after the last status change, and at the latest this many
#: times ``settle_ms`` after it began.
SETTLE_CAP = 10
#: Past every staleness window (KV cache TTL 60 s, list views) and the 60 s claim lease.
QUIET_MS = 61_000


@attrs.frozen(kw_only=True)
class WorldConfig:
    """The shape of a world: which era the actors speak, how many of them, which KV."""

    protocol: Literal["patch", "queue", "do"] = "queue"
    bots: int = 2
    frontends: int = 2
    kv: str = "strict"
    #: A claim older than this may be taken over (the spec's lease).
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


@attrs.define(eq=False)
class World:
    """Everything one run simulates."""

    config: WorldConfig
    target: Any
    platform: Platform
    history: History = attrs.field(factory=History)
    spec: SpecState = attrs.field(factory=SpecState)
    frontends: list[Frontend] = attrs.field(factory=list)
    bots: list[Bot] = attrs.field(factory=list)
    tasks: dict[str, Task] = attrs.field(factory=dict)
    crashes: int = 0
    bursts: int = 0
    #: Requests sent and not answered yet, as ``(kind, message id)`` with their count.
    in_flight: dict[tuple[str, str | None], int] = attrs.field(factory=dict)
    #: Human-readable log of what the machine did, for traces and reports.
    log: list[str] = attrs.field(factory=list)
    #: The verbs applied, in order, as ``(verb, argument)``: with the platform's recorded
    #: choices, everything a replay needs (see :meth:`apply`).
    verbs: list[tuple[str, int]] = attrs.field(factory=list)
    settled: Settled | None = None

    @classmethod
    def create(cls, target: Any, config: WorldConfig, backend: Backend) -> World:
        platform = Platform.create(
            backend=backend,
            kv=config.kv_config(),
            # The target's KV bindings (a JavaScript worker names its own); the first is the
            # namespace the invariants read.
            kv_bindings=getattr(target, "kv_bindings", None) or ("COMMENTS_KV",),
            durable=getattr(target, "durable_objects", None),
            max_task_steps=config.max_task_steps,
        )
        world = cls(config, target, platform, spec=SpecState(lease_ms=config.lease_ms))
        for i in range(config.frontends):
            fe = Frontend(
                f"frontend-{i + 1}",
                FRONTEND_LOCATIONS[i % len(FRONTEND_LOCATIONS)],
                world,
                poll_ms=config.frontend_poll_ms,
                skew_ms=config.skews_ms[i % len(config.skews_ms)],
            )
            # The tab opened as the world began: its cursor starts a few seconds before.
            fe.cursor = platform.clock.now_ms + fe.skew_ms - 5_000
            world.frontends.append(fe)
            world._start(fe.name, fe.run)
        for i in range(config.bots):
            bot = Bot(
                f"bot-{i + 1}",
                BOT_LOCATIONS[i % len(BOT_LOCATIONS)],
                world,
                era=config.protocol,
                poll_ms=config.bot_poll_ms,
            )
            world.bots.append(bot)
            world._start(bot.name, bot.run)
        return world

    def _start(self, name: str, run: Callable[[], Any]) -> None:
        self.tasks[name] = self.platform.scheduler.spawn(run, name, kind="actor")

    # -- talking to the target -----------------------------------------------------------------

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
        record the exchange; gives ``(status, parsed answer)``."""
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
        self._record(
            actor, kind, request, body, sent, response.status, answer, mid, op.child.invocation, ()
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
    ) -> None:
        if inv is None:  # never sent: nothing of the worker to report
            inv = Invocation(0, actor.location, "unsent")
        ex = Exchange(
            seq=len(self.history) + 1,
            actor=actor.name,
            location=actor.location,
            kind=kind,  # type: ignore[arg-type]
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
        )
        self.history.add(ex)
        self.spec = spec_step(self.spec, ex)
        note = f" ({'; '.join(extra_errors)})" if extra_errors else ""
        self.log.append(f"t={self.platform.clock.now_ms} {ex.describe()}{note}")

    # -- the machine's verbs -------------------------------------------------------------------

    #: The verbs a machine or a replay may apply, by name.
    VERBS = ("post", "run", "advance", "crash", "burst")

    def apply(self, verb: str, arg: int) -> None:
        """Apply one verb by name (what a replay of :attr:`verbs` does)."""
        if verb not in self.VERBS:
            raise ValueError(f"unknown verb {verb!r}; the verbs are {', '.join(self.VERBS)}")
        getattr(self, verb)(arg)

    def post(self, frontend: int, text: str | None = None) -> None:
        """Frontend ``frontend`` starts posting a message (it runs as the schedule allows)."""
        self.verbs.append(("post", frontend))
        fe = self.frontends[frontend % len(self.frontends)]
        text = text or f"message {fe.posts + 1} from {fe.name}"
        self.log.append(f"t={self.platform.clock.now_ms} {fe.name} starts posting {text!r}")
        self.platform.scheduler.spawn(lambda: fe.post(text), f"{fe.name}:post", kind="actor")

    def burst(self, count: int) -> None:
        """Another app posts ``count`` AI messages at once (traffic the bot does not answer)."""
        self.verbs.append(("burst", count))
        self.bursts += 1
        self.log.append(f"t={self.platform.clock.now_ms} burst of {count} messages")
        other = _Other(f"other-app-{self.bursts}", "lhr", self)
        self.platform.scheduler.spawn(lambda: other.flood(count), other.name, kind="actor")

    def run(self, steps: int) -> int:
        """Take up to ``steps`` scheduler steps (each a choice); jump the clock to the next
        wake-up when nothing can run. Returns the steps taken."""
        self.verbs.append(("run", steps))
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
        self.verbs.append(("advance", ms))
        self.log.append(f"t={self.platform.clock.now_ms} clock +{ms} ms")
        self.platform.scheduler.advance(ms)

    def crash(self, bot: int) -> None:
        """Bot ``bot`` dies where it stands (its in-flight request is cancelled; a write it had
        sent may or may not land: a choice) and restarts with empty memory."""
        self.verbs.append(("crash", bot))
        b = self.bots[bot % len(self.bots)]
        task = self.tasks.get(b.name)
        if task is None or task.finished:
            return
        self.crashes += 1
        lands = bool(self.platform.choices.choose("crash.pending_write_lands", 2))
        self.log.append(f"t={self.platform.clock.now_ms} {b.name} crashes and restarts")
        sched = self.platform.scheduler
        for t in list(sched.tasks):  # its concurrent actions die too
            if t.name.startswith(f"{b.name}:") and t.kind == "actor":
                sched.kill(t, apply_pending=lands)
        sched.kill(task, apply_pending=lands)
        fresh = Bot(b.name, b.location, self, era=b.era, poll_ms=b.poll_ms)
        self.bots[self.bots.index(b)] = fresh
        self._start(fresh.name, fresh.run)

    # -- settling and looking ------------------------------------------------------------------

    def settle(self, *, settle_ms: int | None = None) -> Settled:
        """Stop traffic and faults, pass the staleness windows, run fairly, then observe.

        In order: what is in flight finishes (no new traffic starts); the clock jumps past
        every KV cache TTL, list view and claim lease (:data:`QUIET_MS`); then the actors run on
        a fair schedule (always the first runnable task; every read fresh, every generation
        quick and successful), every actor polling every :attr:`WorldConfig.settle_poll_ms`,
        until every acknowledged human message is answered and each frontend has polled twice
        since, or ``settle_ms`` of virtual time has passed without a message changing status
        (at most :data:`SETTLE_CAP` times ``settle_ms`` in all). Finally the world is observed
        through the HTTP contract from locations that never read.
        """
        platform = self.platform
        platform.choices.backend = FirstOptionBackend()
        sched = platform.scheduler
        self.log.append(f"t={platform.clock.now_ms} settle: traffic stops")
        loops = set(self.tasks.values())

        def in_flight() -> bool:
            return any(t not in loops for t in sched.tasks)

        for _ in range(200_000):
            if not in_flight():
                break
            if sched.step() is None and not sched.advance_to_next_wakeup():
                break
        sched.advance(QUIET_MS)
        self.log.append(f"t={platform.clock.now_ms} settle: {QUIET_MS // 1000} s later, fair run")
        if settle_ms is None:
            settle_ms = SETTLE_PATCH_MS if self.config.protocol == "patch" else SETTLE_MS
        begin = platform.clock.now_ms
        end = begin + settle_ms
        answered_at: int | None = None
        poll_ms = max(self.config.settle_poll_ms, self.config.frontend_poll_ms)
        for actor in (*self.frontends, *self.bots):
            actor.poll_ms = max(actor.poll_ms, poll_ms)
        grace = 2 * poll_ms + 1
        progress = len(self.spec.transitions)
        while platform.clock.now_ms < end:
            if len(self.spec.transitions) != progress:
                # Still working through a backlog: the deadline counts from the last progress,
                # so a slow but steady design is not taken for a stuck one.
                progress = len(self.spec.transitions)
                end = min(
                    max(end, platform.clock.now_ms + settle_ms), begin + SETTLE_CAP * settle_ms
                )
            if answered_at is None and not self.spec.unfinished():
                answered_at = platform.clock.now_ms
            if (
                answered_at is not None
                and platform.clock.now_ms >= answered_at + grace
                and not in_flight()
            ):
                break
            if sched.step() is None and not sched.advance_to_next_wakeup():
                break
        probe = _Other("probe", "probe-1", self)
        listing_ex = self._probe(probe, "GET", "/api/comments", {"limit": 200})
        listing = tuple(_comments(listing_ex[1])) if listing_ex[0] == 200 else None
        pending: tuple[dict[str, Any], ...] | None = None
        if self.config.protocol == "queue":
            probe2 = _Other("probe", "probe-2", self)
            status, answer = self._probe(probe2, "GET", "/api/queue/pending", {"limit": 1000})
            if status == 200:
                items = answer.get("pending") if isinstance(answer, dict) else answer
                pending = tuple(m for m in items or [] if isinstance(m, dict))
        seen = {fe.name: frozenset(fe.seen) for fe in self.frontends}
        everything = self._probe_everything()
        self.settled = Settled(
            everything=everything,
            listing=listing,
            pending=pending,
            seen=seen,
            probe_seqs=(len(self.history) - 1, len(self.history))
            if pending is not None
            else (len(self.history),),
        )
        return self.settled

    def _probe_everything(self) -> tuple[dict[str, Any], ...]:
        stamps = [m.timestamp for m in self.spec.messages.values() if isinstance(m.timestamp, int)]
        if not stamps:
            return ()
        cursor, found = min(stamps) - 1, {}
        for page in range(20):
            who = _Other("probe", f"probe-all-{page + 1}", self)
            status, answer = self._probe(
                who, "GET", "/api/comments", {"after": cursor, "limit": 1000}
            )
            items = _comments(answer) if status == 200 else []
            for m in items:
                if isinstance(m.get("id"), str):
                    found[m["id"]] = m
            newest = max(
                (m.get("timestamp") for m in items if isinstance(m.get("timestamp"), int)),
                default=cursor,
            )
            if len(items) < 1000 or newest <= cursor:
                break
            cursor = newest
        return tuple(found.values())

    def _probe(self, who: _Other, method: str, path: str, query: dict[str, Any]) -> tuple[int, Any]:
        sched = self.platform.scheduler
        task = sched.spawn(
            lambda: self._call(who, "probe", method, path, None, query, None),
            who.location,
            kind="actor",
        )
        while not task.finished:
            if sched.step() is None and not sched.advance_to_next_wakeup():
                break
        if not task.finished or task.error is not None:
            return 0, None
        return task.result

    def context(self, *, cache_size: int = 200, idle_poll_reads: int = 3) -> CheckContext:
        return CheckContext(
            history=self.history,
            spec=self.spec,
            settled=self.settled,
            cache_size=cache_size,
            idle_poll_reads=idle_poll_reads,
            protocol=self.config.protocol,
            in_flight=frozenset(self.in_flight),
        )


@attrs.define(eq=False)
class _Other:
    """A client that is not a frontend or a bot: another app, or the machine's probe."""

    name: str
    location: str
    world: World

    async def flood(self, count: int) -> None:
        for i in range(count):
            body = {
                "text": f"{self.name} message {i + 1}",
                "username": self.name,
                "message-type": "AI",
                "domain": "other.app",
            }
            await self.world.call(self, "post", "POST", "/api/comments", body=body)
