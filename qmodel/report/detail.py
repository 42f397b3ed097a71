"""The detail a report shows, collected by replaying a trace with recorders switched on.

The machine's runs keep only what the invariants need (the exchanges and their KV counters). A
report wants more: each KV operation with the value read or written, where the read came from
(a copy cached at that location N seconds earlier, a cached "not found"), short list pages,
429s, killed requests. :func:`collect` replays the trace strictly with the KV stores'
``tap`` set (see :class:`~qmodel.sim.kv.KvStore`) and a world that remembers which invocation
served each exchange, so none of this costs anything during a search.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import attrs

from qmodel.check import Violation
from qmodel.history import Exchange
from qmodel.replay import Outcome, replay_strict
from qmodel.sim.clock import DEFAULT_START_MS
from qmodel.sim.kv import KvError, ListResult
from qmodel.trace import Trace
from qmodel.world import World

__all__ = ["Detail", "KvOp", "KvTap", "Snapshot", "collect", "summarize"]


@attrs.frozen(kw_only=True)
class KvOp:
    """One KV operation a worker made, as the report shows it."""

    #: Position among every KV operation of the run.
    order: int
    #: The invocation that made it (``0`` for none known).
    iid: int
    location: str
    node: int
    at_ms: int
    #: ``get``, ``getWithMetadata``, ``put``, ``delete`` or ``list``.
    verb: str
    #: The key (the prefix for ``list``).
    key: str
    #: The value written (``put``).
    written: str | None = None
    #: What came back, summarized (``get``, ``list``), or the error.
    result: str = ""
    status: int = 200
    notes: tuple[str, ...] = ()
    #: Where the worker's code made the call (``src/index.ts:42:7``), when the lane knows it.
    site: str | None = None

    def describe(self) -> str:
        if self.verb in ("put",):
            text = f"put {self.key} = {summarize(self.written)}"
        elif self.verb == "delete":
            text = f"delete {self.key}"
        elif self.verb == "list":
            text = f"list {self.key!r} → {self.result}"
        else:
            text = f"{self.verb} {self.key} → {self.result}"
        if self.status != 200:
            text += f" → {self.status}"
        if self.site:
            text += f" ({self.site})"
        return text


@attrs.frozen(kw_only=True)
class Snapshot:
    """The world when the reported violation was caught: KV's central store, and the spec."""

    kv: dict[str, str]
    spec: Any
    now_ms: int
    invariant: str = ""


@attrs.define(eq=False)
class Detail:
    """Everything a report needs about one replayed counterexample."""

    trace: Trace
    outcome: Outcome
    world: World
    #: Every KV operation in the order performed.
    ops: list[KvOp]
    #: The exchange ``seq`` -> the invocation that served it.
    exchange_iid: dict[int, int]
    #: Log line index -> the exchange ``seq`` it reports (other lines are the machine's verbs).
    log_exchange: dict[int, int]
    #: In order: ``("log", index)`` for each log line, ``("kv", op)`` for each KV operation.
    events: list[tuple[str, Any]]
    snapshot: Snapshot | None
    start_ms: int

    @property
    def violation(self) -> Violation:
        assert self.outcome.violation is not None
        return self.outcome.violation

    def exchange(self, seq: int) -> Exchange:
        return self.world.history.exchanges[seq - 1]

    def ops_of(self, seq: int) -> list[KvOp]:
        iid = self.exchange_iid.get(seq, 0)
        return [op for op in self.ops if iid and op.iid == iid]


class _EventLog(list):  # type: ignore[type-arg]
    """The world's log, noting each line's place among the KV operations."""

    def __init__(self, events: list[tuple[str, Any]]) -> None:
        super().__init__()
        self.events = events

    def append(self, line: Any) -> None:
        super().append(line)
        self.events.append(("log", len(self) - 1))


@attrs.define(eq=False)
class _RecordingWorld(World):
    """A world that remembers which invocation served each exchange and which log line
    reports it."""

    exchange_iid: dict[int, int] = attrs.field(factory=dict)
    log_exchange: dict[int, int] = attrs.field(factory=dict)

    def _record(  # type: ignore[override]
        self,
        actor: Any,
        kind: str,
        request: Any,
        body: Any,
        sent: int,
        status: int | None,
        answer: Any,
        mid: str | None,
        inv: Any,
        extra_errors: tuple[str, ...],
        *,
        text: str | None = None,
    ) -> None:
        super()._record(
            actor, kind, request, body, sent, status, answer, mid, inv, extra_errors, text=text
        )
        seq = len(self.history)
        self.exchange_iid[seq] = inv.iid if inv is not None else 0
        self.log_exchange[len(self.log) - 1] = seq


