"""Cloudflare Queues on the simulated platform: producers, push consumers, HTTP pull consumers.

A design lists its queues as it lists Durable Objects: ``queues = {"JOBS": QueueConfig("jobs",
consumer=PushConsumer())}`` maps a producer binding (``env.JOBS``) to a queue and its one
consumer (reference Q2.14, Q4.2: a queue has one consumer, push or pull). Every rule cites its
section of ``cloudflare-queues-semantics.md`` (Q1..Q7) and is a knob with the platform default.

Delivery is at-least-once (Q3.1): each delivery may leave a duplicate behind (choice
``queue.duplicate``), and each batch is assembled in a chosen order (choice ``queue.order``,
Q3.4), both through the platform's one choice source, so they shrink and replay like the rest.
Push batches are delivered by scheduler tasks driven by the virtual clock (a batch goes out when
``max_batch_size`` messages are visible or the oldest has waited ``max_batch_timeout``, Q2.7);
each delivery is a task whose every await is a scheduling point. Pull consumers are served by
:class:`QueueApi`, the simulated ``api.cloudflare.com`` endpoints for pull and ack (Q4.4, Q4.11),
which a client reaches with ``platform.fetch(platform.queue_api, request, location=...)``.
"""

from __future__ import annotations

import base64
import inspect
import json
from collections.abc import Callable, Generator, Mapping
from typing import Any

import attrs

from qmodel.errors import InvalidTarget
from qmodel.sim.choices import ChoiceSource
from qmodel.sim.http import URL, Request, Response, json_response
from qmodel.sim.scheduler import TASK_EXITS, Call, Op, Scheduler, Sleep, Task, halted

__all__ = [
    "CONTENT_TYPES",
    "MAX_DELAY_S",
    "Message",
    "MessageBatch",
    "PullConsumer",
    "PushConsumer",
    "Queue",
    "QueueApi",
    "QueueBinding",
    "QueueConfig",
    "QueueSendError",
    "Queues",
    "api_path",
    "attach_consumer",
]

#: Q1.12: ``delaySeconds`` is an integer 0..86,400 (24 h) on send and on retry.
MAX_DELAY_S = 86_400
#: Q1.3: the content types; ``json`` is the default for current compatibility dates.
CONTENT_TYPES = ("text", "bytes", "json", "v8")
#: Where push consumer invocations run (their KV calls go through this location).
CONSUMER_LOCATION = "queue-consumer"
#: Q2.11: the platform maximum of concurrent push invocations.
MAX_CONCURRENCY = 250
#: Q3.1 says duplicates are "rare" without a rate (Q3.3, "not documented"). [INFERENCE] one
#: delivery in 100 leaves a copy behind.
DUPLICATE_WEIGHTS = (99, 1)
#: Q3.4: order is best effort. [INFERENCE] each place of a batch keeps FIFO order 3 times in 4;
#: the choice looks at most this many candidates ahead.
REORDER_WINDOW = 10


class QueueSendError(Exception):
    """A send the Queues service refused, with its documented error code (Q1.6-Q1.10, Q1.13).

    The service's own texts are not public (reference "Gaps"): the message is the
    ``queue_expose_error_codes`` form ``<cause> (<code>)`` (Q1.10), with what to change.
    """

    def __init__(self, message: str, *, code: int, name: str) -> None:
        super().__init__(f"{message}: {name} ({code})")
        self.code = code
        self.name = name


