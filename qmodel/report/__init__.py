"""Bug reports from counterexamples: Markdown with a sequence diagram, a trace, a regression test.

:func:`write_report` writes, for one recorded counterexample (a :class:`~qmodel.trace.Trace`),
three files into a directory:

* ``<id>.md``: the report (see :mod:`qmodel.report.markdown`), to paste into an issue;
* ``<id>.json``: the trace, which ``qmodel replay <id>.json`` runs again exactly;
* ``test_regression_<id>.py``: a pytest test that replays it and fails while the bug is there.

``<id>`` is the catalog id when the target is a catalog design (``CLAIM_NOT_ATOMIC``), else the
invariant and a short hash of the run (``single_claim_1a2b3c4d``): stable for the same run,
safe in a file name and a Python identifier. A second report of the same catalog design into
the same directory replaces the first.

The report's detail (values read and written, stale reads, 429s) is collected by replaying the
trace with the KV stores' recorder on (:mod:`qmodel.report.detail`), never during a search.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import attrs

from qmodel.report.detail import collect
from qmodel.report.markdown import Paths, render
from qmodel.report.regression import regression_test
from qmodel.trace import Trace

__all__ = ["ReportFiles", "report_id", "write_report"]


@attrs.frozen
class ReportFiles:
    """The three files of a report."""

    markdown: Path
    trace: Path
    test: Path


def report_id(trace: Trace) -> str:
    """``CLAIM_NOT_ATOMIC`` for a catalog target, else ``<invariant>_<hash>``."""
    if trace.target.startswith("catalog:"):
        rid = trace.target.split(":", 1)[1]
    else:
        rid = f"{trace.expected.invariant}_{trace.digest()}"
    rid = re.sub(r"\W", "_", rid)
    return rid if rid[:1].isalpha() or rid[:1] == "_" else f"t_{rid}"


def write_report(trace: Trace, directory: str | Path, *, name: str | None = None) -> ReportFiles:
    """Write the report, the trace and the regression test of ``trace`` into ``directory``
    (created if missing), named ``name`` (default :func:`report_id`). The trace is replayed
    first (strictly) to collect the detail; a
    trace that does not replay raises :class:`~qmodel.replay.ReplayMismatch`.

    Each file is replaced whole or not at all: all three are written beside their final names
    first and renamed into place only once every one is written, so a run stopped half-way (or
    a full disk) never leaves a truncated trace that ``qmodel replay`` would refuse.
    """
    detail = collect(trace)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    rid = name or report_id(trace)
    files = ReportFiles(
        markdown=out / f"{rid}.md",
        trace=out / f"{rid}.json",
        test=out / f"test_regression_{rid}.py",
    )
    pending: list[tuple[Path, Path]] = []
    try:
        for final, write in (
            (files.trace, trace.write),
            (
                files.markdown,
                lambda p: p.write_text(
                    render(detail, Paths(str(files.trace), str(files.test))), encoding="utf-8"
                ),
            ),
            (files.test, lambda p: p.write_text(regression_test(trace, rid), encoding="utf-8")),
        ):
            # Beside the final name (a rename within one folder is atomic); the process id keeps
            # two runs writing into one folder apart.
            temp = out / f".{final.name}.{os.getpid()}.tmp"
            pending.append((temp, final))
            write(temp)
        for temp, final in pending:
            os.replace(temp, final)
    finally:
        for temp, _ in pending:
            temp.unlink(missing_ok=True)
    return files
