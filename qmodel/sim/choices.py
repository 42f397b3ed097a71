"""The one source of every nondeterministic decision in a simulated world.

Which task steps next, which cached copy a KV read sees, whether read-your-own-write holds,
how short a ``list()`` page is, whether a fault strikes: each is a *choice* among a finite,
numbered list of options, asked of one :class:`ChoiceSource` and recorded in order. The record
is the run: replaying it reproduces the run exactly, and since every decision has a finite list
of options, an exhaustive search can walk them.

Option 0 is always the unsurprising one (the first runnable task, the fresh value, the full
page). Hypothesis shrinks integers toward 0, so a shrunk run is also the least surprising one.

Backends decide; the source records:

* :class:`SeededBackend`: a private ``random.Random(seed)``, honouring weights;
* :class:`HypothesisBackend`: draws from Hypothesis ``data``, so the machine shrinks choices;
* :class:`RecordedBackend`: replays a recorded list and refuses a run that asks differently;
* :class:`FirstOptionBackend`: always option 0 (for scripted scenarios that force the rest);
* :class:`ScriptedBackend`: per-label queues of indices written by hand, option 0 otherwise.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol, TypeVar

import attrs

from qmodel.errors import ChoiceError, TraceMismatch

__all__ = [
    "Backend",
    "Choice",
    "ChoiceSource",
    "FirstOptionBackend",
    "HypothesisBackend",
    "RecordedBackend",
    "ScriptedBackend",
    "SeededBackend",
]

T = TypeVar("T")


class Choice(NamedTuple):
    """One recorded decision: option ``index`` of ``n`` for the decision named ``label``.

    (A named tuple rather than an attrs class: one is made per choice, on the hot path, and a
    tuple of plain values costs the garbage collector nothing once it has seen it.)
    """

    label: str
    n: int
    index: int

    def to_json(self) -> list[Any]:
        return [self.label, self.n, self.index]

    @classmethod
    def from_json(cls, raw: Any) -> Choice:
        """Parse what :meth:`to_json` gave; anything but ``[str, int, int]`` is refused."""
        if (
            not isinstance(raw, list)
            or len(raw) != 3
            or not isinstance(raw[0], str)
            or not isinstance(raw[1], int)
            or not isinstance(raw[2], int)
        ):
            raise ChoiceError(f"a recorded choice is [label, n, index]; got {raw!r}")
        return cls(raw[0], raw[1], raw[2])


class Backend(Protocol):
    """Something that decides: returns an index in ``range(n)``."""

    def pick(self, label: str, n: int, weights: tuple[int, ...] | None) -> int: ...


def _weighted(r: int, weights: tuple[int, ...]) -> int:
    for i, w in enumerate(weights):
        if r < w:
            return i
        r -= w
    raise AssertionError("unreachable: r < sum(weights)")


@attrs.define
class SeededBackend:
    """Decides with a private PRNG seeded by ``seed``: same seed, same decisions.

    ``weights`` (positive integers, one per option) are honoured; without them options are
    equally likely.
    """

    seed: int
    _random: Any = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._random = random.Random(self.seed).random

    def pick(self, label: str, n: int, weights: tuple[int, ...] | None) -> int:
        # int(random() * n) rather than randrange: several times faster, and the bias for the
        # small n of a choice is far below anything a run could notice.
        if weights is None:
            return int(self._random() * n)
        return _weighted(int(self._random() * sum(weights)), weights)


@attrs.define
class FirstOptionBackend:
    """Always picks option 0: the fresh read, the full page, the first runnable task."""

    def pick(self, label: str, n: int, weights: tuple[int, ...] | None) -> int:
        return 0


@attrs.define
class ScriptedBackend:
    """Answers each label from its own queue of indices (``{"kv.ryw": [0, 1]}``), then option 0.

    For scenarios written by hand: say only the surprising decisions, by name.
    """

    script: dict[str, list[int]] = attrs.field(factory=dict)

    def pick(self, label: str, n: int, weights: tuple[int, ...] | None) -> int:
        queue = self.script.get(label)
        if queue:
            index = queue.pop(0)
            if not 0 <= index < n:
                raise ChoiceError(f"scripted choice {label!r}: {index} not in range({n})")
            return index
        return 0


@attrs.define
class HypothesisBackend:
    """Draws each choice from Hypothesis ``data`` so the machine can shrink it.

    With ``weights``, one integer below the weights' sum is drawn and mapped to its option, so
    shrinking lands on option 0. The weights are production's frequencies, and a search is not
    production: an option weighing less than :data:`RARE_FLOOR` of the weights' sum is raised
    to that (a read-your-own-write miss, 1 in 100 writes, comes up about 1 in 11), so a bug
    behind one rare but legal behaviour is found in tens of examples rather than hundreds.
    """

    data: Any
    _strategies: dict[Any, Any] = attrs.field(factory=dict, init=False)

    #: The least share of the draws an option of a weighted choice gets in a search.
    RARE_FLOOR = 0.1
    #: Choices whose weights are already the search's own frequencies (the verbs an example
    #: applies), not the platform's: taken as they are.
    UNFLOORED = frozenset({"verb"})

    def pick(self, label: str, n: int, weights: tuple[int, ...] | None) -> int:
        key = n if weights is None else (label in self.UNFLOORED, weights)
        found = self._strategies.get(key)
        if found is None:
            from hypothesis import strategies as st

            searched = None if weights is None else _floored(weights, self.RARE_FLOOR)
            if label in self.UNFLOORED:
                searched = weights
            total = n if searched is None else sum(searched)
            found = self._strategies[key] = (st.integers(0, total - 1), searched)
        strategy, searched = found
        # The draw goes to the conjecture data directly: through ``data.draw`` each of the
        # thousands of choices of a run would also be noted for Hypothesis's printout, which
        # the machine's own trace replaces.
        data = self.data
        r = getattr(data, "conjecture_data", data).draw(strategy)
        return r if searched is None else _weighted(r, searched)


def _floored(weights: tuple[int, ...], floor: float) -> tuple[int, ...]:
    """``weights`` with every option raised to at least ``floor`` of their sum."""
    least = math.ceil(floor * sum(weights))
    return tuple(max(w, least) for w in weights)


@attrs.define
class RecordedBackend:
    """Replays recorded choices in order.

    A request whose label or option count differs from the record at that position raises
    :class:`TraceMismatch` (the target or qmodel changed since recording). When the record runs
    out, ``then`` decides if given; otherwise :class:`TraceMismatch` is raised.
    """

    recorded: Sequence[Choice]
    then: Backend | None = None
    position: int = 0

    def pick(self, label: str, n: int, weights: tuple[int, ...] | None) -> int:
        if self.position >= len(self.recorded):
            if self.then is not None:
                return self.then.pick(label, n, weights)
            raise TraceMismatch(
                f"the run asked for choice #{self.position} ({label!r} of {n}) but the trace "
                f"records only {len(self.recorded)} choices; the target or its configuration "
                "differs from the recorded run",
                position=self.position,
                expected="end of trace",
                actual=f"{label}/{n}",
            )
        c = self.recorded[self.position]
        if c.label != label or c.n != n:
            raise TraceMismatch(
                f"choice #{self.position}: the trace recorded {c.label!r} of {c.n} options but "
                f"the run asked for {label!r} of {n}; the target or its configuration differs "
                "from the recorded run",
                position=self.position,
                expected=f"{c.label}/{c.n}",
                actual=f"{label}/{n}",
            )
        self.position += 1
        return c.index


@attrs.define
class ChoiceSource:
    """Asks the backend and records every decision with more than one option.

    A decision with a single option is not a choice and is not recorded, so traces hold only
    what could have gone otherwise.
    """

    backend: Backend
    log: list[Choice] = attrs.field(factory=list)

    def choose(self, label: str, n: int, weights: tuple[int, ...] | None = None) -> int:
        """Return an option index in ``range(n)`` for the decision ``label``.

        ``weights``, if given, has one positive integer per option; only backends that sample
        (seeded, Hypothesis) use them.
        """
        if n <= 1:
            if n == 1:
                return 0
            raise ChoiceError(f"choice {label!r} has no options (n={n}); nothing can be chosen")
        if weights is not None and len(weights) != n:
            raise ChoiceError(f"choice {label!r}: {len(weights)} weights for {n} options")
        index = self.backend.pick(label, n, weights)
        if not 0 <= index < n:
            raise ChoiceError(f"choice {label!r}: backend returned {index}, not in range({n})")
        self.log.append(Choice(label, n, index))
        return index

    def pick(self, label: str, options: Sequence[T], weights: tuple[int, ...] | None = None) -> T:
        """Choose one of ``options`` (option 0 is the unsurprising one)."""
        return options[self.choose(label, len(options), weights)]

    def force(self, label: str, n: int, index: int) -> None:
        """Record a decision a script made instead of the backend (scripted scenarios).

        The record is then indistinguishable from a chosen run, so it replays.
        """
        if not 0 <= index < n:
            raise ChoiceError(f"forced choice {label!r}: {index} not in range({n})")
        if n > 1:
            self.log.append(Choice(label, n, index))

    def dumps(self) -> str:
        """The recorded choices as canonical JSON (same run, same bytes)."""
        return json.dumps([c.to_json() for c in self.log], separators=(",", ":"))

    @staticmethod
    def loads(text: str) -> list[Choice]:
        """Parse what :meth:`dumps` wrote."""
        raw = json.loads(text)
        if not isinstance(raw, list):
            raise ChoiceError("recorded choices are a JSON list of [label, n, index]")
        return [Choice.from_json(item) for item in raw]
