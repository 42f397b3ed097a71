"""The ten invariants of ``invariants/`` and their registry, on hand-built histories.

Each history is a list of :class:`~qmodel.history.Exchange` made by :class:`Run` (which numbers them
and moves a virtual clock), folded with :func:`qmodel.protocols.chat.spec.replay`; each invariant
gets at least one history it accepts and one it rejects, with the exact violation."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import pytest
from qmodel.invariants import platform
from qmodel.invariants._common import first_paragraph
from qmodel.invariants.chat import (
    ALL,
    ack_durable,
    addressable,
    cache_coherent,
    cost,
    one_reply,
    pending_visible,
    poll_delivery,
    single_claim,
    status_fsm,
)

from qmodel.check import CheckContext, UnknownInvariant, Violation, select
from qmodel.errors import QmodelError
from qmodel.history import Exchange, History, KvWrite
from qmodel.protocols import get as get_protocol
from qmodel.protocols.chat.observe import Settled
from qmodel.protocols.chat.spec import replay

H1 = "1761333653305-a"
H2 = "1761333653410-b"
X = "1761333653500-x"
Y = "1761333653600-y"

_ROUTES: dict[str, tuple[str, str]] = {
    "post": ("POST", "/api/comments"),
    "list": ("GET", "/api/comments?limit=50"),
    "pending": ("GET", "/api/queue/pending?limit=10"),
    "claim": ("POST", "/api/queue/claim"),
    "complete": ("POST", "/api/queue/complete"),
    "fail": ("POST", "/api/queue/fail"),
}


class Run:
    """Builds a history: each exchange gets the next ``seq``, is sent at the clock's time and
    answered 10 ms later; the clock then moves 100 ms."""

    def __init__(self, start_ms: int = 1_000) -> None:
        self.exchanges: list[Exchange] = []
        self.now = start_ms

    def add(
        self,
        kind: str,
        *,
        actor: str = "fe-1",
        status: int | None = 200,
        answer: Any = None,
        body: Any = None,
        message_id: str | None = None,
        path: str | None = None,
        sent_ms: int | None = None,
        answered_ms: int | None = None,
        **fields: Any,
    ) -> Exchange:
        method, default_path = _ROUTES.get(kind, ("GET", "/"))
        sent = self.now if sent_ms is None else sent_ms
        ex = Exchange(
            seq=len(self.exchanges) + 1,
            actor=actor,
            location="lhr" if actor.startswith("fe") else "ams",
            kind=kind,  # type: ignore[arg-type]
            method="PATCH" if kind == "patch" else method,
            path=path or (f"/api/comments/{message_id}" if kind == "patch" else default_path),
            body=body,
            sent_ms=sent,
            answered_ms=(sent + 10 if answered_ms is None else answered_ms)
            if status is not None
            else None,
            status=status,
            answer=answer,
            message_id=message_id,
            **fields,
        )
        self.exchanges.append(ex)
        self.now += 100
        return ex

    def post(self, mid: str, *, actor: str = "fe-1", reply_to: str | None = None) -> Exchange:
        message: dict[str, Any] = {"id": mid, "text": "hi", "timestamp": self.now}
        if reply_to is not None:
            message.update({"message-type": "AI", "replyTo": reply_to})
        else:
            message.update({"message-type": "human", "botParams": {"status": "pending"}})
        return self.add("post", actor=actor, body=message, answer=message, message_id=mid)

    def claim(self, mid: str, worker: str = "bot-1", *, status: int = 200) -> Exchange:
        answer = {"success": True, "message": {"id": mid}} if status == 200 else {"success": False}
        body = {"messageId": mid, "workerId": worker}
        return self.add(
            "claim", actor=worker, status=status, body=body, answer=answer, message_id=mid
        )

    def complete(self, mid: str, worker: str = "bot-1") -> Exchange:
        body = {"messageId": mid, "workerId": worker}
        return self.add(
            "complete", actor=worker, body=body, answer={"success": True}, message_id=mid
        )

    def fail(self, mid: str, after: str = "pending", worker: str = "bot-1") -> Exchange:
        body = {"messageId": mid, "workerId": worker, "error": "empty generation"}
        answer = {"success": True, "status": after, "attempts": 1}
        return self.add("fail", actor=worker, body=body, answer=answer, message_id=mid)

    def patch(self, mid: str, *, status: int = 200) -> Exchange:
        answer = {"id": mid} if status == 200 else {"error": "Message not found"}
        return self.add(
            "patch",
            actor="bot-1",
            status=status,
            body={"botParams": {"processed": True}},
            answer=answer,
            message_id=mid,
        )

    def answer(self, mid: str, reply: str, worker: str = "bot-1") -> None:
        """The queue era's happy path: claim, reply, complete."""
        self.claim(mid, worker)
        self.post(reply, actor=worker, reply_to=mid)
        self.complete(mid, worker)

    def probe(self, path: str, answer: Any) -> int:
        return self.add("probe", actor="probe", path=path, answer=answer).seq

    def settle(
        self,
        listing: Iterable[Mapping[str, Any]] | None,
        pending: Iterable[Mapping[str, Any]] | None = (),
        seen: Mapping[str, Iterable[str]] | None = None,
    ) -> Settled:
        """The settled observations, with the probes recorded as exchanges like the world's."""
        seqs = []
        listed = None if listing is None else tuple(listing)
        seqs.append(self.probe("/api/comments?limit=200", {"comments": list(listed or ())}))
        waiting = None if pending is None else tuple(pending)
        seqs.append(self.probe("/api/queue/pending?limit=1000", list(waiting or ())))
        return Settled(
            listing=listed,
            pending=waiting,
            seen={k: frozenset(v) for k, v in (seen or {}).items()},
            probe_seqs=tuple(seqs),
        )

    def context(self, settled: Settled | None = None, **params: Any) -> CheckContext:
        return CheckContext(
            history=History(list(self.exchanges)),
            spec=replay(self.exchanges),
            settled=settled,
            params={**get_protocol("queue").params, **params},
        )


