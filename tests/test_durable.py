"""Durable Objects (reference §5): one instance per id, input gates, transactional storage,
eviction, and requests killed mid-way."""

# One-line test docstrings state the rule in full, with its section and message.
# ruff: noqa: E501

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from qmodel.sim import (
    URL,
    DurableId,
    FirstOptionBackend,
    KvConfig,
    Platform,
    Request,
    Response,
    ScriptedBackend,
    Task,
    json_response,
    sleep,
)
from qmodel.sim.scheduler import date_now


class Counter:
    """A Durable Object counting in storage (``n``) and in memory (``self.seen``).

    Routes: ``/inc`` (get, compute, put: only storage awaits), ``/inc-sleep`` (a timer between get
    and put), ``/inc-kv`` (a KV read between get and put), ``/pair`` (one put of a dict),
    ``/two-writes`` (put ``a``, then put ``b``), ``/read`` (storage and memory), ``/mutate``
    (mutates a value after storing it and after reading it).
    """

    def __init__(self, state: Any, env: Any) -> None:
        self.state = state
        self.env = env
        self.seen = 0

    async def fetch(self, request: Request) -> Response:
        storage = self.state.storage
        route = URL(request.url).pathname
        self.seen += 1
        if route == "/inc":
            n = await storage.get("n") or 0
            await storage.put("n", n + 1)
            return json_response({"n": n + 1})
        if route == "/inc-sleep":
            n = await storage.get("n") or 0
            await sleep(10)
            await storage.put("n", n + 1)
            return json_response({"n": n + 1})
        if route == "/inc-kv":
            n = await storage.get("n") or 0
            await self.env.COMMENTS_KV.get("anything")
            await storage.put("n", n + 1)
            return json_response({"n": n + 1})
        if route == "/pair":
            await storage.put({"a": 1, "b": 1})
            return Response("ok")
        if route == "/two-writes":
            await storage.put("a", 1)
            await storage.put("b", 1)
            return Response("ok")
        if route == "/read":
            data = await storage.get(["a", "b", "n"])
            return json_response({"storage": data, "seen": self.seen})
        if route == "/mutate":
            value = {"items": [1]}
            await storage.put("doc", value)
            value["items"].append(2)
            got = await storage.get("doc")
            got["items"].append(3)
            return json_response(await storage.get("doc"))
        return Response("no route", 404)


class Front:
    """A worker that forwards every request to the ``Counter`` named by ``?name=`` (default ``c``)."""

    async def fetch(self, request: Request, env: Any, ctx: Any) -> Response:
        ns = env.COUNTER
        name = URL(request.url).search_params.get("name", "c")
        return await ns.get(ns.id_from_name(name)).fetch(request)


def make_platform(seed: int = 0, **kwargs: Any) -> Platform:
    return Platform.create(seed=seed, durable={"COUNTER": Counter}, **kwargs)


def run_all(platform: Platform, tasks: list[Task]) -> list[Response]:
    platform.scheduler.run(until=lambda: all(t.finished for t in tasks))
    assert all(t.finished and t.error is None for t in tasks)
    return [t.result for t in tasks]


def concurrent_increments(seed: int, route: str, n: int = 5) -> tuple[list[int], int]:
    """Send ``n`` concurrent requests to ``route`` at three locations; return the counts they
    answered (sorted) and the stored count."""
    platform = make_platform(seed)
    tasks = [
        platform.send(Front(), Request.make("POST", route), location="ABC"[i % 3]) for i in range(n)
    ]
    answers = sorted(r.json_body()["n"] for r in run_all(platform, tasks))
    platform.check()
    ns = platform.namespaces["COUNTER"]
    stored = ns.instance(ns.id_from_name("c")).storage.data["n"]
    return answers, stored


def step_until(platform: Platform, done: Callable[[], bool], *, limit: int = 1_000) -> None:
    for _ in range(limit):
        if done():
            return
        assert platform.scheduler.step() is not None, "nothing runnable before the condition held"
    raise AssertionError("condition not reached")


def durable_task(platform: Platform) -> Task:
    (task,) = [t for t in platform.scheduler.tasks if t.kind == "durable"]
    return task


def test_id_from_name_is_stable() -> None:
    """§5.1: id_from_name of the same name always gives the same id; other names and bindings give others."""
    platform = make_platform()
    ns = platform.namespaces["COUNTER"]
    a1, a2, b = ns.id_from_name("a"), ns.id_from_name("a"), ns.id_from_name("b")
    assert a1 == a2 and a1.hex == a2.hex and str(a1) == a1.hex
    assert a1 != b and a1.hex != b.hex
    other = make_platform(seed=9).namespaces["COUNTER"]
    assert other.id_from_name("a") == a1  # stable across worlds
    with pytest.raises(TypeError) as info:
        ns.get("a")  # type: ignore[arg-type]
    assert str(info.value) == "COUNTER.get() takes an id from id_from_name(), got 'a'"
    assert isinstance(a1, DurableId)


