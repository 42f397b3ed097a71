"""Minimising a shrunk counterexample (qmodel.minimise): shorter, the same bug, deterministic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from qmodel import cli
from qmodel.driver import bug_of
from qmodel.minimise import minimise
from qmodel.replay import replay_strict, trace_of
from qmodel.targets import resolve
from qmodel.trace import load, loads


@pytest.fixture(scope="module")
def shrunk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trace of check's shrunk (not minimised) counterexample of CACHE_LOST_UPDATE."""
    out = tmp_path_factory.mktemp("shrunk")
    code = cli.main(
        [
            "check",
            "--target",
            "catalog:CACHE_LOST_UPDATE",
            "--max-examples",
            "10",
            "--stop-at-first",
            "--no-minimise",
            "--report",
            str(out),
        ]
    )
    assert code == 1
    return out / "CACHE_LOST_UPDATE.json"


def test_minimise_is_shorter_the_same_bug_and_deterministic(shrunk: Path) -> None:
    """Minimising the same shrunk run twice gives the same trace, byte for byte, with fewer KV
    operations and log lines, breaking the same invariant with the same rule."""
    trace = load(shrunk)
    outcome = replay_strict(trace)
    assert outcome.violation is not None
    factory = resolve(trace.target).factory
    checked = outcome.world.protocol.invariants
    texts = []
    for _ in range(2):
        done = minimise(outcome.world, outcome.violation, factory, checked, runs=400)
        assert done is not None
        assert bug_of(done.violation) == bug_of(outcome.violation)
        assert done.kv_ops < done.shrunk_kv_ops
        assert len(done.world.log) < done.shrunk_steps == len(outcome.world.log)
        # Its steps are told as runs of several, as Hypothesis's are: fewer verbs too.
        assert len(done.world.verbs) < len(outcome.world.verbs)
        assert done.runs <= 400
        texts.append(trace_of(done.world, done.violation, target=trace.target, checked=checked))
    assert texts[0].dumps() == texts[1].dumps()
    assert json.loads(texts[0].dumps())["expected"]["values"]["rule"] == "swallowed-429"


def _minimised(shrunk: Path, runs: int) -> tuple[Any, Any, Any]:
    """The shrunk run replayed, its minimised run within ``runs``, and the trace."""
    trace = load(shrunk)
    outcome = replay_strict(trace)
    assert outcome.violation is not None
    checked = outcome.world.protocol.invariants
    done = minimise(
        outcome.world, outcome.violation, resolve(trace.target).factory, checked, runs=runs
    )
    assert done is not None
    return outcome, done, trace


def test_a_budget_of_one_run_keeps_the_shrunk_length(shrunk: Path) -> None:
    """The budget is a count of candidate runs: with one, only the shrunk run itself is run
    again, and nothing shorter is found."""
    _, done, _ = _minimised(shrunk, 1)
    assert done.runs == 1
    assert done.kv_ops == done.shrunk_kv_ops


def test_an_actor_the_story_does_not_need_is_left_out(shrunk: Path) -> None:
    """Two POSTs lose a cache update without a bot's help: the minimised run is in a world
    with fewer actors than the search's (but one bot), its trace records that world, and it
    replays byte for byte."""
    outcome, done, trace = _minimised(shrunk, 400)
    checked = outcome.world.protocol.invariants
    before, after = outcome.world.config, done.world.config
    assert after.bots + after.frontends < before.bots + before.frontends
    # The race needs no bot, but the last one stays: without it nobody does the work.
    assert after.bots >= 1
    told = trace_of(done.world, done.violation, target=trace.target, checked=checked)
    assert told.config["bots"] == after.bots
    again = replay_strict(loads(told.dumps()))
    assert again.violation is not None
    assert bug_of(again.violation) == bug_of(done.violation)
    assert again.world.log == done.world.log
