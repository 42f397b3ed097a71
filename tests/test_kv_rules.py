"""The simulated Workers KV against the platform rules of ``reference/workers-kv-semantics.md``.

Each test names the section it checks, and each would fail if the rule were missing. The store is
driven directly with scripted choices (``RecordedBackend`` forcing the interesting options, then
``FirstOptionBackend``: read-your-own-write holds, node 0, full pages); a few tests go through the
runtime (``Platform``) for what the binding adds: per-invocation counters, the 1000-op cap and an
uncaught ``KvError`` answered 500.
"""

# One-line test docstrings state the rule in full, with its section and message.
# ruff: noqa: E501

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import pytest

from qmodel.sim import (
    Choice,
    ChoiceSource,
    Clock,
    FirstOptionBackend,
    KvConfig,
    KvError,
    KvStats,
    KvStore,
    Platform,
    RecordedBackend,
    Request,
    Response,
    SeededBackend,
    json_response,
)
from qmodel.sim.kv import PRICE_PER_MILLION

A0 = ("A", 0)
A1 = ("A", 1)
B0 = ("B", 0)
B1 = ("B", 1)


def make_store(
    config: KvConfig | None = None, forced: Iterable[Choice] = (), *, strict_script: bool = False
) -> KvStore:
    """A store whose choices are ``forced`` first, then option 0 (or nothing, if
    ``strict_script``: any further choice then raises ``TraceMismatch``)."""
    then = None if strict_script else FirstOptionBackend()
    choices = ChoiceSource(RecordedBackend(list(forced), then=then))
    return KvStore(Clock(), choices, config if config is not None else KvConfig())


def ryw(holds: bool) -> Choice:
    return Choice("kv.ryw", 2, 0 if holds else 1)


def page(kind: int) -> Choice:
    """``kv.list.page``: 0 full, 1 half, 2 empty."""
    return Choice("kv.list.page", 3, kind)


def names(result: Any) -> list[str]:
    return [k.name for k in result.keys]


def list_all(
    kv: KvStore, where: tuple[str, int], *, prefix: str = "", limit: int = 1000
) -> tuple[list[str], int]:
    """Follow cursors until ``list_complete``; return the keys seen and the number of calls.
    Stops after 500 calls (a pagination that never ends)."""
    seen: list[str] = []
    cursor = None
    for calls in range(1, 501):
        res = kv.list(where, prefix=prefix, limit=limit, cursor=cursor)
        seen += names(res)
        if res.list_complete:
            assert res.cursor is None
            return seen, calls
        assert res.cursor is not None
        cursor = res.cursor
    raise AssertionError(f"pagination did not finish in 500 calls; saw {len(seen)} keys")


# -- §8 defaults -------------------------------------------------------------------------------


def test_strict_defaults_are_the_reference_values() -> None:
    """§8: the strict profile's knobs default to the production values of the parameter table."""
    cfg = KvConfig()
    assert cfg == KvConfig.strict()
    assert cfg.profile == "strict"
    assert cfg.default_cache_ttl_s == 60
    assert cfg.min_cache_ttl_s == 30
    assert cfg.negative_cache is True
    assert cfg.ryw_weights is not None and cfg.ryw_weights[0] > cfg.ryw_weights[1] > 0
    assert cfg.nodes_per_location >= 2
    assert cfg.short_pages is True and cfg.list_cache is True
    assert cfg.same_key_write_interval_ms == 1000
    assert cfg.max_key_bytes == 512
    assert cfg.max_value_bytes == 26_214_400
    assert cfg.max_metadata_bytes == 1024
    assert cfg.min_expiration_ttl_s == 60
    assert cfg.list_limit_max == 1000
    assert cfg.ops_per_invocation == 1000


def test_named_profiles() -> None:
    """§8/§4: profiles are looked up by name, and an unknown name says which exist."""
    assert KvConfig.named("strict") == KvConfig.strict()
    assert KvConfig.named("local") == KvConfig.local()
    with pytest.raises(
        ValueError,
        match=re.escape(
            "unknown KV profile 'prod'; use 'strict' (production) or 'local' (Miniflare)"
        ),
    ):
        KvConfig.named("prod")


# -- §1.2 propagation window (kv.default_cache_ttl_s) ------------------------------------------


def test_other_location_keeps_old_value_for_60_s() -> None:
    """§1.2: a location that read a key keeps serving the old value for 60 s after its read, then sees the new one."""
    kv = make_store()
    kv.put(A0, "k", "v1")
    kv.clock.advance(5_000)
    read_at = kv.clock.now_ms
    assert kv.get(B0, "k") == "v1"
    kv.clock.advance(2_000)
    kv.put(A0, "k", "v2")
    assert kv.get(A0, "k") == "v2"  # read-your-own-write held (option 0)
    assert kv.snapshot().get("k") == "v2"
    kv.clock.advance_to(read_at + 59_999)
    assert kv.get(B0, "k") == "v1"
    assert kv.cached("B", 0, "k") == ("v1", read_at)
    kv.clock.advance_to(read_at + 60_000)
    assert kv.get(B0, "k") == "v2"


def test_cold_location_reads_through_to_the_central_store() -> None:
    """§1.2: a location that never read the key sees the newest value on its first read."""
    kv = make_store()
    kv.put(A0, "k", "v1")
    kv.clock.advance(1_000)
    kv.put(A0, "k", "v2")
    assert kv.get(B0, "k") == "v2"


def test_longer_cache_ttl_keeps_a_stale_value_longer() -> None:
    """§1.5: a read with cacheTtl=300 keeps its result at that location for 300 s, beyond the 60 s default."""
    kv = make_store()
    kv.put(A0, "k", "v1")
    kv.clock.advance(1_000)
    assert kv.get(B0, "k", cache_ttl=300) == "v1"
    kv.clock.advance(1_000)
    kv.put(A0, "k", "v2")
    kv.clock.advance(200_000)
    assert kv.get(B0, "k") == "v1"
    kv.clock.advance(99_000)  # 300 s after B's read
    assert kv.get(B0, "k") == "v2"


