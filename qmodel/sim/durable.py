"""Durable Objects: one single-threaded instance per id, transactional storage, input gates.

The rules, from ``docs/reference/workers-kv-semantics.md`` §5:

* One instance per id; every request for the id goes to it (§5.1, [DO-BLOG]). The instance is
  created on the first request, ``cls(state, env)``, and keeps its in-memory fields until it is
  evicted (:meth:`DurableNamespace.evict`), after which a fresh instance starts with the same
  storage and empty memory (§5.7, "In-memory state is not preserved if the Durable Object is
  evicted").
* Requests interleave at awaits (§5.1), except that the **input gate** holds while a storage
  operation is outstanding: no other request of the object is started or resumed until the
  task that issued it suspends on something that is not storage, or finishes (§5.2, [DO-BLOG]:
  "While a storage operation is executing, no events shall be delivered to the object except
  for storage completion events"). So ``get``, compute, ``put`` with only storage awaits in
  between is atomic; an ``await`` on KV, ``fetch`` or a timer opens the gate (§5.2 pitfall 1).
* Each storage call is atomic and isolated (§5.4); ``put`` of a dict and ``delete`` of a list
  apply all their keys at once. A request killed between two storage awaits leaves the first
  write in place (§6, "A DO's storage writes are torn only at await boundaries").
* Values are stored as copies (structured clone), so later mutation of a stored object does not
  change storage.
* Alarms (§5.6): one per object, kept with its storage (an evicted object's alarm still fires,
  in a fresh instance). ``set_alarm`` replaces it; when it is due the platform runs the object's
  ``alarm(info)`` as an event of the object (behind its input gate), retries a handler that
  throws with exponential backoff from 2 s, up to 6 retries, and, rarely, runs a handler that
  succeeded once more ("In rare cases, alarms may fire more than once", [DO-RULES]).
"""

from __future__ import annotations

import copy
import hashlib
import pickle
from collections.abc import Callable
from functools import partial
from typing import Any

import attrs
from sortedcontainers import SortedDict

from qmodel.sim.scheduler import Call, Join, Task, suspend

__all__ = [
    "AlarmInfo",
    "DurableId",
    "DurableInstance",
    "DurableNamespace",
    "DurableState",
    "DurableStorage",
    "DurableStub",
]


def _utf8(key: str) -> bytes:
    return key.encode("utf-8")


_ATOMS = (str, int, float, bool, type(None), bytes)
_dumps, _loads, _PROTOCOL = pickle.dumps, pickle.loads, pickle.HIGHEST_PROTOCOL


def _clone(value: Any) -> Any:
    """A structured clone: a deep copy. A pickle round trip copies the JSON-like values storage
    mostly holds several times faster than a copy in Python, keeping every type as it was;
    what pickle refuses falls back to ``copy.deepcopy``."""
    if type(value) in _ATOMS:
        return value
    try:
        return _loads(_dumps(value, _PROTOCOL))
    except Exception:  # noqa: BLE001 - anything pickle refuses is copied the slow way
        return copy.deepcopy(value)


@attrs.frozen
class DurableId:
    """A Durable Object id; ``id_from_name`` of the same name always gives the same id."""

    hex: str
    name: str | None = None

    def __str__(self) -> str:
        return self.hex


@attrs.frozen
class AlarmInfo:
    """What ``alarm(info)`` receives (JavaScript's ``{retryCount, isRetry}``, §5.6)."""

    retry_count: int = 0
    is_retry: bool = False


