"""The recent-messages cache tells the truth once things calm down: each message appears once,
a finished message shows its final status, and no recent message has been erased from it. A
violation is, in the settled listing, a duplicated id, a stale status on a complete or failed
human message, or one of the newest acknowledged messages missing.

The settled listing is :attr:`~qmodel.protocols.chat.observe.Settled.listing` (``GET
/api/comments?limit=200`` from a location that never read before, after every staleness window):
what the cache, not any single message key, says. The three rules, reported in this order:

(a) **unique**: no id is listed twice (the first duplicated id, in listing order);
(b) **converged**: every listed human message the spec knows whose spec status is terminal
    (``complete``, ``failed``) is listed with that ``botParams.status``; all stale entries are
    reported together (``GHOST_PENDING``: the cache says pending, the key says complete);
(c) **no erasure**: every message among the newest ``cache_size`` acknowledged messages
    (acknowledgement order, human and AI) is listed, less one place for each listed message
    whose post was never answered (it landed; the cache keeps it by right); all missing ones
    are reported together
    (``CACHE_LOST_UPDATE``, ``STATUS_WRITE_CLOBBERS_CACHE``, ``STALE_CACHE_RMW``: a
    read-modify-write of the cache from an old copy).

No listing (the probe failed) checks nothing here; ``ack-durable`` and ``platform`` see that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from qmodel.invariants._common import (
    first_paragraph,
    listed_id,
    listed_status,
    messages_text,
    probe_seqs,
    sorted_seqs,
)

from qmodel.check import CheckContext, Invariant, Violation
from qmodel.protocols.chat.spec import TERMINAL, SpecState

__all__ = ["INVARIANT", "check"]

ID = "cache-coherent"


def _duplicate(
    ctx: CheckContext, listing: Sequence[Mapping[str, Any]], cited: tuple[int, ...]
) -> Violation | None:
    positions: dict[str, list[int]] = {}
    for pos, item in enumerate(listing):
        mid = listed_id(item)
        if mid is not None:
            positions.setdefault(mid, []).append(pos)
    first = next((mid for mid, at in positions.items() if len(at) > 1), None)
    if first is None:
        return None
    at = tuple(positions[first])
    known = ctx.spec.messages.get(first)
    return Violation(
        invariant=ID,
        summary=f"message {first} is listed {len(at)} times in the settled listing",
        message_ids=(first,),
        exchanges=sorted_seqs(cited + ((known.acked_seq,) if known is not None else ())),
        values={"rule": "unique", "count": len(at), "positions": at},
    )


def _terminal_seq(spec: SpecState, mid: str, status: str) -> int | None:
    """The ``seq`` of the exchange that gave ``mid`` its terminal ``status``."""
    for t in reversed(spec.transitions):
        if t.message_id == mid and t.after == status:
            return t.seq
    return None


def _stale(
    ctx: CheckContext, listing: Sequence[Mapping[str, Any]], cited: tuple[int, ...]
) -> Violation | None:
    spec = ctx.spec
    listed: dict[str, Any] = {}
    expected: dict[str, str] = {}
    seqs = list(cited)
    for item in listing:
        mid = listed_id(item)
        m = spec.messages.get(mid) if mid is not None else None
        if m is None or m.kind != "human" or m.status not in TERMINAL or m.id in listed:
            continue
        shown = listed_status(item)
        if shown != m.status:
            listed[m.id] = shown
            expected[m.id] = str(m.status)
            seq = _terminal_seq(spec, m.id, str(m.status))
            seqs.extend(s for s in (seq,) if s is not None)
    if not listed:
        return None
    ids = tuple(listed)
    labels = {i: f"{listed[i]}, not {expected[i]}" for i in ids}
    word = "a stale status" if len(ids) == 1 else "stale statuses"
    return Violation(
        invariant=ID,
        summary=f"the settled listing shows {word} for {messages_text(ids, labels)}",
        message_ids=ids,
        exchanges=sorted_seqs(seqs),
        values={"rule": "converged", "listed": listed, "expected": expected},
    )


def _erased(
    ctx: CheckContext, listing: Sequence[Mapping[str, Any]], cited: tuple[int, ...]
) -> Violation | None:
    spec = ctx.spec
    present = {mid for item in listing if (mid := listed_id(item)) is not None}
    # A listed message nobody was told about (a post whose answer was lost, whose write landed)
    # takes a place in the cache legitimately: the window of must-be-listed messages shrinks
    # by one for each.
    window = ctx.params["cache_size"] - sum(1 for mid in present if mid not in spec.messages)
    # "Newest" by acknowledgement and by timestamp: a cache keeps the newest by one or the
    # other, so only a message newest by both must be there (no false alarm at the boundary).
    by_ack = spec.order[-window:] if window > 0 else ()
    by_time = (
        {
            m.id
            for m in sorted(spec.messages.values(), key=lambda m: (m.timestamp or 0, m.acked_seq))[
                -window:
            ]
        }
        if window > 0
        else set()
    )
    newest = [mid for mid in by_ack if mid in by_time]
    missing = tuple(mid for mid in newest if mid not in present)
    if not missing:
        return None
    verb = "is" if len(missing) == 1 else "are"
    return Violation(
        invariant=ID,
        summary=(
            f"{messages_text(missing)} {verb} missing from the settled listing though among the "
            f"{ctx.params['cache_size']} newest acknowledged messages"
        ),
        message_ids=missing,
        exchanges=sorted_seqs([spec.messages[mid].acked_seq for mid in missing] + list(cited)),
        values={
            "rule": "no erasure",
            "missing": missing,
            "cache_size": ctx.params["cache_size"],
            "listed": len(listing),
        },
    )


def check(ctx: CheckContext) -> Violation | None:
    """Rule (a), then (b), then (c) on the settled listing (eventual: ``None`` before the world
    is settled or when there is no listing)."""
    if ctx.settled is None or ctx.settled.listing is None:
        return None
    listing = ctx.settled.listing
    cited = probe_seqs(ctx, "/api/comments")
    for rule in (_duplicate, _stale, _erased):
        found = rule(ctx, listing, cited)
        if found is not None:
            return found
    return None


INVARIANT = Invariant(id=ID, kind="eventual", doc=first_paragraph(__doc__), check=check)