def test_cache_ttl_below_minimum_is_rejected() -> None:
    """§1.5/§2.3: cacheTtl < 30 raises KV GET failed: 400 Invalid cache_ttl of X. Cache TTL must be at least 30."""
    kv = make_store()
    with pytest.raises(KvError) as info:
        kv.get(A0, "k", cache_ttl=29)
    assert (
        str(info.value)
        == "KV GET failed: 400 Invalid cache_ttl of 29. Cache TTL must be at least 30."
    )
    assert info.value.status == 400 and info.value.method == "GET"
    assert kv.stats().reads == 0
    assert kv.get(A0, "k", cache_ttl=30) is None


def test_cache_ttl_minimum_is_a_knob() -> None:
    """§1.5/§8: min_cache_ttl_s=60 mimics the pre-2026-01-30 minimum, so cacheTtl=30 is then rejected."""
    kv = make_store(KvConfig(min_cache_ttl_s=60))
    with pytest.raises(
        KvError,
        match=re.escape(
            "KV GET failed: 400 Invalid cache_ttl of 30. Cache TTL must be at least 60."
        ),
    ):
        kv.get(A0, "k", cache_ttl=30)


def test_lower_cache_ttl_shortens_an_existing_cached_copy() -> None:
    """§1.5: reading again with a lower cacheTtl shortens the cached copy at that location only."""
    kv = make_store()
    kv.put(A0, "k", "v1")
    kv.clock.advance(1_000)
    assert kv.get(B0, "k") == "v1"  # cached at B for 60 s
    assert kv.get(("C", 0), "k") == "v1"  # cached at C for 60 s
    kv.clock.advance(1_000)
    kv.put(A0, "k", "v2")
    kv.clock.advance(30_000)  # 31 s after the reads
    assert kv.get(B0, "k", cache_ttl=30) == "v2"  # the copy now expired at 30 s
    assert kv.get(("C", 0), "k") == "v1"  # C still uses its 60 s copy


# -- §1.3 read-your-own-write ------------------------------------------------------------------


def test_read_your_own_write_holds_when_chosen() -> None:
    """§1.3: when kv.ryw holds, a write at A replaces what every node of A cached, so A reads the new value at once."""
    kv = make_store(forced=[ryw(True), ryw(True)])
    kv.put(B0, "k", "v1")
    kv.clock.advance(1_000)
    assert kv.get(A0, "k") == "v1"
    assert kv.get(A1, "k") == "v1"
    kv.put(A1, "k", "v2")
    assert kv.get(A0, "k") == "v2"
    assert kv.get(A1, "k") == "v2"
    assert kv.get(B0, "k") == "v1"  # another location keeps its copy


def test_read_your_own_write_can_fail() -> None:
    """§1.3: when kv.ryw says it fails, the writing location keeps serving what it cached before the write."""
    kv = make_store(forced=[ryw(True), ryw(False)])
    kv.put(A0, "k", "v1")
    kv.clock.advance(1_000)
    assert kv.get(A0, "k") == "v1"
    kv.put(A0, "k", "v2")
    assert kv.snapshot().get("k") == "v2"
    assert kv.get(A0, "k") == "v1"
    assert kv.choices.log == [ryw(True), ryw(False)]


def test_read_your_own_write_failure_also_keeps_a_cached_miss() -> None:
    """§1.3/§1.4: a failed read-your-own-write after a cached miss reads as missing at the writer's own location."""
    kv = make_store(forced=[ryw(False)])
    assert kv.get(A0, "k") is None
    kv.put(A0, "k", "v1")
    assert kv.get(A0, "k") is None
    kv.clock.advance(60_000)
    assert kv.get(A0, "k") == "v1"


def test_ryw_probability_is_about_99_percent() -> None:
    """§1.3/§8: with a seeded backend, read-your-own-write fails rarely but does fail (weights 99:1)."""
    kv = KvStore(Clock(), ChoiceSource(SeededBackend(3)), KvConfig())
    fails = 0
    for i in range(2_000):
        key = f"k{i}"
        kv.get(("A", 0), key)  # cache a miss
        kv.put(("A", 0), key, "v")
        fails += kv.get(("A", 0), key) is None
    assert 5 <= fails <= 45


# -- §1.4 negative caching ---------------------------------------------------------------------


def test_negative_lookup_is_cached() -> None:
    """§1.4: a miss read at B is cached, so a key created afterwards at A reads as missing at B for 60 s."""
    kv = make_store()
    assert kv.get(B0, "k") is None
    kv.clock.advance(1_000)
    kv.put(A0, "k", "v")
    assert kv.get(A0, "k") == "v"
    assert kv.cached("B", 0, "k") == (None, kv.clock.now_ms - 1_000)
    kv.clock.advance(58_999)
    assert kv.get(B0, "k") is None
    kv.clock.advance(1)
    assert kv.get(B0, "k") == "v"


def test_negative_cache_can_be_switched_off() -> None:
    """§1.4/§8: with negative_cache off, a miss is not cached and the created key is seen at once."""
    kv = make_store(KvConfig(negative_cache=False))
    assert kv.get(B0, "k") is None
    kv.put(A0, "k", "v")
    assert kv.get(B0, "k") == "v"


def test_delete_is_eventually_consistent() -> None:
    """§2.5: a delete at A leaves B's cached copy readable until its TTL ends."""
    kv = make_store()
    kv.put(A0, "k", "v")
    kv.clock.advance(1_000)
    assert kv.get(B0, "k") == "v"
    kv.delete(A0, "k")
    assert kv.get(A0, "k") is None
    assert kv.get(B0, "k") == "v"
    kv.clock.advance(60_000)
    assert kv.get(B0, "k") is None
    kv.delete(A0, "missing")  # deleting a missing key succeeds


# -- §1.6 non-monotonic reads ------------------------------------------------------------------