@attrs.define(eq=False)
class DurableStorage:
    """``state.storage``: the object's transactional key-value storage (§5.4).

    Keys are strings listed in UTF-8 byte order. Every method is ``async`` and a scheduling
    point of kind ``storage`` (it holds the input gate while outstanding).
    """

    label: str
    data: SortedDict = attrs.field(factory=lambda: SortedDict(_utf8))
    reads: int = 0
    writes: int = 0
    #: The object's alarm: when it is due (virtual ms since the epoch), or ``None`` (§5.6).
    alarm_ms: int | None = None
    #: Called when an alarm is set (the platform checks for a handler and arms it).
    alarm_hook: Callable[[int], None] | None = attrs.field(default=None, repr=False)
    #: The pickled form of each stored value that is not an atom, made as it is stored, so a
    #: read copies it out with one ``pickle.loads``.
    _blobs: dict[str, bytes] = attrs.field(factory=dict, init=False, repr=False)

    def _store(self, key: str, value: Any) -> None:
        if type(value) in _ATOMS:
            self.data[key] = value
            self._blobs.pop(key, None)
            return
        try:
            blob = _dumps(value, _PROTOCOL)
        except Exception:  # noqa: BLE001 - anything pickle refuses is copied the slow way
            self.data[key] = copy.deepcopy(value)
            self._blobs.pop(key, None)
            return
        self.data[key] = _loads(blob)
        self._blobs[key] = blob

    def _read(self, key: str) -> Any:
        blob = self._blobs.get(key)
        if blob is not None:
            return _loads(blob)
        return _clone(self.data.get(key))

    def _op(self, what: str, fn: Callable[[], Any]) -> Any:
        return suspend(Call("storage", f"{self.label}.storage.{what}", fn))

    def _get(self, key: str | list[str]) -> Any:
        self.reads += 1
        if isinstance(key, list):
            return {k: self._read(k) for k in key if k in self.data}
        return self._read(key)

    def _put(self, key: str | dict[str, Any], value: Any = None) -> None:
        self.writes += 1
        if isinstance(key, dict):
            for k, v in key.items():
                self._store(k, v)
        else:
            self._store(key, value)

    def _delete(self, key: str | list[str]) -> bool | int:
        self.writes += 1
        blobs = self._blobs
        if isinstance(key, list):
            for k in key:
                blobs.pop(k, None)
            return sum(1 for k in key if self.data.pop(k, None) is not None)
        blobs.pop(key, None)
        return self.data.pop(key, None) is not None

    def _list(
        self,
        prefix: str,
        limit: int | None,
        reverse: bool,
        start: str | None = None,
        start_after: str | None = None,
        end: str | None = None,
    ) -> dict[str, Any]:
        self.reads += 1
        lo = start if start is not None else start_after
        if prefix and (lo is None or lo < prefix):
            lo = prefix
        include_lo = start_after is None or lo != start_after
        keys = []
        for k in self.data.irange(minimum=lo, maximum=end, inclusive=(include_lo, False)):
            if not k.startswith(prefix):
                if k > prefix:
                    break
                continue
            keys.append(k)
        if reverse:
            keys.reverse()
        if limit is not None:
            keys = keys[:limit]
        return {k: self._read(k) for k in keys}

    def _delete_all(self) -> None:
        self.writes += 1
        self.data.clear()
        self._blobs.clear()

    def get(self, key: str | list[str]) -> Any:
        """The value of ``key`` (``None`` if absent), or a dict for a list of keys."""
        return self._op(f"get {key}", lambda: self._get(key))

    def put(self, key: str | dict[str, Any], value: Any = None) -> Any:
        """Store ``value`` under ``key``, or every entry of a dict atomically."""
        what = f"put {key}" if isinstance(key, str) else f"put {sorted(key)}"
        return self._op(what, lambda: self._put(key, value))

    def delete(self, key: str | list[str]) -> Any:
        """Delete ``key`` (returns whether it existed) or a list of keys (returns how many)."""
        return self._op(f"delete {key}", lambda: self._delete(key))

    def list(
        self,
        *,
        prefix: str = "",
        limit: int | None = None,
        reverse: bool = False,
        start: str | None = None,
        start_after: str | None = None,
        end: str | None = None,
    ) -> Any:
        """The entries whose key starts with ``prefix``, in key order, as a dict: from
        ``start`` (or after ``start_after``) up to ``end`` (excluded), ``limit`` of them, the
        last ones first with ``reverse`` (the ``list()`` options of [DOC DO-STOR])."""
        if start is not None and start_after is not None:
            raise TypeError("storage.list: give start or startAfter, not both")
        return self._op(
            f"list {prefix!r}",
            lambda: self._list(prefix, limit, reverse, start, start_after, end),
        )

    def get_alarm(self) -> Any:
        """When the alarm is due (ms since the epoch), or ``None`` when none is set. While the
        alarm's own handler runs it reads ``None`` unless the handler set a new one."""
        return self._op("getAlarm", lambda: self.alarm_ms)

    def set_alarm(self, when_ms: int) -> Any:
        """Set the object's one alarm for ``when_ms`` (ms since the epoch), replacing any other;
        a time in the past fires at once (§5.6)."""
        if not isinstance(when_ms, int) or isinstance(when_ms, bool):
            raise TypeError(f"set_alarm takes a time in ms since the epoch, not {when_ms!r}")
        return self._op(f"setAlarm {when_ms}", lambda: self._set_alarm(when_ms))

    def _set_alarm(self, when_ms: int) -> None:
        self.writes += 1
        if self.alarm_hook is not None:
            self.alarm_hook(when_ms)
        self.alarm_ms = when_ms

    def delete_alarm(self) -> Any:
        """Cancel the alarm, if one is set."""
        return self._op("deleteAlarm", self._delete_alarm)

    def _delete_alarm(self) -> None:
        self.writes += 1
        self.alarm_ms = None

    def commit(self, writes: list[tuple[str, Any]]) -> Any:
        """Apply a transaction's writes, ``(key, value)`` or ``(key, None)`` to delete, in one
        storage operation (§5.4: "its results are atomic and isolated")."""
        return self._op(
            f"commit {sorted(k for k, _ in writes)}", lambda: self._commit(list(writes))
        )

    def _commit(self, writes: list[tuple[str, Any]]) -> None:
        self.writes += 1
        for key, value in writes:
            if value is None:
                self._blobs.pop(key, None)
                self.data.pop(key, None)
            else:
                self._store(key, value)

    def delete_all(self) -> Any:
        """Delete every key of the object's storage (``deleteAll()``; alarms, which are not
        simulated, would stay: §5.4). Atomic, as on the SQLite backend."""
        return self._op("deleteAll", self._delete_all)


