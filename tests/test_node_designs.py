"""The JavaScript designs of examples/workers/ through the Node lane: they behave as the Python
designs do under the same schedules, the machine finds their catalog bugs (and nothing in the
sound one), and a run of real JavaScript is deterministic and replays byte for byte.

Small budgets here; ``-m slow`` runs the ``ci`` profile through ``qmodel check``. The tests need
Node 20.6+ (skipped without it unless ``QMODEL_REQUIRE_NODE=1``).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import unittest
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import test_catalog_scenarios as scripts
from hypothesis import Phase, seed, settings
from hypothesis.stateful import get_state_machine_test

from qmodel import cli, profiles
from qmodel.catalog import CATALOG
from qmodel.machine import InvariantViolation, machine_for
from qmodel.protocols import get as get_protocol
from qmodel.scenario import Scenario
from qmodel.sim.choices import ChoiceSource, RecordedBackend, SeededBackend
from qmodel.workers import CommentsWorker, Fixes, SoundWorker
from qmodel.world import World, WorldConfig

if shutil.which(os.environ.get("QMODEL_NODE") or "node") is None:
    if os.environ.get("QMODEL_REQUIRE_NODE") == "1":
        raise RuntimeError("QMODEL_REQUIRE_NODE=1 but no node on the PATH")
    pytest.skip("Node.js is not installed (the Node lane's tests need it)", allow_module_level=True)

from qmodel.node import JsWorker, js_worker  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "workers"
SEED_000 = EXAMPLES / "seed-000-queue.mjs"
SEED_004 = EXAMPLES / "seed-004-patch.mjs"
SOUND = EXAMPLES / "sound" / "worker.mjs"

#: The invariants that catch the bugs each seed's design has (the catalog's, by seed).
SEED_000_INVARIANTS = {
    i for e in CATALOG.values() if e.source.startswith("seed 000") for i in e.invariants
}
SEED_004_INVARIANTS = {
    i for e in CATALOG.values() if e.source.startswith("seed 004") for i in e.invariants
}

_WORKERS: dict[Path, JsWorker] = {}


def js(path: Path) -> JsWorker:
    """The checked JavaScript design at ``path`` (checked once per test session)."""
    if path not in _WORKERS:
        _WORKERS[path] = js_worker(path)
    return _WORKERS[path]


def _seed_000() -> CommentsWorker:
    return CommentsWorker(Fixes.seed_000())


def _seed_004() -> CommentsWorker:
    return CommentsWorker(Fixes.seed_004())


# -- the same schedules, the same outcomes -----------------------------------------------------

S = scripts
SCENARIOS_000: list[tuple[str, Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = [
    ("lost-update-1.5s", S.lost_update_script, (1_500,), {}),
    ("lost-update-429", S.lost_update_script, (0,), {}),
    ("lost-update-local", S.lost_update_script, (0,), {"kv": "local"}),
    ("clobber", S.clobber_script, (), {}),
    ("ghost", S.ghost_script, (), {}),
    ("claim-race", S.claim_race_script, (1_500,), {}),
    ("claim-race-429", S.claim_race_script, (0,), {}),
    ("crash-after-reply", S.crash_script, (), {}),
    ("trim", S.trim_script, (), {}),
    ("stale-rmw", S.stale_rmw_script, (), {"script": {"kv.ryw": [0, 0, 1]}}),
    ("poll-misses", S.poll_script, (), {}),
]
SCENARIOS_004 = [
    ("ts-key", S.ts_key_script, (), {}),
    ("first-page", S.first_page_script, (1000,), {}),
    ("short-page", S.first_page_script, (3,), {"script": {"kv.list.page": [1]}}),
]
CASES = (
    [("seed-000", _seed_000, SEED_000, *s) for s in SCENARIOS_000]
    + [("seed-004", _seed_004, SEED_004, *s) for s in SCENARIOS_004]
    + [("sound", SoundWorker, SOUND, *s) for s in SCENARIOS_000 + SCENARIOS_004]
)


@pytest.mark.parametrize(
    ("design", "python", "path", "name", "script", "args", "kw"),
    CASES,
    ids=[f"{c[0]}-{c[3]}" for c in CASES],
)
def test_same_schedule_same_outcome(
    design: str,
    python: Callable[[], Any],
    path: Path,
    name: str,
    script: Callable[..., Any],
    args: tuple[Any, ...],
    kw: dict[str, Any],
) -> None:
    """A catalog scenario's hand-written schedule gives the JavaScript design exactly the
    outcome it gives the Python design it ports."""
    expected = script(Scenario.of(python(), **copy.deepcopy(kw)), *args)
    got = script(Scenario.of(js(path)(), **copy.deepcopy(kw)), *args)
    assert got == expected


def test_the_seed_bugs_show_in_javascript() -> None:
    """The mechanisms of the seeds happen in the JavaScript designs: a lost cache update, two
    winning claims, a message stuck processing, a 404 on PATCH; the sound design refuses them."""
    assert S.lost_update_script(Scenario.of(js(SEED_000)()), 1_500) == ["second"]
    assert S.claim_race_script(Scenario.of(js(SEED_000)()), 1_500) == [200, 200]
    assert S.crash_script(Scenario.of(js(SEED_000)()))[0] == "processing"
    assert S.ts_key_script(Scenario.of(js(SEED_004)()))[0] == 404
    assert S.claim_race_script(Scenario.of(js(SOUND)()), 1_500) == [200, 409]
    assert S.crash_script(Scenario.of(js(SOUND)())) == ("complete", [], 409)


# -- the machine finds the bugs ------------------------------------------------------------------


def search(target: Any, *, examples: int, protocol: str, run_seed: int = 0) -> Any:
    """The machine's generation phase (no shrinking) under ``ci``; the violation, or ``None``."""
    cls = machine_for(target, protocol=protocol)
    budget = settings(
        settings.get_profile("qmodel-ci"), max_examples=examples, phases=[Phase.generate]
    )
    try:
        seed(run_seed)(get_state_machine_test(cls, settings=budget))()
    except InvariantViolation as found:
        return found.violation
    return None


