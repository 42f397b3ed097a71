"""A message's status only moves forward: pending, then processing when a bot claims it, then
complete; a fail sends it back to pending or on to failed; once complete or failed it stays so.
A violation is an acknowledged change out of a terminal status, or a message completed while
pending (a complete that no claim preceded).

The changes are :attr:`qmodel.protocols.chat.spec.SpecState.transitions`: the status each
acknowledged exchange implies, in history order. Legal moves: pending → processing (claim),
processing → complete (complete or PATCH), processing → pending or failed (fail), pending → complete
by a PATCH (the PATCH era has no claim), pending → failed (fail), and a claim taking over an expired
lease (processing stays processing). Illegal: anything from complete or failed (a claim, fail or
complete of a finished message answered 200), and pending → complete by ``complete``, which means a
claimer whose claim was already given back finished the message behind the queue's back."""

from __future__ import annotations

from qmodel.invariants._common import exchange_at, first_paragraph

from qmodel.check import CheckContext, Invariant, Violation
from qmodel.protocols.chat.spec import TERMINAL, Transition

__all__ = ["INVARIANT", "check"]

ID = "status-fsm"


def _terminal_since(transitions: tuple[Transition, ...], upto: int, t: Transition) -> int | None:
    """The ``seq`` of the transition before index ``upto`` that made ``t.message_id`` terminal."""
    for earlier in reversed(transitions[:upto]):
        if earlier.message_id == t.message_id and earlier.after == t.before:
            return earlier.seq
    return None


def check(ctx: CheckContext) -> Violation | None:
    """The first illegal transition in history order."""
    transitions = ctx.spec.transitions
    for index, t in enumerate(transitions):
        ex = exchange_at(ctx.history, t.seq)
        by = ex.kind if ex is not None else None
        if t.before in TERMINAL:
            since = _terminal_since(transitions, index, t)
            return Violation(
                invariant=ID,
                summary=(
                    f"message {t.message_id} went from {t.before} to {t.after} "
                    f"({by} at seq {t.seq}) after it was terminal"
                ),
                message_ids=(t.message_id,),
                exchanges=(t.seq,) if since is None else (since, t.seq),
                values={"before": t.before, "after": t.after, "by": by, "terminal_since": since},
            )
        # A design may complete a message with its reply; a complete answered 200 after an
        # acknowledged reply only confirms it.
        replied = (
            bool(ctx.spec.messages[t.message_id].replies)
            if t.message_id in ctx.spec.messages
            else False
        )
        if t.before == "pending" and t.after == "complete" and by == "complete" and not replied:
            return Violation(
                invariant=ID,
                summary=(
                    f"message {t.message_id} went from pending to complete (complete at seq "
                    f"{t.seq}) though no claim held it"
                ),
                message_ids=(t.message_id,),
                exchanges=(t.seq,),
                values={"before": t.before, "after": t.after, "by": by},
            )
    return None


INVARIANT = Invariant(id=ID, kind="safety", doc=first_paragraph(__doc__), check=check)
