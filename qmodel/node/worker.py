"""The target side of the Node lane: :class:`NodeWorker`, a Workers target whose code is a real
JavaScript module running in Node.

A :class:`NodeWorker` is one fresh instance of the module: the target of one test case. Its
``fetch(request, env, ctx)`` hands the request to Node and then *serves* it: every platform call
the JavaScript makes (a KV ``get``/``put``/``delete``/``list``, a Durable Object storage call, a
Durable Object request, a timer) arrives as an event, and the request's task performs it through
the very same simulated bindings the Python designs use, ``await``-ing each as a scheduling
point, then sends the outcome back (a KV error becomes a rejected promise with the same
message). So the schedule of JavaScript requests is the scheduler's to choose, and a run is
recorded, replayed and shrunk like any other.

How the Workers runtime's rules map:

* Code between two platform calls runs atomically in Node, as in an isolate. When a request has
  several calls outstanding at once (``Promise.all``), which one is performed next is a choice
  (``node.call``), so their order is explored too.
* A request that waits on something no platform call will settle (a promise another request
  resolves) waits on its own mailbox without being stepped; it also wakes once per virtual
  second while it has nothing outstanding at all, so a worker that can never answer runs into
  the step limit and is reported as ``no-answer`` instead of hanging the run.
* ``ctx.waitUntil``: work still outstanding when the response is sent is served by a background
  task (the platform's 30 s grace applies; calls already sent before the response are served
  too, as subrequests on the wire). A rejected ``waitUntil`` promise is logged in the
  invocation's errors.
* An exception escaping ``fetch`` becomes :class:`JavaScriptError`, which the platform answers
  with a 500 and logs, as Workers do (error 1101).
* Durable Objects: for each binding, :attr:`NodeWorker.durable_objects` holds a Python class
  whose instances stand for one JavaScript object each; the platform runs them with their input
  gates, and their storage calls are performed on the simulated storage, so ``get``, compute,
  ``put`` with only storage awaits between is atomic exactly as there.
* Cloudflare Queues: ``env.<BINDING>.send``/``sendBatch`` are platform calls performed through
  the simulator's producer binding (:class:`~qmodel.sim.queues.QueueBinding`), errors included;
  a push batch is delivered to the module's ``queue(batch, env, ctx)`` by :meth:`NodeWorker.queue`
  as a request of its own, and the batch's ``ack``/``retry``/``ackAll``/``retryAll`` are applied
  in call order to the simulator's :class:`~qmodel.sim.queues.MessageBatch`, which settles it.
  Every Queues rule is the simulator's (reference ``cloudflare-queues-semantics.md``); Node
  only proxies.
"""

from __future__ import annotations

import base64
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from qmodel.node.errors import JavaScriptError, NodeLaneAborted
from qmodel.node.host import LOAD_TIMEOUT_S, NodeHost, host_for
from qmodel.sim.durable import AlarmInfo, DurableId, DurableNamespace
from qmodel.sim.http import Headers, Request, Response
from qmodel.sim.kv import KvError
from qmodel.sim.queues import MessageBatch, QueueBinding, QueueConfig, QueueSendError
from qmodel.sim.runtime import MAX_LOGS as MAX_INVOCATION_LOGS
from qmodel.sim.runtime import KvBinding
from qmodel.sim.scheduler import (
    Sleep,
    Task,
    current_choices,
    current_task,
    date_now,
    give_up,
)

__all__ = ["HANG_POLL_MS", "NodeWorker", "SEED_OPTIONS"]

#: The JavaScript PRNG of a module instance is seeded with one of this many values, drawn from
#: the world's choice source (choice ``node.seed``; option 0 is the unsurprising seed 0).
SEED_OPTIONS = 1 << 16
#: A request with nothing outstanding wakes this often (virtual ms) to look again.
HANG_POLL_MS = 1_000
#: A request that has awaited this many polls in a row with nothing of its own outstanding (no
#: KV or storage call, timer or Durable Object request) is stopped as one that can never answer:
#: 2 minutes of virtual time. (Wall-clock time is unlimited on Workers while the client waits,
#: reference §6, so this bound is qmodel's: it ends a run that would otherwise go on until the
#: step limit. Only a promise settled by another request could still wake such a request.)
HANG_POLLS = 120
HUNG = (
    f"the JavaScript request awaited for {HANG_POLLS * HANG_POLL_MS // 1000} s with nothing of its "
    "own outstanding (no KV or storage call, timer or Durable Object request): it can never answer"
)
#: Console lines kept per test case (the most recent).
MAX_LOGS = 2_000