def _check_delay(value: Any, what: str, *, code: int, name: str) -> int | None:
    """Q1.12-Q1.13: a delay is an integer 0..86,400 s; the service rejects others."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DELAY_S:
        raise QueueSendError(
            f"{what} {value!r} is not an integer number of seconds from 0 to {MAX_DELAY_S}",
            code=code,
            name=name,
        )
    return value


@attrs.frozen(kw_only=True)
class PushConsumer:
    """A Worker consumer: the platform calls the design's ``queue(batch, env, ctx)`` (Q2.1).

    Defaults are production's (Q2.7-Q2.11); out-of-range values are refused as Wrangler does.
    """

    #: Q2.7: default 10, 1..100.
    max_batch_size: int = 10
    #: Q2.7: default 5 s, 0..60 s.
    max_batch_timeout_s: int = 5
    #: Q2.8: default 3, at most 100 (minimum not documented; 0 accepted, as Miniflare does).
    max_retries: int = 3
    #: Q2.10: the queue exhausted messages go to (``None``: they are deleted).
    dead_letter_queue: str | None = None
    #: Q2.9: default delay of every retried message, 0..86,400 s.
    retry_delay_s: int = 0
    #: Q2.11: ``None`` is autoscaling up to 250; else 1..250 (1 gives serial batches).
    #: [INFERENCE] the autoscaler (Q2.12) is not modelled: every due batch starts at once, up
    #: to this bound, which is the most concurrency production allows.
    max_concurrency: int | None = None

    def __attrs_post_init__(self) -> None:
        _in_range("max_batch_size", self.max_batch_size, 1, 100)
        _in_range("max_batch_timeout_s", self.max_batch_timeout_s, 0, 60)
        _in_range("max_retries", self.max_retries, 0, 100)
        _in_range("retry_delay_s", self.retry_delay_s, 0, MAX_DELAY_S)
        if self.max_concurrency is not None:
            _in_range("max_concurrency", self.max_concurrency, 1, MAX_CONCURRENCY)

    @property
    def concurrency(self) -> int:
        return self.max_concurrency if self.max_concurrency is not None else MAX_CONCURRENCY


@attrs.frozen(kw_only=True)
class PullConsumer:
    """An HTTP pull consumer (Q4): clients pull with a visibility timeout and ack by lease id."""

    #: Q4.5: default batch size 5, at most 100.
    batch_size: int = 5
    #: Q4.5: default visibility timeout 30 s, at most 12 h.
    visibility_timeout_ms: int = 30_000
    #: Q4.5, Q2.8: the same retry settings as a push consumer.
    max_retries: int = 3
    dead_letter_queue: str | None = None
    retry_delay_s: int = 0

    def __attrs_post_init__(self) -> None:
        _in_range("batch_size", self.batch_size, 1, 100)
        _in_range("visibility_timeout_ms", self.visibility_timeout_ms, 0, 12 * 3_600_000)
        _in_range("max_retries", self.max_retries, 0, 100)
        _in_range("retry_delay_s", self.retry_delay_s, 0, MAX_DELAY_S)


def _in_range(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(
            f"queue consumer setting {name}={value!r} is out of range: give an integer from "
            f"{low} to {high} (reference cloudflare-queues-semantics.md Q2.7-Q2.11, Q4.5)"
        )


@attrs.frozen(kw_only=True)
class QueueConfig:
    """One queue: its name, its consumer and the platform rules it follows (each a knob)."""

    #: The queue's name (``batch.queue``, Q2.1; the path of the pull API, Q4.4).
    name: str
    consumer: PushConsumer | PullConsumer | None = None
    #: Q1.12: the queue-level default delivery delay, 0..86,400 s.
    delivery_delay_s: int = 0
    #: Q3.6: retention, default 4 days, 60 s..14 days.
    retention_s: int = 345_600
    #: Q1.6: at most 128 KB (1 KB = 1,000 B) per message, ~100 B metadata included.
    max_message_bytes: int = 128_000
    metadata_bytes: int = 100
    #: Q1.7: ``sendBatch`` takes at most 100 messages and 256 KB in total.
    max_batch_messages: int = 100
    max_batch_bytes: int = 256_000
    #: Q3.1/Q7.1: weights of (one delivery, a duplicate left behind); ``None``: never.
    duplicate_weights: tuple[int, int] | None = DUPLICATE_WEIGHTS
    #: Q3.4/Q7.3: whether batches are assembled in a chosen order (else FIFO).
    reorder: bool = True

    def __attrs_post_init__(self) -> None:
        _in_range("delivery_delay_s", self.delivery_delay_s, 0, MAX_DELAY_S)
        _in_range("retention_s", self.retention_s, 60, 1_209_600)


@attrs.define(eq=False)
class _Stored:
    """A message in the queue: one copy (a duplicate is another copy with the same id)."""

    id: str
    body: Any
    content_type: str
    timestamp_ms: int
    size: int
    visible_ms: int
    #: Deliveries so far (Q2.2: ``attempts`` starts at 1 on the first delivery).
    attempts: int = 0
    #: The lease of the delivery in progress (a pull lease id, or a push batch's), if any.
    lease: str | None = None
    lease_until_ms: int | None = None


def _encoded_size(body: Any, content_type: str) -> int:
    """Bytes of ``body`` as sent (Q1.7: serialized size). [INFERENCE] ``v8`` is sized as its
    JSON text (structured clone has no Python counterpart)."""
    if content_type == "text":
        return len(str(body).encode())
    if content_type == "bytes":
        return len(bytes(body))
    return len(json.dumps(body, separators=(",", ":")).encode())


def _check_body(body: Any, content_type: str | None) -> str:
    """Q1.4: the runtime's argument ``TypeError``s, with their exact texts."""
    if body is None:
        raise TypeError("Message body cannot be undefined")
    kind = (content_type or "json").lower()
    if kind not in CONTENT_TYPES:
        raise TypeError(f"Unsupported queue message content type: {content_type}")
    if kind == "text" and not isinstance(body, str):
        raise TypeError(
            f'Content Type "text" requires a value of type string, but received: {_typeof(body)}'
        )
    if kind == "bytes" and not isinstance(body, bytes | bytearray | memoryview):
        raise TypeError(
            'Content Type "bytes" requires a value of type ArrayBufferView, but received: '
            f"{_typeof(body)}"
        )
    if kind in ("json", "v8"):
        try:
            json.dumps(body)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"queue message body is not serializable as {kind}: {exc}; send JSON values"
            ) from None
    return kind