@pytest.mark.parametrize(
    ("path", "protocol", "invariants"),
    [(SEED_000, "queue", SEED_000_INVARIANTS), (SEED_004, "patch", SEED_004_INVARIANTS)],
    ids=["seed-000-queue", "seed-004-patch"],
)
def test_machine_finds_the_seed_bugs(path: Path, protocol: str, invariants: set[str]) -> None:
    """Without a script, the machine finds a violation of one of the invariants that catch the
    seed's catalog bugs, in a few examples."""
    found = search(js(path), examples=20, protocol=protocol)
    assert found is not None, f"nothing found in {path.name}"
    assert found.invariant in invariants, found.render()


def test_sound_design_passes() -> None:
    """The sound JavaScript design breaks no invariant."""
    assert search(js(SOUND), examples=6, protocol="queue") is None


def test_machine_for_takes_a_javascript_worker() -> None:
    """machine_for(js_worker(...)).TestCase is a unittest case, as for a Python worker."""
    case = machine_for(js(SOUND), protocol="queue").TestCase
    assert issubclass(case, unittest.TestCase)
    case.settings = settings(settings.get_profile("qmodel-ci"), max_examples=2)
    case("runTest").runTest()


# -- determinism and replay ----------------------------------------------------------------------

VERBS = [
    ("post", 0),
    ("post", 1),
    ("run", 12),
    ("advance", 1_000),
    ("run", 30),
    ("crash", 0),
    ("post", 1),
    ("run", 40),
    ("advance", 3_000),
    ("run", 40),
]


def drive(path: Path, backend: Any) -> tuple[list[str], str, list[str]]:
    """A world on ``path``'s design driven by a fixed list of verbs, then settled: its log, its
    recorded choices and its step records."""
    world = World.create(js(path)(), WorldConfig(protocol="queue"), backend, get_protocol("queue"))
    for verb, arg in VERBS:
        world.apply(verb, arg)
    world.settle()
    steps = [s.render() for s in world.platform.scheduler.trace]
    return world.log, world.platform.choices.dumps(), steps


