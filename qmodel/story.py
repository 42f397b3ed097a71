"""The story of a violation in plain text: which invariant broke, against which target, and the
shrunk run as the requests the actors made, with virtual times counted from the run's start.

``qmodel check`` prints it; a failing ``machine_for(...)`` test carries it as its message.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from qmodel.sim.clock import DEFAULT_START_MS

__all__ = ["relative_times", "story"]

_STAMP = re.compile(r"^t=(\d+) ")


def relative_times(lines: Sequence[str], start_ms: int = DEFAULT_START_MS) -> list[str]:
    """The run's log lines with their ``t=<virtual epoch ms>`` stamp written as seconds since
    the start of the run (``+3.100 s``); lines without a stamp are kept as they are."""

    def one(line: str) -> str:
        m = _STAMP.match(line)
        if m is None:
            return line
        return f"+{(int(m.group(1)) - start_ms) / 1000:.3f} s  {line[m.end() :]}"

    return [one(line) for line in lines]


def story(
    violation: Any, log: Sequence[str], *, protocol: Any, target: str, found: str = ""
) -> str:
    """The text of a violation (a :class:`Violation` record with ``invariant``, ``summary`` and
    ``values``) of an invariant of ``protocol``, shown by the run ``log`` against ``target``.
    ``found`` is appended to the heading of the run (``found after 12 examples in 2.0 s``)."""
    inv = protocol.invariant(violation.invariant)
    lines = [
        f"VIOLATION of {inv.id} ({inv.kind}) against {target}",
        f"  {inv.doc}",
        "",
        f"  {violation.summary}",
    ]
    lines += [f"    {k}: {v}" for k, v in violation.values.items()]
    heading = f"Shrunk run ({len(log)} steps{', ' + found if found else ''}), virtual time"
    lines += ["", f"{heading} since the start:"]
    lines += [f"  {i:3}. {line}" for i, line in enumerate(relative_times(log), 1)]
    return "\n".join(lines)