def collect(trace: Trace) -> Detail:
    """Replay ``trace`` strictly with the recorders on; raises what
    :func:`~qmodel.replay.replay_strict` raises when the run differs from the record."""
    ops: list[KvOp] = []
    events: list[tuple[str, Any]] = []
    snap: list[Snapshot] = []

    def on_world(world: World) -> None:
        world.log = _EventLog(events)
        for store in world.platform.kv.values():
            store.tap = KvTap(store, ops, events)

    def on_violation(world: World, violation: Violation, at: str) -> None:
        kv = world.platform.kv_store.snapshot().values
        now = world.platform.clock.now_ms
        snap.append(
            Snapshot(kv=dict(kv), spec=world.spec, now_ms=now, invariant=violation.invariant)
        )

    # The caller vouches for the trace (it comes from a search, or from a replay of a target
    # and protocol the user named), so its own target and protocol are the ones run.
    outcome = replay_strict(
        trace,
        target=trace.target,
        protocol=str(trace.config.get("protocol", "")),
        world_type=_RecordingWorld,
        on_world=on_world,
        on_violation=on_violation,
    )
    world = outcome.world
    assert isinstance(world, _RecordingWorld)
    for store in world.platform.kv.values():
        store.tap = None
    return Detail(
        trace=trace,
        outcome=outcome,
        world=world,
        ops=ops,
        exchange_iid=dict(world.exchange_iid),
        log_exchange=dict(world.log_exchange),
        events=events,
        # The state when the reported invariant broke first.
        snapshot=next((s for s in snap if s.invariant == outcome.violation.invariant), None)
        if outcome.violation is not None
        else None,
        start_ms=DEFAULT_START_MS,
    )


class KvTap:
    """The KV stores' tap during a report's replay: one :class:`KvOp` per call, with notes on
    what made it surprising (§1.3-§1.8, §2.2 of ``docs/reference/workers-kv-semantics.md``)."""

    def __init__(self, store: Any, ops: list[KvOp], events: list[tuple[str, Any]]) -> None:
        self.store = store
        self.ops = ops
        self.events = events

    def __call__(self, op: Any, inv: Any, result: Any, error: BaseException | None) -> None:
        store = self.store
        where = (inv.location, inv.node)
        now = store.clock.now_ms
        verb = op.verb
        notes: list[str] = []
        written: str | None = None
        if verb == "put":
            written = op.value if isinstance(op.value, str) else str(op.value)
        status = 200
        text = ""
        if isinstance(error, KvError):
            status = error.status
            text = str(error)
            if status == 429:
                last = store.last_write_ms(op.key)
                ago = (
                    f" {now - last} ms earlier"
                    if last is not None
                    else " less than a second earlier"
                )
                notes.append(
                    f"429 Too Many Requests: {op.key} was written{ago} (1 write per second per key)"
                )
            else:
                notes.append(text)
        elif verb in ("get", "getWithMetadata"):
            value = result.value if verb == "getWithMetadata" and result is not None else result
            text = summarize(value)
            notes += _read_notes(store, where, op.key, now)
        elif verb in ("get[]", "getWithMetadata[]") and isinstance(result, dict):
            values = (v["value"] if verb == "getWithMetadata[]" else v for v in result.values())
            text = "; ".join(
                f"{k}: {summarize(v if v is None or isinstance(v, str) else json.dumps(v))}"
                for k, v in zip(result, values, strict=True)
            )
            for key in op.keys:
                notes += _read_notes(store, where, key, now)
        elif verb in ("put", "delete"):
            notes += _ryw_notes(store, where, op.key)
        elif verb == "list" and isinstance(result, ListResult):
            text = _list_text(result)
            notes += _list_notes(store, where, op, result, now)
        kv_op = KvOp(
            order=len(self.ops) + 1,
            iid=inv.iid,
            location=inv.location,
            node=inv.node or 0,
            at_ms=now,
            verb=verb,
            key=", ".join(op.keys) if verb.endswith("[]") else op.key,
            written=written,
            result=text,
            status=status,
            notes=tuple(notes),
            site=getattr(op, "site", None),
        )
        self.ops.append(kv_op)
        self.events.append(("kv", kv_op))


def _read_notes(store: Any, where: tuple[str, int], key: str, now: int) -> list[str]:
    if not store.config.edge_caches:
        return []
    cached = store.cache_entry(where, key)
    if cached is None:
        return []
    central = store.central_entry(key)
    served = cached.entry
    same = (served is None and central is None) or (
        served is not None and central is not None and served.version == central.version
    )
    if same:
        return []
    where_text = f"{where[0]} (cache node {where[1]})"
    ago = _ago(now - cached.cached_ms)
    if served is None:
        return [
            f"cached miss: {where_text} cached 'not found' {ago}; the key was written "
            f"{_ago(now - central.written_ms)}"
        ]
    if central is None:
        return [f"stale read: {where_text} returned a copy cached {ago}; the key is deleted since"]
    return [
        f"stale read: {where_text} returned a copy cached {ago}; the store has a newer value "
        f"written {_ago(now - central.written_ms)}"
    ]


