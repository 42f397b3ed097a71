"""The exhaustive explorer: it finds each race of the catalog a strongly consistent store shows,
with the shortest story; covers the sound design's scope; its counterexample replays byte for
byte; a bound hit gives no verdict; bad scope flags exit 2 with one JSON object."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qmodel import catalog, cli, protocols, targets
from qmodel.check import select
from qmodel.explore import Explorer, PathBackend, Result, Scope, cited_kv_ops
from qmodel.fingerprint import Fingerprinter, Observations
from qmodel.replay import replay_strict, retrace
from qmodel.trace import load


def explore(target: str, invariant: str | None, **scope: object) -> Result:
    resolved = targets.resolve(target)
    proto = protocols.get(resolved.protocol)
    checked = select(proto.invariants, [invariant] if invariant else None, protocol=proto.name)
    return Explorer(resolved.factory, proto, Scope(**scope), checked).run()  # type: ignore[arg-type]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict, str]:
    code = cli.main(["explore", *argv])
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 1, out  # exactly one JSON object
    return code, json.loads(lines[0]), err


# -- the races: found, with the named invariant, in at most the SPIN model's KV operations -------


@pytest.mark.parametrize(
    ("catalog_id", "invariant", "scope", "kv_ops", "cited"),
    [
        ("CACHE_LOST_UPDATE", "cache-coherent", {"bots": 0}, 6, 3),
        # The post's write and the two pending polls' reads set the race up; the two claims
        # (get, put each) are the 4 operations of the hand-written model.
        ("CLAIM_NOT_ATOMIC", "single-claim", {"bots": 2, "posts": 1, "landed": 1}, 7, 4),
        ("STATUS_WRITE_CLOBBERS_CACHE", "cache-coherent", {"posts": 2, "landed": 1}, 2, 1),
        # The post's write, then the bot's reply and the PATCH whose one list() page is empty
        # though more keys follow (production KV), half a second later.
        (
            "LIST_FIRST_PAGE_404",
            "addressable",
            {"posts": 1, "kv": "strict", "horizon_ms": 1000},
            3,
            2,
        ),
        # A pending poll caches the miss of the cache key; the post lands; the next poll, 3 s
        # on, still reads the cached miss and the settle's rewrite erases the message.
        ("GHOST_PENDING", "cache-coherent", {"posts": 1, "kv": "strict", "horizon_ms": 3000}, 4, 1),
        # Another app's 201 messages in one millisecond: the after cursor with a page of 200
        # skips the last of them for good.
        ("POLL_MISSES_MESSAGE", "poll-delivery", {"bots": 0, "posts": 0, "bursts": 1}, 201, 1),
    ],
)
def test_finds_each_race_with_its_invariant(
    catalog_id: str, invariant: str, scope: dict[str, object], kv_ops: int, cited: int
) -> None:
    """The explorer finds the race, named by the catalog's invariant, with exactly the KV
    operations of its shortest story."""
    assert invariant in catalog.entry(catalog_id).invariants
    result = explore(f"catalog:{catalog_id}", invariant, **{"kv": "local", **scope})
    assert result.verdict == "violation"
    assert result.found is not None
    assert result.found.violation.invariant == invariant
    assert result.found.kv_ops == kv_ops
    assert cited_kv_ops(result.found.world, result.found.violation) == cited


def test_the_counterexample_is_the_shortest() -> None:
    """No counterexample with fewer verbs exists: a depth one verb short of the found one
    covers its scope without a violation (it reports the bound, not ok)."""
    found = explore("catalog:CACHE_LOST_UPDATE", "cache-coherent", kv="local", bots=0)
    assert found.found is not None
    verbs = len(found.found.world.verbs)
    shorter = explore(
        "catalog:CACHE_LOST_UPDATE", "cache-coherent", kv="local", bots=0, depth=verbs - 1
    )
    assert shorter.verdict == "unknown"
    assert shorter.bound == f"--depth {verbs - 1}"


def test_a_burst_is_one_verb_of_the_story_and_lands_whole() -> None:
    """Without a burst the scope holds no violation; with one, its 201 requests step to their
    end before anything else steps, and they do not count towards the depth."""
    scope = {"kv": "local", "bots": 0, "frontends": 2, "posts": 1}
    quiet = explore("catalog:POLL_MISSES_MESSAGE", "poll-delivery", **scope)
    assert (quiet.verdict, quiet.exhaustive) == ("ok", True)
    burst = explore("catalog:POLL_MISSES_MESSAGE", "poll-delivery", bursts=1, depth=8, **scope)
    assert burst.verdict == "violation" and burst.found is not None
    world = burst.found.world
    assert [v for v, _ in world.verbs].count("burst") == 1
    # The other app's requests are answered one after the other, nothing else between them.
    actors = [ex.actor for ex in sorted(world.history, key=lambda ex: ex.seq)]
    first = actors.index("other-app-1")
    last = len(actors) - 1 - actors[::-1].index("other-app-1")
    assert set(actors[first : last + 1]) == {"other-app-1"}
    assert last - first + 1 == 201


@pytest.mark.slow
def test_a_burst_pushes_a_pending_message_out_of_the_cache() -> None:
    """CACHE_TRIM_DROPS_PENDING: the post lands, a burst of 201 lands whole after it and
    pushes it out of the 200-message cache; the bot never sees it (every scheduler step of
    the burst is replayed for each state after it: about 20 s)."""
    result = explore(
        "catalog:CACHE_TRIM_DROPS_PENDING", "pending-visible", kv="local", posts=1, bursts=1
    )
    assert result.verdict == "violation" and result.found is not None
    assert result.found.violation.invariant == "pending-visible"
    assert result.found.kv_ops == 202  # the post's write and the burst's 201


def test_observed_plain_data_keeps_every_type_apart() -> None:
    """What a task is handed is compared by type and value: a tuple is not a list, an int key
    not a string one; two sets with the same members are the same whatever their order."""
    fp = Fingerprinter({})
    seen = Observations(fp.of)
    a, b, c, d, e, f = (object() for _ in range(6))
    for task, value in [
        (a, [1, 2]),
        (b, (1, 2)),
        (c, {1: "x"}),
        (d, {"1": "x"}),
        (e, [{"k", "j", "a<"}]),
        (f, [{"a<", "j", "k"}]),
    ]:
        seen(task, value, None)  # type: ignore[arg-type]
    assert seen.of(a) != seen.of(b)  # type: ignore[arg-type]
    assert seen.of(c) != seen.of(d)  # type: ignore[arg-type]
    assert seen.of(e) == seen.of(f)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("catalog_id", "invariant", "kv_ops"),
    [
        # The object checks the job is free, awaits a KV audit write, then stores the lease.
        ("JOBS_LEASE_RACE", "single-lease", 2),
        # The lease route takes a list() page of the KV mirror, behind the lease in flight
        # (caught once settled: the settle's fair run leases the job again).
        ("JOBS_STALE_LIST", "single-lease", 3),
    ],
)
def test_the_jobs_protocol_is_explored_with_its_own_work_verb(
    catalog_id: str, invariant: str, kv_ops: int
) -> None:
    """The work verb is the first of the protocol's happy path (``enqueue`` here), counted by
    ``posts``; two consumers race for the one job already enqueued."""
    result = explore(f"catalog:{catalog_id}", invariant, kv="local", bots=2, posts=1, landed=1)
    assert result.verdict == "violation" and result.found is not None
    assert result.found.violation.invariant == invariant
    assert [v for v, _ in result.found.world.verbs].count("enqueue") == 1
    assert result.found.kv_ops == kv_ops


def test_a_safety_invariant_the_settle_breaks_ends_the_story_there() -> None:
    """The settle's traffic is judged as it goes: the second lease of a job the stale list
    shows free ends the story at that lease, before the world is observed (no probe, no
    last polls)."""
    result = explore(
        "catalog:JOBS_STALE_LIST", "single-lease", kv="local", bots=2, posts=1, landed=1
    )
    assert result.found is not None and result.found.at == "settled"
    world = result.found.world
    assert world.settled is None
    assert "lease" in world.log[-1]
    assert not any("last polls" in line for line in world.log)
    assert all(ex.actor != "probe" for ex in world.history)


def test_a_timeout_that_fires_first_sends_a_second_job() -> None:
    """JOBS_IDEMPOTENCY_STALE: with one clock move of a second (the second tick only) while the
    first attempt is not yet served, the producer's one-second timeout (its first option only)
    fires and a retry races the first attempt past the idempotency key."""
    result = explore(
        "catalog:JOBS_IDEMPOTENCY_STALE",
        "no-double-work",
        kv="local",
        bots=1,
        posts=1,
        advances=1,
        horizon_ms=8000,
        only={
            "verb.advance": 1,
            "producer.timeout_ms": 0,
            "consumer.work_ms": 0,
            "consumer.outcome": 0,
        },
    )
    assert result.verdict == "violation" and result.found is not None
    world = result.found.world
    assert ("advance", 1000) in world.verbs
    enqueues = [ex for ex in world.history if ex.kind == "enqueue"]
    assert len(enqueues) == 2  # the first attempt and its retry, with the same key
    assert result.found.kv_ops == 4


def test_advances_move_the_clock_while_tasks_may_run() -> None:
    """Without an advance the clock moves only when nothing can run; with one, each of the
    protocol's ticks is taken at every state, and the scope (still covered) grows."""
    scope = {"kv": "local", "bots": 0, "posts": 1}
    still = explore("sound", "cache-coherent", **scope)
    moved = explore("sound", "cache-coherent", advances=1, **scope)
    assert (still.verdict, still.exhaustive) == (moved.verdict, moved.exhaustive) == ("ok", True)
    assert moved.states > still.states
    once = explore("sound", "cache-coherent", advances=1, options={"verb.advance": 1}, **scope)
    assert still.states < once.states < moved.states


