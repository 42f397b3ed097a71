"""The job queue protocol ``jobs``: producers enqueue with an idempotency key, consumers lease
with a visibility timeout, work, then ack or nack by lease token.

Its parts: the actors (:mod:`.actors`), the reference model (:mod:`.spec`), the protocol value
and its settle probe (:mod:`.protocol`), and the bundled designs (:mod:`.designs`). Its
invariants live in ``qmodel.invariants.jobs``. Nothing is imported here, so the invariants may
import the spec without a cycle.
"""