def _typeof(value: Any) -> str:
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "object"


class Queue:
    """One queue's stored messages and the rules of its consumer."""

    def __init__(self, config: QueueConfig, owner: Queues) -> None:
        self.config = config
        self.owner = owner
        self.messages: list[_Stored] = []
        #: What happened to messages, for tests and reports.
        self.acked: list[str] = []
        self.dead_lettered: list[str] = []
        self.dropped: list[str] = []
        self._timer: Task | None = None
        self._timer_ms: int | None = None
        self.in_flight = 0

    @property
    def name(self) -> str:
        return self.config.name

    def _now(self) -> int:
        return self.owner.scheduler.clock.now_ms

    # -- producing (Q1) ------------------------------------------------------------------------

    def store(self, items: list[tuple[Any, str, int]], delays_s: list[int]) -> None:
        """Durably write ``items`` (body, content type, size) at once (Q1.2), each visible
        after its delay (Q3.7)."""
        now = self._now()
        for (body, kind, size), delay in zip(items, delays_s, strict=True):
            self.owner.sequence += 1
            mid = f"{self.owner.sequence:032x}"  # Q2.2: example ids are 32 hex characters
            self.messages.append(_Stored(mid, body, kind, now, size, now + delay * 1000))
        self.pump()

    # -- delivering (Q2, Q3, Q4) ---------------------------------------------------------------

    def _expire(self) -> None:
        """Q3.6: messages older than the retention period are deleted ([INFERENCE] counted from
        the send: whether a retry restarts it is not documented)."""
        cutoff = self._now() - self.config.retention_s * 1000
        kept = []
        for m in self.messages:
            if m.timestamp_ms <= cutoff:
                self.dropped.append(m.id)
            else:
                kept.append(m)
        self.messages = kept

    def _visible(self) -> list[_Stored]:
        """Messages a consumer may get now: delay over, no live lease (Q3.7, Q4.12)."""
        now = self._now()
        out = []
        for m in self.messages:
            if m.visible_ms > now:
                continue
            if m.lease is not None and (m.lease_until_ms is None or m.lease_until_ms > now):
                continue
            out.append(m)
        return out

    def _exhausted(self, m: _Stored) -> bool:
        """Q2.8/Q4.9: after ``max_retries`` retries (``max_retries + 1`` deliveries,
        [INFERENCE] as Miniflare counts) a message is not delivered again. Q4.12: every pull
        delivery, a lease that ran out included, counts ([INFERENCE])."""
        consumer = self.config.consumer
        assert consumer is not None
        return m.attempts > consumer.max_retries

    def _give_up(self, m: _Stored) -> None:
        """Q2.10: to the dead-letter queue if there is one, else deleted for good."""
        self.messages.remove(m)
        consumer = self.config.consumer
        dlq = consumer.dead_letter_queue if consumer is not None else None
        if dlq is None:
            self.dropped.append(m.id)
            return
        self.dead_lettered.append(m.id)
        # Q2.10: what the DLQ copy keeps is not documented; [INFERENCE] id and timestamp, with
        # attempts restarting (as Miniflare does, Q5.8).
        target = self.owner.queue(dlq)
        target.messages.append(
            _Stored(m.id, m.body, m.content_type, m.timestamp_ms, m.size, self._now())
        )
        target.pump()

    def take(self, limit: int, lease: str, until_ms: int | None) -> list[_Stored]:
        """Up to ``limit`` visible messages under ``lease``, in a chosen order (Q3.4); each
        delivery counts an attempt (Q2.2) and may leave a duplicate behind (Q3.1)."""
        self._expire()
        choices = self.owner.choices
        for m in self._visible():
            if self._exhausted(m):
                self._give_up(m)  # a lease ran out on its last attempt (Q4.12), or a copy
        candidates = self._visible()
        batch: list[_Stored] = []
        while candidates and len(batch) < limit:
            n = min(len(candidates), REORDER_WINDOW)
            index = 0
            if self.config.reorder and n > 1:
                index = choices.choose("queue.order", n, (3 * (n - 1),) + (1,) * (n - 1))
            batch.append(candidates.pop(index))
        for m in batch:
            m.attempts += 1
            m.lease, m.lease_until_ms = lease, until_ms
            weights = self.config.duplicate_weights
            if weights is not None and choices.choose("queue.duplicate", 2, weights) == 1:
                copy = _Stored(m.id, m.body, m.content_type, m.timestamp_ms, m.size, self._now())
                copy.attempts = m.attempts
                self.messages.append(copy)
        return batch

    def ack(self, m: _Stored) -> None:
        """Delete ``m`` (Q2.5, Q4.11)."""
        if m in self.messages:
            self.messages.remove(m)
            self.acked.append(m.id)

    def retry(self, m: _Stored, delay_s: int | None) -> None:
        """Give ``m`` back for a later delivery after ``delay_s`` (else the consumer's
        ``retry_delay``, Q2.9); an exhausted message is given up (Q2.8, Q2.10)."""
        if m not in self.messages:
            return
        consumer = self.config.consumer
        assert consumer is not None
        if self._exhausted(m):
            self._give_up(m)
            return
        delay = consumer.retry_delay_s if delay_s is None else delay_s
        m.lease = m.lease_until_ms = None
        m.visible_ms = self._now() + delay * 1000

    # -- push delivery (Q2) --------------------------------------------------------------------

    def pump(self) -> None:
        """Start the push batches that are due (Q2.7) and set a timer for the next one.

        [INFERENCE] the batch timeout counts from when the oldest waiting message became
        deliverable (Q2.7 says only that a batch goes out when either limit is reached)."""
        consumer = self.config.consumer
        if not isinstance(consumer, PushConsumer) or self.owner.deliver is None:
            return
        self._expire()
        now = self._now()
        while self.in_flight < consumer.concurrency:
            visible = self._visible()
            if not visible:
                break
            oldest = min(m.visible_ms for m in visible)
            due = oldest + consumer.max_batch_timeout_s * 1000
            if len(visible) < consumer.max_batch_size and now < due:
                break
            self.owner.sequence += 1
            lease = f"push-{self.owner.sequence}"
            batch = self.take(consumer.max_batch_size, lease, None)
            if not batch:  # Q2.7: empty batches are never pushed
                break
            self.in_flight += 1
            self.owner.deliver(self, batch)
        self._arm()

    def _next_wakeup(self) -> int | None:
        consumer = self.config.consumer
        assert isinstance(consumer, PushConsumer)
        now = self._now()
        times = [m.visible_ms for m in self.messages if m.lease is None and m.visible_ms > now]
        visible = self._visible()
        if visible and self.in_flight < consumer.concurrency:
            times.append(min(m.visible_ms for m in visible) + consumer.max_batch_timeout_s * 1000)
        return min(times) if times else None

    def _arm(self) -> None:
        """One timer task per queue sleeps until the next batch may be due, then pumps; it
        exists only while something waits, so a drained queue leaves no task running."""
        when = self._next_wakeup()
        timer = self._timer
        if timer is not None and not timer.finished:
            if when is not None and self._timer_ms is not None and self._timer_ms <= when:
                return
            self.owner.scheduler.kill(timer, cascade=False)
        self._timer = None
        if when is None:
            return
        self._timer_ms = when
        self._timer = self.owner.scheduler.spawn(
            lambda: self._wake(when), f"queue {self.name} batch timer", kind="queue"
        )

    async def _wake(self, when: int) -> None:
        wait = when - self._now()
        if wait > 0:
            await Sleep(wait)
        await Call("queue", f"queue {self.name} flush", self._flush)

    def _flush(self) -> None:
        self._timer = None
        self.pump()

    def finished(self, batch: MessageBatch, ok: bool) -> None:
        """Settle a push batch once its invocation is over (Q2.3-Q2.6), then pump again."""
        for msg in batch.messages:
            verdict, delay = msg._verdict(batch, ok)
            if verdict == "ack":
                self.ack(msg._stored)
            else:
                self.retry(msg._stored, delay)
        self.in_flight -= 1
        self.pump()

    def check(self) -> None:
        """Structural invariants: the in-flight count matches the push leases held, and no
        message is delivered more often than its retries allow."""
        consumer = self.config.consumer
        pushed = {m.lease for m in self.messages if m.lease and m.lease.startswith("push-")}
        assert 0 <= self.in_flight, f"queue {self.name}: negative in-flight count"
        assert len(pushed) <= self.in_flight, (
            f"queue {self.name}: {len(pushed)} push leases held by {self.in_flight} invocations"
        )
        if consumer is not None:
            for m in self.messages:
                assert m.attempts <= consumer.max_retries + 1, (
                    f"queue {self.name}: message {m.id} delivered {m.attempts} times"
                )


