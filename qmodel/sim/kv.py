"""A simulator of Workers KV with the platform's real semantics.

Every rule here comes from ``docs/reference/workers-kv-semantics.md`` (cited as §N) and is a knob of
:class:`KvConfig` whose default is the production value. The model:

* **Central store** (§1.1, §1.7): one ``SortedDict`` keyed by the UTF-8 bytes of the key.
  Writes commit at the step that performs them, so the order of steps is the last-writer-wins
  order by arrival.
* **Edge caches** (§1.1, §1.2, §1.4): each *location* has ``nodes_per_location`` cache nodes;
  a read through a node returns what that node cached, value or "missing" (negative caching),
  until the entry's TTL (``cacheTtl``, default 60 s) runs out, then reads through to the central
  store and caches the result. A request's KV calls go through one node, chosen when the
  request first touches KV; consecutive requests can land on different nodes and read
  different versions (§1.6).
* **Read-your-own-write** (§1.3): a write through location L usually updates L's nodes with the
  new value (fresh TTL); with a small probability (choice ``kv.ryw``) it does not, and L keeps
  serving what it cached before.
* **list()** (§2.4, §1.8): keys ordered by UTF-8 bytes, ``limit`` ≤ 1000, an opaque cursor,
  pages that may legally be short or empty while ``list_complete`` is false (choice
  ``kv.list.page``), and list pages cached per location and node on their own, so ``list`` and
  ``get`` can disagree for up to the TTL.
* **Limits** (§2.1-§2.3): 1 write per second per key (``KV PUT failed: 429 Too Many
  Requests``), keys ≤ 512 bytes (414), values ≤ 25 MiB and metadata ≤ 1024 bytes (413),
  ``expirationTtl`` ≥ 60 and ``expiration`` ≥ now + 60 (400), empty, ``.`` and ``..`` keys
  refused. At most 1000 operations per invocation is counted by the binding (§2.1).
* **Expiry** (§2.5, §1.5): an expired key reads as missing everywhere, cached copies included
  ("expiration always takes precedence").

The ``local`` profile is what Miniflare gives (§4): one strongly consistent store, no caches,
no write-rate limit, no short pages, no per-invocation cap; validation limits stay.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import attrs
from sortedcontainers import SortedDict

from qmodel.sim.choices import ChoiceSource
from qmodel.sim.clock import Clock

__all__ = [
    "KeyInfo",
    "KvConfig",
    "KvError",
    "KvSnapshot",
    "KvStats",
    "KvStore",
    "ListResult",
    "PRICE_PER_MILLION",
]

#: Workers Paid prices in US dollars per million operations beyond the included amounts
#: (Cloudflare's Workers KV pricing page: reads $0.50/M; writes, deletes and lists $5.00/M each).
PRICE_PER_MILLION = {"read": 0.50, "write": 5.00, "delete": 5.00, "list": 5.00}


class KvError(Exception):
    """An error the KV binding throws into the worker, as workerd's ``Error: KV <METHOD>
    failed: <status> <text>`` (§2.2, [SRC WD-KV] ``checkForErrorStatus``). ``status`` is the HTTP
    status of the failed call."""

    def __init__(self, message: str, *, status: int, method: str) -> None:
        super().__init__(message)
        self.status = status
        self.method = method

    def detached(self) -> KvError:
        """A copy without the traceback, for records kept as long as the world (an
        invocation's ``kv_errors``): the raised error's traceback holds the frames it passed
        through, and with them every value the failed request had in hand."""
        return KvError(str(self), status=self.status, method=self.method)


@attrs.frozen
class KvConfig:
    """The knobs of the simulated KV; defaults are the real platform's (§8)."""

    profile: str = "strict"
    #: §1.5: "The default cache TTL remains unchanged at 60 seconds."
    default_cache_ttl_s: int = 60
    #: §1.5 [KV-CL-TTL]: the minimum cacheTtl is 30 s since 2026-01-30 (60 before).
    min_cache_ttl_s: int = 30
    #: §1.1-§1.2: per-location caches (off = every read sees the central store).
    edge_caches: bool = True
    #: §1.4: misses are cached like values.
    negative_cache: bool = True
    #: §1.3: weights of (holds, fails) for read-your-own-write at the writing location;
    #: ``None`` = always holds. The reference's model value is about 0.99.
    ryw_weights: tuple[int, int] | None = (99, 1)
    #: §1.6 / §8: cache nodes per location (≥ 2 gives non-monotonic reads).
    nodes_per_location: int = 2
    #: §1.8: list pages cached per location/node for ``default_cache_ttl_s``.
    list_cache: bool = True
    #: §2.4: pages may be short or empty while ``list_complete`` is false.
    short_pages: bool = True
    #: §2.2: "a maximum of 1 write to the same key per second"; ``None`` = no limit.
    same_key_write_interval_ms: int | None = 1000
    #: §2.2 [INFERENCE]: deletes count as writes for the rate limit.
    rate_limit_deletes: bool = True
    #: §2.1/§2.3: key length limit in UTF-8 bytes (414).
    max_key_bytes: int = 512
    #: §2.1/§2.3: value size limit (413).
    max_value_bytes: int = 26_214_400
    #: §2.1/§2.3: serialized metadata limit (413).
    max_metadata_bytes: int = 1024
    #: §2.3/§2.5: minimum ``expirationTtl`` and minimum distance of ``expiration`` (400).
    min_expiration_ttl_s: int = 60
    #: §2.4: "The default is 1,000, which is the maximum."
    list_limit_max: int = 1000
    #: §2.3 / [KV-CL-BULK]: keys per bulk ``get`` ("up to 100 keys").
    max_bulk_keys: int = 100
    #: §2.1: operations to external services per Worker invocation; ``None`` = no cap.
    ops_per_invocation: int | None = 1000

    @classmethod
    def strict(cls) -> KvConfig:
        """Every production rule on (the default)."""
        return cls()

    @classmethod
    def local(cls) -> KvConfig:
        """What Miniflare gives (§4): strongly consistent, no rate limit, no short pages, no
        per-invocation cap; key, value, metadata, TTL and list-limit validation stay."""
        return cls(
            profile="local",
            edge_caches=False,
            ryw_weights=None,
            nodes_per_location=1,
            list_cache=False,
            short_pages=False,
            same_key_write_interval_ms=None,
            ops_per_invocation=None,
        )

    @classmethod
    def named(cls, name: str) -> KvConfig:
        """The profile called ``name`` (``strict`` or ``local``)."""
        if name == "strict":
            return cls.strict()
        if name == "local":
            return cls.local()
        raise ValueError(
            f"unknown KV profile {name!r}; use 'strict' (production) or 'local' (Miniflare)"
        )


# The two records below are named tuples rather than attrs classes: one is made per write and per
# cache fill, on the hot path.


class _Entry(NamedTuple):
    """A stored value with its metadata, as the central store holds it."""

    value: str
    metadata: Any
    expiration: int | None  # absolute, seconds since the epoch
    version: int
    written_ms: int


class _Cached(NamedTuple):
    """What one cache node holds for a key, and until when."""

    entry: _Entry | None  # None: a cached miss
    cached_ms: int
    expires_ms: int


@attrs.frozen
class KeyInfo:
    """One key of a ``list()`` page: ``name``, and ``expiration``/``metadata`` when set (§2.4)."""

    name: str
    expiration: int | None = None
    metadata: Any = None


@attrs.frozen
class ListResult:
    """A ``list()`` page. ``cursor`` is set only while ``list_complete`` is false (§2.4)."""

    keys: tuple[KeyInfo, ...]
    list_complete: bool
    cursor: str | None = None


@attrs.frozen
class KvStats:
    """Operation counts and their cost at Cloudflare's prices."""

    reads: int
    writes: int
    deletes: int
    lists: int
    rejected_429: int

    @property
    def operations(self) -> int:
        return self.reads + self.writes + self.deletes + self.lists

    @property
    def cost_usd(self) -> float:
        p = PRICE_PER_MILLION
        return (
            self.reads * p["read"]
            + self.writes * p["write"]
            + self.deletes * p["delete"]
            + self.lists * p["list"]
        ) / 1_000_000


@attrs.frozen
class KvSnapshot:
    """The central store's live contents: ``key -> value`` in UTF-8 byte order."""

    values: dict[str, str]
    metadata: dict[str, Any]

    def get(self, key: str) -> str | None:
        return self.values.get(key)

    def json(self, key: str) -> Any:
        raw = self.values.get(key)
        return None if raw is None else json.loads(raw)


def _after(key: bytes) -> str:
    return base64.urlsafe_b64encode(b"a" + key).decode("ascii")


def _from(key: bytes) -> str:
    return base64.urlsafe_b64encode(b"f" + key).decode("ascii")


Where = tuple[str, int]


@attrs.define
class KvStore:
    """The namespace: central store, edge caches and counters.

    Methods take ``where``, the ``(location, node)`` the call goes through; the binding picks
    it. All raise :class:`KvError` (or ``TypeError`` for invalid key names) as workerd does.
    """

    clock: Clock
    choices: ChoiceSource
    config: KvConfig = attrs.field(factory=KvConfig)
    _data: SortedDict = attrs.field(factory=SortedDict, init=False)
    _caches: dict[Where, dict[str, _Cached]] = attrs.field(factory=dict, init=False)
    _list_caches: dict[Where, dict[tuple[str, str | None, int], tuple[ListResult, int]]] = (
        attrs.field(factory=dict, init=False)
    )
    _last_write_ms: dict[str, int] = attrs.field(factory=dict, init=False)
    _version: int = attrs.field(default=0, init=False)
    _reads: int = attrs.field(default=0, init=False)
    _writes: int = attrs.field(default=0, init=False)
    _deletes: int = attrs.field(default=0, init=False)
    _lists: int = attrs.field(default=0, init=False)
    _rejected: int = attrs.field(default=0, init=False)
    #: Called with (method, key, outcome) after every operation; reports and invariants watch it.
    observers: list[Callable[[str, str, Any], None]] = attrs.field(factory=list)
    #: Called by a binding after each of its calls with ``(op, invocation, result, error)``:
    #: who asked, through which location and node, and what came back. ``None`` (the default)
    #: costs nothing; reports switch it on while they replay a trace.
    tap: Callable[[Any, Any, Any, BaseException | None], None] | None = None

    # -- validation (§2.3) ---------------------------------------------------------------------

    def _key(self, key: Any, method: str) -> bytes:
        if not isinstance(key, str):
            raise TypeError(f"KV {method.lower()}() key must be a string, got {type(key).__name__}")
        if key == "":
            raise TypeError("Key name cannot be empty.")
        if key in (".", ".."):
            raise TypeError(f'"{key}" is not allowed as a key name.')
        raw = key.encode("utf-8")
        if len(raw) > self.config.max_key_bytes:
            raise KvError(
                f"KV {method} failed: 414 UTF-8 encoded length of {len(raw)} exceeds key length "
                f"limit of {self.config.max_key_bytes}.",
                status=414,
                method=method,
            )
        return raw

    def _expired(self, entry: _Entry | None) -> bool:
        return (
            entry is not None
            and entry.expiration is not None
            and self.clock.now_ms >= entry.expiration * 1000
        )

    def _central(self, raw: bytes) -> _Entry | None:
        entry = self._data.get(raw)
        return None if entry is None or self._expired(entry) else entry

    def _cache(self, where: Where) -> dict[str, _Cached]:
        cache = self._caches.get(where)
        if cache is None:
            cache = self._caches[where] = {}
        return cache

    # -- get -----------------------------------------------------------------------------------

    def get_entry(self, where: Where, key: str, *, cache_ttl: int | None = None) -> _Entry | None:
        """Read ``key`` through ``where``: the cached copy while fresh, else the central store.

        ``cache_ttl`` (seconds, ≥ ``min_cache_ttl_s``) sets how long this location keeps the
        result, and shortens an existing cached copy (§1.5). Expired keys read as missing even
        from a cache (§1.5 "Expiration always takes precedence"). Deleted and never-written keys
        read as ``None`` (§1.4, a 404 or 410 from the backend).
        """
        raw = self._key(key, "GET")
        cfg = self.config
        if cache_ttl is not None and (
            not isinstance(cache_ttl, int) or cache_ttl < cfg.min_cache_ttl_s
        ):
            raise KvError(
                f"KV GET failed: 400 Invalid cache_ttl of {cache_ttl}. Cache TTL must be at "
                f"least {cfg.min_cache_ttl_s}.",
                status=400,
                method="GET",
            )
        self._reads += 1
        now = self.clock.now_ms
        if not cfg.edge_caches:
            entry = self._central(raw)
        else:
            cache = self._caches.get(where)
            if cache is None:
                cache = self._caches[where] = {}
            cached = cache.get(key)
            if cached is not None and cache_ttl is not None:
                shorter = cached.cached_ms + cache_ttl * 1000
                if shorter < cached.expires_ms:
                    cached = cache[key] = cached._replace(expires_ms=shorter)
            if cached is not None and cached.expires_ms > now:
                entry = cached.entry
            else:
                entry = self._central(raw)
                if entry is not None or cfg.negative_cache:
                    ttl_ms = (cache_ttl or cfg.default_cache_ttl_s) * 1000
                    cache[key] = _Cached(entry, now, now + ttl_ms)
                else:
                    cache.pop(key, None)
        if entry is not None and entry.expiration is not None and now >= entry.expiration * 1000:
            entry = None  # expiration takes precedence over a cached copy (§1.5)
        for obs in self.observers:
            obs("get", key, entry)
        return entry

    def get(self, where: Where, key: str, *, cache_ttl: int | None = None) -> str | None:
        """The value of ``key`` as text, or ``None`` (see :meth:`get_entry`)."""
        entry = self.get_entry(where, key, cache_ttl=cache_ttl)
        return None if entry is None else entry.value

    def get_many(
        self,
        where: Where,
        keys: Sequence[str],
        *,
        cache_ttl: int | None = None,
        type: str = "text",
        with_metadata: bool = False,
    ) -> dict[str, Any]:
        """A bulk read (``get([keys])``, §1.5, [KV-CL-BULK]): each key read as :meth:`get_entry`
        reads it, through the same cache node, in one operation. Maps every key to its value
        (``None`` when missing), or with ``with_metadata`` to ``{"value", "metadata"}``.

        The validation is Miniflare's (§2.3): 1 to 100 keys, type ``"text"`` or ``"json"``,
        and with ``"json"`` every value JSON, each a ``KV GET_BULK failed: 400`` error.
        """
        method = "GET_BULK"

        def bad(text: str) -> KvError:
            return KvError(f"KV {method} failed: 400 {text}", status=400, method=method)

        if type not in ("text", "json"):
            raise bad(f'"{type}" is not a valid type. Use "json" or "text"')
        if not keys:
            raise bad("You must request a minimum of 1 key")
        if len(keys) > self.config.max_bulk_keys:
            raise bad(f"You can request a maximum of {self.config.max_bulk_keys} keys")
        for key in keys:
            self._key(key, method)
        if cache_ttl is not None and (
            not isinstance(cache_ttl, int) or cache_ttl < self.config.min_cache_ttl_s
        ):
            raise bad(
                f"Invalid cache_ttl of {cache_ttl}. Cache TTL must be at least "
                f"{self.config.min_cache_ttl_s}."
            )
        out: dict[str, Any] = {}
        for key in keys:
            entry = self.get_entry(where, key, cache_ttl=cache_ttl)
            value: Any = None if entry is None else entry.value
            if type == "json" and value is not None:
                try:
                    value = json.loads(value)
                except ValueError:
                    raise bad(
                        "At least one of the requested keys corresponds to a non-json value"
                    ) from None
            if with_metadata:
                value = {"value": value, "metadata": None if entry is None else entry.metadata}
            out[key] = value
        return out

    # -- put / delete --------------------------------------------------------------------------

    def _rate_limit(self, key: str, method: str) -> None:
        interval = self.config.same_key_write_interval_ms
        if interval is None:
            return
        last = self._last_write_ms.get(key)
        if last is not None and self.clock.now_ms - last < interval:
            self._rejected += 1
            for obs in self.observers:
                obs("429", key, method)
            # §2.2 [DOC KV-WRITE]: the message of the docs' example; the write has no effect.
            raise KvError(f"KV {method} failed: 429 Too Many Requests", status=429, method=method)

    def _expiration(self, expiration: Any, expiration_ttl: Any) -> int | None:
        cfg = self.config
        now_s = self.clock.now_ms // 1000
        if expiration_ttl is not None:  # §2.3: expirationTtl takes priority over expiration
            ttl = expiration_ttl
            if (
                isinstance(ttl, bool)
                or not isinstance(ttl, int | float)
                or math.isnan(ttl)
                or ttl <= 0
            ):
                raise KvError(
                    f"KV PUT failed: 400 Invalid expiration_ttl of {ttl}. Please specify integer "
                    "greater than 0.",
                    status=400,
                    method="PUT",
                )
            if ttl < cfg.min_expiration_ttl_s:
                raise KvError(
                    f"KV PUT failed: 400 Invalid expiration_ttl of {ttl}. Expiration TTL must be "
                    f"at least {cfg.min_expiration_ttl_s}.",
                    status=400,
                    method="PUT",
                )
            return now_s + int(ttl)
        if expiration is not None:
            if isinstance(expiration, bool) or not isinstance(expiration, int | float):
                raise KvError(
                    f"KV PUT failed: 400 Invalid expiration of {expiration}.",
                    status=400,
                    method="PUT",
                )
            if expiration <= now_s:
                raise KvError(
                    f"KV PUT failed: 400 Invalid expiration of {expiration}. Please specify "
                    "integer greater than the current number of seconds since the UNIX epoch.",
                    status=400,
                    method="PUT",
                )
            if expiration < now_s + cfg.min_expiration_ttl_s:
                raise KvError(
                    f"KV PUT failed: 400 Invalid expiration of {expiration}. Expiration times "
                    f"must be at least {cfg.min_expiration_ttl_s} seconds in the future.",
                    status=400,
                    method="PUT",
                )
            return int(expiration)
        return None

    def _read_your_write(self, where: Where, key: str, entry: _Entry | None) -> None:
        cfg = self.config
        if not cfg.edge_caches:
            return
        if cfg.ryw_weights is not None and self.choices.choose("kv.ryw", 2, cfg.ryw_weights):
            return  # §1.3: "this is not guaranteed": the location keeps what it had cached
        now = self.clock.now_ms
        location = where[0]
        fresh = _Cached(entry, now, now + cfg.default_cache_ttl_s * 1000)
        for node in range(cfg.nodes_per_location):
            self._cache((location, node))[key] = fresh

    def put(
        self,
        where: Where,
        key: str,
        value: Any,
        *,
        expiration: int | None = None,
        expiration_ttl: int | None = None,
        metadata: Any = None,
    ) -> None:
        """Write ``value`` under ``key`` at the central store (last writer wins by arrival).

        Raises 429 when the key was written less than a second ago (§2.2; the rejected write has
        no effect), 413 for an oversized value or metadata, 400 for a bad expiration, 414 for a
        long key, ``TypeError`` for a value that is not a string (§2.3).
        """
        raw = self._key(key, "PUT")
        cfg = self.config
        if isinstance(value, (bytes, bytearray)):
            value = bytes(value).decode("utf-8", errors="surrogateescape")
        if not isinstance(value, str):
            raise TypeError(
                "KV put() accepts only strings, ArrayBuffers, ArrayBufferViews, and "
                "ReadableStreams as values."
            )
        # An ASCII text (every JSON text) is as many bytes as characters: no need to encode it.
        if value.isascii():
            size = len(value)
        else:
            size = len(value.encode("utf-8", errors="surrogateescape"))
        if size > cfg.max_value_bytes:
            raise KvError(
                f"KV PUT failed: 413 Value length of {size} exceeds limit of "
                f"{cfg.max_value_bytes}.",
                status=413,
                method="PUT",
            )
        if metadata is not None:
            meta_size = len(json.dumps(metadata, separators=(",", ":")).encode("utf-8"))
            if meta_size > cfg.max_metadata_bytes:
                raise KvError(
                    f"KV PUT failed: 413 Metadata length of {meta_size} exceeds limit of "
                    f"{cfg.max_metadata_bytes}.",
                    status=413,
                    method="PUT",
                )
        exp = None
        if expiration is not None or expiration_ttl is not None:
            exp = self._expiration(expiration, expiration_ttl)
        self._rate_limit(key, "PUT")
        self._writes += 1
        self._version += 1
        now = self.clock.now_ms
        entry = _Entry(value, metadata, exp, self._version, now)
        self._data[raw] = entry
        self._last_write_ms[key] = now
        self._read_your_write(where, key, entry)
        for obs in self.observers:
            obs("put", key, entry)

    def delete(self, where: Where, key: str) -> None:
        """Remove ``key``; deleting a missing key succeeds (§2.5). Eventually consistent like a
        put: other locations keep their cached copy until it expires."""
        raw = self._key(key, "DELETE")
        if self.config.rate_limit_deletes:
            self._rate_limit(key, "DELETE")
        self._deletes += 1
        self._version += 1
        self._data.pop(raw, None)
        self._last_write_ms[key] = self.clock.now_ms
        self._read_your_write(where, key, None)
        for obs in self.observers:
            obs("delete", key, None)

    # -- list ----------------------------------------------------------------------------------

    def list(
        self,
        where: Where,
        *,
        prefix: str = "",
        limit: int = 1000,
        cursor: str | None = None,
    ) -> ListResult:
        """One page of keys starting with ``prefix``, in UTF-8 byte order (§2.4).

        A page holds at most ``limit`` keys (1..1000) and may hold fewer, even none, while
        ``list_complete`` is false (§2.4, choice ``kv.list.page``); a caller must follow
        ``cursor`` until ``list_complete``. Pages are cached per location and node for the cache
        TTL, independently of ``get`` (§1.8).
        """
        cfg = self.config
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int)
            or not 1 <= limit <= cfg.list_limit_max
        ):
            raise KvError(
                f"KV LIST failed: 400 Invalid limit of {limit}; it must be an integer from 1 to "
                f"{cfg.list_limit_max}.",
                status=400,
                method="LIST",
            )
        if not isinstance(prefix, str):
            raise TypeError("KV list() prefix must be a string")
        pre = prefix.encode("utf-8")
        if cursor is None:
            start, inclusive = pre, True
        else:
            try:
                decoded = base64.urlsafe_b64decode(cursor.encode("ascii"))
            except (ValueError, UnicodeEncodeError):
                decoded = b""
            if decoded[:1] not in (b"a", b"f"):
                raise KvError(
                    f"KV LIST failed: 400 Invalid cursor {cursor!r}: pass the cursor of the "
                    "previous page unchanged",
                    status=400,
                    method="LIST",
                )
            start, inclusive = decoded[1:], decoded[:1] == b"f"
        self._lists += 1
        now = self.clock.now_ms
        cache_key = (prefix, cursor, limit)
        if cfg.edge_caches and cfg.list_cache:
            lc = self._list_caches.setdefault(where, {})
            hit = lc.get(cache_key)
            if hit is not None and hit[1] > now:
                return hit[0]
        found: list[tuple[bytes, _Entry]] = []
        for raw in self._data.irange(minimum=start, inclusive=(inclusive, True)):
            if not raw.startswith(pre):
                break
            entry = self._data[raw]
            if self._expired(entry):
                continue
            found.append((raw, entry))
            if len(found) > limit:
                break
        complete = len(found) <= limit
        page = found[:limit]
        if cfg.short_pages and page:
            cut = self.choices.choose("kv.list.page", 3, (8, 1, 1))
            if cut:
                page = page[: len(page) // 2] if cut == 1 else []
                complete = False
        if complete:
            next_cursor = None
        elif page:
            next_cursor = _after(page[-1][0])
        else:
            next_cursor = cursor if cursor is not None else _from(start)
        result = ListResult(
            tuple(KeyInfo(raw.decode("utf-8"), e.expiration, e.metadata) for raw, e in page),
            complete,
            next_cursor,
        )
        # An empty page that is not the end hands back the cursor it was given; caching it under
        # that cursor would serve the same empty page to the follow-up call for the whole TTL,
        # and a client following cursors (as §2.4 requires) would never finish.
        if cfg.edge_caches and cfg.list_cache and (page or complete):
            self._list_caches.setdefault(where, {})[cache_key] = (
                result,
                now + cfg.default_cache_ttl_s * 1000,
            )
        for obs in self.observers:
            obs("list", prefix, result)
        return result

    # -- inspection ----------------------------------------------------------------------------

    def preload(self, key: str, value: str, *, metadata: Any = None) -> None:
        """Put ``key`` into the central store directly, outside any request and rule (a world's
        starting data). Caches are not touched."""
        raw = self._key(key, "PUT")
        self._version += 1
        self._data[raw] = _Entry(value, metadata, None, self._version, self.clock.now_ms)

    def snapshot(self) -> KvSnapshot:
        """The live central contents (what a cold read anywhere would see now)."""
        values: dict[str, str] = {}
        metadata: dict[str, Any] = {}
        for raw, entry in self._data.items():
            if self._expired(entry):
                continue
            key = raw.decode("utf-8")
            values[key] = entry.value
            if entry.metadata is not None:
                metadata[key] = entry.metadata
        return KvSnapshot(values, metadata)

    def cached(self, location: str, node: int, key: str) -> tuple[str | None, int] | None:
        """What ``(location, node)`` holds for ``key`` while fresh: ``(value or None, cached_ms)``;
        ``None`` when it holds nothing fresh."""
        c = self._caches.get((location, node), {}).get(key)
        if c is None or c.expires_ms <= self.clock.now_ms:
            return None
        return (None if c.entry is None else c.entry.value, c.cached_ms)

    # Read-only views for reports that explain a read (none changes the store or draws a choice).

    def central_entry(self, key: str) -> _Entry | None:
        """The live central entry of ``key`` (``None`` when missing or expired)."""
        return self._central(key.encode("utf-8"))

    def cache_entry(self, where: Where, key: str) -> _Cached | None:
        """What the cache node ``where`` holds for ``key``, fresh or not."""
        return self._caches.get(where, {}).get(key)

    def last_write_ms(self, key: str) -> int | None:
        """When ``key`` was last written or deleted successfully (the 1 write/s window)."""
        return self._last_write_ms.get(key)

    def list_cache_entry(
        self, where: Where, prefix: str, cursor: str | None, limit: int
    ) -> tuple[ListResult, int] | None:
        """The page ``where`` keeps for ``list(prefix, cursor, limit)``, with its expiry."""
        return self._list_caches.get(where, {}).get((prefix, cursor, limit))

    def live_keys(self, prefix: str = "") -> set[str]:
        """The keys with ``prefix`` the central store holds now (not expired)."""
        start = prefix.encode("utf-8")
        return {
            raw.decode("utf-8")
            for raw, entry in self._data.items()
            if raw.startswith(start) and not self._expired(entry)
        }

    def version_of(self, key: str) -> int | None:
        entry = self._central(key.encode("utf-8"))
        return None if entry is None else entry.version

    def stats(self) -> KvStats:
        return KvStats(self._reads, self._writes, self._deletes, self._lists, self._rejected)

    def check(self) -> None:
        """Assert the store's structural invariants."""
        keys = list(self._data.keys())
        assert keys == sorted(keys), "central keys are in UTF-8 byte order"
        versions = [e.version for e in self._data.values()]
        assert len(set(versions)) == len(versions), "every stored version is unique"
        assert all(v <= self._version for v in versions), "no version from the future"
        for raw in keys:
            assert len(raw) <= self.config.max_key_bytes, f"stored key over the limit: {raw!r}"
        for cache in self._caches.values():
            for key, c in cache.items():
                assert c.cached_ms <= c.expires_ms, f"cache entry for {key} expires before cached"
                if c.entry is not None:
                    assert c.entry.version <= self._version, "cached version from the future"