def _request_json(request: Request) -> dict[str, Any]:
    return {
        "method": request.method,
        "url": request.url,
        "headers": request.headers.items(),
        "body": request.body,
    }


class _Channel:
    """The platform side of one JavaScript request (of the worker or of a Durable Object): what
    it has asked for and not yet received."""

    __slots__ = (
        "rid",
        "env",
        "ctx",
        "storage",
        "calls",
        "done",
        "timers",
        "children",
        "response",
        "waits",
        "waited",
        "blocking",
        "errors",
        "closed",
        "spawned",
        "news",
        "invocation",
        "idle",
        "log_to",
        "log_prefix",
        "batch",
        "rejected",
    )

    def __init__(self, rid: int, env: Any, ctx: Any, storage: Any) -> None:
        self.rid = rid
        self.env = env
        self.ctx = ctx
        self.storage = storage
        #: KV and storage calls not yet performed, in the order made.
        self.calls: list[dict[str, Any]] = []
        #: Durable Object requests answered, not yet delivered: (cid, ok, value).
        self.done: list[tuple[int, bool, Any]] = []
        #: Timers: cid -> virtual ms due.
        self.timers: dict[int, int] = {}
        #: Durable Object requests in flight.
        self.children = 0
        self.response: dict[str, Any] | None = None
        #: ``waitUntil`` promises not yet settled, and whether there ever were any.
        self.waits = 0
        self.waited = False
        #: Depth of ``blockConcurrencyWhile`` (the Durable Object's input gate stays shut).
        self.blocking = 0
        self.errors: list[str] = []
        self.closed = False
        #: The platform's record of the invocation this request is (its console lines go there).
        task = current_task()
        self.invocation: Any = task.invocation if task is not None else None
        # Console lines go to the request an actor sent: a Durable Object's lines to the
        # request that called the object (the first caller that is a request), marked with it.
        root = task
        while root is not None and root.kind != "request" and root.parent is not None:
            root = root.parent
        self.log_to: Any = root.invocation if root is not None else None
        own = self.invocation
        self.log_prefix = "" if root is task or own is None else f"{own.label.split(' ')[0]} "
        #: Polls in a row with nothing outstanding (see :data:`HANG_POLLS`).
        self.idle = 0
        #: Durable Object request tasks sent, whose parent (the task serving this request) is
        #: set when it next waits: the platform's tools follow a request into what it awaits.
        self.spawned: list[Task] = []
        #: Whether something arrived for it since its server last looked (wakes a wait).
        self.news = False
        #: The push batch a ``queue()`` request handles (its ``ack``/``retry`` calls go there),
        #: and the errors those calls raised while the handler ran.
        self.batch: MessageBatch | None = None
        self.rejected: list[Exception] = []

    def ready(self, now: int) -> bool:
        if self.news or self.calls or self.done:
            return True
        return any(due <= now for due in self.timers.values())

    def busy(self) -> bool:
        return bool(self.calls or self.done or self.timers or self.children or self.waits)


class _Wait(Sleep):
    """A JavaScript request waiting for its mailbox: ready as soon as it has something to do; a
    timer's due time or, with nothing outstanding, :data:`HANG_POLL_MS` wakes it as a sleep."""

    __slots__ = ("channel", "kind")

    def __init__(self, channel: _Channel) -> None:
        self.channel = channel
        self.ms = 0
        self.until_ms = -1
        # Inside blockConcurrencyWhile the object's input gate stays shut while it waits.
        self.kind = "storage" if channel.blocking > 0 else "node"

    def issue(self, sched: Any, task: Task) -> None:
        ch = self.channel
        for child in ch.spawned:
            if child.parent is None:
                child.parent = task
        ch.spawned.clear()
        if ch.timers:
            self.until_ms = min(ch.timers.values())
        elif not ch.children:
            self.until_ms = sched.clock.now_ms + HANG_POLL_MS

    def ready(self, sched: Any) -> bool:
        now = sched.clock.now_ms
        return self.channel.ready(now) or 0 <= self.until_ms <= now

    def describe(self) -> str:
        return "JavaScript awaits" + (" (timer)" if self.channel.timers else "")


