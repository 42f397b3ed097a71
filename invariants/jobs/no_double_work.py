"""No job is done twice unless its lease expired first: under one idempotency key, at most one
ack is accepted, except that a job whose lease may have run out before it was leased again may
be acked by both holders. A violation is two accepted acks under one key that no expiry
explains.

The key is the one the producer sent (``POST /jobs`` body), so a retried enqueue that made a
second job for the same key and had both acked counts as the same work done twice. Two acks of
the same job are explained when either's lease may have been decided a visibility timeout or
more after the other's (:func:`qmodel.protocols.jobs.spec.may_have_expired`); two acks of two
jobs of one key never are.

Work is done twice by an enqueue whose idempotency key is read stale
(``JOBS_IDEMPOTENCY_STALE``), and by a lease of a job that was already acked
(``JOBS_STALE_LIST``).
"""

from __future__ import annotations

from qmodel.invariants._common import first_paragraph

from qmodel.check import CheckContext, Invariant, Violation
from qmodel.protocols.jobs.spec import JobsState, Lease, Release, may_have_expired

__all__ = ["INVARIANT", "check", "done_twice"]

ID = "no-double-work"

Done = tuple[Release, Lease | None]


def _explained(a: Done, b: Done) -> bool:
    (ra, la), (rb, lb) = a, b
    if ra.job != rb.job or la is None or lb is None:
        return False
    return may_have_expired(la, lb) or may_have_expired(lb, la)


def done_twice(spec: JobsState, key: str) -> tuple[Done, Done] | None:
    """The first two accepted acks (answer order) under ``key`` that no expiry explains."""
    acks: list[Done] = []
    for job_id in spec.keys.get(key, ()):
        job = spec.jobs.get(job_id)
        if job is None:
            continue
        for r in job.releases:
            if r.op == "ack" and r.ok and all(r.token != d[0].token for d in acks):
                acks.append((r, job.lease_of(r.token)))
    acks.sort(key=lambda d: d[0].seq)
    for i, a in enumerate(acks):
        for b in acks[i + 1 :]:
            if not _explained(a, b):
                return a, b
    return None


def check(ctx: CheckContext) -> Violation | None:
    """The first key (first acknowledgement order) whose work was done twice."""
    spec = ctx.spec
    seen: set[str] = set()
    for job_id in spec.order:
        key = spec.jobs[job_id].key
        if key in seen:
            continue
        seen.add(key)
        found = done_twice(spec, key)
        if found is None:
            continue
        (ra, la), (rb, lb) = found
        jobs = (ra.job,) if ra.job == rb.job else (ra.job, rb.job)
        how = (
            f"job {ra.job} was acked twice"
            if ra.job == rb.job
            else f"jobs {ra.job} and {rb.job} were both acked"
        )
        return Violation(
            invariant=ID,
            summary=(
                f"the work of key {key} was done twice: {how} (seq {ra.seq} and {rb.seq}) and "
                "no lease had run out in between"
            ),
            message_ids=jobs,
            exchanges=tuple(sorted({ra.seq, rb.seq} | {x.seq for x in (la, lb) if x is not None})),
            values={"key": key, "jobs": jobs, "tokens": (ra.token, rb.token)},
        )
    return None


INVARIANT = Invariant(id=ID, kind="safety", doc=first_paragraph(__doc__), check=check)
