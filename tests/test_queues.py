"""Cloudflare Queues on the simulated platform: one test per rule, each citing its section of
``cloudflare-queues-semantics.md`` (Q1..Q7), and the ``QUEUES_*`` designs driven by hand.

Every test drives the platform through its scheduler and virtual clock; the choices a test
needs (a duplicate, an order) are scripted by label.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from qmodel.invariants.chat import ALL as CHAT_INVARIANTS

from qmodel.catalog import CATALOG, entry
from qmodel.errors import InvalidTarget
from qmodel.protocols import get as get_protocol
from qmodel.sim.choices import FirstOptionBackend, RecordedBackend, ScriptedBackend
from qmodel.sim.http import Request, Response, json_response
from qmodel.sim.queues import (
    PullConsumer,
    PushConsumer,
    QueueConfig,
    QueueSendError,
    api_path,
)
from qmodel.sim.runtime import Platform
from qmodel.world import World, WorldConfig

Action = Callable[[Any], Awaitable[Any]]


class Producer:
    """A worker whose fetch runs the test's ``action(env)``."""

    def __init__(self, action: Action) -> None:
        self.action = action

    async def fetch(self, request: Request, env: Any, ctx: Any) -> Response:
        await self.action(env)
        return json_response({"ok": True})


class Consumer:
    """A push consumer recording each batch ``(time, [(id, body, attempts)])`` and running the
    test's ``handle(batch)`` on it."""

    def __init__(self, handle: Callable[[Any], Awaitable[None]] | None = None) -> None:
        self.batches: list[tuple[int, list[tuple[str, Any, int]]]] = []
        self.handle = handle
        self.running = 0
        self.most_at_once = 0
        self.platform: Platform | None = None

    async def queue(self, batch: Any, env: Any, ctx: Any) -> None:
        assert self.platform is not None
        now = self.platform.clock.now_ms
        self.batches.append((now, [(m.id, m.body, m.attempts) for m in batch.messages]))
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            if self.handle is not None:
                await self.handle(batch)
        finally:
            self.running -= 1

    def bodies(self) -> list[list[Any]]:
        return [[b for _, b, _ in msgs] for _, msgs in self.batches]


def make(config: QueueConfig, consumer: Consumer | None = None, backend: Any = None) -> Platform:
    platform = Platform.create(backend=backend if backend is not None else FirstOptionBackend())
    consumer = consumer if consumer is not None else Consumer()
    consumer.platform = platform
    platform.install_queues({"JOBS": config}, consumer)
    return platform


def produce(platform: Platform, action: Action) -> Response:
    """Run ``action(env)`` in a request and wait for it."""
    return platform.request(Producer(action), Request.make("POST", "/"), location="fra")


def drive(platform: Platform, ms: int = 600_000) -> None:
    """Run every task, jumping the clock to each wake-up, for at most ``ms`` of virtual time."""
    sched = platform.scheduler
    end = platform.clock.now_ms + ms
    for _ in range(100_000):
        if sched.step() is not None:
            continue
        wake = sched.next_wakeup()
        if wake is None or wake > end:
            break
        sched.advance_to_next_wakeup()
    platform.check()  # the queues' structural invariants hold after every run


def send_all(platform: Platform, bodies: list[Any], **options: Any) -> None:
    async def action(env: Any) -> None:
        for b in bodies:
            await env.JOBS.send(b, options or None)

    assert produce(platform, action).status == 200


def push(**consumer: Any) -> QueueConfig:
    return QueueConfig(name="jobs", consumer=PushConsumer(**consumer), duplicate_weights=None)


def pull_config(**consumer: Any) -> QueueConfig:
    return QueueConfig(name="jobs", consumer=PullConsumer(**consumer), duplicate_weights=None)


def api(platform: Platform, action: str, body: dict[str, Any]) -> Any:
    assert platform.queues is not None
    request = Request.make("POST", api_path("jobs", action), json_body=body)
    response = platform.request(platform.queues.api, request, location="cli")
    return response.status, response.json_body()


def pulled(platform: Platform, **body: Any) -> list[dict[str, Any]]:
    status, answer = api(platform, "pull", body)
    assert status == 200, answer
    return answer["result"]["messages"]


def decode(item: dict[str, Any]) -> Any:
    return json.loads(base64.b64decode(item["body"]))


