"""The reference model: what the queue should have done, given what was acknowledged.

A pure step function over immutable state (``step(state, exchange) -> state``): it never
mutates, it reads nothing but its arguments. It folds the history of exchanges into what the
system has promised: which messages were acknowledged (a POST answered 200), which claims,
completions, failures, PATCHes and replies were acknowledged, and so what each message's status
must be. The invariants compare the world against it.

Only acknowledged exchanges (2xx) change the model; a refused or unanswered request promised
nothing. What a client sent is the truth about what it posted (its kind, what it replies to);
the answer says only that it was acknowledged, and under which id (the id sent, when the answer
names none).

Exchanges are folded as their answers arrive, but a request takes effect before its answer
reaches the client, and another request may see that effect first: a claim can return a message
whose POST is still waiting for its answer. Such an exchange about a message the model does not
know yet is kept aside (``orphans``) and folded right after the POST that acknowledges the
message, which is the one order the real-time constraints allow (the POST took effect before
the claim was decided).

Transitions the queue should never have made (a claim of a finished message, two claims in one
pending period) are recorded, not rejected: the spec says what happened to the promises, the
invariants judge.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, Literal

import attrs

from qmodel.history import Exchange
from qmodel.protocol import fold_waiting

__all__ = [
    "Claim",
    "MessageSpec",
    "SpecState",
    "Status",
    "TERMINAL",
    "Transition",
    "describe",
    "replay",
    "step",
]

Status = Literal["pending", "processing", "complete", "failed"]
TERMINAL: frozenset[str] = frozenset({"complete", "failed"})


@attrs.frozen
class Claim:
    """An acknowledged claim: who, when it was answered, in which exchange, when it was sent.

    The object decided somewhere between ``sent_ms`` and ``at_ms``.
    """

    worker: str
    at_ms: int
    seq: int
    sent_ms: int | None = None


@attrs.frozen
class Transition:
    """A status change the acknowledgements imply, with the exchange that implied it."""

    message_id: str
    before: str
    after: str
    seq: int


@attrs.frozen(kw_only=True)
class MessageSpec:
    """One acknowledged message as the spec sees it."""

    id: str
    kind: str
    author: str
    acked_seq: int
    acked_ms: int
    timestamp: int | None
    reply_to: str | None = None
    #: Human messages only: the status the acknowledgements imply.
    status: Status | None = None
    #: Acknowledged claims in the current pending period (a fail or an expired lease starts a
    #: new period).
    claims: tuple[Claim, ...] = ()
    #: Ids of acknowledged AI replies to this message.
    replies: tuple[str, ...] = ()
    processed: bool = False
    #: A claim, fail or complete of it was sent and never answered: it may or may not have
    #: happened, so the next claim may begin a new period.
    uncertain: bool = False

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def answered(self) -> bool:
        """Finished from the user's point of view: terminal, or replied to."""
        return self.terminal or bool(self.replies) or self.processed


def _frozen(d: Mapping[str, MessageSpec]) -> Mapping[str, MessageSpec]:
    return MappingProxyType(dict(d))


@attrs.frozen(kw_only=True)
class SpecState:
    """The model's state: acknowledged messages in acknowledgement order, and transitions."""

    messages: Mapping[str, MessageSpec] = attrs.field(factory=lambda: MappingProxyType({}))
    order: tuple[str, ...] = ()
    transitions: tuple[Transition, ...] = ()
    #: Acknowledged exchanges about a message whose POST is not acknowledged yet, by message
    #: id, in the order they were answered: folded once it is.
    orphans: Mapping[str, tuple[Exchange, ...]] = attrs.field(factory=lambda: MappingProxyType({}))
    #: A claim older than this may be taken over (a lease); ``None``: never.
    lease_ms: int | None = 60_000

    #: :meth:`humans`, computed once per state (a state never changes; every step makes a new
    #: one), since the safety invariants ask for it after every rule.
    _humans: tuple[MessageSpec, ...] | None = attrs.field(
        default=None, init=False, eq=False, repr=False
    )

    def humans(self) -> list[MessageSpec]:
        if self._humans is None:
            found = tuple(m for i in self.order if (m := self.messages[i]).kind == "human")
            object.__setattr__(self, "_humans", found)
            return list(found)
        return list(self._humans)

    def open(self) -> list[MessageSpec]:
        """Acknowledged human messages not yet answered."""
        return [m for m in self.humans() if not m.answered]

    def unfinished(self) -> list[MessageSpec]:
        """Acknowledged human messages whose acknowledged status is not terminal."""
        return [m for m in self.humans() if not m.terminal and not m.processed]

    def _put(
        self, msg: MessageSpec, *, new: bool = False, transition: Transition | None = None
    ) -> SpecState:
        messages = dict(self.messages)
        messages[msg.id] = msg
        return attrs.evolve(
            self,
            messages=_frozen(messages),
            order=self.order + (msg.id,) if new else self.order,
            transitions=self.transitions + (transition,) if transition else self.transitions,
        )


def _earliest(claim: Claim) -> int:
    """The earliest moment ``claim`` may have been decided: when it was sent."""
    return claim.sent_ms if claim.sent_ms is not None else claim.at_ms


def _mid(ex: Exchange) -> str | None:
    if ex.message_id is not None:
        return ex.message_id
    return None


