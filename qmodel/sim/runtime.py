"""The Workers runtime around a target: invocations, bindings, ``env``, ``ctx`` and the platform.

A *target* is any object with ``async fetch(request, env, ctx) -> Response`` (a module, an
instance). Each request the platform delivers is one *invocation* at one *location*: its
``env`` carries KV bindings bound to that location and counting that invocation's operations
(the seeds' ``[KVr:3 KVw:1]``), and Durable Object namespaces. ``ctx.wait_until`` keeps
background work alive for 30 s after the response ([W-LIM] "another 30 seconds", reference §6);
work neither awaited nor passed to it is dropped. An exception escaping ``fetch`` becomes a 500,
as Workers answer an uncaught exception (error 1101, §6).
"""

from __future__ import annotations

import inspect
import json
import weakref
from collections.abc import (
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Iterable,
    Mapping,
    Sequence,
)
from typing import Any

import attrs

from qmodel.errors import InvalidTarget
from qmodel.sim.choices import Backend, ChoiceSource, SeededBackend
from qmodel.sim.clock import DEFAULT_START_MS, Clock
from qmodel.sim.durable import AlarmInfo, DurableInstance, DurableNamespace, DurableState
from qmodel.sim.http import Request, Response
from qmodel.sim.kv import KvConfig, KvError, KvStats, KvStore, ListResult
from qmodel.sim.queues import QueueConfig, Queues, attach_consumer
from qmodel.sim.scheduler import TASK_EXITS, Join, Op, Scheduler, Sleep, Task, halted, suspend

__all__ = [
    "Context",
    "Env",
    "Invocation",
    "KvBinding",
    "Platform",
    "WAIT_UNTIL_GRACE_MS",
    "check_target",
    "format_counters",
]

#: [W-LIM] "Use event.waitUntil() to delay cancellation for another 30 seconds" (reference §6).
WAIT_UNTIL_GRACE_MS = 30_000
#: Console lines kept per invocation.
MAX_LOGS = 50
#: §5.6: a throwing alarm handler is retried "with exponential backoff starting at a 2 second
#: delay ... with up to 6 retries".
ALARM_BACKOFF_MS = 2_000
ALARM_RETRIES = 6
#: §5.6: "In rare cases, alarms may fire more than once" ([DO-RULES]). How rare is not said;
#: [INFERENCE] 1 in 100 successful runs is followed by another (choice ``do.alarm.again``).
ALARM_AGAIN_WEIGHTS = (99, 1)
#: The error of ``setAlarm`` on a class without an ``alarm()`` handler.
NO_ALARM_HANDLER = (
    "Your Durable Object class must have an alarm() handler in order to call setAlarm()"
)

FetchFn = Callable[[Request, Any, Any], Coroutine[Any, Any, Response]]


@attrs.define(eq=False)
class Invocation:
    """One request handled by one worker (or Durable Object) at one location."""

    iid: int
    location: str
    label: str
    node: int | None = None
    kv_reads: int = 0
    kv_writes: int = 0
    kv_deletes: int = 0
    kv_lists: int = 0
    #: Exceptions that escaped the target (answered 500) and platform rules broken.
    errors: list[str] = attrs.field(factory=list)
    #: KV errors raised into the target (429s, validation), whether or not it caught them.
    kv_errors: list[KvError] = attrs.field(factory=list)
    #: KV writes (puts and deletes) in order: ``(key, status)``, 200 or the error's status.
    writes: list[tuple[str, int]] = attrs.field(factory=list)
    #: The target's console output while serving it (``console.log: text``), the first
    #: :data:`MAX_LOGS` lines (a JavaScript worker's; Python targets have no console), with
    #: those of the Durable Object requests it made (``QUEUE[main] console.log: text``).
    logs: list[str] = attrs.field(factory=list)
    responded_ms: int | None = None
    background: list[Task] = attrs.field(factory=list)

    @property
    def kv_ops(self) -> int:
        return self.kv_reads + self.kv_writes + self.kv_deletes + self.kv_lists

    def counters(self) -> str:
        """The seeds' log format: ``[KVr:3 KVw:1]`` (lists and deletes shown when nonzero)."""
        return format_counters(self.kv_reads, self.kv_writes, self.kv_lists, self.kv_deletes)