def item(mid: str, status: str | None = None, kind: str = "human") -> dict[str, Any]:
    """A listed message as the worker answers it."""
    message: dict[str, Any] = {"id": mid, "message-type": kind}
    if status is not None:
        message["botParams"] = {"status": status}
    return message


# -- ack-durable ---------------------------------------------------------------------------------


def test_ack_durable_accepts_answered_listed_or_pending_messages() -> None:
    """ack-durable holds when each acknowledged message is answered, listed or pending."""
    run = Run()
    run.post(H1)
    run.post(H2)
    run.post("m3")
    run.answer(H1, X)
    ctx = run.context(run.settle(listing=[item("m3", "pending")], pending=[item(H2, "pending")]))
    assert ack_durable.check(ctx) is None


def test_ack_durable_reports_a_message_neither_answered_nor_findable() -> None:
    """ack-durable names an unanswered message absent from the listing and the pending queue."""
    run = Run()
    run.post(H1)
    run.post(H2)
    ctx = run.context(run.settle(listing=[item(H2, "pending")], pending=[]))
    assert ack_durable.check(ctx) == Violation(
        invariant="ack-durable",
        summary=f"message {H1} was acknowledged but, once settled, is neither answered nor in "
        "the listing or the pending queue",
        message_ids=(H1,),
        exchanges=(1, 3, 4),
        values={"lost": (H1,), "statuses": {H1: "pending"}, "listed": 1, "pending": 0},
    )


def test_ack_durable_counts_failed_probes_as_finding_nothing() -> None:
    """ack-durable lists every unanswered message when neither probe answered."""
    run = Run()
    run.post(H1)
    run.post(H2)
    run.claim(H2)
    found = ack_durable.check(run.context(run.settle(listing=None, pending=None)))
    assert found is not None
    assert found.message_ids == (H1, H2)
    assert found.summary.startswith(f"messages {H1}, {H2} were acknowledged but")
    assert found.values["statuses"] == {H1: "pending", H2: "processing"}
    assert found.values["listed"] is None


def test_ack_durable_waits_for_the_settled_world() -> None:
    """ack-durable is eventual: before settling it reports nothing."""
    run = Run()
    run.post(H1)
    assert ack_durable.check(run.context()) is None


# -- one-reply -----------------------------------------------------------------------------------


def test_one_reply_accepts_one_reply_each_and_a_failed_message_without() -> None:
    """one-reply holds with one reply per message, a failed message exempt once settled."""
    run = Run()
    run.post(H1)
    run.post(H2)
    run.answer(H1, X)
    run.claim(H2)
    run.fail(H2, "failed")
    assert one_reply.check(run.context()) is None
    assert one_reply.check(run.context(run.settle(listing=[]))) is None


