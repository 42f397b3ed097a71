"""The ``recent:comments`` cache of the seeds: a JSON list of the newest messages.

The pure part, shared by every writer (a worker at the edge, or the queue object writing on its
behalf): :func:`apply` turns a cache list and one change into the new list.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CACHE_KEY", "CACHE_SIZE", "apply"]

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
