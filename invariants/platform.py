"""The worker plays by Cloudflare's rules and never fails a valid request: no request the actors
send is answered 5xx, no KV write asks for an expiration under 60 s, no invocation goes past the
limit on KV operations, and no write refused with 429 is silently dropped while the request
reports success. A violation names the first exchange (history order) that breaks one of these,
and which rule.

The rules (``reference/workers-kv-semantics.md``), by the name reported in ``values["rule"]``:

* ``expiration``: a KV error ``Invalid expiration_ttl`` / ``Invalid expiration`` was raised into
  the worker (``expirationTtl`` must be at least 60, an absolute expiration in the future);
* ``op-limit``: a KV error ``... operations in one Worker invocation`` (at most 1000 KV
  operations per invocation);
* ``swallowed-429``: the request was answered 2xx although one of its KV writes was refused
  with ``429 Too Many Requests`` (1 write per second per key) and no later write of the same key
  in the same invocation succeeded: the data of that write is lost while the client believes it
  stored;
* ``no-answer``: the request never answered: the worker kept awaiting past the step limit
  (liveness);
* ``5xx``: any answer 500-599; every request the actors send is valid, so a 5xx is the worker's
  fault (often an uncaught KV error).

When one exchange breaks several rules, the specific platform rule is reported before the bare
5xx it usually caused, so the report names the cause.
"""

from __future__ import annotations

from qmodel.invariants._common import first_paragraph, request_text

from qmodel.check import CheckContext, Invariant, Violation
from qmodel.history import Exchange

__all__ = ["INVARIANT", "check"]

ID = "platform"

#: Substrings of the KV errors of each rule, as the platform words them.
EXPIRATION_ERRORS = ("Invalid expiration_ttl", "Invalid expiration")
OP_LIMIT_ERROR = "operations in one Worker invocation"


def _violation(ex: Exchange, rule: str, summary: str, **values: object) -> Violation:
    return Violation(
        invariant=ID,
        summary=summary,
        message_ids=(ex.message_id,) if ex.message_id else (),
        exchanges=(ex.seq,),
        values={"rule": rule, "status": ex.status, **values},
    )


def _swallowed_429(ex: Exchange) -> str | None:
    """The key of the first write refused with 429 and not rewritten with success later."""
    writes = ex.writes
    for i, w in enumerate(writes):
        if w.status == 429 and not any(
            later.key == w.key and later.status == 200 for later in writes[i + 1 :]
        ):
            return w.key
    return None


def _check_one(ex: Exchange) -> Violation | None:
    req = request_text(ex)
    for err in ex.kv_errors:
        if any(marker in err for marker in EXPIRATION_ERRORS):
            return _violation(
                ex,
                "expiration",
                f"{req} wrote to KV with an expiration the platform refuses (TTL under 60 s)",
                kv_error=err,
            )
    for err in ex.kv_errors:
        if OP_LIMIT_ERROR in err:
            return _violation(
                ex,
                "op-limit",
                f"{req} went past the limit of KV operations in one invocation",
                kv_error=err,
                counters=ex.counters(),
            )
    if ex.ok:
        key = _swallowed_429(ex)
        if key is not None:
            return _violation(
                ex,
                "swallowed-429",
                f"{req} answered {ex.status} though its KV write of {key} was refused with 429 "
                "and never retried",
                key=key,
                writes=tuple((w.key, w.status) for w in ex.writes),
            )
    if ex.status is None and any("step limit" in e for e in ex.errors):
        return _violation(
            ex,
            "no-answer",
            f"{req} was never answered (liveness): the worker ran past the step limit",
            errors=ex.errors,
        )
    if ex.status is not None and 500 <= ex.status < 600:
        return _violation(
            ex,
            "5xx",
            f"{req} answered {ex.status} to a valid request",
            body=ex.answer,
            errors=ex.errors,
            kv_errors=ex.kv_errors,
        )
    return None


def check(ctx: CheckContext) -> Violation | None:
    """The first exchange (history order) that breaks a platform rule."""
    for ex in ctx.history:
        found = _check_one(ex)
        if found is not None:
            return found
    return None


INVARIANT = Invariant(id=ID, kind="safety", doc=first_paragraph(__doc__), check=check)