@attrs.define(eq=False)
class DurableState:
    """The ``state`` a Durable Object's constructor receives: its ``id`` and ``storage``."""

    id: DurableId
    storage: DurableStorage
    _wait_until: Callable[[Any], None]

    def wait_until(self, awaitable: Any) -> None:
        """Keep background work alive (unneeded in a Durable Object, §5.7, but allowed)."""
        self._wait_until(awaitable)


@attrs.define(eq=False)
class DurableInstance:
    """The live object for one id: its storage, its current in-memory instance, its gate."""

    id: DurableId
    storage: DurableStorage
    obj: Any = None
    #: The task holding the input gate, or ``None`` when the gate is open.
    gate_holder: Task | None = None
    generation: int = 0
    requests: int = 0
    #: The platform's task that waits for the alarm and runs it (``None`` if none was set).
    alarm_task: Task | None = None


@attrs.define(eq=False)
class DurableStub:
    """``namespace.get(id)``: sends requests to the one instance of ``id``."""

    namespace: DurableNamespace
    id: DurableId

    def fetch(self, request: Any) -> Any:
        """``await stub.fetch(request)``: the object's response; the caller waits on it."""
        ns = self.namespace
        label = f"{ns.binding}.fetch {getattr(request, 'describe', lambda: request)()}"
        return suspend(Join(label, lambda: ns.start_request(self.id, request)))


@attrs.define(eq=False)
class DurableNamespace:
    """A Durable Object binding (for example ``env.QUEUE``) for the class ``cls``.

    ``spawn_request(instance, request)`` is supplied by the platform: it creates the instance's
    object if needed and returns the task serving the request.
    """

    binding: str
    cls: type
    spawn_request: Callable[[DurableInstance, Any], Task]
    instances: dict[str, DurableInstance] = attrs.field(factory=dict)
    #: Supplied by the platform: called when an instance's alarm is set.
    on_alarm: Callable[[DurableInstance, int], None] | None = None

    def id_from_name(self, name: str) -> DurableId:
        """The id for ``name``: the same name always gives the same id."""
        digest = hashlib.sha256(f"{self.binding}:{name}".encode()).hexdigest()
        return DurableId(digest, name)

    def get(self, id: DurableId) -> DurableStub:
        """A stub for ``id``."""
        if not isinstance(id, DurableId):
            raise TypeError(f"{self.binding}.get() takes an id from id_from_name(), got {id!r}")
        return DurableStub(self, id)

    def instance(self, id: DurableId) -> DurableInstance:
        inst = self.instances.get(id.hex)
        if inst is None:
            label = f"{self.binding}[{id.name or id.hex[:8]}]"
            inst = self.instances[id.hex] = DurableInstance(id, DurableStorage(label))
            if self.on_alarm is not None:
                inst.storage.alarm_hook = partial(self.on_alarm, inst)
        return inst

    def start_request(self, id: DurableId, request: Any) -> Task:
        inst = self.instance(id)
        inst.requests += 1
        return self.spawn_request(inst, request)

    def evict(self, id: DurableId) -> None:
        """Drop the in-memory object of ``id`` (storage stays); the next request constructs a
        fresh one (§5.7)."""
        inst = self.instances.get(id.hex)
        if inst is not None:
            inst.obj = None
            inst.generation += 1

    def check(self) -> None:
        for inst in self.instances.values():
            keys = list(inst.storage.data.keys())
            assert keys == sorted(keys, key=_utf8), "storage keys in UTF-8 order"
