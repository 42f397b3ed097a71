"""The lane a user of pytest gets: qmodel's profiles under their own names, bounded settings for
``machine_for`` tests, the story of a failure in its message, report paths under pytest-xdist
(summary and JUnit XML), and generated regression tests left alone unless named."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import settings

from qmodel.exampledb import database_key, target_name
from qmodel.machine import machine_for
from qmodel.profiles import hypothesis_name
from qmodel.testcase import effective_settings

pytest_plugins = ["pytester"]

RACY = Path(__file__).parents[1] / "examples" / "workers" / "racy_queue.py"
#: The README's lines, in a test file of a project that has nothing else.
README_TEST = """\
import qmodel.machine
from worker import Worker

TestMyWorker = qmodel.machine.machine_for(Worker, protocol="queue").TestCase
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A project holding only a racy worker and the README's test file."""
    shutil.copy(RACY, pytester.path / "worker.py")
    pytester.makepyfile(test_worker=README_TEST)
    return pytester


def test_profiles_have_their_own_names() -> None:
    """qmodel's profiles are qmodel-dev/ci/nightly; Hypothesis's own ci profile is untouched."""
    assert settings.get_profile("qmodel-ci").max_examples == 150
    assert settings.get_profile("qmodel-ci").derandomize
    assert settings.get_profile("qmodel-dev").max_examples == 30
    assert settings.get_profile("qmodel-nightly").max_examples == 2_000
    assert settings.get_profile("ci").print_blob  # Hypothesis's, as Hypothesis defines it
    assert settings.get_profile("ci").stateful_step_count == 50


def test_settings_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """A TestCase's own settings win; then a chosen profile; Hypothesis's default and ci
    profiles do not count as a choice, so a machine falls back to qmodel-ci."""
    own = settings(max_examples=3)
    monkeypatch.setattr("qmodel.profiles.current_profile_name", lambda: "default")
    assert effective_settings(own) == (own, "ci")
    assert effective_settings(None) == (settings.get_profile("qmodel-ci"), "ci")
    monkeypatch.setattr("qmodel.profiles.current_profile_name", lambda: "ci")
    assert effective_settings(None) == (settings.get_profile("qmodel-ci"), "ci")
    monkeypatch.setattr("qmodel.profiles.current_profile_name", lambda: "qmodel-nightly")
    assert effective_settings(None) == (settings.get_profile("qmodel-nightly"), "nightly")
    settings.register_profile("users-own", max_examples=7)
    monkeypatch.setattr("qmodel.profiles.current_profile_name", lambda: "users-own")
    assert effective_settings(None) == (settings.get_profile("users-own"), "ci")


def test_hypothesis_profile_option_takes_qmodel_names(project: pytest.Pytester) -> None:
    """--hypothesis-profile=qmodel-dev is a profile pytest knows (it was an INTERNALERROR)."""
    result = project.runpytest_subprocess(
        "-p", "no:cacheprovider", "--hypothesis-profile=qmodel-dev"
    )
    result.assert_outcomes(failed=1)
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


def test_racy_worker_fails_with_the_story(project: pytest.Pytester) -> None:
    """A plain `pytest` in a project with no conftest and no profile flag fails the racy worker
    with the shrunk story as requests and how to get the report, not Hypothesis's draws."""
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "VIOLATION of " in out and " against worker:Worker" in out
    assert "virtual time since the start:" in out
    result.stdout.fnmatch_lines(["* 1. +0.000 s  *", "*. +0.000 s  *@* GET /api/*"])
    result.stdout.fnmatch_lines(
        ["*pytest --qmodel-report DIR test_worker.py::TestMyWorker::runTest*"]
    )
    assert "Draw 1 (verb)" not in out


def test_reports_under_xdist_reach_summary_and_junit(project: pytest.Pytester) -> None:
    """pytest -n 2 --qmodel-report DIR: the files are written, the summary lists them (from
    the workers' reports), and the JUnit XML carries their paths as properties."""
    pytest.importorskip("xdist")
    project.makepyfile(
        test_sound="""
from hypothesis import settings
import qmodel.machine
from qmodel.workers import SoundWorker

TestSound = qmodel.machine.machine_for(SoundWorker).TestCase
TestSound.settings = settings(settings.get_profile("qmodel-ci"), max_examples=3)
"""
    )
    reports = project.path / "reports"
    junit = project.path / "junit.xml"
    result = project.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "-n",
        "2",
        "--qmodel-report",
        str(reports),
        f"--junitxml={junit}",
    )
    result.assert_outcomes(passed=1, failed=1)
    # One report, trace and regression test per distinct bug the search found.
    markdowns = sorted(p for p in reports.iterdir() if p.suffix == ".md")
    written = sorted(p.name for p in reports.iterdir())
    assert markdowns and len(written) == 3 * len(markdowns), written
    assert sum(name.startswith("test_regression_") for name in written) == len(markdowns)
    # The summary lists every report, in the order the bugs were found (not the files' order).
    summary = result.stdout.str().split("= qmodel reports =", 1)
    assert len(summary) == 2, result.stdout.str()
    for md in markdowns:
        assert f"test_worker.py::TestMyWorker::runTest: {md} (trace " in summary[1], md
    props = [(p.get("name"), p.get("value")) for p in ET.parse(junit).getroot().iter("property")]
    assert sorted(v for k, v in props if k == "qmodel_report") == [str(md) for md in markdowns]
    assert sorted(v for k, v in props if k == "qmodel_trace") == [
        str(md.with_suffix(".json")) for md in markdowns
    ]