class Message:
    """A delivered message as a push consumer sees it (Q2.2)."""

    def __init__(self, stored: _Stored) -> None:
        self._stored = stored
        self.id = stored.id
        self.timestamp = stored.timestamp_ms
        self.body = bytes(stored.body) if stored.content_type == "bytes" else stored.body
        self.attempts = stored.attempts
        #: The first of ``ack()``/``retry()`` wins (Q2.6): ``("ack",)`` or ``("retry", delay)``.
        self._call: tuple[str, int | None] | None = None

    def ack(self) -> None:
        """Mark this message delivered whatever the handler's outcome (Q2.5)."""
        if self._call is None:
            self._call = ("ack", None)

    def retry(self, options: Mapping[str, Any] | None = None, *, delay_seconds: Any = None) -> None:
        """Mark this message for a later batch without failing the rest (Q2.5); the delay
        overrides ``retry_delay`` (Q2.9)."""
        if options is not None:
            delay_seconds = options.get("delaySeconds", delay_seconds)
        delay = _check_delay(
            delay_seconds, "retry delaySeconds", code=10203, name="MessageMetadataInvalid"
        )
        if self._call is None:
            self._call = ("retry", delay)

    def _verdict(self, batch: MessageBatch, ok: bool) -> tuple[str, int | None]:
        """``("ack", None)`` or ``("retry", delay)`` (``None``: the consumer's retry delay).

        Q2.6: per message, the first call wins and beats a batch-level call; Q2.5: ``ackAll``
        holds even if the handler then throws; Q2.4: otherwise a failed invocation retries
        every message not acked."""
        call = self._call or batch._call
        if call is not None:
            return call
        return ("ack", None) if ok else ("retry", None)


