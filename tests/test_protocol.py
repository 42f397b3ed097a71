"""Protocols as values: the registry, a protocol written outside qmodel, the conformance run,
the unknown verdict, and judging a history in an order its effects could have happened."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from qmodel.invariants.chat import single_claim, status_fsm

from qmodel import cli, protocols
from qmodel.check import CheckContext
from qmodel.history import Exchange, History
from qmodel.machine import machine_for
from qmodel.protocol import RUN, Protocol, Verb
from qmodel.protocols.chat.spec import replay as chat_replay
from qmodel.workers import SoundWorker

HERE = Path(__file__).resolve().parent
TARGETS = HERE / "targets"
TINY = HERE / "protocols" / "tiny_queue.py"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict, str]:
    code = cli.main([*argv, "--json"])
    out, err = capsys.readouterr()
    [line] = out.splitlines()
    return code, json.loads(line), err


# -- the registry ----------------------------------------------------------------------------------


def test_built_in_protocols_are_found_by_name() -> None:
    """The chat eras are built-in values; a Protocol passes through get() as it is."""
    assert protocols.names()[:3] == ("patch", "queue", "do")
    queue = protocols.get("queue")
    assert isinstance(queue, Protocol) and queue.name == "queue"
    assert [v.name for v in queue.verbs] == ["run", "post", "advance", "crash", "burst"]
    assert [v.name for v in protocols.get("patch").verbs] == ["run", "post", "advance", "crash"]
    assert protocols.get(queue) is queue


def test_an_unknown_protocol_names_the_closest_ones() -> None:
    """machine_for(w, protocol="nope") and a typo raise UnknownProtocol, naming what exists."""
    with pytest.raises(protocols.UnknownProtocol) as err:
        machine_for(SoundWorker, protocol="nope")
    assert str(err.value).startswith("unknown protocol 'nope'. Built-in protocols: patch, queue")
    with pytest.raises(protocols.UnknownProtocol) as err:
        protocols.get("queu")
    assert "Closest matches: queue, queues." in str(err.value)


def test_a_reference_that_is_not_a_protocol_says_so(tmp_path: Path) -> None:
    """module:NAME that names no Protocol, or a module that does not import, is refused."""
    (tmp_path / "notproto.py").write_text("NAME = 3\n")
    with pytest.raises(protocols.UnknownProtocol) as err:
        protocols.get(f"{tmp_path / 'notproto.py'}:NAME")
    assert "has a int named NAME, not a qmodel.protocol.Protocol" in str(err.value)
    with pytest.raises(protocols.UnknownProtocol) as err:
        protocols.get("no_such_module_here:P")
    assert "no_such_module_here could not be imported: ModuleNotFoundError" in str(err.value)


def test_a_protocol_value_is_checked_when_made() -> None:
    """A protocol without the run verb, or whose happy path names a verb it lacks, is refused."""
    tiny = protocols.get(f"{TINY}:TINY")
    with pytest.raises(ValueError, match="has no 'run' verb"):
        Protocol(**{**_fields(tiny), "verbs": tiny.verbs[1:]})
    with pytest.raises(ValueError, match="its happy path uses verb 'post'"):
        Protocol(**{**_fields(tiny), "happy_path": (("post", 0),)})
    with pytest.raises(ValueError, match="weight must be at least 1"):
        Verb(name="x", weight=0, args=(1,), apply=RUN.apply)


def _fields(p: Protocol) -> dict:
    import attrs

    return {f.name: getattr(p, f.name) for f in attrs.fields(Protocol)}


# -- a protocol of the user's own ------------------------------------------------------------------


def test_a_protocol_written_outside_qmodel_gets_search_report_and_replay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--protocol path.py:NAME: the search finds the racy take with the protocol's own
    invariant, writes the report, trace and regression test, and the trace replays exactly."""
    home = tmp_path / "userproject"
    home.mkdir()
    shutil.copy(TINY, home / "tiny_queue.py")
    spec = str(home / "tiny_queue.py")
    reports = tmp_path / "reports"
    code, obj, _ = run(
        capsys,
        "check",
        "--target",
        f"{spec}:racy",
        "--protocol",
        f"{spec}:TINY",
        "--kv",
        "local",
        "--profile",
        "dev",
        "--report",
        str(reports),
    )
    assert code == 1 and obj["verdict"] == "violation" and obj["invariant"] == "single-take"
    trace = Path(obj["report"]["trace"])
    markdown = Path(obj["report"]["markdown"]).read_text()
    assert markdown.startswith("# single-take: job ")
    assert "```mermaid" in markdown
    assert json.loads(trace.read_text())["config"]["protocol"] == f"{spec}:TINY"
    assert f"--target {spec}:racy --protocol {spec}:TINY" in markdown
    code, refused, _ = run(capsys, "replay", str(trace), "--target", f"{spec}:racy")
    assert code == 2 and refused["error"]["message"].startswith(
        f"field 'config.protocol': the trace names the protocol '{spec}:TINY', which is code"
    )
    code, again, _ = run(
        capsys,
        "replay",
        str(trace),
        "--target",
        f"{spec}:racy",
        "--protocol",
        f"{spec}:TINY",
        "--report",
        str(tmp_path / "again"),
    )
    assert code == 1 and again["invariant"] == "single-take"
    assert (tmp_path / "again" / trace.name).read_bytes() == trace.read_bytes()


