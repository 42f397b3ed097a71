"""The known bugs: each id of DESIGN.md's catalog with its seed, its target and its invariants.

A target is a design with exactly that bug: for the chat protocol, the seeds' worker
(:class:`CommentsWorker`) with every fix on but the one(s) the bug is about, so nothing else
can be what a search finds; ``sound`` is the Durable Object design, which must pass everything.
For the ``jobs`` protocol, :class:`~qmodel.protocols.jobs.designs.JobsWorker` with one fix off
(``JOBS_*``) and with every fix on (``jobs-sound``). An entry names its design by a factory, so
an entry may be of any protocol.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

import attrs

from qmodel.errors import QmodelError
from qmodel.workers import CommentsWorker, Fixes, SoundWorker
from qmodel.workers.queues_chat import PullBot, QueuesChatWorker, QueuesPushWorker

__all__ = ["CATALOG", "CatalogEntry", "UnknownCatalogId", "entry", "ids"]

#: A protocol name (see :mod:`qmodel.protocols`).
Protocol = str


class UnknownCatalogId(QmodelError, KeyError):
    """No catalog entry has this id; the message lists the known ones."""

    def __init__(self, wanted: str, known: list[str]) -> None:
        close = difflib.get_close_matches(wanted.upper(), known, n=3)
        hint = f" Closest matches: {', '.join(close)}." if close else ""
        super().__init__(f"unknown catalog id {wanted!r}.{hint} Known ids: {', '.join(known)}")
        self.wanted = wanted
        self.known = known

    def __str__(self) -> str:
        return str(self.args[0])


@attrs.frozen(kw_only=True)
class CatalogEntry:
    """One known bug."""

    id: str
    #: The seed it comes from and where (e.g. ``"seed 000, A"``).
    source: str
    #: What happens, in one sentence.
    summary: str
    #: The chat design's switches (``None`` for the sound design, and for a design of another
    #: protocol, which names its factory in ``design``).
    fixes: Fixes | None
    #: The invariant ids that may catch it.
    invariants: tuple[str, ...]
    #: Which era of PROTOCOL.md the actors speak to show it.
    protocol: Protocol
    #: Whether it needs production KV (eventual consistency, short pages, write limits) to
    #: happen; on the ``local`` KV profile such a bug cannot occur.
    needs_production_kv: bool
    #: Makes a fresh instance of the design; ``None``: the chat design ``fixes`` names.
    design: Callable[[], Any] | None = None

    def target(self) -> Any:
        """A fresh instance of the design under test."""
        if self.design is not None:
            return self.design()
        return SoundWorker() if self.fixes is None else CommentsWorker(self.fixes)

    @property
    def factory(self) -> Callable[[], Any]:
        return self.target


def _with(**bugs: Any) -> Fixes:
    return attrs.evolve(Fixes.all(), **bugs)


def _jobs(**bugs: bool) -> Callable[[], Any]:
    """A factory of the jobs worker with the fixes ``bugs`` turns off (none: the sound one)."""

    def make() -> Any:
        from qmodel.protocols.jobs.designs import JobsFixes, JobsWorker

        return JobsWorker(JobsFixes(**bugs))

    return make


CATALOG: dict[str, CatalogEntry] = {
    e.id: e
    for e in (
        CatalogEntry(
            id="TS_KEY_404",
            source="seed 004",
            summary="PATCH rebuilds the key from the timestamp inside the id; the client's "
            "timestamp differs by 1-2 ms; 404; the bot answers again and again",
            fixes=_with(id_keys=False, patch_lookup="construct"),
            invariants=("addressable", "one-reply"),
            protocol="patch",
            needs_production_kv=False,
        ),
        CatalogEntry(
            id="LIST_FIRST_PAGE_404",
            source="seed 004 (its fix)",
            summary="PATCH looks the key up in one list() page; once the key is not on the "
            "first page: 404",
            fixes=_with(id_keys=False, patch_lookup="first_page"),
            invariants=("addressable", "one-reply"),
            protocol="patch",
            needs_production_kv=True,
        ),
        CatalogEntry(
            id="CACHE_LOST_UPDATE",
            source="seed 000, A",
            summary="two POSTs read-modify-write recent:comments; one message never reaches "
            "the cache",
            fixes=_with(cache_in_do=False, cache_serialized=False),
            invariants=("cache-coherent", "poll-delivery", "platform"),
            protocol="queue",
            needs_production_kv=False,
        ),
        CatalogEntry(
            id="STATUS_WRITE_CLOBBERS_CACHE",
            source="seed 000, steps 5 and 8",
            summary="claim/complete rewrite the whole cache from a snapshot and erase a message "
            "posted in between",
            fixes=_with(status_patch=False),
            invariants=("cache-coherent",),
            protocol="queue",
            needs_production_kv=False,
        ),
        CatalogEntry(
            id="GHOST_PENDING",
            source="seed 000, B",
            summary="the cache says pending, the key says complete; the pending endpoint "
            "re-verifies and rewrites the cache on idle polls, from a stale copy",
            fixes=_with(pending_read_only=False, cache_in_do=False),
            # The rewrite often meets the 1 write/s limit and is dropped: seed 000's "cache write
            # in step 4 is failing", which keeps the ghost alive.
            invariants=("cost", "cache-coherent", "platform"),
            protocol="queue",
            needs_production_kv=False,
        ),
        CatalogEntry(
            id="CLAIM_NOT_ATOMIC",
            source="seed 000, C",
            summary="get, check pending, put: two bots both win the claim; two replies",
            fixes=_with(atomic_claim=False),
            # A claim race within a second also meets the 1 write/s limit: a 429 answered 500.
            invariants=("single-claim", "one-reply", "platform"),
            protocol="queue",
            needs_production_kv=False,
        ),
        CatalogEntry(
            id="CRASH_AFTER_REPLY",
            source="seed 000, steps 7-8",
            summary="the bot dies between posting the reply and completing; the message stays "
            "processing forever",
            fixes=_with(crash_safe=False),
            invariants=("pending-visible", "one-reply", "status-fsm"),
            protocol="queue",
            needs_production_kv=False,
        ),
        CatalogEntry(
            id="CACHE_TRIM_DROPS_PENDING",
            source='seed 000 ("fall back to scanning KV: NOT IMPLEMENTED")',
            summary="a burst pushes a pending message out of the last-200 cache; the bot never "
            "sees it",
            fixes=_with(pending_index=False),
            invariants=("pending-visible", "ack-durable", "one-reply"),
            protocol="queue",
            needs_production_kv=False,
        ),
        CatalogEntry(
            id="STALE_CACHE_RMW",
            source="seed 000, B theory 3",
            summary="the cache's writer reads a stale copy of recent:comments and writes it "
            "back, erasing newer messages",
            fixes=_with(cache_in_do=False),
            invariants=("cache-coherent", "poll-delivery"),
            protocol="queue",
            needs_production_kv=True,
        ),
        CatalogEntry(
            id="POLL_MISSES_MESSAGE",
            source="seed 000, D",
            summary="the frontend's after cursor plus client timestamps skip a message that "
            "arrives late for good",
            fixes=_with(server_timestamps=False),
            invariants=("poll-delivery",),
            protocol="queue",
            needs_production_kv=False,
        ),
        # -- Cloudflare Queues (issue 12): the chat with its work on a queue ---------------------
        CatalogEntry(
            id="QUEUES_REPLY_NOT_IDEMPOTENT",
            source="issue 12 (Queues pull consumer)",
            summary="every reply is stored; a message redelivered after a lease ran out, a "
            "crash before the ack or a duplicate is answered twice",
            fixes=None,
            invariants=("one-reply",),
            protocol="queues",
            needs_production_kv=False,
            design=lambda: QueuesChatWorker(idempotent_reply=False),
        ),
        CatalogEntry(
            id="QUEUES_ACK_BEFORE_REPLY",
            source="issue 12 (Queues pull consumer)",
            summary="the bot acks a message as soon as it pulls it; a crash or a failed "
            "generation before the reply is stored loses the message",
            fixes=None,
            invariants=("pending-visible", "one-reply"),
            protocol="queues",
            needs_production_kv=False,
            design=lambda: QueuesChatWorker(pull_bot=PullBot(ack_before_reply=True)),
        ),
        CatalogEntry(
            id="QUEUES_PUSH_REPLY_NOT_IDEMPOTENT",
            source="issue 12 (Queues push consumer)",
            summary="the worker's queue() handler stores every reply; a duplicate delivery is "
            "answered twice",
            fixes=None,
            invariants=("one-reply",),
            protocol="queues-push",
            needs_production_kv=False,
            design=lambda: QueuesPushWorker(idempotent_reply=False),
        ),
        CatalogEntry(
            id="QUEUES_SOUND",
            source="issue 12 (Queues pull consumer)",
            summary="idempotent replies, ack after the reply is stored: all invariants hold",
            fixes=None,
            invariants=(),
            protocol="queues",
            needs_production_kv=False,
            design=QueuesChatWorker,
        ),
        CatalogEntry(
            id="QUEUES_PUSH_SOUND",
            source="issue 12 (Queues push consumer)",
            summary="the worker's queue() handler replies idempotently and acks each message "
            "after its reply: all invariants hold",
            fixes=None,
            invariants=(),
            protocol="queues-push",
            needs_production_kv=False,
            design=QueuesPushWorker,
        ),
        CatalogEntry(
            id="sound",
            source="the Durable Object design",
            summary="all invariants hold",
            fixes=None,
            invariants=(),
            protocol="queue",
            needs_production_kv=False,
        ),
        CatalogEntry(
            id="JOBS_NO_FENCING",
            source="jobs protocol: a lease without fencing tokens",
            summary="ack checks that the job is leased, not whose lease it is: a consumer whose "
            "lease ran out acks the job another consumer now holds",
            fixes=None,
            design=_jobs(fencing=False),
            invariants=("stale-ack",),
            protocol="jobs",
            needs_production_kv=False,
        ),
        CatalogEntry(
            id="JOBS_STALE_LIST",
            source="jobs protocol: discovery by list()",
            summary="the lease route finds a free job in a list() page of a KV mirror (up to "
            "60 s stale, and behind any lease in flight) and takes the page's word: a leased or "
            "acked job is leased again",
            fixes=None,
            design=_jobs(object_discovery=False),
            invariants=("single-lease", "no-double-work"),
            protocol="jobs",
            # A page is stale while its list view is cached (§1.8), and also while the mirror
            # has not caught up with a lease in flight: local KV shows it too.
            needs_production_kv=False,
        ),
        CatalogEntry(
            id="JOBS_LEASE_RACE",
            source="jobs protocol: a lease check and set split by an await on KV",
            summary="the object checks a job is free, awaits a KV audit write (the input gate "
            "opens), then stores the lease: two consumers lease the same job",
            fixes=None,
            design=_jobs(atomic_lease=False),
            invariants=("single-lease", "no-double-work"),
            protocol="jobs",
            needs_production_kv=False,
        ),
        CatalogEntry(
            id="JOBS_IDEMPOTENCY_STALE",
            source="jobs protocol: an idempotency key in KV",
            summary="enqueue reads the idempotency key from KV and creates a job when it reads "
            "nothing; a retry that does not see the first attempt's write makes a second job",
            fixes=None,
            design=_jobs(object_idempotency=False),
            invariants=("no-double-work",),
            protocol="jobs",
            needs_production_kv=False,
        ),
        CatalogEntry(
            id="jobs-sound",
            source="the jobs protocol's Durable Object design",
            summary="all invariants hold",
            fixes=None,
            design=_jobs(),
            invariants=(),
            protocol="jobs",
            needs_production_kv=False,
        ),
    )
}


def ids() -> list[str]:
    """Every catalog id, in the table's order."""
    return list(CATALOG)


def entry(catalog_id: str) -> CatalogEntry:
    """The entry for ``catalog_id``; an unknown id raises :class:`UnknownCatalogId` listing the
    known ones."""
    try:
        return CATALOG[catalog_id]
    except KeyError:
        raise UnknownCatalogId(catalog_id, ids()) from None
