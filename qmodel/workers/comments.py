"""The seeds' comments worker, on Workers KV, with each known fix as a switch.

Written the way the seeds' ``comments-worker.js`` is described (seed 000 "Complete Message
Flow", seed 004 "The Fix"): async handlers that await KV, store messages under ``comment:``
keys and read-modify-write the ``recent:comments`` cache. :class:`Fixes` holds one switch per
fix; ``False`` is the seeds' code. ``Fixes.seed_000()`` is the queue-era worker with all its
bugs, ``Fixes.seed_004()`` the PATCH-era worker before its fix, and ``Fixes.all()`` the worker
with every fix on, which keeps the queue in the ``MessageQueue`` Durable Object and uses KV only
for what tolerates staleness.

Each fix, and the bug it removes (catalog ids of DESIGN.md):

============================  ================================================================
``id_keys``                   keys ``comment:{id}`` instead of ``comment:{timestamp}:{id}``
                              (TS_KEY_404, LIST_FIRST_PAGE_404); with timestamp keys,
                              ``patch_lookup`` says how PATCH finds a key: ``construct`` it from
                              the id (seed 004 before), search the ``first_page`` of ``list()``
                              (seed 004's fix) or ``paginate`` to the end
``cache_in_do``               the queue object keeps the recent-messages cache; else it is the KV
                              key ``recent:comments`` (CACHE_LOST_UPDATE, STALE_CACHE_RMW)
``cache_serialized``          with the cache in KV, every cache write goes through the queue
                              object, one at a time; else each request read-modify-writes it at
                              its own location and swallows a failed write (CACHE_LOST_UPDATE)
``status_patch``              claim/complete/fail update the one cache entry they change; else
                              they rewrite the whole cache from the snapshot read when the
                              request began (STATUS_WRITE_CLOBBERS_CACHE)
``pending_read_only``         the pending endpoint never writes; else it rewrites the cache it
                              read whenever a cached status disagrees (GHOST_PENDING)
``atomic_claim``              claim/complete/fail/PATCH are decided by the queue object; else by
                              get, check, put on the message key (CLAIM_NOT_ATOMIC)
``crash_safe``                a claim is a lease (a crashed claimer's message returns to pending)
                              and the reply completes its message in the same step, refusing a
                              second reply; else a crash between reply and complete leaves the
                              message processing (CRASH_AFTER_REPLY)
``pending_index``             pending also reads an index of every open message, and a read by
                              cursor reads the index of every message; else only the last 200
                              cached (CACHE_TRIM_DROPS_PENDING)
``server_timestamps``         the queue object stamps messages with a strictly increasing server
                              time; else the client's timestamp stands (POLL_MISSES_MESSAGE)
============================  ================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import attrs

from qmodel.sim.http import URL, Headers, Request, Response, json_response
from qmodel.sim.kv import KvError
from qmodel.sim.scheduler import date_now, sleep, unique_suffix
from qmodel.workers import cache as kvcache
from qmodel.workers.jsontext import JsonTexts
from qmodel.workers.queue_do import LEASE_MS, MAX_ATTEMPTS, MessageQueue, call

__all__ = ["CommentsWorker", "Fixes"]

PatchLookup = Literal["construct", "first_page", "paginate"]

CORS = {"access-control-allow-origin": "*"}


@attrs.frozen(kw_only=True)
class Fixes:
    """One switch per fix; ``False`` is the seeds' code (see the module docstring)."""

    id_keys: bool = False
    patch_lookup: PatchLookup = "construct"
    cache_in_do: bool = False
    cache_serialized: bool = False
    status_patch: bool = False
    pending_read_only: bool = False
    atomic_claim: bool = False
    crash_safe: bool = False
    pending_index: bool = False
    server_timestamps: bool = False

    def __attrs_post_init__(self) -> None:
        if self.patch_lookup not in ("construct", "first_page", "paginate"):
            raise ValueError(
                f"patch_lookup={self.patch_lookup!r}; use 'construct', 'first_page' or 'paginate'"
            )

    @classmethod
    def seed_000(cls) -> Fixes:
        """The queue-era worker of seed 000: keys ``comment:{id}``, every other bug present."""
        return cls(id_keys=True)

    @classmethod
    def seed_004(cls) -> Fixes:
        """The PATCH-era worker of seed 004 before its fix."""
        return cls()

    @classmethod
    def all(cls) -> Fixes:
        """Every fix on."""
        return cls(
            id_keys=True,
            patch_lookup="paginate",
            cache_in_do=True,
            cache_serialized=True,
            status_patch=True,
            pending_read_only=True,
            atomic_claim=True,
            crash_safe=True,
            pending_index=True,
            server_timestamps=True,
        )

    @property
    def uses_queue_object(self) -> bool:
        """Whether the design needs the ``QUEUE`` Durable Object binding."""
        return (
            self.cache_in_do
            or self.cache_serialized
            or self.atomic_claim
            or self.pending_index
            or self.server_timestamps
        )

    def describe(self) -> str:
        """The switches that differ from every-fix-on, e.g. ``id_keys=False
        patch_lookup=construct``."""
        best = Fixes.all()
        diff = [
            f"{a.name}={getattr(self, a.name)}"
            for a in attrs.fields(Fixes)
            if getattr(self, a.name) != getattr(best, a.name)
            and not (a.name == "patch_lookup" and self.id_keys)
        ]
        return " ".join(diff) or "all fixes on"