def test_one_reply_reports_two_replies() -> None:
    """one-reply names the message answered twice and both replies."""
    run = Run()
    run.post(H1)
    run.answer(H1, X)
    run.post(Y, actor="bot-2", reply_to=H1)
    assert one_reply.check(run.context()) == Violation(
        invariant="one-reply",
        summary=f"message {H1} got 2 AI replies ({X}, {Y})",
        message_ids=(H1, X, Y),
        exchanges=(1, 3, 5),
        values={"replies": (X, Y), "count": 2, "status": "complete"},
    )


def test_one_reply_allows_no_reply_until_settled() -> None:
    """one-reply tolerates an unreplied message mid-run but not once settled."""
    run = Run()
    run.post(H1)
    run.post(H2)
    run.answer(H1, X)
    run.claim(H2)
    assert one_reply.check(run.context()) is None
    assert one_reply.check(run.context(run.settle(listing=[]))) == Violation(
        invariant="one-reply",
        summary=f"message {H2} (processing) got no AI reply once settled",
        message_ids=(H2,),
        exchanges=(2,),
        values={"unreplied": (H2,), "statuses": {H2: "processing"}},
    )


def test_one_reply_reports_a_patched_message_without_reply() -> None:
    """one-reply: a message PATCHed processed but never replied to is not answered once."""
    run = Run()
    run.post(H1)
    run.patch(H1)
    found = one_reply.check(run.context(run.settle(listing=[])))
    assert found is not None
    assert found.summary == f"message {H1} (complete) got no AI reply once settled"


# -- single-claim --------------------------------------------------------------------------------


def test_single_claim_accepts_new_periods_after_fail_and_lease() -> None:
    """single-claim holds when a second claim follows a fail or an expired lease or a 409."""
    run = Run()
    run.post(H1)
    run.claim(H1, "bot-1")
    run.claim(H1, "bot-2", status=409)
    run.fail(H1, "pending")
    run.claim(H1, "bot-2")
    run.now += 60_000
    run.claim(H1, "bot-1")
    assert single_claim.check(run.context()) is None


def test_single_claim_accepts_a_slow_answer_to_a_claim_whose_lease_ran_out() -> None:
    """single-claim: a claim sent early and answered late may have been decided first, so a
    later claim answered before it may have taken over its expired lease."""
    run = Run()
    run.post(H1)
    sent_early = run.now
    run.now += 61_000
    body = {"messageId": H1, "workerId": "bot-2"}
    run.add("claim", actor="bot-2", body=body, answer={"success": True}, message_id=H1)
    body = {"messageId": H1, "workerId": "bot-1"}
    run.add(
        "claim",
        actor="bot-1",
        body=body,
        answer={"success": True},
        message_id=H1,
        sent_ms=sent_early,
        answered_ms=run.now,
    )
    assert single_claim.check(run.context()) is None


def test_single_claim_reports_a_slow_answer_within_the_lease() -> None:
    """single-claim: a slow answer whose claim was sent less than a lease before the other's
    answer cannot have expired: two owners."""
    run = Run()
    run.post(H1)
    sent = run.now
    run.now += 30_000
    run.claim(H1, "bot-2")
    body = {"messageId": H1, "workerId": "bot-1"}
    run.add(
        "claim",
        actor="bot-1",
        body=body,
        answer={"success": True},
        message_id=H1,
        sent_ms=sent,
        answered_ms=run.now,
    )
    found = single_claim.check(run.context())
    assert found is not None and found.values["workers"] == ("bot-2", "bot-1")


def test_single_claim_waits_for_a_fail_in_flight() -> None:
    """single-claim: a second claim while the first claimer's fail is sent and unanswered may
    follow that fail; it is reported only if the fail does not give the message back."""
    run = Run()
    run.post(H1)
    run.claim(H1, "bot-1")
    run.claim(H1, "bot-2")
    waiting = run.context()
    assert single_claim.check(attrs.evolve(waiting, in_flight=frozenset({("fail", H1)}))) is None
    assert single_claim.check(waiting) is not None