class MessageBatch:
    """``batch`` of ``queue(batch, env, ctx)`` (Q2.1)."""

    def __init__(self, queue: str, messages: list[Message]) -> None:
        self.queue = queue
        self.messages = messages
        self._call: tuple[str, int | None] | None = None

    def ack_all(self) -> None:
        """Acknowledge every message not marked yet; holds even if the handler throws (Q2.5)."""
        if self._call is None:
            self._call = ("ack", None)

    def retry_all(
        self, options: Mapping[str, Any] | None = None, *, delay_seconds: Any = None
    ) -> None:
        """Retry every message not marked yet (Q2.5), after the delay if given (Q2.9)."""
        if options is not None:
            delay_seconds = options.get("delaySeconds", delay_seconds)
        delay = _check_delay(
            delay_seconds, "retryAll delaySeconds", code=10203, name="MessageMetadataInvalid"
        )
        if self._call is None:
            self._call = ("retry", delay)

    ackAll = ack_all  # noqa: N815 - the Workers spelling
    retryAll = retry_all  # noqa: N815 - the Workers spelling


class QueueBinding:
    """``env.JOBS``: a producer binding (Q1.1). Each send is a scheduling point; once it
    returns, the message is durably written (Q1.2)."""

    def __init__(self, queue: Queue, binding: str) -> None:
        self._queue = queue
        self._binding = binding

    def _item(self, body: Any, content_type: str | None) -> tuple[Any, str, int]:
        kind = _check_body(body, content_type)
        size = _encoded_size(body, kind)
        config = self._queue.config
        if size + config.metadata_bytes > config.max_message_bytes:
            raise QueueSendError(
                f"Queue send failed: message of {size} bytes plus ~{config.metadata_bytes} bytes "
                f"of metadata exceeds the {config.max_message_bytes}-byte limit; send a smaller "
                "body (store the payload elsewhere and send its key)",
                code=10204,
                name="MessageSizeOutOfBounds",
            )
        return (bytes(body) if kind == "bytes" else body, kind, size)

    def _delay(self, *delays: int | None) -> int:
        """Q1.13: per message, then per batch, then the queue default; an explicit 0 wins."""
        for d in delays:
            if d is not None:
                return d
        return self._queue.config.delivery_delay_s

    async def send(
        self,
        body: Any,
        options: Mapping[str, Any] | None = None,
        *,
        content_type: str | None = None,
        delay_seconds: int | None = None,
    ) -> None:
        """Send one message (Q1.1), with ``contentType`` and ``delaySeconds`` options."""
        if options is not None:
            content_type = options.get("contentType", content_type)
            delay_seconds = options.get("delaySeconds", delay_seconds)
        item = self._item(body, content_type)
        delay = _check_delay(
            delay_seconds, "delaySeconds", code=10203, name="MessageMetadataInvalid"
        )
        await Call(
            "queue",
            f"{self._binding}.send",
            lambda: self._queue.store([item], [self._delay(delay)]),
        )

    async def send_batch(
        self,
        messages: list[Mapping[str, Any]],
        options: Mapping[str, Any] | None = None,
        *,
        delay_seconds: int | None = None,
    ) -> None:
        """Send up to 100 messages, 256 KB in all, as one write (Q1.1, Q1.7)."""
        if options is not None:
            delay_seconds = options.get("delaySeconds", delay_seconds)
        if not messages:
            raise TypeError("sendBatch() requires at least one message")
        batch_delay = _check_delay(
            delay_seconds, "sendBatch delaySeconds", code=10202, name="BatchDelayInvalid"
        )
        items, delays = [], []
        for m in messages:
            items.append(self._item(m.get("body"), m.get("contentType")))
            own = _check_delay(
                m.get("delaySeconds"), "delaySeconds", code=10203, name="MessageMetadataInvalid"
            )
            delays.append(self._delay(own, batch_delay))
        config = self._queue.config
        if len(items) > config.max_batch_messages:
            raise QueueSendError(
                f"Queue sendBatch failed: {len(items)} messages; a batch holds at most "
                f"{config.max_batch_messages}, split it",
                code=10206,
                name="BatchCountOutOfBounds",
            )
        total = sum(size + config.metadata_bytes for _, _, size in items)
        if total > config.max_batch_bytes:
            raise QueueSendError(
                f"Queue sendBatch failed: {total} bytes in all; a batch holds at most "
                f"{config.max_batch_bytes} bytes, split it",
                code=10205,
                name="BatchSizeOutOfBounds",
            )
        await Call("queue", f"{self._binding}.sendBatch", lambda: self._queue.store(items, delays))

    sendBatch = send_batch  # noqa: N815 - the Workers spelling


