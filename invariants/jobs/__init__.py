"""The job queue protocol's invariants, in the order they are checked (:data:`ALL`)."""

from __future__ import annotations

from qmodel.invariants import platform
from qmodel.invariants.jobs import (
    ack_durable,
    eventually_done,
    no_double_work,
    single_lease,
    stale_ack,
)

from qmodel.check import Invariant

__all__ = ["ALL"]

#: Every invariant of the jobs protocol: the safety ones first, then the eventual ones.
ALL: tuple[Invariant, ...] = (
    single_lease.INVARIANT,
    stale_ack.INVARIANT,
    no_double_work.INVARIANT,
    platform.INVARIANT,
    ack_durable.INVARIANT,
    eventually_done.INVARIANT,
)
