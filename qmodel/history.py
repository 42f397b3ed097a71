"""What the actors saw: every request they sent and the answer they got, in order.

The history is the machines' ground truth about a target: it is built only from the HTTP
contract (PROTOCOL.md) plus the platform's own records of each invocation (KV counters, KV
errors raised into the worker, uncaught exceptions), so it is the same for a Python design, a
user's worker or a JavaScript module. The spec and the invariants read it.
"""

from __future__ import annotations

from typing import Any

import attrs

from qmodel.sim.runtime import format_counters

__all__ = ["Exchange", "History", "KvWrite"]


@attrs.frozen
class KvWrite:
    """One KV write a worker invocation attempted: key, outcome status (200, 429, 4xx)."""

    key: str
    status: int


@attrs.frozen(kw_only=True)
class Exchange:
    """One request an actor sent and what came back.

    ``status`` is ``None`` when no answer came (the actor crashed, or the request was killed).
    ``message_id`` is the message the request concerns (the posted id, the claimed id, ...).
    The KV figures are those of the worker invocation that served the request (not of Durable
    Object requests it made).
    """

    seq: int
    actor: str
    location: str
    #: The operation, as the protocol names it (its routes: ``post``, ``claim``, ``lease``...);
    #: ``probe`` for a request the settle sends to look at the world.
    kind: str
    method: str
    path: str
    body: Any
    sent_ms: int
    answered_ms: int | None
    status: int | None
    answer: Any
    message_id: str | None = None
    kv_reads: int = 0
    kv_writes: int = 0
    kv_lists: int = 0
    kv_deletes: int = 0
    #: Messages of KV errors raised into the worker, e.g. ``KV PUT failed: 429 Too Many Requests``.
    kv_errors: tuple[str, ...] = ()
    #: KV writes in order with their outcome.
    writes: tuple[KvWrite, ...] = ()
    #: Uncaught exceptions and broken platform rules recorded for the invocation.
    errors: tuple[str, ...] = ()
    #: The worker's console output while it served the request, up to its answer.
    logs: tuple[str, ...] = ()
    #: The answer's body when it is not JSON (its first 200 characters), for messages that
    #: quote what the target said; ``None`` for a JSON answer or no answer.
    text: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def counters(self) -> str:
        """The invocation's KV counters as the seeds logged them, ``[KVr:3 KVw:1]``."""
        return format_counters(self.kv_reads, self.kv_writes, self.kv_lists, self.kv_deletes)

    def describe(self) -> str:
        """One line: ``bot-1@B POST /api/queue/claim m1 -> 200 [KVr:1 KVw:1]``."""
        target = f" {self.message_id}" if self.message_id else ""
        answer = "no answer" if self.status is None else str(self.status)
        return (
            f"{self.actor}@{self.location} {self.method} {self.path}{target} -> {answer} "
            f"{self.counters()}"
        )


@attrs.define
class History:
    """The exchanges of one run, in the order their answers arrived."""

    exchanges: list[Exchange] = attrs.field(factory=list)

    def add(self, ex: Exchange) -> None:
        self.exchanges.append(ex)

    def __len__(self) -> int:
        return len(self.exchanges)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.exchanges)

    def since(self, n: int) -> list[Exchange]:
        """The exchanges after the first ``n`` (what is new since a check)."""
        return self.exchanges[n:]

    def of_kind(self, *kinds: str) -> list[Exchange]:
        return [e for e in self.exchanges if e.kind in kinds]