def format_counters(reads: int, writes: int, lists: int, deletes: int) -> str:
    """``[KVr:3 KVw:1]``, with ``KVl``/``KVd`` added when nonzero (the seeds' log format)."""
    text = f"[KVr:{reads} KVw:{writes}"
    if lists:
        text += f" KVl:{lists}"
    if deletes:
        text += f" KVd:{deletes}"
    return text + "]"


class _KvCall(Op):
    """A pending KV call of one binding, performed at the step that resumes the task.

    One subclass per method: each says how it is counted (the HTTP ``method`` of its errors and
    the invocation ``counter`` it adds to), whether it is a write (recorded in
    :attr:`Invocation.writes`) and how it calls the store (:meth:`call`). :meth:`perform` does
    what every call does: count it, pick the cache node, call the store, record the outcome.
    """

    __slots__ = ("binding", "key", "awaited", "site")

    kind = "kv"
    #: The method's name in trace labels (``COMMENTS_KV.get comment:1``).
    verb: str = ""
    #: The HTTP method of its errors (``KV GET failed: ...``).
    method: str = "GET"
    #: The :class:`Invocation` counter it adds to.
    counter: str = "kv_reads"
    #: Whether it is a write, recorded with its status in :attr:`Invocation.writes`.
    is_write: bool = False

    def call(self, store: KvStore, where: tuple[str, int]) -> Any:
        """Perform the operation on ``store`` through ``where``."""
        raise NotImplementedError

    def perform(self, sched: Scheduler, task: Task) -> Any:
        binding = self.binding
        # The call counts toward the invocation of the task performing it: a Durable Object
        # keeps the env it was built with, but each request it serves is its own invocation.
        inv = task.invocation if task.invocation is not None else binding._inv
        limit = binding._limit
        if limit is not None and inv.kv_ops >= limit:
            err = KvError(
                f"KV {self.method} failed: more than {limit} operations in one Worker "
                "invocation (the platform's limit on operations to external services)",
                status=429,
                method=self.method,
            )
            inv.kv_errors.append(err.detached())
            raise err
        setattr(inv, self.counter, getattr(inv, self.counter) + 1)
        store = binding._store
        if inv.node is None:  # the cache node serving this invocation, chosen at its first call
            config = store.config
            n = config.nodes_per_location if config.edge_caches else 1
            inv.node = store.choices.choose("kv.node", n) if n > 1 else 0
        try:
            result = self.call(store, (inv.location, inv.node))
        except KvError as err:
            inv.kv_errors.append(err.detached())
            if self.is_write:
                inv.writes.append((self.key, err.status))
            if store.tap is not None:
                store.tap(self, inv, None, err)
            raise
        if self.is_write:
            inv.writes.append((self.key, 200))
        if store.tap is not None:
            store.tap(self, inv, result, None)
        return result

    def describe(self) -> str:
        return f"{self.binding._binding}.{self.verb} {self.key}"

    def __await__(self) -> Generator[Op, Any, Any]:
        # Awaitable once, like the coroutine a binding method used to return.
        if self.awaited:
            raise RuntimeError("cannot reuse already awaited coroutine")
        self.awaited = True
        return (yield self)


class _KvGet(_KvCall):
    __slots__ = ("cache_ttl",)
    verb = "get"

    def __init__(self, binding: KvBinding, key: str, cache_ttl: int | None) -> None:
        self.binding = binding
        self.key = key
        self.cache_ttl = cache_ttl
        self.awaited = False

    def call(self, store: KvStore, where: tuple[str, int]) -> Any:
        return store.get(where, self.key, cache_ttl=self.cache_ttl)


class _KvGetWithMetadata(_KvGet):
    __slots__ = ()
    verb = "getWithMetadata"

    def call(self, store: KvStore, where: tuple[str, int]) -> Any:
        return store.get_entry(where, self.key, cache_ttl=self.cache_ttl)


