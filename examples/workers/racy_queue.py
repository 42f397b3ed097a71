"""A small queue-era worker in Python with two races. Its claim reads the message, checks that
it is pending and writes it back as processing, so two bots polling together can both win the
same message and both answer it (``single-claim``, ``one-reply``). And a POST adds the new id to
the ``index`` key by read-modify-write, so two POSTs together can lose one id, and its message
is never offered to the bot (``pending-visible``).

Every message lives under ``msg:{id}``; ``index`` lists the ids. Try it:

    qmodel check --target examples/workers/racy_queue.py:Worker --protocol queue
"""

from __future__ import annotations

import json
from typing import Any

from qmodel.sim.http import Response, json_response
from qmodel.sim.scheduler import date_now, unique_suffix

PREFIX, INDEX = "msg:", "index"


class Worker:
    """The worker: ``fetch(request, env, ctx)`` as on Cloudflare Workers."""

    async def fetch(self, request: Any, env: Any, ctx: Any) -> Response:
        kv = env.COMMENTS_KV
        path = request.url.split("://", 1)[-1].split("/", 1)[-1].split("?", 1)[0]
        query = dict(p.split("=", 1) for p in request.url.partition("?")[2].split("&") if "=" in p)
        if request.method == "OPTIONS":
            return Response("", 200)
        if request.method == "POST" and path == "api/comments":
            message = await request.json()
            if not message.get("text"):
                return json_response({"error": "text is required"}, 400)
            # Date.now() and a generated id, on the simulated clock (a bot's reply has neither).
            now = date_now()
            message.setdefault("id", f"{now}-{unique_suffix()}")
            message.setdefault("timestamp", now)
            if message.get("message-type", "human") == "human":
                message.setdefault("botParams", {})["status"] = "pending"
            await kv.put(PREFIX + message["id"], json.dumps(message))
            ids = json.loads(await kv.get(INDEX) or "[]")
            # The second race: a POST between this get and the put below is lost from the index.
            await kv.put(INDEX, json.dumps([*ids, message["id"]]))
            return json_response(message)
        if request.method == "GET" and path == "api/comments":
            messages = await _all(kv)
            after = int(query.get("after", "0"))
            newest = sorted(messages, key=lambda m: m["timestamp"], reverse=True)
            return json_response([m for m in newest if m["timestamp"] > after])
        if request.method == "GET" and path == "api/queue/pending":
            pending = [m for m in await _all(kv) if _status(m) == "pending"]
            return json_response(pending[: int(query.get("limit", "10"))])
        if request.method == "POST" and path.startswith("api/queue/"):
            body = await request.json()
            raw = await kv.get(PREFIX + body["messageId"])
            if raw is None:
                return json_response({"success": False, "error": "not found"}, 404)
            message = json.loads(raw)
            verb = path.removeprefix("api/queue/")
            if verb == "claim":
                if _status(message) != "pending":
                    return json_response({"success": False, "error": "not pending"}, 409)
                message["botParams"].update(status="processing", claimedBy=body["workerId"])
            elif verb == "complete":
                message["botParams"]["status"] = "complete"
            elif verb == "fail":
                message["botParams"]["status"] = "pending"
            else:
                return Response("not found", 404)
            # The first race: nothing stops another bot's claim between the get above and this put.
            await kv.put(PREFIX + body["messageId"], json.dumps(message))
            return json_response({"success": True, "message": message, "status": "pending"})
        return Response("not found", 404)


async def _all(kv: Any) -> list[dict[str, Any]]:
    ids = json.loads(await kv.get(INDEX) or "[]")
    found = [await kv.get(PREFIX + i) for i in ids]
    return [json.loads(raw) for raw in found if raw is not None]


def _status(message: dict[str, Any]) -> str | None:
    return message.get("botParams", {}).get("status")
