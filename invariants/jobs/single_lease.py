"""At most one live lease per job: no job is leased while another lease of it may still be live.
A violation is two leases of one job, with different tokens, whose windows overlap in every
order the real-time constraints allow.

Each lease was decided somewhere between its sending and its answer
(:class:`qmodel.protocols.jobs.spec.Lease`). Two leases are fine when either may have been
decided a visibility timeout or more after the other (the earlier ran out,
:func:`~qmodel.protocols.jobs.spec.may_have_expired`), or when an ack or nack of either's token
that was answered 2xx, or never answered, was sent before the other was answered (it may have
given the job back first, :func:`~qmodel.protocols.jobs.spec.released_before`). While an ack or
nack of the job is in flight, the check waits for its answer.

Two live leases come from a lease that trusts a stale view of which jobs are free
(``JOBS_STALE_LIST``) or whose check and set are split by an await (``JOBS_LEASE_RACE``).
"""

from __future__ import annotations

from qmodel.invariants._common import first_paragraph

from qmodel.check import CheckContext, Invariant, Violation
from qmodel.protocols.jobs.spec import JobSpec, Lease, may_have_expired, released_before

__all__ = ["INVARIANT", "check", "overlapping"]

ID = "single-lease"


def overlapping(job: JobSpec) -> tuple[Lease, Lease] | None:
    """The first two leases of ``job`` (answer order) that were certainly live together."""
    leases = job.leases
    for i, first in enumerate(leases):
        for second in leases[i + 1 :]:
            if first.token == second.token:
                continue
            apart = (
                may_have_expired(first, second)
                or may_have_expired(second, first)
                or released_before(job, first, second)
                or released_before(job, second, first)
            )
            if not apart:
                return first, second
    return None


def check(ctx: CheckContext) -> Violation | None:
    """The first job (acknowledgement order) with two leases live together, unless an ack or
    nack of it is still in flight."""
    releasing = {mid for kind, mid in ctx.in_flight if kind in ("ack", "nack")}
    for job_id in ctx.spec.order:
        job = ctx.spec.jobs[job_id]
        if job_id in releasing:
            continue
        found = overlapping(job)
        if found is None:
            continue
        first, second = found
        return Violation(
            invariant=ID,
            summary=(
                f"job {job_id} was leased to {second.worker} (seq {second.seq}) while the lease "
                f"of {first.worker} (seq {first.seq}, {first.visibility_ms} ms) was still live"
            ),
            message_ids=(job_id,),
            exchanges=(first.seq, second.seq),
            values={
                "workers": (first.worker, second.worker),
                "windows_ms": ((first.sent_ms, first.at_ms), (second.sent_ms, second.at_ms)),
                "visibility_ms": first.visibility_ms,
            },
        )
    return None


INVARIANT = Invariant(id=ID, kind="safety", doc=first_paragraph(__doc__), check=check)
