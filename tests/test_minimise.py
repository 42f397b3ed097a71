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
    with fewer actors than the search's, its trace records that world, and it replays byte for
    byte."""
    outcome, done, trace = _minimised(shrunk, 400)
    before, after = outcome.world.config, done.world.config
    assert after.bots + after.frontends < before.bots + before.frontends
    told = trace_of(done.world, done.violation, target=trace.target, checked=done.checked)
    assert told.config["bots"] == after.bots
    again = replay_strict(loads(told.dumps()))
    assert again.violation is not None
    assert bug_of(again.violation) == bug_of(done.violation)
    assert again.world.log == done.world.log


@pytest.fixture(scope="module")
def lost_update(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trace of check's shrunk cache-coherent counterexample of CACHE_LOST_UPDATE in
    local KV (a world of 2 bots and 2 frontends)."""
    out = tmp_path_factory.mktemp("lost")
    argv = ["check", "--target", "catalog:CACHE_LOST_UPDATE", "--kv", "local"]
    argv += ["--invariant", "cache-coherent", "--max-examples", "300", "--seed", "3"]
    code = cli.main([*argv, "--stop-at-first", "--no-minimise", "--report", str(out)])
    assert code == 1
    return out / "CACHE_LOST_UPDATE.json"


def test_a_bug_that_needs_no_worker_is_told_in_a_world_without_one(
    lost_update: Path, tmp_path: Path
) -> None:
    """The lost update needs no bot: the minimised run has none, and the invariants about the
    work being done (one-reply here), which any world without a worker breaks, do not judge
    it; its trace records both, so it replays alike, and its report says so."""
    from qmodel.report import write_report

    trace = load(lost_update)
    outcome = replay_strict(trace)
    assert outcome.violation is not None
    assert outcome.world.config.bots == 2
    protocol = outcome.world.protocol
    checked = tuple(i for i in protocol.invariants if i.id in ("cache-coherent", "one-reply"))
    factory = resolve(trace.target).factory
    done = minimise(outcome.world, outcome.violation, factory, checked, runs=400)
    assert done is not None
    assert bug_of(done.violation) == bug_of(outcome.violation)
    assert done.world.config.bots == 0
    assert [i.id for i in done.checked] == ["cache-coherent"]
    told = trace_of(done.world, done.violation, target=trace.target, checked=done.checked)
    assert told.invariants == ("cache-coherent",)
    again = replay_strict(loads(told.dumps()))
    assert again.violation is not None
    assert bug_of(again.violation) == bug_of(done.violation)
    assert again.world.log == done.world.log
    markdown = write_report(told, tmp_path).markdown.read_text()
    world = "1 frontend, nobody doing the work (the invariants about it are not judged)"
    assert f"- **World:** protocol `queue`, {world}, local KV" in markdown


def test_the_last_bot_stays_when_the_bug_is_about_the_work() -> None:
    """A message left unanswered after a crash (pending-visible) is a bug only where a bot
    could answer it: a world without bots would leave it unanswered whatever the design, so
    the minimiser keeps the last bot."""
    from qmodel.explore import Explorer, Scope
    from qmodel.protocols import get

    target = resolve("catalog:CRASH_AFTER_REPLY")
    protocol = get(target.protocol)
    checked = tuple(i for i in protocol.invariants if i.id == "pending-visible")
    scope = Scope(bots=1, posts=1, crashes=1, horizon_ms=1000, kv="local")
    found = Explorer(target.factory, protocol, scope, checked).run().found
    assert found is not None and found.violation.invariant == "pending-visible"
    done = minimise(found.world, found.violation, target.factory, checked, runs=100)
    assert done is not None
    assert done.violation.invariant == "pending-visible"
    assert done.world.config.bots == 1
    assert [i.id for i in done.checked] == ["pending-visible"]


def test_an_event_draws_its_own_choices() -> None:
    """A choice is handed to the event it was made in: when a deletion leaves an earlier event
    drawing nothing (a lease that finds no job draws no work time), a later event still gets
    its own choice, not the earlier one's; a draw beyond an event's own, or between events (the
    settle), gets the choices no event took, in the events' order."""
    from qmodel.minimise import Event, ProgramBackend
    from qmodel.sim.choices import Choice

    key = (-1, 0, "actor", "consumer-1")
    events = [
        Event("run", 1, key, (Choice("consumer.work_ms", 4, 3),), 0),
        Event("run", 1, key, (Choice("consumer.work_ms", 4, 1),), 1),
        Event("run", 1, key, (Choice("consumer.work_ms", 4, 2),), 2),
    ]
    backend = ProgramBackend.of(events)
    backend.current = 1
    assert backend.pick("consumer.work_ms", 4, None) == 1
    # Its own are used up: the first choice no event took.
    assert backend.pick("consumer.work_ms", 4, None) == 3
    backend.current = None
    assert backend.pick("consumer.work_ms", 4, None) == 2
    assert backend.pick("consumer.work_ms", 4, None) == 0
    # A recorded choice among another number of options is no answer: the first option.
    backend = ProgramBackend.of(events)
    backend.current = 0
    assert backend.pick("consumer.work_ms", 5, None) == 0


