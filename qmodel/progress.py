"""Progress of a search on a terminal: examples run, steps, elapsed time, and the phase.

``qmodel check`` shows one live line on standard error while it searches: the phase
(``searching`` until a violation is seen, then ``shrinking``), the examples run (of the budget,
while searching), the machine steps taken across examples, the length of the shortest failing
run so far, and the elapsed time. Only when standard error is a terminal and ``--json`` is not
given; otherwise :func:`progress_for` gives a display that does nothing. The line is drawn by
`rich <https://github.com/Textualize/rich>`_ and removed when the search ends.
"""

from __future__ import annotations

import sys
from typing import IO, Any

__all__ = ["NoProgress", "SearchProgress", "progress_for"]


class NoProgress:
    """Shows nothing (not a terminal, or ``--json``)."""

    def __enter__(self) -> NoProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def example(self, steps: int, failing_steps: int | None) -> None:
        """An example ended after ``steps`` verbs; ``failing_steps`` is its log length when it
        broke an invariant."""


class SearchProgress(NoProgress):
    """The live line (see the module docstring)."""

    def __init__(self, total: int, stream: IO[str]) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.total = total
        self.examples = 0
        self.steps = 0
        self.shortest: int | None = None
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.fields[phase]}[/bold]"),
            BarColumn(bar_width=20),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
            console=Console(file=stream),
            transient=True,
        )
        self._task = self._progress.add_task("search", total=total, phase="searching", counts="")

    def __enter__(self) -> SearchProgress:
        self._progress.start()
        self._show()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.stop()

    def example(self, steps: int, failing_steps: int | None) -> None:
        self.examples += 1
        self.steps += steps
        if failing_steps is not None and (self.shortest is None or failing_steps < self.shortest):
            self.shortest = failing_steps
        self._show()

    def _show(self) -> None:
        shrinking = self.shortest is not None
        counts = f"{self.examples} examples, {self.steps} steps"
        if shrinking:
            counts += f", shortest failing run {self.shortest} steps"
        else:
            counts = f"{self.examples}/{self.total} examples, {self.steps} steps"
        self._progress.update(
            self._task,
            completed=self.total if shrinking else min(self.examples, self.total),
            phase="shrinking" if shrinking else "searching",
            counts=counts,
        )


def progress_for(total: int, *, json_output: bool, stream: IO[str] | None = None) -> NoProgress:
    """The display for a search of ``total`` examples: live on a terminal, else nothing."""
    out = stream if stream is not None else sys.stderr
    if json_output or not _is_tty(out):
        return NoProgress()
    return SearchProgress(total, out)


def _is_tty(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False
