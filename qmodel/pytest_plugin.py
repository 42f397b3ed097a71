"""The pytest plugin: ``pytest --qmodel-report DIR`` writes a bug report for every qmodel
machine that fails in the run.

For each test that fails with a :class:`~qmodel.machine.InvariantViolation` (the machines of
:func:`qmodel.machine.machine_for`, or any :class:`~qmodel.machine.QueueMachine`), the
counterexample Hypothesis shrank is written to ``DIR`` as ``qmodel check --report`` writes it:
``<id>.md``, ``<id>.json`` and ``test_regression_<id>.py``. The files are listed at the end of
the run. The test's own outcome is untouched; a report that cannot be written (a target qmodel
cannot name again, so the trace could not be replayed) is listed with the reason instead.

The plugin is registered through the ``pytest11`` entry point and imports nothing of qmodel
until a test fails with the option given.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["target_spec"]

_WRITTEN = pytest.StashKey[list[str]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("qmodel")
    group.addoption(
        "--qmodel-report",
        metavar="DIR",
        default=None,
        help="write a bug report (DIR/<id>.md), its trace (DIR/<id>.json) and a regression "
        "test (DIR/test_regression_<id>.py) for every qmodel machine that fails",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_WRITTEN] = []
    directory = config.getoption("qmodel_report", default=None)
    if directory is not None and Path(directory).exists() and not Path(directory).is_dir():
        raise pytest.UsageError(
            f"--qmodel-report {directory}: that path is a file; give a directory (it is created "
            "if missing)"
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # A wrapper: the unittest plugin moves a TestCase's failure into ``call.excinfo`` in its own
    # implementation of this hook, which must have run first.
    report = yield
    directory = item.config.getoption("qmodel_report", default=None)
    if call.when != "call" or call.excinfo is None or not directory:
        return report
    found = _violation(call.excinfo.value)
    if found is None:
        return report
    lines = item.config.stash[_WRITTEN]
    try:
        files = _write(item, found, directory)
    except Exception as err:  # noqa: BLE001 - a report must never change the test's outcome
        lines.append(f"{item.nodeid}: no report written: {type(err).__name__}: {err}")
        return report
    lines.append(f"{item.nodeid}: {files.markdown} (trace {files.trace}, test {files.test})")
    return report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    lines = config.stash.get(_WRITTEN, [])
    if not lines:
        return
    terminalreporter.section("qmodel reports")
    for line in lines:
        terminalreporter.write_line(line)


def _violation(exc: BaseException) -> Any:
    """The :class:`InvariantViolation` in ``exc`` (possibly inside an exception group)."""
    from qmodel.machine import InvariantViolation

    if isinstance(exc, InvariantViolation):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _violation(inner)
            if found is not None:
                return found
    return None


def _write(item: pytest.Item, found: Any, directory: str) -> Any:
    from qmodel.replay import trace_of
    from qmodel.report import write_report
    from qmodel.trace import Search

    checked = getattr(found, "checked", None) or found.world.protocol.invariants
    trace = trace_of(
        found.world,
        found.violation,
        target=target_spec(found.world.target),
        checked=checked,
        search=Search(command=f"pytest {item.nodeid}"),
    )
    return write_report(trace, directory)


def target_spec(target: Any) -> str:
    """A ``--target`` text naming ``target`` again: ``catalog:ID`` or ``sound`` for a catalog
    design, ``seed-000`` for the default worker, else ``pkg.module:Class`` (or the file path
    when the module cannot be imported by name)."""
    from qmodel.catalog import CATALOG
    from qmodel.targets import DEFAULT_TARGET, resolve

    text = repr(target)
    for e in CATALOG.values():
        if repr(e.target()) == text:
            return "sound" if e.id == "sound" else f"catalog:{e.id}"
    if repr(resolve(None).factory()) == text:
        return DEFAULT_TARGET
    if inspect.ismodule(target):
        return _importable(target.__name__, getattr(target, "__file__", None), None)
    cls = type(target)
    module = inspect.getmodule(cls)
    return _importable(cls.__module__, getattr(module, "__file__", None), cls.__qualname__)


def _importable(modname: str, path: str | None, attr: str | None) -> str:
    from importlib.machinery import PathFinder

    # On the path, not merely in sys.modules (a worker file is loaded under a made-up name).
    top = modname.split(".", 1)[0]
    ok = modname != "__main__" and (
        top in sys.builtin_module_names or PathFinder.find_spec(top) is not None
    )
    where = modname if ok or path is None else path
    return f"{where}:{attr}" if attr else where
