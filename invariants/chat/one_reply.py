"""Every human message gets one AI reply: never two at any time, and exactly one once the world
is settled unless the queue gave up on it (status failed). A violation is a message with two
or more acknowledged replies, or, once settled, a message that is not failed and has none.

A reply counts when its POST (``message-type: AI``, ``replyTo`` the human message's id) was answered
200: that is what users see in the chat. The count comes from
:attr:`qmodel.protocols.chat.spec.MessageSpec.replies`, so it does not depend on what any cache
shows.

Two replies come from a bot answering a message again after a 404 (``TS_KEY_404``), two bots
both winning a claim (``CLAIM_NOT_ATOMIC``) or a crash between reply and complete
(``CRASH_AFTER_REPLY``); no reply from a message the bot never sees.
"""

from __future__ import annotations

from qmodel.invariants._common import first_paragraph, messages_text, sorted_seqs

from qmodel.check import CheckContext, Invariant, Violation

__all__ = ["INVARIANT", "check"]

ID = "one-reply"


def check(ctx: CheckContext) -> Violation | None:
    """The first human message (acknowledgement order) with two replies; once settled, the
    messages not failed and without a reply."""
    spec = ctx.spec
    humans = spec.humans()
    for m in humans:
        if len(m.replies) > 1:
            return Violation(
                invariant=ID,
                summary=f"message {m.id} got {len(m.replies)} AI replies ({', '.join(m.replies)})",
                message_ids=(m.id, *m.replies),
                exchanges=sorted_seqs(
                    [m.acked_seq] + [spec.messages[r].acked_seq for r in m.replies]
                ),
                values={"replies": m.replies, "count": len(m.replies), "status": m.status},
            )
    if ctx.settled is None:
        return None
    # A reply can be stored though its POST was never answered (the bot died waiting): what
    # the settled listing shows counts too.
    listed: dict[str, set[str]] = {}
    failed: set[str] = set()
    for item in (*(ctx.settled.listing or ()), *ctx.settled.everything):
        if item.get("replyTo") and isinstance(item.get("id"), str):
            listed.setdefault(item["replyTo"], set()).add(item["id"])
        if (item.get("botParams") or {}).get("status") == "failed":
            failed.add(item.get("id"))
    for m in humans:
        replies = set(m.replies) | listed.get(m.id, set())
        if len(replies) > 1:
            shown = tuple(sorted(replies))
            return Violation(
                invariant=ID,
                summary=(
                    f"message {m.id} has {len(shown)} AI replies once settled ({', '.join(shown)})"
                ),
                message_ids=(m.id, *shown),
                exchanges=sorted_seqs([m.acked_seq, *ctx.settled.probe_seqs]),
                values={"replies": shown, "count": len(shown), "status": m.status},
            )
    unreplied = [
        m
        for m in humans
        if m.status != "failed" and m.id not in failed and not m.replies and m.id not in listed
    ]
    if not unreplied:
        return None
    ids = tuple(m.id for m in unreplied)
    statuses = {m.id: m.status for m in unreplied}
    return Violation(
        invariant=ID,
        summary=f"{messages_text(ids, statuses)} got no AI reply once settled",
        message_ids=ids,
        exchanges=sorted_seqs(m.acked_seq for m in unreplied),
        values={"unreplied": ids, "statuses": statuses},
    )


INVARIANT = Invariant(
    id=ID, kind="safety", doc=first_paragraph(__doc__), check=check, needs_worker=True
)
