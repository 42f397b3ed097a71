"""Traces and replay: a counterexample the machine found runs again exactly, byte for byte; a
malformed or mismatched trace is refused with exit 2 naming the field; the faithful replay of
the regression test fails on the buggy design and passes on the sound one.

The counterexamples here come from the machine's generation phase (no shrinking, a second or
so each); the ``slow`` test at the end runs the full ``ci`` search with ``--report`` for every
catalog id.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import attrs
import hypothesis
import pytest
from hypothesis import Phase, seed, settings
from hypothesis.stateful import get_state_machine_test
from qmodel.invariants.chat import ALL as CHAT_INVARIANTS

from qmodel import cli
from qmodel.catalog import CATALOG, entry
from qmodel.machine import InvariantViolation, machine_for
from qmodel.replay import (
    FaithfulBackend,
    RegressionFailure,
    ReplayMismatch,
    regression_check,
    replay_faithful,
    replay_strict,
    retrace,
    trace_of,
)
from qmodel.sim.choices import Choice, ChoiceSource
from qmodel.trace import Trace, TraceFileError, load, loads

#: The chat protocol's bugs (these tests check them against the chat invariants and the chat
#: sound design; the jobs protocol's are replayed in test_jobs.py, the Queues eras' in
#: test_queues.py).
BUGS = [i for i, e in CATALOG.items() if e.invariants and e.protocol in ("patch", "queue", "do")]


@functools.cache
def found(catalog_id: str, examples: int = 300) -> InvariantViolation:
    """The first counterexample the machine's generation phase finds for ``catalog_id``."""
    e = entry(catalog_id)
    cls = machine_for(e.target, protocol=e.protocol)
    budget = settings(
        settings.get_profile("qmodel-ci"), max_examples=examples, phases=[Phase.generate]
    )
    try:
        seed(0)(get_state_machine_test(cls, settings=budget))()
    except InvariantViolation as exc:
        return exc
    raise AssertionError(f"{catalog_id}: no violation in {examples} examples")


@functools.cache
def trace_for(catalog_id: str) -> Trace:
    exc = found(catalog_id)
    return trace_of(
        exc.world, exc.violation, target=f"catalog:{catalog_id}", checked=CHAT_INVARIANTS
    )


def written(tmp_path: Path, trace: Trace, name: str = "t.json") -> Path:
    return trace.write(tmp_path / name)


def replay_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["replay", *argv])
    out, err = capsys.readouterr()
    return code, out, err


# -- the trace file --------------------------------------------------------------------------------


def test_trace_round_trips_byte_for_byte() -> None:
    """A trace read back from its text is equal, and writes the same bytes again."""
    trace = trace_for("CLAIM_NOT_ATOMIC")
    text = trace.dumps()
    again = loads(text)
    assert again == trace
    assert again.dumps() == text


def test_trace_records_what_the_run_showed() -> None:
    """The trace holds the target, the design's switches, the verbs, every choice and the log."""
    exc = found("CLAIM_NOT_ATOMIC")
    trace = trace_for("CLAIM_NOT_ATOMIC")
    assert trace.target == "catalog:CLAIM_NOT_ATOMIC"
    assert trace.design == "CommentsWorker(atomic_claim=False)"
    assert trace.verbs == tuple(exc.world.verbs)
    assert trace.choices == tuple(exc.world.platform.choices.log)
    assert trace.expected.invariant == exc.violation.invariant
    assert trace.expected.log == tuple(exc.world.log)
    assert trace.expected.steps == len(exc.world.log)
    assert trace.expected.at == "settled" or trace.expected.at.startswith("verb ")
    raw = json.loads(trace.dumps())
    assert list(raw)[:5] == ["format", "version", "qmodel", "hypothesis", "target"]
    assert raw["hypothesis"] == hypothesis.__version__


# -- exact replay ----------------------------------------------------------------------------------


@pytest.mark.parametrize("catalog_id", ["CLAIM_NOT_ATOMIC", "CACHE_LOST_UPDATE", "TS_KEY_404"])
def test_replay_reproduces_the_machine_run(catalog_id: str) -> None:
    """Replaying the verbs and choices shows the machine's violation, at the same step count."""
    exc = found(catalog_id)
    outcome = replay_strict(trace_for(catalog_id))
    assert outcome.violation == exc.violation
    assert outcome.world.log == exc.world.log


def test_replayed_trace_is_byte_identical() -> None:
    """The trace of the replayed run is the original trace, byte for byte."""
    trace = trace_for("CACHE_LOST_UPDATE")
    assert retrace(trace, replay_strict(trace)).dumps() == trace.dumps()


def test_replay_command_exits_1_with_the_same_invariant_and_steps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """qmodel replay TRACE --json: exit 1, the recorded invariant and the recorded step count."""
    trace = trace_for("CLAIM_NOT_ATOMIC")
    code, out, err = replay_cli(capsys, str(written(tmp_path, trace)), "--json")
    assert code == 1, err
    obj = json.loads(out)
    assert obj["verdict"] == "violation"
    assert obj["invariant"] == trace.expected.invariant
    assert obj["steps"] == trace.expected.steps == len(obj["trace"])
    assert obj["trace"] == list(trace.expected.log)


