"""What an invariant is, what it looks at, and what it reports; and how invariants are chosen.

An invariant has a stable ``id``, a ``kind`` and a check:

* ``safety`` invariants hold after every step; they look at the history so far and the spec;
* ``eventual`` invariants hold once the world is settled (traffic and faults stopped, staleness
  windows and leases passed, the actors run with a fair schedule); they also look at what the
  protocol observed of the settled world (``settled``).

A check returns ``None`` or a :class:`Violation` naming the messages, the exchanges (by their
``seq``) and the values involved, never a bare ``assert``. The invariants of a protocol are a
tuple on the protocol; :func:`select` picks some of them by id.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import attrs

from qmodel.errors import QmodelError
from qmodel.history import History

__all__ = [
    "CheckContext",
    "Invariant",
    "Kind",
    "UnknownInvariant",
    "Violation",
    "select",
]

Kind = Literal["safety", "eventual"]


@attrs.frozen(kw_only=True)
class Violation:
    """A broken invariant: which, a one-line summary, and the evidence."""

    invariant: str
    summary: str
    message_ids: tuple[str, ...] = ()
    #: ``seq`` of the exchanges involved, in order.
    exchanges: tuple[int, ...] = ()
    values: Mapping[str, Any] = attrs.field(factory=dict)

    def render(self) -> str:
        ids = f" (messages {', '.join(self.message_ids)})" if self.message_ids else ""
        return f"{self.invariant}: {self.summary}{ids}"


@attrs.frozen(kw_only=True)
class CheckContext:
    """Everything a check may look at.

    ``spec`` is the protocol's reference model, ``settled`` what the protocol observed of the
    settled world (``None`` before), ``params`` the protocol's own figures (a cache size, a cost
    bound), ``protocol`` the protocol's name.
    """

    history: History
    spec: Any
    settled: Any = None
    protocol: str = ""
    params: Mapping[str, Any] = attrs.field(factory=dict)
    #: Requests sent and not yet answered, as ``(operation, message id)``: what they change may
    #: already have happened though the history does not show it yet.
    in_flight: frozenset[tuple[str, str | None]] = frozenset()


@attrs.frozen
class Invariant:
    """A named property: ``check(ctx)`` gives ``None`` or a :class:`Violation`.

    ``needs_worker``: the property is about the work being done (every message answered, every
    job acked), so a world where nobody does the work breaks it whatever the design; such a
    world does not judge it (:meth:`qmodel.protocol.Protocol.judged`)."""

    id: str
    kind: Kind
    doc: str
    check: Callable[[CheckContext], Violation | None]
    needs_worker: bool = attrs.field(default=False, kw_only=True)


class UnknownInvariant(QmodelError, KeyError):
    """An invariant id that the protocol does not have.

    ``id`` is the id asked for, ``matches`` the closest known ids (possibly none), ``known``
    every known id in the protocol's order. The message lists both, so a typo is fixed at a
    glance.
    """

    def __init__(self, id: str, *, known: tuple[str, ...], protocol: str = "") -> None:
        self.id = id
        self.known = known
        self.matches = tuple(difflib.get_close_matches(id, known, n=3))
        closest = f" Closest matches: {', '.join(self.matches)}." if self.matches else ""
        of = f" of protocol {protocol!r}" if protocol else ""
        self.message = f"unknown invariant {id!r}{of}.{closest} Known ids: {', '.join(known)}."
        super().__init__(self.message)

    def __str__(self) -> str:
        # KeyError's own __str__ would quote the message like a key.
        return self.message


def select(
    available: tuple[Invariant, ...],
    selected: Iterable[str] | str | None,
    *,
    skipped: Iterable[str] = (),
    protocol: str = "",
) -> tuple[Invariant, ...]:
    """The invariants of ``available`` named in ``selected`` (``None``: all), less ``skipped``,
    in the order of ``available``.

    That order, not the order given, so the same selection checks in the same order and reports
    the same first violation however it was spelled; a repeated id counts once. The first
    unknown id raises :class:`UnknownInvariant`. A ``str`` is one id, not a sequence.
    """
    known = tuple(inv.id for inv in available)

    def ids(names: Iterable[str] | str) -> set[str]:
        found = set()
        for name in (names,) if isinstance(names, str) else names:
            if name not in known:
                raise UnknownInvariant(name, known=known, protocol=protocol)
            found.add(name)
        return found

    chosen = set(known) if selected is None else ids(selected)
    chosen -= ids(skipped)
    return tuple(inv for inv in available if inv.id in chosen)
