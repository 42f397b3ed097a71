"""Determinism and replay (DESIGN principle 1, STYLE 7): one choice source, recorded; the same
seed gives the same trace byte for byte, and a recorded trace replays exactly."""

# One-line test docstrings state the rule in full, with its section and message.
# ruff: noqa: E501

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qmodel.errors import ChoiceError, TraceMismatch
from qmodel.sim import (
    Choice,
    ChoiceSource,
    FirstOptionBackend,
    HypothesisBackend,
    KvConfig,
    KvError,
    Platform,
    RecordedBackend,
    Request,
    Response,
    SeededBackend,
    json_response,
    sleep,
)


class RmwCounter:
    """The canonical KV bug (§1.7, B1): read ``n``, wait a little, write ``n + 1``, retrying a
    429 after a second (§2.2) with the value computed before."""

    async def fetch(self, request: Request, env: Any, ctx: Any) -> Response:
        kv = env.COMMENTS_KV
        n = int(await kv.get("n") or "0")
        await sleep(5)
        for _ in range(3):
            try:
                await kv.put("n", str(n + 1))
                break
            except KvError:
                await sleep(1_000)
        else:
            return Response("gave up", 429)
        listed = await kv.list(prefix="n")
        return json_response({"n": n + 1, "listed": [k.name for k in listed.keys]})


def workload(backend: Any, *, kv: KvConfig | None = None) -> tuple[Platform, str]:
    """Five read-modify-write requests at three locations, with clock advances between waves.
    Returns the platform and its serialized trace: the choices, then the rendered steps."""
    platform = Platform.create(backend=backend, kv=kv)
    sched = platform.scheduler
    tasks = [
        platform.send(RmwCounter(), Request.make("POST", "/inc"), location=loc) for loc in "AB"
    ]
    sched.run(max_steps=3)
    sched.advance(1_500)
    tasks += [
        platform.send(RmwCounter(), Request.make("POST", "/inc"), location=loc) for loc in "CA"
    ]
    sched.run(until=lambda: all(t.finished for t in tasks[:3]))
    sched.advance(61_000)
    tasks.append(platform.send(RmwCounter(), Request.make("POST", "/inc"), location="B"))
    sched.run(until=lambda: all(t.finished for t in tasks))
    platform.check()
    text = platform.choices.dumps() + "\n" + "\n".join(s.render() for s in sched.trace)
    return platform, text


def test_same_seed_same_trace_byte_for_byte() -> None:
    """DESIGN principle 1: the same seed gives a byte-identical serialized trace (choices and steps)."""
    for seed in (0, 1, 17):
        p1, t1 = workload(SeededBackend(seed))
        p2, t2 = workload(SeededBackend(seed))
        assert t1.encode() == t2.encode()
        assert p1.kv_store.snapshot() == p2.kv_store.snapshot()
        assert [i.counters() for i in p1.invocations] == [i.counters() for i in p2.invocations]
        assert len(p1.choices.log) > 5
        assert {c.label for c in p1.choices.log} >= {"step", "kv.node"}


def test_different_seeds_give_different_traces() -> None:
    """DESIGN principle 1: different seeds explore different schedules, so their traces differ."""
    traces = [workload(SeededBackend(seed))[1] for seed in range(8)]
    assert len(set(traces)) == len(traces)
    finals = {workload(SeededBackend(seed))[0].kv_store.snapshot().get("n") for seed in range(8)}
    assert len(finals) > 1  # some schedules lose updates, some do not


def test_replay_reproduces_the_identical_trace() -> None:
    """DESIGN principle 1: replaying the recorded choices with RecordedBackend reproduces the identical trace and uses every choice."""
    for seed in (3, 4):
        original, text = workload(SeededBackend(seed))
        recorded = ChoiceSource.loads(original.choices.dumps())
        backend = RecordedBackend(recorded)
        replayed, again = workload(backend)
        assert again == text
        assert backend.position == len(recorded)
        assert replayed.kv_store.snapshot() == original.kv_store.snapshot()


def test_replay_against_a_changed_configuration_raises_trace_mismatch() -> None:
    """DESIGN principle 1: a trace replayed against a world that asks different choices stops with TraceMismatch."""
    original, _ = workload(SeededBackend(2))
    recorded = ChoiceSource.loads(original.choices.dumps())
    with pytest.raises(TraceMismatch) as info:
        workload(RecordedBackend(recorded), kv=KvConfig.local())
    assert "the target or its configuration differs from the recorded run" in str(info.value)
    assert info.value.position < len(recorded)


