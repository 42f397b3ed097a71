"""The chat protocol's three eras as protocol values.

* :data:`PATCH` (seed 004): the bot lists recent messages and PATCHes each it answered;
* :data:`QUEUE` (seed 000): the bot polls ``/api/queue/pending``, claims, replies, completes;
* :data:`DO`: the bot asks a Durable Object queue for the next message (``claim-next``);
* :data:`QUEUES`: the design sends each human message to a Cloudflare queue (``comments``) and
  the bot is an HTTP pull consumer of it (reference Q4); no status routes: a message is
  answered when its reply is acknowledged.
* :data:`QUEUES_PUSH`: the same queue, consumed by the design's own ``queue(batch, env, ctx)``
  (reference Q2): no bots; the platform delivers the batches.

Frontends post human messages and poll for new ones; bots answer them; another app may flood
the chat (a burst). The spec (:mod:`qmodel.protocols.chat.spec`) folds the answered exchanges
into what was promised; the invariants live in ``qmodel.invariants.chat``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from qmodel.invariants.chat import ALL as CHAT_INVARIANTS
from qmodel.protocol import ADVANCE, RUN, Protocol, Route, Verb
from qmodel.protocols.chat import spec as chat_spec
from qmodel.protocols.chat.bot import Bot
from qmodel.protocols.chat.frontend import Frontend
from qmodel.protocols.chat.observe import Settled, observe

if TYPE_CHECKING:
    from qmodel.world import World, WorldConfig

__all__ = ["DO", "ERAS", "PATCH", "QUEUE", "QUEUES", "QUEUES_PUSH", "Settled"]

FRONTEND_LOCATIONS = ("fra", "iad", "nrt", "syd")
BOT_LOCATIONS = ("sin", "gru", "jnb", "bom")
#: Sizes of another app's bursts: small, and past the seeds' 200-message cache.
BURST_SIZES = (5, 201)
#: Bursts per example (they are the costliest verb; one past the cache is enough).
MAX_BURSTS = 1


@attrs.define(eq=False)
class OtherApp:
    """Another app on the same chat: it posts AI messages the bots do not answer."""

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


def _start(era: str) -> Any:
    def start(world: World) -> None:
        config = world.config
        if era in ("queues", "queues-push"):
            # The design's queues, as it lists its Durable Objects; a design with a queue()
            # handler is their push consumer.
            world.platform.install_queues(getattr(world.target, "queues", None) or {}, world.target)
        now = world.platform.clock.now_ms
        for i in range(config.frontends):
            fe = Frontend(
                f"frontend-{i + 1}",
                FRONTEND_LOCATIONS[i % len(FRONTEND_LOCATIONS)],
                world,
                poll_ms=config.frontend_poll_ms,
                skew_ms=config.skews_ms[i % len(config.skews_ms)],
            )
            # The tab opened as the world began: its cursor starts a few seconds before.
            fe.cursor = now + fe.skew_ms - 5_000
            world.add_actor("frontends", fe)
        for i in range(config.bots if era != "queues-push" else 0):
            bot = Bot(
                f"bot-{i + 1}",
                BOT_LOCATIONS[i % len(BOT_LOCATIONS)],
                world,
                era=era,  # type: ignore[arg-type]
                poll_ms=config.bot_poll_ms,
            )
            world.add_actor("bots", bot)

    return start


def _post(world: World, frontend: int) -> None:
    """Frontend ``frontend`` starts posting a message (it runs as the schedule allows)."""
    fronts = world.actors["frontends"]
    fe = fronts[frontend % len(fronts)]
    text = f"message {fe.posts + 1} from {fe.name}"
    world.log.append(f"t={world.platform.clock.now_ms} {fe.name} starts posting {text!r}")
    world.spawn(f"{fe.name}:post", lambda: fe.post(text))


def _crash(world: World, bot: int) -> None:
    world.crash("bots", bot)


def _burst(world: World, count: int) -> None:
    """Another app posts ``count`` AI messages at once (traffic the bot does not answer)."""
    n = world.counts.get("burst", 0)
    world.log.append(f"t={world.platform.clock.now_ms} burst of {count} messages")
    other = OtherApp(f"other-app-{n}", "lhr", world)
    world.spawn(other.name, lambda: other.flood(count))


def _has_bots(world: World) -> bool:
    return world.config.bots > 0


def _may_burst(world: World) -> bool:
    return world.counts.get("burst", 0) < MAX_BURSTS


POST = Verb(name="post", weight=4, args=(0, 1, 2, 3), apply=_post, doc="frontend N posts a message")
CRASH = Verb(
    name="crash",
    weight=2,
    args=(0, 1, 2, 3),
    apply=_crash,
    enabled=_has_bots,
    doc="bot N dies where it stands and restarts with empty memory",
)
BURST = Verb(
    name="burst",
    weight=1,
    args=BURST_SIZES,
    apply=_burst,
    enabled=_may_burst,
    doc="another app posts N AI messages at once",
)

COMMON_ROUTES = (
    Route(method="POST", path="/api/comments", operation="post", doc="post a message"),
    Route(method="GET", path="/api/comments?after=", operation="poll", doc="messages after a time"),
    Route(method="GET", path="/api/comments?limit=", operation="list", doc="the newest messages"),
)
QUEUE_ROUTES = (
    Route(method="GET", path="/api/queue/pending", operation="pending", doc="pending messages"),
    Route(method="POST", path="/api/queue/claim", operation="claim", doc="claim a message"),
    Route(method="POST", path="/api/queue/complete", operation="complete", doc="finish one"),
    Route(method="POST", path="/api/queue/fail", operation="fail", doc="give one back"),
)
DO_ROUTES = (
    Route(method="POST", path="/api/queue/claim-next", operation="claim-next", doc="next one"),
    *QUEUE_ROUTES[2:],
)
PATCH_ROUTES = (
    Route(method="PATCH", path="/api/comments/{id}", operation="patch", doc="mark processed"),
)


def _spec(config: WorldConfig) -> chat_spec.SpecState:
    return chat_spec.SpecState(lease_ms=config.lease_ms)


def _unfinished(spec: chat_spec.SpecState) -> bool:
    return bool(spec.unfinished())


def _unanswered(spec: chat_spec.SpecState) -> bool:
    return bool(spec.open())


def _answered(spec: chat_spec.SpecState) -> int:
    return len(spec.humans()) - len(spec.open())


def _done_by_the_platform(spec: chat_spec.SpecState) -> bool:
    """No client does the work of a push-consumed queue, so none of it is acknowledged to a
    client: the settle drains every delivery (a task) before the world is observed, and the
    invariants judge the work by what the target shows then."""
    return False


def _progress(spec: chat_spec.SpecState) -> int:
    return len(spec.transitions)


def _evidence(spec: chat_spec.SpecState) -> int:
    return len(spec.humans())


def _observe(pending_probe: bool) -> Any:
    def run(world: World) -> Settled:
        return observe(world, pending_probe=pending_probe)

    return run


def _the_platform(config: WorldConfig) -> int:
    """The push consumer: the platform delivers every batch to the design's queue()."""
    return 1


