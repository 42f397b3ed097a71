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
    """A malformed option exits 2 with argparse's message and the usage, no traceback."""
    code, out, err = run(capsys, "check", "--kv", "eventual")
    assert code == 2 and out == ""
    assert "usage: qmodel check" in err
    assert (
        "qmodel: error: argument --kv: invalid choice: 'eventual' (choose from 'strict', "
        "'local'); see qmodel check --help" in err
    )


def test_json_violation_object(capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints exactly one object with the documented fields, and exit 1 on a violation."""
    code, out, _ = run(
        capsys,
        "check",
        "--target",
        "catalog:CLAIM_NOT_ATOMIC",
        "--max-examples",
        "40",
        "--stop-at-first",
        "--json",
    )
    assert code == 1
    lines = out.strip().splitlines()
    assert len(lines) == 1
    obj = json.loads(lines[0])
    assert list(obj) == list(cli.JSON_FIELDS)
    assert obj["verdict"] == "violation" and obj["error"] is None and obj["report"] is None
    assert 1 <= obj["found_at_example"] <= obj["examples"]
    assert obj["versions"] == cli.versions() and obj["versions"]["hypothesis"]
    assert obj["invariant"] in ("single-claim", "one-reply", "platform")
    assert obj["target"] == "catalog:CLAIM_NOT_ATOMIC" and obj["seed"] == 0
    assert obj["steps"] == len(obj["trace"]) > 0
    assert all(isinstance(s, str) for s in obj["trace"])


def test_json_ok_on_the_sound_design(capsys: pytest.CaptureFixture[str]) -> None:
    """The sound design gives verdict ok and exit 0."""
    code, out, _ = run(capsys, "check", "--target", "sound", "--max-examples", "5", "--json")
    obj = json.loads(out)
    assert code == 0 and obj["verdict"] == "ok" and obj["invariant"] is None
    assert obj["found_at_example"] is None and obj["error"] is None
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
    run could not finish), naming the request, and under --json one error object."""
    monkeypatch.setattr(cli, "HANG_SECONDS", 1.0)
    argv = ["check", "--target", f"{TARGETS / 'spins.py'}:worker", "--max-examples", "1"]
    code, _, err = run(capsys, *argv)
    assert code == 3
    assert "made no progress for 1 s inside one step" in err
    assert "qmodel: error: request " in err
    code, out, _ = run(capsys, *argv, "--json")
    obj = json.loads(out)
    assert code == 3 and obj["verdict"] == "error" and obj["error"]["kind"] == "stuck"
    assert "made no progress for 1 s" in obj["error"]["message"]


def test_catalog_json(capsys: pytest.CaptureFixture[str]) -> None:
    """qmodel catalog --json lists every id with its target and invariants."""
    code, out, _ = run(capsys, "catalog", "--json")
    rows = json.loads(out)
    assert code == 0
    assert [r["id"] for r in rows][:2] == ["TS_KEY_404", "LIST_FIRST_PAGE_404"]
    chat = [r for r in rows if r["protocol"] in ("patch", "queue", "do")]
    assert chat[-1]["id"] == "sound" and chat[-1]["target"] == "sound"


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


# -- the contract: one JSON object in every case ------------------------------------------------

BAD_INPUTS = [
    # (argv, error kind, a part of the message)
    (["check", "--kv", "eventual"], "usage", "argument --kv: invalid choice: 'eventual'"),
    (["check", "--bots", "two"], "usage", "argument --bots: invalid int value: 'two'"),
    (["frobnicate"], "usage", "invalid choice: 'frobnicate'"),
    ([], "usage", "the following arguments are required"),
    (["check", "--bots", "-1"], "usage", "--bots and --frontends must be from 1 to 16 (got -1"),
    (["check", "--bots", "0"], "usage", "with no bot nothing does the work"),
    (["check", "--bots", "1000"], "usage", "--bots and --frontends must be from 1 to 16"),
    (["check", "--max-examples", "0"], "usage", "--max-examples must be at least 1"),
    (["check", "--step-limit", "5"], "usage", "--step-limit must be at least 10"),
    (["check", "--seed", "-3"], "usage", "--seed must be >= 0"),
    (["check", "--target", "catalog:NOPE"], "target", "unknown catalog id 'NOPE'"),
    (["check", "--target", "no/such/worker.py"], "target", "no/such/worker.py does not exist"),
    (["check", "--target", str(TARGETS / "bad_syntax.py")], "target", "raised SyntaxError"),
    (["check", "--target", str(TARGETS / "sync_fetch.py")], "target", "fetch is not async"),
    (
        ["check", "--target", f"{TARGETS / 'raises_on_construct.py'}:Worker"],
        "target",
        "raised RuntimeError: COMMENTS_URL is not configured",
    ),
    (["check", "--target", "worker.mjs"], "target", "target file worker.mjs does not exist"),
    (["check", "--invariant", "one-replies"], "usage", "unknown invariant 'one-replies'"),
    (["check", "--skip-invariant", "nope"], "usage", "unknown invariant 'nope'"),
    (
        ["check", "--invariant", "cost", "--skip-invariant", "cost"],
        "usage",
        "--skip-invariant leaves no invariant to check",
    ),
    (["check", "--report", str(TARGETS / "spins.py")], "usage", "that path is a file"),
    (
        ["check", "--report", str(TARGETS / "spins.py" / "reports")],
        "usage",
        "is a file, so the directory cannot be created",
    ),
    (["replay", "no/such/trace.json"], "trace", "no/such/trace.json"),
    (["replay", str(TARGETS / "spins.py")], "trace", "spins.py"),
]


@pytest.mark.parametrize("argv, kind, message", BAD_INPUTS, ids=lambda v: str(v)[:40])
def test_every_bad_input_answers_one_json_object(
    capsys: pytest.CaptureFixture[str], argv: list[str], kind: str, message: str
) -> None:
    """Every bad input exits 2 and, with --json, prints exactly one object: verdict error, the
    kind of error and a message saying what was wrong; nothing of a search ran."""
    code, out, err = run(capsys, *argv, "--json")
    assert code == 2
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    obj = json.loads(lines[0])
    assert list(obj) == list(cli.JSON_FIELDS)
    assert obj["verdict"] == "error" and obj["error"]["kind"] == kind
    assert message in obj["error"]["message"]
    assert obj["examples"] is None and obj["trace"] == []
    assert f"qmodel: error: {obj['error']['message']}" in err
    assert "Traceback" not in err


def test_report_directory_is_checked_before_the_search(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A --report directory that cannot be made fails at once, before any example runs."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, out, _ = run(
        capsys,
        "check",
        "--target",
        "catalog:CLAIM_NOT_ATOMIC",
        "--report",
        str(blocker / "r"),
        "--json",
    )
    obj = json.loads(out)
    assert code == 2 and obj["examples"] is None and obj["seconds"] is None


def test_unreproducible_failure_is_unknown_not_a_violation(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A failure that does not happen again on the same example (Hypothesis's Flaky) answers
    verdict unknown and exit 2, with what to look for in the target, not a traceback."""
    code, out, err = run(
        capsys, "check", "--target", str(TARGETS / "flaky.py"), "--max-examples", "5", "--json"
    )
    obj = json.loads(out)
    assert code == 2 and obj["verdict"] == "unknown" and obj["error"]["kind"] == "unknown"
    assert isinstance(obj["found_at_example"], int) and obj["found_at_example"] >= 1
    assert (
        "a violation of platform was seen, but the same example did not break it"
        in (obj["error"]["message"])
    )
    assert "state kept between examples" in obj["error"]["message"]
    assert "Traceback" not in err


def test_internal_error_exits_3_with_one_object(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception of qmodel itself exits 3 with verdict error, kind internal, and asks for a
    bug report (the traceback goes to stderr)."""

    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli, "run_check", broken)
    code, out, err = run(capsys, "check", "--target", "sound", "--json")
    obj = json.loads(out)
    assert code == 3 and obj["verdict"] == "error" and obj["error"]["kind"] == "internal"
    assert obj["error"]["message"].startswith(
        "internal error: ZeroDivisionError: division by zero. This is a bug in qmodel"
    )
    assert "Traceback" in err


def test_skip_invariant_is_not_checked(capsys: pytest.CaptureFixture[str]) -> None:
    """--skip-invariant removes an invariant from the check: the platform rule that catches
    CLAIM_NOT_ATOMIC first is skipped, so another of its invariants names it."""
    code, out, _ = run(
        capsys,
        "check",
        "--target",
        "catalog:CLAIM_NOT_ATOMIC",
        "--skip-invariant",
        "platform",
        "--max-examples",
        "60",
        "--profile",
        "dev",
        "--json",
    )
    obj = json.loads(out)
    assert code == 1 and obj["invariant"] in ("single-claim", "one-reply")


def test_human_output_names_the_target_and_counts_time_from_the_start(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without --json a violation is told against its target, with virtual times relative to
    the start of the run, and where the search first saw it."""
    code, out, _ = run(
        capsys,
        "check",
        "--target",
        "catalog:CLAIM_NOT_ATOMIC",
        "--max-examples",
        "40",
        "--profile",
        "dev",
    )
    assert code == 1
    assert "VIOLATION of platform (safety) against catalog:CLAIM_NOT_ATOMIC" in out
    assert "    1. +0.000 s  " in out and "t=17" not in out
    assert "first seen at example " in out


def test_version_and_python_dash_m() -> None:
    """qmodel --version and python -m qmodel --version name qmodel's and Hypothesis's versions."""
    import hypothesis

    import qmodel

    proc = subprocess.run(
        [sys.executable, "-m", "qmodel", "--version"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0
    assert proc.stdout.startswith(
        f"qmodel {qmodel.__version__} (Hypothesis {hypothesis.__version__}, Python "
    )


def test_help_lists_invariants_profiles_and_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    """check --help lists every protocol's invariant ids, the profiles with their budgets, and
    defaults."""
    from qmodel import protocols

    with pytest.raises(SystemExit) as exc:
        cli.main(["check", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in protocols.names():
        assert f"  protocol {name}: " in out
        for inv in protocols.get(name).invariants:
            assert f"    {inv.id} " in out
    assert "ci         150 examples, shrinking at most 250 runs" in out
    flat = " ".join(out.split())  # argparse wraps the options' help
    assert "(default: seed-000," in flat and "search budget (default ci" in flat
    assert "bot processes (default 2)" in flat and "(default 10000)" in flat
    assert "QMODEL_EXAMPLE_DB" in out


def test_ctrl_c_prints_one_line(tmp_path: Path) -> None:
    """SIGINT during a search: one line on stderr (no traceback), verdict unknown under --json,
    exit 130."""
    import signal
    import time

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qmodel",
            "check",
            "--target",
            "sound",
            "--profile",
            "nightly",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        time.sleep(3)  # past start-up, into the search
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert err.startswith("qmodel: interrupted after ") and err.count("\n") == 1
    assert "Traceback" not in err
    obj = json.loads(out)
    assert obj["verdict"] == "unknown" and obj["error"]["kind"] == "interrupted"


def test_a_reader_that_goes_away_is_no_internal_error() -> None:
    """qmodel replay ... | head: the rest of the output has nowhere to go; exit 141, as a shell
    reports a process stopped by SIGPIPE, and no traceback."""
    example = Path(__file__).resolve().parent.parent / "docs" / "examples" / "TS_KEY_404.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "qmodel", "replay", str(example)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader goes away before the answer is written
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 141
    assert "Traceback" not in err and "internal error" not in err


def test_check_minimises_the_shrunk_counterexample(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """check's counterexample is minimised past Hypothesis's shrinking: fewer KV operations,
    the same bug (invariant and rule) as the shrunk run, both lengths in --json and in the
    trace, and the trace replays byte for byte."""
    from qmodel.replay import replay_strict, retrace
    from qmodel.trace import load

    argv = ("check", "--target", "catalog:CACHE_LOST_UPDATE", "--max-examples", "10")
    code, out, _ = run(capsys, *argv, "--stop-at-first", "--json", "--report", str(tmp_path / "m"))
    assert code == 1
    (v,) = json.loads(out)["violations"]
    assert (v["invariant"], v["rule"]) == ("platform", "swallowed-429")
    assert v["minimised_kv_ops"] < v["shrunk_kv_ops"]
    assert v["minimised_steps"] < v["shrunk_steps"]
    assert (v["kv_ops"], v["steps"]) == (v["minimised_kv_ops"], v["minimised_steps"])
    assert v["steps"] == len(v["trace"])
    path = Path(v["report"]["trace"])
    trace = load(path)
    assert (trace.expected.invariant, trace.expected.values["rule"]) == (
        "platform",
        "swallowed-429",
    )
    assert (trace.search.shrunk_kv_ops, trace.search.minimised_kv_ops) == (
        v["shrunk_kv_ops"],
        v["minimised_kv_ops"],
    )
    assert retrace(trace, replay_strict(trace)).dumps() == path.read_text(encoding="utf-8")

    # Without minimisation the same search tells the shrunk run: the same bug, longer.
    code, out, _ = run(capsys, *argv, "--stop-at-first", "--json", "--no-minimise")
    assert code == 1
    (shrunk,) = json.loads(out)["violations"]
    assert (shrunk["invariant"], shrunk["rule"]) == (v["invariant"], v["rule"])
    assert (shrunk["kv_ops"], shrunk["steps"]) == (v["shrunk_kv_ops"], v["shrunk_steps"])
    assert shrunk["minimised_kv_ops"] is None