def _error(status: int, message: str) -> Response:
    return json_response({"error": message}, status, CORS)


def _json_text(text: str, status: int = 200) -> Response:
    """:func:`json_response` for a body serialised already (a message as just written to KV),
    so the same value is not serialised twice."""
    headers = Headers(CORS)
    headers.set("content-type", "application/json")
    return Response(text, status, headers)


def _open(bp: dict[str, Any], now: int, lease: bool) -> bool:
    status = bp.get("status")
    return status == "pending" or (
        lease and status == "processing" and now - int(bp.get("claimedAt") or 0) >= LEASE_MS
    )


class CommentsWorker:
    """The worker. ``CommentsWorker(Fixes.seed_000())`` is seed 000's, bugs and all.

    Bindings: ``env.COMMENTS_KV`` always; ``env.QUEUE`` (a :class:`MessageQueue` namespace)
    when :attr:`Fixes.uses_queue_object`.
    """

    #: The Durable Object classes this design needs, by binding name.
    durable_objects = {"QUEUE": MessageQueue}

    def __init__(self, fixes: Fixes | None = None) -> None:
        self.fixes = fixes if fixes is not None else Fixes.seed_000()
        #: Every JSON text read from or written to KV goes through here, parsed or serialised
        #: once (so no handler mutates a value it parsed: see :mod:`qmodel.workers.jsontext`).
        self._json = JsonTexts()

    def __repr__(self) -> str:
        return f"CommentsWorker({self.fixes.describe()})"

    # -- routing -------------------------------------------------------------------------------

    async def fetch(self, request: Request, env: Any, ctx: Any) -> Response:
        url = URL(request.url)
        path, method = url.pathname, request.method
        if method == "OPTIONS":
            return Response("", 200, CORS)
        if path == "/api/comments" and method == "POST":
            return await self.post_comment(request, env)
        if path == "/api/comments" and method == "GET":
            return await self.get_comments(url, env)
        if path.startswith("/api/comments/") and method in ("PATCH", "GET"):
            mid = path[len("/api/comments/") :]
            if method == "GET":
                return await self.get_comment(mid, env)
            return await self.patch_comment(mid, request, env)
        if path == "/api/queue/pending" and method == "GET":
            return await self.pending(url, env)
        if path == "/api/queue/claim" and method == "POST":
            return await self.claim(request, env)
        if path == "/api/queue/complete" and method == "POST":
            return await self.complete(request, env)
        if path == "/api/queue/fail" and method == "POST":
            return await self.fail(request, env)
        if path == "/api/queue/claim-next" and method == "POST" and self.fixes.uses_queue_object:
            body = await request.json()
            status, res = await call(env, "/claim-next", self._claim_body(body))
            return json_response(res, status, CORS)
        return Response("Not found", 404, CORS)

    # -- keys ----------------------------------------------------------------------------------

    def _key(self, msg: dict[str, Any]) -> str:
        if self.fixes.id_keys:
            return f"comment:{msg['id']}"
        # seed 004: `comment:${comment.timestamp}:${comment.id}`, the timestamp the client sent
        return f"comment:{msg.get('clientTimestamp', msg['timestamp'])}:{msg['id']}"

    async def _locate(self, env: Any, mid: str) -> str | None:
        """The KV key of message ``mid``, found the way the switch says (seed 004)."""
        if self.fixes.id_keys:
            return f"comment:{mid}"
        kv = env.COMMENTS_KV
        lookup = self.fixes.patch_lookup
        if lookup == "construct":
            # seed 004, before: const timestamp = messageId.split('-')[0]
            return f"comment:{mid.split('-')[0]}:{mid}"
        suffix = f":{mid}"
        cursor = None
        while True:
            page = await kv.list(prefix="comment:", cursor=cursor)
            for k in page.keys:
                if k.name.endswith(suffix):
                    return k.name
            if lookup == "first_page" or page.list_complete:
                return None
            cursor = page.cursor

    async def _load(self, env: Any, mid: str) -> tuple[str | None, dict[str, Any] | None]:
        key = await self._locate(env, mid)
        if key is None:
            return None, None
        raw = await env.COMMENTS_KV.get(key)
        return key, (self._json.parse(raw) if raw is not None else None)

    # -- the cache -----------------------------------------------------------------------------

    async def _read_cache(self, env: Any) -> list[dict[str, Any]]:
        if self.fixes.cache_in_do:
            _, res = await call(env, "/recent")
            return res["messages"]
        raw = await env.COMMENTS_KV.get(kvcache.CACHE_KEY)
        return self._json.parse(raw) if raw else []

    async def _change_cache(self, env: Any, change: dict[str, Any]) -> None:
        """Apply one change to the cache wherever it lives (see :func:`cache.apply`)."""
        f = self.fixes
        if f.cache_in_do:
            if change["op"] == "update" and not f.atomic_claim:
                await call(env, "/update", {"id": change["id"], "botParams": change["botParams"]})
            elif change["op"] == "replace":
                await call(
                    env,
                    "/replace-recent",
                    {
                        "ids": [m["id"] for m in change["messages"]],
                        # When the object decides statuses its records are the truth: only the
                        # list of cached ids is rewritten.
                        "messages": [] if f.atomic_claim else change["messages"],
                    },
                )
            return  # a prepend happened when the message was registered
        if f.cache_serialized:
            await call(env, "/kv-cache", change)
            return
        # The seeds' code: read, modify, write at this location; a failed write is only logged.
        kv = env.COMMENTS_KV
        try:
            if change["op"] == "replace":
                new = kvcache.apply([], change)
            else:
                raw = await kv.get(kvcache.CACHE_KEY)
                new = kvcache.apply(self._json.parse(raw) if raw else [], change)
            await kv.put(kvcache.CACHE_KEY, self._json.dumps(new))
        except KvError:
            pass  # console.error('[Comments] Cache update failed') in the seeds

    async def _status_to_cache(
        self, env: Any, msg: dict[str, Any], snapshot: list[dict[str, Any]] | None
    ) -> None:
        if self.fixes.status_patch or snapshot is None:
            await self._change_cache(
                env, {"op": "update", "id": msg["id"], "botParams": msg.get("botParams") or {}}
            )
        else:
            new = [msg if m.get("id") == msg["id"] else m for m in snapshot]
            await self._change_cache(env, {"op": "replace", "messages": new})

    async def _snapshot(self, env: Any) -> list[dict[str, Any]] | None:
        """The cache as the request begins, for designs that rewrite it whole at the end."""
        return None if self.fixes.status_patch else await self._read_cache(env)

    # -- POST /api/comments --------------------------------------------------------------------

    async def post_comment(self, request: Request, env: Any) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "Invalid JSON")
        if not isinstance(body, dict) or not body.get("text"):
            return _error(400, "text is required")
        f = self.fixes
        now = date_now()
        msg = kvcache.new_message(body, now, unique_suffix())
        kv = env.COMMENTS_KV
        completed = None
        if f.crash_safe and not f.atomic_claim and msg.get("replyTo"):
            key, original = await self._load(env, msg["replyTo"])
            if original is not None and (original.get("botParams") or {}).get("replyId"):
                return _error(409, f"message {msg['replyTo']} already answered")
        if f.server_timestamps:
            msg["clientTimestamp"] = msg["timestamp"]
        if f.uses_queue_object:
            status, res = await call(
                env,
                "/post",
                {
                    "message": msg,
                    "stamp": f.server_timestamps,
                    "replyCompletes": f.crash_safe and f.atomic_claim,
                    "kvCache": f.cache_serialized and not f.cache_in_do,
                },
            )
            if status != 200:
                return json_response(res, status, CORS)
            msg = res["message"]
            completed = res.get("completed")
        text = self._json.dumps(msg)
        try:
            await kv.put(self._key(msg), text)
        except KvError as err:
            return _error(500, str(err))
        if not f.cache_in_do and not f.cache_serialized:
            await self._change_cache(env, {"op": "prepend", "message": msg})
            if completed is not None:
                # The reply completed its message in the queue object; the cache learns it too.
                await self._status_to_cache(env, completed, None)
        if f.crash_safe and not f.atomic_claim and msg.get("replyTo"):
            key, original = await self._load(env, msg["replyTo"])
            if key is not None and original is not None:
                bp = {**(original.get("botParams") or {})}
                bp.update(status="complete", processed=True, replyId=msg["id"], completedAt=now)
                original = {**original, "botParams": bp}
                for attempt in range(3):
                    try:
                        await kv.put(key, self._json.dumps(original))
                        break
                    except KvError as err:
                        if err.status != 429 or attempt == 2:
                            return _error(500, str(err))
                        await sleep(1_000)
                await self._status_to_cache(env, original, None)
        return _json_text(text)  # the message as written

    # -- GET /api/comments ---------------------------------------------------------------------

    async def get_comments(self, url: URL, env: Any) -> Response:
        params = url.search_params
        try:
            limit = int(params.get("limit", "50"))
            after = int(params["after"]) if "after" in params else None
        except ValueError:
            return _error(400, "after and limit are integers")
        kind = params.get("type")
        f = self.fixes
        # With an index of every message in the queue object (the fix for reads that must be
        # complete), a cursor read does not depend on the trimmed, eventually consistent cache.
        if after is not None and f.uses_queue_object and (f.cache_in_do or f.pending_index):
            _, res = await call(env, "/since", {"after": after, "limit": limit})
            items = res["messages"]
        else:
            items = await self._read_cache(env)
            if after is not None:
                items = sorted(
                    (m for m in items if m.get("timestamp", 0) > after),
                    key=lambda m: (m.get("timestamp", 0), m.get("id", "")),
                )[:limit]
        if kind:
            items = [m for m in items if m.get("message-type") == kind]
        items = sorted(items, key=lambda m: (m.get("timestamp", 0), m.get("id", "")), reverse=True)
        if after is not None:
            return json_response(items, 200, CORS)
        return json_response({"comments": items[:limit], "hasMore": len(items) > limit}, 200, CORS)

    async def get_comment(self, mid: str, env: Any) -> Response:
        if self.fixes.atomic_claim:
            status, res = await call(env, "/message", {"id": mid})
            return json_response(res.get("message") or res, status, CORS)
        _, msg = await self._load(env, mid)
        if msg is None:
            return _error(404, "Message not found")
        return json_response(msg, 200, CORS)

    # -- PATCH /api/comments/{id} --------------------------------------------------------------

    async def patch_comment(self, mid: str, request: Request, env: Any) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "Invalid JSON")
        fields = (body or {}).get("botParams") or {}
        f = self.fixes
        if f.atomic_claim:
            if not f.id_keys and await self._locate_existing(env, mid) is None:
                return _error(404, "Message not found")
            status, res = await call(env, "/patch", {"id": mid, "botParams": fields})
            return json_response(res.get("message") or res, status, CORS)
        snapshot = await self._snapshot(env)
        key, msg = await self._load(env, mid)
        if key is None or msg is None:
            return _error(404, "Message not found")
        bp = {**(msg.get("botParams") or {}), **fields}
        if bp.get("processed") and bp.get("status") not in ("complete", "failed"):
            bp["status"] = "complete"
        msg = {**msg, "botParams": bp}
        try:
            await env.COMMENTS_KV.put(key, self._json.dumps(msg))
        except KvError as err:
            return _error(500, str(err))
        await self._status_to_cache(env, msg, snapshot)
        return json_response(msg, 200, CORS)

    async def _locate_existing(self, env: Any, mid: str) -> str | None:
        key = await self._locate(env, mid)
        if key is None or self.fixes.patch_lookup != "construct":
            return key
        return key if await env.COMMENTS_KV.get(key) is not None else None

    # -- GET /api/queue/pending ----------------------------------------------------------------

    async def pending(self, url: URL, env: Any) -> Response:
        f = self.fixes
        try:
            limit = int(url.search_params.get("limit", "10"))
        except ValueError:
            return _error(400, "limit is an integer")
        now = date_now()
        statuses = ("pending", "processing") if f.crash_safe else ("pending",)
        cache = await self._read_cache(env)
        candidates = {
            m["id"]: m
            for m in cache
            if m.get("message-type") == "human"
            and (m.get("botParams") or {}).get("status") in statuses
        }
        if f.pending_index:
            _, res = await call(env, "/pending", {"idsOnly": True})
            for mid in res["ids"]:
                candidates.setdefault(mid, {"id": mid})
        found = []
        heal = False
        for mid, cached in candidates.items():
            actual = await self._actual(env, mid)
            if actual is None:
                continue
            bp = actual.get("botParams") or {}
            if "botParams" in cached and bp.get("status") != cached["botParams"].get("status"):
                # SELF-HEALING (seed 000, step 4): the cached status is wrong; fix the copy.
                heal = True
                cache = [actual if c.get("id") == mid else c for c in cache]
            if _open(bp, now, f.crash_safe):
                found.append(actual)
        if heal and not f.pending_read_only:
            if f.cache_in_do:
                await self._change_cache(env, {"op": "replace", "messages": cache})
            else:
                # The handler writes the copy it read back itself (seed 000, step 4: "Write
                # updated cache back, KVw: 1"), whoever else writes the cache.
                try:
                    await env.COMMENTS_KV.put(kvcache.CACHE_KEY, self._json.dumps(cache))
                except KvError:
                    pass
        found.sort(
            key=lambda m: (-(m.get("botParams") or {}).get("priority", 0), m.get("timestamp", 0))
        )
        return json_response({"pending": found[:limit]}, 200, CORS)

    async def _actual(self, env: Any, mid: str) -> dict[str, Any] | None:
        """The message as its owner of record has it: the queue object or the KV key."""
        if self.fixes.atomic_claim:
            status, res = await call(env, "/message", {"id": mid})
            return res["message"] if status == 200 else None
        return (await self._load(env, mid))[1]

    # -- claim / complete / fail ---------------------------------------------------------------

    def _claim_body(self, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": body.get("messageId"),
            "workerId": body.get("workerId"),
            "leaseMs": LEASE_MS if self.fixes.crash_safe else None,
            "checkClaimer": self.fixes.crash_safe,
            "error": body.get("error"),
        }

    async def _transition(
        self,
        request: Request,
        env: Any,
        route: str,
        kv_step: Callable[
            [dict[str, Any], int, dict[str, Any]], tuple[int, str] | dict[str, Any] | None
        ],
        answer: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> Response:
        """The shared shape of claim, complete and fail: decide, write the message, update the
        cache. ``kv_step`` checks and changes ``botParams`` for the KV path (returning ``(status,
        error)`` to refuse); ``answer`` builds the 200 body from the updated message."""
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "Invalid JSON")
        mid = (body or {}).get("messageId")
        if not mid:
            return _error(400, "messageId is required")
        f = self.fixes
        snapshot = await self._snapshot(env)
        if f.atomic_claim:
            status, res = await call(env, route, self._claim_body(body))
            if status != 200:
                return json_response(res, status, CORS)
            _, rec = await call(env, "/message", {"id": mid})
            msg = rec["message"]
            if not f.cache_in_do or not f.status_patch:
                await self._status_to_cache(env, msg, snapshot)
            return json_response(answer({**res, "message": msg}), 200, CORS)
        key, msg = await self._load(env, mid)
        if key is None or msg is None:
            return _error(404, "Message not found")
        outcome = kv_step(dict(msg.get("botParams") or {}), date_now(), body)
        if isinstance(outcome, tuple):
            return json_response({"success": False, "error": outcome[1]}, outcome[0], CORS)
        if outcome is None:  # nothing to change (completing a completed message)
            return json_response(answer({"success": True, "message": msg}), 200, CORS)
        msg = {**msg, "botParams": outcome}
        try:
            await env.COMMENTS_KV.put(key, self._json.dumps(msg))
        except KvError as err:
            return _error(500, str(err))
        await self._status_to_cache(env, msg, snapshot)
        return json_response(answer({"success": True, "message": msg}), 200, CORS)

    async def claim(self, request: Request, env: Any) -> Response:
        def step(
            bp: dict[str, Any], now: int, body: dict[str, Any]
        ) -> tuple[int, str] | dict[str, Any]:
            if not _open(bp, now, self.fixes.crash_safe):
                return 409, f"Message is {bp.get('status')}, not pending"
            bp.update(status="processing", claimedBy=body.get("workerId"), claimedAt=now)
            return bp

        return await self._transition(
            request, env, "/claim", step, lambda r: {"success": True, "message": r["message"]}
        )

    async def complete(self, request: Request, env: Any) -> Response:
        def step(
            bp: dict[str, Any], now: int, body: dict[str, Any]
        ) -> tuple[int, str] | dict[str, Any] | None:
            if bp.get("status") == "complete":
                return None
            if bp.get("status") != "processing":
                return 409, f"Message is {bp.get('status')}, not processing"
            bp.update(status="complete", processed=True, completedAt=now)
            return bp

        return await self._transition(request, env, "/complete", step, lambda r: {"success": True})

    async def fail(self, request: Request, env: Any) -> Response:
        def step(
            bp: dict[str, Any], now: int, body: dict[str, Any]
        ) -> tuple[int, str] | dict[str, Any]:
            if bp.get("status") in ("complete", "failed"):
                return 409, f"Message is already {bp.get('status')}"
            attempts = int(bp.get("attempts") or 0) + 1
            bp.update(
                status="failed" if attempts >= MAX_ATTEMPTS else "pending",
                attempts=attempts,
                claimedBy=None,
            )
            return bp

        def answer(r: dict[str, Any]) -> dict[str, Any]:
            # The queue object's decision when it made one: the message read after it may
            # already show a later claim.
            bp = r["message"].get("botParams") or {}
            return {
                "success": True,
                "status": r.get("status", bp.get("status")),
                "attempts": r.get("attempts", bp.get("attempts")),
            }

        return await self._transition(request, env, "/fail", step, answer)
