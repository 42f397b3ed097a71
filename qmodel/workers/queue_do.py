"""``MessageQueue``: the Durable Object at the heart of the sound design and of every fix.

One instance (``env.QUEUE.id_from_name("queue")``) is the single writer of the queue. Each
route reads storage, decides, and writes storage with only storage awaits in between, so the
input gate makes every route atomic with respect to every other request (reference §5.2, §5.8
"Correct when"). It keeps:

* ``msg:{id}``: every message, with its ``botParams`` (the authoritative status when the worker
  lets the object decide claims);
* ``recent``: the ids of the newest 200 messages, newest first: the cache the seeds kept in the
  ``recent:comments`` KV key;
* ``timeline``: ``[timestamp, id]`` of every message in timestamp order, for reads by cursor;
* ``pending``: the ids of human messages not yet terminal (an index that is never trimmed);
* ``clock``: the last server timestamp handed out (strictly increasing);
* for designs that keep the cache in KV but funnel its writes through this object (the way
  KV-HOW recommends for write-after-write consistency, reference §1.7), a write queue: changes
  to ``recent:comments`` are applied in order by one flushing request at a time, batched into
  one read-modify-write (a KV await opens the input gate, §5.2, so the queue is what keeps the
  writes apart), retrying a 429 after a second (§2.2).

Routes take and answer JSON over ``stub.fetch``; a worker calls them with :func:`call`.
"""

from __future__ import annotations

import bisect
import json
from typing import Any

from qmodel.sim.http import URL, Request, Response, json_response
from qmodel.sim.kv import KvError
from qmodel.sim.scheduler import date_now, sleep
from qmodel.workers import cache as kvcache

__all__ = ["CACHE_SIZE", "LEASE_MS", "MAX_ATTEMPTS", "MessageQueue", "call", "queue_stub"]

#: The seeds' cache holds the last 200 messages (seed 000, step 2).
CACHE_SIZE = 200
#: How long a claim holds a message before another bot may take it over.
LEASE_MS = 60_000
#: ``fail`` returns a message to pending until this many attempts, then marks it failed.
MAX_ATTEMPTS = 3


def queue_stub(env: Any) -> Any:
    """The one queue object of ``env.QUEUE``."""
    return env.QUEUE.get(env.QUEUE.id_from_name("queue"))


