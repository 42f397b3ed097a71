"""An acknowledged enqueue is never lost: once the world is settled, every job whose ``POST
/jobs`` was answered 2xx is still known to the queue. A violation lists the acknowledged jobs
whose status read (``GET /jobs/{id}``, from a location that never read before, after every
staleness window passed) did not answer 200 with the job.

The status reads are the settle probe's
(:class:`qmodel.protocols.jobs.protocol.Settled`); a read that got no usable answer finds
nothing, so a queue that cannot show its jobs once settled breaks this too.
"""

from __future__ import annotations

from qmodel.invariants._common import first_paragraph, sorted_seqs

from qmodel.check import CheckContext, Invariant, Violation

__all__ = ["INVARIANT", "check"]

ID = "ack-durable"


def check(ctx: CheckContext) -> Violation | None:
    """The acknowledged jobs the settled queue does not know (eventual: ``None`` before the
    world is settled)."""
    settled = ctx.settled
    if settled is None:
        return None
    spec = ctx.spec
    lost = tuple(i for i in spec.order if settled.states.get(i) is None)
    if not lost:
        return None
    one = len(lost) == 1
    return Violation(
        invariant=ID,
        summary=(
            f"job{'' if one else 's'} {', '.join(lost)} {'was' if one else 'were'} acknowledged "
            f"but, once settled, the queue does not know {'it' if one else 'them'}"
        ),
        message_ids=lost,
        exchanges=sorted_seqs(
            [spec.jobs[i].acked_seq for i in lost]
            + [s for i in lost if (s := settled.probe_seqs.get(i)) is not None]
        ),
        values={"lost": lost, "answers": {i: settled.answers.get(i) for i in lost}},
    )


INVARIANT = Invariant(id=ID, kind="eventual", doc=first_paragraph(__doc__), check=check)
