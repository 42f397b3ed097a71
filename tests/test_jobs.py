"""The ``jobs`` protocol: its spec, its invariants on hand-made histories, each catalog bug's
mechanism on a scripted schedule (and the sound design's answer to the same script), the sound
design under a short search, and the detection figure of the done-when (``slow``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import Phase, seed, settings
from hypothesis.stateful import get_state_machine_test
from qmodel.invariants import platform
from qmodel.invariants.jobs import (
    ALL,
    ack_durable,
    eventually_done,
    no_double_work,
    single_lease,
    stale_ack,
)

from qmodel import protocols
from qmodel.catalog import CATALOG, entry
from qmodel.check import CheckContext, Violation
from qmodel.cli import check_args, main, run_check
from qmodel.conformance import NotConformant, conform
from qmodel.history import Exchange, History
from qmodel.machine import InvariantViolation, machine_for
from qmodel.protocols.jobs.designs import JobQueue, JobsFixes, JobsWorker
from qmodel.protocols.jobs.protocol import JOBS, Settled
from qmodel.protocols.jobs.spec import JobsState, replay, step
from qmodel.scenario import Scenario
from qmodel.sim.choices import ScriptedBackend
from qmodel.sim.kv import KvConfig
from qmodel.sim.runtime import Platform
from qmodel.workers import SoundWorker
from qmodel.world import WorldConfig

JOBS_IDS = [i for i, e in CATALOG.items() if e.protocol == "jobs"]
JOBS_BUGS = [i for i in JOBS_IDS if CATALOG[i].invariants]
VIS = 30_000


class Run:
    """Builds a jobs history: each exchange gets the next ``seq``; times are given or follow a
    clock that moves 100 ms per exchange (a request answered 10 ms after it was sent)."""

    def __init__(self, start_ms: int = 1_000) -> None:
        self.exchanges: list[Exchange] = []
        self.now = start_ms

    def add(
        self,
        kind: str,
        path: str,
        *,
        actor: str,
        body: Any,
        status: int | None = 200,
        answer: Any = None,
        job: str | None = None,
        sent: int | None = None,
        answered: int | None = None,
    ) -> Exchange:
        sent_ms = self.now if sent is None else sent
        if answered is None and status is not None:
            answered = sent_ms + 10
        ex = Exchange(
            seq=len(self.exchanges) + 1,
            actor=actor,
            location="fra",
            kind=kind,  # type: ignore[arg-type]
            method="POST",
            path=path,
            body=body,
            sent_ms=sent_ms,
            answered_ms=answered,
            status=status,
            answer=answer,
            message_id=job,
        )
        self.exchanges.append(ex)
        self.now = max(self.now, sent_ms) + 100
        return ex

    def enqueue(self, key: str, job: str, *, status: int = 200, **kw: Any) -> Exchange:
        answer = {"id": job} if status == 200 else {"error": "boom"}
        body = {"key": key, "payload": {"n": 1}}
        return self.add(
            "enqueue", "/jobs", actor="producer-1", body=body, status=status, answer=answer, **kw
        )

    def lease(self, worker: str, job: str, token: str, **kw: Any) -> Exchange:
        answer = {"job": {"id": job, "payload": {"n": 1}, "attempt": 1}, "lease": token}
        body = {"worker": worker, "visibility_ms": VIS}
        return self.add("lease", "/jobs/lease", actor=worker, body=body, answer=answer, **kw)

    def release(
        self, op: str, worker: str, job: str, token: str, *, status: int | None = 200, **kw: Any
    ) -> Exchange:
        state = {"ack": "acked", "nack": "queued"}[op]
        answer = {"id": job, "state": state} if status == 200 else {"error": "stale"}
        return self.add(
            op,
            f"/jobs/{job}/{op}",
            actor=worker,
            body={"lease": token, "worker": worker},
            status=status,
            answer=answer if status is not None else None,
            job=job,
            **kw,
        )

    def ctx(
        self, *, settled: Settled | None = None, in_flight: frozenset[Any] = frozenset()
    ) -> CheckContext:
        return CheckContext(
            history=History(list(self.exchanges)),
            spec=replay(self.exchanges),
            settled=settled,
            protocol="jobs",
            in_flight=in_flight,
        )


# -- the protocol value and the registry --------------------------------------------------------


def test_jobs_is_a_builtin_protocol_with_its_invariants() -> None:
    """protocols.get("jobs") is the JOBS value; its invariants are the six of invariants/jobs."""
    assert protocols.get("jobs") is JOBS
    assert [i.id for i in JOBS.invariants] == [
        "single-lease",
        "stale-ack",
        "no-double-work",
        "platform",
        "ack-durable",
        "eventually-done",
    ]
    assert [i.id for i in ALL] == [i.id for i in JOBS.invariants]
    assert [v.name for v in JOBS.verbs] == ["run", "enqueue", "advance", "crash"]


def test_catalog_json_shows_the_jobs_entries(capsys: pytest.CaptureFixture[str]) -> None:
    """qmodel catalog --json lists the jobs designs under protocol jobs; chat ones keep theirs."""
    assert main(["catalog", "--json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    jobs = {i: r for i, r in rows.items() if r["protocol"] == "jobs"}
    assert sorted(jobs) == sorted(JOBS_IDS)
    assert jobs["jobs-sound"]["invariants"] == []
    assert jobs["jobs-sound"]["design"] == "JobsWorker(all fixes on)"
    assert jobs["JOBS_NO_FENCING"]["design"] == "JobsWorker(no fencing)"
    assert jobs["JOBS_NO_FENCING"]["invariants"] == ["stale-ack"]
    assert rows["CLAIM_NOT_ATOMIC"]["protocol"] == "queue"
    assert rows["sound"]["design"] == "SoundWorker()"


@pytest.mark.parametrize("catalog_id", JOBS_BUGS)
def test_jobs_catalog_target_has_exactly_one_fix_off(catalog_id: str) -> None:
    """Each jobs bug is the sound worker with exactly one fix off."""
    target = entry(catalog_id).target()
    assert isinstance(target, JobsWorker)
    assert target.fixes.describe().count("no ") == 1
    assert all(i in [inv.id for inv in JOBS.invariants] for i in entry(catalog_id).invariants)


def test_the_jobs_worker_conforms_and_a_chat_worker_does_not() -> None:
    """The conformance run completes on the jobs worker; a chat worker is refused, named."""
    world = conform(JobsWorker(), JOBS, WorldConfig(protocol="jobs"))
    assert len(world.spec.order) == 1 and world.spec.unfinished() == []
    with pytest.raises(NotConformant) as refused:
        conform(SoundWorker(), JOBS, WorldConfig(protocol="jobs"))
    assert str(refused.value) == (
        'POST /jobs/lease answered 404 "Not found": does this worker speak the jobs protocol? On a '
        "quiet platform one job was to be posted, processed and read back; pass --protocol with "
        "the protocol it speaks"
    )


# -- the spec -----------------------------------------------------------------------------------


def test_spec_files_jobs_under_the_key_sent_and_a_retry_adds_no_job() -> None:
    """An acknowledged enqueue makes a job under the client's key; a retry answered with the
    same id adds nothing; a refused enqueue promises nothing."""
    r = Run()
    r.enqueue("k1", "j1")
    r.enqueue("k1", "j1")
    r.enqueue("k2", "j2", status=500)
    s = replay(r.exchanges)
    assert s.order == ("j1",)
    assert dict(s.keys) == {"k1": ("j1",)}
    assert s.jobs["j1"].key == "k1" and s.jobs["j1"].acked_seq == 1


def test_spec_step_is_pure() -> None:
    """step gives a new state and leaves the one it was given as it was."""
    r = Run()
    ex = r.enqueue("k1", "j1")
    before = JobsState()
    after = step(before, ex)
    assert before == JobsState() and after.order == ("j1",)


def test_spec_folds_a_lease_answered_before_its_enqueue_after_it() -> None:
    """A lease of a job whose enqueue answer has not arrived waits as an orphan, then is folded
    right after the enqueue acknowledges the job."""
    r = Run()
    lease = r.lease("consumer-1", "j1", "t1", sent=1_000, answered=1_020)
    enq = r.enqueue("k1", "j1", sent=990, answered=1_050)
    s = step(JobsState(), lease)
    assert s.order == () and list(s.orphans) == ["j1"]
    s = step(s, enq)
    assert dict(s.orphans) == {}
    assert [lease.token for lease in s.jobs["j1"].leases] == ["t1"]


def test_spec_records_releases_and_what_they_did() -> None:
    """An ack answered 200 finishes the job, a refused one does not; a nack answered dead
    dead-letters it; an unanswered one may have happened."""
    r = Run()
    r.enqueue("k1", "j1")
    r.lease("consumer-1", "j1", "t1")
    r.release("ack", "consumer-1", "j1", "t1", status=409)
    r.release("nack", "consumer-1", "j1", "t1", status=None)
    s = replay(r.exchanges)
    job = s.jobs["j1"]
    assert (job.done, job.dead) == (False, False)
    assert [(x.op, x.status, x.may_have_happened) for x in job.releases] == [
        ("ack", 409, False),
        ("nack", None, True),
    ]
    r.release("ack", "consumer-1", "j1", "t1")
    assert replay(r.exchanges).jobs["j1"].done
    assert replay(r.exchanges).unfinished() == []


# -- single-lease -------------------------------------------------------------------------------


def two_leases(second_sent: int, *, release: str | None = None) -> Run:
    r = Run()
    r.enqueue("k1", "j1", sent=0)
    r.lease("consumer-1", "j1", "t1", sent=1_000, answered=1_010)
    if release is not None:
        r.release(release, "consumer-1", "j1", "t1", sent=2_000, answered=2_010)
    r.lease("consumer-2", "j1", "t2", sent=second_sent, answered=second_sent + 10)
    return r


def test_single_lease_catches_a_second_lease_inside_the_timeout() -> None:
    """A lease granted 5 s into another's 30 s timeout, with no release between, breaks it."""
    found = single_lease.check(two_leases(6_000).ctx())
    assert found == Violation(
        invariant="single-lease",
        summary="job j1 was leased to consumer-2 (seq 3) while the lease of consumer-1 (seq 2, "
        "30000 ms) was still live",
        message_ids=("j1",),
        exchanges=(2, 3),
        values={
            "workers": ("consumer-1", "consumer-2"),
            "windows_ms": ((1_000, 1_010), (6_000, 6_010)),
            "visibility_ms": VIS,
        },
    )