def test_one_instance_per_id() -> None:
    """§5.1: every request for an id reaches the same in-memory instance; another id gets its own."""
    platform = make_platform(backend=FirstOptionBackend())
    for _ in range(3):
        platform.request(Front(), Request.make("POST", "/inc"), location="A")
    platform.request(Front(), Request.make("POST", "/inc", query={"name": "d"}), location="B")
    res = platform.request(Front(), Request.make("GET", "/read"), location="C")
    assert res.json_body() == {"storage": {"n": 3}, "seen": 4}
    ns = platform.namespaces["COUNTER"]
    assert len(ns.instances) == 2
    inst = ns.instance(ns.id_from_name("c"))
    assert inst.requests == 4 and inst.storage.data["n"] == 3
    assert ns.instance(ns.id_from_name("d")).storage.data["n"] == 1
    platform.check()


@pytest.mark.parametrize("seed", range(30))
def test_input_gate_makes_get_compute_put_atomic(seed: int) -> None:
    """§5.2: with only storage awaits between get and put, 5 concurrent increments answer 1..5 and store 5, for every schedule."""
    answers, stored = concurrent_increments(seed, "/inc")
    assert answers == [1, 2, 3, 4, 5]
    assert stored == 5


def lost_update_seeds(route: str) -> list[int]:
    lost = []
    for seed in range(40):
        answers, stored = concurrent_increments(seed, route)
        assert stored in range(1, 6)
        if stored < 5:
            assert len(set(answers)) < 5  # two requests answered the same count
            lost.append(seed)
    return lost


def test_sleep_between_get_and_put_opens_the_gate() -> None:
    """§5.2 pitfall 1: a timer between get and put lets another request in, and some schedule loses an update."""
    assert lost_update_seeds("/inc-sleep")


def test_kv_call_between_get_and_put_opens_the_gate() -> None:
    """§5.2 pitfall 1: a Workers KV await between get and put is non-storage I/O, and some schedule loses an update."""
    assert lost_update_seeds("/inc-kv")


def test_gate_holder_blocks_other_requests_of_the_object() -> None:
    """§5.2: while one request's storage call is outstanding, no other request of that object can step."""
    platform = make_platform(backend=FirstOptionBackend())
    sched = platform.scheduler
    first = platform.send(Front(), Request.make("POST", "/inc"), location="A")
    second = platform.send(Front(), Request.make("POST", "/inc"), location="B")
    step_until(platform, lambda: len([t for t in sched.tasks if t.kind == "durable"]) == 2)
    d1, d2 = [t for t in sched.tasks if t.kind == "durable"]
    sched.step(d1)  # starts, suspends on storage.get: holds the gate
    inst = d1.owner
    assert inst.gate_holder is d1
    assert d2 not in sched.runnable()
    sched.step(d1)  # get done, suspends on storage.put: still holds it
    assert inst.gate_holder is d1 and d2 not in sched.runnable()
    sched.step(d1)  # put done, finishes: the gate opens
    assert inst.gate_holder is None and d2 in sched.runnable()
    run_all(platform, [first, second])
    assert sorted(t.result.json_body()["n"] for t in (first, second)) == [1, 2]
    sched.check()


def test_storage_put_of_a_dict_is_atomic() -> None:
    """§5.4: put of a dict is one storage operation: a kill before it leaves no key, applying it leaves all keys."""
    for apply_pending, expected in ((False, {}), (True, {"a": 1, "b": 1})):
        platform = make_platform(backend=FirstOptionBackend())
        platform.send(Front(), Request.make("POST", "/pair"), location="A")
        sched = platform.scheduler
        step_until(platform, lambda s=sched: any(t.kind == "durable" for t in s.tasks))
        task = durable_task(platform)
        sched.step(task)  # suspends on the put of both keys
        assert (
            task.pending is not None
            and task.pending.describe() == "COUNTER[c].storage.put ['a', 'b']"
        )
        platform.scheduler.kill(task, apply_pending=apply_pending)
        storage = task.owner.storage
        assert dict(storage.data) == expected
        assert task.owner.gate_holder is None
        platform.check()


