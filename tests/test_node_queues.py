"""Cloudflare Queues in the Node lane: a JavaScript worker's producer bindings and ``queue()``
push consumer are proxies of the simulator's (``qmodel/sim/queues.py``), so the JavaScript
designs of ``examples/workers/queues/`` behave as the Python designs of
``qmodel/workers/queues_chat.py`` under the same schedules, and the machine finds the same bugs.

Three parts: the two lanes on the hand-driven scenarios of tests/test_queues.py; ``qmodel
check`` on each design; and one test per rule the Node side proxies (send and sendBatch with
their errors, ack, retry, ackAll, retryAll, a throw, waitUntil), each of which fails if the
proxy drops the rule. The tests need Node 20.6+ (skipped without it unless
``QMODEL_REQUIRE_NODE=1``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import test_queues as scenarios

from qmodel import cli, profiles
from qmodel.catalog import CATALOG
from qmodel.errors import InvalidTarget
from qmodel.protocols import get as get_protocol
from qmodel.sim.choices import ChoiceSource, FirstOptionBackend, RecordedBackend, SeededBackend
from qmodel.sim.http import Request
from qmodel.sim.queues import PullConsumer, PushConsumer, QueueConfig
from qmodel.sim.runtime import Platform
from qmodel.trace import fingerprint, fingerprint_unrun
from qmodel.workers.queues_chat import PullBot
from qmodel.world import World, WorldConfig

if shutil.which(os.environ.get("QMODEL_NODE") or "node") is None:
    if os.environ.get("QMODEL_REQUIRE_NODE") == "1":
        raise RuntimeError("QMODEL_REQUIRE_NODE=1 but no node on the PATH")
    pytest.skip("Node.js is not installed (the Node lane's tests need it)", allow_module_level=True)

from qmodel.node import JsWorker, NodeWorker, js_worker  # noqa: E402

QUEUES = Path(__file__).resolve().parent.parent / "examples" / "workers" / "queues"
#: Each catalog id of the Queues designs, and the JavaScript module that ports it. The push
#: designs run in the project's Wrangler environment ``push`` (:func:`env_of`).
DESIGNS = {
    "QUEUES_SOUND": QUEUES / "pull-sound.mjs",
    "QUEUES_REPLY_NOT_IDEMPOTENT": QUEUES / "pull-reply-not-idempotent.mjs",
    "QUEUES_ACK_BEFORE_REPLY": QUEUES / "pull-ack-before-reply.mjs",
    "QUEUES_PUSH_SOUND": QUEUES / "push-sound.mjs",
    "QUEUES_PUSH_REPLY_NOT_IDEMPOTENT": QUEUES / "push-reply-not-idempotent.mjs",
}

_WORKERS: dict[Path, JsWorker] = {}


def env_name(catalog_id: str) -> str | None:
    """The Wrangler environment a design runs in: the push consumer is the environment push."""
    return "push" if catalog_id.startswith("QUEUES_PUSH") else None


def env_of(catalog_id: str) -> list[str]:
    """The ``--env`` flag of a design's command line."""
    env = env_name(catalog_id)
    return ["--env", env] if env else []


def js(catalog_id: str) -> JsWorker:
    """The checked JavaScript design of ``catalog_id`` (checked once per test session)."""
    path = DESIGNS[catalog_id]
    if path not in _WORKERS:
        _WORKERS[path] = js_worker(path, env=env_name(catalog_id))
    return _WORKERS[path]


def test_every_queues_design_has_a_javascript_port() -> None:
    """Each QUEUES_* catalog entry has its JavaScript design."""
    assert sorted(DESIGNS) == sorted(i for i in CATALOG if i.startswith("QUEUES_"))


def test_the_designs_bindings_come_from_their_wrangler_files() -> None:
    """The project's queue has an HTTP pull consumer, and a push consumer in its environment
    push, with the Python designs' settings; ack-before-reply says so to the bot by its
    export."""
    pull, push = js("QUEUES_SOUND")(), js("QUEUES_PUSH_SOUND")()
    python_pull = CATALOG["QUEUES_SOUND"].target()
    python_push = CATALOG["QUEUES_PUSH_SOUND"].target()
    assert pull.queues == python_pull.queues and push.queues == python_push.queues
    assert js("QUEUES_ACK_BEFORE_REPLY")().pull_bot == PullBot(ack_before_reply=True)
    assert pull.pull_bot is None


