"""The sound design: the queue lives in one Durable Object; KV keeps only what tolerates
staleness.

Every route that reads or changes the queue is one request to the ``MessageQueue`` object, the
single writer (reference §1.7: "funnel every write for a key through one Durable Object"; §5.8
"Correct when"): posting registers the message, stamps it with a strictly increasing server time
and indexes it; claims, completions, failures and PATCHes are decided there with leases; a reply
completes its message in the same step and a second reply is refused. Reads are served from the
object, never from a KV cache. KV gets an archive copy of each posted message under
``comment:{id}``, written in the background (``ctx.wait_until``), for consumers that accept a
stale view; no route reads it.
"""

from __future__ import annotations

import json
from typing import Any

from qmodel.sim.http import URL, Request, Response, json_response
from qmodel.sim.scheduler import date_now, unique_suffix
from qmodel.workers.cache import new_message
from qmodel.workers.queue_do import LEASE_MS, MessageQueue, call

__all__ = ["SoundWorker"]

CORS = {"access-control-allow-origin": "*"}


class SoundWorker:
    """The sound worker. Bindings: ``env.COMMENTS_KV`` and ``env.QUEUE`` (MessageQueue)."""

    durable_objects = {"QUEUE": MessageQueue}

    def __repr__(self) -> str:
        return "SoundWorker()"

    async def fetch(self, request: Request, env: Any, ctx: Any) -> Response:
        url = URL(request.url)
        path, method = url.pathname, request.method
        if method == "OPTIONS":
            return Response("", 200, CORS)
        body: Any = {}
        if request.body:
            try:
                body = await request.json()
            except ValueError:
                return json_response({"error": "Invalid JSON"}, 400, CORS)
        if path == "/api/comments" and method == "POST":
            return await self.post(body, env, ctx)
        if path == "/api/comments" and method == "GET":
            return await self.list(url, env)
        if path.startswith("/api/comments/"):
            mid = path[len("/api/comments/") :]
            if method == "GET":
                status, res = await call(env, "/message", {"id": mid})
                return json_response(res.get("message") or res, status, CORS)
            if method == "PATCH":
                fields = (body or {}).get("botParams") or {}
                status, res = await call(env, "/patch", {"id": mid, "botParams": fields})
                return json_response(res.get("message") or res, status, CORS)
        if path == "/api/queue/pending" and method == "GET":
            limit = int(url.search_params.get("limit", "10"))
            _, res = await call(env, "/pending", {"leaseMs": LEASE_MS})
            found = sorted(
                res["messages"],
                key=lambda m: (-(m.get("botParams") or {}).get("priority", 0), m["timestamp"]),
            )
            return json_response({"pending": found[:limit]}, 200, CORS)
        routes = {
            "/api/queue/claim": "/claim",
            "/api/queue/complete": "/complete",
            "/api/queue/fail": "/fail",
            "/api/queue/claim-next": "/claim-next",
        }
        if method == "POST" and path in routes:
            status, res = await call(
                env,
                routes[path],
                {
                    "id": (body or {}).get("messageId"),
                    "workerId": (body or {}).get("workerId"),
                    "error": (body or {}).get("error"),
                    "leaseMs": LEASE_MS,
                    "checkClaimer": True,
                },
            )
            return json_response(res, status, CORS)
        return Response("Not found", 404, CORS)

    async def post(self, body: Any, env: Any, ctx: Any) -> Response:
        if not isinstance(body, dict) or not body.get("text"):
            return json_response({"error": "text is required"}, 400, CORS)
        msg = new_message(body, date_now(), unique_suffix())
        # The server's clock orders messages (the queue object restamps it); keep the client's.
        msg["clientTimestamp"] = body.get("timestamp")
        status, res = await call(
            env, "/post", {"message": msg, "stamp": True, "replyCompletes": True}
        )
        if status != 200:
            return json_response(res, status, CORS)
        stored = res["message"]
        ctx.wait_until(self._archive(env, stored))
        return json_response(stored, 200, CORS)

    async def _archive(self, env: Any, msg: dict[str, Any]) -> None:
        await env.COMMENTS_KV.put(f"comment:{msg['id']}", json.dumps(msg, separators=(",", ":")))

    async def list(self, url: URL, env: Any) -> Response:
        params = url.search_params
        limit = int(params.get("limit", "50"))
        kind = params.get("type")
        if "after" in params:
            _, res = await call(env, "/since", {"after": int(params["after"]), "limit": limit})
            items = res["messages"]
        else:
            _, res = await call(env, "/recent")
            items = res["messages"]
        if kind:
            items = [m for m in items if m.get("message-type") == kind]
        items = sorted(items, key=lambda m: (m["timestamp"], m["id"]), reverse=True)
        if "after" in params:
            return json_response(items, 200, CORS)
        return json_response({"comments": items[:limit], "hasMore": len(items) > limit}, 200, CORS)
