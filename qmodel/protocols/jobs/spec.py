"""The job queue's reference model: what the queue promised, folded from the answered exchanges.

A pure step function over immutable state (``step(state, exchange) -> state``). It records
facts, and the invariants judge them:

* each acknowledged job (``POST /jobs`` answered 2xx with an ``id``), under the idempotency key
  the client sent (what the client sent is the truth about what it enqueued; the answer says
  only under which id it was acknowledged);
* each lease granted (``POST /jobs/lease`` answered 200 with a job and a token), with when it
  was sent and answered and the visibility timeout asked for;
* each ack and nack (``POST /jobs/{id}/ack|nack``) with its token and outcome: answered 2xx,
  refused, or never answered (it may or may not have happened).

Real time is ambiguous: a request's effect lands somewhere between its sending and its answer,
and another request may see it first. So a lease is judged by the window ``[sent_ms,
at_ms]`` its decision fell in (:func:`may_have_expired`, :func:`released_before`), and an
exchange about a job whose enqueue is not acknowledged yet (a lease answered before the
enqueue's answer arrived) is kept aside (``orphans``) and folded right after the enqueue that
acknowledges the job: the one order the real-time constraints allow.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, Literal

import attrs

from qmodel.history import Exchange
from qmodel.protocol import fold_waiting

__all__ = [
    "JobSpec",
    "JobsState",
    "Lease",
    "Release",
    "describe",
    "may_have_expired",
    "released_before",
    "replay",
    "step",
]

ReleaseOp = Literal["ack", "nack"]


@attrs.frozen
class Lease:
    """A lease the queue granted: its decision fell between ``sent_ms`` and ``at_ms``."""

    job: str
    token: str
    worker: str
    sent_ms: int
    at_ms: int
    seq: int
    visibility_ms: int


@attrs.frozen
class Release:
    """An ack or nack sent with ``token``: ``status`` ``None`` when it was never answered (it
    may have taken effect any time after ``sent_ms``)."""

    job: str
    token: str
    op: ReleaseOp
    sent_ms: int
    at_ms: int | None
    seq: int
    status: int | None
    #: The job's state the answer gave (``acked``, ``queued``, ``dead``), if any.
    state: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def may_have_happened(self) -> bool:
        """Answered 2xx, or never answered."""
        return self.status is None or self.ok


@attrs.frozen(kw_only=True)
class JobSpec:
    """One acknowledged job as the model sees it."""

    id: str
    key: str
    acked_seq: int
    acked_ms: int
    leases: tuple[Lease, ...] = ()
    releases: tuple[Release, ...] = ()
    #: An ack of it was answered 2xx.
    done: bool = False
    #: A nack of it was answered with state ``dead``.
    dead: bool = False

    def lease_of(self, token: str) -> Lease | None:
        """The lease granted with ``token``, if the model saw it."""
        return next((lease for lease in self.leases if lease.token == token), None)


def _frozen(d: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(d))


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@attrs.frozen(kw_only=True)
class JobsState:
    """The model's state: acknowledged jobs in acknowledgement order, keys, orphans."""

    jobs: Mapping[str, JobSpec] = attrs.field(factory=_empty)
    order: tuple[str, ...] = ()
    #: Idempotency key -> the ids acknowledged under it, in order (more than one: a duplicate).
    keys: Mapping[str, tuple[str, ...]] = attrs.field(factory=_empty)
    #: Exchanges about a job whose enqueue is not acknowledged yet, by job id, in answer order.
    orphans: Mapping[str, tuple[Exchange, ...]] = attrs.field(factory=_empty)
    #: Grows with every lease and release recorded (the settle's measure of progress).
    changes: int = 0

    def unfinished(self) -> list[JobSpec]:
        """Acknowledged jobs not known to be acked or dead-lettered."""
        return [j for i in self.order if not ((j := self.jobs[i]).done or j.dead)]

    def _put(self, job: JobSpec, *, new: bool = False, change: bool = True) -> JobsState:
        jobs = dict(self.jobs)
        jobs[job.id] = job
        return attrs.evolve(
            self,
            jobs=_frozen(jobs),
            order=self.order + (job.id,) if new else self.order,
            changes=self.changes + (1 if change else 0),
        )


def may_have_expired(first: Lease, second: Lease) -> bool:
    """Whether ``first`` may have run out before ``second`` was decided: the latest moment of
    the second decision is a visibility timeout or more after the earliest of the first."""
    return second.at_ms - first.sent_ms >= first.visibility_ms


