"""Messages and the ``recent:comments`` cache of the seeds, the pure parts every design shares.

:func:`new_message` builds the stored message from a POST body (PROTOCOL.md, "Messages");
:func:`apply` turns a cache list and one change into the new list, for every writer (a worker
at the edge, or the queue object writing on its behalf).
"""

from __future__ import annotations

from typing import Any

__all__ = ["CACHE_KEY", "CACHE_SIZE", "apply", "new_message"]

#: The KV key of the cache (PROTOCOL.md, "KV keys used by the designs in the seeds").
CACHE_KEY = "recent:comments"
#: "Read `recent:comments` (contains last 200 messages)" (seed 000, step 2).
CACHE_SIZE = 200


def apply(cache: list[dict[str, Any]], change: dict[str, Any]) -> list[dict[str, Any]]:
    """The cache after ``change``:

    * ``{"op": "prepend", "message": m}``: put ``m`` first (dropping an older copy of the same
      id), then trim to :data:`CACHE_SIZE`;
    * ``{"op": "update", "id": i, "botParams": {...}}``: merge into entry ``i`` if present;
    * ``{"op": "replace", "messages": [...]}``: the given list, as is (a whole-cache rewrite).
    """
    op = change["op"]
    if op == "prepend":
        m = change["message"]
        return [m, *[c for c in cache if c.get("id") != m["id"]]][:CACHE_SIZE]
    if op == "update":
        out = []
        for c in cache:
            if c.get("id") == change["id"]:
                c = {**c, "botParams": {**(c.get("botParams") or {}), **change["botParams"]}}
            out.append(c)
        return out
    if op == "replace":
        return list(change["messages"])[:CACHE_SIZE]
    raise ValueError(f"unknown cache change {op!r}")


def new_message(body: dict[str, Any], now: int, suffix: str) -> dict[str, Any]:
    """The message a POST of ``body`` stores: the client's ``id`` and ``timestamp`` when given
    (else ``{now}-{suffix}`` and ``now``), its content, and for a human message the queue state
    ``botParams`` (pending, not processed, no attempts)."""
    kind = body.get("message-type") or "human"
    msg: dict[str, Any] = {
        "id": body.get("id") or f"{now}-{suffix}",
        "timestamp": body.get("timestamp") or now,
        "text": body["text"],
        "username": body.get("username") or "anonymous",
        "color": body.get("color") or "gray",
        "domain": body.get("domain") or "saywhatwant.app",
        "message-type": kind,
    }
    if body.get("replyTo"):
        msg["replyTo"] = body["replyTo"]
    if kind == "human":
        params = body.get("botParams") or {}
        msg["botParams"] = {
            "entity": params.get("entity", "default"),
            "priority": params.get("priority", 5),
            "status": "pending",
            "processed": False,
            "attempts": 0,
        }
    return msg
