"""The pytest plugin: ``--qmodel-report DIR`` writes the report files for every failing machine of
a test run, lists them at the end, and leaves the test outcomes alone."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

import pytest

from qmodel.targets import resolve, target_spec
from qmodel.trace import load

pytest_plugins = ["pytester"]

TARGETS = Path(__file__).parent / "targets"

MACHINES = """
from hypothesis import Phase, settings

from qmodel.catalog import entry
from qmodel.machine import machine_for
from qmodel.profiles import register

register()
QUICK = settings(settings.get_profile("qmodel-ci"), max_examples=300, phases=[Phase.generate])

claims = entry("CLAIM_NOT_ATOMIC")
TestClaims = machine_for(
    claims.target, protocol=claims.protocol, invariants=["single-claim", "platform"]
).TestCase
TestClaims.settings = QUICK

TestSound = machine_for(entry("sound").target).TestCase
TestSound.settings = settings(QUICK, max_examples=3)


def test_unrelated_failure():
    assert 1 + 1 == 3
"""


def test_plugin_is_registered_by_entry_point() -> None:
    """pip install registers the plugin under pytest11, so the option needs no -p."""
    names = {e.name: e.value for e in entry_points(group="pytest11")}
    assert names.get("qmodel") == "qmodel.pytest_plugin"


def test_failing_machine_gets_a_report(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """One failing machine, a report for each distinct bug it met (the first under the
    machine's name); the sound machine passes, an ordinary failure is left alone, and the
    summary lists the files."""
    pytester.makepyfile(test_machines=MACHINES)
    out = tmp_path / "reports"
    result = pytester.runpytest_subprocess("--qmodel-report", str(out), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=2)
    names = {p.name for p in out.iterdir()}
    first = {"CLAIM_NOT_ATOMIC.json", "CLAIM_NOT_ATOMIC.md", "test_regression_CLAIM_NOT_ATOMIC.py"}
    assert first <= names
    # Each further distinct bug the search met has its own trace, report and test.
    for extra in sorted(n for n in names - first if n.endswith(".json")):
        stem = extra.removesuffix(".json")
        assert stem.startswith("CLAIM_NOT_ATOMIC__")
        assert {f"{stem}.md", f"test_regression_{stem}.py"} <= names
    assert len(names) % 3 == 0
    result.stdout.fnmatch_lines(
        ["*= qmodel reports =*", f"test_machines.py::TestClaims*: {out / 'CLAIM_NOT_ATOMIC.md'}*"]
    )
    trace = load(out / "CLAIM_NOT_ATOMIC.json")
    assert trace.target == "catalog:CLAIM_NOT_ATOMIC"
    assert set(trace.invariants) == {"single-claim", "platform"}  # what the machine checked
    assert "test_machines.py::TestClaims" in str(trace.search.command)


def test_without_the_option_nothing_is_written(pytester: pytest.Pytester) -> None:
    """Without --qmodel-report the plugin does nothing."""
    pytester.makepyfile(test_machines=MACHINES)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", "Claims")
    result.assert_outcomes(failed=1)
    assert "qmodel reports" not in result.stdout.str()
    assert not list(pytester.path.glob("**/*.md"))


def test_option_naming_a_file_is_a_usage_error(pytester: pytest.Pytester) -> None:
    """--qmodel-report pointing at a file is refused before anything runs."""
    pytester.makepyfile(test_machines=MACHINES)
    (pytester.path / "afile").write_text("")
    result = pytester.runpytest_subprocess("--qmodel-report", "afile")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--qmodel-report afile: that path is a file; give a directory*"])


def test_target_spec_names_targets_again() -> None:
    """A catalog design is named by its id; a worker loaded from a file by the file."""
    from qmodel.catalog import entry

    assert target_spec(entry("STALE_CACHE_RMW").target()) == "catalog:STALE_CACHE_RMW"
    assert target_spec(entry("sound").target()) == "sound"
    assert target_spec(resolve(None).factory()) == "seed-000"
    module = resolve(str(TARGETS / "module_worker.py")).factory()
    assert target_spec(module) == str(TARGETS / "module_worker.py")
