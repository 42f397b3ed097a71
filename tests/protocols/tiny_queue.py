"""A protocol written outside qmodel, as a user writes one: a tiny work queue.

``POST /enqueue {"id"}`` stores a job and answers ``{"id"}``; ``POST /take`` answers the next
job (``{"id"}``) or ``{}``; ``POST /done {"id"}`` finishes a job; ``GET /jobs`` lists every
job with its state. Producers enqueue (the ``put`` verb), consumers take and finish.

The spec folds the answers: which jobs were acknowledged, who took each, which are done. Its
invariants: ``single-take`` (a job is handed out once) and ``all-done`` (every acknowledged job
is done once the world is settled).
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from qmodel.check import CheckContext, Invariant, Violation
from qmodel.history import Exchange
from qmodel.protocol import ADVANCE, RUN, Protocol, Route, Verb
from qmodel.sim.http import URL, Request, Response, json_response
from qmodel.sim.scheduler import sleep


@attrs.frozen
class Spec:
    acked: tuple[str, ...] = ()
    takes: tuple[tuple[str, str, int], ...] = ()  # (job, consumer, exchange seq)
    done: frozenset[str] = frozenset()


def step(spec: Spec, ex: Exchange) -> Spec:
    if not ex.ok:
        return spec
    answer = ex.answer if isinstance(ex.answer, dict) else {}
    job = answer.get("id")
    if not isinstance(job, str):
        return spec
    if ex.kind == "enqueue" and job not in spec.acked:
        return attrs.evolve(spec, acked=spec.acked + (job,))
    if ex.kind == "take":
        return attrs.evolve(spec, takes=spec.takes + ((job, ex.actor, ex.seq),))
    if ex.kind == "done":
        return attrs.evolve(spec, done=spec.done | {job})
    return spec


@attrs.define(eq=False)
class Producer:
    name: str
    location: str
    world: Any
    sent: int = 0

    async def put(self) -> None:
        self.sent += 1
        job = f"{self.name}-{self.sent}"
        await self.world.call(self, "enqueue", "POST", "/enqueue", body={"id": job}, mid=job)

    def restarted(self) -> Producer:
        return Producer(self.name, self.location, self.world, self.sent)

    async def run(self) -> None:
        while True:
            await sleep(60_000)


@attrs.define(eq=False)
class Consumer:
    name: str
    location: str
    world: Any
    poll_ms: int = 3_000

    def restarted(self) -> Consumer:
        return Consumer(self.name, self.location, self.world, self.poll_ms)

    async def run(self) -> None:
        while True:
            status, answer = await self.world.call(self, "take", "POST", "/take", body={})
            job = answer.get("id") if isinstance(answer, dict) else None
            if status == 200 and isinstance(job, str):
                await self.world.call(self, "done", "POST", "/done", body={"id": job}, mid=job)
            await sleep(self.poll_ms)


def start(world: Any) -> None:
    for i in range(world.config.frontends):
        world.add_actor("producers", Producer(f"producer-{i + 1}", f"p{i + 1}", world))
    for i in range(world.config.bots):
        world.add_actor("consumers", Consumer(f"consumer-{i + 1}", f"c{i + 1}", world))


def put(world: Any, producer: int) -> None:
    group = world.actors["producers"]
    p = group[producer % len(group)]
    world.spawn(f"{p.name}:put", p.put)


def crash(world: Any, consumer: int) -> None:
    world.crash("consumers", consumer)


def observe(world: Any) -> dict[str, str]:
    status, answer = world.probe("probe-1", "GET", "/jobs")
    return dict(answer.get("jobs", {})) if status == 200 and isinstance(answer, dict) else {}


def check_single_take(ctx: CheckContext) -> Violation | None:
    seen: dict[str, tuple[str, int]] = {}
    for job, who, seq in ctx.spec.takes:
        if job in seen:
            first, at = seen[job]
            return Violation(
                invariant="single-take",
                summary=f"job {job} was handed to {first} and again to {who}",
                message_ids=(job,),
                exchanges=(at, seq),
                values={"first": first, "second": who},
            )
        seen[job] = (who, seq)
    return None


def check_all_done(ctx: CheckContext) -> Violation | None:
    if ctx.settled is None:
        return None
    left = [j for j in ctx.spec.acked if ctx.settled.get(j) != "done"]
    if left:
        return Violation(
            invariant="all-done",
            summary=f"{len(left)} acknowledged jobs never finished",
            message_ids=tuple(left),
        )
    return None


SINGLE_TAKE = Invariant("single-take", "safety", "A job is handed out once.", check_single_take)
ALL_DONE = Invariant(
    "all-done", "eventual", "Every acknowledged job is done.", check_all_done, needs_worker=True
)

TINY = Protocol(
    name="tiny",
    doc="a tiny work queue: enqueue, take, done",
    verbs=(
        RUN,
        Verb(name="put", weight=4, args=(0, 1), apply=put, doc="producer N enqueues a job"),
        ADVANCE,
        Verb(name="crash", weight=1, args=(0, 1), apply=crash, doc="consumer N crashes"),
    ),
    start=start,
    spec=lambda config: Spec(),
    step=step,
    invariants=(SINGLE_TAKE, ALL_DONE),
    observe=observe,
    unfinished=lambda spec: any(j not in spec.done for j in spec.acked),
    progress=lambda spec: len(spec.done) + len(spec.takes),
    evidence=lambda spec: len(spec.acked),
    happy_path=(("put", 0),),
    routes=(
        Route(method="POST", path="/enqueue", operation="enqueue"),
        Route(method="POST", path="/take", operation="take"),
        Route(method="POST", path="/done", operation="done"),
        Route(method="GET", path="/jobs", operation="probe"),
    ),
    unit="job",
    kv_bindings=("JOBS",),
)


class RacyTinyQueue:
    """Takes a job by reading its state from KV and writing it back: two consumers between the
    read and the write both take it."""

    def __repr__(self) -> str:
        return "RacyTinyQueue()"

    async def fetch(self, request: Request, env: Any, ctx: Any) -> Response:
        path = URL(request.url).pathname
        kv = env.JOBS
        if path == "/enqueue":
            job = (await request.json())["id"]
            await kv.put(f"job:{job}", "queued")
            return json_response({"id": job})
        if path == "/take":
            for key in await _keys(kv):
                if await kv.get(key) == "queued":
                    await kv.put(key, "taken")
                    return json_response({"id": key[4:]})
            return json_response({})
        if path == "/done":
            job = (await request.json())["id"]
            await kv.put(f"job:{job}", "done")
            return json_response({"id": job})
        if path == "/jobs":
            jobs = {key[4:]: await kv.get(key) for key in await _keys(kv)}
            return json_response({"jobs": jobs})
        return Response(json.dumps({"error": "not found"}), 404)


async def _keys(kv: Any) -> list[str]:
    keys: list[str] = []
    cursor = None
    while True:
        page = await kv.list(prefix="job:", cursor=cursor)
        keys += [k.name for k in page.keys]
        if page.list_complete:
            return keys
        cursor = page.cursor


racy = RacyTinyQueue()