def test_reads_go_backwards_across_the_nodes_of_a_location() -> None:
    """§1.6: two nodes of one location cache different versions, so consecutive reads at A can see v2 then v1."""
    kv = make_store()
    kv.put(B0, "k", "v1")
    kv.clock.advance(1_000)
    assert kv.get(A0, "k") == "v1"
    kv.clock.advance(1_000)
    kv.put(B0, "k", "v2")
    assert kv.get(A1, "k") == "v2"
    assert kv.get(A0, "k") == "v1"


def test_runtime_requests_land_on_the_node_the_choice_names() -> None:
    """§1.6: each request's KV calls go through the node chosen at its first KV op (kv.node), so two requests at A read different versions."""

    class Target:
        async def fetch(self, request: Request, env: Any, ctx: Any) -> Response:
            first = await env.COMMENTS_KV.get("k")
            second = await env.COMMENTS_KV.get("k")
            return json_response([first, second])

    target = Target()
    forced = [Choice("kv.node", 2, 0), ryw(True), Choice("kv.node", 2, 1)]
    platform = Platform.create(backend=RecordedBackend(forced, then=FirstOptionBackend()))
    store = platform.kv_store
    store.preload("k", "v1")
    platform.scheduler.advance(1_000)
    r1 = platform.request(target, Request.make("GET", "/"), location="A")
    assert r1.json_body() == ["v1", "v1"]
    platform.scheduler.advance(1_000)
    store.put(("B", 0), "k", "v2")
    r2 = platform.request(target, Request.make("GET", "/"), location="A")
    assert r2.json_body() == ["v2", "v2"]  # node 1: cold read
    assert platform.invocations[-1].node == 1
    assert store.get(("A", 0), "k") == "v1"  # node 0 still holds v1
    platform.check()


# -- §1.7 last writer wins by arrival ----------------------------------------------------------


def test_last_writer_wins_by_arrival() -> None:
    """§1.7: the central store keeps the put that arrived last, whatever the location it came from."""
    kv = make_store()
    kv.put(B0, "k", "from-B")
    kv.clock.advance(1_000)
    kv.put(A0, "k", "from-A")
    assert kv.snapshot().get("k") == "from-A"
    assert kv.get(("C", 0), "k") == "from-A"
    kv.clock.advance(1_000)
    kv.put(B0, "k", "from-B-again")
    assert kv.get(("D", 0), "k") == "from-B-again"
    kv.check()


def test_lww_order_is_the_order_of_steps_not_of_issue() -> None:
    """§1.7: a put issued first but performed at a later step wins (arrival order is step order)."""

    class Writer:
        async def fetch(self, request: Request, env: Any, ctx: Any) -> Response:
            await env.COMMENTS_KV.put("k", request.url.rsplit("/", 1)[-1])
            return Response("ok")

    platform = Platform.create(backend=FirstOptionBackend())
    sched = platform.scheduler
    first = platform.send(Writer(), Request.make("PUT", "/first"), location="A")
    second = platform.send(Writer(), Request.make("PUT", "/second"), location="B")
    for task in (first, second):  # bring each to its put (a request may start eagerly)
        while task.pending is None or task.pending.describe() != "COMMENTS_KV.put k":
            sched.step(task)
    sched.step(second)  # performs "second"
    sched.advance(1_000)
    sched.step(first)  # performs "first", arriving last
    sched.run()
    assert first.result.status == 200 and second.result.status == 200
    assert platform.kv_store.snapshot().get("k") == "first"
    platform.check()


# -- §2.4 / §1.8 list() ------------------------------------------------------------------------


def test_list_orders_keys_by_utf8_bytes() -> None:
    """§2.4: keys come back in UTF-8 byte order ('\\uffff' before '\\U0001F600'; JS's UTF-16 order would be the reverse), not insertion order."""
    kv = make_store()
    for key in ["\U0001f600", "b", "\uffff", "a", "\u00e9", "Z"]:
        kv.put(A0, key, "v")
    expected = ["Z", "a", "b", "\u00e9", "\uffff", "\U0001f600"]
    assert names(kv.list(A0)) == expected
    assert [k.encode("utf-8") for k in expected] == sorted(k.encode("utf-8") for k in expected)
    utf16 = sorted(expected, key=lambda k: k.encode("utf-16-be"))
    assert utf16[-2:] == ["\U0001f600", "\uffff"]  # the order a UTF-16 sort would give
    assert list(kv.snapshot().values) == expected
    kv.check()


def test_list_filters_by_prefix() -> None:
    """§2.4: list(prefix=...) returns only the keys starting with the prefix."""
    kv = make_store()
    for key in ["comment:2", "comment:1", "commentary", "other", "comment:10"]:
        kv.put(A0, key, "v")
    assert names(kv.list(A0, prefix="comment:")) == ["comment:1", "comment:10", "comment:2"]
    assert names(kv.list(A0, prefix="zzz")) == []


def test_list_limit_bounds() -> None:
    """§2.3/§2.4: limit must be an integer from 1 to 1000; 0 and 1001 raise 400."""
    kv = make_store()
    for key in ["a", "b", "c"]:
        kv.put(A0, key, "v")
    for bad in (0, 1001, -1):
        with pytest.raises(KvError) as info:
            kv.list(A0, limit=bad)
        assert str(info.value) == (
            f"KV LIST failed: 400 Invalid limit of {bad}; it must be an integer from 1 to 1000."
        )
        assert info.value.status == 400
    assert kv.stats().lists == 0
    one = kv.list(A0, limit=1)
    assert names(one) == ["a"] and one.list_complete is False and one.cursor is not None
    full = kv.list(B0, limit=1000)
    assert names(full) == ["a", "b", "c"] and full.list_complete is True and full.cursor is None


def test_list_page_holds_at_most_limit_keys() -> None:
    """§2.4: a page holds at most limit keys; the default limit is 1000."""
    kv = make_store()
    for i in range(1_005):
        kv.preload(f"k{i:04d}", "v")
    first = kv.list(A0)
    assert len(first.keys) == 1000 and first.list_complete is False
    rest = kv.list(A0, cursor=first.cursor)
    assert names(rest) == [f"k{i:04d}" for i in range(1000, 1005)] and rest.list_complete is True