def test_single_claim_reports_two_winning_claims() -> None:
    """single-claim names the message and both claims' workers and exchanges."""
    run = Run()
    run.post(H1)
    run.claim(H1, "bot-1")
    run.claim(H1, "bot-2")
    assert single_claim.check(run.context()) == Violation(
        invariant="single-claim",
        summary=f"message {H1} was claimed 2 times in one pending period "
        "(by bot-1 at seq 2, bot-2 at seq 3)",
        message_ids=(H1,),
        exchanges=(2, 3),
        values={"workers": ("bot-1", "bot-2"), "claimed_ms": (1110, 1210), "status": "processing"},
    )


# -- status-fsm ----------------------------------------------------------------------------------


def test_status_fsm_accepts_the_legal_moves() -> None:
    """status-fsm holds for claim/complete, fail back and to failed, PATCH from pending."""
    run = Run()
    run.post(H1)
    run.post(H2)
    run.post("m3")
    run.answer(H1, X)
    run.complete(H1)  # completing a complete message again changes nothing
    run.claim(H2)
    run.fail(H2, "pending")
    run.claim(H2)
    run.fail(H2, "failed")
    run.patch("m3")
    assert status_fsm.check(run.context()) is None


def test_status_fsm_reports_a_claim_of_a_complete_message() -> None:
    """status-fsm names the move out of complete and the exchange that made it terminal."""
    run = Run()
    run.post(H1)
    run.answer(H1, X)
    run.claim(H1, "bot-2")
    assert status_fsm.check(run.context()) == Violation(
        invariant="status-fsm",
        summary=f"message {H1} went from complete to processing (claim at seq 5) after it was "
        "terminal",
        message_ids=(H1,),
        exchanges=(4, 5),
        values={"before": "complete", "after": "processing", "by": "claim", "terminal_since": 4},
    )


def test_status_fsm_reports_a_complete_without_claim() -> None:
    """status-fsm rejects pending -> complete by a complete (a stale claimer after a fail)."""
    run = Run()
    run.post(H1)
    run.claim(H1, "bot-1")
    run.fail(H1, "pending")
    run.complete(H1, "bot-1")
    assert status_fsm.check(run.context()) == Violation(
        invariant="status-fsm",
        summary=f"message {H1} went from pending to complete (complete at seq 4) though no "
        "claim held it",
        message_ids=(H1,),
        exchanges=(4,),
        values={"before": "pending", "after": "complete", "by": "complete"},
    )


def test_status_fsm_reports_a_fail_of_a_failed_message() -> None:
    """status-fsm: failed is terminal, a later fail answered pending breaks it."""
    run = Run()
    run.post(H1)
    run.claim(H1)
    run.fail(H1, "failed")
    run.fail(H1, "pending")
    found = status_fsm.check(run.context())
    assert found is not None
    assert found.exchanges == (3, 4)
    assert (found.values["before"], found.values["by"]) == ("failed", "fail")


# -- addressable ---------------------------------------------------------------------------------


def test_addressable_accepts_404s_for_unknown_or_racing_ids() -> None:
    """addressable ignores a 404 for an id never acknowledged or sent before the POST's answer."""
    run = Run()
    run.post(H1)  # sent 1000, answered 1010
    run.patch("never-posted", status=404)
    run.add("claim", actor="bot-1", status=404, message_id=H1, sent_ms=1005, answer={})
    run.post(H2)
    run.patch(H2)
    assert addressable.check(run.context()) is None


def test_addressable_reports_a_404_for_an_acknowledged_id() -> None:
    """addressable names the PATCH that got 404 for an acknowledged message, with its body."""
    run = Run()
    run.post(H1)
    run.post(X, actor="bot-1", reply_to=H1)
    run.patch(H1, status=404)
    assert addressable.check(run.context()) == Violation(
        invariant="addressable",
        summary=f"PATCH /api/comments/{H1} for message {H1} answered 404 though the message "
        "was acknowledged at seq 1",
        message_ids=(H1,),
        exchanges=(1, 3),
        values={
            "kind": "patch",
            "status": 404,
            "body": {"error": "Message not found"},
            "acked_ms": 1010,
            "sent_ms": 1200,
        },
    )


# -- cache-coherent ------------------------------------------------------------------------------


