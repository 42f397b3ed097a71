"""Everyone in the chat sees every message: a frontend that keeps polling eventually receives
each acknowledged message, human or AI, that it did not post itself. A violation names the
first frontend (by name) that never received some of them, and lists those messages.

What a frontend received is :attr:`~qmodel.protocols.chat.observe.Settled.seen`: the ids its polls
(``GET /api/comments?after=...``) returned up to the end of the settled run. Its own posts are
left out on both sides: a frontend shows its own message at once, without a poll.

A message is skipped for good when the ``after`` cursor (client clocks, a client ``timestamp``
that differs from the id's) moves past it before KV staleness lets it appear
(``POLL_MISSES_MESSAGE``), or when the cache never held it (``CACHE_LOST_UPDATE``).
"""

from __future__ import annotations

from qmodel.invariants._common import first_paragraph, messages_text, sorted_seqs

from qmodel.check import CheckContext, Invariant, Violation

__all__ = ["INVARIANT", "check"]

ID = "poll-delivery"


def check(ctx: CheckContext) -> Violation | None:
    """The first frontend (sorted by name) missing messages others posted (eventual: ``None``
    before the world is settled)."""
    if ctx.settled is None:
        return None
    spec = ctx.spec
    for name in sorted(ctx.settled.seen):
        seen = ctx.settled.seen[name]
        missing = tuple(
            mid for mid in spec.order if spec.messages[mid].author != name and mid not in seen
        )
        if not missing:
            continue
        return Violation(
            invariant=ID,
            summary=f"frontend {name} never received {messages_text(missing)} by its polls",
            message_ids=missing,
            exchanges=sorted_seqs(spec.messages[mid].acked_seq for mid in missing),
            values={"frontend": name, "missing": missing, "received": len(seen)},
        )
    return None


INVARIANT = Invariant(id=ID, kind="eventual", doc=first_paragraph(__doc__), check=check)
