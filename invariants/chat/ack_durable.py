"""A message the chat acknowledged is never lost: once the world is settled, every human message
whose POST was answered 200 is either answered or still where the bot can find it (in the
listing or the pending queue). A violation lists the acknowledged messages that are neither.

"Answered" is :attr:`qmodel.protocols.chat.spec.MessageSpec.answered`: terminal, replied to, or
PATCHed ``processed``. "Where the bot can find it" is the settled probes of
:class:`~qmodel.protocols.chat.observe.Settled`: the message's id in ``listing`` (``GET
/api/comments``) or in ``pending`` (``GET /api/queue/pending``). A probe that got no usable answer
(``None``) finds nothing, so a target that cannot show its messages once settled breaks this too.

This is the weaker sibling of ``pending-visible``: a message still waiting in the queue passes
here, and fails there only if the bot never gets to it.
"""

from __future__ import annotations

from qmodel.invariants._common import first_paragraph, listed_id, messages_text, sorted_seqs

from qmodel.check import CheckContext, Invariant, Violation

__all__ = ["INVARIANT", "check"]

ID = "ack-durable"


def check(ctx: CheckContext) -> Violation | None:
    """The acknowledged, unanswered human messages missing from both settled probes (eventual:
    ``None`` before the world is settled)."""
    settled = ctx.settled
    if settled is None:
        return None
    found: set[str] = set()
    for items in (settled.listing, settled.pending, settled.everything):
        found.update(i for item in items or () if (i := listed_id(item)) is not None)
    lost = [m for m in ctx.spec.humans() if not m.answered and m.id not in found]
    if not lost:
        return None
    ids = tuple(m.id for m in lost)
    verb = "was" if len(ids) == 1 else "were"
    are = "is" if len(ids) == 1 else "are"
    return Violation(
        invariant=ID,
        summary=(
            f"{messages_text(ids)} {verb} acknowledged but, once settled, {are} neither answered "
            "nor in the listing or the pending queue"
        ),
        message_ids=ids,
        exchanges=sorted_seqs([m.acked_seq for m in lost] + list(settled.probe_seqs)),
        values={
            "lost": ids,
            "statuses": {m.id: m.status for m in lost},
            "listed": None if settled.listing is None else len(settled.listing),
            "pending": None if settled.pending is None else len(settled.pending),
        },
    )


INVARIANT = Invariant(id=ID, kind="eventual", doc=first_paragraph(__doc__), check=check)