def test_cache_coherent_accepts_a_converged_listing() -> None:
    """cache-coherent holds for unique ids, final statuses and every newest message listed."""
    run = Run()
    run.post(H1)
    run.post(H2)
    run.answer(H1, X)
    listing = [item(X, kind="AI"), item(H2, "pending"), item(H1, "complete")]
    assert cache_coherent.check(run.context(run.settle(listing))) is None
    assert cache_coherent.check(run.context(run.settle(None))) is None
    assert cache_coherent.check(run.context()) is None


def test_cache_coherent_reports_a_duplicate_before_other_rules() -> None:
    """cache-coherent rule (a): the first duplicated id, even when a status is stale too."""
    run = Run()
    run.post(H1)
    run.answer(H1, X)
    listing = [item(X, kind="AI"), item(H1, "pending"), item(H1, "complete")]
    assert cache_coherent.check(run.context(run.settle(listing))) == Violation(
        invariant="cache-coherent",
        summary=f"message {H1} is listed 2 times in the settled listing",
        message_ids=(H1,),
        exchanges=(1, 5),
        values={"rule": "unique", "count": 2, "positions": (1, 2)},
    )


def test_cache_coherent_reports_a_ghost_pending_status() -> None:
    """cache-coherent rule (b): a complete message the listing still shows as pending."""
    run = Run()
    run.post(H1)
    run.post(H2)
    run.answer(H1, X)
    listing = [item(X, kind="AI"), item(H2, "pending"), item(H1, "pending")]
    assert cache_coherent.check(run.context(run.settle(listing))) == Violation(
        invariant="cache-coherent",
        summary=f"the settled listing shows a stale status for message {H1} (pending, not "
        "complete)",
        message_ids=(H1,),
        exchanges=(5, 6),
        values={"rule": "converged", "listed": {H1: "pending"}, "expected": {H1: "complete"}},
    )


def test_cache_coherent_reports_erased_recent_messages_only() -> None:
    """cache-coherent rule (c): only the newest cache_size acknowledged messages must be listed."""
    run = Run()
    for mid in ("m1", "m2", "m3", "m4"):
        run.post(mid)
    settled = run.settle([item("m4", "pending"), item("m2", "pending")])
    assert cache_coherent.check(run.context(settled, cache_size=1)) is None
    assert cache_coherent.check(run.context(settled, cache_size=3)) == Violation(
        invariant="cache-coherent",
        summary="message m3 is missing from the settled listing though among the 3 newest "
        "acknowledged messages",
        message_ids=("m3",),
        exchanges=(3, 5),
        values={"rule": "no erasure", "missing": ("m3",), "cache_size": 3, "listed": 2},
    )


def test_cache_coherent_gives_a_place_to_each_listed_message_never_acknowledged() -> None:
    """cache-coherent rule (c): a listed message whose post was never answered takes one of
    the cache's places by right, so the oldest of the window may fall out; a second missing
    message is still reported."""
    run = Run()
    for mid in ("m1", "m2", "m3"):
        run.post(mid)
    listing = [item("lost-answer", kind="AI"), item("m3", "pending"), item("m2", "pending")]
    assert cache_coherent.check(run.context(run.settle(listing), cache_size=3)) is None
    listing = [item("lost-answer", kind="AI"), item("m3", "pending")]
    found = cache_coherent.check(run.context(run.settle(listing), cache_size=3))
    assert found is not None and found.message_ids == ("m2",)


# -- pending-visible -----------------------------------------------------------------------------


def test_pending_visible_accepts_all_answered() -> None:
    """pending-visible holds when every human message is complete, failed or PATCHed."""
    run = Run()
    run.post(H1)
    run.post(H2)
    run.post("m3")
    run.answer(H1, X)
    run.claim(H2)
    run.fail(H2, "failed")
    run.patch("m3")
    assert pending_visible.check(run.context(run.settle([]))) is None


def test_pending_visible_reports_unanswered_messages_with_status() -> None:
    """pending-visible lists every unanswered human message with its spec status."""
    run = Run()
    run.post(H1)
    run.post(H2)
    run.claim(H2)
    assert pending_visible.check(run.context()) is None
    assert pending_visible.check(run.context(run.settle([]))) == Violation(
        invariant="pending-visible",
        summary=f"messages {H1} (pending), {H2} (processing) were never finished once settled",
        message_ids=(H1, H2),
        exchanges=(1, 2),
        values={"unanswered": (H1, H2), "statuses": {H1: "pending", H2: "processing"}},
    )