async def call(env: Any, route: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """POST ``body`` to the queue object's ``route``; return ``(status, parsed JSON)``."""
    response = await queue_stub(env).fetch(Request.make("POST", route, json_body=body or {}))
    return response.status, response.json_body()


def _is_open(bp: dict[str, Any], now: int, lease_ms: int | None) -> bool:
    """Whether a message may be offered and claimed: pending, or processing past its lease."""
    status = bp.get("status")
    if status == "pending":
        return True
    return (
        status == "processing"
        and lease_ms is not None
        and now - int(bp.get("claimedAt") or 0) >= lease_ms
    )


class MessageQueue:
    """The queue's single writer. Construct with ``(state, env)`` as a Durable Object class."""

    def __init__(self, state: Any, env: Any) -> None:
        self.state = state
        self.storage = state.storage
        self.env = env
        # The KV cache's write queue (in memory: a fresh instance starts empty).
        self._kv_queue: list[dict[str, Any]] = []
        self._kv_enqueued = 0
        self._kv_written = 0
        self._kv_flushing = False

    async def fetch(self, request: Request) -> Response:
        route = URL(request.url).pathname
        body = await request.json() if request.body else {}
        handler = self._routes.get(route)
        if handler is None:
            return json_response({"error": f"no route {route}"}, 404)
        status, payload = await handler(self, body)
        return json_response(payload, status)

    # -- helpers -------------------------------------------------------------------------------

    async def _record(self, mid: str) -> dict[str, Any] | None:
        return await self.storage.get(f"msg:{mid}")

    async def _stamp(self) -> int:
        last = await self.storage.get("clock") or 0
        ts = max(date_now(), last + 1)
        await self.storage.put("clock", ts)
        return ts

    async def _view(self, ids: list[str]) -> list[dict[str, Any]]:
        if not ids:
            return []
        records = await self.storage.get([f"msg:{i}" for i in ids])
        return [records[f"msg:{i}"] for i in ids if f"msg:{i}" in records]

    # -- routes --------------------------------------------------------------------------------

    async def post(self, body: dict[str, Any]) -> tuple[int, Any]:
        """Store a new message: stamp it (``stamp``), add it to ``recent`` and, for a human
        message, to the pending index. With ``replyCompletes``, an AI reply completes the
        message it answers in the same step and a second reply to it is refused (409). With
        ``kvCache``, the message also goes into the KV cache; it joins the write queue in the
        same step as its stamp, so the cache receives messages in timestamp order."""
        status, res = await self._post(body)
        if body.get("kvCache") and status == 200 and not res.get("duplicate"):
            changes = [{"op": "prepend", "message": res["message"]}]
            if res.get("completed"):
                done = res["completed"]
                changes.append({"op": "update", "id": done["id"], "botParams": done["botParams"]})
            await self._kv_commit(changes)
        return status, res

    async def _post(self, body: dict[str, Any]) -> tuple[int, Any]:
        msg = dict(body["message"])
        existing = await self._record(msg["id"])
        if existing is not None:
            return 200, {"message": existing, "duplicate": True}
        reply_to = msg.get("replyTo")
        original = None
        if body.get("replyCompletes") and reply_to:
            original = await self._record(reply_to)
            if original is not None:
                bp = original.get("botParams") or {}
                if bp.get("replyId"):
                    return 409, {"error": f"message {reply_to} already answered by {bp['replyId']}"}
        if body.get("stamp"):
            msg["timestamp"] = await self._stamp()
        writes: dict[str, Any] = {f"msg:{msg['id']}": msg}
        timeline = await self.storage.get("timeline") or []
        bisect.insort(timeline, (msg.get("timestamp", 0), msg["id"]))
        writes["timeline"] = timeline
        recent = await self.storage.get("recent") or []
        writes["recent"] = [msg["id"], *[i for i in recent if i != msg["id"]]][:CACHE_SIZE]
        if msg.get("message-type") == "human" and msg.get("botParams") is not None:
            pending = await self.storage.get("pending") or []
            writes["pending"] = [*pending, msg["id"]]
        if original is not None:
            bp = dict(original.get("botParams") or {})
            bp.update(status="complete", processed=True, replyId=msg["id"], completedAt=date_now())
            writes[f"msg:{reply_to}"] = {**original, "botParams": bp}
            pending = writes.get("pending", await self.storage.get("pending") or [])
            writes["pending"] = [i for i in pending if i != reply_to]
        await self.storage.put(writes)
        if original is not None:
            return 200, {"message": msg, "completed": writes[f"msg:{reply_to}"]}
        return 200, {"message": msg}

    async def recent(self, body: dict[str, Any]) -> tuple[int, Any]:
        """The cached messages, newest first."""
        return 200, {"messages": await self._view(await self.storage.get("recent") or [])}

    async def replace_recent(self, body: dict[str, Any]) -> tuple[int, Any]:
        """Overwrite the cache with a snapshot: ``ids`` (newest first) and, when given, the
        snapshot's copies of those messages. What the snapshot lacks is gone from the cache."""
        writes: dict[str, Any] = {"recent": list(body["ids"])[:CACHE_SIZE]}
        for m in body.get("messages") or []:
            writes[f"msg:{m['id']}"] = m
        await self.storage.put(writes)
        return 200, {"ok": True}

    async def update(self, body: dict[str, Any]) -> tuple[int, Any]:
        """Merge ``botParams`` fields into one message's copy (a cache entry update)."""
        rec = await self._record(body["id"])
        if rec is None:
            return 404, {"error": "Message not found"}
        bp = {**(rec.get("botParams") or {}), **body["botParams"]}
        writes: dict[str, Any] = {f"msg:{body['id']}": {**rec, "botParams": bp}}
        if bp.get("status") in ("complete", "failed"):
            pending = await self.storage.get("pending") or []
            writes["pending"] = [i for i in pending if i != body["id"]]
        await self.storage.put(writes)
        return 200, {"ok": True}

    async def message(self, body: dict[str, Any]) -> tuple[int, Any]:
        rec = await self._record(body["id"])
        return (200, {"message": rec}) if rec is not None else (404, {"error": "Message not found"})

    async def since(self, body: dict[str, Any]) -> tuple[int, Any]:
        """Every message with ``timestamp > after`` (not only the cached ones), oldest first,
        at most ``limit``: a reader that advances its cursor to the newest it saw misses none."""
        after = body.get("after", 0)
        limit = body.get("limit", 50)
        timeline = await self.storage.get("timeline") or []
        start = bisect.bisect_right(timeline, (after, "\U0010ffff"))
        return 200, {"messages": await self._view([i for _, i in timeline[start : start + limit]])}

    async def pending(self, body: dict[str, Any]) -> tuple[int, Any]:
        """The messages that may be claimed (pending, or processing past the lease ``leaseMs``)
        among the index; with ``idsOnly`` just the index."""
        ids = await self.storage.get("pending") or []
        if body.get("idsOnly"):
            return 200, {"ids": ids}
        now = date_now()
        lease = body.get("leaseMs")
        out = [m for m in await self._view(ids) if _is_open(m.get("botParams") or {}, now, lease)]
        return 200, {"messages": out}

    async def claim(self, body: dict[str, Any]) -> tuple[int, Any]:
        """Claim ``id`` for ``workerId`` if it is open: 200, 404 or 409."""
        rec = await self._record(body["id"])
        if rec is None:
            return 404, {"success": False, "error": "Message not found"}
        bp = dict(rec.get("botParams") or {})
        now = date_now()
        if not _is_open(bp, now, body.get("leaseMs")):
            return 409, {"success": False, "error": f"Message is {bp.get('status')}, not pending"}
        bp.update(status="processing", claimedBy=body.get("workerId"), claimedAt=now)
        rec = {**rec, "botParams": bp}
        await self.storage.put(f"msg:{body['id']}", rec)
        return 200, {"success": True, "message": rec}

    async def claim_next(self, body: dict[str, Any]) -> tuple[int, Any]:
        """Claim the first open message (priority, then age) for ``workerId``."""
        _, found = await self.pending(body)
        if not found["messages"]:
            return 200, {"success": False, "message": None}
        first = sorted(
            found["messages"],
            key=lambda m: (-(m.get("botParams") or {}).get("priority", 0), m.get("timestamp", 0)),
        )[0]
        return await self.claim({**body, "id": first["id"]})

    async def _finish(self, body: dict[str, Any], fields: dict[str, Any]) -> tuple[int, Any]:
        rec = await self._record(body["id"])
        if rec is None:
            return 404, {"success": False, "error": "Message not found"}
        bp = dict(rec.get("botParams") or {})
        if bp.get("status") == "complete" and fields.get("status") == "complete":
            # Completing twice (a reply already completed it) is not an error.
            return 200, {"success": True, "status": "complete", "attempts": bp.get("attempts", 0)}
        if body.get("checkClaimer") and bp.get("claimedBy") != body.get("workerId"):
            return 409, {"success": False, "error": f"claimed by {bp.get('claimedBy')}"}
        if bp.get("status") in ("complete", "failed"):
            return 409, {"success": False, "error": f"Message is already {bp.get('status')}"}
        if fields.get("status") == "fail":
            attempts = int(bp.get("attempts") or 0) + 1
            status = "failed" if attempts >= MAX_ATTEMPTS else "pending"
            fields = {
                "status": status,
                "attempts": attempts,
                "claimedBy": None,
                "lastError": body.get("error"),
            }
        bp.update(fields)
        writes: dict[str, Any] = {f"msg:{body['id']}": {**rec, "botParams": bp}}
        if bp["status"] in ("complete", "failed"):
            pending = await self.storage.get("pending") or []
            writes["pending"] = [i for i in pending if i != body["id"]]
        await self.storage.put(writes)
        return 200, {"success": True, "status": bp["status"], "attempts": bp.get("attempts", 0)}

    async def complete(self, body: dict[str, Any]) -> tuple[int, Any]:
        """Mark ``id`` complete (with ``checkClaimer``, only for the claimer)."""
        return await self._finish(
            body, {"status": "complete", "processed": True, "completedAt": date_now()}
        )

    async def fail(self, body: dict[str, Any]) -> tuple[int, Any]:
        """Return ``id`` to pending, or mark it failed after ``MAX_ATTEMPTS``."""
        return await self._finish(body, {"status": "fail"})

    async def patch(self, body: dict[str, Any]) -> tuple[int, Any]:
        """Merge ``botParams`` into ``id``; ``processed: true`` also completes it."""
        rec = await self._record(body["id"])
        if rec is None:
            return 404, {"error": "Message not found"}
        bp = {**(rec.get("botParams") or {}), **body.get("botParams", {})}
        writes: dict[str, Any] = {}
        if bp.get("processed") and bp.get("status") not in ("complete", "failed"):
            bp["status"] = "complete"
            pending = await self.storage.get("pending") or []
            writes["pending"] = [i for i in pending if i != body["id"]]
        rec = {**rec, "botParams": bp}
        writes[f"msg:{body['id']}"] = rec
        await self.storage.put(writes)
        return 200, {"message": rec}

    async def _kv_commit(self, changes: list[dict[str, Any]]) -> None:
        """Queue ``changes`` for the KV cache and return once they are written.

        One request at a time flushes everything queued in one read-modify-write (a group
        commit), so the single writer keeps up with the 1 write/s limit of the key (§2.2); the
        others wait for their turn to be written. Changes are written in the order queued.
        """
        self._kv_queue.extend(changes)
        self._kv_enqueued += len(changes)
        mine = self._kv_enqueued
        while self._kv_written < mine:
            if self._kv_flushing:
                await sleep(50)
                continue
            self._kv_flushing = True
            batch, self._kv_queue = self._kv_queue, []
            written = False
            try:
                status, _ = await self._kv_apply(batch)
                written = status == 200
            finally:
                self._kv_flushing = False
                if written:
                    self._kv_written += len(batch)
                else:  # refused after retries, or this request was stopped: keep it first
                    self._kv_queue = batch + self._kv_queue
            if not written:
                await sleep(1_000)

    async def _kv_apply(self, changes: list[dict[str, Any]]) -> tuple[int, Any]:
        """Read-modify-write ``recent:comments`` once with every change; retry a 429 after a
        second (§2.2). Only the flushing request calls it."""
        kv = self.env.COMMENTS_KV
        for attempt in range(4):
            raw = await kv.get(kvcache.CACHE_KEY)
            new = json.loads(raw) if raw else []
            for change in changes:
                new = kvcache.apply(new, change)
            try:
                await kv.put(kvcache.CACHE_KEY, json.dumps(new, separators=(",", ":")))
                return 200, {"ok": True}
            except KvError as err:
                if err.status != 429 or attempt == 3:
                    return 503, {"error": str(err)}
                await sleep(1_000 * (attempt + 1))
        return 503, {"error": "unreachable"}

    async def kv_cache(self, body: dict[str, Any]) -> tuple[int, Any]:
        """Apply one change to the KV cache ``recent:comments`` through the write queue."""
        await self._kv_commit([body])
        return 200, {"ok": True}

    _routes = {
        "/post": post,
        "/recent": recent,
        "/replace-recent": replace_recent,
        "/update": update,
        "/message": message,
        "/since": since,
        "/pending": pending,
        "/claim": claim,
        "/claim-next": claim_next,
        "/complete": complete,
        "/fail": fail,
        "/patch": patch,
        "/kv-cache": kv_cache,
    }