# -- (a) the same scenarios, the same outcomes --------------------------------------------------


def history(w: World) -> list[tuple[Any, ...]]:
    """Every request of the run and its answer, with each message id renamed by its order of
    appearance, wherever it occurs (a Python design numbers the ids it makes from the world's
    counter, a JavaScript one from its own)."""
    exchanges = w.history.exchanges
    order: dict[str, str] = {}

    def collect(value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if k in ("id", "replyId", "replyTo") and isinstance(v, str):
                    order.setdefault(v, f"<id{len(order)}>")
                collect(v)
        elif isinstance(value, list):
            for v in value:
                collect(v)

    for ex in exchanges:
        collect([ex.body, ex.answer])
    pattern = re.compile("|".join(re.escape(i) for i in sorted(order, key=len, reverse=True)))

    def rename(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: rename(v) for k, v in value.items()}
        if isinstance(value, list):
            return [rename(v) for v in value]
        if isinstance(value, str) and order:
            return pattern.sub(lambda m: order[m.group(0)], value)
        return value

    return [
        rename(
            [
                ex.actor,
                ex.kind,
                ex.method,
                ex.path,
                ex.sent_ms,
                ex.answered_ms,
                ex.status,
                ex.message_id,
                ex.body,
                ex.answer,
            ]
        )
        for ex in exchanges
    ]


Scenario = Callable[..., World]
#: (catalog id, scenario of tests/test_queues.py, the invariants it breaks there).
SCENARIOS: list[tuple[str, Scenario, list[str]]] = [
    ("QUEUES_REPLY_NOT_IDEMPOTENT", scenarios.lease_runs_out, ["one-reply"]),
    ("QUEUES_SOUND", scenarios.lease_runs_out, []),
    ("QUEUES_ACK_BEFORE_REPLY", scenarios.crash_while_generating, ["one-reply", "pending-visible"]),
    ("QUEUES_SOUND", scenarios.crash_while_generating, []),
    ("QUEUES_SOUND", scenarios.busy_pull, []),
    ("QUEUES_PUSH_REPLY_NOT_IDEMPOTENT", scenarios.duplicated, ["one-reply"]),
    ("QUEUES_PUSH_SOUND", scenarios.duplicated, []),
    ("QUEUES_PUSH_SOUND", scenarios.busy_push, []),
]


@pytest.mark.parametrize(
    ("catalog_id", "scenario", "expected"),
    SCENARIOS,
    ids=[f"{c}-{s.__name__}" for c, s, _ in SCENARIOS],
)
def test_same_scenario_same_outcome(
    catalog_id: str, scenario: Scenario, expected: list[str]
) -> None:
    """A hand-driven scenario of tests/test_queues.py breaks the same invariants in the
    JavaScript design as in the Python design (those it is written to break), with the same
    requests, answers and times."""
    python = scenario(catalog_id)
    javascript = scenario(catalog_id, js(catalog_id)())
    assert history(javascript) == history(python)
    assert scenarios.broken(javascript) == scenarios.broken(python) == expected
    assert history(javascript) == history(python)  # the settle did the same too


def test_a_redelivered_message_is_answered_twice_in_javascript() -> None:
    """The mechanism of QUEUES_REPLY_NOT_IDEMPOTENT happens in the JavaScript design: the lease
    runs out, both bots' replies are stored; the sound design refuses the second (409)."""
    w = scenarios.lease_runs_out("QUEUES_REPLY_NOT_IDEMPOTENT", js("QUEUES_REPLY_NOT_IDEMPOTENT")())
    assert scenarios.replies(w) == 2
    w = scenarios.lease_runs_out("QUEUES_SOUND", js("QUEUES_SOUND")())
    assert scenarios.replies(w) == 1
    assert any(ex.kind == "post" and ex.status == 409 for ex in w.history.exchanges)


# -- (b) qmodel check finds the bugs -------------------------------------------------------------


def _protocol(catalog_id: str) -> str:
    return CATALOG[catalog_id].protocol


def _check(target: Path | str, catalog_id: str, examples: int, capsys: Any) -> dict[str, Any]:
    code = cli.main(
        [
            "check",
            "--target",
            str(target),
            *env_of(catalog_id),
            "--protocol",
            _protocol(catalog_id),
            "--max-examples",
            str(examples),
            "--profile",
            "dev",
            "--seed",
            "0",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == (1 if out["verdict"] == "violation" else 0), out
    return out


@pytest.mark.parametrize(
    "catalog_id", [i for i in DESIGNS if CATALOG[i].invariants], ids=lambda i: i.lower()
)
def test_check_finds_each_bug(
    catalog_id: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """qmodel check --target <the JavaScript design> --protocol queues[-push] finds a violation
    of an invariant its catalog entry names, within 10 examples (a short shrink, for speed)."""
    short = tuple(min(v, 3) for v in profiles.SHRINK_BUDGETS["dev"])
    monkeypatch.setitem(profiles.SHRINK_BUDGETS, "dev", short)
    out = _check(DESIGNS[catalog_id], catalog_id, 10, capsys)
    assert out["verdict"] == "violation"
    assert out["invariant"] in CATALOG[catalog_id].invariants


@pytest.mark.parametrize("catalog_id", ["QUEUES_SOUND", "QUEUES_PUSH_SOUND"])
def test_check_finds_nothing_in_the_sound_designs(
    catalog_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """qmodel check on the project folder (its main is the sound design, at the top level and
    in the environment push) is clean over a small budget."""
    out = _check(QUEUES, catalog_id, 8, capsys)
    assert out["verdict"] == "ok" and out["examples"] == 8


@pytest.mark.slow
@pytest.mark.parametrize("catalog_id", list(DESIGNS), ids=lambda i: i.lower())
def test_ci_profile_agrees_with_the_python_design(catalog_id: str) -> None:
    """qmodel check --profile ci, shrinking included, gives the JavaScript design the verdict
    it gives the Python design it ports, and a violation of an invariant the catalog names
    (not necessarily the Python run's: the JavaScript run draws its PRNG seed from the same
    choices, so the two searches take different paths)."""
    protocol = ["--protocol", _protocol(catalog_id)]
    target = ["--target", str(DESIGNS[catalog_id]), *env_of(catalog_id)]
    js_result = cli.run_check(cli.check_args([*target, *protocol]))
    py_result = cli.run_check(cli.check_args(["--target", f"catalog:{catalog_id}", *protocol]))
    assert js_result["verdict"] == py_result["verdict"]
    expected = CATALOG[catalog_id].invariants
    assert js_result["verdict"] == ("violation" if expected else "ok")
    if expected:
        assert js_result["invariant"] in expected and py_result["invariant"] in expected


# -- (c) each rule the Node side proxies ----------------------------------------------------------

#: A worker whose fetch calls ``env.JOBS[op](...args)`` as the request body says, answering the
#: outcome, and whose queue() logs each batch and then runs the test's handler code.
WORKER = """
export default {
  async fetch(request, env) {
    const { op, args, bytes } = await request.json();
    if (bytes) args[0] = new Uint8Array(bytes);
    try {
      await env.JOBS[op](...args);
      return Response.json({ ok: true });
    } catch (err) {
      return Response.json({ ok: false, name: err.name, message: err.message });
    }
  },
  async queue(batch, env, ctx) {
    console.log(JSON.stringify({
      queue: batch.queue,
      now: Date.now(),
      messages: batch.messages.map((m) => ({
        id: m.id,
        body: m.body instanceof Uint8Array ? { bytes: [...m.body] } : m.body,
        attempts: m.attempts,
        date: m.timestamp instanceof Date ? m.timestamp.getTime() : null,
      })),
    }));
    const [first] = batch.messages;
%s
  },
};
"""
WRANGLER = """
name = "jobs"
main = "worker.mjs"
[[queues.producers]]
binding = "JOBS"
queue = "jobs"
[[queues.consumers]]
queue = "jobs"
max_batch_size = %d
retry_delay = 30
"""


class Project:
    """A JavaScript worker with a queue ``jobs`` (binding ``JOBS``, push consumer of batches
    of ``batch`` messages) on a platform without duplicates, in FIFO order."""

    def __init__(self, folder: Path, handler: str = "", batch: int = 1) -> None:
        (folder / "wrangler.toml").write_text(WRANGLER % batch)
        (folder / "worker.mjs").write_text(WORKER % handler)
        self.worker: NodeWorker = js_worker(folder / "worker.mjs")()
        self.platform = Platform.create(
            backend=FirstOptionBackend(), kv_bindings=self.worker.kv_bindings
        )
        config = self.worker.queues["JOBS"]
        queues = {
            "JOBS": QueueConfig(
                name="jobs", consumer=config.consumer, reorder=False, duplicate_weights=None
            )
        }
        self.queues = self.platform.install_queues(queues, self.worker)
        self.start = self.platform.clock.now_ms

    def call(self, op: str, *args: Any, data: bytes | None = None) -> dict[str, Any]:
        """``env.JOBS[op](...args)`` in a request; ``{ok}`` or the error's ``{name, message}``."""
        body = {"op": op, "args": list(args), "bytes": list(data) if data is not None else None}
        request = Request.make("POST", "/", json_body=body)
        return self.platform.request(self.worker, request, location="fra").json_body()

    def send(self, *bodies: Any) -> None:
        for b in bodies:
            assert self.call("send", b) == {"ok": True}

    def run(self) -> None:
        """Deliver everything there is to deliver."""
        scenarios.drive(self.platform)

    def logged(self) -> list[dict[str, Any]]:
        """The batches queue() logged, in delivery order."""
        out = [json.loads(t) for _, level, t in self.worker.logs if level == "log"]
        assert all(b["queue"] == "jobs" for b in out)
        return out

    @property
    def jobs(self) -> Any:
        return self.queues.by_name["jobs"]


SEND_ERRORS = [
    # Q1.4: the runtime's TypeErrors, with their texts.
    (("send",), "TypeError", "Message body cannot be undefined"),
    (("send", None), "TypeError", "Message body cannot be undefined"),
    (
        ("send", "x", {"contentType": "yaml"}),
        "TypeError",
        "Unsupported queue message content type: yaml",
    ),
    (
        ("send", 5, {"contentType": "text"}),
        "TypeError",
        'Content Type "text" requires a value of type string, but received: number',
    ),
    (
        ("send", "x", {"contentType": "bytes"}),
        "TypeError",
        'Content Type "bytes" requires a value of type ArrayBufferView, but received: string',
    ),
    (("sendBatch", []), "TypeError", "sendBatch() requires at least one message"),
]


@pytest.mark.parametrize(
    ("call", "name", "message"), SEND_ERRORS, ids=[c[2][:30] for c in SEND_ERRORS]
)
def test_send_argument_errors_reach_javascript(
    tmp_path: Path, call: tuple[Any, ...], name: str, message: str
) -> None:
    """Q1.4: send/sendBatch argument errors reject the JavaScript promise with a TypeError and
    the runtime's text. (A null body is refused as undefined too: the simulator's one ``None``
    stands for both, where Workers would send null as JSON.)"""
    p = Project(tmp_path)
    op, *args = call
    assert p.call(op, *args) == {"ok": False, "name": name, "message": message}
    assert p.jobs.messages == []


def test_send_service_errors_reach_javascript_with_the_simulators_messages(tmp_path: Path) -> None:
    """Q1.6, Q1.7, Q1.12-Q1.13: a send the service refuses (size 10204, count 10206, delay
    10203/10202) rejects with an Error whose message is the simulator's; nothing is stored."""
    p = Project(tmp_path)
    fits = "x" * (128_000 - 100)
    assert p.call("send", fits, {"contentType": "text"}) == {"ok": True}
    too_big = p.call("send", fits + "x", {"contentType": "text"})
    assert too_big["name"] == "Error" and too_big["message"].endswith(
        "MessageSizeOutOfBounds (10204)"
    )
    count = p.call("sendBatch", [{"body": i} for i in range(101)])
    assert count["message"].startswith("Queue sendBatch failed: 101 messages")
    assert count["message"].endswith("BatchCountOutOfBounds (10206)")
    delay = p.call("send", 1, {"delaySeconds": 86_401})
    assert delay["message"].endswith("MessageMetadataInvalid (10203)")
    batch_delay = p.call("sendBatch", [{"body": 1}], {"delaySeconds": -1})
    assert batch_delay["message"].endswith("BatchDelayInvalid (10202)")
    assert len(p.jobs.messages) == 1


def test_send_and_send_batch_store_bodies_types_and_delays(tmp_path: Path) -> None:
    """Q1.1, Q1.3, Q1.13: send and sendBatch store what JavaScript gave, JSON, text and bytes,
    with the per-message, per-batch and default delays; push delivery gives the bodies back
    (a bytes body as a Uint8Array), the ids, attempts and a Date timestamp (Q2.2)."""
    p = Project(tmp_path, batch=10)  # nothing goes out before the 5 s batch timeout
    assert p.call("send", {"n": [1, "two"]}) == {"ok": True}
    assert p.call("send", "hello", {"contentType": "TEXT", "delaySeconds": 7}) == {"ok": True}
    assert p.call("send", None, {"contentType": "bytes"}, data=b"\x00\xff") == {"ok": True}
    sent = p.call(
        "sendBatch",
        [{"body": "own", "contentType": "text", "delaySeconds": 3}, {"body": ["b"]}],
        {"delaySeconds": 5},
    )
    assert sent == {"ok": True}
    stored = [(m.body, m.content_type, (m.visible_ms - p.start) // 1000) for m in p.jobs.messages]
    assert stored == [
        ({"n": [1, "two"]}, "json", 0),
        ("hello", "text", 7),
        (b"\x00\xff", "bytes", 0),
        ("own", "text", 3),
        (["b"], "json", 5),
    ]
    ids = [m.id for m in p.jobs.messages]
    p.run()
    delivered = {m["id"]: m for b in p.logged() for m in b["messages"]}
    assert sorted(delivered) == sorted(ids)
    assert delivered[ids[2]]["body"] == {"bytes": [0, 255]}
    assert delivered[ids[0]]["body"] == {"n": [1, "two"]} and delivered[ids[0]]["attempts"] == 1
    assert delivered[ids[0]]["date"] == p.start


def deliveries(tmp_path: Path, handler: str, bodies: list[Any], batch: int = 1) -> Project:
    p = Project(tmp_path, handler, batch)
    p.send(*bodies)
    p.run()
    return p


def batches(p: Project) -> list[list[tuple[Any, int]]]:
    """Each delivered batch as [(body, attempts)]."""
    return [[(m["body"], m["attempts"]) for m in b["messages"]] for b in p.logged()]


def seconds(p: Project) -> list[int]:
    """When each batch was delivered, in seconds since the project started."""
    return [(b["now"] - p.start) // 1000 for b in p.logged()]


def test_a_throw_retries_every_unacked_message(tmp_path: Path) -> None:
    """Q2.4: a throwing queue() fails the batch: every message not acked comes back with
    attempts + 1; one ack()ed before the throw does not."""
    handler = "if (first.attempts === 1) { first.ack(); throw new Error('the 2nd fails'); }"
    p = deliveries(tmp_path, handler, ["a", "b", "c"], batch=3)
    assert batches(p) == [[("a", 1), ("b", 1), ("c", 1)], [("b", 2), ("c", 2)]]
    assert p.jobs.messages == [] and len(p.jobs.acked) == 3


def test_a_rejected_promise_or_wait_until_fails_the_batch(tmp_path: Path) -> None:
    """Q2.3-Q2.4: the batch is acked only once its waitUntil promises resolved; a rejected one
    fails it, as a rejected handler promise does."""
    handler = (
        "if (first.body === 'wait' && first.attempts === 1) "
        "ctx.waitUntil(new Promise((_, no) => setTimeout(() => no(new Error('late')), 1000)));\n"
        "if (first.body === 'reject' && first.attempts === 1) await Promise.reject(new Error('x'));"
    )
    p = deliveries(tmp_path, handler, ["wait", "reject", "fine"])
    assert sorted(batches(p)) == [
        [("fine", 1)],
        [("reject", 1)],
        [("reject", 2)],
        [("wait", 1)],
        [("wait", 2)],
    ]
    assert p.jobs.messages == [] and len(p.jobs.acked) == 3


def test_ack_all_holds_after_a_throw(tmp_path: Path) -> None:
    """Q2.5: ackAll() acts like success even if the handler then throws."""
    p = deliveries(tmp_path, "batch.ackAll(); throw new Error('after ackAll');", ["x", "y"], 2)
    assert batches(p) == [[("x", 1), ("y", 1)]]


def test_retry_all_and_retry_redeliver_after_their_delay(tmp_path: Path) -> None:
    """Q2.5, Q2.9: retryAll() retries every message and retry() one, after the consumer's
    retry_delay (30 s here) or the delaySeconds given."""
    handler = (
        "if (first.attempts > 1) return;\n"
        "if (first.body === 'all') batch.retryAll();\n"
        "if (first.body === 'all-7') batch.retryAll({ delaySeconds: 7 });\n"
        "if (first.body === 'one') first.retry();\n"
        "if (first.body === 'one-7') first.retry({ delaySeconds: 7 });"
    )
    for body, gap in (("all", 30), ("all-7", 7), ("one", 30), ("one-7", 7)):
        folder = tmp_path / body
        folder.mkdir()
        p = deliveries(folder, handler, [body])
        assert batches(p) == [[(body, 1)], [(body, 2)]], body
        assert seconds(p) == [0, gap], body
        assert p.jobs.messages == [] and len(p.jobs.acked) == 1


def test_first_call_wins_and_per_message_beats_batch(tmp_path: Path) -> None:
    """Q2.6: per message the first of ack()/retry() wins; a per-message call made before
    ackAll()/retryAll() beats it; a batch call after another is ignored."""
    handler = (
        "if (first.attempts > 1) return;\n"
        "const [a, b] = batch.messages;\n"
        "a.ack(); a.retry(); b.retry(); batch.ackAll(); batch.retryAll();"
    )
    p = deliveries(tmp_path, handler, ["a", "b"], batch=2)
    assert batches(p) == [[("a", 1), ("b", 1)], [("b", 2)]]


def test_a_retry_delay_out_of_range_fails_the_batch(tmp_path: Path) -> None:
    """Q1.12, Q2.9: retry({delaySeconds}) past 24 h is refused by the simulator (code 10203);
    the batch fails as the uncaught throw it is in a Python design, so it comes back."""
    handler = "if (first.attempts === 1) first.retry({ delaySeconds: 86401 });"
    p = deliveries(tmp_path, handler, ["x"])
    assert batches(p) == [[("x", 1)], [("x", 2)]]
    errors = [e for i in p.platform.invocations for e in i.errors]
    assert any("MessageMetadataInvalid (10203)" in e and "QueueSendError" in e for e in errors)


def test_a_push_consumer_without_a_queue_handler_is_refused(tmp_path: Path) -> None:
    """Q2.1: a push consumer calls the worker's queue(); a module without one is refused when
    the target is checked, saying what to add."""
    (tmp_path / "wrangler.toml").write_text(WRANGLER % 1)
    (tmp_path / "worker.mjs").write_text(
        "export default { async fetch() { return new Response('ok'); } };\n"
    )
    with pytest.raises(InvalidTarget, match=r"has no queue method; add async queue\(batch"):
        js_worker(tmp_path / "worker.mjs")
    (tmp_path / "wrangler.toml").write_text((WRANGLER % 1) + 'type = "http_pull"\n')
    assert isinstance(js_worker(tmp_path / "worker.mjs")().queues["JOBS"].consumer, PullConsumer)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[[queues.consumers]]\nqueue = "other"\n', "consumes queue 'other', which no producer"),
        ('[[queues.consumers]]\nqueue = "jobs"\n', "queue jobs has two consumers"),
        ("max_retries = 101\n", "max_retries=101 is out of range"),
        ('dead_letter_queue = "jobs"\n', "cannot be its own dead_letter_queue"),
        ('type = "pull"\n', "type 'pull'"),
    ],
)
def test_bad_queue_configurations_are_refused(tmp_path: Path, extra: str, message: str) -> None:
    """A consumer of an unknown queue, a second consumer, a setting out of range, a queue as
    its own dead-letter queue and an unknown consumer type are refused naming the file."""
    (tmp_path / "wrangler.toml").write_text((WRANGLER % 1) + extra)
    (tmp_path / "worker.mjs").write_text(WORKER % "")
    with pytest.raises(InvalidTarget, match="wrangler.toml: .*" + re.escape(message)):
        js_worker(tmp_path / "worker.mjs")


def test_a_producer_binding_named_like_a_kv_binding_is_refused(tmp_path: Path) -> None:
    """A producer binding that is also a KV namespace's name is refused: env has one value per
    name."""
    kv = 'kv_namespaces = [{ binding = "JOBS", id = "0" }]\n'
    (tmp_path / "wrangler.toml").write_text(kv + (WRANGLER % 1))
    (tmp_path / "worker.mjs").write_text(WORKER % "")
    with pytest.raises(InvalidTarget, match="binding JOBS is declared twice"):
        js_worker(tmp_path / "worker.mjs")


def test_queues_in_json_configuration(tmp_path: Path) -> None:
    """The JSON form of queues.producers/consumers gives the same bindings as the TOML form."""
    (tmp_path / "wrangler.jsonc").write_text(
        """{
  "name": "jobs", "main": "worker.mjs",
  // a push consumer with every setting
  "queues": {
    "producers": [{ "binding": "JOBS", "queue": "jobs", "delivery_delay": 2 }],
    "consumers": [{ "queue": "jobs", "max_batch_size": 4, "max_batch_timeout": 1,
      "max_retries": 5, "dead_letter_queue": "jobs-dlq", "retry_delay": 9,
      "max_concurrency": 2 }],
  },
}"""
    )
    (tmp_path / "worker.mjs").write_text(WORKER % "")
    consumer = PushConsumer(
        max_batch_size=4,
        max_batch_timeout_s=1,
        max_retries=5,
        dead_letter_queue="jobs-dlq",
        retry_delay_s=9,
        max_concurrency=2,
    )
    assert js_worker(tmp_path / "worker.mjs")().queues == {
        "JOBS": QueueConfig(name="jobs", consumer=consumer, delivery_delay_s=2)
    }


def test_the_fingerprint_covers_the_queue_configuration(tmp_path: Path) -> None:
    """A JavaScript design's fingerprint changes with its queues' settings, so a trace is not
    replayed against a design whose consumer changed."""
    (tmp_path / "wrangler.toml").write_text(WRANGLER % 1)
    (tmp_path / "worker.mjs").write_text(WORKER % "")
    entry = str(tmp_path / "worker.mjs")
    before = fingerprint(entry, js_worker(entry)())
    assert fingerprint_unrun(entry) == before
    (tmp_path / "wrangler.toml").write_text(WRANGLER % 2)
    assert fingerprint(entry, js_worker(entry)()) != before


# -- determinism ---------------------------------------------------------------------------------

VERBS = [("post", 0), ("post", 1), ("run", 20), ("advance", 6_000), ("run", 40), ("post", 0)]


def drive_world(catalog_id: str, backend: Any) -> tuple[list[str], str, list[str]]:
    """A world on the JavaScript design of ``catalog_id`` driven by fixed verbs, then settled:
    its log, its recorded choices and its steps."""
    protocol = _protocol(catalog_id)
    world = World.create(
        js(catalog_id)(), WorldConfig(protocol=protocol), backend, get_protocol(protocol)
    )
    for verb, arg in VERBS:
        world.apply(verb, arg)
    world.settle()
    steps = [s.render() for s in world.platform.scheduler.trace]
    return world.log, world.platform.choices.dumps(), steps


@pytest.mark.parametrize("catalog_id", ["QUEUES_SOUND", "QUEUES_PUSH_REPLY_NOT_IDEMPOTENT"])
def test_a_javascript_queues_run_replays_byte_for_byte(catalog_id: str) -> None:
    """The same seed gives the same run of a JavaScript Queues design, sends, pulls and push
    batches included; replaying its recorded choices gives it again."""
    run = drive_world(catalog_id, SeededBackend(5))
    assert any("COMMENTS_QUEUE.send" in step for step in run[2])
    assert drive_world(catalog_id, SeededBackend(5)) == run
    assert drive_world(catalog_id, RecordedBackend(ChoiceSource.loads(run[1]))) == run