class _KvGetBulk(_KvCall):
    """``get([keys])`` / ``getWithMetadata([keys])``: one operation, one read counted (§2.1: "A
    bulk request to Workers KV counts for 1 request to an external service")."""

    __slots__ = ("keys", "cache_ttl", "type", "with_metadata")
    verb = "get[]"
    method = "GET_BULK"

    def __init__(
        self,
        binding: KvBinding,
        keys: Sequence[str],
        cache_ttl: int | None,
        type: str,
        with_metadata: bool,
    ) -> None:
        self.binding = binding
        self.keys = list(keys)
        self.key = self.keys[0] if self.keys else ""
        self.cache_ttl = cache_ttl
        self.type = type
        self.with_metadata = with_metadata
        self.awaited = False

    def call(self, store: KvStore, where: tuple[str, int]) -> Any:
        return store.get_many(
            where,
            self.keys,
            cache_ttl=self.cache_ttl,
            type=self.type,
            with_metadata=self.with_metadata,
        )

    def describe(self) -> str:
        return f"{self.binding._binding}.{self.verb} {', '.join(self.keys)}"


class _KvGetBulkWithMetadata(_KvGetBulk):
    __slots__ = ()
    verb = "getWithMetadata[]"


class _KvPut(_KvCall):
    __slots__ = ("value", "expiration", "expiration_ttl", "metadata")
    verb = "put"
    method = "PUT"
    counter = "kv_writes"
    is_write = True

    def __init__(
        self,
        binding: KvBinding,
        key: str,
        value: Any,
        expiration: int | None,
        expiration_ttl: int | None,
        metadata: Any,
    ) -> None:
        self.binding = binding
        self.key = key
        self.value = value
        self.expiration = expiration
        self.expiration_ttl = expiration_ttl
        self.metadata = metadata
        self.awaited = False

    def call(self, store: KvStore, where: tuple[str, int]) -> Any:
        return store.put(
            where,
            self.key,
            self.value,
            expiration=self.expiration,
            expiration_ttl=self.expiration_ttl,
            metadata=self.metadata,
        )


class _KvDelete(_KvCall):
    __slots__ = ()
    verb = "delete"
    method = "DELETE"
    counter = "kv_deletes"
    is_write = True

    def __init__(self, binding: KvBinding, key: str) -> None:
        self.binding = binding
        self.key = key
        self.awaited = False

    def call(self, store: KvStore, where: tuple[str, int]) -> Any:
        return store.delete(where, self.key)


class _KvList(_KvCall):
    """``key`` holds the prefix."""

    __slots__ = ("limit", "cursor")
    verb = "list"
    method = "LIST"
    counter = "kv_lists"

    def __init__(self, binding: KvBinding, prefix: str, limit: int, cursor: str | None) -> None:
        self.binding = binding
        self.key = prefix
        self.limit = limit
        self.cursor = cursor
        self.awaited = False

    def call(self, store: KvStore, where: tuple[str, int]) -> Any:
        return store.list(where, prefix=self.key, limit=self.limit, cursor=self.cursor)

    def describe(self) -> str:
        return f"{self.binding._binding}.list {self.key!r}" + (" +cursor" if self.cursor else "")


class KvBinding:
    """``env.COMMENTS_KV``: a KV namespace seen from one invocation at one location.

    Every method returns an awaitable, and awaiting it is a scheduling point: the operation
    happens at the step that resumes the task. Each counts toward the invocation's limit of
    1000 operations (§2.1); the 1001st raises :class:`KvError`. (The methods hand back the
    pending operation itself, which is awaitable, rather than being ``async def``: one
    coroutine less per call, on the hottest path of a run.)
    """

    __slots__ = ("_store", "_inv", "_limit", "_binding")

    def __init__(self, store: KvStore, inv: Invocation, binding: str) -> None:
        self._store = store
        self._inv = inv
        self._limit = store.config.ops_per_invocation
        self._binding = binding

    def get(
        self, key: str | list[str], type: str = "text", *, cache_ttl: int | None = None
    ) -> Awaitable[Any]:
        """The value of ``key`` (``None`` when missing); ``type="json"`` parses it. A list of
        keys is one bulk read, giving a dict of key to value (see ``KvStore.get_many``)."""
        if isinstance(key, list | tuple):
            return _KvGetBulk(self, key, cache_ttl, type, False)
        op = _KvGet(self, key, cache_ttl)
        return _parse_json(op) if type == "json" else op

    async def get_with_metadata(
        self, key: str | list[str], type: str = "text", *, cache_ttl: int | None = None
    ) -> dict[str, Any]:
        """``{"value": ..., "metadata": ...}`` for ``key``; for a list of keys, a dict of key
        to that (one bulk read)."""
        if isinstance(key, list | tuple):
            return await _KvGetBulkWithMetadata(self, key, cache_ttl, type, True)
        entry = await _KvGetWithMetadata(self, key, cache_ttl)
        if entry is None:
            return {"value": None, "metadata": None}
        value = json.loads(entry.value) if type == "json" else entry.value
        return {"value": value, "metadata": entry.metadata}

    def put(
        self,
        key: str,
        value: Any,
        *,
        expiration: int | None = None,
        expiration_ttl: int | None = None,
        metadata: Any = None,
    ) -> Awaitable[None]:
        """Write ``value`` (a string) under ``key``."""
        return _KvPut(self, key, value, expiration, expiration_ttl, metadata)

    def delete(self, key: str) -> Awaitable[None]:
        """Delete ``key`` (a missing key is fine)."""
        return _KvDelete(self, key)

    def list(
        self, *, prefix: str = "", limit: int = 1000, cursor: str | None = None
    ) -> Awaitable[ListResult]:
        """One page of keys; follow ``cursor`` until ``list_complete``."""
        return _KvList(self, prefix, limit, cursor)


