"""The conformance run: before a search, does the target speak the protocol at all?

A search of a target that answers every request with 404 finds nothing, and ``ok`` would be a
lie: nothing was exercised. So before searching, the target is driven through the protocol's
happy path (its ``happy_path`` verbs: one message posted, then processed and read back by the
actors) on a quiet platform: every choice its first option (the first runnable task, every
read fresh, no fault), then settled. It conforms when the spec acknowledged the work and has
none left unfinished. When it does not, :class:`NotConformant` names the first request that
was refused and the answer it got.

A request that failed on the happy path (answered 5xx, or never answered) is not a sign of
another API: it is a finding, and the search goes on to find and shrink it under the platform's
rules; only a refusal (4xx), or answers that acknowledge nothing, stop the run.
"""

from __future__ import annotations

import json
from typing import Any

from qmodel.driver import Example, InvariantViolation
from qmodel.errors import QmodelError
from qmodel.history import Exchange
from qmodel.protocol import Protocol
from qmodel.sim.choices import FirstOptionBackend
from qmodel.world import World, WorldConfig

__all__ = ["NotConformant", "conform"]


class NotConformant(QmodelError, ValueError):
    """The target did not complete the protocol's happy path. ``exchange`` is the first
    request it refused (``None`` when every request was answered 2xx but the work was still
    not acknowledged or not finished)."""

    def __init__(self, message: str, *, exchange: Exchange | None) -> None:
        super().__init__(message)
        self.exchange = exchange


def conform(target: Any, protocol: Protocol, config: WorldConfig) -> World:
    """Drive ``target`` through ``protocol``'s happy path on a quiet platform; return the
    settled world (also when a request failed with 5xx or no answer: a finding for the search),
    or raise :class:`NotConformant` saying what went wrong.

    Invariants are not judged here (a violation on the happy path is the search's to find and
    shrink); only whether the work was acknowledged and done.
    """
    example = Example.begin(target, protocol, config, FirstOptionBackend(), checked=())
    world = example.world
    try:
        for verb, arg in protocol.happy_path:
            world.apply(verb, arg)
        example.finish()
    except InvariantViolation:  # no invariant is checked; kept for a protocol that checks
        pass
    acknowledged = protocol.evidence(world.spec)
    if acknowledged and not protocol.unfinished(world.spec):
        return world
    failed = next(
        (ex for ex in world.history.exchanges if ex.status is None or ex.status >= 500), None
    )
    if failed is not None:
        return world
    # The request that should have stored the unit of work says most: writes before reads.
    refusals = [ex for ex in world.history.exchanges if not 200 <= (ex.status or 0) < 300]
    refused = next((ex for ex in refusals if ex.method != "GET"), None) or next(
        iter(refusals), None
    )
    unit = protocol.unit
    if refused is not None:
        answer = f"{refused.status} {_short(refused)}"
        errors = f" ({'; '.join(refused.errors[:2])})" if refused.errors else ""
        raise NotConformant(
            f"{refused.method} {_path(refused)} answered {answer}{errors}: does this worker "
            f"speak the {protocol.name} protocol? On a quiet platform one {unit} was to be "
            f"posted, processed and read back; pass --protocol with the protocol it speaks",
            exchange=refused,
        )
    if not acknowledged:
        first = world.history.exchanges[0] if world.history.exchanges else None
        said = (
            f"; {first.method} {_path(first)} answered {first.status} {_short(first)}"
            if first is not None
            else "; no request reached it"
        )
        raise NotConformant(
            f"the target acknowledged no {unit} on the {protocol.name} protocol's happy path"
            f"{said}: does this worker speak the {protocol.name} protocol?",
            exchange=first,
        )
    raise NotConformant(
        f"the target acknowledged the {unit} of the {protocol.name} protocol's happy path but "
        f"never finished it, on a quiet platform with every actor running ({len(world.history)} "
        "requests): does this worker speak the whole protocol?",
        exchange=None,
    )


def _path(ex: Exchange) -> str:
    return ex.path.split("?", 1)[0]


def _short(ex: Exchange) -> str:
    """The answer's body, quoted and cut at 60 characters."""
    if ex.text is not None:
        text = ex.text
    else:
        text = json.dumps(ex.answer, separators=(",", ":"))
    return json.dumps(text[:60] + ("..." if len(text) > 60 else ""))