def test_a_user_protocol_runs_under_machine_for() -> None:
    """machine_for takes a Protocol value; its invariants are the ones selected."""
    tiny = protocols.get(f"{TINY}:TINY")
    machine = machine_for(lambda: SoundWorker(), protocol=tiny, invariants=["all-done"])
    assert machine.protocol is tiny
    assert [i.id for i in machine.checked] == ["all-done"]


# -- no verdict without evidence ---------------------------------------------------------------


def test_a_worker_that_answers_404_everywhere_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The conformance run stops before the search, naming the request and the answer."""
    code, obj, err = run(capsys, "check", "--target", str(TARGETS / "answers_404.py"))
    assert code == 2 and obj["verdict"] == "error" and obj["examples"] is None
    message = obj["error"]["message"]
    assert message.startswith(
        'POST /api/comments answered 404 "not found": does this worker speak the queue '
        "protocol? On a quiet platform one message was to be posted, processed and read back"
    )
    assert message in err


def test_a_racy_worker_answering_ok_true_is_counted_under_the_ids_sent(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A POST answered {"ok": true} acknowledges the message its client sent: the claim race is
    found, never ok."""
    code, obj, _ = run(
        capsys,
        "check",
        "--target",
        f"{TARGETS / 'answers_ok_true.py'}:Worker",
        "--profile",
        "ci",
        "--stop-at-first",
    )
    assert code == 1 and obj["verdict"] == "violation"
    assert obj["invariant"] in ("single-claim", "one-reply", "platform")


