"""The Python designs of seeds 000 and 004, as ``file.py:attr`` targets (the JavaScript designs
of ``examples/workers/`` are their ports)."""

from qmodel.workers import CommentsWorker, Fixes


def seed_000() -> CommentsWorker:
    return CommentsWorker(Fixes.seed_000())


def seed_004() -> CommentsWorker:
    return CommentsWorker(Fixes.seed_004())
