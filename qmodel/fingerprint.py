"""A world's state as a value: what the exhaustive explorer compares to tell two interleavings
that led to the same place.

Two runs are in the same state when everything that can influence what happens next is equal:
the clock, the KV store (its central values, every location's read cache and list views, the
last write time of each key), every Durable Object (its storage and its in-memory object), the
live tasks (in spawn order: what each waits on, how it was started, and every value the platform
has handed it so far, which with the task's own deterministic code fixes where it stands and
what it holds), the actors' memories, the target's own state, the spec and the history (the
invariants read both), and the counters that name things (message ids). A coroutine cannot be
read or copied, so a task is known by what it observed rather than by its frame: given the same
code and the same observations, it is in the same place.

Left out, because nothing branches on them: the human-readable log, the scheduler's step
trace, operation counters, and pure caches (:class:`~qmodel.workers.jsontext.JsonTexts`).
"""

from __future__ import annotations

import hashlib
import json
import marshal
import types
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from qmodel.sim.http import Response
from qmodel.sim.scheduler import Task

__all__ = ["Fingerprinter", "Observations", "digest"]

_ATOMS = (str, int, float, bool, type(None), bytes)

#: Fields that count or log and decide nothing, by class name.
_IGNORED: dict[str, frozenset[str]] = {
    # A stored value's version numbers the writes of the whole store in arrival order; only
    # reports read it (whether a read was served the central value), so two stores holding the
    # same values behave alike whatever their writes' numbers.
    "KvStore": frozenset(
        {
            "_reads",
            "_writes",
            "_deletes",
            "_lists",
            "_rejected",
            "_version",
            "observers",
            "tap",
            "config",
        }
    ),
    "_Entry": frozenset({"version"}),
    "DurableStorage": frozenset({"reads", "writes", "alarm_hook"}),
    "DurableInstance": frozenset({"requests"}),
    # The invocation's number counts requests in the order they arrived: a name, not a state.
    "Invocation": frozenset({"iid"}),
}
#: Mappings whose order of insertion decides nothing (lookups only), by class name: compared
#: as sets of items, so two runs that wrote the same keys in another order match.
_UNORDERED: dict[str, frozenset[str]] = {
    "KvStore": frozenset({"_caches", "_list_caches", "_last_write_ms"}),
}
#: Pure caches (equal answers whatever they hold) and the platform's wiring (bindings, handles
#: and contexts that point at state fingerprinted where it lives).
_OPAQUE_NAMES = frozenset(
    {"JsonTexts", "Env", "KvBinding", "DurableState", "DurableNamespace", "Context", "DurableStub"}
)


def digest(value: Any) -> bytes:
    """A 16-byte digest of a fingerprint (the same value gives the same bytes in any process)."""
    return hashlib.blake2b(repr(value).encode(), digest_size=16).digest()