class _JsDurableObject:
    """One JavaScript Durable Object, as the platform sees it (subclassed per binding)."""

    binding: str = ""
    class_name: str = ""
    _worker: Callable[[], NodeWorker | None]

    def __init__(self, state: Any, env: Any) -> None:
        self.state = state
        self.env = env
        worker = type(self)._worker()
        if worker is None:
            raise RuntimeError("the JavaScript worker of this Durable Object no longer exists")
        self.key = worker._object_key(self.binding, state.id)

    async def fetch(self, request: Request) -> Response:
        worker = type(self)._worker()
        if worker is None:
            raise RuntimeError("the JavaScript worker of this Durable Object no longer exists")
        return await worker._durable_fetch(self, request)

    async def alarm(self, info: AlarmInfo) -> None:
        worker = type(self)._worker()
        if worker is None:
            raise RuntimeError("the JavaScript worker of this Durable Object no longer exists")
        await worker._durable_alarm(self, info)


class NodeWorker:
    """One instance of a JavaScript worker module: the target of one test case.

    Built by :class:`qmodel.node.JsWorker` (one per test case). ``durable_objects`` maps each
    Durable Object binding to the class the platform runs for it; ``kv_bindings`` lists the KV
    bindings (the first is the world's KV namespace); ``logs`` keeps the worker's console
    output as ``(request id, level, text)``.
    """

    def __init__(self, module: Any) -> None:
        self.module = module
        self.kv_bindings: tuple[str, ...] = tuple(module.bindings.kv)
        ref = weakref.ref(self)
        self.durable_objects: dict[str, type] = {
            binding: type(
                cls,
                (_JsDurableObject,),
                {"binding": binding, "class_name": cls, "_worker": staticmethod(ref)},
            )
            for binding, cls in module.bindings.durable.items()
        }
        #: Cloudflare Queues: producer binding -> queue (installed by the ``queues`` eras).
        self.queues: dict[str, QueueConfig] = dict(module.bindings.queues)
        #: How the ``queues`` era's pull consumer orders its calls (the module's ``pullBot``).
        self.pull_bot = getattr(module, "pull_bot", None)
        self.logs: deque[tuple[int | None, str, str]] = deque(maxlen=MAX_LOGS)
        self._host: NodeHost | None = None
        self._instance = 0
        self._generation = 0
        self._channels: dict[int, _Channel] = {}
        self._next_rid = 0
        self._next_object = 0

    def __repr__(self) -> str:
        return f"NodeWorker({self.module.path})"

    # -- Node ----------------------------------------------------------------------------------

    def _load(self) -> None:
        module = self.module
        host = host_for(module.node, module.roots)
        seed = current_choices().choose("node.seed", SEED_OPTIONS)
        instance = host.new_instance()
        events = host.command(
            module.load_command(instance, seed, date_now()), timeout=LOAD_TIMEOUT_S
        )
        for ev in events:
            if ev["e"] == "loadfail":
                raise NodeLaneAborted(
                    f"{module.path} loaded when the target was checked but fails now: "
                    f"{ev['error']}\n{ev.get('stack', '')}"
                )
        self._host, self._instance, self._generation = host, instance, host.generation
        weakref.finalize(self, host.forget, instance, host.generation)
        self._dispatch(events)

    def _command(self, cmd: dict[str, Any]) -> None:
        host = self._host
        if host is None or host.generation != self._generation or host.proc is None:
            first = host.failures.get(self._generation) if host is not None else None
            if first is not None:
                # The process died earlier (a loop, Atomics.wait, the heap): that is the cause,
                # whatever asked the dead worker for more since (a settle, a teardown).
                raise NodeLaneAborted(first)
            raise NodeLaneAborted(
                "this JavaScript worker instance lived in a Node process that has since stopped; "
                "a world cannot be resumed across Node processes"
            )
        cmd["now"] = date_now()
        try:
            events = host.command(cmd)
        except NodeLaneAborted as err:
            message = f"while {_serving()}, {err}"
            host.failures[self._generation] = message
            raise NodeLaneAborted(message) from None
        self._dispatch(events)

    def _dispatch(self, events: list[dict[str, Any]]) -> None:
        channels = self._channels
        for ev in events:
            e = ev["e"]
            if e == "call":
                ch = channels.get(ev["rid"])
                if ch is None:
                    continue  # made after its request ended, without waitUntil: dropped
                ch.news = True
                k = ev["k"]
                if k == "do":
                    self._start_durable_request(ch, ev)
                elif k == "timer":
                    ch.timers[ev["cid"]] = date_now() + ev["ms"]
                else:
                    ch.calls.append(ev)
            elif e == "resp" or e == "fail":
                ch = channels.get(ev["rid"])
                if ch is not None:
                    ch.response = ev
                    ch.news = True
            elif e == "wu":
                ch = channels.get(ev["rid"])
                if ch is not None:
                    ch.news = True
                    ch.waits += ev["d"]
                    ch.waited = True
                    if ev.get("error"):
                        ch.errors.append(ev["error"])
            elif e == "qop":
                ch = channels.get(ev["rid"])
                if ch is not None and ch.batch is not None:
                    _batch_call(ch, ev)
            elif e == "bcw":
                ch = channels.get(ev["rid"])
                if ch is not None:
                    ch.blocking += ev["d"]
            elif e == "cancel":
                ch = channels.get(ev["rid"]) if ev.get("rid") is not None else None
                for c in [ch] if ch is not None else list(channels.values()):
                    c.timers.pop(ev["cid"], None)
            elif e == "log":
                self.logs.append((ev.get("rid"), ev["level"], ev["text"]))
                ch = channels.get(ev["rid"]) if ev.get("rid") is not None else None
                inv = ch.log_to if ch is not None else None
                if inv is not None and len(inv.logs) < MAX_INVOCATION_LOGS:
                    inv.logs.append(f"{ch.log_prefix}console.{ev['level']}: {ev['text']}")

    # -- requests ------------------------------------------------------------------------------

    def _open(self, env: Any, ctx: Any, storage: Any) -> _Channel:
        self._next_rid += 1
        ch = _Channel(self._next_rid, env, ctx, storage)
        self._channels[ch.rid] = ch
        return ch

    def _close(self, ch: _Channel) -> None:
        ch.closed = True
        self._channels.pop(ch.rid, None)

    async def fetch(self, request: Request, env: Any, ctx: Any) -> Response:
        """Deliver ``request`` to the module's ``export default { fetch }`` and serve it."""
        if self._host is None:
            self._load()
        ch = self._open(env, ctx, None)
        self._command(
            {
                "t": "fetch",
                "inst": self._instance,
                "rid": ch.rid,
                "req": _request_json(request),
                "sites": _sites_wanted(env),
            }
        )
        return await self._serve(ch)

    async def queue(self, batch: MessageBatch, env: Any, ctx: Any) -> None:
        """Deliver a push batch to the module's ``queue(batch, env, ctx)`` and serve it.

        The batch in Node is a proxy: each ``ack()``/``retry()``/``ackAll()``/``retryAll()``
        is applied, in call order, to ``batch`` (the simulator's, which settles it: reference
        Q2.3-Q2.6). A throw or a rejected promise raises :class:`JavaScriptError` here, which
        fails the batch (Q2.4). An ``ack``/``retry`` the simulator refuses (a delay out of
        range) raises here too, failing the batch as the throw it is in a Python design
        (JavaScript cannot catch it: the call reaches Python after it has returned).
        [INFERENCE] what the platform does with such a delay is not documented (workerd passes
        delays through to the service, Q1.13); failing the batch is the simulator's choice."""
        if self._host is None:
            self._load()
        ch = self._open(env, ctx, None)
        ch.batch = batch
        messages = [_delivered(m) for m in batch.messages]
        self._command(
            {
                "t": "queue",
                "inst": self._instance,
                "rid": ch.rid,
                "queue": batch.queue,
                "messages": messages,
                "sites": _sites_wanted(env),
            }
        )
        await self._serve(ch)
        if ch.rejected:
            raise ch.rejected[0]

    async def _durable_fetch(self, obj: _JsDurableObject, request: Request) -> Response:
        return await self._durable_event(obj, {"t": "dofetch", "req": _request_json(request)})

    async def _durable_alarm(self, obj: _JsDurableObject, info: AlarmInfo) -> None:
        event = {"t": "doalarm", "retryCount": info.retry_count, "isRetry": info.is_retry}
        await self._durable_event(obj, event)

    async def _durable_event(self, obj: _JsDurableObject, event: dict[str, Any]) -> Response:
        """Deliver a request or an alarm to the JavaScript object behind ``obj``."""
        if self._host is None:
            self._load()
        ch = self._open(obj.env, obj.state, obj.state.storage)
        did = obj.state.id
        self._command(
            event
            | {
                "inst": self._instance,
                "rid": ch.rid,
                "obj": obj.key,
                "cls": obj.class_name,
                "hex": did.hex,
                "name": did.name,
                "sites": _sites_wanted(obj.env),
            }
        )
        return await self._serve(ch)

    def _object_key(self, binding: str, did: DurableId) -> str:
        # A new key for every object the platform constructs: after an eviction the
        # JavaScript object starts afresh too.
        self._next_object += 1
        return f"{binding}:{did.hex}:{self._next_object}"

    async def _serve(self, ch: _Channel) -> Response:
        try:
            while ch.response is None:
                await self._step(ch)
        except GeneratorExit:
            self._close(ch)  # the request was killed: what it still asks for is dropped
            raise
        ev = ch.response
        if ch.busy() or ch.waited:
            ch.ctx.wait_until(self._drain(ch))
        else:
            self._close(ch)
        if ev["e"] == "fail":
            raise JavaScriptError(ev["error"], ev.get("stack", ""))
        return Response(ev["body"], ev["status"], Headers(ev["headers"]))

    async def _drain(self, ch: _Channel) -> None:
        """After the response: serve what ``waitUntil`` (or calls already sent) still needs."""
        try:
            while ch.busy():
                await self._step(ch)
        finally:
            self._close(ch)
        if ch.errors:
            raise JavaScriptError("; ".join(ch.errors))

    async def _step(self, ch: _Channel) -> None:
        """Perform one thing the request asked for (a choice when several are ready), or wait."""
        ch.news = False
        calls = ch.calls
        if len(calls) == 1 and not ch.done and not ch.timers:
            kind, item = "call", calls[0]  # the usual case: one call, no choice to make
        else:
            items: list[tuple[str, Any]] = [("call", ev) for ev in calls]
            items += [("done", d) for d in ch.done]
            if ch.timers:
                now = date_now()
                due = sorted((t, cid) for cid, t in ch.timers.items() if t <= now)
                items += [("timer", cid) for _, cid in due]
            if not items:
                if ch.timers or ch.children or ch.response is not None:
                    ch.idle = 0
                else:
                    ch.idle += 1
                    if ch.idle > HANG_POLLS:
                        give_up(HUNG)
                await _Wait(ch)
                return
            n = len(items)
            kind, item = items[current_choices().choose("node.call", n)] if n > 1 else items[0]
        ch.idle = 0
        if kind == "call":
            ch.calls.remove(item)
            try:
                if item["k"] == "kv":
                    call = self._kv(ch, item)
                    site = item.get("site")  # sent only when a report's replay asks for sites
                    if site is not None and hasattr(type(call), "site"):
                        call.site = site  # type: ignore[attr-defined]
                    value = await call
                    if item["m"] == "list":
                        value = _page(value)
                elif item["k"] == "q":
                    value = await self._send(ch, item)
                else:
                    value = await self._storage(ch, item)
            except (KvError, QueueSendError, TypeError, ValueError) as err:
                self._reply(item["cid"], False, {"name": type(err).__name__, "message": str(err)})
                return
            self._reply(item["cid"], True, value)
        elif kind == "done":
            ch.done.remove(item)
            self._reply(*item)
        else:
            del ch.timers[item]
            self._reply(item, True, None)

    def _reply(self, cid: int, ok: bool, value: Any) -> None:
        if ok:
            self._command({"t": "res", "cid": cid, "ok": True, "v": value})
        else:
            self._command({"t": "res", "cid": cid, "ok": False, "err": value})

    # -- KV ------------------------------------------------------------------------------------

    def _kv_binding(self, env: Any, name: str) -> KvBinding:
        found = getattr(env, name, None)
        if not isinstance(found, KvBinding):
            raise TypeError(
                f"env.{name} is not a KV namespace in this world (its KV bindings: "
                f"{', '.join(self.kv_bindings)}); create the platform with "
                "kv_bindings=worker.kv_bindings"
            )
        return found

    def _kv(self, ch: _Channel, ev: dict[str, Any]) -> Awaitable[Any]:
        """The binding's pending operation for KV call ``ev`` (awaiting it is the scheduling
        point; a put or delete gives ``None``, a list a :class:`ListResult`)."""
        b = self._kv_binding(ch.env, ev["b"])
        m = ev["m"]
        if m == "get":
            return b.get(ev["key"], cache_ttl=ev["cacheTtl"])
        if m == "put":
            return b.put(
                ev["key"],
                ev["value"],
                expiration=ev["expiration"],
                expiration_ttl=ev["expirationTtl"],
                metadata=ev["metadata"],
            )
        if m == "delete":
            return b.delete(ev["key"])
        if m == "getWithMetadata":
            return b.get_with_metadata(ev["key"], cache_ttl=ev["cacheTtl"])
        if m == "getBulk" or m == "getWithMetadataBulk":
            return _entries(self._bulk(b, ev, m == "getWithMetadataBulk"))
        return b.list(prefix=ev["prefix"], limit=ev["limit"], cursor=ev["cursor"])

    @staticmethod
    async def _bulk(b: KvBinding, ev: dict[str, Any], with_metadata: bool) -> dict[str, Any]:
        keys = list(ev["keys"])
        if with_metadata:
            return await b.get_with_metadata(keys, ev["type"], cache_ttl=ev["cacheTtl"])
        return await b.get(keys, ev["type"], cache_ttl=ev["cacheTtl"])

    # -- Queues --------------------------------------------------------------------------------

    async def _send(self, ch: _Channel, ev: dict[str, Any]) -> None:
        """Queue call ``ev`` (``send`` or ``sendBatch``) through the producer binding of the
        invocation, whose errors (``TypeError``, :class:`QueueSendError`) go back to
        JavaScript with their messages."""
        name = ev["b"]
        binding = getattr(ch.env, name, None)
        if not isinstance(binding, QueueBinding):
            raise TypeError(
                f"env.{name} is not a queue producer in this world (its queues: "
                f"{', '.join(self.queues) or 'none'}); run a protocol that installs the "
                "design's queues (queues, queues-push)"
            )
        if ev["m"] == "send":
            await binding.send(
                _sent_body(ev), content_type=ev["contentType"], delay_seconds=ev["delaySeconds"]
            )
            return
        messages = [
            {
                "body": _sent_body(m),
                "contentType": m["contentType"],
                "delaySeconds": m["delaySeconds"],
            }
            for m in ev["messages"]
        ]
        await binding.send_batch(messages, delay_seconds=ev["delaySeconds"])

    # -- Durable Objects -----------------------------------------------------------------------

    async def _storage(self, ch: _Channel, ev: dict[str, Any]) -> Any:
        st = ch.storage
        if st is None:
            raise TypeError("storage calls are for Durable Objects")
        m = ev["m"]
        if m == "get":
            if "keys" in ev:
                found = await st.get(list(ev["keys"]))
                return [[k, found[k]] for k in ev["keys"] if k in found]
            return await st.get(ev["key"])
        if m == "put":
            if "entries" in ev:
                await st.put(dict(ev["entries"]))
            else:
                await st.put(ev["key"], ev["value"])
            return None
        if m == "delete":
            return await st.delete(list(ev["keys"]) if "keys" in ev else ev["key"])
        if m == "deleteAll":
            await st.delete_all()
            return None
        if m == "commit":
            await st.commit([(k, v) for k, v in ev["entries"]])
            return None
        if m == "getAlarm":
            return await st.get_alarm()
        if m == "setAlarm":
            await st.set_alarm(ev["ms"])
            return None
        if m == "deleteAlarm":
            await st.delete_alarm()
            return None
        found = await st.list(
            prefix=ev["prefix"],
            limit=ev["limit"],
            reverse=ev["reverse"],
            start=ev["start"],
            start_after=ev["startAfter"],
            end=ev["end"],
        )
        return [[k, v] for k, v in found.items()]

    def _start_durable_request(self, ch: _Channel, ev: dict[str, Any]) -> None:
        """Send a Durable Object request now (as ``stub.fetch`` does); its answer goes to the
        caller's mailbox, delivered at a step of the caller."""
        cid = ev["cid"]
        ns = getattr(ch.env, ev["b"], None)
        if not isinstance(ns, DurableNamespace):
            message = f"no Durable Object binding {ev['b']}"
            ch.done.append((cid, False, {"name": "TypeError", "message": message}))
            return
        did = ns.id_from_name(ev["name"]) if ev["name"] is not None else DurableId(ev["hex"])
        r = ev["req"]
        request = Request(r["method"], r["url"], Headers(r["headers"]), r["body"])
        task = ns.start_request(did, request)
        ch.children += 1
        ch.spawned.append(task)
        task.on_finish.append(partial(_durable_answered, ch, cid))


