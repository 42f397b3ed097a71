"""The command line around reports: ``qmodel check --report DIR``, the catalog's fields, and the
progress line (on a terminal only, never with ``--json``)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from qmodel import cli, profiles
from qmodel.progress import NoProgress, SearchProgress, progress_for
from qmodel.trace import load


@pytest.fixture
def quick_shrink(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ci search with almost no shrinking (the full budget is for the slow tests): the
    budget's first figure is the number of successful shrinks."""
    budget = profiles.SHRINK_BUDGETS["ci"]
    monkeypatch.setitem(profiles.SHRINK_BUDGETS, "ci", (min(budget[0], 3), *budget[1:]))


def test_check_report_writes_the_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], quick_shrink: None
) -> None:
    """check --report DIR --json: exit 1, one JSON object on stdout, the three files in DIR
    (their paths on stderr), and a trace that records the search's seed and command."""
    argv = ["check", "--target", "catalog:CLAIM_NOT_ATOMIC", "--max-examples", "40"]
    code = cli.main([*argv, "--stop-at-first", "--json", "--report", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 1
    obj = json.loads(out)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "CLAIM_NOT_ATOMIC.json",
        "CLAIM_NOT_ATOMIC.md",
        "test_regression_CLAIM_NOT_ATOMIC.py",
    ]
    assert f"Report: {tmp_path / 'CLAIM_NOT_ATOMIC.md'}" in err
    trace = load(tmp_path / "CLAIM_NOT_ATOMIC.json")
    assert trace.expected.invariant == obj["invariant"]
    assert trace.expected.steps == obj["steps"] and list(trace.expected.log) == obj["trace"]
    assert trace.search.seed == 0 and trace.search.profile == "ci"
    assert trace.search.command == (
        "qmodel check --target catalog:CLAIM_NOT_ATOMIC --profile ci --seed 0 --max-examples 40 "
        "--stop-at-first"
    )
    md = (tmp_path / "CLAIM_NOT_ATOMIC.md").read_text()
    assert f"`{trace.search.command}` after {obj['examples']} examples" in md


def test_check_without_violation_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No violation, no report: the directory is not even created."""
    code = cli.main(
        ["check", "--target", "sound", "--max-examples", "3", "--report", str(tmp_path / "r")]
    )
    assert code == 0 and not (tmp_path / "r").exists()
    assert "Report:" not in capsys.readouterr().out


def test_catalog_lists_seed_target_and_invariants(capsys: pytest.CaptureFixture[str]) -> None:
    """catalog --json gives, per known bug, the seed it comes from, its target, its invariants."""
    assert cli.main(["catalog", "--json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    claim = rows["CLAIM_NOT_ATOMIC"]
    assert claim["seed"] == "000" and claim["target"] == "catalog:CLAIM_NOT_ATOMIC"
    assert claim["invariants"] == ["single-claim", "one-reply", "platform"]
    assert rows["TS_KEY_404"]["seed"] == "004"
    assert rows["sound"]["seed"] is None


# -- progress ---------------------------------------------------------------------------------


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal_and_never_with_json() -> None:
    """A pipe or --json gets no progress display; a terminal gets the live line."""
    assert type(progress_for(10, json_output=False, stream=io.StringIO())) is NoProgress
    assert type(progress_for(10, json_output=True, stream=Terminal())) is NoProgress
    assert isinstance(progress_for(10, json_output=False, stream=Terminal()), SearchProgress)


def test_progress_shows_examples_steps_and_phase() -> None:
    """The line counts examples and steps, and says shrinking once a violation is seen."""
    screen = Terminal()
    with progress_for(10, json_output=False, stream=screen) as shown:
        shown.example(7, None)
        shown._progress.refresh()  # type: ignore[attr-defined]
        searching = screen.getvalue()
        shown.example(5, 42)
        shown._progress.refresh()  # type: ignore[attr-defined]
        shrinking = screen.getvalue()[len(searching) :]
    assert "searching" in searching and "1/10 examples, 7 steps" in searching
    assert "shrinking" in shrinking
    assert "2 examples, 12 steps, shortest failing run 42 steps" in shrinking


def test_check_shows_no_progress_when_not_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Under a pipe (as here), check prints its result and nothing of the progress line."""
    assert cli.main(["check", "--target", "sound", "--max-examples", "2"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("ok: no invariant broke in")
    assert "searching" not in err and "examples," not in err


def test_default_check_report_has_no_empty_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's first command (the default target at ci) finds seed 000's swallowed 429 in
    a world where only another app's messages exist: the report's state section says so instead
    of printing a table without rows, and no table of the report is empty."""
    code = cli.main(["check", "--json", "--report", str(tmp_path)])
    answer = json.loads(capsys.readouterr().out)
    assert code == 1
    md = Path(answer["report"]["markdown"])
    for each in tmp_path.glob("*.md"):  # every distinct bug's report
        lines = each.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.startswith("|---"):
                assert lines[i + 1].startswith("| "), f"empty table under {lines[i - 1]!r}"
    lines = md.read_text().splitlines()
    assert any(line.startswith("When the violation was caught") for line in lines)
    assert "no message of the actors was in play" in md.read_text()


def test_report_files_appear_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A report whose last file cannot be made leaves nothing in the folder: no trace without
    its report, no half-written file."""
    import qmodel.report as report

    def broken(*args: object) -> str:
        raise OSError("No space left on device")

    monkeypatch.setattr(report, "regression_test", broken)
    trace = load(Path(__file__).parents[1] / "docs" / "examples" / "CLAIM_NOT_ATOMIC.json")
    with pytest.raises(OSError, match="No space left on device"):
        report.write_report(trace, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_report_that_cannot_be_written_keeps_the_verdict(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    quick_shrink: None,
) -> None:
    """The violation is still the answer (exit 1) when its report fails; the JSON object says
    why there is no report."""
    import qmodel.report as report

    def broken(*args: object) -> str:
        raise OSError("No space left on device")

    monkeypatch.setattr(report, "regression_test", broken)
    argv = ["check", "--target", "catalog:CLAIM_NOT_ATOMIC", "--max-examples", "40", "--json"]
    code = cli.main([*argv, "--report", str(tmp_path)])
    obj = json.loads(capsys.readouterr().out)
    assert code == 1 and obj["verdict"] == "violation" and obj["report"] is None
    assert obj["error"]["kind"] == "report"
    assert obj["error"]["message"].endswith("OSError: No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_every_distinct_bug_gets_its_own_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], quick_shrink: None
) -> None:
    """--all-bugs: after the first violation the search goes on within its budget; each
    distinct (invariant, rule) is listed in violations with its own shrunk run and report
    files, the first under the catalog id, the others under the id and their invariant."""
    argv = ["check", "--target", "catalog:CLAIM_NOT_ATOMIC", "--max-examples", "100"]
    code = cli.main([*argv, "--all-bugs", "--json", "--report", str(tmp_path)])
    answer = json.loads(capsys.readouterr().out)
    assert code == 1 and answer["verdict"] == "violation"
    bugs = answer["violations"]
    assert len(bugs) >= 2 and bugs[0]["invariant"] == answer["invariant"]
    assert len({(b["invariant"], b["rule"]) for b in bugs}) == len(bugs)
    assert [b["found_at_example"] for b in bugs] == sorted(b["found_at_example"] for b in bugs)
    for b in bugs:
        assert b["steps"] == len(b["trace"]) and b["kv_ops"] > 0
        assert Path(b["report"]["markdown"]).is_file()
        assert load(b["report"]["trace"]).expected.invariant == b["invariant"]
    assert Path(bugs[0]["report"]["markdown"]).name == "CLAIM_NOT_ATOMIC.md"
    assert Path(bugs[1]["report"]["markdown"]).name.startswith("CLAIM_NOT_ATOMIC__")
