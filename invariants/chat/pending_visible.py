"""Every message a user posted gets dealt with: once the world is settled (traffic and faults
stopped, leases and staleness windows passed, the bots run fairly), each acknowledged human
message has been answered. A violation lists the acknowledged human messages still unanswered,
each with the status the spec gives it.

"Dealt with" means terminal: the acknowledgements say complete or failed (or PATCHed
``processed``), or the settled listing shows the message complete or failed. A reply alone is
not enough: a message answered but left ``processing`` is still claimed by a bot that died
between reply and complete (``CRASH_AFTER_REPLY``). A message still ``pending`` was never offered
to a bot (the cache lost it, ``CACHE_LOST_UPDATE``, or trimmed it, ``CACHE_TRIM_DROPS_PENDING``).
"""

from __future__ import annotations

from qmodel.invariants._common import first_paragraph, messages_text, sorted_seqs

from qmodel.check import CheckContext, Invariant, Violation

__all__ = ["INVARIANT", "check"]

ID = "pending-visible"


def check(ctx: CheckContext) -> Violation | None:
    """The unanswered acknowledged human messages (eventual: ``None`` before the world is
    settled)."""
    if ctx.settled is None:
        return None
    listed = {
        m.get("id"): (m.get("botParams") or {}).get("status")
        for m in (*ctx.settled.everything, *(ctx.settled.listing or ()))
    }
    stuck = [m for m in ctx.spec.unfinished() if listed.get(m.id) not in ("complete", "failed")]
    if not stuck:
        return None
    ids = tuple(m.id for m in stuck)
    statuses = {m.id: m.status for m in stuck}
    verb = "was" if len(ids) == 1 else "were"
    return Violation(
        invariant=ID,
        summary=f"{messages_text(ids, statuses)} {verb} never finished once settled",
        message_ids=ids,
        exchanges=sorted_seqs(m.acked_seq for m in stuck),
        values={"unanswered": ids, "statuses": statuses},
    )


INVARIANT = Invariant(
    id=ID, kind="eventual", doc=first_paragraph(__doc__), check=check, needs_worker=True
)
