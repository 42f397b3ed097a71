"""The named properties qmodel checks, one module per invariant id (see the project README).

The registry is explicit: each module is imported here and listed in :data:`ALL`, in the order
of DESIGN.md's table; nothing registers itself by being imported. Look invariants up with
:func:`get` or :func:`select`; an unknown id raises :class:`UnknownInvariant`, which lists the
closest matches and every known id.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from invariants import (
    ack_durable,
    addressable,
    cache_coherent,
    cost,
    one_reply,
    pending_visible,
    platform,
    poll_delivery,
    single_claim,
    status_fsm,
)
from invariants.base import CheckContext, Invariant, Settled, Violation
from qmodel.errors import QmodelError

__all__ = [
    "ALL",
    "BY_ID",
    "CheckContext",
    "Invariant",
    "Settled",
    "UnknownInvariant",
    "Violation",
    "get",
    "ids",
    "select",
]

#: Every invariant, in DESIGN.md's order.
ALL: tuple[Invariant, ...] = (
    ack_durable.INVARIANT,
    one_reply.INVARIANT,
    single_claim.INVARIANT,
    status_fsm.INVARIANT,
    addressable.INVARIANT,
    cache_coherent.INVARIANT,
    pending_visible.INVARIANT,
    poll_delivery.INVARIANT,
    platform.INVARIANT,
    cost.INVARIANT,
)

BY_ID: dict[str, Invariant] = {inv.id: inv for inv in ALL}


class UnknownInvariant(QmodelError, KeyError):
    """An invariant id that is not in the registry.

    ``id`` is the id asked for, ``matches`` the closest known ids (possibly none), ``known``
    every known id in registry order. The message lists both, so a typo is fixed at a glance.
    """

    def __init__(self, id: str, *, known: tuple[str, ...]) -> None:
        self.id = id
        self.known = known
        self.matches = tuple(difflib.get_close_matches(id, known, n=3))
        closest = f" Closest matches: {', '.join(self.matches)}." if self.matches else ""
        self.message = f"unknown invariant {id!r}.{closest} Known ids: {', '.join(known)}."
        super().__init__(self.message)

    def __str__(self) -> str:
        # KeyError's own __str__ would quote the message like a key.
        return self.message


def ids() -> tuple[str, ...]:
    """Every invariant id, in registry order."""
    return tuple(BY_ID)


def get(id: str) -> Invariant:
    """The invariant named ``id``; :class:`UnknownInvariant` if there is none."""
    try:
        return BY_ID[id]
    except KeyError:
        raise UnknownInvariant(id, known=ids()) from None


def select(selected: Iterable[str] | None) -> tuple[Invariant, ...]:
    """The invariants named in ``selected``, in registry order (``None``: all of them).

    Registry order, not the order given, so the same selection checks in the same order and
    reports the same first violation however it was spelled; a repeated id counts once. The
    first unknown id raises :class:`UnknownInvariant`. A ``str`` is one id, not a sequence.
    """
    if selected is None:
        return ALL
    names = {get(name).id for name in ((selected,) if isinstance(selected, str) else selected)}
    return tuple(inv for inv in ALL if inv.id in names)