def test_recorded_backend_refuses_a_different_label_or_n() -> None:
    """choices.py: a RecordedBackend asked a different label or option count raises TraceMismatch with position, expected and actual."""
    backend = RecordedBackend([Choice("step", 3, 1), Choice("kv.ryw", 2, 0)])
    with pytest.raises(TraceMismatch) as info:
        backend.pick("kv.ryw", 2, None)
    assert str(info.value) == (
        "choice #0: the trace recorded 'step' of 3 options but the run asked for 'kv.ryw' of 2; "
        "the target or its configuration differs from the recorded run"
    )
    assert (info.value.position, info.value.expected, info.value.actual) == (
        0,
        "step/3",
        "kv.ryw/2",
    )
    assert isinstance(info.value, ValueError)
    with pytest.raises(TraceMismatch) as info:
        backend.pick("step", 2, None)
    assert str(info.value) == (
        "choice #0: the trace recorded 'step' of 3 options but the run asked for 'step' of 2; "
        "the target or its configuration differs from the recorded run"
    )
    assert backend.pick("step", 3, None) == 1
    assert backend.pick("kv.ryw", 2, (99, 1)) == 0
    with pytest.raises(TraceMismatch) as info:
        backend.pick("step", 2, None)
    assert str(info.value) == (
        "the run asked for choice #2 ('step' of 2) but the trace records only 2 choices; the "
        "target or its configuration differs from the recorded run"
    )
    assert (info.value.position, info.value.expected, info.value.actual) == (
        2,
        "end of trace",
        "step/2",
    )


def test_recorded_backend_hands_over_to_then() -> None:
    """choices.py: when the record runs out, the `then` backend decides."""
    backend = RecordedBackend([Choice("a", 2, 1)], then=FirstOptionBackend())
    source = ChoiceSource(backend)
    assert [source.choose("a", 2), source.choose("b", 3), source.choose("c", 4)] == [1, 0, 0]
    assert source.log == [Choice("a", 2, 1), Choice("b", 3, 0), Choice("c", 4, 0)]


def test_seeded_backend_honours_weights() -> None:
    """choices.py: SeededBackend picks options in proportion to their weights (fixed seed, 20 000 draws)."""
    source = ChoiceSource(SeededBackend(1234))
    counts = Counter(source.choose("w", 3, (7, 2, 1)) for _ in range(20_000))
    assert 13_600 <= counts[0] <= 14_400
    assert 3_700 <= counts[1] <= 4_300
    assert 1_800 <= counts[2] <= 2_200
    uniform = ChoiceSource(SeededBackend(5))
    counts = Counter(uniform.choose("u", 4) for _ in range(20_000))
    assert all(4_600 <= counts[i] <= 5_400 for i in range(4))


def test_seeded_backend_is_private_and_repeatable() -> None:
    """STYLE 7: a SeededBackend uses its own PRNG: the same seed repeats its decisions, whatever the global random does."""
    import random

    a = ChoiceSource(SeededBackend(42))
    first = [a.choose("x", 10) for _ in range(50)]
    random.seed(0)
    random.random()
    b = ChoiceSource(SeededBackend(42))
    assert [b.choose("x", 10) for _ in range(50)] == first
    assert a.dumps() == b.dumps()


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_hypothesis_backend_drives_a_world(data: st.DataObject) -> None:
    """choices.py: HypothesisBackend draws every choice from Hypothesis data; the run is valid and replays exactly."""
    backend = HypothesisBackend(data)
    platform, text = workload(backend)
    log = platform.choices.log
    assert log and all(0 <= c.index < c.n and c.n > 1 for c in log)
    replayed = RecordedBackend(ChoiceSource.loads(platform.choices.dumps()))
    assert workload(replayed)[1] == text
    stored = int(platform.kv_store.snapshot().get("n") or "0")
    assert stored in range(1, 6)


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_hypothesis_backend_maps_weights_to_options(data: st.DataObject) -> None:
    """choices.py: with weights, HypothesisBackend draws below sum(weights) and maps the draw to its option."""
    source = ChoiceSource(HypothesisBackend(data))
    index = source.choose("w", 3, (5, 1, 1))
    assert 0 <= index < 3
    assert source.log == [Choice("w", 3, index)]
    assert source.choose("one", 1) == 0
    assert len(source.log) == 1


