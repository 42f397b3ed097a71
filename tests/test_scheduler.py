"""The scheduler and runtime: steps, atomicity between awaits, virtual-time sleeps, kills,
``ctx.wait_until``, foreign awaits, the step limit, the clock and the target contract."""

# One-line test docstrings state the rule in full, with its section and message.
# ruff: noqa: E501

from __future__ import annotations

import asyncio
import re
import types
from typing import Any

import pytest

from qmodel.errors import InvalidTarget, QmodelError, StepLimitExceeded
from qmodel.sim import (
    ChoiceSource,
    Clock,
    FirstOptionBackend,
    KvConfig,
    Platform,
    Request,
    Response,
    Scheduler,
    SeededBackend,
    Task,
    check_target,
    sleep,
)
from qmodel.sim.clock import DEFAULT_START_MS
from qmodel.sim.runtime import WAIT_UNTIL_GRACE_MS
from qmodel.sim.scheduler import Call, suspend

T0 = DEFAULT_START_MS


def make_sched(backend: Any = None, **kwargs: Any) -> Scheduler:
    return Scheduler(Clock(), ChoiceSource(backend or FirstOptionBackend()), **kwargs)


def op(label: str, fn: Any) -> Any:
    """Suspend on a plain platform call performed at the step that resumes the task."""
    return suspend(Call("op", label, fn))


class TwoWrites:
    """A worker that writes ``a`` then ``b`` to KV."""

    async def fetch(self, request: Request, env: Any, ctx: Any) -> Response:
        await env.COMMENTS_KV.put("a", "1")
        await env.COMMENTS_KV.put("b", "1")
        return Response("ok")


def step_task_until_pending(sched: Scheduler, task: Task, label: str) -> None:
    """Step ``task`` alone until it is suspended on ``label`` (no step if it already is: a
    request may start eagerly when sent)."""
    for _ in range(100):
        if task.pending is not None and task.pending.describe() == label:
            return
        sched.step(task)
    raise AssertionError(f"{task!r} never suspended on {label}")


def step_until_pending(platform: Platform, task: Task, label: str) -> None:
    for _ in range(100):
        if task.pending is not None and task.pending.describe() == label:
            return
        assert platform.scheduler.step() is not None
    raise AssertionError(f"{task!r} never suspended on {label}")


# -- steps -------------------------------------------------------------------------------------


def test_a_step_performs_the_pending_operation_at_that_step() -> None:
    """§6/DESIGN: an operation is performed at the step that resumes its task, so a read sees writes of earlier steps."""
    store = {"x": 0}

    async def reader() -> int:
        return await op("read x", lambda: store["x"])

    async def writer() -> None:
        await op("write x", lambda: store.__setitem__("x", 1))

    sched = make_sched()
    r = sched.spawn(reader(), "reader")
    w = sched.spawn(writer(), "writer")
    sched.step(r)  # r suspends on its read; nothing is read yet
    assert store["x"] == 0 and r.pending is not None
    sched.step(w)
    sched.step(w)  # the write happens here
    sched.step(r)  # the read happens here, after the write
    assert r.result == 1
    assert [s.render() for s in sched.trace] == [
        f"1 t={T0} #1 reader: start -> null",
        f"2 t={T0} #2 writer: start -> null",
        f"3 t={T0} #2 writer: write x -> null",
        f"4 t={T0} #1 reader: read x -> 1",
    ]
    sched.check()


def test_a_kv_read_sees_a_put_performed_at_an_earlier_step() -> None:
    """§6: a request that issued its get before another's put, but is stepped after the put, reads the new value."""

    class Reader:
        async def fetch(self, request: Request, env: Any, ctx: Any) -> Response:
            return Response(await env.COMMENTS_KV.get("k") or "missing")

    class Writer:
        async def fetch(self, request: Request, env: Any, ctx: Any) -> Response:
            await env.COMMENTS_KV.put("k", "written")
            return Response("ok")

    platform = Platform.create(backend=FirstOptionBackend(), kv=KvConfig.local())
    sched = platform.scheduler
    reader = platform.send(Reader(), Request.make("GET", "/"), location="A")
    writer = platform.send(Writer(), Request.make("PUT", "/"), location="B")
    step_task_until_pending(sched, reader, "COMMENTS_KV.get k")
    step_task_until_pending(sched, writer, "COMMENTS_KV.put k")
    sched.step(writer)  # the put happens here
    assert reader.pending is not None  # the get was issued before the put, still not performed
    sched.step(reader)  # the get happens here
    assert reader.finished
    sched.run()
    assert reader.result.body == "written"
    assert writer.result.status == 200
    platform.check()


