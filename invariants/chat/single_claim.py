"""Only one bot works on a message at a time: while a message waits to be answered, at most one
claim of it succeeds. A violation is a message with two or more claims answered 200 in the same
pending period.

A pending period starts when the message is posted and again when its claimer gives it back (a
``fail`` answered ``pending``) or its claim's lease runs out (the claim is older than the spec's
``SpecState.lease_ms``); the spec's ``MessageSpec.claims`` (:mod:`qmodel.protocols.chat.spec`) holds
the claims of the current period, so two entries there are two bots that both believe they own the
message. While a ``fail`` of the message is sent and not yet answered, the period may already have
ended, so the check waits for its answer. A claim of a finished message counts too: it lands in the
same period as the claim that finished it.

Two winners come from a claim that reads, checks ``pending`` and writes without atomicity
(``CLAIM_NOT_ATOMIC``); two winners mean two replies.
"""

from __future__ import annotations

from qmodel.invariants._common import first_paragraph

from qmodel.check import CheckContext, Invariant, Violation

__all__ = ["INVARIANT", "check"]

ID = "single-claim"


def check(ctx: CheckContext) -> Violation | None:
    """The first message (acknowledgement order) with more than one claim in its period, unless
    a ``fail`` of it is still in flight (it may already have given the message back)."""
    giving_back = {mid for kind, mid in ctx.in_flight if kind == "fail"}
    for m in ctx.spec.humans():
        if len(m.claims) > 1 and m.id not in giving_back:
            by = ", ".join(f"{c.worker} at seq {c.seq}" for c in m.claims)
            return Violation(
                invariant=ID,
                summary=(
                    f"message {m.id} was claimed {len(m.claims)} times in one pending period "
                    f"(by {by})"
                ),
                message_ids=(m.id,),
                exchanges=tuple(c.seq for c in m.claims),
                values={
                    "workers": tuple(c.worker for c in m.claims),
                    "claimed_ms": tuple(c.at_ms for c in m.claims),
                    "status": m.status,
                },
            )
    return None


INVARIANT = Invariant(id=ID, kind="safety", doc=first_paragraph(__doc__), check=check)