# -- Q1: producers ---------------------------------------------------------------------------


def test_send_is_durable_once_it_returns() -> None:
    """Q1.2: once send() resolves the message is stored: it is delivered with its body."""
    consumer = Consumer()
    p = make(push(), consumer)
    send_all(p, [{"n": 1}])
    assert p.queues is not None and len(p.queues.by_name["jobs"].messages) == 1
    drive(p)
    assert consumer.bodies() == [[{"n": 1}]]


@pytest.mark.parametrize(
    ("body", "options", "error"),
    [
        (None, None, "Message body cannot be undefined"),
        ("x", {"contentType": "yaml"}, "Unsupported queue message content type: yaml"),
        (
            5,
            {"contentType": "text"},
            'Content Type "text" requires a value of type string, but received: number',
        ),
        (
            "x",
            {"contentType": "bytes"},
            'Content Type "bytes" requires a value of type ArrayBufferView, but received: string',
        ),
    ],
)
def test_send_argument_errors_are_type_errors(body: Any, options: Any, error: str) -> None:
    """Q1.4: argument errors are TypeErrors with the runtime's exact texts."""
    p = make(push())
    caught: list[BaseException] = []

    async def action(env: Any) -> None:
        try:
            await env.JOBS.send(body, options)
        except TypeError as exc:
            caught.append(exc)

    produce(p, action)
    assert [str(e) for e in caught] == [error]


def test_content_type_is_case_insensitive_and_text_is_kept() -> None:
    """Q1.4: the content type matches case-insensitively; Q1.3: a text body arrives as sent."""
    consumer = Consumer()
    p = make(push(), consumer)
    send_all(p, ["hello"], contentType="TEXT")
    drive(p)
    assert consumer.bodies() == [["hello"]]


def test_empty_send_batch_is_refused() -> None:
    """Q1.4: sendBatch() requires at least one message."""
    p = make(push())
    caught: list[str] = []

    async def action(env: Any) -> None:
        try:
            await env.JOBS.sendBatch([])
        except TypeError as exc:
            caught.append(str(exc))

    produce(p, action)
    assert caught == ["sendBatch() requires at least one message"]


def _send_error(p: Platform, action: Action) -> QueueSendError | None:
    caught: list[QueueSendError] = []

    async def run(env: Any) -> None:
        try:
            await action(env)
        except QueueSendError as exc:
            caught.append(exc)

    produce(p, run)
    return caught[0] if caught else None


def test_message_size_limit_counts_metadata() -> None:
    """Q1.6: at most 128,000 bytes including ~100 bytes of metadata: code 10204."""
    p = make(push())
    fits = "x" * (128_000 - 100)
    assert _send_error(p, lambda env: env.JOBS.send(fits, {"contentType": "text"})) is None
    err = _send_error(p, lambda env: env.JOBS.send(fits + "x", {"contentType": "text"}))
    assert err is not None and err.code == 10204 and "MessageSizeOutOfBounds (10204)" in str(err)


def test_send_batch_count_and_size_limits() -> None:
    """Q1.7: sendBatch holds at most 100 messages (10206) and 256 KB in total (10205)."""
    p = make(push())
    hundred = [{"body": i} for i in range(100)]
    assert _send_error(p, lambda env: env.JOBS.sendBatch(hundred)) is None
    err = _send_error(p, lambda env: env.JOBS.sendBatch([*hundred, {"body": 100}]))
    assert err is not None and err.code == 10206
    big = [{"body": "x" * 90_000, "contentType": "text"} for _ in range(3)]
    err = _send_error(p, lambda env: env.JOBS.sendBatch(big))
    assert err is not None and err.code == 10205
    assert _send_error(p, lambda env: env.JOBS.sendBatch(big[:2])) is None


def test_delay_must_be_within_a_day() -> None:
    """Q1.12-Q1.13: delays are integers 0..86,400 s; the service refuses others (10203 per
    message, 10202 per batch)."""
    p = make(push())
    assert _send_error(p, lambda env: env.JOBS.send(1, {"delaySeconds": 86_400})) is None
    err = _send_error(p, lambda env: env.JOBS.send(1, {"delaySeconds": 86_401}))
    assert err is not None and err.code == 10203
    err = _send_error(p, lambda env: env.JOBS.sendBatch([{"body": 1}], {"delaySeconds": -1}))
    assert err is not None and err.code == 10202