def test_stepping_a_task_that_cannot_run_is_an_error() -> None:
    """DESIGN: step(task) for a sleeping task refuses and says why while others can run; with none runnable it returns None."""
    sched = make_sched()

    async def sleeper() -> None:
        await sleep(100)

    async def other() -> None:
        await sleep(0)

    t = sched.spawn(sleeper(), "sleeper")
    sched.step(t)
    o = sched.spawn(other(), "other")
    with pytest.raises(QmodelError) as info:
        sched.step(t)
    assert str(info.value) == (
        f"{t!r} cannot step now: it is finished, waiting, or behind a Durable Object's input gate"
    )
    assert repr(t) == "<Task #1 sleeper live>"
    sched.run()
    assert o.finished and not t.finished
    assert sched.step(t) is None  # nothing at all can run
    sched.advance(100)
    assert sched.step(t) is t
    assert t.finished and repr(t) == "<Task #1 sleeper done>"


@pytest.mark.parametrize("seed", range(20))
def test_code_between_awaits_is_atomic(seed: int) -> None:
    """§6 [W-HOW]: code between two awaits runs without interruption, so a read-modify-write with no await in it never loses an update."""
    shared = {"n": 0}

    async def inc() -> None:
        await sleep(0)
        n = shared["n"]
        shared["n"] = n + 1
        await sleep(0)

    sched = make_sched(SeededBackend(seed))
    for i in range(4):
        sched.spawn(inc(), f"inc{i}")
    sched.run()
    assert shared["n"] == 4
    assert sched.tasks == []
    sched.check()


def test_an_await_inside_a_read_modify_write_can_lose_an_update() -> None:
    """§6 [W-HOW]: other tasks may run during an await, so some schedule loses an update when the await splits read and write."""

    def final(seed: int) -> int:
        shared = {"n": 0}

        async def inc() -> None:
            n = shared["n"]
            await sleep(0)
            shared["n"] = n + 1

        sched = make_sched(SeededBackend(seed))
        for i in range(4):
            sched.spawn(inc(), f"inc{i}")
        sched.run()
        return shared["n"]

    results = [final(seed) for seed in range(20)]
    assert min(results) < 4
    assert all(1 <= r <= 4 for r in results)


# -- time --------------------------------------------------------------------------------------


def test_sleep_wakes_on_the_virtual_clock() -> None:
    """DESIGN: a sleeping task is runnable only once the virtual clock reaches its wake-up time."""
    sched = make_sched()
    woke: list[int] = []

    async def sleeper(ms: int) -> None:
        await sleep(ms)
        woke.append(sched.clock.now_ms)

    t = sched.spawn(sleeper(500), "sleeper")
    sched.step(t)
    assert sched.runnable() == []
    assert sched.run() == 0  # nothing runnable and no `until`: time does not move by itself
    assert sched.next_wakeup() == T0 + 500
    sched.advance(499)
    assert sched.runnable() == []
    sched.advance(1)
    assert sched.runnable() == [t]
    sched.step(t)
    assert woke == [T0 + 500] and t.finished
    assert sched.next_wakeup() is None


def test_advance_to_next_wakeup_jumps_to_the_earliest_sleeper() -> None:
    """DESIGN: advance_to_next_wakeup jumps the clock to the earliest wake-up and says False when no task sleeps."""
    sched = make_sched()
    order: list[tuple[str, int]] = []

    async def sleeper(name: str, ms: int) -> None:
        await sleep(ms)
        order.append((name, sched.clock.now_ms))

    sched.spawn(sleeper("late", 300), "late")
    sched.spawn(sleeper("early", 100), "early")
    sched.run()  # both start and sleep
    assert sched.advance_to_next_wakeup() is True
    assert sched.clock.now_ms == T0 + 100
    sched.run()
    assert order == [("early", T0 + 100)]
    assert sched.advance_to_next_wakeup() is True
    sched.run()
    assert order == [("early", T0 + 100), ("late", T0 + 300)]
    assert sched.advance_to_next_wakeup() is False
    assert sched.clock.now_ms == T0 + 300


