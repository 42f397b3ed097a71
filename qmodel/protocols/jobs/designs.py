"""The bundled designs of the ``jobs`` protocol: one Workers-style worker with a switch per fix.

:class:`JobsWorker` with every fix on (:class:`JobsFixes`, the default) is the sound design:
the queue lives in one Durable Object (:class:`JobQueue`), the single writer, and every route
that reads or changes a job is one request to it, decided with only storage awaits in between,
so the input gate makes it atomic (reference §5.2, §5.8 "Correct when"). Each fix turned off
is one known bug:

* ``fencing=False``: ack and nack check that the job is leased, not that the token is the
  current lease's, so a consumer whose lease ran out acks work another consumer holds;
* ``object_discovery=False``: the lease route finds a free job by ``list()`` of a KV mirror of
  the jobs, whose pages may be up to 60 s stale (reference §1.8), and the object takes the
  page's word that the job is free;
* ``atomic_lease=False``: the object checks that a job is free, then awaits a KV write (an
  audit record of the lease), then stores the lease; the KV await opens the input gate
  (reference §5.2, pitfall 1), so two leases interleave and both win;
* ``object_idempotency=False``: the enqueue route keeps the idempotency key in KV (``idem:
  {key}``), reads it, and creates a job when the read finds nothing; a retry whose read does
  not see the first attempt's write yet (it has not landed, or a location still caches the
  miss: reference §1.2-§1.4) creates a second job.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from qmodel.sim.http import URL, Request, Response, json_response
from qmodel.sim.kv import KvError
from qmodel.sim.scheduler import date_now, sleep, unique_suffix

__all__ = ["MAX_ATTEMPTS", "JobQueue", "JobsFixes", "JobsWorker"]

#: Leases a job gets; a nack of the last, or the expiry of the last, dead-letters it.
MAX_ATTEMPTS = 3
#: The shortest and longest visibility timeouts the queue accepts (ms).
VISIBILITY_RANGE_MS = (1_000, 12 * 3_600_000)
#: §2.2: one write per key per second; a write refused with 429 is tried again this much later.
KV_RETRY_MS = 1_000
KV_TRIES = 5


@attrs.frozen(kw_only=True)
class JobsFixes:
    """The switches of :class:`JobsWorker`; every fix on by default (the sound design)."""

    fencing: bool = True
    object_discovery: bool = True
    atomic_lease: bool = True
    object_idempotency: bool = True

    def describe(self) -> str:
        """``"all fixes on"``, or the fixes that are off (``"no fencing"``)."""
        off = [
            f"no {f.name.replace('_', ' ')}"
            for f in attrs.fields(JobsFixes)
            if not getattr(self, f.name)
        ]
        return ", ".join(off) if off else "all fixes on"


def _effective(job: dict[str, Any], now: int) -> str:
    """The job's state as a lease sees it: a lease that ran out is ``queued`` again, or ``dead``
    after the last attempt."""
    state = job["state"]
    if state == "leased" and now >= job["until"]:
        return "dead" if job["attempts"] >= MAX_ATTEMPTS else "queued"
    return state


async def _kv_put(kv: Any, key: str, value: str, **options: Any) -> None:
    """Write ``key``, trying again a second later while the write is refused with 429 (§2.2:
    at most one write per key per second); other errors propagate."""
    for attempt in range(KV_TRIES):
        try:
            await kv.put(key, value, **options)
            return
        except KvError as err:
            if err.status != 429 or attempt == KV_TRIES - 1:
                raise
            await sleep(KV_RETRY_MS)


class JobQueue:
    """The queue's single writer, a Durable Object class. Storage: ``job:{id}`` (the job),
    ``key:{key}`` (the id enqueued under an idempotency key)."""

    def __init__(self, state: Any, env: Any) -> None:
        self.storage = state.storage
        self.env = env

    async def fetch(self, request: Request) -> Response:
        """Serve one route of the object: a POST with a JSON body, answered with JSON."""
        route = URL(request.url).pathname
        body = await request.json() if request.body else {}
        handler = {
            "/enqueue": self.enqueue,
            "/lease": self.lease,
            "/take": self.take,
            "/release": self.release,
            "/status": self.status,
        }.get(route)
        if handler is None:
            return json_response({"error": f"no route {route}"}, 404)
        status, payload = await handler(body)
        return json_response(payload, status)

    async def enqueue(self, body: dict[str, Any]) -> tuple[int, Any]:
        """A new job for ``key``; with ``idempotent``, the job already enqueued under it."""
        key = body["key"]
        if body.get("idempotent"):
            known = await self.storage.get(f"key:{key}")
            if known is not None:
                return 200, {"id": known}
        job_id = f"job-{unique_suffix()}"
        job = {
            "id": job_id,
            "key": key,
            "payload": body.get("payload"),
            "state": "queued",
            "attempts": 0,
            "token": None,
            "until": 0,
        }
        await self.storage.put({f"job:{job_id}": job, f"key:{key}": job_id})
        return 200, {"id": job_id, "job": job}

    def _grant(self, job: dict[str, Any], body: dict[str, Any], now: int) -> dict[str, Any]:
        """The job leased to ``body["worker"]`` from ``now``, under a fresh token."""
        attempt = job["attempts"] + 1
        return {
            **job,
            "state": "leased",
            "attempts": attempt,
            "token": f"{job['id']}.{attempt}.{unique_suffix()}",
            "until": now + body["visibility_ms"],
            "worker": body.get("worker"),
        }

    def _leased(self, job: dict[str, Any]) -> tuple[int, Any]:
        view = {"id": job["id"], "payload": job["payload"], "attempt": job["attempts"]}
        return 200, {"job": view, "lease": job["token"], "record": job}

    async def lease(self, body: dict[str, Any]) -> tuple[int, Any]:
        """Lease the oldest free job (queued, or leased past its timeout) for ``visibility_ms``;
        a job whose last lease ran out is dead-lettered on the way."""
        now = date_now()
        jobs = await self.storage.list(prefix="job:")
        for key, job in jobs.items():
            state = _effective(job, now)
            if state == "dead" and job["state"] != "dead":
                await self.storage.put(key, {**job, "state": "dead", "token": None})
                continue
            if state != "queued":
                continue
            granted = self._grant(job, body, now)
            if body.get("audit") == "between":
                # The bug of JOBS_LEASE_RACE: the KV await opens the input gate (§5.2).
                await self._audit(granted)
                await self.storage.put(key, granted)
            else:
                await self.storage.put(key, granted)
                if body.get("audit") == "after":
                    await self._audit(granted)
            return self._leased(granted)
        return 200, {"job": None}

    async def _audit(self, job: dict[str, Any]) -> None:
        """Record who holds the lease in KV for dashboards; best effort (a refused write is
        skipped: nothing reads it back to decide)."""
        try:
            await self.env.JOBS_KV.put(f"lease:{job['id']}", str(job.get("worker")))
        except KvError:
            pass

    async def take(self, body: dict[str, Any]) -> tuple[int, Any]:
        """Lease job ``id``, which the caller found free in a listing (the page's word is
        taken: the bug of JOBS_STALE_LIST)."""
        job = await self.storage.get(f"job:{body['id']}")
        if job is None:
            return 200, {"job": None}
        granted = self._grant(job, body, date_now())
        await self.storage.put(f"job:{job['id']}", granted)
        return self._leased(granted)

    async def release(self, body: dict[str, Any]) -> tuple[int, Any]:
        """Ack or nack job ``id`` with lease ``token``: 404 for an unknown job, 409 when the job
        is not leased or (with ``fenced``) the token is not its current lease's."""
        job = await self.storage.get(f"job:{body['id']}")
        if job is None:
            return 404, {"error": f"no job {body['id']}"}
        if job["state"] != "leased":
            return 409, {"error": f"job {job['id']} is {job['state']}, not leased"}
        # A lease that ran out but was not taken over still acks: no one else holds the job, so
        # the work is done once either way.
        if body.get("fenced") and job["token"] != body.get("token"):
            return 409, {"error": f"lease {body.get('token')} of job {job['id']} is stale"}
        if body["op"] == "ack":
            state = "acked"
        else:
            state = "dead" if job["attempts"] >= MAX_ATTEMPTS else "queued"
        job = {**job, "state": state, "token": None}
        await self.storage.put(f"job:{job['id']}", job)
        return 200, {"id": job["id"], "state": state, "record": job}

    async def status(self, body: dict[str, Any]) -> tuple[int, Any]:
        """``{id, state, attempts}`` of job ``id`` (a lease that ran out reads as such)."""
        job = await self.storage.get(f"job:{body['id']}")
        if job is None:
            return 404, {"error": f"no job {body['id']}"}
        state = _effective(job, date_now())
        return 200, {"id": job["id"], "state": state, "attempts": job["attempts"]}