def released_before(job: JobSpec, first: Lease, second: Lease) -> bool:
    """Whether an ack or nack of ``first``'s token may have taken effect before ``second`` was
    decided: one answered 2xx or never answered, sent no later than ``second`` was answered
    (within one millisecond the order is open)."""
    return any(
        r.token == first.token and r.may_have_happened and r.sent_ms <= second.at_ms
        for r in job.releases
    )


def _answer(ex: Exchange) -> dict[str, Any]:
    return ex.answer if isinstance(ex.answer, dict) else {}


def _job_of(ex: Exchange) -> str | None:
    """The job an exchange is about: the id it was sent for, or the job a lease handed out."""
    if ex.message_id is not None:
        return ex.message_id
    if ex.kind == "lease":
        job = _answer(ex).get("job")
        if isinstance(job, dict) and isinstance(job.get("id"), str):
            return job["id"]
    return None


def step(state: JobsState, ex: Exchange) -> JobsState:
    """The model after one exchange (pure; ``state`` is left as it was)."""
    if ex.kind == "enqueue":
        return _enqueued(state, ex) if ex.ok else state
    if ex.kind not in ("lease", "ack", "nack"):
        return state
    if ex.kind == "lease" and ex.status != 200:
        return state
    job_id = _job_of(ex)
    if job_id is None:
        return state
    if job_id not in state.jobs:
        # Its enqueue may have taken effect without its answer having arrived yet.
        orphans = dict(state.orphans)
        orphans[job_id] = orphans.get(job_id, ()) + (ex,)
        return attrs.evolve(state, orphans=_frozen(orphans))
    job = state.jobs[job_id]
    body = ex.body if isinstance(ex.body, dict) else {}
    if ex.kind == "lease":
        token = _answer(ex).get("lease")
        if not isinstance(token, str):
            return state
        visibility = body.get("visibility_ms")
        lease = Lease(
            job=job_id,
            token=token,
            worker=str(body.get("worker") or ex.actor),
            sent_ms=ex.sent_ms,
            at_ms=ex.answered_ms if ex.answered_ms is not None else ex.sent_ms,
            seq=ex.seq,
            visibility_ms=visibility if isinstance(visibility, int) else 0,
        )
        return state._put(attrs.evolve(job, leases=job.leases + (lease,)))
    token = body.get("lease")
    if not isinstance(token, str):
        return state
    answered = _answer(ex).get("state")
    release = Release(
        job=job_id,
        token=token,
        op="ack" if ex.kind == "ack" else "nack",
        sent_ms=ex.sent_ms,
        at_ms=ex.answered_ms,
        seq=ex.seq,
        status=ex.status,
        state=answered if isinstance(answered, str) else None,
    )
    done = job.done or (release.op == "ack" and release.ok)
    dead = job.dead or (release.op == "nack" and release.ok and release.state == "dead")
    return state._put(attrs.evolve(job, releases=job.releases + (release,), done=done, dead=dead))


def _enqueued(state: JobsState, ex: Exchange) -> JobsState:
    """The model after an acknowledged enqueue: the job under the id the answer names, filed
    under the key the client sent; then whatever was already seen of it (``orphans``)."""
    sent = ex.body if isinstance(ex.body, dict) else {}
    job_id = _answer(ex).get("id")
    key = sent.get("key")
    if not isinstance(job_id, str) or not isinstance(key, str):
        return state
    ids = state.keys.get(key, ())
    if job_id not in ids:
        keys = dict(state.keys)
        keys[key] = ids + (job_id,)
        state = attrs.evolve(state, keys=_frozen(keys))
    if job_id in state.jobs:
        return state  # a retry answered with the id already acknowledged
    job = JobSpec(
        id=job_id,
        key=key,
        acked_seq=ex.seq,
        acked_ms=ex.answered_ms if ex.answered_ms is not None else ex.sent_ms,
    )
    state = state._put(job, new=True, change=False)
    return fold_waiting(state, job_id, step)


def describe(state: JobsState, job_id: str) -> str | None:
    """What the model expects of job ``job_id``, in words for a report (``None``: it was never
    acknowledged, so nothing was promised)."""
    job = state.jobs.get(job_id)
    if job is None:
        return None
    what = "acked" if job.done else "dead-lettered" if job.dead else "not yet done"
    leases = len(job.leases)
    return f"key {job.key}, {what}, {leases} lease{'' if leases == 1 else 's'} seen"


def replay(exchanges: Iterable[Exchange]) -> JobsState:
    """Fold ``exchanges`` into a fresh model."""
    state = JobsState()
    for ex in exchanges:
        state = step(state, ex)
    return state