class Fingerprinter:
    """Turns live objects into nested tuples of plain values.

    ``tokens`` maps ``id(obj)`` to a stand-in for objects fingerprinted on their own (the world,
    the platform, the actors, the target), so a reference to them is not followed again. A
    cycle is cut where it closes.
    """

    def __init__(self, tokens: dict[int, Any]) -> None:
        self.tokens = tokens
        self._active: set[int] = set()
        self._fields: dict[type, tuple[str, ...]] = {}

    def _field_names(self, t: type) -> tuple[str, ...]:
        names = self._fields.get(t)
        if names is None:
            ignored = _IGNORED.get(t.__name__, frozenset())
            names = tuple(a.name for a in attrs.fields(t) if a.name not in ignored)
            self._fields[t] = names
        return names

    def _named(self, t: type) -> tuple[str, ...]:
        names = self._fields.get(t)
        if names is None:
            ignored = _IGNORED.get(t.__name__, frozenset())
            names = tuple(n for n in t._fields if n not in ignored)  # type: ignore[attr-defined]
            self._fields[t] = names
        return names

    def of(self, v: Any) -> Any:
        """The fingerprint of ``v``."""
        t = type(v)
        if t in _ATOMS:
            return v
        token = self.tokens.get(id(v))
        if token is not None:
            return token
        if t is tuple or t is list:
            return tuple([self.of(x) for x in v])
        if isinstance(v, tuple) and hasattr(t, "_fields"):  # a named tuple
            names = self._named(t)
            return (t.__name__, tuple([self.of(getattr(v, n)) for n in names]))
        if isinstance(v, dict):
            return ("{", tuple([(self.of(k), self.of(x)) for k, x in v.items()]))
        if isinstance(v, (set, frozenset)):
            return ("set", tuple(sorted(repr(self.of(x)) for x in v)))
        if isinstance(v, BaseException):
            return ("!", t.__name__, str(v))
        if isinstance(v, type):
            return ("type", v.__module__, v.__qualname__)
        if isinstance(v, weakref.ref):
            # A weak reference prints its address; what it points to is fingerprinted where
            # it is held strongly.
            return ("weakref",)
        if isinstance(v, Task):
            return ("task", v.name, v.finished)
        if t.__name__ in _OPAQUE_NAMES:
            return ("@", t.__name__)
        key = id(v)
        if key in self._active:
            return ("cycle", t.__name__)
        self._active.add(key)
        try:
            return self._compound(v, t)
        finally:
            self._active.discard(key)

    def inside(self, v: Any) -> Any:
        """The fingerprint of ``v``'s own fields, even when ``v`` has a token (the objects the
        tokens stand for are fingerprinted once, through this)."""
        key = id(v)
        self._active.add(key)
        try:
            return self._compound(v, type(v))
        finally:
            self._active.discard(key)

    def _compound(self, v: Any, t: type) -> Any:
        if attrs.has(t):
            names = self._field_names(t)
            loose = _UNORDERED.get(t.__name__)
            if loose:
                return (
                    t.__name__,
                    tuple(
                        [
                            self._unordered(getattr(v, n)) if n in loose else self.of(getattr(v, n))
                            for n in names
                        ]
                    ),
                )
            return (t.__name__, tuple([self.of(getattr(v, n)) for n in names]))
        if isinstance(v, types.FunctionType):
            cells = v.__closure__ or ()
            return ("fn", v.__qualname__, tuple([self.of(_cell(c)) for c in cells]))
        if isinstance(v, types.MethodType):
            return ("method", v.__func__.__qualname__, self.of(v.__self__))
        if hasattr(v, "__dict__"):
            return (t.__name__, tuple([(k, self.of(x)) for k, x in sorted(vars(v).items())]))
        slots = _slots(t)
        if slots:
            return (t.__name__, tuple([self.of(getattr(v, s, None)) for s in slots]))
        return ("repr", t.__name__, repr(v))

    def _unordered(self, v: Any) -> Any:
        if isinstance(v, dict):
            items = [(self.of(k), self._unordered(x)) for k, x in v.items()]
            return ("{}", tuple(sorted(items, key=repr)))
        return self.of(v)


def _cell(cell: Any) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell (a closure variable not assigned yet)
        return None


def _slots(t: type) -> tuple[str, ...]:
    out: list[str] = []
    for klass in t.__mro__:
        out.extend(getattr(klass, "__slots__", ()))
    return tuple(out)


def _plain(value: Any) -> bytes | None:
    """The bytes of ``value`` when it is plain data (lists, dicts, tuples, strings, numbers;
    a read's JSON, a storage call's answer), else ``None``.

    ``marshal`` writes such values in C, keeping every type apart (a tuple is not a list, an
    int key not a string one), and refuses anything else. Version 2 writes no back-references,
    so the bytes depend on the value only, not on which of its parts are shared. Sets are left
    to :meth:`Fingerprinter.of`, which sorts them (their order depends on hashing); the value
    is searched for one only when the bytes hold a set's type code (which a number or a string
    may hold too), by the JSON encoder, which refuses sets (and bytes, also left to it).
    """
    if type(value) is not list and type(value) is not dict and type(value) is not tuple:
        return None
    try:
        out = marshal.dumps(value, 2)
    except ValueError:
        return None
    if b"<" in out or b">" in out:
        # JSON has no sets: a value the (C) encoder takes holds none.
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            return None
    return out


class Observations:
    """What each task has been handed by the platform so far, in order (the scheduler's
    ``observe`` hook feeds it)."""

    def __init__(self, fingerprint: Callable[[Any], Any]) -> None:
        self._fp = fingerprint
        self.seen: dict[Task, list[Any]] = {}

    def __call__(self, task: Task, value: Any, error: BaseException | None) -> None:
        if error is not None:
            got: Any = ("!", type(error).__name__, str(error))
        elif value is None or type(value) is str:
            got = value  # the common answers (a step's start, a KV read), taken as they are
        elif type(value) is Response:
            # The answer of every request and Durable Object call: its status, body and
            # headers are all a reader can see.
            got = ("Response", value.status, value.body, tuple(value.headers._items.items()))
        else:
            got = _plain(value)
            if got is None:
                got = self._fp(value)
        self.seen.setdefault(task, []).append(got)

    def of(self, task: Task) -> tuple[Any, ...]:
        """Everything ``task`` observed, in order."""
        return tuple(self.seen.get(task, ()))

    def forget(self, tasks: Iterable[Task]) -> None:
        """Drop finished tasks (they can observe nothing more)."""
        for t in tasks:
            self.seen.pop(t, None)