@pytest.mark.parametrize("seed", range(10))
def test_concurrent_reader_sees_a_dict_put_whole_or_not_at_all(seed: int) -> None:
    """§5.4: a reader racing a put of {a, b} sees both keys or neither, never one."""
    platform = make_platform(seed)
    writer = platform.send(Front(), Request.make("POST", "/pair"), location="A")
    reader = platform.send(Front(), Request.make("GET", "/read"), location="B")
    run_all(platform, [writer, reader])
    assert reader.result.json_body()["storage"] in ({}, {"a": 1, "b": 1})


def test_values_are_stored_as_copies() -> None:
    """§5.4 (structured clone): mutating a value after put, or a value returned by get, does not change storage."""
    platform = make_platform(backend=FirstOptionBackend())
    res = platform.request(Front(), Request.make("POST", "/mutate"), location="A")
    assert res.json_body() == {"items": [1]}
    ns = platform.namespaces["COUNTER"]
    assert ns.instance(ns.id_from_name("c")).storage.data["doc"] == {"items": [1]}


def test_eviction_keeps_storage_and_loses_memory() -> None:
    """§5.7: after eviction the next request gets a fresh instance: storage is kept, in-memory fields start over."""
    platform = make_platform(backend=FirstOptionBackend())
    for _ in range(3):
        platform.request(Front(), Request.make("POST", "/inc"), location="A")
    ns = platform.namespaces["COUNTER"]
    inst = ns.instance(ns.id_from_name("c"))
    before = inst.obj
    ns.evict(ns.id_from_name("c"))
    assert inst.obj is None and inst.generation == 1
    res = platform.request(Front(), Request.make("GET", "/read"), location="A")
    assert res.json_body() == {"storage": {"n": 3}, "seen": 1}
    assert inst.obj is not before and isinstance(inst.obj, Counter)
    ns.evict(ns.id_from_name("never-used"))  # evicting an id with no instance is harmless
    platform.check()


def test_killed_request_keeps_its_earlier_storage_writes() -> None:
    """§6: a Durable Object request killed between two storage awaits leaves the first write and not the second."""
    platform = make_platform(backend=FirstOptionBackend())
    front = platform.send(Front(), Request.make("POST", "/two-writes"), location="A")
    step_until(platform, lambda: any(t.kind == "durable" for t in platform.scheduler.tasks))
    task = durable_task(platform)
    step_until(
        platform,
        lambda: task.pending is not None and task.pending.describe() == "COUNTER[c].storage.put b",
    )
    platform.scheduler.kill(task)
    assert task.killed and task.finished
    assert dict(task.owner.storage.data) == {"a": 1}
    assert task.owner.gate_holder is None
    platform.scheduler.run()
    assert front.finished and front.error is None
    assert front.result.status == 500  # the worker's await raised TaskCancelled
    assert front.invocation.errors == [
        "uncaught TaskCancelled: COUNTER[c] POST /two-writes was killed before it answered"
    ]
    platform.check()


def test_killing_the_caller_leaves_the_object_request_running() -> None:
    """§5.7: killing the worker request that awaits a Durable Object call does not stop the object's request: it finishes its writes."""
    platform = make_platform(backend=FirstOptionBackend())
    sched = platform.scheduler
    front = platform.send(Front(), Request.make("POST", "/two-writes"), location="A")
    step_until(platform, lambda: any(t.kind == "durable" for t in sched.tasks))
    task = durable_task(platform)
    step_until(
        platform,
        lambda: task.pending is not None and task.pending.describe() == "COUNTER[c].storage.put b",
    )
    sched.kill(front)
    assert front.killed and not task.killed
    sched.run()
    assert task.finished and sched.tasks == []
    assert dict(task.owner.storage.data) == {"a": 1, "b": 1}
    platform.check()


def test_durable_object_kv_calls_run_at_the_do_location() -> None:
    """§5.2: a Durable Object's KV calls go through its own location and invocation record."""
    platform = make_platform(backend=FirstOptionBackend(), kv=KvConfig.local())
    platform.request(Front(), Request.make("POST", "/inc-kv"), location="A")
    worker_inv, do_inv = platform.invocations
    assert worker_inv.location == "A" and worker_inv.kv_ops == 0
    assert do_inv.location == platform.do_location == "do-home"
    assert do_inv.counters() == "[KVr:1 KVw:0]"


def test_each_durable_request_counts_its_own_kv_operations() -> None:
    """§2.1: each request to a Durable Object is its own invocation, so its KV calls count toward its own 1000-op limit."""
    platform = make_platform(backend=FirstOptionBackend(), kv=KvConfig.local())
    for _ in range(3):
        platform.request(Front(), Request.make("POST", "/inc-kv"), location="A")
    do_invs = [inv for inv in platform.invocations if inv.location == "do-home"]
    assert [inv.counters() for inv in do_invs] == ["[KVr:1 KVw:0]"] * 3