async def _parse_json(op: _KvGet) -> Any:
    raw = await op
    return None if raw is None else json.loads(raw)


class Env:
    """``env``: the bindings, as attributes (``env.COMMENTS_KV``, ``env.QUEUE``)."""

    def __init__(self, bindings: Mapping[str, Any]) -> None:
        self.__dict__.update(bindings)

    def __repr__(self) -> str:
        return f"Env({', '.join(sorted(self.__dict__))})"


class Context:
    """``ctx``: ``wait_until`` keeps background work alive after the response."""

    __slots__ = ("_spawn",)

    def __init__(self, spawn: Callable[[Any], None]) -> None:
        self._spawn = spawn

    def wait_until(self, awaitable: Any) -> None:
        """Run ``awaitable`` in the background for up to 30 s after the response (§6)."""
        self._spawn(awaitable)

    waitUntil = wait_until  # noqa: N815 - the Workers spelling


def _describe(target: Any) -> str:
    if inspect.ismodule(target):
        return f"module {target.__name__}"
    if inspect.isclass(target):
        return f"class {target.__qualname__}"
    return f"{type(target).__qualname__} instance"


def check_target(
    target: Any, *, name: str | None = None, params: tuple[str, ...] = ("request", "env", "ctx")
) -> FetchFn:
    """Return ``target.fetch`` after checking it meets the target contract.

    ``params`` names the parameters ``fetch`` must accept: ``(request, env, ctx)`` for a worker,
    ``(request,)`` for a Durable Object class's instances.

    Raises :class:`InvalidTarget` naming what is wrong: no ``fetch``, a class given instead of
    an instance, or a ``fetch`` that is not ``async def fetch(request, env, ctx)``.
    """
    label = name or _describe(target)
    if inspect.isclass(target):
        raise InvalidTarget(
            f"target {label} is a class; pass an instance (for example {target.__name__}()) or a "
            "module whose fetch is async def fetch(request, env, ctx)",
            target=label,
        )
    fetch = getattr(target, "fetch", None)
    if fetch is None:
        raise InvalidTarget(
            f"target {label} has no fetch; a target is an object or module with "
            f"async def fetch({', '.join(params)}) -> Response",
            target=label,
        )
    if not inspect.iscoroutinefunction(fetch):
        raise InvalidTarget(
            f"target {label}: fetch is not async; declare it as "
            f"async def fetch({', '.join(params)})"
            " so every platform call can be awaited (and interleaved) as on Workers",
            target=label,
        )
    try:
        # Not ``params``: the required names are still needed for the comparison and message.
        signature = inspect.signature(fetch).parameters
    except (TypeError, ValueError):
        signature = None
    if signature is not None:
        positional = [
            p
            for p in signature.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        ]
        varargs = any(p.kind is p.VAR_POSITIONAL for p in positional)
        if not varargs and len(positional) < len(params):
            raise InvalidTarget(
                f"target {label}: fetch takes {len(positional)} positional parameter(s); it must "
                f"accept ({', '.join(params)})",
                target=label,
            )
    return fetch