class _AllFinished(Op):
    """Wait until every task of ``tasks`` has finished (Q2.3: the implicit ack waits for the
    ``waitUntil`` promises)."""

    __slots__ = ("tasks",)
    kind = "queue"

    def __init__(self, tasks: list[Task]) -> None:
        self.tasks = tasks

    def ready(self, sched: Scheduler) -> bool:
        return all(t.finished for t in self.tasks)

    def describe(self) -> str:
        return "queue consumer waits for waitUntil"

    def __await__(self) -> Generator[Op, Any, Any]:
        return (yield self)


def api_path(queue: str, action: str, account: str = "account") -> str:
    """The pull API's path for ``queue`` (Q4.4, Q4.11): ``action`` is ``pull`` or ``ack``."""
    return f"/client/v4/accounts/{account}/queues/{queue}/messages/{action}"


class QueueApi:
    """The Queues REST API a pull consumer calls (Q4.4-Q4.13), served as a fetch target."""

    def __init__(self, owner: Queues) -> None:
        self.owner = owner

    def __repr__(self) -> str:
        return "QueueApi()"

    async def fetch(self, request: Request, env: Any, ctx: Any) -> Response:
        """``POST .../queues/{queue}/messages/pull`` or ``.../ack``."""
        parts = URL(request.url).pathname.strip("/").split("/")
        if (
            request.method != "POST"
            or len(parts) != 8
            or parts[:3] != ["client", "v4", "accounts"]
            or parts[4] != "queues"
            or parts[6] != "messages"
            or parts[7] not in ("pull", "ack")
        ):
            return _api_error(404, f"no such endpoint {request.method} {URL(request.url).pathname}")
        queue = self.owner.by_name.get(parts[5])
        if queue is None:
            return _api_error(404, f"no queue named {parts[5]!r}")
        if not isinstance(queue.config.consumer, PullConsumer):
            # Q4.2: a queue has one consumer type; pull needs an HTTP pull consumer. The status
            # and text of the refusal are not documented ([INFERENCE] a 400 saying so).
            return _api_error(
                400,
                f"queue {queue.name} has no HTTP pull consumer; declare "
                "consumer=PullConsumer() for it (a queue has one consumer, push or pull)",
            )
        body = await request.json() if request.body else {}
        if not isinstance(body, dict):
            return _api_error(400, "the request body is a JSON object")
        op = self._pull if parts[7] == "pull" else self._ack
        return await Call("queue", f"queue {queue.name} {parts[7]}", lambda: op(queue, body))

    def _pull(self, queue: Queue, body: dict[str, Any]) -> Response:
        consumer = queue.config.consumer
        assert isinstance(consumer, PullConsumer)
        size = body.get("batch_size", consumer.batch_size)
        visibility = body.get("visibility_timeout_ms", consumer.visibility_timeout_ms)
        if not isinstance(size, int) or not 1 <= size <= 100:
            return _api_error(400, f"batch_size {size!r}: give an integer from 1 to 100 (Q4.5)")
        if not isinstance(visibility, int) or not 0 <= visibility <= 12 * 3_600_000:
            return _api_error(
                400, f"visibility_timeout_ms {visibility!r}: give 0 to 43200000 ms (12 h)"
            )
        self.owner.sequence += 1
        lease = f"lease-{self.owner.sequence}"
        taken = queue.take(size, lease, queue._now() + visibility)
        out = []
        for i, m in enumerate(taken):
            m.lease = f"{lease}.{i}"  # one lease id per message (Q4.7)
            if m.content_type == "text":
                data = m.body
            else:  # Q4.8: json and bytes come base64-encoded
                raw = (
                    bytes(m.body)
                    if m.content_type == "bytes"
                    else json.dumps(m.body, separators=(",", ":")).encode()
                )
                data = base64.b64encode(raw).decode()
            out.append(
                {
                    "body": data,
                    "id": m.id,
                    "timestamp_ms": m.timestamp_ms,
                    "attempts": m.attempts,
                    "metadata": {
                        "CF-sourceMessageSource": "worker",
                        "CF-Content-Type": m.content_type,
                    },
                    "lease_id": m.lease,
                }
            )
            self.owner.leases[m.lease] = (queue, m)
        result = {"message_backlog_count": len(queue.messages), "messages": out}
        return json_response({"success": True, "errors": [], "messages": [], "result": result})

    def _ack(self, queue: Queue, body: dict[str, Any]) -> Response:
        acks = body.get("acks") or []
        retries = body.get("retries") or []
        warnings: list[str] = []
        acked = retried = 0
        for item in acks:
            found = self.owner.leases.get(str((item or {}).get("lease_id")))
            if found is None or found[0] is not queue:
                # [INFERENCE] an unknown lease id is a warning, not an error (Q4.11's
                # ``warnings``; their content is not documented).
                warnings.append(f"unknown lease_id {(item or {}).get('lease_id')!r}")
                continue
            # Q4.13: an ack is accepted after the visibility timeout, even if the message went
            # to another consumer meanwhile.
            queue.ack(found[1])
            acked += 1
        for item in retries:
            found = self.owner.leases.get(str((item or {}).get("lease_id")))
            if found is None or found[0] is not queue:
                warnings.append(f"unknown lease_id {(item or {}).get('lease_id')!r}")
                continue
            m = found[1]
            # [INFERENCE] a late retry (Q4.13: not documented) of a message leased again by
            # another consumer is ignored with a warning.
            if m.lease != (item or {}).get("lease_id"):
                warnings.append(f"lease {item.get('lease_id')} is no longer held")
                continue
            delay = item.get("delay_seconds")
            if delay is not None and (not isinstance(delay, int) or not 0 <= delay <= MAX_DELAY_S):
                warnings.append(f"delay_seconds {delay!r} out of range 0..{MAX_DELAY_S}")
                continue
            queue.retry(m, delay)
            retried += 1
        result = {"ackCount": acked, "retryCount": retried, "warnings": warnings}
        return json_response({"success": True, "errors": [], "messages": [], "result": result})