def test_list_short_and_empty_pages_are_not_the_end() -> None:
    """§2.4: a page may be half full or empty while list_complete is false, with a cursor to follow."""
    kv = make_store(forced=[page(1), page(2)])
    for key in "abcdef":
        kv.preload(key, "v")
    half = kv.list(A0, limit=4)
    assert names(half) == ["a", "b"]
    assert half.list_complete is False and half.cursor is not None
    empty = kv.list(A0, limit=4, cursor=half.cursor)
    assert names(empty) == []
    assert empty.list_complete is False and empty.cursor is not None
    rest = kv.list(A0, limit=4, cursor=empty.cursor)
    assert names(rest) == ["c", "d", "e", "f"]
    assert rest.list_complete is True and rest.cursor is None


def test_last_page_cut_short_is_not_complete() -> None:
    """§2.4: a page that holds every remaining key but is cut short by the choice still says list_complete=false."""
    kv = make_store(forced=[page(1)])
    for key in "abcd":
        kv.preload(key, "v")
    res = kv.list(A0)
    assert names(res) == ["a", "b"] and res.list_complete is False
    assert names(kv.list(A0, cursor=res.cursor)) == ["c", "d"]


@pytest.mark.parametrize(
    "script",
    [
        [2, 2, 2, 0],
        [1, 2, 1, 2, 2, 1, 0],
        [2, 1, 1, 1, 1, 1, 1, 1, 1],
        [0, 2, 2, 2, 2, 1, 2, 0],
    ],
)
def test_cursor_pagination_visits_every_key_exactly_once(script: list[int]) -> None:
    """§2.4: following cursors through short and empty pages (even several empty in a row) returns every key exactly once."""
    kv = make_store(forced=[page(k) for k in script])
    keys = [f"comment:{i:03d}" for i in range(23)]
    for key in reversed(keys):
        kv.preload(key, "v")
    kv.preload("other", "v")
    seen, calls = list_all(kv, A0, prefix="comment:", limit=5)
    assert seen == keys
    assert calls >= len(script)
    kv.check()


@pytest.mark.parametrize("seed", range(20))
def test_cursor_pagination_exactly_once_for_seeded_pages(seed: int) -> None:
    """§2.4: for seeded page choices, pagination always ends and returns every key exactly once."""
    kv = KvStore(Clock(), ChoiceSource(SeededBackend(seed)), KvConfig())
    keys = [f"k{i:02d}" for i in range(40)]
    for key in keys:
        kv.preload(key, "v")
    seen, _ = list_all(kv, ("A", seed % 2), limit=3)
    assert seen == keys


def test_list_pages_are_stale_on_their_own() -> None:
    """§1.8: a list page cached at A stays for 60 s, so list() misses a key that get() at A already sees."""
    kv = make_store()
    kv.put(A0, "a", "v")
    kv.clock.advance(1_000)
    listed_at = kv.clock.now_ms
    assert names(kv.list(A0)) == ["a"]
    kv.put(A0, "b", "v")
    assert kv.get(A0, "b") == "v"
    assert names(kv.list(A0)) == ["a"]  # list and get disagree
    assert names(kv.list(B0)) == ["a", "b"]  # another location lists afresh
    kv.clock.advance_to(listed_at + 60_000)
    assert names(kv.list(A0)) == ["a", "b"]


def test_deleted_key_is_still_listed_from_a_cached_page() -> None:
    """§1.8: a deleted key stays in a cached list page while get() reads it as missing."""
    kv = make_store()
    kv.put(A0, "a", "v")
    kv.put(A0, "b", "v")
    kv.clock.advance(1_000)
    assert names(kv.list(A0)) == ["a", "b"]
    kv.delete(A0, "b")
    assert kv.get(A0, "b") is None
    assert names(kv.list(A0)) == ["a", "b"]
    kv.clock.advance(60_000)
    assert names(kv.list(A0)) == ["a"]


def test_list_entries_carry_absolute_expiration_and_metadata() -> None:
    """§2.4: each key entry has its absolute expiration (even when set as a TTL) and its metadata."""
    kv = make_store()
    now_s = kv.clock.now_ms // 1000
    kv.put(A0, "a", "v", expiration_ttl=120, metadata={"n": 1})
    kv.put(A0, "b", "v")
    a, b = kv.list(A0).keys
    assert (a.name, a.expiration, a.metadata) == ("a", now_s + 120, {"n": 1})
    assert (b.name, b.expiration, b.metadata) == ("b", None, None)


def test_a_tampered_cursor_is_rejected() -> None:
    """§2.4: a cursor is opaque; one not returned by list() raises 400."""
    kv = make_store()
    with pytest.raises(
        KvError,
        match=re.escape(
            "KV LIST failed: 400 Invalid cursor 'bogus': pass the cursor of the previous page "
            "unchanged"
        ),
    ):
        kv.list(A0, cursor="bogus")


# -- §2.2 one write per second per key ---------------------------------------------------------


def test_second_write_within_one_second_is_429() -> None:
    """§2.2: a second write to the same key within 1 s raises KV PUT failed: 429 Too Many Requests and has no effect."""
    kv = make_store()
    kv.put(A0, "k", "v1")
    kv.clock.advance(999)
    with pytest.raises(KvError) as info:
        kv.put(B0, "k", "v2")
    assert str(info.value) == "KV PUT failed: 429 Too Many Requests"
    assert (info.value.status, info.value.method) == (429, "PUT")
    assert kv.snapshot().get("k") == "v1"
    assert kv.get(("C", 0), "k") == "v1"
    assert kv.stats().rejected_429 == 1 and kv.stats().writes == 1
    kv.put(A0, "other", "x")  # another key is not limited
    kv.clock.advance(1)
    kv.put(B0, "k", "v2")
    assert kv.snapshot().get("k") == "v2"