def test_run_with_until_jumps_over_sleeps() -> None:
    """DESIGN: run(until=...) jumps the clock over sleeps until the condition holds."""
    sched = make_sched()

    async def sleeper() -> str:
        await sleep(2_500)
        return "done"

    t = sched.spawn(sleeper(), "sleeper")
    sched.run(until=lambda: t.finished)
    assert t.result == "done" and sched.clock.now_ms == T0 + 2_500


def test_negative_sleep_is_refused() -> None:
    """DESIGN: sleep() of a negative duration raises ValueError."""
    with pytest.raises(ValueError, match=re.escape("sleep(-1): a duration is >= 0 ms")):
        sleep(-1)


def test_clock_never_goes_backwards() -> None:
    """STYLE 6: Clock.advance refuses a negative value and advance_to a past time; the clock is unchanged."""
    clock = Clock()
    with pytest.raises(ValueError) as info:
        clock.advance(-1)
    assert str(info.value) == "Clock.advance(-1): time never goes backwards; pass ms >= 0"
    assert clock.now_ms == T0
    assert clock.advance(0) == T0
    assert clock.advance(250) == T0 + 250
    with pytest.raises(ValueError) as info:
        clock.advance_to(T0)
    assert str(info.value) == (
        f"Clock.advance_to({T0}) is 250 ms in the past (now={T0 + 250}); time never goes backwards"
    )
    assert clock.now_ms == T0 + 250
    assert clock.now_s == (T0 + 250) / 1000
    sched = make_sched()
    with pytest.raises(ValueError, match=re.escape("Clock.advance(-5): time never goes backwards")):
        sched.advance(-5)


# -- kills -------------------------------------------------------------------------------------


def test_kill_leaves_earlier_writes_in_place() -> None:
    """§6: a request killed mid-way keeps the KV writes it already made and makes none after."""
    platform = Platform.create(backend=FirstOptionBackend())
    task = platform.send(TwoWrites(), Request.make("POST", "/"), location="A")
    step_until_pending(platform, task, "COMMENTS_KV.put b")
    platform.scheduler.kill(task)
    assert task.killed and task.finished and task.result is None
    assert platform.kv_store.snapshot().values == {"a": "1"}
    assert platform.scheduler.run() == 0
    assert platform.kv_store.snapshot().values == {"a": "1"}
    assert platform.scheduler.stats().tasks_killed == 1
    assert platform.scheduler.trace[-1].op == "kill"
    platform.check()


def test_kill_with_apply_pending_applies_the_pending_put() -> None:
    """§6: a write sent whose answer never came may have landed: apply_pending=True performs it before the kill."""
    platform = Platform.create(backend=FirstOptionBackend())
    task = platform.send(TwoWrites(), Request.make("POST", "/"), location="A")
    step_until_pending(platform, task, "COMMENTS_KV.put b")
    platform.scheduler.kill(task, apply_pending=True)
    assert task.killed
    assert platform.kv_store.snapshot().values == {"a": "1", "b": "1"}
    assert task.invocation.counters() == "[KVr:0 KVw:2]"
    platform.check()


def test_killing_a_parent_cascades_to_its_request() -> None:
    """§6 [W-LIM]: a client that disconnects cancels its request: killing the awaiting actor kills the request it sent."""
    platform = Platform.create(backend=FirstOptionBackend())
    sched = platform.scheduler

    async def actor() -> Any:
        return await platform.fetch(TwoWrites(), Request.make("POST", "/"), location="A")

    parent = sched.spawn(actor(), "actor")
    sched.step(parent)  # sends the request
    (child,) = parent.children
    assert child.kind == "request" and child.parent is parent
    step_until_pending(platform, child, "COMMENTS_KV.put b")
    sched.kill(parent)
    assert parent.killed and child.killed
    assert sched.tasks == []
    assert platform.kv_store.snapshot().values == {"a": "1"}
    platform.check()


def test_kill_without_cascade_leaves_the_request_running() -> None:
    """DESIGN: kill(cascade=False) stops only the task itself; the request it sent still finishes."""
    platform = Platform.create(backend=FirstOptionBackend())
    sched = platform.scheduler

    async def actor() -> Any:
        return await platform.fetch(TwoWrites(), Request.make("POST", "/"), location="A")

    parent = sched.spawn(actor(), "actor")
    sched.step(parent)
    (child,) = parent.children
    sched.kill(parent, cascade=False)
    sched.run()
    assert child.finished and not child.killed and child.result.status == 200
    assert platform.kv_store.snapshot().values == {"a": "1", "b": "1"}