def _api_error(status: int, message: str) -> Response:
    return json_response(
        {"success": False, "errors": [{"message": message}], "messages": [], "result": None},
        status,
    )


class Queues:
    """Every queue of one platform, its producer bindings and the pull API.

    ``deliver`` is how a push batch reaches the consumer (set by the platform when the design
    has a ``queue`` handler): it starts the invocation and later calls :meth:`Queue.finished`.
    """

    def __init__(
        self, scheduler: Scheduler, choices: ChoiceSource, bindings: Mapping[str, QueueConfig]
    ) -> None:
        self.scheduler = scheduler
        self.choices = choices
        self.sequence = 0
        self.bindings: dict[str, Queue] = {}
        self.by_name: dict[str, Queue] = {}
        self.leases: dict[str, tuple[Queue, _Stored]] = {}
        self.deliver: Callable[[Queue, list[_Stored]], None] | None = None
        self.api = QueueApi(self)
        for binding, config in bindings.items():
            if not isinstance(config, QueueConfig):
                raise TypeError(
                    f"queue binding {binding}: {config!r} is not a QueueConfig; declare "
                    f'queues = {{"{binding}": QueueConfig("name", consumer=...)}}'
                )
            q = self.by_name.get(config.name)
            if q is None:
                q = self.by_name[config.name] = Queue(config, self)
            elif q.config != config:
                raise ValueError(
                    f"queue {config.name!r} is declared twice with different settings; "
                    "bind it once per setting or give both bindings the same QueueConfig"
                )
            self.bindings[binding] = q
        for q in list(self.by_name.values()):
            dlq = q.config.consumer.dead_letter_queue if q.config.consumer else None
            if dlq == q.name:
                # Miniflare refuses it (Q5.8, ERR_DEAD_LETTER_QUEUE_CYCLE); so does this.
                raise ValueError(f"queue {q.name} cannot be its own dead-letter queue")

    def queue(self, name: str) -> Queue:
        """The queue ``name``; a dead-letter queue is created when first used (Q2.10)."""
        q = self.by_name.get(name)
        if q is None:
            q = self.by_name[name] = Queue(QueueConfig(name=name), self)
        return q

    def env_bindings(self) -> dict[str, QueueBinding]:
        """The producer bindings for one invocation's ``env``."""
        return {b: QueueBinding(q, b) for b, q in self.bindings.items()}

    def check(self) -> None:
        for q in self.by_name.values():
            q.check()