def test_replay_command_writes_the_same_trace_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """qmodel replay TRACE --report DIR writes the replayed run's trace: the same bytes."""
    trace = trace_for("CLAIM_NOT_ATOMIC")
    path = written(tmp_path, trace, "CLAIM_NOT_ATOMIC.json")
    code, _, err = replay_cli(capsys, str(path), "--report", str(tmp_path / "again"))
    assert code == 1, err
    assert (tmp_path / "again" / "CLAIM_NOT_ATOMIC.json").read_bytes() == path.read_bytes()


# -- bad traces: exit 2 with what does not match ---------------------------------------------------


def edited(tmp_path: Path, change) -> Path:  # type: ignore[no-untyped-def]
    raw = json.loads(trace_for("CLAIM_NOT_ATOMIC").dumps())
    change(raw)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(raw))
    return path


def test_not_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file that is not JSON exits 2 naming the line and what a trace is."""
    path = tmp_path / "t.json"
    path.write_text('{"format": "qmodel-trace",\n  "version": 1,\n  oops')
    code, out, err = replay_cli(capsys, str(path))
    assert code == 2 and out == ""
    assert f"qmodel: error: {path} is not valid JSON (line 3, column 3" in err
    assert "record it again with qmodel check ... --report DIR" in err


def test_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    """A trace file that does not exist exits 2 and says what to give."""
    code, _, err = replay_cli(capsys, "no/such/trace.json")
    assert code == 2
    assert "trace file no/such/trace.json does not exist" in err


def test_not_a_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """JSON that is not a qmodel trace exits 2 naming the format field."""
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"verdict": "violation"}))
    code, _, err = replay_cli(capsys, str(path))
    assert code == 2
    assert "field 'format' is None, not 'qmodel-trace'; this is not a qmodel trace file" in err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.pop("verbs"), "field 'verbs' is missing"),
        (
            lambda r: r.__setitem__("version", 3),
            "field 'version' is 3, but this qmodel reads trace format 2",
        ),
        (
            lambda r: r.__setitem__("version", 1),
            "trace format 1 (qmodel 0.1.0) kept the verbs apart from the choices; this qmodel "
            "records them in one stream (format 2) and cannot replay it. Re-create it: run the "
            "qmodel check that found it again with --report DIR; the same seed finds the same bug",
        ),
        (lambda r: r["choices"].__setitem__(0, ["step", 2, 5]), "choices[0] is ['step', 2, 5]"),
        (
            lambda r: r["verbs"].__setitem__(0, ["jump", 1]),
            "field 'verbs': verbs[0] is 'jump', which protocol 'queue' does not have (its verbs:"
            " run, post, advance, crash, burst)",
        ),
        (lambda r: r["config"].__setitem__("shards", 3), "field 'config' has 'shards'"),
        (lambda r: r["config"].__setitem__("bots", "two"), "field 'config.bots' is 'two'"),
        (lambda r: r.__setitem__("invariants", ["one-replies"]), "unknown invariant 'one-replies'"),
        (lambda r: r["expected"].pop("steps"), "field 'expected.steps' is missing"),
    ],
    ids=[
        "missing",
        "version",
        "version-1",
        "choice",
        "verb",
        "config",
        "config-type",
        "invariant",
        "expected",
    ],
)
def test_malformed_trace_exits_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change,
    message: str,  # type: ignore[no-untyped-def]
) -> None:
    """Each kind of damage exits 2 with a message naming the field."""
    code, out, err = replay_cli(capsys, str(edited(tmp_path, change)))
    assert code == 2 and out == "", err
    assert message in err


def test_other_target_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Asking to replay against another target exits 2 and points to the regression test."""
    path = written(tmp_path, trace_for("CLAIM_NOT_ATOMIC"))
    code, _, err = replay_cli(capsys, str(path), "--target", "sound")
    assert code == 2
    assert (
        "field 'target': the trace was recorded against catalog:CLAIM_NOT_ATOMIC, not sound" in err
    )
    assert "QMODEL_TARGET=sound" in err


def test_other_version_of_the_design_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A trace of another version of the design (other switches) exits 2 naming both."""
    path = edited(tmp_path, lambda r: r.__setitem__("design", "CommentsWorker(atomic_claim=True)"))
    code, _, err = replay_cli(capsys, str(path))
    assert code == 2
    assert (
        "field 'design': the trace was recorded against CommentsWorker(atomic_claim=True), but "
        "catalog:CLAIM_NOT_ATOMIC is now CommentsWorker(atomic_claim=False)"
    ) in err


def test_target_of_another_catalog_id_diverges(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same verbs and choices against another design (its fingerprint edited to match)
    diverge, and the replay says where rather than reporting something else."""

    def change(r):  # type: ignore[no-untyped-def]
        r["target"] = "sound"
        r["design"] = "SoundWorker()"

    code, _, err = replay_cli(capsys, str(edited(tmp_path, change)))
    assert code == 2
    assert "qmodel: error: field 'choices': the replay diverged from the trace: choice #" in err