def test_single_lease_accepts_a_lease_after_expiry_or_release() -> None:
    """A lease that may come after the timeout ran out, or after an ack or nack of the first,
    or while a release is in flight, is fine."""
    assert single_lease.check(two_leases(1_000 + VIS).ctx()) is None
    assert single_lease.check(two_leases(3_000, release="nack").ctx()) is None
    assert single_lease.check(two_leases(6_000).ctx(in_flight=frozenset({("nack", "j1")}))) is None


def test_single_lease_accepts_every_order_real_time_allows() -> None:
    """The first lease's answer came late: it may have been decided a timeout after the
    second's earliest moment, so the two may not have overlapped."""
    r = Run()
    r.enqueue("k1", "j1", sent=0)
    r.lease("consumer-2", "j1", "t2", sent=1_000, answered=1_010)
    r.lease("consumer-1", "j1", "t1", sent=900, answered=1_000 + VIS)
    assert single_lease.check(r.ctx()) is None


# -- stale-ack ----------------------------------------------------------------------------------


def stale_ack_run(status: int, ack_sent: int) -> Run:
    r = Run()
    r.enqueue("k1", "j1", sent=0)
    r.lease("consumer-1", "j1", "t1", sent=1_000, answered=1_010)
    r.lease("consumer-2", "j1", "t2", sent=40_000, answered=40_010)
    r.release("ack", "consumer-1", "j1", "t1", status=status, sent=ack_sent)
    return r