async def _call(env: Any, route: str, body: dict[str, Any]) -> tuple[int, Any]:
    stub = env.QUEUE.get(env.QUEUE.id_from_name("jobs"))
    response = await stub.fetch(Request.make("POST", route, json_body=body))
    return response.status, response.json_body()


def _public(res: Any) -> Any:
    """An object's answer without its internal ``record``."""
    return {k: v for k, v in res.items() if k != "record"} if isinstance(res, dict) else res


class JobsWorker:
    """The jobs protocol's worker. Bindings: ``env.JOBS_KV`` and ``env.QUEUE`` (JobQueue)."""

    durable_objects = {"QUEUE": JobQueue}
    kv_bindings = ("JOBS_KV",)

    def __init__(self, fixes: JobsFixes | None = None) -> None:
        self.fixes = fixes if fixes is not None else JobsFixes()

    def __repr__(self) -> str:
        return f"JobsWorker({self.fixes.describe()})"

    async def fetch(self, request: Request, env: Any, ctx: Any) -> Response:
        """Route a request of the jobs protocol; 400 for a body that is not a JSON object, 404
        for a route the protocol does not have."""
        url = URL(request.url)
        path, method = url.pathname, request.method
        body: Any = {}
        if request.body:
            try:
                body = await request.json()
            except ValueError:
                return json_response({"error": "the body is not JSON"}, 400)
        if not isinstance(body, dict):
            return json_response({"error": "the body must be a JSON object"}, 400)
        if path == "/jobs" and method == "POST":
            return await self.enqueue(body, env)
        if path == "/jobs/lease" and method == "POST":
            return await self.lease(body, env)
        parts = path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "jobs" and parts[2] in ("ack", "nack"):
            if method != "POST":
                return json_response({"error": f"{parts[2]} is POST"}, 405)
            return await self.release(parts[1], parts[2], body, env)
        if len(parts) == 2 and parts[0] == "jobs" and method == "GET":
            status, res = await _call(env, "/status", {"id": parts[1]})
            return json_response(res, status)
        return json_response({"error": f"no route {method} {path}"}, 404)

    async def enqueue(self, body: dict[str, Any], env: Any) -> Response:
        """``POST /jobs``: the job enqueued under ``key`` (a new one, or the one it already
        names); 400 without a key."""
        key = body.get("key")
        if not isinstance(key, str) or not key:
            return json_response({"error": "key (a non-empty string) is required"}, 400)
        payload = body.get("payload")
        if self.fixes.object_idempotency:
            status, res = await _call(
                env, "/enqueue", {"key": key, "payload": payload, "idempotent": True}
            )
        else:
            known = await env.JOBS_KV.get(f"idem:{key}")
            if known is not None:
                return json_response({"id": known})
            status, res = await _call(env, "/enqueue", {"key": key, "payload": payload})
            if status == 200:
                # §2.3: an expirationTtl of at least 60 s; a day is what a retry window needs.
                await _kv_put(env.JOBS_KV, f"idem:{key}", res["id"], expiration_ttl=86_400)
        if status == 200 and "job" in res and not self.fixes.object_discovery:
            # A new job joins the mirror; a retry answered with the known id changes nothing.
            await self._mirror(env, res["job"])
        return json_response({"id": res["id"]} if status == 200 else res, status)

    async def lease(self, body: dict[str, Any], env: Any) -> Response:
        """``POST /jobs/lease``: a job and its lease token, or ``{"job": null}``; 400 without a
        worker or with a visibility timeout out of range."""
        worker = body.get("worker")
        visibility = body.get("visibility_ms")
        lo, hi = VISIBILITY_RANGE_MS
        if (
            not isinstance(worker, str)
            or not isinstance(visibility, int)
            or not (lo <= visibility <= hi)
        ):
            return json_response(
                {"error": f"worker (a string) and visibility_ms ({lo}..{hi}) are required"}, 400
            )
        ask = {"worker": worker, "visibility_ms": visibility}
        if self.fixes.object_discovery:
            audit = "after" if self.fixes.atomic_lease else "between"
            status, res = await _call(env, "/lease", {**ask, "audit": audit})
        else:
            found = await self._first_free(env)
            if found is None:
                return json_response({"job": None})
            status, res = await _call(env, "/take", {**ask, "id": found})
            if status == 200 and res.get("record"):
                await self._mirror(env, res["record"])
        return json_response(_public(res), status)

    async def release(self, job_id: str, op: str, body: dict[str, Any], env: Any) -> Response:
        """``POST /jobs/{id}/ack|nack``: the job's new state; 400 without a token, 404 for an
        unknown job, 409 for a job not leased or (with fencing) a stale token."""
        token = body.get("lease")
        if not isinstance(token, str):
            return json_response({"error": "lease (the token the lease gave) is required"}, 400)
        status, res = await _call(
            env,
            "/release",
            {"id": job_id, "token": token, "op": op, "fenced": self.fixes.fencing},
        )
        if status == 200 and not self.fixes.object_discovery:
            await self._mirror(env, res["record"])
        return json_response(_public(res), status)

    async def _mirror(self, env: Any, job: dict[str, Any]) -> None:
        """Copy a job's state into the KV mirror the listing reads (metadata: state, lease end,
        attempts)."""
        meta = {"state": job["state"], "until": job["until"], "attempts": job["attempts"]}
        await _kv_put(env.JOBS_KV, f"job:{job['id']}", json.dumps(meta), metadata=meta)

    async def _first_free(self, env: Any) -> str | None:
        """The first job the mirror's pages show as free (queued, or leased past its end with
        attempts left), paging on until the listing is complete."""
        now = date_now()
        cursor = None
        for _ in range(100):
            page = await env.JOBS_KV.list(prefix="job:", cursor=cursor)
            for k in page.keys:
                meta = k.metadata or {}
                state = meta.get("state")
                expired = state == "leased" and now >= int(meta.get("until") or 0)
                if state == "queued" or (expired and int(meta.get("attempts") or 0) < MAX_ATTEMPTS):
                    return k.name[len("job:") :]
            if page.list_complete:
                return None
            cursor = page.cursor
        return None