def test_edited_log_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A trace whose recorded log differs from what the run shows exits 2 naming the step."""
    path = edited(tmp_path, lambda r: r["expected"]["log"].__setitem__(0, "t=0 something else"))
    code, _, err = replay_cli(capsys, str(path))
    assert code == 2
    assert "field 'expected.log': step 1 differs: the trace records 't=0 something else'" in err


def test_strict_replay_raises_a_mismatch_record() -> None:
    """The mismatch is an exception with the field, for programs that replay."""
    trace = attrs.evolve(trace_for("CLAIM_NOT_ATOMIC"), design="CommentsWorker()")
    with pytest.raises(ReplayMismatch) as info:
        replay_strict(trace)
    assert info.value.field == "design"
    with pytest.raises(TraceFileError) as bad:
        loads("[]")
    assert "a trace is a JSON object, not list" in str(bad.value)


# -- faithful replay and the regression check ------------------------------------------------------


def test_faithful_backend_follows_the_record_then_takes_option_0() -> None:
    """Recorded choices are replayed while label and option count match; then option 0."""
    backend = FaithfulBackend([Choice("step", 3, 2), Choice("kv.ryw", 2, 1), Choice("step", 2, 1)])
    source = ChoiceSource(backend)
    assert source.choose("step", 3) == 2
    assert source.choose("kv.ryw", 2) == 1
    assert backend.diverged_at is None
    assert source.choose("step", 4) == 0  # the record says 2 options: diverged
    assert backend.diverged_at == 2
    assert (
        "the trace recorded 'step' of 2 options, the run asked for 'step' of 4"
        in backend.diverged_on
    )
    assert source.choose("step", 2) == 0  # and stays with option 0


@pytest.mark.parametrize("catalog_id", ["CLAIM_NOT_ATOMIC", "TS_KEY_404"])
def test_regression_fails_on_the_bug_and_passes_on_sound(tmp_path: Path, catalog_id: str) -> None:
    """The regression check raises with the violation against the catalog design, and passes
    against the sound design (which has the same verbs applied, its own schedule)."""
    path = written(tmp_path, trace_for(catalog_id))
    with pytest.raises(RegressionFailure) as info:
        regression_check(path)
    v = found(catalog_id).violation
    assert f"catalog:{catalog_id} still breaks {v.invariant}" in str(info.value)
    assert v.render() in str(info.value)
    assert "replayed with the recorded schedule, exactly" in str(info.value)
    outcome = regression_check(path, "sound")
    assert outcome.violation is None
    assert outcome.world.verbs == list(trace_for(catalog_id).verbs)


def test_faithful_replay_on_the_recorded_target_is_exact() -> None:
    """Against the recorded target, the faithful replay never diverges."""
    trace = trace_for("CLAIM_NOT_ATOMIC")
    outcome, backend = replay_faithful(trace)
    assert backend.diverged_at is None
    assert outcome.world.log == list(trace.expected.log)


def test_load_gives_what_was_written(tmp_path: Path) -> None:
    """load(path) reads what Trace.write wrote."""
    trace = trace_for("CLAIM_NOT_ATOMIC")
    assert load(written(tmp_path, trace)) == trace


# -- the whole loop, for every catalog id (slow) ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("catalog_id", BUGS)
def test_check_report_replay_regression(tmp_path: Path, catalog_id: str) -> None:
    """qmodel check --profile ci --report writes the three files; qmodel replay exits 1 with
    the same invariant and steps; the regression test fails on the catalog target and passes
    on sound."""
    report = tmp_path / "report"
    check = subprocess.run(
        [
            sys.executable,
            "-m",
            "qmodel.cli",
            "check",
            "--target",
            f"catalog:{catalog_id}",
            "--profile",
            "ci",
            "--json",
            "--report",
            str(report),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 1, check.stderr
    result = json.loads(check.stdout)
    files = sorted(p.name for p in report.iterdir())
    assert files == [f"{catalog_id}.json", f"{catalog_id}.md", f"test_regression_{catalog_id}.py"]
    replay = subprocess.run(
        [
            sys.executable,
            "-m",
            "qmodel.cli",
            "replay",
            str(report / f"{catalog_id}.json"),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert replay.returncode == 1, replay.stderr
    again = json.loads(replay.stdout)
    assert (again["invariant"], again["steps"]) == (result["invariant"], result["steps"])
    test = str(report / f"test_regression_{catalog_id}.py")
    pytest_cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test]
    buggy = subprocess.run(pytest_cmd, capture_output=True, text=True, check=False)
    assert buggy.returncode == 1, buggy.stdout
    assert f"still breaks {result['invariant']}" in buggy.stdout
    fixed = subprocess.run(
        pytest_cmd,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "QMODEL_TARGET": "sound"},
    )
    assert fixed.returncode == 0, fixed.stdout
