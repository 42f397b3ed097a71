"""Checking an empty queue is cheap: a bot's poll of the pending queue that finds nothing costs
a few KV reads and no list or write. A violation names the first idle poll (history order)
that listed keys, wrote, or read more than the allowed number of keys, with its KV counters.

An idle poll is an exchange of kind ``pending`` (``GET /api/queue/pending``) answered 2xx whose
answer offers no message: an empty array, or ``{"pending": []}`` (PROTOCOL.md accepts both
shapes). The bound is the protocol's ``idle_poll_reads`` parameter (3 by
default), zero writes and zero lists. Bots poll every few seconds for ever, so a poll that
lists the keys or rewrites the cache each time (``GHOST_PENDING``: re-verify and self-heal on
every poll) is the bill that grows without bound while nothing happens.
"""

from __future__ import annotations

from typing import Any

from qmodel.invariants._common import first_paragraph

from qmodel.check import CheckContext, Invariant, Violation

__all__ = ["INVARIANT", "check"]

ID = "cost"


def _offers_nothing(answer: Any) -> bool:
    """Whether a pending answer, in either shape, is an empty list of messages."""
    items = answer.get("pending") if isinstance(answer, dict) else answer
    return isinstance(items, list) and not items


def check(ctx: CheckContext) -> Violation | None:
    """The first idle pending poll over budget."""
    limit = ctx.params["idle_poll_reads"]
    for ex in ctx.history:
        if ex.kind != "pending" or not ex.ok or not _offers_nothing(ex.answer):
            continue
        if ex.kv_writes == 0 and ex.kv_lists == 0 and ex.kv_reads <= limit:
            continue
        return Violation(
            invariant=ID,
            summary=(
                f"an idle pending poll by {ex.actor} cost {ex.counters()} (allowed: at most "
                f"{limit} reads, no write, no list)"
            ),
            exchanges=(ex.seq,),
            values={
                "counters": ex.counters(),
                "kv_reads": ex.kv_reads,
                "kv_writes": ex.kv_writes,
                "kv_lists": ex.kv_lists,
                "idle_poll_reads": limit,
            },
        )
    return None


INVARIANT = Invariant(id=ID, kind="safety", doc=first_paragraph(__doc__), check=check)