async def _serve(
    fetch: FetchFn, request: Request, env: Env, ctx: Context, inv: Invocation
) -> Response:
    try:
        response = await fetch(request, env, ctx)
    except (Exception, *TASK_EXITS) as exc:
        # sys.exit() or KeyboardInterrupt raised by the worker is an uncaught exception like
        # any other (Workers have no process to exit); one that comes from outside the run
        # (the watchdog, Ctrl-C: the schedulers are halted then) stops the run instead.
        if halted() is not None and not isinstance(exc, Exception):
            raise
        inv.errors.append(f"uncaught {type(exc).__name__}: {exc}")
        return Response("Worker threw exception (error 1101)", 500)
    if not isinstance(response, Response):
        inv.errors.append(f"fetch returned {type(response).__name__}, not a Response")
        return Response("Worker returned no Response", 500)
    return response


async def _background(awaitable: Any, inv: Invocation) -> None:
    try:
        await awaitable
    except (Exception, *TASK_EXITS) as exc:
        if halted() is not None and not isinstance(exc, Exception):
            raise
        inv.errors.append(f"wait_until task raised {type(exc).__name__}: {exc}")


def _weakly(method: Callable[..., Task]) -> Callable[..., Task]:
    """``method`` (bound to an object), called through a weak reference to the object."""
    ref = weakref.WeakMethod(method)

    def call(*args: Any) -> Task:
        bound = ref()
        if bound is None:
            raise RuntimeError("the platform of this Durable Object namespace no longer exists")
        return bound(*args)

    return call


