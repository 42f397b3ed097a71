"""The seeds' chat on Cloudflare Queues: messages live in the ``MessageQueue`` Durable Object,
work goes through a queue.

* :class:`QueuesChatWorker`: ``POST /api/comments`` stores a human message and sends
  ``{"id": ...}`` to the ``comments`` queue (``env.COMMENTS_QUEUE``); the bots are HTTP pull
  consumers (protocol ``queues``): they pull, generate, post the reply and ack by lease id.
  :class:`PullBot` says in which order the bot acks.
* :class:`QueuesPushWorker`: the same producer, and the worker is the queue's push consumer: its
  ``queue(batch, env, ctx)`` writes the reply of each message and acks it.

Delivery is at least once (reference Q3.1): a lease that runs out while the bot still generates
(Q4.12), a crash between reply and ack, a duplicate. The sound variants make the reply
idempotent: the object refuses a second reply to a message (409) and completes the message with
the first (``replyCompletes``), so a redelivered message is acked without a second answer.
"""

from __future__ import annotations

from typing import Any

import attrs

from qmodel.sim.http import Response, json_response
from qmodel.sim.queues import PullConsumer, PushConsumer, QueueConfig
from qmodel.sim.scheduler import date_now, sleep, unique_suffix
from qmodel.workers.cache import new_message
from qmodel.workers.queue_do import MessageQueue, call
from qmodel.workers.sound import CORS, SoundWorker

__all__ = ["COMMENTS_QUEUE", "PullBot", "QueuesChatWorker", "QueuesPushWorker"]

#: The queue's name (the pull API's path, ``batch.queue``).
COMMENTS_QUEUE = "comments"
#: How long the push consumer's reply takes to write (ms): a model call, say.
PUSH_REPLY_MS = 1_500


@attrs.frozen
class PullBot:
    """How the design's pull consumer (the protocol's bot) orders its calls.

    ``ack_before_reply``: ack each message as soon as it is pulled, before generating and
    replying (a crash or a failed generation then loses it).
    """

    ack_before_reply: bool = False


class QueuesChatWorker(SoundWorker):
    """The chat with a pull-consumed queue of work. ``idempotent_reply=False`` stores every
    reply, so a redelivered message is answered twice."""

    durable_objects = {"QUEUE": MessageQueue}

    def __init__(self, *, idempotent_reply: bool = True, pull_bot: PullBot | None = None) -> None:
        self.idempotent_reply = idempotent_reply
        self.pull_bot = pull_bot if pull_bot is not None else PullBot()
        # max_retries at its maximum (Q2.8): a message whose generation fails a few times in a
        # row is still answered, not dropped.
        self.queues = {
            "COMMENTS_QUEUE": QueueConfig(
                name=COMMENTS_QUEUE, consumer=PullConsumer(max_retries=100)
            )
        }

    def __repr__(self) -> str:
        flags = []
        if not self.idempotent_reply:
            flags.append("idempotent_reply=False")
        if self.pull_bot.ack_before_reply:
            flags.append("pull_bot=PullBot(ack_before_reply=True)")
        return f"{type(self).__name__}({', '.join(flags)})"

    async def post(self, body: Any, env: Any, ctx: Any) -> Response:
        """Store the message; a human one is then sent to the queue before the 200 (Q1.2:
        once ``send`` resolves, the message is durably written)."""
        if not isinstance(body, dict) or not body.get("text"):
            return json_response({"error": "text is required"}, 400, CORS)
        msg = new_message(body, date_now(), unique_suffix())
        msg["clientTimestamp"] = body.get("timestamp")
        reply_to = msg.get("replyTo")
        idempotent = self.idempotent_reply or not reply_to
        status, res = await call(
            env, "/post", {"message": msg, "stamp": True, "replyCompletes": idempotent}
        )
        if status != 200:
            return json_response(res, status, CORS)
        stored = res["message"]
        if not idempotent:
            # Every reply is stored; the message it answers is marked complete afterwards.
            done = {"status": "complete", "processed": True, "replyId": stored["id"]}
            await call(env, "/update", {"id": reply_to, "botParams": done})
        if stored.get("message-type") == "human":
            await env.COMMENTS_QUEUE.send({"id": stored["id"]})
        ctx.wait_until(self._archive(env, stored))
        return json_response(stored, 200, CORS)


class QueuesPushWorker(QueuesChatWorker):
    """The chat whose worker is the queue's push consumer: ``queue()`` answers each message
    and acks it once its reply is stored, so a throw retries only the unacked ones (Q2.4).
    ``idempotent_reply=False`` stores every reply, so a redelivery is answered twice."""

    def __init__(self, *, idempotent_reply: bool = True, max_batch_size: int = 10) -> None:
        super().__init__(idempotent_reply=idempotent_reply)
        self.queues = {
            "COMMENTS_QUEUE": QueueConfig(
                name=COMMENTS_QUEUE,
                consumer=PushConsumer(max_batch_size=max_batch_size, max_retries=100),
            )
        }

    async def queue(self, batch: Any, env: Any, ctx: Any) -> None:
        """Reply to each message of ``batch`` through the object, then ack it."""
        for message in batch.messages:
            mid = message.body.get("id") if isinstance(message.body, dict) else None
            if not isinstance(mid, str):
                message.ack()  # not ours: never retry what cannot be answered
                continue
            await sleep(PUSH_REPLY_MS)
            reply = {
                "text": f"reply to {mid}",
                "username": "push-consumer",
                "color": "green",
                "domain": "saywhatwant.app",
                "message-type": "AI",
                "replyTo": mid,
            }
            status, res = await call(
                env,
                "/post",
                {
                    "message": new_message(reply, date_now(), unique_suffix()),
                    "stamp": True,
                    "replyCompletes": self.idempotent_reply,
                },
            )
            if status == 200 and not self.idempotent_reply:
                done = {"status": "complete", "processed": True, "replyId": res["message"]["id"]}
                await call(env, "/update", {"id": mid, "botParams": done})
            if status in (200, 409):  # 409: already answered (a redelivery)
                message.ack()
            else:
                message.retry()
