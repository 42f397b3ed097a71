"""The chat protocol's invariants, in the order of DESIGN.md's table (:data:`ALL`)."""

from __future__ import annotations

from qmodel.invariants import platform
from qmodel.invariants.chat import (
    ack_durable,
    addressable,
    cache_coherent,
    cost,
    one_reply,
    pending_visible,
    poll_delivery,
    single_claim,
    status_fsm,
)

from qmodel.check import Invariant

__all__ = ["ALL"]

#: Every invariant of the chat protocol, in DESIGN.md's order.
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