def test_sound_is_ok_and_exhaustive_on_a_small_scope() -> None:
    """The sound design breaks nothing in one post with one bot: ok, the scope covered."""
    result = explore("sound", None, kv="local", bots=1, frontends=1, posts=1)
    assert (result.verdict, result.exhaustive, result.bound) == ("ok", True, None)
    assert result.states > 10


def test_deduplication_explores_fewer_states_with_the_same_verdict() -> None:
    """Interleavings that reach the same state are explored once: fewer runs, same verdict."""
    scope = {"kv": "local", "bots": 1, "frontends": 1, "posts": 1}
    merged = explore("sound", None, **scope)
    every = explore("sound", None, dedup=False, **scope)
    assert merged.verdict == every.verdict == "ok"
    assert merged.executions < every.executions


def test_the_reduction_keeps_the_verdict() -> None:
    """Without the ample-set reduction the same race is found, with the same story length."""
    reduced = explore("catalog:CACHE_LOST_UPDATE", "cache-coherent", kv="local", bots=0)
    full = explore("catalog:CACHE_LOST_UPDATE", "cache-coherent", kv="local", bots=0, reduce=False)
    assert reduced.found is not None and full.found is not None
    assert full.found.kv_ops == reduced.found.kv_ops
    assert reduced.executions < full.executions


