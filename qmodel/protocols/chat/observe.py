"""What the chat protocol looks at once the world is settled, through the HTTP contract only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from qmodel.protocols.chat.frontend import _comments

if TYPE_CHECKING:
    from qmodel.world import World

__all__ = ["Settled", "observe"]


@attrs.frozen(kw_only=True)
class Settled:
    """What the machine observed of the settled world, through the HTTP contract only.

    ``listing`` is the ``comments`` of ``GET /api/comments?limit=200`` sent from a location that
    never read before, after every staleness window passed; ``pending`` the answer of ``GET
    /api/queue/pending?limit=1000`` from such a location (``None`` in the eras without it);
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


def observe(world: World, *, pending_probe: bool) -> Settled:
    """Probe the settled world: the listing, the pending queue (``pending_probe``), and every
    message from the first acknowledged one on."""
    status, answer = world.probe("probe-1", "GET", "/api/comments", {"limit": 200})
    listing = tuple(_comments(answer)) if status == 200 else None
    pending: tuple[dict[str, Any], ...] | None = None
    if pending_probe:
        status, answer = world.probe("probe-2", "GET", "/api/queue/pending", {"limit": 1000})
        if status == 200:
            items = answer.get("pending") if isinstance(answer, dict) else answer
            pending = tuple(m for m in items or [] if isinstance(m, dict))
    seen = {fe.name: frozenset(fe.seen) for fe in world.actors.get("frontends", ())}
    everything = _everything(world)
    n = len(world.history)
    return Settled(
        everything=everything,
        listing=listing,
        pending=pending,
        seen=seen,
        probe_seqs=(n - 1, n) if pending is not None else (n,),
    )


def _everything(world: World) -> tuple[dict[str, Any], ...]:
    stamps = [m.timestamp for m in world.spec.messages.values() if isinstance(m.timestamp, int)]
    if not stamps:
        return ()
    cursor, found = min(stamps) - 1, {}
    for page in range(20):
        status, answer = world.probe(
            f"probe-all-{page + 1}", "GET", "/api/comments", {"after": cursor, "limit": 1000}
        )
        items = _comments(answer) if status == 200 else []
        for m in items:
            if isinstance(m.get("id"), str):
                found[m["id"]] = m
        newest = max(
            (m.get("timestamp") for m in items if isinstance(m.get("timestamp"), int)),
            default=cursor,
        )
        if len(items) < 1000 or newest <= cursor:
            break
        cursor = newest
    return tuple(found.values())
