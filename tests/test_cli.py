"""The command line: exit codes, the JSON object, and clear errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from qmodel import cli

TARGETS = Path(__file__).parent / "targets"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_unknown_catalog_id_lists_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown catalog id exits 2 and names the closest and all known ids."""
    code, out, err = run(capsys, "check", "--target", "catalog:CLAIM_NOT_ATOMC")
    assert code == 2 and out == ""
    assert "unknown catalog id 'CLAIM_NOT_ATOMC'. Closest matches: CLAIM_NOT_ATOMIC." in err
    assert "Known ids: TS_KEY_404, LIST_FIRST_PAGE_404," in err


def test_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    """A target file that does not exist exits 2 and says what to give instead."""
    code, _, err = run(capsys, "check", "--target", "no/such/worker.py")
    assert code == 2
    assert "target file no/such/worker.py does not exist" in err


def test_syntax_error_names_file_and_line(capsys: pytest.CaptureFixture[str]) -> None:
    """A file with a syntax error exits 2 naming the file and the line."""
    path = TARGETS / "bad_syntax.py"
    code, _, err = run(capsys, "check", "--target", str(path))
    assert code == 2
    assert f"importing {path} raised SyntaxError" in err
    assert f"({path}, line 4)" in err


def test_raises_on_import(capsys: pytest.CaptureFixture[str]) -> None:
    """A file that raises on import exits 2 with the exception, the file and the line."""
    path = TARGETS / "raises_on_import.py"
    code, _, err = run(capsys, "check", "--target", str(path))
    assert code == 2
    assert "raised RuntimeError: missing configuration: COMMENTS_URL" in err
    assert f"({path}, line 3)" in err


def test_sync_fetch(capsys: pytest.CaptureFixture[str]) -> None:
    """A target whose fetch is not async exits 2 and says to declare it async."""
    code, _, err = run(capsys, "check", "--target", str(TARGETS / "sync_fetch.py"))
    assert code == 2
    assert "fetch is not async; declare it as async def fetch(request, env, ctx)" in err


def test_module_that_cannot_be_imported(capsys: pytest.CaptureFixture[str]) -> None:
    """A module path that does not import exits 2 naming the missing module."""
    code, _, err = run(capsys, "check", "--target", "no_such_pkg.worker:Worker")
    assert code == 2
    assert "cannot import 'no_such_pkg.worker': no module named 'no_such_pkg'" in err


def test_missing_attribute(capsys: pytest.CaptureFixture[str]) -> None:
    """Naming an attribute the file lacks exits 2 and lists what it defines."""
    code, _, err = run(capsys, "check", "--target", f"{TARGETS / 'never_answers.py'}:nope")
    assert code == 2
    assert "has no attribute 'nope'; it defines: Worker, worker" in err


def test_missing_javascript_target(capsys: pytest.CaptureFixture[str]) -> None:
    """A .mjs target that does not exist exits 2 naming it (the Node lane runs real ones)."""
    code, _, err = run(capsys, "check", "--target", "worker.mjs")
    assert code == 2
    assert "target file worker.mjs does not exist; give the path of a Workers module" in err