def test_stale_ack_catches_an_accepted_ack_of_a_superseded_lease() -> None:
    """consumer-1's lease ran out and consumer-2 leased the job; consumer-1's ack answered 200."""
    found = stale_ack.check(stale_ack_run(200, 46_000).ctx())
    assert found is not None
    assert found.summary == (
        "job j1: a ack with the lease of consumer-1 (seq 2) was answered 200 though consumer-2 "
        "had leased the job again (seq 3) before it was sent"
    )
    assert found.exchanges == (2, 3, 4)
    assert found.values["stale_token"] == "t1" and found.values["current_token"] == "t2"


def test_stale_ack_accepts_a_refused_ack_and_an_ambiguous_one() -> None:
    """A stale ack answered 409 is right; an ack sent before the second lease was answered may
    have come first."""
    assert stale_ack.check(stale_ack_run(409, 46_000).ctx()) is None
    assert stale_ack.check(stale_ack_run(200, 40_005).ctx()) is None


# -- no-double-work -----------------------------------------------------------------------------


def test_no_double_work_catches_two_jobs_of_one_key_both_acked() -> None:
    """A retried enqueue made a second job for key k1; both were acked: done twice."""
    r = Run()
    r.enqueue("k1", "j1")
    r.enqueue("k1", "j2")
    r.lease("consumer-1", "j1", "t1")
    r.lease("consumer-2", "j2", "t2")
    r.release("ack", "consumer-1", "j1", "t1")
    assert no_double_work.check(r.ctx()) is None
    r.release("ack", "consumer-2", "j2", "t2")
    found = no_double_work.check(r.ctx())
    assert found is not None
    assert found.summary == (
        "the work of key k1 was done twice: jobs j1 and j2 were both acked (seq 5 and 6) and no "
        "lease had run out in between"
    )
    assert found.message_ids == ("j1", "j2") and found.exchanges == (3, 4, 5, 6)