def test_the_search_is_deterministic() -> None:
    """The same scope gives the same counts and the same counterexample."""
    a = explore("catalog:CACHE_LOST_UPDATE", "cache-coherent", kv="local", bots=0)
    b = explore("catalog:CACHE_LOST_UPDATE", "cache-coherent", kv="local", bots=0)
    assert (a.states, a.transitions) == (b.states, b.transitions)
    assert a.found is not None and b.found is not None
    assert a.found.world.platform.choices.log == b.found.world.platform.choices.log


# -- the command line ---------------------------------------------------------------------------


def test_json_fields_and_a_replay_byte_for_byte(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json has every field; --report writes a trace that qmodel replay runs again exactly
    and writes again byte for byte."""
    code, obj, err = run(
        capsys,
        "--target",
        "catalog:CACHE_LOST_UPDATE",
        "--kv",
        "local",
        "--bots",
        "0",
        "--invariant",
        "cache-coherent",
        "--json",
        "--report",
        str(tmp_path),
    )
    assert code == 1, err
    assert obj["verdict"] == "violation" and obj["exhaustive"] is False
    assert obj["invariant"] == "cache-coherent"
    assert obj["kv_ops"] == 6
    assert obj["states"] > 0 and obj["transitions"] >= obj["states"] - 1
    assert obj["seconds"] > 0 and obj["steps"] == len(obj["trace"]) > 0
    for field in ("scope", "states_per_second", "scheduler_steps", "at", "report", "versions"):
        assert obj[field] is not None, field
    trace_path = Path(obj["report"]["trace"])
    trace = load(trace_path)
    outcome = replay_strict(trace)
    assert outcome.violation is not None and outcome.violation.invariant == "cache-coherent"
    assert retrace(trace, outcome).dumps() == trace.dumps()
    assert Path(obj["report"]["markdown"]).is_file() and Path(obj["report"]["test"]).is_file()
    code = cli.main(["replay", str(trace_path), "--report", str(tmp_path / "again")])
    capsys.readouterr()
    assert code == 1
    assert (tmp_path / "again" / trace_path.name).read_bytes() == trace_path.read_bytes()


def test_sound_json_is_ok_and_exhaustive(capsys: pytest.CaptureFixture[str]) -> None:
    """ok with exhaustive: true, exit 0, no counterexample."""
    code, obj, _ = run(capsys, "--target", "sound", "--posts", "1", "--json")
    assert code == 0
    assert (obj["verdict"], obj["exhaustive"], obj["invariant"], obj["trace"]) == (
        "ok",
        True,
        None,
        [],
    )


def test_a_world_without_bots_leaves_the_work_unjudged(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Nobody answers a message in a world without bots: the invariants about the work being
    done are not judged there (any design would break them), the others are, and the sound
    design is ok; where the platform does the work (a push consumer) every invariant judges."""
    code, obj, _ = run(capsys, "--target", "sound", "--bots", "0", "--json")
    assert code == 0
    assert (obj["verdict"], obj["exhaustive"]) == ("ok", True)
    assert obj["not_judged"] == ["one-reply", "pending-visible"]
    scope = ["--bots", "0", "--posts", "1", "--horizon-ms", "6000", "--depth", "400"]
    target = "catalog:QUEUES_PUSH_REPLY_NOT_IDEMPOTENT"
    code, obj, _ = run(capsys, "--target", target, *scope, "--json")
    assert (code, obj["invariant"], obj["not_judged"]) == (1, "one-reply", [])


def test_a_bound_hit_gives_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    """A depth too small to cover the scope: verdict unknown, exit 2, the bound named."""
    code, obj, err = run(capsys, "--target", "sound", "--depth", "3", "--json")
    assert code == 2
    assert (obj["verdict"], obj["exhaustive"], obj["bound"]) == ("unknown", False, "--depth 3")
    assert obj["error"]["kind"] == "unknown"
    assert "qmodel: no verdict: the search hit --depth 3 before covering the scope" in err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--bots", "9"], "--bots 9: give 0 to 4 bots"),
        (["--frontends", "0"], "--frontends 0: give 1 to 4 frontends"),
        (["--depth", "0"], "--depth 0: give at least 1 verb"),
        (["--posts", "1", "--landed", "2"], "--landed 2: give 0 to --posts (1)"),
        (["--bots", "0", "--crashes", "1"], "--crashes needs a bot to crash: give --bots 1"),
        (["--bursts", "-1"], "--bursts -1: give 0 or more bursts"),
        (["--options", "kv.node"], "--options kv.node: give LABEL=K (the first K options"),
        (["--options", "kv.node=@x"], "or LABEL=@N (the Nth only, e.g. consumer.work_ms=@4)"),
        (["--options", "kv.node=@0"], "--options kv.node=@0: options are counted from 1"),
        (["--options", "kv.node=0"], "--options kv.node=0: explore at least 1 option"),
        (["--invariant", "no-such"], "no-such"),
        (
            ["--bots", "0", "--invariant", "one-reply"],
            "--bots 0: nobody does the work in this world, so one-reply (about the work",
        ),
    ],
)
def test_bad_scope_flags_exit_2_with_one_json_object(
    capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    """A scope that cannot be explored exits 2 with one JSON object saying what to give."""
    code, obj, err = run(capsys, "--target", "sound", *flags, "--json")
    assert code == 2
    assert obj["verdict"] == "error"
    assert message in obj["error"]["message"]
    assert message in err


# -- the backend ----------------------------------------------------------------------------------


def test_path_backend_follows_the_prefix_then_notes_the_other_options() -> None:
    """The prefix is answered as given; past it the first allowed option is taken and the
    others are noted with their position and verb."""
    backend = PathBackend((2,), lambda label, n: range(n))
    backend.verb = 5
    assert backend.pick("step", 3, None) == 2
    assert backend.pick("step", 3, None) == 0
    assert backend.taken == [2, 0]
    assert backend.branches == [(1, (1, 2), 5)]


def test_progress_is_told_as_the_search_goes(capsys: pytest.CaptureFixture[str]) -> None:
    """The progress callback sees the level, the states so far and the queue; the terminal
    line shows them and is cleared at the end."""
    from qmodel.explore_cli import _Line

    seen: list[tuple[int, int, int, int, float]] = []
    resolved = targets.resolve("sound")
    proto = protocols.get(resolved.protocol)
    scope = Scope(kv="local", bots=1, frontends=1, posts=2, landed=1)
    Explorer(
        resolved.factory, proto, scope, proto.invariants, progress=lambda *a: seen.append(a)
    ).run()
    assert seen, "no progress was reported"
    assert [s[1] for s in seen] == sorted(s[1] for s in seen)
    line = _Line(True)
    line(3, 128, 200, 7, 0.5)
    line.done()
    err = capsys.readouterr().err
    assert "explore: level 3, 128 states, 200 transitions, 7 queued, 256 states/s" in err
    assert err.endswith("\r\033[K")


def test_the_explorer_does_not_use_hypothesis() -> None:
    """A whole exploration, its trace and report included, runs without importing Hypothesis
    (the command line imports it only to print its version)."""
    import subprocess
    import sys

    code = (
        "import sys, tempfile\n"
        "from qmodel import catalog, protocols\n"
        "from qmodel.check import select\n"
        "from qmodel.explore import Explorer, Scope\n"
        "from qmodel.replay import trace_of\n"
        "from qmodel.report import write_report\n"
        "e = catalog.entry('CACHE_LOST_UPDATE')\n"
        "p = protocols.get(e.protocol)\n"
        "checked = select(p.invariants, ['cache-coherent'], protocol=p.name)\n"
        "r = Explorer(e.target, p, Scope(bots=0), checked).run()\n"
        "t = trace_of(r.found.world, r.found.violation, target='catalog:CACHE_LOST_UPDATE',\n"
        "             checked=checked)\n"
        "with tempfile.TemporaryDirectory() as d:\n"
        "    write_report(t, d)\n"
        "print(r.verdict, 'hypothesis' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["violation", "False"]


def test_polled_starts_the_claim_race_where_the_hand_model_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--polled: the landed post is stored and both bots have polled it before anything else
    steps; that setup (the post's write, the two polls' reads) is reported apart, and the race
    from there is the hand model's 4 KV operations (the two claims' get and put). The trace is
    the whole run, setup included, and replays byte for byte."""
    code, obj, err = run(
        capsys,
        "--target",
        "catalog:CLAIM_NOT_ATOMIC",
        "--bots",
        "2",
        "--posts",
        "1",
        "--landed",
        "1",
        "--polled",
        "--invariant",
        "single-claim",
        "--json",
        "--report",
        str(tmp_path),
    )
    assert code == 1, err
    assert obj["invariant"] == "single-claim"
    assert (obj["kv_ops"], obj["setup_kv_ops"], obj["setup_steps"]) == (7, 3, 4)
    assert obj["kv_ops"] - obj["setup_kv_ops"] == obj["cited_kv_ops"] == 4
    setup, race = obj["trace"][: obj["setup_steps"]], obj["trace"][obj["setup_steps"] :]
    assert "starts posting" in setup[0] and "POST /api/comments" in setup[1]
    assert ["bot-1", "bot-2"] == [line.split(" ")[1].split("@")[0] for line in setup[2:]]
    assert all("GET /api/queue/pending" in line for line in setup[2:])
    assert race and all("POST /api/queue/claim" in line for line in race)
    trace = load(obj["report"]["trace"])
    outcome = replay_strict(trace)
    assert retrace(trace, outcome).dumps() == trace.dumps()


def test_polled_needs_landed_posts_and_bots(capsys: pytest.CaptureFixture[str]) -> None:
    """--polled without a landed post has nothing for the bots to poll: exit 2, saying what to
    give."""
    code, obj, _ = run(capsys, "--polled", "--json")
    assert code == 2
    assert obj["error"]["message"] == (
        "--polled: the bots poll the landed posts; give --landed 1 or more and --bots 1 or more"
    )