def _status_change(
    state: SpecState, msg: MessageSpec, after: str, ex: Exchange, **changes: Any
) -> SpecState:
    before = msg.status or "pending"
    t = Transition(msg.id, before, after, ex.seq) if before != after else None
    return state._put(attrs.evolve(msg, status=after, **changes), transition=t)


def step(state: SpecState, ex: Exchange) -> SpecState:
    """The model after one exchange (pure; ``state`` is left as it was)."""
    if ex.status is None and ex.kind in ("claim", "fail", "complete", "patch"):
        mid = _mid(ex)
        if mid is not None and mid in state.messages:
            return state._put(attrs.evolve(state.messages[mid], uncertain=True))
        return state
    if not ex.ok:
        return state
    answer = ex.answer if isinstance(ex.answer, dict) else {}
    if ex.kind == "post":
        return _posted(state, ex, answer)
    mid = _mid(ex)
    if mid is None and ex.kind == "claim-next" and isinstance(answer.get("message"), dict):
        mid = answer["message"].get("id")
    if not isinstance(mid, str):
        return state
    if mid not in state.messages:
        # Its POST may have taken effect without its answer having arrived yet.
        orphans = dict(state.orphans)
        orphans[mid] = orphans.get(mid, ()) + (ex,)
        return attrs.evolve(state, orphans=MappingProxyType(orphans))
    msg = state.messages[mid]
    if ex.kind in ("claim", "claim-next"):
        if answer.get("success") is False:
            return state
        worker = (ex.body or {}).get("workerId") or ex.actor
        claim = Claim(worker, ex.answered_ms or ex.sent_ms, ex.seq, ex.sent_ms)
        # The earlier lease may have run out if it could have. Each claim was decided somewhere
        # between its sending and its answer, in either order (a slow answer can come after a
        # later claim's), so the lease could be over when one claim's latest decision comes a
        # lease or more after the other's earliest.
        previous = msg.claims[-1] if msg.claims else None
        lease_over = (
            state.lease_ms is not None
            and previous is not None
            and max(claim.at_ms - _earliest(previous), previous.at_ms - _earliest(claim))
            >= state.lease_ms
        )
        fresh = lease_over or msg.status == "pending" or msg.uncertain
        claims = (claim,) if fresh else msg.claims + (claim,)
        return _status_change(state, msg, "processing", ex, claims=claims, uncertain=False)
    if ex.kind == "complete":
        if msg.status == "complete":
            return state
        return _status_change(state, msg, "complete", ex)
    if ex.kind == "fail":
        after = answer.get("status") or "pending"
        claims = () if after == "pending" else msg.claims
        return _status_change(state, msg, after, ex, claims=claims)
    if ex.kind == "patch":
        fields = (ex.body or {}).get("botParams") or {}
        if fields.get("processed"):
            if msg.status == "complete":
                return state._put(attrs.evolve(msg, processed=True))
            return _status_change(state, msg, "complete", ex, processed=True)
    return state


def _posted(state: SpecState, ex: Exchange, answer: dict[str, Any]) -> SpecState:
    """The model after an acknowledged POST: the message the client sent, under the id the
    answer names (else the id sent), then whatever was already seen of it (``orphans``)."""
    sent = ex.body if isinstance(ex.body, dict) else {}
    mid = answer.get("id") if isinstance(answer.get("id"), str) else sent.get("id")
    if not isinstance(mid, str) or mid in state.messages:
        return state
    kind = sent.get("message-type") or "human"
    reply_to = sent.get("replyTo")
    stamp = answer.get("timestamp")
    if not isinstance(stamp, int) or isinstance(stamp, bool):
        stamp = sent.get("timestamp")
    msg = MessageSpec(
        id=mid,
        kind=kind,
        author=ex.actor,
        acked_seq=ex.seq,
        acked_ms=ex.answered_ms or ex.sent_ms,
        timestamp=stamp if isinstance(stamp, int) else None,
        reply_to=reply_to if isinstance(reply_to, str) else None,
        status="pending" if kind == "human" else None,
    )
    state = state._put(msg, new=True)
    if msg.reply_to and msg.reply_to in state.messages:
        original = state.messages[msg.reply_to]
        state = state._put(attrs.evolve(original, replies=original.replies + (mid,)))
    return fold_waiting(state, mid, step)


def describe(state: SpecState, mid: str) -> str | None:
    """What the model expects of message ``mid``, in words for a report (``None``: it was never
    acknowledged, so nothing was promised)."""
    m = state.messages.get(mid)
    if m is None:
        return None
    if m.kind == "AI" or m.reply_to:
        return f"an AI reply to {m.reply_to}" if m.reply_to else "an AI message"
    replies = len(m.replies)
    parts = [str(m.status or "acknowledged")]
    if m.claims:
        parts.append(f"claimed by {', '.join(c.worker for c in m.claims)}")
    parts.append(f"{replies} repl{'y' if replies == 1 else 'ies'}")
    return ", ".join(parts)


def replay(exchanges: Iterable[Exchange], *, lease_ms: int | None = 60_000) -> SpecState:
    """Fold ``exchanges`` into a fresh model."""
    state = SpecState(lease_ms=lease_ms)
    for ex in exchanges:
        state = step(state, ex)
    return state