@pytest.fixture(scope="module")
def stale_ack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trace of check's shrunk stale-ack counterexample of JOBS_NO_FENCING in local KV: a
    story of several jobs, timed polls and a crash."""
    out = tmp_path_factory.mktemp("stale")
    argv = ["check", "--target", "catalog:JOBS_NO_FENCING", "--kv", "local"]
    argv += ["--invariant", "stale-ack", "--max-examples", "10"]
    code = cli.main([*argv, "--stop-at-first", "--no-minimise", "--report", str(out)])
    assert code == 1
    return out / "JOBS_NO_FENCING.json"


def test_jobs_the_story_does_not_need_go_though_the_timers_move(stale_ack: Path) -> None:
    """Deleting an enqueue renumbers the later jobs' tasks and the ranks of the queue's
    requests, leaves a lease that finds nothing holding the work time it drew before, and
    moves the consumers' timers (a poll that finds nothing sleeps where a lease works): the
    tasks are named by the events that made them, each event draws its own choices, and a
    consumer asleep while others can step gets the clock moved to its wake-up, so the jobs the
    stale ack does not need go, down to the explorer's shortest (2 KV operations)."""
    trace = load(stale_ack)
    outcome = replay_strict(trace)
    assert outcome.violation is not None
    checked = outcome.world.protocol.invariants
    checked = tuple(i for i in checked if i.id in trace.invariants)
    factory = resolve(trace.target).factory
    done = minimise(outcome.world, outcome.violation, factory, checked, runs=400)
    assert done is not None
    assert bug_of(done.violation) == bug_of(outcome.violation)
    assert done.shrunk_kv_ops >= 6
    assert done.kv_ops <= 2
    told = trace_of(done.world, done.violation, target=trace.target, checked=done.checked)
    again = replay_strict(loads(told.dumps()))
    assert again.violation is not None and again.world.log == done.world.log


def _production_story(argv: list[str], tmp_path: Path, name: str) -> tuple[Any, Any]:
    """check's shrunk (not minimised) bug of ``argv`` in production KV, from its report file
    ``name``, and its minimised run within 800 candidate runs (judged by the invariants the
    trace records): the same bug, and a run that replays as it was told."""
    assert cli.main([*argv, "--no-minimise", "--report", str(tmp_path)]) == 1
    trace = load(tmp_path / name)
    assert trace.config["kv"] == "strict"
    outcome = replay_strict(trace)
    assert outcome.violation is not None
    checked = tuple(i for i in outcome.world.protocol.invariants if i.id in trace.invariants)
    done = minimise(
        outcome.world, outcome.violation, resolve(trace.target).factory, checked, runs=800
    )
    assert done is not None
    assert bug_of(done.violation) == bug_of(outcome.violation)
    told = trace_of(done.world, done.violation, target=trace.target, checked=done.checked)
    again = replay_strict(loads(told.dumps()))
    assert again.violation is not None and again.world.log == done.world.log
    return outcome, done


def test_a_task_of_the_same_story_stands_in_for_one_that_is_gone(tmp_path: Path) -> None:
    """In production KV, deleting an enqueue makes another step send the queue object's
    request, so the events that named it name nothing and every later step of the story is
    skipped: a search naming tasks exactly keeps every job of the shrunk stale ack (7 KV
    operations). The second search lets the first task of the same actor's story that can step
    stand in, and reaches at most twice the explorer's shortest (2 KV operations)."""
    argv = ["check", "--target", "catalog:JOBS_NO_FENCING", "--invariant", "stale-ack"]
    argv += ["--max-examples", "10", "--stop-at-first"]
    _, done = _production_story(argv, tmp_path, "JOBS_NO_FENCING.json")
    assert done.shrunk_kv_ops >= 6
    assert done.kv_ops <= 4


def test_an_actor_cut_short_tells_a_stale_claim_in_fewer_operations(tmp_path: Path) -> None:
    """check's shrunk double claim in production KV: a bot reads a message (its location
    caches it), claims another, replies, completes and polls again, and its stale copy lets it
    claim the message the other bot claimed seconds before (24 KV operations). Cutting the bot
    short (it crashes after reading, and the clock moves a second before it polls again) tells
    the same race without the reply; the result is at most twice the explorer's shortest
    double claim (7 KV operations, in local KV)."""
    argv = ["check", "--target", "catalog:CLAIM_NOT_ATOMIC"]
    outcome, done = _production_story(argv, tmp_path, "CLAIM_NOT_ATOMIC__single_claim.json")
    assert outcome.violation.invariant == "single-claim"
    assert done.shrunk_kv_ops >= 20
    assert done.kv_ops <= 14