def test_delay_precedence() -> None:
    """Q1.13 and Q3.7: per message, then per batch, then the queue default; an explicit 0
    cancels the default; nothing is delivered before its delay ends."""
    consumer = Consumer()
    config = QueueConfig(
        name="jobs",
        consumer=PushConsumer(max_batch_size=1, max_batch_timeout_s=0),
        delivery_delay_s=100,
        duplicate_weights=None,
        reorder=False,
    )
    p = make(config, consumer)
    start = p.clock.now_ms

    async def action(env: Any) -> None:
        await env.JOBS.send("default", {"contentType": "text"})
        await env.JOBS.send("zero", {"contentType": "text", "delaySeconds": 0})
        await env.JOBS.sendBatch(
            [
                {"body": "own", "contentType": "text", "delaySeconds": 10},
                {"body": "batch", "contentType": "text"},
            ],
            {"delaySeconds": 50},
        )

    produce(p, action)
    drive(p)
    when = {msgs[0][1]: (t - start) // 1000 for t, msgs in consumer.batches}
    assert when == {"zero": 0, "own": 10, "batch": 50, "default": 100}


# -- Q2: push consumers ----------------------------------------------------------------------


def test_batches_go_out_full_or_after_the_timeout() -> None:
    """Q2.7: a batch goes out at max_batch_size messages or after max_batch_timeout; partial
    batches happen; empty ones never."""
    consumer = Consumer()
    p = make(push(max_batch_size=10, max_batch_timeout_s=5), consumer)
    start = p.clock.now_ms
    send_all(p, list(range(25)))
    drive(p)
    sizes = [(t - start, len(msgs)) for t, msgs in consumer.batches]
    assert sizes == [(0, 10), (0, 10), (5_000, 5)]
    assert all(msgs for _, msgs in consumer.batches)


def test_production_defaults() -> None:
    """Q2.7-Q2.11, Q4.5: the platform defaults of the consumer settings."""
    c = PushConsumer()
    assert (c.max_batch_size, c.max_batch_timeout_s, c.max_retries, c.concurrency) == (
        10,
        5,
        3,
        250,
    )
    pc = PullConsumer()
    assert (pc.batch_size, pc.visibility_timeout_ms, pc.max_retries) == (5, 30_000, 3)
    assert QueueConfig(name="q").retention_s == 345_600


@pytest.mark.parametrize(
    ("setting", "value"),
    [("max_batch_size", 101), ("max_batch_timeout_s", 61), ("max_retries", 101)],
)
def test_consumer_settings_out_of_range_are_refused(setting: str, value: int) -> None:
    """Q2.7-Q2.8: the documented ranges; the error names the setting and the range."""
    with pytest.raises(ValueError, match=setting):
        PushConsumer(**{setting: value})


def test_a_throw_retries_every_unacked_message() -> None:
    """Q2.4: a throwing handler fails the batch: every message not acked comes back, with
    attempts + 1 and the same id (Q2.2)."""

    async def handle(batch: Any) -> None:
        if batch.messages[0].attempts == 1:
            batch.messages[0].ack()
            raise RuntimeError("the 2nd message fails")

    consumer = Consumer(handle)
    p = make(push(max_batch_size=3), consumer)
    send_all(p, ["a", "b", "c"], contentType="text")
    drive(p)
    first, second = consumer.batches[0][1], consumer.batches[1][1]
    assert [a for _, _, a in first] == [1, 1, 1]
    assert [(i, b, a) for i, b, a in second] == [(i, b, 2) for i, b, _ in first[1:]]
    assert len(consumer.batches) == 2


def test_ack_all_holds_after_a_throw_and_retry_all_retries_all() -> None:
    """Q2.5: ackAll() acts like success even if the handler then throws; retryAll() retries
    every message; retry() retries one without failing the rest."""

    async def handle(batch: Any) -> None:
        body = batch.messages[0].body
        if body == "ack-all":
            batch.ackAll()
            raise RuntimeError("after ackAll")
        if body == "retry-all" and batch.messages[0].attempts == 1:
            batch.retryAll()
        if body == "retry-one" and batch.messages[0].attempts == 1:
            batch.messages[0].retry()

    for body, deliveries in (("ack-all", 1), ("retry-all", 2), ("retry-one", 2)):
        consumer = Consumer(handle)
        p = make(push(max_batch_size=1), consumer)
        send_all(p, [body], contentType="text")
        drive(p)
        assert len(consumer.batches) == deliveries, body


def test_first_call_wins_and_per_message_beats_batch() -> None:
    """Q2.6: per message the first of ack()/retry() wins; a per-message call made before
    ackAll()/retryAll() beats it."""

    async def handle(batch: Any) -> None:
        if batch.messages[0].attempts > 1:
            return
        a, b = batch.messages
        a.ack()
        a.retry()  # ignored: a is acked
        b.retry()
        batch.ackAll()  # b stays retried
        batch.retryAll()  # ignored: ackAll came first

    consumer = Consumer(handle)
    p = make(
        QueueConfig(
            name="jobs",
            consumer=PushConsumer(max_batch_size=2),
            reorder=False,
            duplicate_weights=None,
        ),
        consumer,
    )
    send_all(p, ["a", "b"], contentType="text")
    drive(p)
    assert consumer.bodies() == [["a", "b"], ["b"]]


def test_retries_exhausted_are_dropped_or_dead_lettered() -> None:
    """Q2.8: max_retries retries, so max_retries + 1 deliveries; Q2.10: then deleted, or moved
    to the dead-letter queue (created when first used)."""

    async def fail(batch: Any) -> None:
        raise RuntimeError("always")

    consumer = Consumer(fail)
    p = make(push(max_retries=2), consumer)
    send_all(p, ["x"], contentType="text")
    drive(p)
    assert [msgs[0][2] for _, msgs in consumer.batches] == [1, 2, 3]
    assert p.queues is not None
    jobs = p.queues.by_name["jobs"]
    assert jobs.messages == [] and len(jobs.dropped) == 1

    consumer = Consumer(fail)
    p = make(push(max_retries=0, dead_letter_queue="jobs-dlq"), consumer)
    send_all(p, ["x"], contentType="text")
    drive(p)
    assert len(consumer.batches) == 1
    assert p.queues is not None
    dlq = p.queues.by_name["jobs-dlq"]
    assert [m.body for m in dlq.messages] == ["x"]
    assert p.queues.by_name["jobs"].dead_lettered == [dlq.messages[0].id]


def test_retry_delay_and_its_override() -> None:
    """Q2.9: retry_delay delays every retried message; a delaySeconds on retry() overrides it."""

    async def handle(batch: Any) -> None:
        m = batch.messages[0]
        if m.attempts == 1:
            m.retry({"delaySeconds": 7}) if m.body == "own" else m.retry()

    for body, gap in (("default", 30_000), ("own", 7_000)):
        consumer = Consumer(handle)
        p = make(push(max_batch_size=1, retry_delay_s=30), consumer)
        send_all(p, [body], contentType="text")
        drive(p)
        (t1, _), (t2, _) = consumer.batches
        assert t2 - t1 == gap, body


def test_implicit_ack_waits_for_wait_until_and_its_rejection_fails_the_batch() -> None:
    """Q2.3: the batch counts as acked only once every waitUntil promise resolved; Q2.4: a
    rejected one fails the batch."""
    seen: list[int] = []

    class Waiting(Consumer):
        async def queue(self, batch: Any, env: Any, ctx: Any) -> None:
            await super().queue(batch, env, ctx)
            attempts = batch.messages[0].attempts
            seen.append(attempts)

            async def later() -> None:
                from qmodel.sim.scheduler import sleep

                await sleep(1_000)
                if attempts == 1:
                    raise RuntimeError("background work failed")

            ctx.waitUntil(later())

    consumer = Waiting()
    p = make(push(max_batch_size=1), consumer)
    send_all(p, ["x"], contentType="text")
    drive(p)
    assert seen == [1, 2]


def test_max_concurrency_bounds_overlapping_batches() -> None:
    """Q2.11: max_concurrency 1 gives serial batches; unset, batches overlap."""
    from qmodel.sim.scheduler import sleep

    async def slow(batch: Any) -> None:
        await sleep(10_000)

    for limit, expected in ((1, 1), (None, 3)):
        consumer = Consumer(slow)
        p = make(push(max_batch_size=1, max_concurrency=limit), consumer)
        send_all(p, ["a", "b", "c"], contentType="text")
        drive(p)
        assert len(consumer.batches) == 3
        assert consumer.most_at_once == expected, limit


def test_retention_deletes_old_messages() -> None:
    """Q3.6: messages older than the retention period are deleted unconsumed."""
    p = make(QueueConfig(name="jobs", consumer=PullConsumer(), retention_s=60))
    send_all(p, [1])
    p.scheduler.advance(61_000)
    assert pulled(p) == []
    assert p.queues is not None and len(p.queues.by_name["jobs"].dropped) == 1


def test_a_push_queue_needs_a_queue_handler() -> None:
    """Q2.1: a push consumer is a Worker with queue(batch, env, ctx); without one the design
    is refused, saying what to add."""
    p = Platform.create()
    with pytest.raises(InvalidTarget, match=r"async def queue\(batch, env, ctx\)"):
        p.install_queues({"JOBS": push()}, object())


# -- Q4: HTTP pull consumers -----------------------------------------------------------------


def test_pull_defaults_to_five_and_short_polls() -> None:
    """Q4.5-Q4.6: a pull returns at most batch_size (default 5) messages at once, or none."""
    p = make(pull_config())
    assert pulled(p) == []
    send_all(p, list(range(7)))
    assert [decode(m) for m in pulled(p)] == [0, 1, 2, 3, 4]
    assert [decode(m) for m in pulled(p, batch_size=10)] == [5, 6]


def test_pull_body_encoding_and_shape() -> None:
    """Q4.7-Q4.8: each item has body, id, timestamp_ms, attempts, metadata and lease_id; text
    bodies are plain, json bodies base64."""
    p = make(pull_config())
    send_all(p, ["plain"], contentType="text")
    send_all(p, [{"k": 1}])
    text, data = pulled(p)
    assert set(text) == {"body", "id", "timestamp_ms", "attempts", "metadata", "lease_id"}
    assert text["body"] == "plain" and decode(data) == {"k": 1}
    assert text["attempts"] == 1 and text["metadata"]["CF-Content-Type"] == "text"


def test_a_lease_that_runs_out_is_redelivered() -> None:
    """Q4.12: a message neither acked nor retried within the visibility timeout is delivered
    again (not before), with attempts + 1 (Q4.12 inference)."""
    p = make(pull_config())
    send_all(p, ["x"], contentType="text")
    [first] = pulled(p, visibility_timeout_ms=10_000)
    p.scheduler.advance(9_999)
    assert pulled(p) == []
    p.scheduler.advance(1)
    [again] = pulled(p)
    assert again["id"] == first["id"] and again["attempts"] == 2
    assert again["lease_id"] != first["lease_id"]


def test_ack_and_retry_by_lease_id() -> None:
    """Q4.11-Q4.12: an ack by lease id deletes the message; a retry returns it at once or after
    delay_seconds."""
    p = make(pull_config())
    send_all(p, ["a", "b"], contentType="text")
    a, b = pulled(p)
    status, answer = api(
        p,
        "ack",
        {
            "acks": [{"lease_id": a["lease_id"]}],
            "retries": [{"lease_id": b["lease_id"], "delay_seconds": 5}],
        },
    )
    assert status == 200
    assert (answer["result"]["ackCount"], answer["result"]["retryCount"]) == (1, 1)
    assert pulled(p) == []
    p.scheduler.advance(5_000)
    assert [m["body"] for m in pulled(p)] == ["b"]


def test_a_late_ack_is_accepted() -> None:
    """Q4.13: an ack by lease id is accepted after the visibility timeout, even once another
    consumer got the message; both acks succeed."""
    p = make(pull_config())
    send_all(p, ["x"], contentType="text")
    [first] = pulled(p, visibility_timeout_ms=1_000)
    p.scheduler.advance(1_000)
    [second] = pulled(p)
    _, answer = api(p, "ack", {"acks": [{"lease_id": first["lease_id"]}]})
    assert answer["result"]["ackCount"] == 1
    _, answer = api(p, "ack", {"acks": [{"lease_id": second["lease_id"]}]})
    assert answer["success"] is True
    p.scheduler.advance(60_000)
    assert pulled(p) == []


def test_pull_from_a_push_queue_is_refused() -> None:
    """Q4.2: a queue has one consumer type; pulling from a push-consumed queue is an error."""
    p = make(push(), Consumer())
    status, answer = api(p, "pull", {})
    assert status == 400 and "no HTTP pull consumer" in answer["errors"][0]["message"]


def test_pull_retries_exhausted_are_dropped() -> None:
    """Q4.9 and Q2.8: after max_retries + 1 deliveries a pull message is not delivered again."""
    p = make(pull_config(max_retries=1))
    send_all(p, ["x"], contentType="text")
    for _ in range(2):
        [m] = pulled(p)
        api(p, "ack", {"retries": [{"lease_id": m["lease_id"]}]})
    assert pulled(p) == []


# -- Q3/Q7: at-least-once delivery as recorded choices ---------------------------------------


def test_a_duplicate_is_a_recorded_choice() -> None:
    """Q3.1 and Q7.1: a delivery may leave a copy behind (choice ``queue.duplicate``); the copy
    has the same id and is delivered even after the first was acked."""
    config = QueueConfig(name="jobs", consumer=PullConsumer())
    p = make(config, backend=ScriptedBackend({"queue.duplicate": [1]}))
    send_all(p, ["x"], contentType="text")
    [first] = pulled(p)
    api(p, "ack", {"acks": [{"lease_id": first["lease_id"]}]})
    [copy] = pulled(p)
    assert copy["id"] == first["id"]
    assert [c.label for c in p.choices.log].count("queue.duplicate") == 2
    p = make(config)  # option 0: no duplicate
    send_all(p, ["x"], contentType="text")
    [first] = pulled(p)
    api(p, "ack", {"acks": [{"lease_id": first["lease_id"]}]})
    assert pulled(p) == []


def test_order_is_a_recorded_choice_and_replays() -> None:
    """Q3.4 and Q7.3: batches are assembled in a chosen order (``queue.order``); the recorded
    choices replay the same deliveries."""
    p = make(pull_config(), backend=ScriptedBackend({"queue.order": [2]}))
    send_all(p, [0, 1, 2, 3])
    order = [decode(m) for m in pulled(p)]
    assert order == [2, 0, 1, 3]
    replayed = make(pull_config(), backend=RecordedBackend(list(p.choices.log)))
    send_all(replayed, [0, 1, 2, 3])
    assert [decode(m) for m in pulled(replayed)] == order
    fifo = make(
        QueueConfig(name="jobs", consumer=PullConsumer(), reorder=False),
        backend=ScriptedBackend({"queue.order": [2]}),
    )
    send_all(fifo, [0, 1, 2, 3])
    assert [decode(m) for m in pulled(fifo)] == [0, 1, 2, 3]


# -- the designs (issue 12, items 4 and 5) ---------------------------------------------------

QUEUES_IDS = [i for i in CATALOG if i.startswith("QUEUES_")]


def world(
    catalog_id: str, script: dict[str, list[int]], bots: int = 2, target: Any = None
) -> World:
    """A world of the catalog entry's protocol on its design, or on ``target`` (another
    implementation of it, such as the JavaScript design: tests/test_node_queues.py)."""
    e = entry(catalog_id)
    config = WorldConfig(protocol=e.protocol, bots=bots, frontends=1)
    design = target if target is not None else e.target()
    return World.create(design, config, ScriptedBackend(script), get_protocol(e.protocol))


def run_for(w: World, ms: int) -> None:
    end = w.platform.clock.now_ms + ms
    while w.platform.clock.now_ms < end:
        if w.run(20) == 0:
            break


def broken(w: World) -> list[str]:
    w.settle()
    return [i.id for i in CHAT_INVARIANTS if i.check(w.context())]


def replies(w: World) -> int:
    return sum(
        1
        for ex in w.history.exchanges
        if ex.kind == "post" and ex.ok and (ex.body or {}).get("replyTo")
    )


def lease_runs_out(catalog_id: str, target: Any = None) -> World:
    """A generation of 75 s outlasts the 30 s lease: the other bot gets the message too."""
    w = world(catalog_id, {"bot.generate_ms": [3]}, target=target)
    w.apply("post", 0)
    run_for(w, 90_000)
    return w


def test_queues_reply_not_idempotent() -> None:
    """Q4.12, Q7.5: the lease runs out while bot 1 generates; bot 2 answers; bot 1's late reply
    is stored too (two replies, one-reply). The sound design refuses it (409) and acks."""
    w = lease_runs_out("QUEUES_REPLY_NOT_IDEMPOTENT")
    assert replies(w) == 2
    assert "one-reply" in broken(w)
    w = lease_runs_out("QUEUES_SOUND")
    assert replies(w) == 1
    assert any(ex.kind == "post" and ex.status == 409 for ex in w.history.exchanges)
    assert broken(w) == []


def crash_while_generating(catalog_id: str, target: Any = None) -> World:
    """Both bots crash 10 s into a 75 s generation of the one message."""
    w = world(catalog_id, {"bot.generate_ms": [3, 3]}, target=target)
    w.apply("post", 0)
    run_for(w, 10_000)
    w.apply("crash", 0)
    w.apply("crash", 1)
    return w


def test_queues_ack_before_reply() -> None:
    """Q3.2: a message stays in the queue until acked. Acked on pull, it is lost when the bot
    crashes before replying (pending-visible, one-reply); acked after the reply, its lease runs
    out and another pull answers it."""
    assert {"pending-visible", "one-reply"} <= set(
        broken(crash_while_generating("QUEUES_ACK_BEFORE_REPLY"))
    )
    w = crash_while_generating("QUEUES_SOUND")
    assert broken(w) == [] and replies(w) == 1


def duplicated(catalog_id: str, target: Any = None) -> World:
    """The push consumer's first delivery leaves a duplicate behind."""
    w = world(catalog_id, {"queue.duplicate": [1]}, bots=0, target=target)
    w.apply("post", 0)
    run_for(w, 30_000)
    return w


def test_queues_push_reply_not_idempotent() -> None:
    """Q3.1, Q7.1: a duplicate delivery to the push consumer: the handler that stores every
    reply answers twice; the sound handler's second reply is refused and the copy acked."""
    w = duplicated("QUEUES_PUSH_REPLY_NOT_IDEMPOTENT")
    assert "one-reply" in broken(w)
    w = duplicated("QUEUES_PUSH_SOUND")
    assert broken(w) == []
    assert w.platform.queues is not None
    assert len(w.platform.queues.by_name["comments"].acked) == 2


def busy_pull(catalog_id: str, target: Any = None) -> World:
    """Six messages, two bots, 20 s."""
    w = world(catalog_id, {}, target=target)
    for i in range(6):
        w.apply("post", i)
    run_for(w, 20_000)
    return w


def test_queues_sound() -> None:
    """The sound pull design answers every message of a busy run once."""
    w = busy_pull("QUEUES_SOUND")
    assert broken(w) == []
    assert replies(w) == 6


def busy_push(catalog_id: str, target: Any = None) -> World:
    """Twelve messages to the push consumer, 20 s."""
    w = world(catalog_id, {}, bots=0, target=target)
    for i in range(12):
        w.apply("post", i)
    run_for(w, 20_000)
    return w


def test_queues_push_sound() -> None:
    """The sound push design answers every message once, in batches of up to ten."""
    assert broken(busy_push("QUEUES_PUSH_SOUND")) == []


def test_every_queues_catalog_id_has_a_scenario() -> None:
    """Each QUEUES_* catalog id is driven by hand in this module; sound ones list no
    invariant."""
    names = {n[len("test_") :].upper() for n in globals() if n.startswith("test_")}
    assert [i for i in QUEUES_IDS if i not in names] == []
    assert all(not CATALOG[i].invariants for i in QUEUES_IDS if i.endswith("_SOUND"))


@pytest.mark.slow
@pytest.mark.parametrize("catalog_id", [i for i in QUEUES_IDS if not CATALOG[i].invariants])
def test_full_budget_queues_sound_is_clean(catalog_id: str) -> None:
    """qmodel check --profile ci reports nothing on the sound Queues designs, for ten seeds."""
    from qmodel.cli import check_args, run_check

    for s in range(10):
        args = ["--target", f"catalog:{catalog_id}", "--seed", str(s)]
        assert run_check(check_args(args))["verdict"] == "ok", (catalog_id, s)