def _sites_wanted(env: Any) -> bool:
    """Whether the KV calls' sites are wanted: a report's replay taps the KV store."""
    for value in vars(env).values() if hasattr(env, "__dict__") else ():
        if isinstance(value, KvBinding) and value._store.tap is not None:
            return True
    return False


def _serving() -> str:
    """What the running task serves, for a message: ``serving request GET /x@fra``."""
    task = current_task()
    if task is None:
        return "loading the worker"
    label = getattr(task.invocation, "label", None) or task.name
    return f"serving request {label}"


async def _entries(read: Awaitable[dict[str, Any]]) -> list[list[Any]]:
    """A bulk read's dict as ``[key, value]`` pairs, in the order asked (a ``Map`` in JS)."""
    return [[k, v] for k, v in (await read).items()]


def _page(page: Any) -> dict[str, Any]:
    """A list() page as JavaScript sees it: ``expiration`` and ``metadata`` only when set."""
    keys = []
    for k in page.keys:
        info: dict[str, Any] = {"name": k.name}
        if k.expiration is not None:
            info["expiration"] = k.expiration
        if k.metadata is not None:
            info["metadata"] = k.metadata
        keys.append(info)
    return {"keys": keys, "list_complete": page.list_complete, "cursor": page.cursor}


def _sent_body(ev: dict[str, Any]) -> Any:
    """A message body as JavaScript sent it: ``bytes`` for an ArrayBufferView, ``None`` for
    undefined (which the producer refuses, reference Q1.4)."""
    if ev.get("bytes") is not None:
        return base64.b64decode(ev["bytes"])
    return None if ev.get("undef") else ev["body"]