def test_unknown_invariant(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown invariant id exits 2 and lists the known ids."""
    code, _, err = run(capsys, "check", "--target", "sound", "--invariant", "one-replies")
    assert code == 2
    assert "unknown invariant 'one-replies' of protocol 'queue'. Closest matches: one-reply." in err


def test_bad_option_value_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A malformed option exits 2 with argparse's message."""
    with pytest.raises(SystemExit) as exc:
        cli.main(["check", "--kv", "eventual"])
    assert exc.value.code == 2
    assert "invalid choice: 'eventual'" in capsys.readouterr().err


def test_json_violation_object(capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints exactly one object with the documented fields, and exit 1 on a violation."""
    code, out, _ = run(
        capsys, "check", "--target", "catalog:CLAIM_NOT_ATOMIC", "--max-examples", "40", "--json"
    )
    assert code == 1
    lines = out.strip().splitlines()
    assert len(lines) == 1
    obj = json.loads(lines[0])
    assert set(obj) == {
        "verdict",
        "invariant",
        "target",
        "seed",
        "examples",
        "steps",
        "seconds",
        "trace",
    }
    assert obj["verdict"] == "violation"
    assert obj["invariant"] in ("single-claim", "one-reply", "platform")
    assert obj["target"] == "catalog:CLAIM_NOT_ATOMIC" and obj["seed"] == 0
    assert obj["steps"] == len(obj["trace"]) > 0
    assert all(isinstance(s, str) for s in obj["trace"])


def test_json_ok_on_the_sound_design(capsys: pytest.CaptureFixture[str]) -> None:
    """The sound design gives verdict ok and exit 0."""
    code, out, _ = run(capsys, "check", "--target", "sound", "--max-examples", "5", "--json")
    obj = json.loads(out)
    assert code == 0 and obj["verdict"] == "ok" and obj["invariant"] is None
    assert obj["examples"] >= 5 and obj["trace"] == [] and obj["steps"] == 0


def test_module_level_fetch_target(capsys: pytest.CaptureFixture[str]) -> None:
    """A file whose module defines fetch (and durable_objects) is a valid target."""
    code, out, _ = run(
        capsys,
        "check",
        "--target",
        str(TARGETS / "module_worker.py"),
        "--max-examples",
        "3",
        "--json",
    )
    assert code == 0 and json.loads(out)["verdict"] == "ok"


def test_worker_that_never_answers_is_stopped(capsys: pytest.CaptureFixture[str]) -> None:
    """A worker that awaits forever is stopped by the step limit and reported, not left running."""
    code, out, _ = run(
        capsys,
        "check",
        "--target",
        f"{TARGETS / 'never_answers.py'}:worker",
        "--kv",
        "local",  # no 1000-operation cap: only the step limit can stop it
        "--step-limit",
        "50",
        "--max-examples",
        "3",
        "--profile",
        "dev",
        "--json",
    )
    obj = json.loads(out)
    assert code == 1 and obj["invariant"] == "platform"
    assert any("step limit" in line for line in obj["trace"])


def test_worker_stuck_in_one_step_is_stopped(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker looping without await inside one step is stopped by the watchdog: exit 3 (the
    run could not finish), naming the request."""
    monkeypatch.setattr(cli, "HANG_SECONDS", 1.0)
    code, _, err = run(
        capsys, "check", "--target", f"{TARGETS / 'spins.py'}:worker", "--max-examples", "1"
    )
    assert code == 3
    assert "made no progress for 1 s inside one step" in err
    assert "qmodel: error: request " in err


def test_catalog_json(capsys: pytest.CaptureFixture[str]) -> None:
    """qmodel catalog --json lists every id with its target and invariants."""
    code, out, _ = run(capsys, "catalog", "--json")
    rows = json.loads(out)
    assert code == 0
    assert [r["id"] for r in rows][:2] == ["TS_KEY_404", "LIST_FIRST_PAGE_404"]
    assert rows[-1]["id"] == "sound" and rows[-1]["target"] == "sound"


def test_console_script_is_installed() -> None:
    """The qmodel console script runs (as installed by pip install -e)."""
    proc = subprocess.run(
        [sys.executable, "-m", "qmodel.cli", "catalog"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0
    assert "CLAIM_NOT_ATOMIC" in proc.stdout


def test_shrinking_out_of_time_is_said_plainly(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """When shrinking meets the profile's time limit, stderr says which limit, instead of
    Hypothesis's warning about five minutes; the violation is still reported."""
    from qmodel import profiles

    monkeypatch.setitem(profiles.SHRINK_BUDGETS, "dev", (40, 150, 0))
    code = cli.main(["check", "--target", "catalog:CLAIM_NOT_ATOMIC", "--profile", "dev", "--json"])
    out, err = capsys.readouterr()
    assert code == 1 and json.loads(out)["verdict"] == "violation"
    assert "five minutes" not in err
    assert "qmodel: shrinking stopped at the dev profile's time limit (0 s)" in err