def test_pending_visible_a_reply_without_complete_is_not_finished() -> None:
    """pending-visible reports a message replied to but left processing (the bot died)."""
    run = Run()
    run.post(H1)
    run.claim(H1)
    run.post(X, actor="bot-1", reply_to=H1)
    found = pending_visible.check(run.context(run.settle([])))
    assert found is not None and found.message_ids == (H1,)
    assert found.values["statuses"] == {H1: "processing"}


def test_pending_visible_trusts_a_settled_listing_that_shows_it_complete() -> None:
    """pending-visible accepts a message the settled listing shows complete."""
    run = Run()
    run.post(H1)
    run.claim(H1)
    run.post(X, actor="bot-1", reply_to=H1)
    listing = [{"id": H1, "message-type": "human", "botParams": {"status": "complete"}}]
    assert pending_visible.check(run.context(run.settle(listing))) is None


# -- poll-delivery -------------------------------------------------------------------------------


def test_poll_delivery_accepts_frontends_that_saw_others_messages() -> None:
    """poll-delivery holds when each frontend saw every message but its own."""
    run = Run()
    run.post(H1, actor="fe-1")
    run.post(H2, actor="fe-2")
    run.answer(H1, X)
    seen = {"fe-1": {H2, X}, "fe-2": {H1, X}}
    assert poll_delivery.check(run.context(run.settle([], seen=seen))) is None


def test_poll_delivery_reports_the_first_frontend_by_name() -> None:
    """poll-delivery names the first frontend (sorted) and all messages it missed."""
    run = Run()
    run.post(H1, actor="fe-1")
    run.post(H2, actor="fe-2")
    run.answer(H1, X)
    seen = {"fe-2": {H1}, "fe-1": {H2}}
    assert poll_delivery.check(run.context(run.settle([], seen=seen))) == Violation(
        invariant="poll-delivery",
        summary=f"frontend fe-1 never received message {X} by its polls",
        message_ids=(X,),
        exchanges=(4,),
        values={"frontend": "fe-1", "missing": (X,), "received": 1},
    )


# -- platform ------------------------------------------------------------------------------------


def test_platform_accepts_4xx_retried_429_and_no_answer() -> None:
    """platform holds for a 4xx, a 429 rewritten with success, a refused request and a crash."""
    run = Run()
    run.post(H1, actor="fe-1")
    run.add("post", status=400, answer={"error": "text is required"})
    run.add("post", status=None, answer=None)
    run.claim(H1)
    run.add(
        "complete",
        actor="bot-1",
        message_id=H1,
        answer={"success": True},
        writes=(KvWrite("recent:comments", 429), KvWrite("recent:comments", 200)),
    )
    run.add(
        "post",
        status=429,
        answer={"error": "rate limited"},
        writes=(KvWrite("comment:m9", 429),),
    )
    assert platform.check(run.context()) is None


def test_platform_reports_a_5xx() -> None:
    """platform rule 5xx: a valid request answered 500."""
    run = Run()
    run.post(H1)
    run.add(
        "claim",
        actor="bot-1",
        status=500,
        message_id=H1,
        answer={"error": "boom"},
        errors=("uncaught KeyError: 'botParams'",),
    )
    assert platform.check(run.context()) == Violation(
        invariant="platform",
        summary=f"POST /api/queue/claim for message {H1} answered 500 to a valid request",
        message_ids=(H1,),
        exchanges=(2,),
        values={
            "rule": "5xx",
            "status": 500,
            "body": {"error": "boom"},
            "errors": ("uncaught KeyError: 'botParams'",),
            "kv_errors": (),
        },
    )


def test_platform_reports_the_ttl_rule_before_the_500_it_caused() -> None:
    """platform rule expiration: an Invalid expiration_ttl KV error outranks the 500."""
    error = "KV PUT failed: 400 Invalid expiration_ttl of 30. Expiration TTL must be at least 60."
    run = Run()
    run.add("post", status=500, answer={"error": error}, kv_errors=(error,), message_id=H1)
    found = platform.check(run.context())
    assert found == Violation(
        invariant="platform",
        summary=f"POST /api/comments for message {H1} wrote to KV with an expiration the "
        "platform refuses (TTL under 60 s)",
        message_ids=(H1,),
        exchanges=(1,),
        values={"rule": "expiration", "status": 500, "kv_error": error},
    )