# -- ctx.wait_until ----------------------------------------------------------------------------


class Background:
    """A worker answering at once and writing ``bg`` in the background after ``?ms=``."""

    def __init__(self, *, use_wait_until: bool = True) -> None:
        self.use_wait_until = use_wait_until

    async def fetch(self, request: Request, env: Any, ctx: Any) -> Response:
        ms = int(request.url.split("ms=")[1])

        async def later() -> None:
            await sleep(ms)
            await env.COMMENTS_KV.put("bg", "done")

        if self.use_wait_until:
            ctx.wait_until(later())
        else:
            later()  # neither awaited nor passed to wait_until
        return Response("answered")


def test_wait_until_work_runs_after_the_response() -> None:
    """§6 [W-CTX]: work passed to ctx.wait_until keeps running after the response and completes."""
    platform = Platform.create(backend=FirstOptionBackend())
    req = platform.send(Background(), Request.make("POST", "/", query={"ms": 1_000}), location="A")
    platform.scheduler.run()
    assert req.result.body == "answered"
    inv = req.invocation
    (bg,) = inv.background
    assert not bg.finished and bg.kind == "background"
    assert inv.responded_ms == T0
    assert bg.deadline_ms == T0 + WAIT_UNTIL_GRACE_MS == T0 + 30_000
    assert platform.kv_store.snapshot().values == {}
    platform.scheduler.run(until=lambda: bg.finished)
    assert not bg.killed
    assert platform.kv_store.snapshot().values == {"bg": "done"}
    assert inv.counters() == "[KVr:0 KVw:1]"
    platform.check()


def test_wait_until_work_is_killed_30_s_after_the_response() -> None:
    """§6 [W-LIM]: background work still running 30 s after the response is cancelled and its later writes never happen."""
    platform = Platform.create(backend=FirstOptionBackend())
    req = platform.send(Background(), Request.make("POST", "/", query={"ms": 40_000}), location="A")
    platform.scheduler.run()
    (bg,) = req.invocation.background
    platform.scheduler.advance(29_999)
    assert not bg.finished
    platform.scheduler.advance(1)
    assert bg.killed
    platform.scheduler.advance(20_000)
    platform.scheduler.run()
    assert platform.kv_store.snapshot().values == {}
    assert platform.scheduler.tasks == []
    platform.check()


def test_wait_until_error_is_recorded() -> None:
    """§6: an exception in wait_until work does not change the response; it is recorded on the invocation."""

    class Failing:
        async def fetch(self, request: Request, env: Any, ctx: Any) -> Response:
            async def boom() -> None:
                await sleep(10)
                await env.COMMENTS_KV.put("", "v")

            ctx.wait_until(boom())
            return Response("ok")

    platform = Platform.create(backend=FirstOptionBackend())
    req = platform.send(Failing(), Request.make("POST", "/"), location="A")
    platform.scheduler.run(until=lambda: not platform.scheduler.tasks)
    assert req.result.status == 200
    assert req.invocation.errors == ["wait_until task raised TypeError: Key name cannot be empty."]


def test_work_not_awaited_is_dropped() -> None:
    """§6: async work neither awaited nor passed to wait_until never runs (Python warns it was never awaited)."""
    platform = Platform.create(backend=FirstOptionBackend())
    with pytest.warns(RuntimeWarning, match="coroutine .*later' was never awaited"):
        res = platform.request(
            Background(use_wait_until=False),
            Request.make("POST", "/", query={"ms": 0}),
            location="A",
        )
    assert res.body == "answered"
    platform.scheduler.advance(60_000)
    platform.scheduler.run()
    assert platform.kv_store.snapshot().values == {}
    assert platform.invocations[0].counters() == "[KVr:0 KVw:0]"
    assert platform.invocations[0].background == []


# -- foreign awaits and the step limit ---------------------------------------------------------