def test_every_distinct_bug_is_reported(project: pytest.Pytester) -> None:
    """After the first bug the search goes on, as qmodel check does: the failure lists every
    distinct (invariant, rule) it found, each with its minimised story, and --qmodel-report
    writes a report per bug whose trace replays that bug."""
    from qmodel.trace import load

    reports = project.path / "reports"
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "--qmodel-report", reports)
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    # How many the budget reaches depends on the search; the claim race and its 5xx always.
    found = re.search(r"The search found (\d+) distinct bugs:", out)
    assert found is not None, out
    count = int(found.group(1))
    assert count >= 2
    result.stdout.fnmatch_lines(
        [
            "*1. platform (rule 5xx): * steps, * KV operations*, first seen at example *",
            "*2. *: * steps, * KV operations*, first seen at example *",
            "*Bug 1 of *:",
            "*VIOLATION of platform (safety) against worker:Worker",
            f"*Bug {count} of {count}:",
        ]
    )
    assert "VIOLATION of single-claim (safety) against worker:Worker" in out
    assert "minimised from " in out
    traces = sorted(reports.glob("*.json"))
    assert len(traces) == count
    bugs = set()
    for path in traces:
        trace = load(path)
        assert trace.search.minimised_kv_ops is not None
        assert trace.search.minimised_kv_ops <= trace.search.shrunk_kv_ops
        # Replayed exactly where the worker is importable, as a user would.
        replayed = project.run(
            sys.executable, "-m", "qmodel", "replay", path, "--target", trace.target, "--json"
        )
        assert replayed.ret == 1, replayed.stderr.str()
        bugs.add((trace.expected.invariant, trace.expected.values.get("rule")))
        assert json.loads(replayed.stdout.str())["invariant"] == trace.expected.invariant
    assert {("platform", "5xx"), ("single-claim", None)} <= bugs
    assert len(bugs) == count


def test_generated_regression_tests_are_collected_only_when_named(
    pytester: pytest.Pytester,
) -> None:
    """A report folder inside a project does not turn a plain `pytest` red: its generated test
    runs when it, or its folder, is named."""
    source = Path(__file__).parents[1] / "docs" / "examples"
    reports = pytester.path / "reports"
    reports.mkdir()
    for name in ("CLAIM_NOT_ATOMIC.json", "test_regression_CLAIM_NOT_ATOMIC.py"):
        shutil.copy(source / name, reports / name)
    pytester.makepyfile(test_plain="def test_ok():\n    assert True\n")
    plain = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    plain.assert_outcomes(passed=1)
    named = pytester.runpytest_inprocess("-p", "no:cacheprovider", "reports")
    named.assert_outcomes(failed=1)
    by_file = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "reports/test_regression_CLAIM_NOT_ATOMIC.py"
    )
    by_file.assert_outcomes(failed=1)


def test_database_keys_are_distinct_per_target_and_configuration() -> None:
    """Two targets, two protocols or two invariant selections never share a key; the same
    target and configuration give the same key, in this process and in another one."""
    from qmodel.catalog import entry
    from qmodel.workers import SoundWorker

    def key(target: object, **kw: object) -> bytes:
        return machine_for(target, **kw)._hypothesis_internal_add_digest  # type: ignore[arg-type]

    keys = {
        key(SoundWorker),
        key(SoundWorker, protocol="do"),
        key(SoundWorker, invariants=["one-reply"]),
        key(entry("CLAIM_NOT_ATOMIC").target),
        key(entry("STALE_CACHE_RMW").target),
    }
    assert len(keys) == 5
    assert key(SoundWorker) == key(SoundWorker)
    code = (
        "from qmodel.machine import machine_for; from qmodel.workers import SoundWorker; "
        "print(machine_for(SoundWorker)._hypothesis_internal_add_digest.decode())"
    )
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert other.stdout.strip() == key(SoundWorker).decode()
    assert target_name(SoundWorker) == "qmodel.workers.sound:SoundWorker"
    assert database_key("a", "b", ["x", "y"]) == database_key("a", "b", ["y", "x"])
    assert hypothesis_name("ci") == "qmodel-ci"


def test_gate_with_a_shared_database_is_pinned_and_saves(
    project: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With QMODEL_EXAMPLE_DB the default qmodel-ci run saves its failure to the shared
    database, and, no longer derandomized, is pinned to one seed: two machines with two empty
    databases search the same way and tell the same story."""
    stories = []
    for machine in ("one", "two"):
        shared = tmp_path / machine / "shared"
        monkeypatch.setenv("QMODEL_EXAMPLE_DB", str(shared))
        monkeypatch.setenv("HYPOTHESIS_STORAGE_DIRECTORY", str(tmp_path / machine / "local"))
        result = project.runpytest_subprocess("-p", "no:cacheprovider")
        result.assert_outcomes(failed=1)
        out = result.stdout.str()
        stories.append(out[out.index("VIOLATION of ") : out.index("The bug report")])
        assert any(p.is_file() for p in shared.rglob("*")), "nothing saved to the shared database"
    assert stories[0] == stories[1]