def test_rejected_write_does_not_restart_the_window() -> None:
    """§2.2: the one-second window runs from the last accepted write, not from a rejected one."""
    kv = make_store()
    kv.put(A0, "k", "v1")
    kv.clock.advance(900)
    with pytest.raises(KvError, match=re.escape("KV PUT failed: 429 Too Many Requests")):
        kv.put(A0, "k", "v2")
    kv.clock.advance(100)
    kv.put(A0, "k", "v3")
    assert kv.snapshot().get("k") == "v3"


def test_delete_within_one_second_is_429() -> None:
    """§2.2: a delete counts as a write: deleting a key written less than 1 s ago raises KV DELETE failed: 429 Too Many Requests."""
    kv = make_store()
    kv.put(A0, "k", "v")
    with pytest.raises(KvError) as info:
        kv.delete(A0, "k")
    assert str(info.value) == "KV DELETE failed: 429 Too Many Requests"
    assert (info.value.status, info.value.method) == (429, "DELETE")
    assert kv.snapshot().get("k") == "v"
    kv.clock.advance(1_000)
    kv.delete(A0, "k")
    with pytest.raises(KvError, match=re.escape("KV PUT failed: 429 Too Many Requests")):
        kv.put(A0, "k", "again")
    assert kv.snapshot().get("k") is None


def test_write_rate_limit_is_a_knob() -> None:
    """§2.2/§8: same_key_write_interval_ms=None lifts the limit (the Miniflare behaviour)."""
    kv = make_store(KvConfig(same_key_write_interval_ms=None))
    kv.put(A0, "k", "v1")
    kv.put(A0, "k", "v2")
    kv.delete(A0, "k")
    assert kv.snapshot().get("k") is None
    assert kv.stats().rejected_429 == 0


# -- §2.3 validation ---------------------------------------------------------------------------


def test_key_over_512_bytes_is_414() -> None:
    """§2.3: a key over 512 UTF-8 bytes raises KV <METHOD> failed: 414 UTF-8 encoded length of N exceeds key length limit of 512."""
    kv = make_store()
    kv.put(A0, "x" * 512, "v")
    assert kv.get(A0, "x" * 512) == "v"
    with pytest.raises(KvError) as info:
        kv.put(A0, "x" * 513, "v")
    assert str(info.value) == (
        "KV PUT failed: 414 UTF-8 encoded length of 513 exceeds key length limit of 512."
    )
    assert info.value.status == 414
    long_chars = "\u00e9" * 257  # 257 characters, 514 bytes
    with pytest.raises(KvError) as info:
        kv.get(A0, long_chars)
    assert str(info.value) == (
        "KV GET failed: 414 UTF-8 encoded length of 514 exceeds key length limit of 512."
    )
    with pytest.raises(KvError) as info:
        kv.delete(A0, long_chars)
    assert str(info.value) == (
        "KV DELETE failed: 414 UTF-8 encoded length of 514 exceeds key length limit of 512."
    )
    assert list(kv.snapshot().values) == ["x" * 512]


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "Key name cannot be empty."),
        (".", '"." is not allowed as a key name.'),
        ("..", '".." is not allowed as a key name.'),
    ],
)
def test_empty_and_dot_keys_are_type_errors(key: str, message: str) -> None:
    """§2.3: the keys '', '.' and '..' raise TypeError with workerd's messages, for get, put and delete."""
    kv = make_store()
    for call in (
        lambda: kv.get(A0, key),
        lambda: kv.put(A0, key, "v"),
        lambda: kv.delete(A0, key),
    ):
        with pytest.raises(TypeError) as info:
            call()
        assert str(info.value) == message
        assert not isinstance(info.value, KvError)
    kv.put(A0, "...", "v")  # three dots is an ordinary key
    assert kv.snapshot().values == {"...": "v"}