class _ConsumerContext:
    """``ctx`` of a push invocation: ``wait_until`` work the implicit ack waits for (Q2.3)."""

    def __init__(self, spawn: Any) -> None:
        self._spawn = spawn

    def wait_until(self, awaitable: Any) -> None:
        """Keep ``awaitable`` running; the batch is acked only once it resolves (Q2.3)."""
        self._spawn(awaitable)

    waitUntil = wait_until  # noqa: N815 - the Workers spelling


def attach_consumer(platform: Any, queues: Queues, target: Any) -> None:
    """Have ``platform`` deliver push batches to ``target.queue(batch, env, ctx)`` (Q2.1).

    Each batch is one invocation, a scheduler task: the handler's every await is a scheduling
    point. A queue with a push consumer needs a target with an ``async def queue``.
    """
    pushed = [
        q.name for q in queues.by_name.values() if isinstance(q.config.consumer, PushConsumer)
    ]
    if not pushed:
        return
    handler = getattr(target, "queue", None)
    if handler is None or not inspect.iscoroutinefunction(handler):
        raise InvalidTarget(
            f"queues {', '.join(pushed)} have a push consumer but the target has no "
            "async def queue(batch, env, ctx); add one, or declare consumer=PullConsumer()",
            target=repr(target),
        )

    def deliver(queue: Queue, stored: list[_Stored]) -> None:
        inv = platform._invocation(CONSUMER_LOCATION, f"queue {queue.name} batch")
        env = platform.env_for(inv)
        background: list[Task] = []
        failed: list[str] = []

        async def guarded(awaitable: Any) -> None:
            try:
                await awaitable
            except Exception as exc:  # Q2.4: a rejected waitUntil promise fails the batch
                failed.append(f"waitUntil task raised {type(exc).__name__}: {exc}")

        def spawn(awaitable: Any) -> None:
            background.append(
                platform.scheduler.spawn(
                    guarded(awaitable), f"{inv.label}/waitUntil", kind="background", eager=True
                )
            )

        batch = MessageBatch(queue.name, [Message(m) for m in stored])

        async def run() -> None:
            ok = True
            try:
                await handler(batch, env, _ConsumerContext(spawn))
            except (Exception, *TASK_EXITS) as exc:
                if halted() is not None and not isinstance(exc, Exception):
                    raise
                inv.errors.append(f"queue() threw {type(exc).__name__}: {exc}")
                ok = False
            # Q2.3: the implicit ack waits for every waitUntil promise.
            await _AllFinished(background)
            inv.errors.extend(failed)
            queue.finished(batch, ok and not failed)

        platform.scheduler.spawn(run, inv.label, kind="queue", invocation=inv)

    queues.deliver = deliver
    for q in queues.by_name.values():
        q.pump()