@attrs.define(eq=False)
class Platform:
    """The simulated platform one world runs on: clock, choices, KV, Durable Objects, tasks.

    Build one with :meth:`create`. ``send`` delivers a request to a target at a location and
    returns its task; ``fetch`` is the ``await``-able form for actor tasks.
    """

    clock: Clock
    choices: ChoiceSource
    scheduler: Scheduler
    kv: dict[str, KvStore]
    namespaces: dict[str, DurableNamespace] = attrs.field(factory=dict)
    #: Where Durable Objects run (their KV calls go through this location).
    do_location: str = "do-home"
    invocations: list[Invocation] = attrs.field(factory=list)
    #: Cloudflare Queues (``None``: the design declares none); see :meth:`install_queues`.
    queues: Queues | None = None
    _checked: dict[int, tuple[Any, FetchFn]] = attrs.field(factory=dict, init=False)

    @classmethod
    def create(
        cls,
        *,
        backend: Backend | None = None,
        seed: int = 0,
        kv: KvConfig | None = None,
        kv_bindings: Iterable[str] = ("COMMENTS_KV",),
        durable: Mapping[str, type] | None = None,
        start_ms: int = DEFAULT_START_MS,
        max_task_steps: int | None = 10_000,
        record: bool = True,
    ) -> Platform:
        """A fresh platform. ``backend`` decides every choice (default: seeded by ``seed``);
        ``kv`` is the KV profile (default strict); ``durable`` maps binding names to Durable
        Object classes."""
        clock = Clock(start_ms)
        choices = ChoiceSource(backend if backend is not None else SeededBackend(seed))
        sched = Scheduler(clock, choices, max_task_steps=max_task_steps, record=record)
        config = kv if kv is not None else KvConfig.strict()
        stores = {name: KvStore(clock, choices, config) for name in kv_bindings}
        platform = cls(clock, choices, sched, stores)
        # The namespaces call back into the platform to start requests, through a weak
        # reference: the platform owns its namespaces, and a strong one back would make every
        # world a reference cycle, freed not when dropped but by a full garbage collection.
        spawn = _weakly(platform._spawn_durable_request)
        on_alarm = _weakly(platform._alarm_set)
        for binding, do_cls in (durable or {}).items():
            platform.namespaces[binding] = DurableNamespace(
                binding, do_cls, spawn, on_alarm=on_alarm
            )
        return platform

    @property
    def kv_store(self) -> KvStore:
        """The first (usually the only) KV namespace."""
        return next(iter(self.kv.values()))

    # -- invocations ---------------------------------------------------------------------------

    def _invocation(self, location: str, label: str) -> Invocation:
        inv = Invocation(len(self.invocations) + 1, location, label)
        self.invocations.append(inv)
        return inv

    def env_for(self, inv: Invocation) -> Env:
        bindings: dict[str, Any] = {}
        for name, store in self.kv.items():
            bindings[name] = KvBinding(store, inv, name)
        bindings.update(self.namespaces)
        if self.queues is not None:
            bindings.update(self.queues.env_bindings())
        return Env(bindings)

    def _context(self, inv: Invocation) -> Context:
        def spawn(awaitable: Any) -> None:
            deadline = None if inv.responded_ms is None else inv.responded_ms + WAIT_UNTIL_GRACE_MS
            # Started at once, as the promise handed to waitUntil is already running.
            task = self.scheduler.spawn(
                _background(awaitable, inv),
                f"{inv.label}/waitUntil",
                kind="background",
                deadline_ms=deadline,
                eager=True,
            )
            inv.background.append(task)

        return Context(spawn)

    def _responded(self, inv: Invocation) -> Callable[[Task], None]:
        def done(task: Task) -> None:
            inv.responded_ms = self.clock.now_ms
            for bg in inv.background:
                if bg.deadline_ms is None:
                    bg.deadline_ms = inv.responded_ms + WAIT_UNTIL_GRACE_MS

        return done

    def send(
        self, target: Any, request: Request, *, location: str, name: str | None = None
    ) -> Task:
        """Deliver ``request`` to ``target`` at ``location``; return the task serving it.

        The task's result is the :class:`Response`; ``task.invocation`` is the record of its
        KV counters and errors.
        """
        checked = self._checked
        fetch = checked.get(id(target))
        if fetch is None or fetch[0] is not target:
            fetch = checked[id(target)] = (target, check_target(target))
        fetch = fetch[1]
        label = name or f"{request.describe()}@{location}"
        inv = self._invocation(location, label)
        env, ctx = self.env_for(inv), self._context(inv)
        # The request starts running as it arrives, up to its first platform call; which
        # platform call happens when is still the scheduler's choice.
        task = self.scheduler.spawn(
            _serve(fetch, request, env, ctx, inv), label, kind="request", eager=True, invocation=inv
        )
        responded = self._responded(inv)
        if task.finished:  # answered during its eager start, before a callback could be added
            responded(task)
        else:
            task.on_finish.append(responded)
        return task

    def fetch(
        self, target: Any, request: Request, *, location: str, name: str | None = None
    ) -> Any:
        """``await platform.fetch(...)`` from an actor task: send the request, wait for the
        response. A request killed before answering raises ``TaskCancelled`` in the waiter."""
        return suspend(
            Join(
                f"fetch {request.describe()}@{location}",
                lambda: self.send(target, request, location=location, name=name),
            )
        )

    def _object(self, inst: DurableInstance, inv: Invocation, env: Env) -> Any:
        """The live object of ``inst``, constructed first if it has none (a first event, or
        the first after an eviction)."""
        if inst.obj is None:
            binding = inst.storage.label.split("[", 1)[0]
            cls = self.namespaces[binding].cls
            state = DurableState(inst.id, inst.storage, self._context(inv).wait_until)
            inst.obj = cls(state, env)
        return inst.obj

    def _spawn_durable_request(self, inst: DurableInstance, request: Any) -> Task:
        ns_label = inst.storage.label
        inv = self._invocation(self.do_location, f"{ns_label} {request.describe()}")
        env = self.env_for(inv)
        obj = self._object(inst, inv, env)
        checked = self._checked
        fetch = checked.get(id(obj))
        if fetch is None or fetch[0] is not obj:
            label = f"Durable Object class {type(obj).__name__}"
            fetch = checked[id(obj)] = (obj, check_target(obj, name=label, params=("request",)))
        fetch = fetch[1]

        async def run() -> Response:
            return await _serve(lambda r, e, c: fetch(r), request, env, self._context(inv), inv)

        task = self.scheduler.spawn(run, inv.label, kind="durable", owner=inst, invocation=inv)
        task.on_finish.append(self._responded(inv))
        return task

    # -- alarms (§5.6) -------------------------------------------------------------------------

    def _alarm_set(self, inst: DurableInstance, when_ms: int) -> None:
        """Called as ``setAlarm`` is performed: refuse an object without a handler, and make
        sure a task waits for the new time (one that sleeps toward a later time is replaced)."""
        obj = inst.obj
        if obj is not None and not callable(getattr(obj, "alarm", None)):
            raise TypeError(NO_ALARM_HANDLER)
        task = inst.alarm_task
        if task is not None and not task.finished:
            if not isinstance(task.pending, Sleep):
                return  # it is running the handler, and looks at the alarm again after it
            self.scheduler.kill(task, cascade=False)
        inst.alarm_task = self.scheduler.spawn(
            lambda: self._alarms(inst), f"{inst.storage.label} alarm", kind="alarm"
        )

    async def _alarms(self, inst: DurableInstance) -> None:
        """Wait for the object's alarm and run it, until none is set."""
        storage = inst.storage
        retries = 0
        while storage.alarm_ms is not None:
            due = storage.alarm_ms
            now = self.clock.now_ms
            if due > now:
                await Sleep(due - now)
                continue
            # The alarm is used up as its handler starts: inside the handler getAlarm() reads
            # null unless the handler sets a new one.
            storage.alarm_ms = None
            info = AlarmInfo(retries, retries > 0)
            try:
                await Join(f"{storage.label}.alarm", lambda i=info: self._spawn_alarm(inst, i))
            except Exception:  # the handler threw or was stopped: retried, with backoff
                if storage.alarm_ms is None and retries < ALARM_RETRIES:
                    storage.alarm_ms = self.clock.now_ms + ALARM_BACKOFF_MS * 2**retries
                    retries += 1
                else:
                    retries = 0
                continue
            retries = 0
            if storage.alarm_ms is None and (
                self.choices.choose("do.alarm.again", 2, ALARM_AGAIN_WEIGHTS) == 1
            ):
                storage.alarm_ms = self.clock.now_ms  # at-least-once: it fires again

    def _spawn_alarm(self, inst: DurableInstance, info: AlarmInfo) -> Task:
        inv = self._invocation(self.do_location, f"{inst.storage.label} alarm")
        env = self.env_for(inv)
        obj = self._object(inst, inv, env)
        handler = getattr(obj, "alarm", None)

        async def run() -> None:
            if not callable(handler):
                raise TypeError(f"Durable Object class {type(obj).__name__} has no alarm() handler")
            await handler(info)

        task = self.scheduler.spawn(run, inv.label, kind="durable", owner=inst, invocation=inv)
        task.on_finish.append(self._responded(inv))
        return task

    # -- Cloudflare Queues ----------------------------------------------------------------------

    def install_queues(self, queues: Mapping[str, QueueConfig], consumer: Any = None) -> Queues:
        """Give every ``env`` the producer bindings of ``queues`` (binding -> config, as a
        design lists them) and deliver push batches to ``consumer.queue(batch, env, ctx)``."""
        self.queues = Queues(self.scheduler, self.choices, queues)
        attach_consumer(self, self.queues, consumer)
        return self.queues

    # -- driving -------------------------------------------------------------------------------

    def run_until_done(self, task: Task, *, max_steps: int = 100_000) -> Any:
        """Step chosen tasks until ``task`` finishes (jumping the clock over sleeps); return
        its result. Raises ``RuntimeError`` if it cannot finish."""
        self.scheduler.run(max_steps=max_steps, until=lambda: task.finished)
        if not task.finished:
            raise RuntimeError(f"{task!r} did not finish within {max_steps} steps")
        if task.error is not None:
            raise task.error
        return task.result

    def request(self, target: Any, request: Request, *, location: str) -> Response:
        """Send one request and run the world until it answers (a convenience for tests)."""
        return self.run_until_done(self.send(target, request, location=location))

    def kv_stats(self) -> KvStats:
        stats = [s.stats() for s in self.kv.values()]
        return KvStats(
            *(
                sum(getattr(s, f) for s in stats)
                for f in ("reads", "writes", "deletes", "lists", "rejected_429")
            )
        )

    def check(self) -> None:
        """Assert every component's structural invariants."""
        self.scheduler.check()
        for store in self.kv.values():
            store.check()
        for ns in self.namespaces.values():
            ns.check()
        if self.queues is not None:
            self.queues.check()
