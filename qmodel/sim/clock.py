"""Virtual time.

Everything in a simulated world reads time from one :class:`Clock`. Time is an integer number of
milliseconds since the Unix epoch, so values look like the ``Date.now()`` readings of the seeds'
logs. It moves only when told to, and never backwards.
"""

from __future__ import annotations

import attrs

__all__ = ["DEFAULT_START_MS", "Clock"]

#: 2025-10-24T19:20:53.305Z, the moment of the seed-004 log line; any fixed value would do.
DEFAULT_START_MS = 1_761_333_653_305


@attrs.define
class Clock:
    """A virtual millisecond clock, injected into every simulated component.

    ``advance`` and ``advance_to`` refuse to go backwards (a test that needs an earlier time
    builds a new world).
    """

    now_ms: int = DEFAULT_START_MS

    def advance(self, ms: int) -> int:
        """Move time forward by ``ms`` (>= 0) milliseconds; return the new time."""
        if ms < 0:
            raise ValueError(f"Clock.advance({ms}): time never goes backwards; pass ms >= 0")
        self.now_ms += ms
        return self.now_ms

    def advance_to(self, t_ms: int) -> int:
        """Move time forward to ``t_ms``; a time in the past is an error."""
        if t_ms < self.now_ms:
            raise ValueError(
                f"Clock.advance_to({t_ms}) is {self.now_ms - t_ms} ms in the past "
                f"(now={self.now_ms}); time never goes backwards"
            )
        self.now_ms = t_ms
        return self.now_ms

    @property
    def now_s(self) -> float:
        """Seconds since the epoch, as KV's ``expiration`` fields count."""
        return self.now_ms / 1000.0
