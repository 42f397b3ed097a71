"""The job queue's actors: producers that enqueue and retry, consumers that lease and work.

A **producer** enqueues a job under a fresh idempotency key and waits a drawn time (choice
``producer.timeout_ms``) for the answer. If none came, or it was a 5xx or no answer at all, it
sends the same body again (the same key) while the first attempt may still be under way, up to
:data:`ATTEMPTS` times. Its attempts alternate between two locations: a client is not pinned to
a location, so its next request may land elsewhere (reference §1.3).

A **consumer** leases a job with a visibility timeout, works on it for a drawn time (choice
``consumer.work_ms``; the longest is past the timeout), then acks it or nacks it (choice
``consumer.outcome``) with the lease token. It crashes only by the protocol's ``crash`` verb, and
restarts with nothing in hand. When no job is to be had it polls again after ``poll_ms``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from qmodel.sim.scheduler import sleep

if TYPE_CHECKING:
    from qmodel.world import World

__all__ = [
    "ATTEMPTS",
    "Consumer",
    "Producer",
    "TIMEOUT_MS",
    "VISIBILITY_MS",
    "WORK_MS",
]

#: The visibility timeout consumers ask for (ms).
VISIBILITY_MS = 30_000
#: How long a consumer works on a job (ms), and how often each is drawn: the last is longer than
#: the visibility timeout, so another consumer may lease the job meanwhile.
WORK_MS = (200, 3_000, 12_000, 45_000)
WORK_WEIGHTS = (3, 3, 2, 3)
#: How long a producer waits for an enqueue's answer before it sends it again (ms).
TIMEOUT_MS = (1_000, 10_000)
#: Attempts per enqueue, the first included.
ATTEMPTS = 3


@attrs.define(eq=False)
class _Client:
    """Who sends one attempt: the producer's name, at the attempt's location."""

    name: str
    location: str


@attrs.define(eq=False)
class Producer:
    """Brings work: each ``enqueue`` is one job, under a key of its own."""

    name: str
    location: str
    world: World
    #: The other location its retries may land at.
    other_location: str
    enqueued: int = 0

    async def enqueue(self) -> None:
        """Enqueue one job, and retry it on a timeout, a 5xx or no answer, with the same key."""
        self.enqueued += 1
        key = f"{self.name}-{self.enqueued}"
        body = {"key": key, "payload": {"n": self.enqueued, "by": self.name}}
        world = self.world
        for attempt in range(ATTEMPTS):
            where = self.location if attempt % 2 == 0 else self.other_location
            client = _Client(self.name, where)
            task = world.spawn(
                f"{self.name}:enqueue-{key}-{attempt + 1}",
                lambda c=client: world.call(c, "enqueue", "POST", "/jobs", body=body),
            )
            await sleep(world.platform.choices.pick("producer.timeout_ms", TIMEOUT_MS, (1, 1)))
            if task.finished and task.error is None and isinstance(task.result, tuple):
                status = task.result[0]
                if 0 < status < 500:
                    return  # acknowledged, or refused: a retry would be refused too

    def restarted(self) -> Producer:
        """Producers are not crashed; a restarted one starts counting its keys anew."""
        return Producer(self.name, self.location, self.world, self.other_location)

    async def run(self) -> None:
        """A producer acts only through its ``enqueue`` verb; its loop only idles."""
        while True:
            await sleep(60_000)


@attrs.define(eq=False)
class Consumer:
    """Does work: lease, work, ack or nack; ``poll_ms`` between empty leases."""

    name: str
    location: str
    world: World
    poll_ms: int = 3_000
    visibility_ms: int = VISIBILITY_MS

    async def work_one(self) -> bool:
        """Lease a job, work on it, then ack or nack it; ``False`` when there was none."""
        w = self.world
        status, answer = await w.call(
            self,
            "lease",
            "POST",
            "/jobs/lease",
            body={"worker": self.name, "visibility_ms": self.visibility_ms},
        )
        job = answer.get("job") if isinstance(answer, dict) else None
        token = answer.get("lease") if isinstance(answer, dict) else None
        if status != 200 or not isinstance(job, dict) or not isinstance(token, str):
            return False
        job_id = job.get("id")
        if not isinstance(job_id, str):
            return False
        choices = w.platform.choices
        await sleep(choices.pick("consumer.work_ms", WORK_MS, WORK_WEIGHTS))
        op = choices.pick("consumer.outcome", ("ack", "nack"), (4, 1))
        await w.call(
            self,
            op,
            "POST",
            f"/jobs/{job_id}/{op}",
            body={"lease": token, "worker": self.name},
            mid=job_id,
        )
        return True

    def restarted(self) -> Consumer:
        """The same consumer after a crash, holding nothing."""
        return Consumer(
            self.name, self.location, self.world, self.poll_ms, visibility_ms=self.visibility_ms
        )

    async def run(self) -> None:
        """Work while there is work; poll every ``poll_ms`` when there is none."""
        while True:
            if not await self.work_one():
                await sleep(self.poll_ms)


def _locations(i: int, names: tuple[str, ...]) -> str:
    return names[i % len(names)]


PRODUCER_LOCATIONS = ("fra", "iad", "nrt", "syd")
CONSUMER_LOCATIONS = ("sin", "gru", "jnb", "bom")


def start(world: World) -> None:
    """Make the producers (``frontends`` of them) and the consumers (``bots``)."""
    config = world.config
    for i in range(config.frontends):
        here = _locations(i, PRODUCER_LOCATIONS)
        there = _locations(i + 1, PRODUCER_LOCATIONS)
        world.add_actor("producers", Producer(f"producer-{i + 1}", here, world, there))
    for i in range(config.bots):
        world.add_actor(
            "consumers",
            Consumer(
                f"consumer-{i + 1}",
                _locations(i, CONSUMER_LOCATIONS),
                world,
                poll_ms=config.bot_poll_ms,
            ),
        )


def enqueue(world: World, producer: int) -> None:
    """Producer ``producer`` (modulo their number) starts enqueueing a job."""
    group = world.actors.get("producers") or []
    if not group:
        return
    p = group[producer % len(group)]
    world.log.append(f"t={world.platform.clock.now_ms} {p.name} starts enqueueing")
    world.spawn(f"{p.name}:enqueue", p.enqueue)


def crash(world: World, consumer: int) -> None:
    """Consumer ``consumer`` dies where it stands and restarts holding nothing."""
    world.crash("consumers", consumer)


def has_consumers(world: World) -> bool:
    """A crash needs a consumer."""
    return bool(world.actors.get("consumers"))