class Lister:
    """A Durable Object that stores a fixed set of keys and answers ``list()`` with the options
    in its query string (``/deleteAll`` empties its storage)."""

    KEYS = ("a", "b", "b1", "b2", "c", "d")

    def __init__(self, state: Any, env: Any) -> None:
        self.storage = state.storage

    async def fetch(self, request: Request) -> Response:
        url = URL(request.url)
        if url.pathname == "/deleteAll":
            await self.storage.delete_all()
            return json_response(list(await self.storage.list()))
        await self.storage.put({k: k.upper() for k in self.KEYS})
        q = url.search_params
        opts: dict[str, Any] = {k: q.get(k) for k in ("prefix", "start", "start_after", "end")}
        opts = {k: v for k, v in opts.items() if v is not None}
        if q.get("limit"):
            opts["limit"] = int(q.get("limit"))
        found = await self.storage.list(reverse=q.get("reverse") == "1", **opts)
        return json_response(list(found))


class ListFront:
    async def fetch(self, request: Request, env: Any, ctx: Any) -> Response:
        ns = env.LISTER
        return await ns.get(ns.id_from_name("l")).fetch(request)


@pytest.mark.parametrize(
    ("query", "keys"),
    [
        ("", ["a", "b", "b1", "b2", "c", "d"]),
        ("prefix=b", ["b", "b1", "b2"]),
        ("start=b1", ["b1", "b2", "c", "d"]),
        ("start_after=b1", ["b2", "c", "d"]),
        ("end=c", ["a", "b", "b1", "b2"]),
        ("start=b&end=c&reverse=1&limit=2", ["b2", "b1"]),
        ("prefix=b&start=a&end=b2", ["b", "b1"]),
        ("prefix=b&start_after=b", ["b1", "b2"]),
        ("start=c&end=b", []),
    ],
)
def test_storage_list_ranges(query: str, keys: list[str]) -> None:
    """[DOC DO-STOR] list(): keys in order, from start (or after startAfter) up to end (excluded), within prefix; reverse gives the last first, before limit."""
    platform = Platform.create(durable={"LISTER": Lister}, backend=FirstOptionBackend())
    res = platform.request(ListFront(), Request.make("GET", f"/list?{query}"), location="A")
    assert res.json_body() == keys


def test_storage_delete_all_empties_the_object() -> None:
    """§5.4: deleteAll() removes every key in one operation."""
    platform = Platform.create(durable={"LISTER": Lister}, backend=FirstOptionBackend())
    platform.request(ListFront(), Request.make("GET", "/list"), location="A")
    res = platform.request(ListFront(), Request.make("POST", "/deleteAll"), location="A")
    assert res.json_body() == []
    ns = platform.namespaces["LISTER"]
    assert dict(ns.instance(ns.id_from_name("l")).storage.data) == {}


# -- alarms (§5.6) ---------------------------------------------------------------------------


class Alarmed:
    """A Durable Object that counts its alarm runs in storage. ``/set?in=MS`` sets the alarm
    MS from now, ``/get`` answers getAlarm(), ``/delete`` deletes it; ``fail`` in storage makes
    the handler throw that many times."""

    def __init__(self, state: Any, env: Any) -> None:
        self.storage = state.storage
        self.infos: list[tuple[int, bool]] = []

    async def fetch(self, request: Request) -> Response:
        url = URL(request.url)
        if url.pathname == "/set":
            await self.storage.set_alarm(date_now() + int(url.search_params.get("in", "0")))
            if url.search_params.get("fail"):
                await self.storage.put("fail", int(url.search_params.get("fail")))
        elif url.pathname == "/delete":
            await self.storage.delete_alarm()
        return json_response(
            {"alarm": await self.storage.get_alarm(), "runs": await self.storage.get("runs") or 0}
        )

    async def alarm(self, info: Any) -> None:
        self.infos.append((info.retry_count, info.is_retry))
        runs = await self.storage.get("runs") or 0
        await self.storage.put("runs", runs + 1)
        left = await self.storage.get("fail") or 0
        if left:
            await self.storage.put("fail", left - 1)
            raise RuntimeError("the alarm handler failed")


class NoAlarm:
    def __init__(self, state: Any, env: Any) -> None:
        self.storage = state.storage

    async def fetch(self, request: Request) -> Response:
        await self.storage.set_alarm(0)
        return Response("set")