def _ryw_notes(store: Any, where: tuple[str, int], key: str) -> list[str]:
    if not store.config.edge_caches:
        return []
    cached = store.cache_entry(where, key)
    central = store.central_entry(key)
    if cached is None:
        return []
    mine = central.version if central is not None else None
    held = cached.entry.version if cached.entry is not None else None
    if mine != held:
        return [
            f"read-your-own-write failed: {where[0]} keeps its older copy of {key} for up to "
            f"{store.config.default_cache_ttl_s} s"
        ]
    return []


def _list_text(result: ListResult) -> str:
    n = len(result.keys)
    more = "" if result.list_complete else ", more to follow"
    return f"{n} key{'s' if n != 1 else ''}{more}"


def _list_notes(
    store: Any, where: tuple[str, int], op: Any, result: ListResult, now: int
) -> list[str]:
    notes = []
    if not result.list_complete and len(result.keys) < op.limit:
        which = "empty page" if not result.keys else f"short page ({len(result.keys)} keys)"
        notes.append(
            f"{which} while list_complete is false: a caller that reads one page misses keys"
        )
    cfg = store.config
    if cfg.edge_caches and cfg.list_cache:
        hit = store.list_cache_entry(where, op.key, op.cursor, op.limit)
        if hit is not None and hit[0] is result:
            cached_ms = hit[1] - cfg.default_cache_ttl_s * 1000
            if cached_ms < now:
                listed = {k.name for k in result.keys}
                stored = store.live_keys(op.key)
                missing = len(stored - listed) if result.list_complete else 0
                gone = len(listed - stored)
                detail = []
                if missing:
                    detail.append(f"{missing} stored key{'s' if missing != 1 else ''} not in it")
                if gone:
                    detail.append(f"{gone} deleted key{'s' if gone != 1 else ''} still in it")
                if detail:
                    notes.append(
                        f"stale list: {where[0]} served a page cached {_ago(now - cached_ms)} "
                        f"({', '.join(detail)})"
                    )
    return notes


def _ago(ms: int) -> str:
    if ms <= 0:
        return "at the same moment"
    if ms < 1000:
        return f"{ms} ms earlier"
    return f"{ms / 1000:.1f} s earlier"


def summarize(value: Any, *, items: int = 4) -> str:
    """A short text for a KV value: ``not found``, a message (``m1 pending``), a list of
    messages (``3 messages: m1 pending, m2 AI, ...``), or the text cut at 40 characters."""
    if value is None:
        return "not found"
    if not isinstance(value, str):
        value = str(value)
    try:
        parsed = json.loads(value)
    except ValueError:
        return _cut(value)
    if isinstance(parsed, dict) and "id" in parsed:
        return _message(parsed)
    if isinstance(parsed, list) and all(isinstance(m, dict) for m in parsed):
        shown = [_message(m) for m in parsed[:items]]
        more = ", ..." if len(parsed) > items else ""
        if not parsed:
            return "[] (empty list)"
        return f"{len(parsed)} message{'s' if len(parsed) != 1 else ''}: {', '.join(shown)}{more}"
    return _cut(value)


def _message(m: dict[str, Any]) -> str:
    mid = str(m.get("id", "?"))
    params = m.get("botParams") if isinstance(m.get("botParams"), dict) else {}
    if m.get("message-type") == "AI":
        state = f"AI reply to {m['replyTo']}" if m.get("replyTo") else "AI"
    elif params.get("status"):
        state = str(params["status"])
        if params.get("claimedBy"):
            state += f" by {params['claimedBy']}"
    elif "processed" in params:
        state = "processed" if params["processed"] else "not processed"
    else:
        state = str(m.get("message-type") or "message")
    return f"{mid} {state}"


def _cut(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def message_ids(detail: Detail) -> list[str]:
    """Every message id the run mentions, in order of first appearance (for short aliases)."""
    seen: dict[str, None] = {}
    for ex in detail.world.history:
        for mid in (
            _ids_in(ex.body) + _ids_in(ex.answer) + ([ex.message_id] if ex.message_id else [])
        ):
            seen.setdefault(mid, None)
    for mid in detail.violation.message_ids:
        seen.setdefault(mid, None)
    return list(seen)


def _ids_in(value: Any) -> list[str]:
    if isinstance(value, dict):
        out = [value["id"]] if isinstance(value.get("id"), str) else []
        for key in ("message", "comments", "pending"):
            if key in value:
                out += _ids_in(value[key])
        if isinstance(value.get("messageId"), str):
            out.append(value["messageId"])
        return out
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [i for v in value for i in _ids_in(v)]
    return []