def test_a_search_that_never_exercised_the_target_is_unknown(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A target that passed the conformance run but acknowledged nothing in any example is
    verdict unknown, exit 2, not ok."""
    code, obj, _ = run(
        capsys,
        "check",
        "--target",
        str(TARGETS / "stops_working.py"),
        "--profile",
        "dev",
        "--max-examples",
        "10",
    )
    assert code == 2 and obj["verdict"] == "unknown" and obj["examples"] == 10
    assert obj["error"]["message"].startswith("no example of 10 had any message acknowledged by")


# -- an order the effects could have happened in ----------------------------------------------


H = "1761333653305-frontend-1000001"


def _ex(seq: int, kind: str, method: str, path: str, body, sent, answered, answer) -> Exchange:
    return Exchange(
        seq=seq,
        actor="bot-1" if kind != "post" else "frontend-1",
        location="sin",
        kind=kind,
        method=method,
        path=path,
        body=body,
        sent_ms=sent,
        answered_ms=answered,
        status=200,
        answer=answer,
        message_id=body.get("messageId") if kind == "complete" else None,
    )


def test_a_claim_answered_before_the_post_is_folded_after_it() -> None:
    """claim-next returns a message whose POST is not answered yet; the bot completes it; then
    the POST's answer arrives (with {id, timestamp, status} only). The spec folds the claim
    and the completion after the POST: no status-fsm or single-claim violation, one human
    message, complete, and the bot's reply (which the answer does not type) is an AI reply."""
    post = {"id": H, "timestamp": 1, "text": "hi", "message-type": "human"}
    reply = {"text": "reply", "message-type": "AI", "replyTo": H}
    history = [
        _ex(
            1,
            "claim-next",
            "POST",
            "/api/queue/claim-next",
            {"workerId": "bot-1"},
            20,
            30,
            {"message": {"id": H}},
        ),
        _ex(2, "post", "POST", "/api/comments", reply, 40, 50, {"id": "r1", "status": "success"}),
        _ex(
            3,
            "complete",
            "POST",
            "/api/queue/complete",
            {"messageId": H, "workerId": "bot-1"},
            60,
            70,
            {"success": True},
        ),
        _ex(
            4,
            "post",
            "POST",
            "/api/comments",
            post,
            10,
            80,
            {"id": H, "timestamp": 1, "status": "success"},
        ),
    ]
    spec = chat_replay(history)
    ctx = CheckContext(history=History(history), spec=spec)
    assert status_fsm.check(ctx) is None and single_claim.check(ctx) is None
    assert [m.id for m in spec.humans()] == [H]
    assert spec.messages[H].status == "complete" and spec.messages["r1"].kind == "AI"
    assert not spec.orphans


def test_a_post_that_works_on_after_its_write_raises_no_false_alarm() -> None:
    """The sound design whose POST works on after its write, under the Durable Object era: the
    bot's claim of the message is answered before the POST is, and the POST's answer names no
    message type. The claim is folded after the POST, the bot's reply is an AI reply (what the
    client sent), and the settled world breaks no invariant (status-fsm and single-claim
    included)."""
    import sys

    from qmodel.sim.choices import FirstOptionBackend
    from qmodel.world import World, WorldConfig

    sys.path.insert(0, str(TARGETS))
    try:
        from slow_post import SlowPostWorker
    finally:
        sys.path.remove(str(TARGETS))
    do = protocols.get("do")
    world = World.create(SlowPostWorker(), WorldConfig(protocol="do"), FirstOptionBackend(), do)
    world.apply("post", 0)
    world.settle()
    exchanges = world.history.exchanges
    posted = next(e for e in exchanges if e.kind == "post" and e.body["message-type"] == "human")
    claimed = next(
        e for e in exchanges if e.kind == "claim-next" and (e.answer or {}).get("message")
    )
    done = next(e for e in exchanges if e.kind == "complete")
    assert claimed.answered_ms < posted.answered_ms  # the claim is answered first
    assert done.message_id == posted.body["id"]
    ctx = world.context()
    assert [i.id for i in do.invariants if i.check(ctx) is not None] == []
    message = world.spec.messages[posted.body["id"]]
    assert message.status == "complete" and len(message.replies) == 1
    assert ("pending", "processing", claimed.seq) in {
        (t.before, t.after, t.seq) for t in world.spec.transitions
    }


def test_every_package_folder_is_installed() -> None:
    """pyproject.toml lists every package folder of qmodel/ and invariants/ (installed as
    qmodel.invariants), so an installed qmodel has every protocol and its invariants."""
    import tomllib

    root = HERE.parent
    listed = set(
        tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(p.parent.relative_to(root).parts) for p in (root / "qmodel").rglob("__init__.py")
    } | {
        ".".join(("qmodel", *p.parent.relative_to(root).parts))
        for p in (root / "invariants").rglob("__init__.py")
    }
    assert listed == found


def test_a_poll_served_from_list_pages_is_judged_after_the_windows() -> None:
    """A worker whose polls read KV list() pages (stale up to 60 s) raises no poll-delivery
    false alarm: the settle lets every window pass after the fair run and the frontends poll
    again before the eventual invariants are judged."""
    import sys

    from hypothesis import Phase, settings
    from hypothesis import seed as hseed
    from hypothesis.stateful import get_state_machine_test

    sys.path.insert(0, str(TARGETS))
    try:
        from list_after import ListAfterWorker
    finally:
        sys.path.remove(str(TARGETS))
    machine = machine_for(ListAfterWorker, protocol="queue", invariants=["poll-delivery"])
    budget = settings(settings.get_profile("qmodel-ci"), max_examples=60, phases=[Phase.generate])
    hseed(1)(get_state_machine_test(machine, settings=budget))()
