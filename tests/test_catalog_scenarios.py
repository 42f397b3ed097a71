"""Each catalog bug, driven by a hand-written schedule against its target, and the same script
against the sound design.

These prove the simulator's fidelity: the mechanism each seed describes happens in the
simulated platform when the schedule is the one the seed describes, and the sound design's
answer to the same script is correct. Finding such schedules without a script is the state
machine's job.
"""

from __future__ import annotations

from typing import Any

import pytest

from qmodel.catalog import CATALOG, entry
from qmodel.scenario import Scenario
from qmodel.workers import SoundWorker


def design(catalog_id: str, **kw: Any) -> Scenario:
    return Scenario.of(entry(catalog_id).target(), **kw)


def sound(**kw: Any) -> Scenario:
    return Scenario.of(SoundWorker(), **kw)


def post_body(sc: Scenario, text: str, *, id_ms: int | None = None, ts: int | None = None) -> dict:
    id_ms = sc.now if id_ms is None else id_ms
    return {
        "id": f"{id_ms}-{text}",
        "timestamp": id_ms if ts is None else ts,
        "text": text,
        "username": "human",
        "message-type": "human",
    }


def cache_ids(sc: Scenario, name: str, location: str = "Z") -> list[str]:
    """The ids a fresh reader at an unused location gets from ``GET /api/comments``."""
    r = sc.call(name, "GET", "/api/comments", query={"limit": 500}, location=location)
    assert r.status == 200
    return [m["id"] for m in r.json_body()["comments"]]


def test_every_catalog_id_has_a_scenario() -> None:
    """Every catalog id of the seeds' worker has a scenario in this module (the Queues
    designs' are in test_queues.py)."""
    names = {n[len("test_") :].upper() for n in globals() if n.startswith("test_")}
    missing = [i for i in CATALOG if CATALOG[i].fixes is not None and i not in names]
    assert missing == []


# -- TS_KEY_404 ------------------------------------------------------------------------------


def ts_key_script(sc: Scenario) -> tuple[int, Any]:
    t = sc.now
    # The frontend's two clock reads straddle a millisecond: id from t, timestamp t + 1.
    r = sc.call("post", "POST", "/api/comments", body=post_body(sc, "hello", id_ms=t, ts=t + 1))
    assert r.status == 200
    sc.advance(3_000)
    mid = f"{t}-hello"
    patch = sc.call(
        "patch",
        "PATCH",
        f"/api/comments/{mid}",
        body={"botParams": {"processed": True}},
        location="B",
    )
    return patch.status, sc.call("get", "GET", "/api/comments", location="Z").json_body()


def test_ts_key_404() -> None:
    """PATCH builds comment:{id's timestamp}:{id}, but the key holds the client timestamp: 404."""
    status, listing = ts_key_script(design("TS_KEY_404"))
    assert status == 404
    [msg] = listing["comments"]
    assert msg["botParams"]["processed"] is False  # so the PATCH-era bot answers it again
    status, listing = ts_key_script(sound())
    assert status == 200
    assert listing["comments"][0]["botParams"]["processed"] is True


# -- LIST_FIRST_PAGE_404 -----------------------------------------------------------------------


def first_page_script(sc: Scenario, older: int) -> int:
    # Older messages already stored: their keys sort before the new one's.
    for i in range(older):
        sc.preload(
            f"comment:{sc.now - 10_000_000 + i}:{sc.now - 10_000_000 + i}-old", {"id": "old"}
        )
    t = sc.now
    assert (
        sc.call(
            "post", "POST", "/api/comments", body=post_body(sc, "new", id_ms=t, ts=t + 2)
        ).status
        == 200
    )
    sc.advance(3_000)
    r = sc.call(
        "patch",
        "PATCH",
        f"/api/comments/{t}-new",
        body={"botParams": {"processed": True}},
        location="B",
    )
    return r.status


def test_list_first_page_404() -> None:
    """With 1000 older keys the message's key is not on list()'s first page: 404."""
    assert first_page_script(design("LIST_FIRST_PAGE_404"), 1000) == 404
    assert first_page_script(sound(), 1000) == 200


def test_list_first_page_404_short_page() -> None:
    """A legally short first page (list_complete false) hides the key even among few keys."""
    # kv.list.page = 1: the page holds half of what it could; the new key is on the next page.
    sc = design("LIST_FIRST_PAGE_404", script={"kv.list.page": [1]})
    assert first_page_script(sc, 3) == 404
    assert first_page_script(sound(script={"kv.list.page": [1]}), 3) == 200


