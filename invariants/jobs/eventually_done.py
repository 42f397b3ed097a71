"""Every job is eventually acked or dead-lettered: once the world is settled (traffic and
crashes stopped, every lease and staleness window passed, the consumers run on a fair schedule),
the status read of every acknowledged job says ``acked`` or ``dead``. A violation lists the
jobs left ``queued`` or ``leased``.

A job the queue no longer knows is ``ack-durable``'s to report, not this one's. Jobs stay
undone when a queue hides a job from every lease (a lease that never runs out, a discovery that
never sees it) or when an ack is accepted but not stored.
"""

from __future__ import annotations

from qmodel.invariants._common import first_paragraph, sorted_seqs

from qmodel.check import CheckContext, Invariant, Violation

__all__ = ["DONE", "INVARIANT", "check"]

ID = "eventually-done"

#: The states a settled job may be in.
DONE = frozenset({"acked", "dead"})


def check(ctx: CheckContext) -> Violation | None:
    """The acknowledged jobs whose settled state is neither acked nor dead (eventual: ``None``
    before the world is settled)."""
    settled = ctx.settled
    if settled is None:
        return None
    spec = ctx.spec
    left = {
        i: state
        for i in spec.order
        if (state := settled.states.get(i)) is not None and state not in DONE
    }
    if not left:
        return None
    ids = tuple(left)
    one = len(ids) == 1
    return Violation(
        invariant=ID,
        summary=(
            f"once settled, job{'' if one else 's'} "
            f"{', '.join(f'{i} ({s})' for i, s in left.items())} "
            f"{'is' if one else 'are'} neither acked nor dead-lettered"
        ),
        message_ids=ids,
        exchanges=sorted_seqs(
            [spec.jobs[i].acked_seq for i in ids]
            + [s for i in ids if (s := settled.probe_seqs.get(i)) is not None]
        ),
        values={"states": dict(left)},
    )


INVARIANT = Invariant(
    id=ID, kind="eventual", doc=first_paragraph(__doc__), check=check, needs_worker=True
)
