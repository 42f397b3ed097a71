"""The AI bot, in the three eras of the chat protocol.

* ``patch``: list recent messages, answer each human one not yet ``processed`` that it has not
  queued in the last 5 minutes, then PATCH it ``processed: true`` (seed 004).
* ``queue``: poll ``/api/queue/pending`` about every 3 s, claim the first, generate, then post
  the reply and ``complete``, or ``fail`` on an empty or failed generation (seed 000).
* ``do``: ``claim-next``, generate, reply, ``complete``.
* ``queues``: an HTTP pull consumer of the design's Cloudflare queue ``comments`` (reference
  Q4): pull a batch, then for each message generate, post the reply and ack its lease (or retry
  it on a failed generation or reply); a reply refused 409 (already answered) is acked too. A
  design whose ``pull_bot`` says ``ack_before_reply`` is acked as soon as it is pulled.

Generating takes time and may come back empty or fail (choices ``bot.generate`` and
``bot.generate_ms``). A crash kills the bot wherever it is, its in-flight request with it (a
client that disconnects cancels its request); it restarts with empty memory.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any, Literal

import attrs

from qmodel.sim.http import Request
from qmodel.sim.queues import api_path
from qmodel.sim.scheduler import date_now, sleep

if TYPE_CHECKING:
    from qmodel.world import World

__all__ = ["Bot", "GENERATE_MS"]

Era = Literal["patch", "queue", "do", "queues"]
#: The Cloudflare queue a ``queues``-era bot pulls from.
PULL_QUEUE = "comments"
#: How long a generation may take (ms); the last is longer than a 60 s claim lease.
GENERATE_MS = (500, 4_000, 20_000, 75_000)
#: Messages a PATCH-era bot lists per poll (the seeds' cache holds 200).
LISTING = 200
#: seed 004: "that it has not queued in the last 5 minutes".
REQUEUE_MS = 5 * 60_000


@attrs.define(eq=False)
class Bot:
    """One bot process at ``location``; ``memory`` is lost on a crash."""

    name: str
    location: str
    world: World
    era: Era = "queue"
    poll_ms: int = 3_000
    memory: dict[str, int] = attrs.field(factory=dict)
    answered: int = 0

    async def generate(self) -> str:
        """Spend a chosen time generating; ``reply``, ``empty`` or ``error``."""
        choices = self.world.platform.choices
        await sleep(choices.pick("bot.generate_ms", GENERATE_MS, (5, 3, 2, 1)))
        return choices.pick("bot.generate", ("reply", "empty", "error"), (8, 1, 1))

    async def reply(self, original: str) -> bool:
        """Post the reply to ``original``; whether it was stored (200)."""
        return await self.reply_status(original) == 200

    async def reply_status(self, original: str) -> int:
        """Post the reply to ``original``; the answer's status."""
        body = {
            "text": f"reply to {original}",
            "username": self.name,
            "color": "green",
            "domain": "saywhatwant.app",
            "message-type": "AI",
            "replyTo": original,
        }
        status, _ = await self.world.call(
            self, "post", "POST", "/api/comments", body=body, mid=None
        )
        return int(status)

    async def process_claimed(self, mid: str) -> None:
        outcome = await self.generate()
        w = self.world
        if outcome != "reply":
            await w.call(
                self,
                "fail",
                "POST",
                "/api/queue/fail",
                body={"messageId": mid, "workerId": self.name, "error": f"generation {outcome}"},
                mid=mid,
            )
            return
        if await self.reply(mid):
            self.answered += 1
            await w.call(
                self,
                "complete",
                "POST",
                "/api/queue/complete",
                body={"messageId": mid, "workerId": self.name},
                mid=mid,
            )

    async def queue_round(self) -> None:
        w = self.world
        _, answer = await w.call(self, "pending", "GET", "/api/queue/pending", query={"limit": 10})
        items = _pending(answer)
        if not items:
            return
        mid = items[0].get("id")
        if not isinstance(mid, str):
            return
        status, res = await w.call(
            self,
            "claim",
            "POST",
            "/api/queue/claim",
            body={"messageId": mid, "workerId": self.name},
            mid=mid,
        )
        if status == 200 and isinstance(res, dict) and res.get("success") is not False:
            await self.process_claimed(mid)

    async def do_round(self) -> None:
        status, res = await self.world.call(
            self, "claim-next", "POST", "/api/queue/claim-next", body={"workerId": self.name}
        )
        msg = res.get("message") if isinstance(res, dict) else None
        if status == 200 and isinstance(msg, dict) and isinstance(msg.get("id"), str):
            await self.process_claimed(msg["id"])

    async def queue_api(self, action: str, body: dict[str, Any]) -> tuple[int, Any]:
        """POST ``body`` to the Queues API's ``action`` (``pull`` or ``ack``, Q4.4, Q4.11)."""
        platform = self.world.platform
        if platform.queues is None:
            return 0, None
        request = Request.make("POST", api_path(PULL_QUEUE, action), json_body=body)
        response = await platform.fetch(
            platform.queues.api, request, location=self.location, name=f"{self.name}:{action}"
        )
        return response.status, response.json_body()

    async def queues_round(self) -> None:
        """Pull a batch from the queue; answer each message, then ack or retry its lease (or
        ack first, if the design's ``pull_bot`` says so)."""
        w = self.world
        status, res = await self.queue_api("pull", {})
        result = res.get("result") if isinstance(res, dict) else None
        items = result.get("messages") if status == 200 and isinstance(result, dict) else None
        policy = getattr(w.target, "pull_bot", None)
        ack_first = bool(getattr(policy, "ack_before_reply", False))
        for item in items or []:
            lease = item.get("lease_id")
            mid = _pulled_id(item)
            w.log.append(
                f"t={date_now()} {self.name} pulled {mid} (attempt {item.get('attempts')}, {lease})"
            )
            if mid is None or ack_first:
                await self.queue_api("ack", {"acks": [{"lease_id": lease}]})
                if mid is None:
                    continue
            done = False
            if await self.generate() == "reply":
                status = await self.reply_status(mid)
                if status == 200:
                    self.answered += 1
                done = status in (200, 409)  # 409: answered already (a redelivery)
            if not ack_first:
                settle = (
                    {"acks": [{"lease_id": lease}]} if done else {"retries": [{"lease_id": lease}]}
                )
                await self.queue_api("ack", settle)

    async def patch_round(self) -> None:
        w = self.world
        _, answer = await w.call(self, "list", "GET", "/api/comments", query={"limit": LISTING})
        now = date_now()
        for m in _listing(answer):
            mid = m.get("id")
            bp = m.get("botParams") or {}
            if m.get("message-type") != "human" or bp.get("processed") or not isinstance(mid, str):
                continue
            if now - self.memory.get(mid, -REQUEUE_MS) < REQUEUE_MS:
                continue
            self.memory[mid] = now
            if await self.generate() != "reply":
                continue
            if await self.reply(mid):
                self.answered += 1
                await w.call(
                    self,
                    "patch",
                    "PATCH",
                    f"/api/comments/{mid}",
                    body={"botParams": {"processed": True}},
                    mid=mid,
                )

    def restarted(self) -> Bot:
        """The same bot after a crash: same name, place and pace, empty memory."""
        return Bot(self.name, self.location, self.world, era=self.era, poll_ms=self.poll_ms)

    async def run(self) -> None:
        """Serve the era's protocol forever."""
        rounds = {
            "queue": self.queue_round,
            "do": self.do_round,
            "patch": self.patch_round,
            "queues": self.queues_round,
        }
        round_ = rounds[self.era]
        while True:
            await round_()
            await sleep(self.poll_ms)


def _pending(answer: Any) -> list[dict[str, Any]]:
    """Pending messages: a bare array or ``{pending: [...]}`` (PROTOCOL.md: accept both)."""
    items = answer.get("pending") if isinstance(answer, dict) else answer
    return [m for m in items if isinstance(m, dict)] if isinstance(items, list) else []


def _listing(answer: Any) -> list[dict[str, Any]]:
    items = answer.get("comments") if isinstance(answer, dict) else answer
    return [m for m in items if isinstance(m, dict)] if isinstance(items, list) else []


def _pulled_id(item: Any) -> str | None:
    """The chat message id in a pulled message's body: JSON, base64-encoded (Q4.8)."""
    if not isinstance(item, dict) or not isinstance(item.get("body"), str):
        return None
    try:
        body = json.loads(base64.b64decode(item["body"]))
    except ValueError:
        return None
    mid = body.get("id") if isinstance(body, dict) else None
    return mid if isinstance(mid, str) else None
