"""What an invariant is, what it looks at, and what it reports.

An invariant has a stable ``id`` (the names of DESIGN.md), a ``kind`` and a check:

* ``safety`` invariants hold after every step; they look at the history so far and the spec;
* ``eventual`` invariants hold once the world is settled (traffic and faults stopped, staleness
  windows and leases passed, the actors run with a fair schedule); they also look at the
  :class:`Settled` observations the machine makes then.

A check returns ``None`` or a :class:`Violation` naming the messages, the exchanges (by their
``seq``) and the values involved, never a bare ``assert``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import attrs

from qmodel.history import History
from qmodel.spec import SpecState

__all__ = ["CheckContext", "Invariant", "Kind", "Settled", "Violation"]

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
class Settled:
    """What the machine observed of the settled world, through the HTTP contract only.

    ``listing`` is the ``comments`` of ``GET /api/comments?limit=200`` sent from a location that
    never read before, after every staleness window passed; ``pending`` the answer of ``GET
    /api/queue/pending?limit=1000`` from such a location (``None`` in the Durable Object era);
    ``seen`` the ids each frontend that kept polling has received by its polls (not counting
    its own posts).
    """

    listing: tuple[Mapping[str, Any], ...] | None
    pending: tuple[Mapping[str, Any], ...] | None
    seen: Mapping[str, frozenset[str]]
    #: Every message ``GET /api/comments?after=...`` gives from just before the first
    #: acknowledged one, paging on: what the target still serves of the whole run, beyond the
    #: newest 200 (a reply whose POST was never answered shows here).
    everything: tuple[Mapping[str, Any], ...] = ()
    #: The exchange ``seq`` of the probes, so violations can cite them.
    probe_seqs: tuple[int, ...] = ()


@attrs.frozen(kw_only=True)
class CheckContext:
    """Everything a check may look at."""

    history: History
    spec: SpecState
    settled: Settled | None = None
    #: The number of newest messages a design's cache keeps (PROTOCOL.md: the last N; 200).
    cache_size: int = 200
    #: The most KV reads an idle pending poll may cost (the ``cost`` invariant).
    idle_poll_reads: int = 3
    #: The era the actors speak (``patch``, ``queue`` or ``do``).
    protocol: str = "queue"
    #: Requests sent and not yet answered, as ``(kind, message id)``: what they change may
    #: already have happened though the history does not show it yet.
    in_flight: frozenset[tuple[str, str | None]] = frozenset()


@attrs.frozen
class Invariant:
    """A named property: ``check(ctx)`` gives ``None`` or a :class:`Violation`."""

    id: str
    kind: Kind
    doc: str
    check: Callable[[CheckContext], Violation | None]
