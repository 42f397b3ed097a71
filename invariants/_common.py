"""Small helpers the invariant modules share: docstring paragraphs, exchange look-ups and the
wording of summaries. Private: nothing here is an invariant."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from qmodel.check import CheckContext
from qmodel.history import Exchange, History

__all__ = [
    "exchange_at",
    "first_paragraph",
    "listed_id",
    "listed_status",
    "messages_text",
    "probe_seqs",
    "request_text",
    "sorted_seqs",
]


def first_paragraph(doc: str | None) -> str:
    """The first paragraph of a docstring on one line (the CLI prints it beside a violation).

    An empty or missing docstring gives ``""``.
    """
    text = (doc or "").strip()
    return " ".join(text.split("\n\n", 1)[0].split())


def exchange_at(history: History, seq: int) -> Exchange | None:
    """The exchange numbered ``seq``, or ``None`` if the history has none.

    The world numbers exchanges 1, 2, ... in order, so the direct index is tried first; a
    history built another way is searched.
    """
    exchanges = history.exchanges
    if 0 < seq <= len(exchanges) and exchanges[seq - 1].seq == seq:
        return exchanges[seq - 1]
    return next((e for e in exchanges if e.seq == seq), None)


def probe_seqs(ctx: CheckContext, path_prefix: str) -> tuple[int, ...]:
    """The ``seq`` of the settled probes whose path starts with ``path_prefix``.

    The probes are found by path rather than by position in ``Settled.probe_seqs`` so a probe
    that failed (and is absent or extra there) cannot shift which exchange is cited; a probe
    missing from the history is left out.
    """
    if ctx.settled is None:
        return ()
    found = []
    for seq in ctx.settled.probe_seqs:
        ex = exchange_at(ctx.history, seq)
        if ex is not None and ex.path.startswith(path_prefix):
            found.append(seq)
    return tuple(found)


def listed_id(item: Mapping[str, Any]) -> str | None:
    """The ``id`` of a listed message, or ``None`` when it has none (or a non-string one)."""
    mid = item.get("id")
    return mid if isinstance(mid, str) else None


def listed_status(item: Mapping[str, Any]) -> Any:
    """``botParams.status`` of a listed message (``None`` when absent)."""
    params = item.get("botParams")
    return params.get("status") if isinstance(params, Mapping) else None


def messages_text(ids: Sequence[str], labels: Mapping[str, Any] | None = None) -> str:
    """``message a`` or ``messages a, b``; with ``labels``: ``message a (pending)``."""
    parts = [f"{i} ({labels[i]})" if labels is not None else i for i in ids]
    return ("message " if len(ids) == 1 else "messages ") + ", ".join(parts)


def request_text(ex: Exchange) -> str:
    """``POST /api/queue/claim for message m1``, or without the message when it has none."""
    target = f" for message {ex.message_id}" if ex.message_id else ""
    return f"{ex.method} {ex.path}{target}"


def sorted_seqs(seqs: Iterable[int]) -> tuple[int, ...]:
    """Distinct ``seq`` values in order (a violation cites each exchange once)."""
    return tuple(sorted(set(seqs)))