# -- CACHE_LOST_UPDATE -------------------------------------------------------------------------


def lost_update_script(sc: Scenario, gap_ms: int) -> list[str]:
    a = post_body(sc, "first")
    b = post_body(sc, "second")
    sc.send("p1", "POST", "/api/comments", body=a, location="A")
    sc.send("p2", "POST", "/api/comments", body=b, location="B")
    # Both requests read the cache before either writes it back.
    sc.run_until("p1", "get recent:comments")
    sc.run_until("p2", "get recent:comments")
    sc.step("p1")  # p1 reads [] ...
    sc.step("p2")  # ... and so does p2
    sc.run("p1")  # p1 writes [first]
    sc.advance(gap_ms)
    sc.run("p2")  # p2 writes [second] over it, or is refused with a 429 it swallows
    assert sc.response("p1").status == 200 and sc.response("p2").status == 200
    sc.settle()
    return sorted(m.split("-", 1)[1] for m in cache_ids(sc, "get"))


def test_cache_lost_update() -> None:
    """Two POSTs interleaved at their cache read leave one message out of recent:comments."""
    # Last writer wins: the second write erases the first message.
    assert lost_update_script(design("CACHE_LOST_UPDATE"), 1_500) == ["second"]
    # Within a second the second write is refused (429) and the worker swallows it.
    sc = design("CACHE_LOST_UPDATE")
    assert lost_update_script(sc, 0) == ["first"]
    assert [str(e) for e in sc.invocation("p2").kv_errors] == [
        "KV PUT failed: 429 Too Many Requests"
    ]
    # Without eventual consistency or rate limits the interleaving alone loses the update.
    assert lost_update_script(design("CACHE_LOST_UPDATE", kv="local"), 0) == ["second"]
    assert lost_update_script(sound(), 1_500) == ["first", "second"]


# -- STATUS_WRITE_CLOBBERS_CACHE ---------------------------------------------------------------


def clobber_script(sc: Scenario) -> list[str]:
    m1 = post_body(sc, "m1")
    assert sc.call("p1", "POST", "/api/comments", body=m1).status == 200
    sc.advance(2_000)
    sc.send(
        "claim",
        "POST",
        "/api/queue/claim",
        body={"messageId": m1["id"], "workerId": "bot-1"},
        location="B",
    )
    # The claim has read the cache snapshot and is about to decide.
    sc.run_until("claim", "POST /claim")
    sc.advance(500)
    assert sc.call("p2", "POST", "/api/comments", body=post_body(sc, "m2")).status == 200
    assert sc.run("claim").status == 200
    sc.settle()
    return sorted(m.split("-", 1)[1] for m in cache_ids(sc, "get"))


def test_status_write_clobbers_cache() -> None:
    """A claim rewrites the whole cache from its snapshot and erases the message posted
    meanwhile."""
    assert clobber_script(design("STATUS_WRITE_CLOBBERS_CACHE")) == ["m1"]
    assert clobber_script(sound()) == ["m1", "m2"]


# -- GHOST_PENDING -----------------------------------------------------------------------------


def ghost_script(sc: Scenario) -> dict[str, Any]:
    m1 = post_body(sc, "m1")
    assert sc.call("p1", "POST", "/api/comments", body=m1, location="A").status == 200
    sc.advance(3_000)
    # The bot at B polls: B's KV cache node now holds recent:comments with m1 pending.
    first = sc.call("poll-1", "GET", "/api/queue/pending", query={"limit": 10}, location="B")
    assert [m["id"] for m in first.json_body()["pending"]] == [m1["id"]]
    assert (
        sc.call(
            "claim",
            "POST",
            "/api/queue/claim",
            body={"messageId": m1["id"], "workerId": "bot-1"},
            location="B",
        ).status
        == 200
    )
    sc.advance(2_000)
    reply = {"text": "hi!", "message-type": "AI", "replyTo": m1["id"], "username": "bot"}
    assert sc.call("reply", "POST", "/api/comments", body=reply, location="B").status == 200
    sc.advance(2_000)
    assert (
        sc.call(
            "complete",
            "POST",
            "/api/queue/complete",
            body={"messageId": m1["id"], "workerId": "bot-1"},
            location="B",
        ).status
        == 200
    )
    sc.advance(3_000)
    # Nothing is pending any more; the bot polls again, 10 s after its first poll.
    idle = sc.call("poll-2", "GET", "/api/queue/pending", query={"limit": 10}, location="B")
    sc.settle()
    return {
        "idle_pending": idle.json_body()["pending"],
        "idle_counters": sc.invocation("poll-2").counters(),
        "cached": sc.kv_json("recent:comments"),
    }