def _era(
    name: str,
    doc: str,
    routes: tuple[Route, ...],
    *,
    bursts: bool,
    settle_ms: int,
    by_replies: bool = False,
    pushed: bool = False,
) -> Protocol:
    """One era. ``by_replies``: no status routes, so work is done when replies are
    acknowledged (the ``queues`` era); ``pushed``: no bots, the platform does the work (the
    ``queues-push`` era)."""
    verbs = (RUN, POST, ADVANCE, CRASH, BURST) if bursts else (RUN, POST, ADVANCE, CRASH)
    if pushed:
        verbs = tuple(v for v in verbs if v is not CRASH)
    unfinished = _done_by_the_platform if pushed else _unanswered if by_replies else _unfinished
    return Protocol(
        name=name,
        doc=doc,
        verbs=verbs,
        start=_start(name),
        spec=_spec,
        step=chat_spec.step,
        invariants=CHAT_INVARIANTS,
        observe=_observe(pending_probe=name == "queue"),
        unfinished=unfinished,
        progress=_answered if by_replies else _progress,
        evidence=_evidence,
        happy_path=(("post", 0),),
        routes=COMMON_ROUTES + routes,
        params={"cache_size": 200, "idle_poll_reads": 3},
        settle_ms=settle_ms,
        quiet_ms=61_000,
        describe=chat_spec.describe,
        # The push consumer does the work whatever the bots.
        **({"workers": _the_platform} if pushed else {}),
    )


#: seed 004: the bot lists recent messages and PATCHes each it answered. A burst past the
#: listing hides messages by the protocol itself, so this era has no burst; and it retries a
#: message only after 5 minutes, so it settles longer.
PATCH = _era(
    "patch",
    "chat, PATCH era (seed 004): list, reply, PATCH processed",
    PATCH_ROUTES,
    bursts=False,
    settle_ms=6 * 60_000,
)
#: seed 000: poll pending, claim, reply, complete (or fail).
QUEUE = _era(
    "queue",
    "chat, queue era (seed 000): poll pending, claim, reply, complete or fail",
    QUEUE_ROUTES,
    bursts=True,
    settle_ms=2 * 60_000,
)
#: A Durable Object queue: claim-next, reply, complete (or fail).
DO = _era(
    "do",
    "chat, Durable Object era: claim-next, reply, complete or fail",
    DO_ROUTES,
    bursts=True,
    settle_ms=2 * 60_000,
)

#: Cloudflare Queues: the bot pulls from the queue, replies, acks by lease id (reference Q4).
QUEUES = _era(
    "queues",
    "chat on Cloudflare Queues: the bot is an HTTP pull consumer: pull, reply, ack",
    (),
    bursts=True,
    settle_ms=2 * 60_000,
    by_replies=True,
)

#: Cloudflare Queues with a push consumer: the design's queue() handler does the work (Q2).
QUEUES_PUSH = _era(
    "queues-push",
    "chat on Cloudflare Queues: the worker's queue(batch, env, ctx) answers each message",
    (),
    bursts=True,
    settle_ms=2 * 60_000,
    pushed=True,
)

ERAS = (PATCH, QUEUE, DO, QUEUES, QUEUES_PUSH)