def test_awaiting_asyncio_sleep_is_a_clear_error() -> None:
    """DESIGN: a task that awaits asyncio.sleep(0) can never be resumed: it is stopped as one
    that can never answer (a liveness failure, recorded as an overrun), with a message naming
    the task and what to await instead."""

    class UsesAsyncio:
        async def fetch(self, request: Request, env: Any, ctx: Any) -> Response:
            await asyncio.sleep(0)
            return Response("unreachable")

    platform = Platform.create(backend=FirstOptionBackend())
    with pytest.raises(StepLimitExceeded) as info:
        platform.request(UsesAsyncio(), Request.make("GET", "/x"), location="A")
    assert str(info.value) == (
        "GET /x@A awaited None, which is not a simulated platform call, so nothing can ever "
        "settle it and it can never answer; inside a simulated world await only the env "
        "bindings, request/response methods and qmodel's sleep (not asyncio)"
    )
    assert platform.scheduler.overruns == [info.value]
    assert platform.scheduler.tasks == []
    platform.check()


def test_awaiting_an_asyncio_future_is_a_clear_error() -> None:
    """DESIGN: a task that awaits an asyncio future is stopped as one that can never finish,
    with a StepLimitExceeded naming the future (a liveness failure, not a silent error)."""
    loop = asyncio.new_event_loop()
    try:
        fut = loop.create_future()

        async def waits() -> Any:
            return await fut

        sched = make_sched()
        t = sched.spawn(waits(), "waiter")
        sched.step(t)
        assert t.finished and t.killed
        assert isinstance(t.error, StepLimitExceeded) and sched.overruns == [t.error]
        assert str(t.error) == (
            "waiter awaited <Future pending>, which is not a simulated platform call, so nothing "
            "can ever settle it and it can never answer; inside a simulated world await only the "
            "env bindings, request/response methods and qmodel's sleep (not asyncio)"
        )
        sched.check()
    finally:
        loop.close()


def test_awaiting_a_bare_generator_yield_is_a_clear_error() -> None:
    """DESIGN: any value yielded to the scheduler that is not a platform call is refused the same way."""

    @types.coroutine
    def foreign() -> Any:
        yield "something"

    async def task() -> None:
        await foreign()

    sched = make_sched()
    t = sched.spawn(task(), "odd")
    sched.run()
    assert str(t.error).startswith(
        "odd awaited 'something', which is not a simulated platform call"
    )


def test_task_over_the_step_limit_is_killed_and_recorded() -> None:
    """DESIGN: a task that takes max_task_steps steps without finishing is killed and recorded in overruns with StepLimitExceeded."""

    async def spin() -> None:
        while True:
            await sleep(0)

    sched = make_sched(max_task_steps=5)
    t = sched.spawn(spin(), "spinner")
    sched.run()
    assert t.killed and t.steps == 5
    (exc,) = sched.overruns
    assert isinstance(exc, StepLimitExceeded) and t.error is exc
    assert str(exc) == (
        "spinner took 5 steps without finishing (limit 5); a worker that never answers is "
        "stopped here"
    )
    assert (exc.task, exc.steps) == ("spinner", 5)
    assert sched.tasks == []
    sched.check()


def test_a_worker_that_never_answers_raises_step_limit_from_request() -> None:
    """DESIGN: platform.request of a worker that loops forever raises StepLimitExceeded instead of hanging."""

    class Spinner:
        async def fetch(self, request: Request, env: Any, ctx: Any) -> Response:
            while True:
                await env.COMMENTS_KV.get("k")

    platform = Platform.create(backend=FirstOptionBackend(), max_task_steps=50)
    with pytest.raises(StepLimitExceeded) as info:
        platform.request(Spinner(), Request.make("GET", "/spin"), location="A")
    assert str(info.value) == (
        "GET /spin@A took 50 steps without finishing (limit 50); a worker that never answers is "
        "stopped here"
    )
    assert len(platform.scheduler.overruns) == 1
    platform.check()


# -- the target contract -----------------------------------------------------------------------


class GoodWorker:
    async def fetch(self, request: Request, env: Any, ctx: Any) -> Response:
        return Response("ok")


class NoFetch:
    pass


class SyncFetch:
    def fetch(self, request: Request, env: Any, ctx: Any) -> Response:
        return Response("ok")


class TooFewParams:
    async def fetch(self, request: Request) -> Response:
        return Response("ok")


class VarArgs:
    async def fetch(self, *args: Any) -> Response:
        return Response("ok")


def test_check_target_accepts_a_valid_target() -> None:
    """DESIGN (target contract): an instance with async fetch(request, env, ctx) is accepted and its fetch returned."""
    worker = GoodWorker()
    assert check_target(worker) == worker.fetch
    assert check_target(VarArgs()) is not None
    assert check_target(TooFewParams(), params=("request",)) is not None  # a Durable Object