def test_platform_reports_the_operation_limit() -> None:
    """platform rule op-limit: more than 1000 KV operations in one invocation."""
    error = (
        "KV GET failed: more than 1000 operations in one Worker invocation (the platform's "
        "limit on operations to external services)"
    )
    run = Run()
    run.add("list", actor="bot-1", answer=[], kv_reads=1000, kv_errors=(error,))
    found = platform.check(run.context())
    assert found is not None
    assert (found.values["rule"], found.values["counters"]) == ("op-limit", "[KVr:1000 KVw:0]")
    assert found.message_ids == ()
    assert found.summary == (
        "GET /api/comments?limit=50 went past the limit of KV operations in one invocation"
    )


def test_platform_reports_a_request_that_never_answered() -> None:
    """platform rule no-answer: a request stopped by the step limit (or as hung) is a liveness
    failure, named as such; a request unanswered for another reason (a crash) is not."""
    run = Run()
    stopped = "stopped by the step limit: POST /api/comments took 10000 steps without finishing"
    run.add("post", status=None, answer=None, message_id=H1, errors=(stopped,))
    found = platform.check(run.context())
    assert found is not None and found.values["rule"] == "no-answer"
    assert found.summary == (
        f"POST /api/comments for message {H1} was never answered (liveness): the worker ran "
        "past the step limit"
    )
    crashed = Run()
    crashed.add("post", status=None, answer=None, message_id=H1, errors=("the client crashed",))
    assert platform.check(crashed.context()) is None


def test_platform_reports_a_swallowed_429() -> None:
    """platform rule swallowed-429: a 2xx whose refused write was never rewritten."""
    run = Run()
    writes = (
        KvWrite("recent:comments", 200),
        KvWrite("recent:comments", 429),
        KvWrite("comment:m1", 200),
    )
    run.add("post", message_id=H1, answer={"id": H1}, body={"id": H1}, writes=writes)
    assert platform.check(run.context()) == Violation(
        invariant="platform",
        summary=f"POST /api/comments for message {H1} answered 200 though its KV write of "
        "recent:comments was refused with 429 and never retried",
        message_ids=(H1,),
        exchanges=(1,),
        values={
            "rule": "swallowed-429",
            "status": 200,
            "key": "recent:comments",
            "writes": (("recent:comments", 200), ("recent:comments", 429), ("comment:m1", 200)),
        },
    )


def test_platform_a_failed_rewrite_does_not_save_a_429() -> None:
    """platform rule swallowed-429: only a later write of the key answered 200 repairs it."""
    run = Run()
    writes = (KvWrite("recent:comments", 429), KvWrite("recent:comments", 400))
    run.add("complete", actor="bot-1", message_id=H1, answer={"success": True}, writes=writes)
    found = platform.check(run.context())
    assert found is not None
    assert (found.values["rule"], found.values["key"]) == ("swallowed-429", "recent:comments")


# -- cost ----------------------------------------------------------------------------------------


def test_cost_accepts_cheap_idle_polls_and_busy_polls() -> None:
    """cost holds for idle polls within budget in both shapes and ignores non-idle ones."""
    run = Run()
    run.add("pending", actor="bot-1", answer=[], kv_reads=1)
    run.add("pending", actor="bot-1", answer={"pending": [], "kvStats": {}}, kv_reads=3)
    run.add("pending", actor="bot-1", answer=[item(H1, "pending")], kv_reads=9, kv_writes=1)
    run.add("pending", actor="bot-1", status=500, answer={"error": "x"}, kv_lists=1)
    run.add("probe", actor="probe", path="/api/queue/pending?limit=1000", answer=[], kv_lists=1)
    assert cost.check(run.context()) is None


def test_cost_reports_an_idle_poll_that_lists() -> None:
    """cost names the first idle poll over budget with its counters."""
    run = Run()
    run.add("pending", actor="bot-1", answer=[], kv_reads=1)
    run.add("pending", actor="bot-2", answer={"pending": []}, kv_reads=1, kv_lists=1)
    assert cost.check(run.context()) == Violation(
        invariant="cost",
        summary="an idle pending poll by bot-2 cost [KVr:1 KVw:0 KVl:1] (allowed: at most 3 "
        "reads, no write, no list)",
        exchanges=(2,),
        values={
            "counters": "[KVr:1 KVw:0 KVl:1]",
            "kv_reads": 1,
            "kv_writes": 0,
            "kv_lists": 1,
            "idle_poll_reads": 3,
        },
    )