def test_no_double_work_excuses_a_job_acked_by_both_holders_after_expiry() -> None:
    """Two acks of one job are fine when the first lease may have run out before the second;
    not when the second lease came inside the timeout."""
    for second, caught in ((1_000 + VIS, False), (5_000, True)):
        r = Run()
        r.enqueue("k1", "j1", sent=0)
        r.lease("consumer-1", "j1", "t1", sent=1_000, answered=1_010)
        r.release("ack", "consumer-1", "j1", "t1", sent=2_000)
        r.lease("consumer-2", "j1", "t2", sent=second, answered=second + 10)
        r.release("ack", "consumer-2", "j1", "t2", sent=second + 100)
        assert (no_double_work.check(r.ctx()) is not None) is caught


# -- the eventual invariants and platform -------------------------------------------------------


def test_ack_durable_and_eventually_done_judge_the_settled_reads() -> None:
    """Before settling neither judges; once settled, a job the queue does not know is lost and
    a queued one is not done; acked and dead jobs are fine."""
    r = Run()
    r.enqueue("k1", "j1")
    r.enqueue("k2", "j2")
    r.enqueue("k3", "j3")
    assert ack_durable.check(r.ctx()) is None and eventually_done.check(r.ctx()) is None
    fine = Settled(states={"j1": "acked", "j2": "dead", "j3": "acked"})
    assert ack_durable.check(r.ctx(settled=fine)) is None
    assert eventually_done.check(r.ctx(settled=fine)) is None
    bad = Settled(
        states={"j1": "acked", "j2": None, "j3": "queued"},
        answers={"j2": {"status": 404, "answer": {"error": "no job j2"}}},
        probe_seqs={"j1": 4, "j2": 5, "j3": 6},
    )
    lost = ack_durable.check(r.ctx(settled=bad))
    assert lost is not None
    assert lost.summary == "job j2 was acknowledged but, once settled, the queue does not know it"
    assert lost.exchanges == (2, 5)
    left = eventually_done.check(r.ctx(settled=bad))
    assert left is not None
    assert left.summary == "once settled, job j3 (queued) is neither acked nor dead-lettered"
    assert left.values == {"states": {"j3": "queued"}}


def test_platform_is_checked_on_jobs_histories() -> None:
    """The shared platform invariant names a 500 answer of a jobs request."""
    r = Run()
    r.add("enqueue", "/jobs", actor="producer-1", body={"key": "k"}, status=500, answer=None)
    found = platform.check(r.ctx())
    assert found is not None
    assert found.summary == "POST /jobs answered 500 to a valid request"


# -- scripted scenarios: each bug's mechanism ---------------------------------------------------


def scenario(target: JobsWorker, **script: list[int]) -> Scenario:
    """A hand-driven world for a jobs design (KV binding JOBS_KV, the JobQueue object)."""
    platform_ = Platform.create(
        backend=ScriptedBackend(dict(script)),
        kv=KvConfig.strict(),
        kv_bindings=JobsWorker.kv_bindings,
        durable={"QUEUE": JobQueue},
    )
    return Scenario(target, platform_)