def _delivered(message: Any) -> dict[str, Any]:
    """A delivered message as it crosses to JavaScript (Q2.2): a ``bytes`` body as base64."""
    out = {"id": message.id, "timestamp": message.timestamp, "attempts": message.attempts}
    if isinstance(message.body, bytes | bytearray):
        out["bytes"] = base64.b64encode(bytes(message.body)).decode()
    else:
        out["body"] = message.body
    return out


def _batch_call(ch: _Channel, ev: dict[str, Any]) -> None:
    """Apply one ``ack``/``retry``/``ackAll``/``retryAll`` of JavaScript to the batch; an error
    (a delay out of range) fails the invocation: at once while the handler runs, else as a
    failed ``waitUntil`` would."""
    batch = ch.batch
    assert batch is not None
    op = ev["op"]
    try:
        if op == "ackAll":
            batch.ack_all()
        elif op == "retryAll":
            batch.retry_all(delay_seconds=ev.get("delaySeconds"))
        elif op == "ack":
            batch.messages[ev["i"]].ack()
        else:
            batch.messages[ev["i"]].retry(delay_seconds=ev.get("delaySeconds"))
    except QueueSendError as err:
        if ch.response is None:
            ch.rejected.append(err)
        else:
            ch.errors.append(f"{op}() raised QueueSendError: {err}")


def _durable_answered(ch: _Channel, cid: int, task: Task) -> None:
    ch.children -= 1
    if ch.closed:
        return
    if task.killed:
        message = "the Durable Object request was stopped before it answered"
        ch.done.append((cid, False, {"name": "Error", "message": message}))
    elif task.error is not None:
        message = f"{type(task.error).__name__}: {task.error}"
        ch.done.append((cid, False, {"name": "Error", "message": message}))
    else:
        r = task.result
        answer = {"status": r.status, "headers": r.headers.items(), "body": r.body}
        ch.done.append((cid, True, answer))
