"""An ack or nack with a stale lease is refused: once a job has been leased again, the earlier
lease's token no longer acks or nacks it. A violation is an ack or nack answered 2xx whose
token's lease was certainly superseded before the ack or nack was sent.

Certainly: another lease of the same job was sent after the token's lease was answered (so it
was decided later) and was answered before the ack or nack was sent (so it was decided
earlier), both by at least a millisecond of the virtual clock. Where the order is ambiguous,
the ack or nack may have come first and is accepted. The queue must answer such a request 409;
accepting it lets a consumer whose lease ran out finish work another consumer now holds.

Stale acks are accepted by a queue without fencing tokens (``JOBS_NO_FENCING``).
"""

from __future__ import annotations

from qmodel.invariants._common import first_paragraph

from qmodel.check import CheckContext, Invariant, Violation
from qmodel.protocols.jobs.spec import JobSpec, Lease, Release

__all__ = ["INVARIANT", "check", "stale"]

ID = "stale-ack"


def stale(job: JobSpec) -> tuple[Release, Lease, Lease] | None:
    """The first accepted release of ``job`` with a superseded token: the release, its lease
    and the lease that superseded it."""
    for release in job.releases:
        if not release.ok:
            continue
        own = job.lease_of(release.token)
        if own is None:
            continue
        for later in job.leases:
            if (
                later.token != release.token
                and later.sent_ms > own.at_ms
                and later.at_ms < release.sent_ms
            ):
                return release, own, later
    return None


def check(ctx: CheckContext) -> Violation | None:
    """The first job (acknowledgement order) with an accepted ack or nack of a stale lease."""
    for job_id in ctx.spec.order:
        found = stale(ctx.spec.jobs[job_id])
        if found is None:
            continue
        release, own, later = found
        return Violation(
            invariant=ID,
            summary=(
                f"job {job_id}: a {release.op} with the lease of {own.worker} (seq {own.seq}) "
                f"was answered {release.status} though {later.worker} had leased the job again "
                f"(seq {later.seq}) before it was sent"
            ),
            message_ids=(job_id,),
            exchanges=(own.seq, later.seq, release.seq),
            values={
                "op": release.op,
                "stale_token": release.token,
                "current_token": later.token,
                "status": release.status,
            },
        )
    return None


INVARIANT = Invariant(id=ID, kind="safety", doc=first_paragraph(__doc__), check=check)