def bug(catalog_id: str, **script: list[int]) -> Scenario:
    return scenario(entry(catalog_id).target(), **script)


def sound(**script: list[int]) -> Scenario:
    return scenario(JobsWorker(), **script)


LEASE = {"worker": "w", "visibility_ms": 1_000}


def enqueue(sc: Scenario, name: str, key: str = "k1", location: str = "A") -> str:
    r = sc.call(name, "POST", "/jobs", body={"key": key, "payload": {}}, location=location)
    assert r.status == 200, r.json_body()
    return r.json_body()["id"]


def lease(sc: Scenario, name: str, location: str = "L") -> Any:
    r = sc.call(name, "POST", "/jobs/lease", body=LEASE, location=location)
    assert r.status == 200
    return r.json_body()


def no_fencing_script(sc: Scenario) -> int:
    job = enqueue(sc, "enqueue")
    first = lease(sc, "lease-1")
    sc.advance(2_000)  # past the 1 s visibility timeout
    second = lease(sc, "lease-2")
    assert first["job"]["id"] == second["job"]["id"] == job
    ack = sc.call("ack", "POST", f"/jobs/{job}/ack", body={"lease": first["lease"]})
    return ack.status


def test_jobs_no_fencing() -> None:
    """The stale holder's ack is accepted without fencing tokens; refused 409 with them."""
    assert no_fencing_script(bug("JOBS_NO_FENCING")) == 200
    assert no_fencing_script(sound()) == 409


def stale_list_script(sc: Scenario) -> tuple[Any, Any]:
    enqueue(sc, "enqueue")
    # Both leases list from location L: the second gets the page the first cached (§1.8).
    return lease(sc, "lease-1"), lease(sc, "lease-2")


def test_jobs_stale_list() -> None:
    """The second lease trusts the cached page that still shows the job queued: leased twice.
    The sound design's object knows the job is leased: no job for the second."""
    first, second = stale_list_script(bug("JOBS_STALE_LIST"))
    assert first["job"]["id"] == second["job"]["id"]
    assert first["lease"] != second["lease"]
    first, second = stale_list_script(sound())
    assert first["job"] is not None and second == {"job": None}


def waiting_on(sc: Scenario, name: str, what: str) -> bool:
    """Whether request ``name`` or a request it waits on is suspended on an op naming ``what``."""
    root = sc.tasks[name]
    for t in sc.platform.scheduler.tasks:
        node = t
        while node is not None and node is not root:
            node = node.parent
        if node is root and t.pending is not None and what in t.pending.describe():
            return True
    return False


def lease_race_script(sc: Scenario) -> tuple[Any, Any]:
    enqueue(sc, "enqueue")
    sc.send("lease-1", "POST", "/jobs/lease", body=LEASE, location="L")
    for _ in range(200):
        if waiting_on(sc, "lease-1", "JOBS_KV.put lease:"):
            break
        assert sc.step("lease-1")
    # lease-1's object request waits on KV: the input gate is open, lease-2 runs to its answer.
    second = lease(sc, "lease-2", location="M")
    return sc.run("lease-1").json_body(), second


def test_jobs_lease_race() -> None:
    """With the audit write between check and set, both leases win the same job; with it after
    the set, the second lease finds the job leased."""
    first, second = lease_race_script(bug("JOBS_LEASE_RACE"))
    assert first["job"] is not None and second["job"] is not None
    assert first["job"]["id"] == second["job"]["id"] and first["lease"] != second["lease"]
    first, second = lease_race_script(sound())
    assert first["job"] is not None and second == {"job": None}


def idempotency_script(sc: Scenario) -> tuple[str, str]:
    first = enqueue(sc, "attempt-1")
    # The retry lands where the first attempt's read cached the miss (§1.4), and the location
    # did not see its own write (§1.3, "not guaranteed": the script's kv.ryw choice).
    return first, enqueue(sc, "attempt-2")


def test_jobs_idempotency_stale() -> None:
    """The retry reads the idempotency key stale and makes a second job; the object's key
    gives the same id."""
    first, again = idempotency_script(bug("JOBS_IDEMPOTENCY_STALE", **{"kv.ryw": [1]}))
    assert first != again
    first, again = idempotency_script(sound(**{"kv.ryw": [1]}))
    assert first == again