def test_check_target_refuses_a_class() -> None:
    """DESIGN (target contract): a class instead of an instance raises InvalidTarget saying to pass an instance."""
    with pytest.raises(InvalidTarget) as info:
        check_target(GoodWorker, name="my-worker")
    assert str(info.value) == (
        "target my-worker is a class; pass an instance (for example GoodWorker()) or a module "
        "whose fetch is async def fetch(request, env, ctx)"
    )
    assert info.value.target == "my-worker"
    assert isinstance(info.value, TypeError)
    with pytest.raises(InvalidTarget) as info:
        check_target(GoodWorker)
    assert info.value.target == "class GoodWorker"


def test_check_target_refuses_no_fetch() -> None:
    """DESIGN (target contract): an object without fetch raises InvalidTarget describing the contract."""
    with pytest.raises(InvalidTarget) as info:
        check_target(NoFetch(), name="nofetch")
    assert str(info.value) == (
        "target nofetch has no fetch; a target is an object or module with "
        "async def fetch(request, env, ctx) -> Response"
    )


def test_check_target_refuses_a_sync_fetch() -> None:
    """DESIGN (target contract): a fetch that is not async raises InvalidTarget saying to declare it async."""
    with pytest.raises(InvalidTarget) as info:
        check_target(SyncFetch(), name="sync")
    assert str(info.value) == (
        "target sync: fetch is not async; declare it as async def fetch(request, env, ctx) so "
        "every platform call can be awaited (and interleaved) as on Workers"
    )


def test_check_target_refuses_too_few_parameters() -> None:
    """DESIGN (target contract): a fetch taking fewer than (request, env, ctx) raises InvalidTarget naming the required parameters."""
    with pytest.raises(InvalidTarget) as info:
        check_target(TooFewParams(), name="few")
    assert str(info.value) == (
        "target few: fetch takes 1 positional parameter(s); it must accept (request, env, ctx)"
    )
    with pytest.raises(InvalidTarget) as info:
        check_target(GoodWorker(), name="do", params=("request", "env", "ctx", "extra"))
    assert str(info.value) == (
        "target do: fetch takes 3 positional parameter(s); it must accept "
        "(request, env, ctx, extra)"
    )


def test_platform_send_checks_the_target() -> None:
    """DESIGN (target contract): Platform.send refuses an invalid target before spawning anything."""
    platform = Platform.create(backend=FirstOptionBackend())
    with pytest.raises(InvalidTarget, match=re.escape("fetch is not async")):
        platform.send(SyncFetch(), Request.make("GET", "/"), location="A")
    assert platform.scheduler.tasks == [] and platform.invocations == []
    res = platform.request(GoodWorker(), Request.make("GET", "/"), location="A")
    assert res.status == 200
    platform.check()


def test_fetch_returning_a_non_response_is_a_500() -> None:
    """§6: a fetch that returns something other than a Response answers 500 and records why."""

    class ReturnsDict:
        async def fetch(self, request: Request, env: Any, ctx: Any) -> Any:
            return {"status": 200}

    platform = Platform.create(backend=FirstOptionBackend())
    res = platform.request(ReturnsDict(), Request.make("GET", "/"), location="A")
    assert (res.status, res.body) == (500, "Worker returned no Response")
    assert platform.invocations[0].errors == ["fetch returned dict, not a Response"]


def test_checks_pass_after_a_mixed_run() -> None:
    """STYLE 4: scheduler.check() and platform.check() hold after a run with kills, sleeps and background work."""
    platform = Platform.create(seed=5)
    tasks = [
        platform.send(TwoWrites(), Request.make("POST", "/"), location="A"),
        platform.send(Background(), Request.make("POST", "/", query={"ms": 500}), location="B"),
        platform.send(GoodWorker(), Request.make("GET", "/"), location="C"),
    ]
    platform.scheduler.step()
    platform.scheduler.check()
    platform.scheduler.kill(tasks[0])
    platform.scheduler.run(until=lambda: not platform.scheduler.tasks)
    platform.check()
    stats = platform.scheduler.stats()
    assert stats.tasks_live == 0 and stats.tasks_killed == 1
    assert stats.tasks_spawned == 4 and stats.steps == platform.scheduler.steps