@pytest.mark.parametrize("path", [SEED_000, SOUND], ids=["seed-000", "sound"])
def test_a_javascript_run_replays_byte_for_byte(path: Path) -> None:
    """The same seed gives the same run; replaying its recorded choices gives it again: the
    same log, the same choices, the same steps."""
    log, choices, steps = drive(path, SeededBackend(11))
    assert drive(path, SeededBackend(11)) == (log, choices, steps)
    assert drive(path, RecordedBackend(ChoiceSource.loads(choices))) == (log, choices, steps)
    assert any(label == "node.seed" for label, _, _ in json.loads(choices))
    other = drive(path, SeededBackend(12))
    assert other[1] != choices


def test_check_json_on_the_seed_000_design(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """qmodel check --target examples/workers/seed-000-queue.mjs --json reports a violation of
    a named invariant, as for a Python target."""
    # A short shrink, for speed: every figure of the dev budget capped at 5.
    short = tuple(min(v, 5) for v in profiles.SHRINK_BUDGETS["dev"])
    monkeypatch.setitem(profiles.SHRINK_BUDGETS, "dev", short)
    code = cli.main(
        [
            "check",
            "--target",
            str(SEED_000),
            "--protocol",
            "queue",
            "--max-examples",
            "15",
            "--profile",
            "dev",
            "--seed",
            "1",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and out["verdict"] == "violation"
    assert out["invariant"] in SEED_000_INVARIANTS and out["target"] == str(SEED_000)
    assert out["steps"] == len(out["trace"]) > 0


TWINS = Path(__file__).resolve().parent / "targets" / "seed_designs.py"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("path", "python", "protocol"),
    [(SEED_000, "seed_000", "queue"), (SEED_004, "seed_004", "patch")],
    ids=["seed-000-queue", "seed-004-patch"],
)
def test_ci_profile_finds_the_seed_bugs(path: Path, python: str, protocol: str) -> None:
    """qmodel check --profile ci, shrinking included, finds in the JavaScript design what it
    finds in the Python design it ports: a violation of the same invariant. (At seed 0 both
    seed-004 designs first break platform: the cache write's swallowed 429.)"""
    js_result = cli.run_check(cli.check_args(["--target", str(path), "--protocol", protocol]))
    py_target = f"{TWINS}:{python}"
    py_result = cli.run_check(cli.check_args(["--target", py_target, "--protocol", protocol]))
    assert js_result["verdict"] == py_result["verdict"] == "violation"
    assert js_result["invariant"] == py_result["invariant"]


@pytest.mark.slow
def test_ci_profile_sound_is_clean() -> None:
    """qmodel check --profile ci finds nothing in the sound JavaScript design."""
    result = cli.run_check(cli.check_args(["--target", str(SOUND), "--protocol", "queue"]))
    assert result["verdict"] == "ok" and result["examples"] >= 60


# -- reports, replay and regression tests on a JavaScript trace ----------------------------------


def _short_dev_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    short = tuple(min(v, 5) for v in profiles.SHRINK_BUDGETS["dev"])
    monkeypatch.setitem(profiles.SHRINK_BUDGETS, "dev", short)


def _check_with_report(
    capsys: pytest.CaptureFixture[str], target: Path, out: Path, *flags: str
) -> dict[str, Any]:
    code = cli.main(
        [
            "check",
            "--target",
            str(target),
            "--protocol",
            "queue",
            "--max-examples",
            "15",
            "--profile",
            "dev",
            "--seed",
            "1",
            "--json",
            "--report",
            str(out),
            *flags,
        ]
    )
    result = json.loads(capsys.readouterr().out)
    assert code == 1 and result["verdict"] == "violation", result
    return result


def test_report_replay_and_regression_test_of_a_javascript_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """check --report on the seed-000 JavaScript design writes the report, the trace and the
    regression test; qmodel replay reproduces the violation byte for byte; the regression test
    fails on the design and passes against the sound JavaScript design."""
    _short_dev_budget(monkeypatch)
    found = _check_with_report(capsys, SEED_000, tmp_path)
    (trace_path,) = tmp_path.glob("*.json")
    report = trace_path.with_suffix(".md").read_text()
    assert f"`{found['invariant']}`" in report and "```mermaid" in report
    assert f"qmodel replay {trace_path} --target {SEED_000}" in report
    lines = report.splitlines()
    for i, line in enumerate(lines):  # no table without rows
        if line.startswith("|---"):
            assert lines[i + 1].startswith("| "), lines[i - 1]
    trace = json.loads(trace_path.read_text())
    assert trace["bindings"] == {"kv": ["COMMENTS_KV"], "do": {}}
    assert trace["design"].startswith("sha256:") and trace["design"].endswith("seed-000-queue.mjs")

    code = cli.main(["replay", str(trace_path), "--json"])
    assert code == 2 and "Name the target yourself to confirm" in capsys.readouterr().err
    again = ["--target", str(SEED_000), "--report", str(tmp_path / "again")]
    code = cli.main(["replay", str(trace_path), "--json", *again])
    replayed = json.loads(capsys.readouterr().out)
    assert code == 1 and replayed["invariant"] == found["invariant"]
    assert (tmp_path / "again" / trace_path.name).read_text() == trace_path.read_text()

    from qmodel.replay import RegressionFailure, regression_check

    with pytest.raises(RegressionFailure):
        regression_check(trace_path)
    outcome = regression_check(trace_path, target=str(SOUND))
    assert outcome.violation is None
    (test_file,) = tmp_path.glob("test_regression_*.py")
    assert str(SEED_000) in test_file.read_text()


def test_a_replay_keeps_the_bindings_given_by_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker whose KV binding is named only by --kv-binding (no Wrangler file) records it
    in its trace, and qmodel replay gives the worker the same env without the flag. Its
    console output shows in the report."""
    _short_dev_budget(monkeypatch)
    work = tmp_path / "app"
    work.mkdir()
    worker = work / "worker.mjs"
    source = SEED_000.read_text().replace("env.COMMENTS_KV", "env.MESSAGES")
    log = "  const msg = newMessage(body, Date.now());\n"
    assert log in source
    worker.write_text(source.replace(log, log + "  console.log('posted', msg.id);\n"))
    found = _check_with_report(capsys, worker, tmp_path / "out", "--kv-binding", "MESSAGES")
    (trace_path,) = (tmp_path / "out").glob("*.json")
    # The worker's console lines are notes of the steps that wrote them.
    assert "`console.log: posted " in trace_path.with_suffix(".md").read_text()
    assert json.loads(trace_path.read_text())["bindings"] == {"kv": ["MESSAGES"], "do": {}}
    code = cli.main(["replay", str(trace_path), "--json", "--target", str(worker)])
    assert code == 1 and json.loads(capsys.readouterr().out)["invariant"] == found["invariant"]

    # Without the flag the worker's env has COMMENTS_KV only: a different design.
    text = json.loads(trace_path.read_text())
    del text["bindings"]
    trace_path.write_text(json.dumps(text))
    code = cli.main(["replay", str(trace_path), "--json", "--target", str(worker)])
    assert code == 2 and "field 'design'" in capsys.readouterr().err


def test_the_fingerprint_covers_imported_modules(tmp_path: Path) -> None:
    """A JavaScript design's fingerprint changes with a module it imports, not only with its
    entry file, and with its bindings."""
    from qmodel.trace import fingerprint

    (tmp_path / "helper.mjs").write_text("export const LIMIT = 200;\n")
    entry = tmp_path / "worker.mjs"
    entry.write_text(
        "import { LIMIT } from './helper.mjs';\n"
        "export default { async fetch() { return new Response(String(LIMIT)); } };\n"
    )
    before = fingerprint(str(entry), js_worker(entry)())
    (tmp_path / "helper.mjs").write_text("export const LIMIT = 100;\n")
    after = fingerprint(str(entry), js_worker(entry)())
    other = fingerprint(str(entry), js_worker(entry, kv_bindings=["OTHER"])())
    assert len({before, after, other}) == 3
    assert all(f.startswith("sha256:") and f.endswith(" worker.mjs") for f in (before, after))


def test_a_malformed_bindings_field_is_refused() -> None:
    """A trace whose bindings field is not {kv: [...], do: {...}} is refused naming it."""
    from qmodel.trace import TraceFileError, load, loads

    good = next((Path(__file__).resolve().parent.parent / "docs" / "examples").glob("*.json"))
    raw = json.loads(good.read_text())
    raw["bindings"] = {"kv": "COMMENTS_KV"}
    with pytest.raises(TraceFileError) as err:
        loads(json.dumps(raw))
    assert err.value.field == "bindings" and "binding names" in str(err.value)
    assert load(good).bindings is None