def test_hypothesis_backend_maps_draws_onto_weighted_options() -> None:
    """choices.py: the weighted mapping sends draws 0..4 to option 0, 5 to option 1 and 6 to option 2."""

    picks = [HypothesisBackend(_FixedData(r)).pick("w", 3, (5, 1, 1)) for r in range(7)]
    assert picks == [0, 0, 0, 0, 0, 1, 2]
    assert HypothesisBackend(_FixedData(2)).pick("u", 3, None) == 2


class _FixedData:
    """Stands for Hypothesis data: every draw gives ``value``; the strategies are kept."""

    def __init__(self, value: int) -> None:
        self.value = value
        self.strategies: list[Any] = []

    def draw(self, strategy: Any, label: str | None = None) -> int:
        self.strategies.append(strategy)
        return self.value


def test_hypothesis_backend_raises_rare_options_to_the_search_floor() -> None:
    """choices.py: in a search, an option weighing under a tenth of the sum is drawn as if it
    weighed a tenth: (99, 1) is drawn below 109, and draws 99..108 all give option 1."""
    data = _FixedData(0)
    HypothesisBackend(data).pick("kv.ryw", 2, (99, 1))
    assert repr(data.strategies[0]) == "integers(min_value=0, max_value=108)"
    picks = [HypothesisBackend(_FixedData(r)).pick("kv.ryw", 2, (99, 1)) for r in (0, 98, 99, 108)]
    assert picks == [0, 0, 1, 1]


def test_dumps_loads_round_trip() -> None:
    """choices.py: ChoiceSource.loads(dumps()) gives back the recorded choices, and dumps is canonical compact JSON."""
    source = ChoiceSource(SeededBackend(8))
    for n in (2, 3, 5, 2):
        source.choose(f"label-{n}", n)
    source.force("forced", 4, 3)
    text = source.dumps()
    assert ChoiceSource.loads(text) == source.log
    assert text.startswith('[["label-2",2,') and " " not in text
    assert ChoiceSource(FirstOptionBackend()).dumps() == "[]"
    assert ChoiceSource.loads("[]") == []


def test_loads_rejects_malformed_records() -> None:
    """choices.py: loads refuses a record that is not a list of [label, n, index] and says what it expects."""
    with pytest.raises(ChoiceError) as info:
        ChoiceSource.loads('{"step": 1}')
    assert str(info.value) == "recorded choices are a JSON list of [label, n, index]"
    with pytest.raises(ChoiceError) as info:
        ChoiceSource.loads('[["step", 2]]')
    assert str(info.value) == "a recorded choice is [label, n, index]; got ['step', 2]"


def test_a_choice_with_one_option_is_not_recorded() -> None:
    """choices.py: a decision with a single option returns 0 without asking the backend and is not recorded."""
    source = ChoiceSource(RecordedBackend([]))  # would raise if asked anything
    assert source.choose("only", 1) == 0
    assert source.pick("only", ["x"]) == "x"
    source.force("forced-only", 1, 0)
    assert source.log == []
    assert source.dumps() == "[]"


def test_a_lone_runnable_task_spends_no_choice() -> None:
    """choices.py: stepping with one runnable task is not a choice, so a sequential run records nothing."""
    platform = Platform.create(backend=RecordedBackend([]), kv=KvConfig.local())
    res = platform.request(RmwCounter(), Request.make("POST", "/inc"), location="A")
    assert res.json_body() == {"n": 1, "listed": ["n"]}
    assert platform.choices.log == []


def test_bad_choice_requests_are_refused() -> None:
    """choices.py: no options, mismatched weights and out-of-range indices raise ChoiceError with the details."""
    source = ChoiceSource(FirstOptionBackend())
    with pytest.raises(ChoiceError) as info:
        source.choose("none", 0)
    assert str(info.value) == "choice 'none' has no options (n=0); nothing can be chosen"
    with pytest.raises(ChoiceError) as info:
        source.choose("w", 2, (1,))
    assert str(info.value) == "choice 'w': 1 weights for 2 options"
    with pytest.raises(ChoiceError) as info:
        source.force("f", 2, 2)
    assert str(info.value) == "forced choice 'f': 2 not in range(2)"

    class Broken:
        def pick(self, label: str, n: int, weights: Any) -> int:
            return n

    with pytest.raises(
        ChoiceError, match=re.escape("choice 'b': backend returned 3, not in range(3)")
    ):
        ChoiceSource(Broken()).choose("b", 3)
    assert source.log == []
