"""A message the chat acknowledged can be found by its id: a PATCH, claim, complete or fail of it
never answers 404 "not found". A violation is such a 404 for an id whose POST had been answered
200 before the request was sent.

"Before" is strict on both clocks: the POST's exchange comes earlier in the history
(``acked_seq`` below the 404's ``seq``) and its answer arrived no later than the request left
(``acked_ms`` at most ``sent_ms``), so a request racing its own message's POST is not blamed.
Only ids the spec knows count: a 404 for an id never acknowledged is the right answer.

A 404 here makes the bot give up on a message it already answered, then answer it again
(``TS_KEY_404``: the key rebuilt from a client timestamp that differs from the id's;
``LIST_FIRST_PAGE_404``: the key looked up in one ``list()`` page).
"""

from __future__ import annotations

from qmodel.invariants._common import first_paragraph, request_text

from qmodel.check import CheckContext, Invariant, Violation

__all__ = ["INVARIANT", "check"]

ID = "addressable"

#: The exchanges that address one message by id (PROTOCOL.md, Endpoints).
ADDRESSING = frozenset({"patch", "claim", "complete", "fail"})


def check(ctx: CheckContext) -> Violation | None:
    """The first 404 (history order) for an id acknowledged before the request was sent."""
    messages = ctx.spec.messages
    for ex in ctx.history:
        if ex.kind not in ADDRESSING or ex.status != 404 or ex.message_id is None:
            continue
        m = messages.get(ex.message_id)
        if m is None or not (m.acked_seq < ex.seq and m.acked_ms <= ex.sent_ms):
            continue
        return Violation(
            invariant=ID,
            summary=(
                f"{request_text(ex)} answered 404 though the message was acknowledged "
                f"at seq {m.acked_seq}"
            ),
            message_ids=(m.id,),
            exchanges=(m.acked_seq, ex.seq),
            values={
                "kind": ex.kind,
                "status": ex.status,
                "body": ex.answer,
                "acked_ms": m.acked_ms,
                "sent_ms": ex.sent_ms,
            },
        )
    return None


INVARIANT = Invariant(id=ID, kind="safety", doc=first_paragraph(__doc__), check=check)
