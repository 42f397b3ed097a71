"""The exceptions qmodel raises at its users.

One root, :class:`QmodelError`; each subclass also subclasses the builtin it stands for, so a
caller may catch either. Every error carries its structured fields beside the message, and the
message says what was wrong and what to do about it.
"""

from __future__ import annotations

__all__ = [
    "ChoiceError",
    "InvalidTarget",
    "QmodelError",
    "StepLimitExceeded",
    "TraceMismatch",
]


class QmodelError(Exception):
    """Root of every error qmodel raises on purpose."""


class InvalidTarget(QmodelError, TypeError):
    """The object under test does not meet the target contract (``async fetch(request, env, ctx)``).

    ``target`` names what was given (a repr, a module path or a file path).
    """

    def __init__(self, message: str, *, target: str) -> None:
        super().__init__(message)
        self.target = target


class ChoiceError(QmodelError, ValueError):
    """A choice was asked for with no options, or a scripted choice is out of range."""


class TraceMismatch(QmodelError, ValueError):
    """A replayed run asked for a different choice than the recorded one at the same position.

    This means the target, its configuration or qmodel itself changed since the trace was
    recorded. ``position`` is the index of the first differing choice; ``expected`` and
    ``actual`` describe the recorded and the requested choice.
    """

    def __init__(self, message: str, *, position: int, expected: str, actual: str) -> None:
        super().__init__(message)
        self.position = position
        self.expected = expected
        self.actual = actual


class StepLimitExceeded(QmodelError, RuntimeError):
    """A task ran more steps than the limit allows without finishing (a worker that never
    answers)."""

    def __init__(self, message: str, *, task: str, steps: int) -> None:
        super().__init__(message)
        self.task = task
        self.steps = steps