def test_value_over_25_mib_is_413() -> None:
    """§2.3: a value over 26,214,400 bytes raises KV PUT failed: 413 Value length of N exceeds limit of 26214400."""
    kv = make_store()
    limit = 26_214_400
    kv.put(A0, "exact", "x" * limit)
    with pytest.raises(KvError) as info:
        kv.put(A0, "big", "x" * (limit + 1))
    assert (
        str(info.value) == "KV PUT failed: 413 Value length of 26214401 exceeds limit of 26214400."
    )
    assert info.value.status == 413
    with pytest.raises(KvError) as info:  # counted in UTF-8 bytes, not characters
        kv.put(A0, "wide", "\u00e9" * (limit // 2 + 1))
    assert (
        str(info.value) == "KV PUT failed: 413 Value length of 26214402 exceeds limit of 26214400."
    )
    assert set(kv.snapshot().values) == {"exact"}


def test_metadata_over_1024_bytes_is_413() -> None:
    """§2.3: metadata whose JSON is over 1024 bytes raises KV PUT failed: 413 Metadata length of N exceeds limit of 1024."""
    kv = make_store()
    ok = {"s": "x" * 1016}  # {"s":"..."} is 1024 bytes
    kv.put(A0, "ok", "v", metadata=ok)
    big = {"s": "x" * 1017}
    with pytest.raises(KvError) as info:
        kv.put(A0, "big", "v", metadata=big)
    assert str(info.value) == "KV PUT failed: 413 Metadata length of 1025 exceeds limit of 1024."
    assert info.value.status == 413
    assert kv.snapshot().metadata == {"ok": ok}


def test_non_string_value_is_a_type_error() -> None:
    """§2.3: put() of a value that is not a string (or bytes) raises workerd's TypeError."""
    kv = make_store()
    with pytest.raises(TypeError) as info:
        kv.put(A0, "k", 42)
    assert str(info.value) == (
        "KV put() accepts only strings, ArrayBuffers, ArrayBufferViews, and ReadableStreams "
        "as values."
    )
    kv.put(A0, "b", b"bytes")
    assert kv.get(A0, "b") == "bytes"


def test_expiration_ttl_below_60_is_rejected() -> None:
    """§2.3: expirationTtl < 60 raises KV PUT failed: 400 Invalid expiration_ttl of X. Expiration TTL must be at least 60."""
    kv = make_store()
    with pytest.raises(KvError) as info:
        kv.put(A0, "k", "v", expiration_ttl=59)
    assert str(info.value) == (
        "KV PUT failed: 400 Invalid expiration_ttl of 59. Expiration TTL must be at least 60."
    )
    assert info.value.status == 400
    with pytest.raises(KvError) as info:
        kv.put(A0, "k", "v", expiration_ttl=1)
    assert str(info.value) == (
        "KV PUT failed: 400 Invalid expiration_ttl of 1. Expiration TTL must be at least 60."
    )
    with pytest.raises(KvError) as info:
        kv.put(A0, "k", "v", expiration_ttl=0)
    assert str(info.value) == (
        "KV PUT failed: 400 Invalid expiration_ttl of 0. Please specify integer greater than 0."
    )
    assert kv.snapshot().values == {}
    kv.put(A0, "k", "v", expiration_ttl=60)
    assert kv.snapshot().values == {"k": "v"}


def test_expiration_less_than_60_s_ahead_is_rejected() -> None:
    """§2.3: an absolute expiration < now+60 raises 400 (at least 60 seconds in the future; not in the past)."""
    kv = make_store()
    now_s = kv.clock.now_ms // 1000
    with pytest.raises(KvError) as info:
        kv.put(A0, "k", "v", expiration=now_s + 59)
    assert str(info.value) == (
        f"KV PUT failed: 400 Invalid expiration of {now_s + 59}. Expiration times must be at "
        "least 60 seconds in the future."
    )
    with pytest.raises(KvError) as info:
        kv.put(A0, "k", "v", expiration=now_s)
    assert str(info.value) == (
        f"KV PUT failed: 400 Invalid expiration of {now_s}. Please specify integer greater than "
        "the current number of seconds since the UNIX epoch."
    )
    assert kv.snapshot().values == {}
    kv.put(A0, "k", "v", expiration=now_s + 60)
    assert kv.list(A0).keys[0].expiration == now_s + 60


def test_expiration_ttl_takes_priority_over_expiration() -> None:
    """§2.3: with both given, expirationTtl is used (a bad expiration is then ignored)."""
    kv = make_store()
    now_s = kv.clock.now_ms // 1000
    kv.put(A0, "k", "v", expiration=now_s + 1, expiration_ttl=100)
    assert kv.list(A0).keys[0].expiration == now_s + 100


def test_a_rejected_write_is_not_counted_and_does_not_start_the_rate_window() -> None:
    """§2.2/§2.3: a put refused by validation writes nothing, so a valid put right after it succeeds."""
    kv = make_store()
    with pytest.raises(KvError, match=re.escape("Expiration TTL must be at least 60.")):
        kv.put(A0, "k", "v", expiration_ttl=30)
    kv.put(A0, "k", "v")
    assert kv.stats().writes == 1


# -- §2.5 / §1.5 expiry ------------------------------------------------------------------------


def test_expired_key_reads_as_missing_even_from_a_cache() -> None:
    """§1.5/§2.5: once expiration passes the key reads as missing everywhere, a long-cached copy included, and leaves list()."""
    kv = make_store()
    kv.put(A0, "k", "v", expiration_ttl=60)
    kv.put(A0, "stay", "v")
    expires_ms = kv.list(B0).keys[0].expiration * 1000
    assert kv.get(B0, "k", cache_ttl=3_600) == "v"
    kv.clock.advance_to(expires_ms - 1)
    assert kv.get(B0, "k") == "v"
    assert kv.get(A0, "k") == "v"
    kv.clock.advance_to(expires_ms)
    assert kv.get(B0, "k") is None  # B's copy is cached for an hour, expiration wins
    assert kv.get(A0, "k") is None
    assert kv.get(("C", 0), "k") is None
    assert names(kv.list(("C", 0))) == ["stay"]
    assert kv.snapshot().values == {"stay": "v"}
    assert kv.version_of("k") is None


# -- §2.1 operations per invocation, counters and cost -----------------------------------------


class LoopReader:
    """A worker that reads the key ``k`` ``?n=`` times and answers how many reads succeeded."""

    async def fetch(self, request: Request, env: Any, ctx: Any) -> Response:
        n = int(request.url.split("n=")[1])
        done = 0
        try:
            for _ in range(n):
                await env.COMMENTS_KV.get("k")
                done += 1
        except KvError as err:
            return json_response({"done": done, "error": str(err)}, 500)
        return json_response({"done": done})


def test_the_1001st_operation_of_an_invocation_raises() -> None:
    """§2.1: an invocation may make 1000 KV operations; the 1001st raises and is recorded."""
    platform = Platform.create(backend=FirstOptionBackend())
    ok = platform.request(LoopReader(), Request.make("GET", "/", query={"n": 1000}), location="A")
    assert (ok.status, ok.json_body()) == (200, {"done": 1000})
    over = platform.request(LoopReader(), Request.make("GET", "/", query={"n": 1001}), location="A")
    message = (
        "KV GET failed: more than 1000 operations in one Worker invocation (the platform's "
        "limit on operations to external services)"
    )
    assert over.status == 500
    assert over.json_body() == {"done": 1000, "error": message}
    inv = platform.invocations[-1]
    assert inv.kv_ops == 1000
    assert [str(e) for e in inv.kv_errors] == [message]
    assert platform.invocations[0].kv_errors == []
    platform.check()


def test_ops_cap_counts_all_kinds_of_operation() -> None:
    """§2.1: reads, writes, deletes and lists all count toward the 1000 operations of one invocation."""

    class Mixed:
        async def fetch(self, request: Request, env: Any, ctx: Any) -> Response:
            kv = env.COMMENTS_KV
            for i in range(250):
                await kv.get(f"k{i}")
                await kv.put(f"k{i}", "v")
                await kv.list(prefix=f"k{i}")
                await kv.delete(f"other{i}")
            try:
                await kv.list()
            except KvError as err:
                return Response(str(err), 500)
            return Response("no limit")

    platform = Platform.create(backend=FirstOptionBackend())
    res = platform.request(Mixed(), Request.make("GET", "/"), location="A")
    assert res.status == 500
    assert res.body.startswith("KV LIST failed: more than 1000 operations in one Worker invocation")
    assert platform.invocations[0].counters() == "[KVr:250 KVw:250 KVl:250 KVd:250]"


def test_invocation_counters_in_the_seed_log_format() -> None:
    """§2.1: each invocation counts its own KV operations as the seeds' logs show them: [KVr:3 KVw:1]."""

    class Rmw:
        async def fetch(self, request: Request, env: Any, ctx: Any) -> Response:
            kv = env.COMMENTS_KV
            await kv.get("a")
            await kv.get("b")
            await kv.get("c")
            await kv.put("a", "1")
            if request.method == "DELETE":
                await kv.delete("b")
                await kv.list(prefix="a")
            return Response("ok")

    platform = Platform.create(backend=FirstOptionBackend())
    platform.request(Rmw(), Request.make("POST", "/"), location="A")
    platform.scheduler.advance(1_000)
    platform.request(Rmw(), Request.make("DELETE", "/"), location="B")
    first, second = platform.invocations
    assert first.counters() == "[KVr:3 KVw:1]"
    assert second.counters() == "[KVr:3 KVw:1 KVl:1 KVd:1]"
    assert (first.location, second.location) == ("A", "B")
    stats = platform.kv_stats()
    assert (stats.reads, stats.writes, stats.deletes, stats.lists) == (6, 2, 1, 1)


def test_cost_at_cloudflare_prices() -> None:
    """§2.1 (pricing): reads cost $0.50 per million; writes, deletes and lists $5.00 per million each."""
    assert PRICE_PER_MILLION == {"read": 0.50, "write": 5.00, "delete": 5.00, "list": 5.00}
    stats = KvStats(
        reads=2_000_000, writes=1_000_000, deletes=300_000, lists=100_000, rejected_429=7
    )
    assert stats.operations == 3_400_000
    assert stats.cost_usd == pytest.approx(1.00 + 5.00 + 1.50 + 0.50)
    kv = make_store()
    kv.put(A0, "k", "v")
    kv.get(A0, "k")
    kv.get(B0, "k")
    kv.list(A0)
    kv.clock.advance(1_000)
    kv.delete(A0, "k")
    with pytest.raises(KvError):
        kv.delete(A0, "k")
    snap = kv.stats()
    assert snap == KvStats(reads=2, writes=1, deletes=1, lists=1, rejected_429=1)
    assert snap.cost_usd == pytest.approx((2 * 0.50 + 3 * 5.00) / 1_000_000)


# -- runtime: a KvError a worker does not catch ------------------------------------------------


def test_uncaught_kv_error_is_a_500_and_recorded() -> None:
    """§2.2/§6: a KvError the worker does not catch escapes fetch, answers 500 (error 1101) and is recorded in the invocation."""

    class DoubleWrite:
        async def fetch(self, request: Request, env: Any, ctx: Any) -> Response:
            await env.COMMENTS_KV.put("k", "v1")
            await env.COMMENTS_KV.put("k", "v2")
            return Response("unreachable")

    platform = Platform.create(backend=FirstOptionBackend())
    task = platform.send(DoubleWrite(), Request.make("POST", "/"), location="A")
    platform.scheduler.run()
    assert task.finished and task.error is None
    assert task.result.status == 500
    assert task.result.body == "Worker threw exception (error 1101)"
    inv = task.invocation
    assert inv.errors == ["uncaught KvError: KV PUT failed: 429 Too Many Requests"]
    assert [str(e) for e in inv.kv_errors] == ["KV PUT failed: 429 Too Many Requests"]
    assert inv.counters() == "[KVr:0 KVw:2]"
    assert platform.kv_store.snapshot().get("k") == "v1"
    assert platform.kv_stats().rejected_429 == 1
    platform.check()


def test_caught_kv_error_is_recorded_but_not_a_500() -> None:
    """§2.2: a worker that catches the 429 answers as it likes; the error is still recorded in kv_errors."""

    class Catching:
        async def fetch(self, request: Request, env: Any, ctx: Any) -> Response:
            await env.COMMENTS_KV.put("k", "v1")
            try:
                await env.COMMENTS_KV.put("k", "v2")
            except KvError as err:
                return Response(str(err), 503)
            return Response("ok")

    platform = Platform.create(backend=FirstOptionBackend())
    res = platform.request(Catching(), Request.make("POST", "/"), location="A")
    assert (res.status, res.body) == (503, "KV PUT failed: 429 Too Many Requests")
    inv = platform.invocations[0]
    assert inv.errors == []
    assert [e.status for e in inv.kv_errors] == [429]


# -- §4 / §8 the local (Miniflare) profile -----------------------------------------------------


def test_local_profile_is_strongly_consistent() -> None:
    """§4: in the local profile a write at A is visible at B at once, even after B read the key (no caches, no negative cache)."""
    kv = make_store(KvConfig.local(), strict_script=True)
    assert kv.get(B0, "k") is None
    kv.put(A0, "k", "v1")
    assert kv.get(B0, "k") == "v1"
    kv.put(A0, "k", "v2")
    assert kv.get(B0, "k") == "v2"
    assert kv.get(("B", 7), "k", cache_ttl=3_600) == "v2"
    kv.put(B0, "k", "v3")
    assert kv.get(B0, "k", cache_ttl=3_600) == "v3"
    assert names(kv.list(A0)) == ["k"]
    kv.put(B0, "k2", "v")
    assert names(kv.list(A0)) == ["k", "k2"]  # no cached list pages
    kv.delete(A0, "k")
    assert kv.get(B0, "k") is None
    assert kv.choices.log == []  # nothing nondeterministic was asked


def test_local_profile_has_no_write_rate_limit() -> None:
    """§4/§2.2: Miniflare enforces no 429: writes and deletes to one key in the same millisecond succeed."""
    kv = make_store(KvConfig.local(), strict_script=True)
    for i in range(5):
        kv.put(A0, "k", f"v{i}")
    kv.delete(A0, "k")
    kv.put(A0, "k", "last")
    assert kv.snapshot().get("k") == "last"
    assert kv.stats().rejected_429 == 0


def test_local_profile_never_gives_short_pages() -> None:
    """§4: the local profile gives full pages (no kv.list.page choice), so a page is short only at the end."""
    kv = make_store(KvConfig.local(), strict_script=True)
    for i in range(10):
        kv.put(A0, f"k{i}", "v")
    first = kv.list(A0, limit=4)
    assert names(first) == ["k0", "k1", "k2", "k3"] and first.list_complete is False
    second = kv.list(A0, limit=4, cursor=first.cursor)
    assert names(second) == ["k4", "k5", "k6", "k7"]
    last = kv.list(A0, limit=4, cursor=second.cursor)
    assert names(last) == ["k8", "k9"] and last.list_complete is True
    assert kv.choices.log == []


def test_local_profile_has_no_ops_cap() -> None:
    """§4: the local profile does not cap operations per invocation (1001 reads succeed)."""
    platform = Platform.create(kv=KvConfig.local(), backend=RecordedBackend([]))
    res = platform.request(LoopReader(), Request.make("GET", "/", query={"n": 1001}), location="A")
    assert (res.status, res.json_body()) == (200, {"done": 1001})
    assert platform.invocations[0].kv_errors == []


def test_local_profile_keeps_validation() -> None:
    """§4: the local profile still validates keys, values, metadata, expirations, cacheTtl and list limits."""
    kv = make_store(KvConfig.local(), strict_script=True)
    now_s = kv.clock.now_ms // 1000
    cases = [
        (
            lambda: kv.put(A0, "x" * 513, "v"),
            "KV PUT failed: 414 UTF-8 encoded length of 513 exceeds key length limit of 512.",
        ),
        (
            lambda: kv.put(A0, "k", "x" * 26_214_401),
            "KV PUT failed: 413 Value length of 26214401 exceeds limit of 26214400.",
        ),
        (
            lambda: kv.put(A0, "k", "v", metadata={"s": "x" * 1017}),
            "KV PUT failed: 413 Metadata length of 1025 exceeds limit of 1024.",
        ),
        (
            lambda: kv.put(A0, "k", "v", expiration_ttl=59),
            "KV PUT failed: 400 Invalid expiration_ttl of 59. Expiration TTL must be at least 60.",
        ),
        (
            lambda: kv.put(A0, "k", "v", expiration=now_s + 30),
            f"KV PUT failed: 400 Invalid expiration of {now_s + 30}. Expiration times must be at "
            "least 60 seconds in the future.",
        ),
        (
            lambda: kv.get(A0, "k", cache_ttl=10),
            "KV GET failed: 400 Invalid cache_ttl of 10. Cache TTL must be at least 30.",
        ),
        (
            lambda: kv.list(A0, limit=1001),
            "KV LIST failed: 400 Invalid limit of 1001; it must be an integer from 1 to 1000.",
        ),
    ]
    for call, message in cases:
        with pytest.raises(KvError) as info:
            call()
        assert str(info.value) == message
    with pytest.raises(TypeError, match=re.escape("Key name cannot be empty.")):
        kv.put(A0, "", "v")
    assert kv.snapshot().values == {}


def test_local_profile_passes_what_strict_fails() -> None:
    """§7 B14: the same double write succeeds locally and answers 500 with a 429 under the strict profile."""

    class DoubleWrite:
        async def fetch(self, request: Request, env: Any, ctx: Any) -> Response:
            await env.COMMENTS_KV.put("k", "v1")
            await env.COMMENTS_KV.put("k", "v2")
            return Response("ok")

    local = Platform.create(kv=KvConfig.local(), seed=1)
    strict = Platform.create(kv=KvConfig.strict(), seed=1)
    assert local.request(DoubleWrite(), Request.make("POST", "/"), location="A").status == 200
    assert strict.request(DoubleWrite(), Request.make("POST", "/"), location="A").status == 500
    assert local.kv_store.snapshot().get("k") == "v2"
    assert strict.kv_store.snapshot().get("k") == "v1"


def test_bulk_get_reads_each_key_through_the_same_caches() -> None:
    """§1.5 [KV-CL-BULK]: get([keys]) reads every key as get() does at that location, so a cached miss and a cached old value show in a bulk read too; 1 to 100 keys, type text or json (§2.3)."""
    kv = make_store()
    kv.put(A0, "old", "1")
    kv.put(A0, "words", "not json")
    kv.clock.advance(61_000)
    assert kv.get_many(B0, ["old", "new"]) == {"old": "1", "new": None}  # both now cached at B
    kv.clock.advance(1_000)
    kv.put(A0, "old", "2")
    kv.put(A0, "new", '{"n": 2}')
    assert kv.get_many(B0, ["new", "old"]) == {"new": None, "old": "1"}
    assert kv.get_many(A0, ["new"], type="json", with_metadata=True) == {
        "new": {"value": {"n": 2}, "metadata": None}
    }
    kv.clock.advance(59_000)
    assert kv.get_many(B0, ["old", "new"]) == {"old": "2", "new": '{"n": 2}'}
    for keys, kind, message in [
        ([], "text", "400 You must request a minimum of 1 key"),
        ([f"k{i}" for i in range(101)], "text", "400 You can request a maximum of 100 keys"),
        (["old"], "stream", '400 "stream" is not a valid type. Use "json" or "text"'),
        (
            ["new", "words"],
            "json",
            "400 At least one of the requested keys corresponds to a non-json value",
        ),
    ]:
        with pytest.raises(KvError, match=re.escape(f"KV GET_BULK failed: {message}")):
            kv.get_many(A0, keys, type=kind)