class AlarmFront:
    async def fetch(self, request: Request, env: Any, ctx: Any) -> Response:
        ns = env.ALARMED
        return await ns.get(ns.id_from_name("a")).fetch(request)


def alarm_platform(cls: type = Alarmed, **kw: Any) -> Platform:
    kw.setdefault("backend", FirstOptionBackend())
    return Platform.create(durable={"ALARMED": cls}, **kw)


def send(platform: Platform, path: str) -> Any:
    return platform.request(AlarmFront(), Request.make("POST", path), location="A").json_body()


def runs_after(platform: Platform, ms: int) -> int:
    """Let ``ms`` of virtual time pass, running everything due; the stored run count."""
    sched = platform.scheduler
    end = platform.clock.now_ms + ms
    while True:
        sched.run()
        t = sched.next_wakeup()
        if t is None or t > end:
            break
        sched.advance_to(t)
    sched.advance_to(end)
    sched.run()
    ns = platform.namespaces["ALARMED"]
    return ns.instance(ns.id_from_name("a")).storage.data.get("runs", 0)


def test_alarm_fires_when_due_and_is_used_up() -> None:
    """§5.6: setAlarm(t) runs alarm() once t is reached, and not before; getAlarm() gives t until then, null after."""
    platform = alarm_platform()
    start = platform.clock.now_ms
    assert send(platform, "/set?in=5000") == {"alarm": start + 5000, "runs": 0}
    assert runs_after(platform, 4_999) == 0
    assert runs_after(platform, 1) == 1
    assert send(platform, "/get") == {"alarm": None, "runs": 1}
    assert runs_after(platform, 60_000) == 1


def test_set_alarm_replaces_the_alarm_and_delete_cancels_it() -> None:
    """§5.6: one alarm per object: a second setAlarm replaces the first (earlier or later); deleteAlarm() cancels it."""
    platform = alarm_platform()
    send(platform, "/set?in=10000")
    send(platform, "/set?in=2000")  # earlier: the waiting task is woken for the new time
    assert runs_after(platform, 2_000) == 1
    assert runs_after(platform, 20_000) == 1
    send(platform, "/set?in=1000")
    send(platform, "/set?in=9000")  # later: nothing at 1 s
    assert runs_after(platform, 8_000) == 1 and runs_after(platform, 1_000) == 2
    send(platform, "/set?in=1000")
    assert send(platform, "/delete")["alarm"] is None
    assert runs_after(platform, 5_000) == 2


def test_a_throwing_alarm_is_retried_with_backoff() -> None:
    """§5.6: a handler that throws is retried after 2 s, 4 s, 8 s ... with retryCount and isRetry, up to 6 retries."""
    platform = alarm_platform()
    send(platform, "/set?in=0&fail=2")
    assert runs_after(platform, 0) == 1
    assert runs_after(platform, 1_999) == 1 and runs_after(platform, 1) == 2
    assert runs_after(platform, 3_999) == 2 and runs_after(platform, 1) == 3
    ns = platform.namespaces["ALARMED"]
    assert ns.instance(ns.id_from_name("a")).obj.infos == [(0, False), (1, True), (2, True)]
    assert runs_after(platform, 120_000) == 3
    # Always failing: the first run and 6 retries, then it stops.
    platform = alarm_platform()
    send(platform, "/set?in=0&fail=100")
    assert runs_after(platform, 600_000) == 7


def test_an_alarm_may_fire_twice() -> None:
    """§5.6: "In rare cases, alarms may fire more than once": choice do.alarm.again runs a successful handler again."""
    platform = alarm_platform(backend=ScriptedBackend({"do.alarm.again": [1, 0]}))
    send(platform, "/set?in=1000")
    assert runs_after(platform, 1_000) == 2


def test_an_evicted_object_keeps_its_alarm() -> None:
    """§5.6-5.7: the alarm lives with the storage: after an eviction a fresh instance runs it."""
    platform = alarm_platform()
    send(platform, "/set?in=1000")
    ns = platform.namespaces["ALARMED"]
    ns.evict(ns.id_from_name("a"))
    assert runs_after(platform, 1_000) == 1
    assert ns.instance(ns.id_from_name("a")).obj.infos == [(0, False)]


def test_set_alarm_needs_an_alarm_handler() -> None:
    """§5.6: setAlarm on a class without alarm() throws into the request (a 500)."""
    platform = alarm_platform(NoAlarm)
    res = platform.request(AlarmFront(), Request.make("POST", "/"), location="A")
    assert res.status == 500
    errors = " ".join(e for inv in platform.invocations for e in inv.errors)
    assert "must have an alarm() handler" in errors
