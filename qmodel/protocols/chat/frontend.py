"""The frontend: posts human messages, polls for new ones, and self-heals.

As PROTOCOL.md and seed 000 describe it: a post carries a client ``id`` of the form
``"{ms}-{random}"`` from one clock read and a ``timestamp`` from a second read, which can be a
millisecond or two later (seed 004: "1-2 millisecond timing difference"); the frontend's clock
may be skewed. It shows its own message at once, polls ``GET /api/comments?after={cursor}``
every few seconds with the cursor at the newest timestamp it has seen, and every 30 s checks
that its own messages older than 30 s got a reply, refetching the listing if one did not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from qmodel.sim.scheduler import date_now, sleep, unique_suffix

if TYPE_CHECKING:
    from qmodel.world import World

__all__ = ["Frontend"]

#: How far the second clock read can be behind the first (ms), as a choice: seed 004 saw 1-2.
STRADDLE_MS = (0, 1, 2)
#: Messages asked for per poll.
PAGE = 200
#: seed 000 step 10: self-heal every 30 s for messages older than 30 s.
SELF_HEAL_MS = 30_000


@attrs.define(eq=False)
class Frontend:
    """One browser tab at ``location``; ``skew_ms`` is its clock's offset from true time."""

    name: str
    location: str
    world: World
    poll_ms: int = 3_000
    skew_ms: int = 0
    #: The newest timestamp seen (the ``after`` cursor); starts a few seconds in the past.
    cursor: int | None = None
    #: Ids received by polls and refetches (its own posts are shown at once, not counted).
    seen: set[str] = attrs.field(factory=set)
    #: Ids of its own acknowledged posts, with when they were acknowledged.
    own: dict[str, int] = attrs.field(factory=dict)
    replied: set[str] = attrs.field(factory=set)
    posts: int = 0
    last_heal_ms: int = 0

    def clock(self) -> int:
        return date_now() + self.skew_ms

    async def post(self, text: str) -> None:
        """Post one human message (a separate action beside the polling loop)."""
        choices = self.world.platform.choices
        id_ms = self.clock()
        ts = id_ms + choices.pick("frontend.clock_straddle", STRADDLE_MS, (6, 3, 1))
        self.posts += 1
        mid = f"{id_ms}-{self.name}{unique_suffix()}"
        body = {
            "id": mid,
            "timestamp": ts,
            "text": text,
            "username": self.name,
            "color": "blue",
            "domain": "saywhatwant.app",
            "message-type": "human",
            "botParams": {"entity": "default", "priority": 5},
        }
        status, _ = await self.world.call(self, "post", "POST", "/api/comments", body=body, mid=mid)
        if status == 200:
            self.own[mid] = date_now()

    def _take(self, items: list[dict[str, Any]], *, advance: bool = True) -> None:
        for m in items:
            mid = m.get("id")
            if not isinstance(mid, str):
                continue
            self.seen.add(mid)
            ts = m.get("timestamp")
            if advance and isinstance(ts, int) and (self.cursor is None or ts > self.cursor):
                self.cursor = ts
            if m.get("replyTo"):
                self.replied.add(m["replyTo"])

    async def poll(self) -> None:
        """Fetch what is newer than the cursor; a full page means more: fetch again at once."""
        if self.cursor is None:
            self.cursor = self.clock() - 5_000
        for _ in range(50):
            _, answer = await self.world.call(
                self, "poll", "GET", "/api/comments", query={"after": self.cursor, "limit": PAGE}
            )
            items = _comments(answer)
            before = self.cursor
            self._take(items)
            if len(items) < PAGE or self.cursor == before:
                break

    async def self_heal(self) -> None:
        """Refetch the listing if an own message older than 30 s has no reply yet."""
        now = date_now()
        self.last_heal_ms = now
        stale = [
            m for m, at in self.own.items() if now - at >= SELF_HEAL_MS and m not in self.replied
        ]
        if stale:
            _, answer = await self.world.call(
                self, "list", "GET", "/api/comments", query={"limit": 200}
            )
            # A refetch shows what the listing holds; the poll cursor stays where polling got to.
            self._take(_comments(answer), advance=False)

    def restarted(self) -> Frontend:
        """A frontend is never crashed by the machine; a restarted one is a fresh tab."""
        return Frontend(
            self.name, self.location, self.world, poll_ms=self.poll_ms, skew_ms=self.skew_ms
        )

    async def run(self) -> None:
        """Poll forever; self-heal every 30 s."""
        while True:
            await sleep(self.poll_ms)
            await self.poll()
            if date_now() - self.last_heal_ms >= SELF_HEAL_MS:
                await self.self_heal()


def _comments(answer: Any) -> list[dict[str, Any]]:
    """The messages of a listing: a bare array or ``{comments: [...]}`` (PROTOCOL.md)."""
    if isinstance(answer, list):
        return [m for m in answer if isinstance(m, dict)]
    if isinstance(answer, dict) and isinstance(answer.get("comments"), list):
        return [m for m in answer["comments"] if isinstance(m, dict)]
    return []