def test_ghost_pending() -> None:
    """An idle poll finds the cache's stale 'pending', re-verifies and rewrites the cache
    ([KVr:1 KVw:1]) from its stale copy, erasing the reply that was cached meanwhile."""
    out = ghost_script(design("GHOST_PENDING"))
    assert out["idle_pending"] == []
    assert out["idle_counters"] == "[KVr:1 KVw:1]"
    texts = [m["text"] for m in out["cached"]]
    assert texts == ["m1"]  # the AI reply is gone from recent:comments
    good = ghost_script(sound())
    assert good["idle_pending"] == []
    assert good["idle_counters"] == "[KVr:0 KVw:0]"


# -- CLAIM_NOT_ATOMIC --------------------------------------------------------------------------


def claim_race_script(sc: Scenario, gap_ms: int) -> list[int]:
    m1 = post_body(sc, "m1")
    assert sc.call("p1", "POST", "/api/comments", body=m1).status == 200
    sc.advance(3_000)
    sc.send(
        "c1",
        "POST",
        "/api/queue/claim",
        body={"messageId": m1["id"], "workerId": "bot-1"},
        location="B",
    )
    sc.send(
        "c2",
        "POST",
        "/api/queue/claim",
        body={"messageId": m1["id"], "workerId": "bot-2"},
        location="C",
    )
    # Both bots read the message while it is pending, then both write 'processing'.
    sc.run_until("c1", "put comment:")
    sc.run_until("c2", "put comment:")
    sc.run("c1")
    sc.advance(gap_ms)
    sc.run("c2")
    return [sc.response("c1").status, sc.response("c2").status]


def test_claim_not_atomic() -> None:
    """Get, check pending, put: two bots both win the claim."""
    assert claim_race_script(design("CLAIM_NOT_ATOMIC"), 1_500) == [200, 200]
    assert claim_race_script(design("CLAIM_NOT_ATOMIC", kv="local"), 0) == [200, 200]
    # Within a second the second put is refused by the platform (a 429 answered 500).
    assert claim_race_script(design("CLAIM_NOT_ATOMIC"), 0) == [200, 500]
    assert claim_race_script(sound(), 1_500) == [200, 409]


# -- CRASH_AFTER_REPLY -------------------------------------------------------------------------


def crash_script(sc: Scenario) -> tuple[str, list[str], int]:
    m1 = post_body(sc, "m1")
    assert sc.call("p1", "POST", "/api/comments", body=m1).status == 200
    sc.advance(3_000)
    assert (
        sc.call(
            "claim",
            "POST",
            "/api/queue/claim",
            body={"messageId": m1["id"], "workerId": "bot-1"},
            location="B",
        ).status
        == 200
    )
    sc.advance(5_000)
    reply = {"text": "hi!", "message-type": "AI", "replyTo": m1["id"], "username": "bot"}
    assert sc.call("reply", "POST", "/api/comments", body=reply, location="B").status == 200
    # The bot dies here: its complete request is cut off before it does anything.
    sc.send(
        "complete",
        "POST",
        "/api/queue/complete",
        body={"messageId": m1["id"], "workerId": "bot-1"},
        location="B",
    )
    sc.kill("complete")
    sc.advance(5 * 60_000)
    status = sc.call("get", "GET", f"/api/comments/{m1['id']}", location="Z").json_body()[
        "botParams"
    ]["status"]
    pending = sc.call("poll", "GET", "/api/queue/pending", query={"limit": 10}, location="C")
    # A restarted bot that still saw it pending would answer it again.
    again = {"text": "hello again", "message-type": "AI", "replyTo": m1["id"], "username": "bot"}
    second = sc.call("reply-2", "POST", "/api/comments", body=again, location="C")
    return status, [m["id"] for m in pending.json_body()["pending"]], second.status