def test_cost_read_budget_comes_from_the_context() -> None:
    """cost: four reads break the default budget of 3 and pass a budget of 4."""
    run = Run()
    run.add("pending", actor="bot-1", answer=[], kv_reads=4)
    found = cost.check(run.context())
    assert found is not None and found.values["counters"] == "[KVr:4 KVw:0]"
    assert cost.check(run.context(idle_poll_reads=4)) is None


# -- the registry --------------------------------------------------------------------------------

KNOWN = (
    "ack-durable",
    "one-reply",
    "single-claim",
    "status-fsm",
    "addressable",
    "cache-coherent",
    "pending-visible",
    "poll-delivery",
    "platform",
    "cost",
)
MODULES = (
    ack_durable,
    one_reply,
    single_claim,
    status_fsm,
    addressable,
    cache_coherent,
    pending_visible,
    poll_delivery,
    platform,
    cost,
)


def test_the_chat_protocol_lists_the_ten_invariants_in_design_order() -> None:
    """Each chat era checks the ten invariants, in DESIGN.md's table order."""
    assert tuple(i.id for i in ALL) == KNOWN
    assert ALL == tuple(m.INVARIANT for m in MODULES)
    for era in ("patch", "queue", "do"):
        assert get_protocol(era).invariants == ALL


def test_each_invariant_has_its_kind_and_docstring() -> None:
    """Each INVARIANT's doc is its module docstring's first paragraph; kinds are as designed."""
    eventual = {"ack-durable", "cache-coherent", "pending-visible", "poll-delivery"}
    for module in MODULES:
        inv = module.INVARIANT
        assert inv.doc == first_paragraph(module.__doc__) and len(inv.doc) > 80
        assert inv.kind == ("eventual" if inv.id in eventual else "safety")
        folder = "qmodel.invariants" if inv.id == "platform" else "qmodel.invariants.chat"
        assert module.__name__ == f"{folder}.{inv.id.replace('-', '_')}"


def test_eventual_invariants_wait_for_the_settled_world() -> None:
    """Every eventual invariant returns None without settled observations."""
    run = Run()
    run.post(H1, actor="fe-2")
    ctx = run.context()
    assert [i.check(ctx) for i in ALL if i.kind == "eventual"] == [None] * 4


def test_get_and_select() -> None:
    """A protocol's invariant() finds by id; select keeps the protocol's order, drops repeats,
    None means all, and skipped ids are left out."""
    assert get_protocol("queue").invariant("cost") is cost.INVARIANT
    assert select(ALL, None) == ALL
    assert select(ALL, ["cost", "one-reply", "cost"]) == (one_reply.INVARIANT, cost.INVARIANT)
    assert select(ALL, "platform") == (platform.INVARIANT,)
    assert select(ALL, []) == ()
    assert select(ALL, None, skipped=["platform"]) == tuple(i for i in ALL if i.id != "platform")


def test_unknown_id_lists_closest_matches_and_known_ids() -> None:
    """An unknown id raises UnknownInvariant naming the closest matches and every known id."""
    with pytest.raises(UnknownInvariant) as caught:
        select(ALL, ["one-replies"])
    err = caught.value
    assert isinstance(err, QmodelError) and isinstance(err, KeyError)
    assert str(err) == (
        "unknown invariant 'one-replies'. Closest matches: one-reply. Known ids: ack-durable, "
        "one-reply, single-claim, status-fsm, addressable, cache-coherent, pending-visible, "
        "poll-delivery, platform, cost."
    )
    assert (err.id, err.matches, err.known) == ("one-replies", ("one-reply",), KNOWN)


def test_unknown_id_in_select_without_close_match() -> None:
    """select raises for an unknown id; with no close match the message omits that part."""
    with pytest.raises(UnknownInvariant) as caught:
        select(ALL, ["cost", "zzz"])
    assert str(caught.value) == "unknown invariant 'zzz'. Known ids: " + ", ".join(KNOWN) + "."