def test_every_jobs_bug_has_a_scenario() -> None:
    """Every jobs catalog bug has a scripted scenario in this module."""
    names = {n[len("test_") :].upper() for n in globals() if n.startswith("test_")}
    assert [i for i in JOBS_BUGS if i not in names] == []


# -- search ------------------------------------------------------------------------------------


def search(target: Any, *, examples: int, run_seed: int = 0) -> InvariantViolation | None:
    """The machine's generation phase on the jobs protocol; the violation found, or ``None``."""
    cls = machine_for(target, protocol="jobs")
    budget = settings(
        settings.get_profile("qmodel-ci"), max_examples=examples, phases=[Phase.generate]
    )
    try:
        seed(run_seed)(get_state_machine_test(cls, settings=budget))()
    except InvariantViolation as found:
        return found
    return None


def test_sound_jobs_design_passes_a_short_search() -> None:
    """The sound jobs design breaks no invariant in 40 examples."""
    assert search(JobsWorker, examples=40) is None


def test_search_finds_a_jobs_bug_with_its_own_invariant() -> None:
    """Without a script, the machine finds the lease race and names single-lease."""
    found = search(entry("JOBS_LEASE_RACE").target, examples=100)
    assert found is not None and found.violation.invariant == "single-lease"


def test_a_jobs_report_replays_and_its_regression_test_passes_on_the_sound_design(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check --report on a jobs bug writes the three files; replay gives the same invariant and
    steps; the regression test fails on the bug and passes on jobs-sound."""
    cid = "JOBS_LEASE_RACE"
    report = tmp_path / "report"
    args = ["--target", f"catalog:{cid}", "--profile", "dev", "--json", "--report", str(report)]
    assert main(["check", *args]) == 1
    found = json.loads(capsys.readouterr().out)
    assert found["invariant"] == "single-lease"
    assert sorted(p.name for p in report.iterdir()) == [
        f"{cid}.json",
        f"{cid}.md",
        f"test_regression_{cid}.py",
    ]
    # Each job is told with the producer that enqueued it.
    markdown = (report / f"{cid}.md").read_text()
    rows = [r for r in markdown.splitlines() if r.startswith("| m") and "`job-" in r]
    assert rows and all(r.endswith("| producer-1 |") for r in rows), rows
    assert main(["replay", str(report / f"{cid}.json"), "--json"]) == 1
    again = json.loads(capsys.readouterr().out)
    assert (again["invariant"], again["steps"]) == (found["invariant"], found["steps"])
    test = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    test.append(str(report / f"test_regression_{cid}.py"))
    buggy = subprocess.run(test, capture_output=True, text=True, check=False)
    assert buggy.returncode == 1 and "still breaks single-lease" in buggy.stdout, buggy.stdout
    env = {**os.environ, "QMODEL_TARGET": "catalog:jobs-sound"}
    fixed = subprocess.run(test, capture_output=True, text=True, check=False, env=env)
    assert fixed.returncode == 0, fixed.stdout


def test_jobs_fixes_describe_what_is_off() -> None:
    """describe() names the fixes turned off, or says all are on."""
    assert JobsFixes().describe() == "all fixes on"
    assert JobsFixes(fencing=False, atomic_lease=False).describe() == "no fencing, no atomic lease"


@pytest.mark.slow
@pytest.mark.parametrize("catalog_id", JOBS_BUGS)
def test_jobs_detection_rate_at_ci(catalog_id: str) -> None:
    """qmodel check --profile ci finds the bug with its own invariant for at least 9 of 10
    seeds."""
    e = entry(catalog_id)
    hits = 0
    for s in range(10):
        r = run_check(
            check_args(["--target", f"catalog:{catalog_id}", "--profile", "ci", "--seed", str(s)])
        )
        hits += r["invariant"] in e.invariants
    assert hits >= 9


@pytest.mark.slow
def test_jobs_sound_is_clean_at_ci() -> None:
    """qmodel check --target catalog:jobs-sound --profile ci reports nothing for ten seeds."""
    for s in range(10):
        args = check_args(["--target", "catalog:jobs-sound", "--profile", "ci", "--seed", str(s)])
        assert run_check(args)["verdict"] == "ok"
