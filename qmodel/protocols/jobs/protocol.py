"""The protocol value :data:`JOBS`: the API most job queues on Workers have.

Routes (JSON bodies):

* ``POST /jobs`` ``{"key", "payload"}`` -> ``{"id"}``: enqueue; the same ``key`` again gives
  the same ``id`` and no second job (an idempotency key);
* ``POST /jobs/lease`` ``{"worker", "visibility_ms"}`` -> ``{"job": {"id", "payload",
  "attempt"}, "lease": TOKEN}``, or ``{"job": null}`` when no job is to be had; a leased job is
  hidden from other leases until the visibility timeout runs out;
* ``POST /jobs/{id}/ack`` and ``POST /jobs/{id}/nack`` ``{"lease": TOKEN}`` -> ``{"id",
  "state"}``: finish the job, or give it back (dead-lettered after its last attempt); a stale
  or wrong token answers 409;
* ``GET /jobs/{id}`` -> ``{"id", "state": queued|leased|acked|dead, "attempts"}``.

Verbs: ``enqueue`` (producer N enqueues a job), ``crash`` (consumer N dies and restarts), and
the core's ``run`` and ``advance``. The settle probe reads the status of every acknowledged job.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from qmodel.invariants.jobs import ALL as JOBS_INVARIANTS
from qmodel.protocol import ADVANCE, RUN, Protocol, Route, Verb
from qmodel.protocols.jobs import actors, spec

if TYPE_CHECKING:
    from qmodel.world import World, WorldConfig

__all__ = ["JOBS", "Settled", "observe"]


@attrs.frozen(kw_only=True)
class Settled:
    """What the settle probe saw: each acknowledged job's ``state`` by ``GET /jobs/{id}`` from
    a location that never read before (``None`` when the read did not answer 200 with the job),
    the answers as they came, and the probes' exchange ``seq`` by job."""

    states: Mapping[str, str | None]
    answers: Mapping[str, Any] = attrs.field(factory=dict)
    probe_seqs: Mapping[str, int] = attrs.field(factory=dict)


def observe(world: World) -> Settled:
    """Read the status of every job the spec acknowledged."""
    states: dict[str, str | None] = {}
    answers: dict[str, Any] = {}
    seqs: dict[str, int] = {}
    for n, job_id in enumerate(world.spec.order):
        status, answer = world.probe(f"probe-{n + 1}", "GET", f"/jobs/{job_id}")
        seqs[job_id] = len(world.history)
        answers[job_id] = {"status": status, "answer": answer}
        ok = status == 200 and isinstance(answer, dict) and answer.get("id") == job_id
        state = answer.get("state") if ok else None
        states[job_id] = state if isinstance(state, str) else None
    return Settled(states=states, answers=answers, probe_seqs=seqs)


def _spec(config: WorldConfig) -> spec.JobsState:
    return spec.JobsState()


def _unfinished(state: spec.JobsState) -> bool:
    return bool(state.unfinished())


def _progress(state: spec.JobsState) -> int:
    return state.changes


def _evidence(state: spec.JobsState) -> int:
    return len(state.order)


ENQUEUE = Verb(
    name="enqueue",
    weight=4,
    args=(0, 1, 2, 3),
    apply=actors.enqueue,
    doc="producer N enqueues a job (and retries it with the same key on a timeout)",
)
CRASH = Verb(
    name="crash",
    weight=2,
    args=(0, 1, 2, 3),
    apply=actors.crash,
    enabled=actors.has_consumers,
    doc="consumer N dies where it stands and restarts holding nothing",
)

ROUTES = (
    Route(method="POST", path="/jobs", operation="enqueue", doc="enqueue under a key"),
    Route(method="POST", path="/jobs/lease", operation="lease", doc="lease the next job"),
    Route(method="POST", path="/jobs/{id}/ack", operation="ack", doc="finish a leased job"),
    Route(method="POST", path="/jobs/{id}/nack", operation="nack", doc="give a leased job back"),
    Route(method="GET", path="/jobs/{id}", operation="probe", doc="a job's status"),
)

JOBS = Protocol(
    name="jobs",
    doc="a job queue: enqueue with an idempotency key, lease, ack or nack by lease token",
    verbs=(RUN, ENQUEUE, ADVANCE, CRASH),
    start=actors.start,
    spec=_spec,
    step=spec.step,
    invariants=JOBS_INVARIANTS,
    observe=observe,
    unfinished=_unfinished,
    progress=_progress,
    evidence=_evidence,
    happy_path=(("enqueue", 0),),
    routes=ROUTES,
    settle_ms=2 * 60_000,
    # Past the 60 s of KV caches and list views (reference §1.2, §1.8) and every lease.
    quiet_ms=max(61_000, actors.VISIBILITY_MS + 1_000),
    unit="job",
    kv_bindings=("JOBS_KV",),
    describe=spec.describe,
)