def test_crash_after_reply() -> None:
    """A bot that dies between reply and complete leaves the message processing for good."""
    status, pending, second_reply = crash_script(design("CRASH_AFTER_REPLY"))
    assert status == "processing" and pending == []
    assert second_reply == 200  # nothing stops a second answer either
    status, pending, second_reply = crash_script(sound())
    assert status == "complete" and pending == [] and second_reply == 409


# -- CACHE_TRIM_DROPS_PENDING ------------------------------------------------------------------


def trim_script(sc: Scenario) -> list[str]:
    m1 = post_body(sc, "m1")
    assert sc.call("p1", "POST", "/api/comments", body=m1).status == 200
    # A burst of 200 more messages before the bot polls.
    for i in range(200):
        sc.advance(5)
        burst = {"text": f"burst {i}", "message-type": "AI", "username": "other-bot"}
        assert sc.call(f"b{i}", "POST", "/api/comments", body=burst, location="C").status == 200
    sc.advance(3_000)
    pending = sc.call("poll", "GET", "/api/queue/pending", query={"limit": 10}, location="B")
    return [m["id"] for m in pending.json_body()["pending"]]


def test_cache_trim_drops_pending() -> None:
    """A burst of 200 messages pushes a pending message out of the cache the bot reads."""
    assert trim_script(design("CACHE_TRIM_DROPS_PENDING")) == []
    [mid] = trim_script(sound())
    assert mid.endswith("-m1")


# -- STALE_CACHE_RMW ---------------------------------------------------------------------------


def stale_rmw_script(sc: Scenario) -> list[str]:
    for i, text in enumerate(["m1", "m2", "m3"]):
        assert (
            sc.call(f"p{i}", "POST", "/api/comments", body=post_body(sc, text), location="A").status
            == 200
        )
        sc.advance(2_000)
    sc.settle()
    return sorted(m.split("-", 1)[1] for m in cache_ids(sc, "get"))


def test_stale_cache_rmw() -> None:
    """The cache's single writer reads its own KV location's stale copy and erases a message."""
    # Read-your-own-write fails once (kv.ryw = 1) for the write that adds m2: the writer's
    # location keeps serving [m1] and the next read-modify-write drops m2.
    sc = design("STALE_CACHE_RMW", script={"kv.ryw": [0, 0, 1]})
    assert stale_rmw_script(sc) == ["m1", "m3"]
    assert stale_rmw_script(design("STALE_CACHE_RMW", kv="local")) == ["m1", "m2", "m3"]
    assert stale_rmw_script(sound(script={"kv.ryw": [0, 0, 1]})) == ["m1", "m2", "m3"]


# -- POLL_MISSES_MESSAGE -----------------------------------------------------------------------


def poll_script(sc: Scenario) -> tuple[bool, list[str]]:
    t = sc.now
    late = post_body(sc, "late", id_ms=t)  # frontend 2 stamps its message at t ...
    sc.send("slow-post", "POST", "/api/comments", body=late, location="B")  # ... and it is slow
    sc.advance(1_000)
    assert (
        sc.call("p1", "POST", "/api/comments", body=post_body(sc, "quick"), location="A").status
        == 200
    )
    seen = sc.call(
        "poll-1", "GET", "/api/comments", query={"after": t - 5_000}, location="A"
    ).json_body()
    cursor = max(m["timestamp"] for m in seen)  # frontend 1 advances to the newest it saw
    assert sc.run("slow-post").status == 200
    sc.advance(3_000)
    later = sc.call(
        "poll-2", "GET", "/api/comments", query={"after": cursor}, location="A"
    ).json_body()
    stored = sc.call("get", "GET", f"/api/comments/{late['id']}", location="Z").status == 200
    return stored, [m["text"] for m in seen + later]


def test_poll_misses_message() -> None:
    """A message stored late under an earlier client timestamp is behind every cursor: never
    polled."""
    stored, polled = poll_script(design("POLL_MISSES_MESSAGE"))
    assert stored and "late" not in polled
    stored, polled = poll_script(sound())
    assert stored and sorted(polled) == ["late", "quick"]


@pytest.mark.parametrize("catalog_id", [i for i in CATALOG if CATALOG[i].fixes is not None])
def test_catalog_target_has_exactly_its_bug(catalog_id: str) -> None:
    """A catalog target differs from every-fix-on in the switches its bug is about only."""
    e = entry(catalog_id)
    assert e.fixes is not None
    assert e.target().fixes.describe() != "all fixes on"
    assert len(e.fixes.describe().split()) <= 2
