"""Bug reports: the three files, what the Markdown says, the notes on surprising KV behaviour,
the Mermaid diagram checked by the real Mermaid parser, the regression test failing on the bug
and passing on the sound design, and the committed examples staying what the tool writes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
from test_replay import found, trace_for

from qmodel.replay import replay_strict
from qmodel.report import report_id, write_report
from qmodel.report.detail import KvOp, KvTap, collect, summarize
from qmodel.report.markdown import Paths, render
from qmodel.report.mermaid import escape
from qmodel.report.regression import regression_test
from qmodel.sim.choices import ScriptedBackend
from qmodel.sim.http import URL, Request, Response, json_response
from qmodel.sim.runtime import Platform
from qmodel.trace import load

ROOT = Path(__file__).resolve().parent.parent
CHECKER = ROOT / "tools" / "mermaid-check"
EXAMPLES = ROOT / "docs" / "examples"


# -- the Mermaid checker (the real library, under Node) --------------------------------------------


def mermaid_parse(diagrams: list[str]) -> list[dict[str, Any]]:
    """Each diagram parsed by mermaid.parse (tools/mermaid-check): ``{"ok": ...}`` per diagram."""
    node = shutil.which("node")
    if node is None or not (CHECKER / "node_modules" / "mermaid").is_dir():
        message = (
            "the Mermaid checker is not installed: run npm ci --prefix tools/mermaid-check "
            "(needs Node 20 or later); .ci/run installs it"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    done = subprocess.run(
        [node, str(CHECKER / "check.mjs"), "--json"],
        input=json.dumps(diagrams),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)


def diagram_of(markdown: str) -> str:
    start = markdown.index("```mermaid\n") + len("```mermaid\n")
    return markdown[start : markdown.index("```", start)]


def test_mermaid_checker_rejects_a_broken_diagram() -> None:
    """The checker is the real parser: a broken diagram is refused with Mermaid's message."""
    results = mermaid_parse(
        ["sequenceDiagram\n    A->>: no target\n", "sequenceDiagram\n    A->>B: hi\n"]
    )
    assert results[0]["ok"] is False and "Parse error" in results[0]["error"]
    assert results[1] == {"ok": True, "type": "sequence"}


def test_escaped_text_parses() -> None:
    """Text with the characters that break Mermaid (; # quotes < > %) parses once escaped."""
    nasty = 'a;b #c "d" <e> 50% f: g -> h;'
    assert escape(nasty) == "a#59;b #35;c #quot;d#quot; #lt;e#gt; 50#37; f: g -#gt; h#59;"
    diagram = (
        "sequenceDiagram\n    participant P1 as Bot-1\n    participant P2 as Worker@sin\n"
        f"    P1->>P2: {escape(nasty)}\n    Note over P1,P2: {escape(nasty)}\n"
    )
    assert mermaid_parse([diagram]) == [{"ok": True, "type": "sequence"}]
    unescaped = f"sequenceDiagram\n    P1->>P2: {nasty}\n    Note over P1: x\n"
    assert mermaid_parse([unescaped])[0]["ok"] is False  # the escaping is needed


@pytest.mark.parametrize(
    "catalog_id", ["CLAIM_NOT_ATOMIC", "TS_KEY_404", "CACHE_TRIM_DROPS_PENDING", "STALE_CACHE_RMW"]
)
def test_report_diagram_parses(tmp_path: Path, catalog_id: str) -> None:
    """The report's sequence diagram is valid Mermaid (mermaid.parse under Node)."""
    files = write_report(trace_for(catalog_id), tmp_path)
    text = diagram_of(files.markdown.read_text())
    assert text.startswith("sequenceDiagram\n")
    assert mermaid_parse([text]) == [{"ok": True, "type": "sequence"}]


# -- the report's files and text -------------------------------------------------------------------


def test_report_writes_three_files(tmp_path: Path) -> None:
    """A catalog target's report is named by its id: .md, .json and test_regression_*.py."""
    files = write_report(trace_for("CLAIM_NOT_ATOMIC"), tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "CLAIM_NOT_ATOMIC.json",
        "CLAIM_NOT_ATOMIC.md",
        "test_regression_CLAIM_NOT_ATOMIC.py",
    ]
    assert load(files.trace) == trace_for("CLAIM_NOT_ATOMIC")


def test_report_id_of_other_targets() -> None:
    """Other targets get the invariant and a hash of the run: stable and a Python identifier."""
    trace = attrs.evolve(trace_for("CLAIM_NOT_ATOMIC"), target="path/to/my-worker.py")
    rid = report_id(trace)
    assert rid == f"{trace.expected.invariant.replace('-', '_')}_{trace.digest()}"
    assert rid.isidentifier() and report_id(trace) == rid


def test_markdown_says_what_happened(tmp_path: Path) -> None:
    """Title, target, invariant, steps table with counters, state, diagram, the replay command
    and the seed are all in the report."""
    trace = trace_for("CLAIM_NOT_ATOMIC")
    v = found("CLAIM_NOT_ATOMIC").violation
    files = write_report(trace, tmp_path)
    md = files.markdown.read_text()
    assert md.startswith(f"# {v.render()}\n")
    assert (
        "- **Target:** `catalog:CLAIM_NOT_ATOMIC`, design `CommentsWorker(atomic_claim=False)`"
        in md
    )
    assert f"- **Invariant:** `{v.invariant}`" in md
    header = (
        "| step | time | actor | location | request | answer | KV operations | counters | notes |"
    )
    table = md[md.index(header) : md.index("## State when it broke")]
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]
    assert len(rows) == trace.expected.steps  # one row per step (no burst in this run)
    assert "`[KVr:1 KVw:1]`" in table
    assert "`put comment:m1 = m1 pending`" in table
    assert "| m1 | `" + v.message_ids[0] + "` | frontend-1 |" in md
    assert "| message | stored in KV |" in md
    assert f"qmodel replay {files.trace}" in md
    assert f"pytest {files.test}" in md
    assert "- **Seed:**" in md


def test_burst_is_one_row_per_stretch(tmp_path: Path) -> None:
    """Another app's burst of 201 posts takes one row per uninterrupted stretch of its requests,
    with the step range, and one line of the messages table."""
    trace = trace_for("CACHE_TRIM_DROPS_PENDING")
    md = write_report(trace, tmp_path).markdown.read_text()
    counts = [int(n) for n in re.findall(r"`POST /api/comments` ×(\d+) \| 200 \|", md)]
    singles = re.findall(r"\| other-app-1 \| lhr \| `POST /api/comments` \| 200 \|", md)
    assert sum(counts) + len(singles) == 201 and len(counts) <= 5
    assert re.search(r"\| m\d+ … m\d+ \| 201 messages \| another app's bursts \|", md)


def test_summaries() -> None:
    """KV values are shown short: a message by id and status, a list by count and first ids."""
    msg = {"id": "m1", "botParams": {"status": "processing", "claimedBy": "bot-2"}}
    assert summarize(json.dumps(msg)) == "m1 processing by bot-2"
    assert summarize(None) == "not found"
    reply = {"id": "r1", "message-type": "AI", "replyTo": "m1"}
    assert (
        summarize(json.dumps([msg, reply]))
        == "2 messages: m1 processing by bot-2, r1 AI reply to m1"
    )
    assert (
        summarize(json.dumps({"id": "m2", "botParams": {"processed": False}})) == "m2 not processed"
    )
    assert summarize("x" * 50) == "x" * 37 + "..."


# -- notes on surprising KV behaviour --------------------------------------------------------------


class Passthrough:
    """A worker doing what the path says: /get, /put, /list on COMMENTS_KV."""

    async def fetch(self, request: Request, env: Any, ctx: Any) -> Response:
        url = URL(request.url)
        q = url.search_params
        kv = env.COMMENTS_KV
        if url.pathname == "/get":
            return Response(await kv.get(q["key"]) or "", 200)
        if url.pathname == "/put":
            await kv.put(q["key"], q["value"])
            return Response("", 200)
        page = await kv.list(prefix=q.get("prefix", ""), limit=int(q.get("limit", "1000")))
        return json_response([k.name for k in page.keys], 200)


def tapped(script: dict[str, list[int]] | None = None) -> tuple[Platform, list[KvOp], Any]:
    platform = Platform.create(backend=ScriptedBackend(dict(script or {})))
    ops: list[KvOp] = []
    platform.kv_store.tap = KvTap(platform.kv_store, ops, [])
    worker = Passthrough()

    def send(path: str, location: str, **query: Any) -> Response:
        return platform.request(worker, Request.make("GET", path, query=query), location=location)

    return platform, ops, send


def test_note_stale_read() -> None:
    """A read served from a copy cached earlier, older than the store, says so and how old."""
    platform, ops, send = tapped()
    send("/put", "fra", key="k", value="v1")
    platform.scheduler.advance(2_000)
    send("/get", "sin", key="k")
    platform.scheduler.advance(3_000)
    send("/put", "fra", key="k", value="v2")
    platform.scheduler.advance(500)
    send("/get", "sin", key="k")
    assert ops[-1].result == "v1"
    assert ops[-1].notes == (
        "stale read: sin (cache node 0) returned a copy cached 3.5 s earlier; the store has a "
        "newer value written 500 ms earlier",
    )
    assert ops[1].notes == ()  # the first read was fresh


def test_note_cached_miss() -> None:
    """A read answered by a cached 'not found' while the key exists says so."""
    platform, ops, send = tapped()
    send("/get", "sin", key="k")
    platform.scheduler.advance(1_000)
    send("/put", "fra", key="k", value="v1")
    send("/get", "sin", key="k")
    assert ops[-1].result == "not found"
    assert ops[-1].notes == (
        "cached miss: sin (cache node 0) cached 'not found' 1.0 s earlier; the key was written "
        "at the same moment",
    )


def test_note_429() -> None:
    """A second write to a key within a second is a 429, with how long ago the first was."""
    platform, ops, send = tapped()
    send("/put", "fra", key="k", value="v1")
    platform.scheduler.advance(300)
    assert send("/put", "iad", key="k", value="v2").status == 500  # the worker let it escape
    assert ops[-1].status == 429 and ops[-1].written == "v2"
    assert ops[-1].notes == (
        "429 Too Many Requests: k was written 300 ms earlier (1 write per second per key)",
    )
    assert ops[-1].describe() == "put k = v2 → 429"


def test_note_short_page() -> None:
    """A legally short list page (list_complete false) is pointed out."""
    platform, ops, send = tapped({"kv.list.page": [1]})
    for i in range(4):
        send("/put", "fra", key=f"comment:{i}", value="x")
    platform.scheduler.advance(61_000)
    send("/list", "sin", prefix="comment:")
    assert ops[-1].result == "2 keys, more to follow"
    assert ops[-1].notes == (
        "short page (2 keys) while list_complete is false: a caller that reads one page "
        "misses keys",
    )


def test_note_stale_list_and_failed_read_your_write() -> None:
    """A list page cached before a write misses the new key; a write whose location keeps its
    older copy (read-your-own-write failing) says so."""
    platform, ops, send = tapped({"kv.ryw": [0, 1]})
    send("/put", "sin", key="comment:1", value="x")
    send("/list", "sin", prefix="comment:")
    platform.scheduler.advance(2_000)
    send("/put", "sin", key="comment:1", value="y")
    assert ops[-1].notes == (
        "read-your-own-write failed: sin keeps its older copy of comment:1 for up to 60 s",
    )
    send("/put", "fra", key="comment:2", value="z")
    send("/list", "sin", prefix="comment:")
    assert ops[-1].notes == (
        "stale list: sin served a page cached 2.0 s earlier (1 stored key not in it)",
    )


def test_killed_request_is_noted(tmp_path: Path) -> None:
    """A request that never answered shows 'no answer' and why, in the table and the diagram."""
    trace = trace_for("CRASH_AFTER_REPLY")
    detail = collect(trace)
    killed = [ex for ex in detail.world.history if ex.status is None]
    if not killed:
        pytest.fail("the CRASH_AFTER_REPLY counterexample has no killed request to show")
    md = render(detail, Paths("t.json", "test_t.py"))
    assert "| no answer |" in md
    assert "killed before it answered: " in md
    assert "--x" in diagram_of(md)


# -- the regression test ---------------------------------------------------------------------------


def run_pytest(test: Path, target: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "QMODEL_TARGET"}
    if target is not None:
        env["QMODEL_TARGET"] = target
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=test.parent,
    )


def test_regression_file_fails_on_the_bug_and_passes_on_sound(tmp_path: Path) -> None:
    """The generated test fails with the violation against the catalog design and passes when
    QMODEL_TARGET points at the sound design."""
    trace = trace_for("CLAIM_NOT_ATOMIC")
    files = write_report(trace, tmp_path)
    buggy = run_pytest(files.test)
    assert buggy.returncode == 1, buggy.stdout
    assert f"catalog:CLAIM_NOT_ATOMIC still breaks {trace.expected.invariant}" in buggy.stdout
    fixed = run_pytest(files.test, "sound")
    assert fixed.returncode == 0, fixed.stdout
    assert "1 passed" in fixed.stdout


def test_regression_file_names_its_target_at_the_top() -> None:
    """TARGET is a plain assignment near the top, overridden by QMODEL_TARGET."""
    source = regression_test(trace_for("CLAIM_NOT_ATOMIC"), "CLAIM_NOT_ATOMIC")
    assert "TARGET = os.environ.get(\"QMODEL_TARGET\") or 'catalog:CLAIM_NOT_ATOMIC'" in source
    assert "def test_regression_CLAIM_NOT_ATOMIC() -> None:" in source
    compile(source, "test_regression_CLAIM_NOT_ATOMIC.py", "exec")


# -- the committed examples ------------------------------------------------------------------------


def example_traces() -> list[Path]:
    return sorted(EXAMPLES.glob("*.json"))


def test_three_examples_are_committed() -> None:
    """docs/examples holds three reports of different catalog ids, each with its three files."""
    traces = example_traces()
    assert len(traces) == 3
    for path in traces:
        rid = path.stem
        assert (EXAMPLES / f"{rid}.md").is_file() and (
            EXAMPLES / f"test_regression_{rid}.py"
        ).is_file()
    assert len({load(p).target for p in traces}) == 3


@pytest.mark.parametrize("path", example_traces(), ids=lambda p: p.stem)
def test_examples_are_what_the_tool_writes(path: Path) -> None:
    """Each committed example replays exactly and its report and test are what qmodel writes
    from its trace today (regenerate with the command in the README when this fails)."""
    trace = load(path)
    try:
        replay_strict(trace)
    except Exception as err:  # noqa: BLE001 - the message is the point
        pytest.fail(
            f"{path.name} no longer replays ({err}); regenerate the examples: qmodel check "
            f"--target {trace.target} --profile ci --report docs/examples"
        )
    rel = path.relative_to(ROOT)
    md = render(
        collect(trace), Paths(str(rel), str(rel.with_name(f"test_regression_{path.stem}.py")))
    )
    assert (EXAMPLES / f"{path.stem}.md").read_text() == md
    assert (EXAMPLES / f"test_regression_{path.stem}.py").read_text() == regression_test(
        trace, path.stem
    )
    assert mermaid_parse([diagram_of(md)]) == [{"ok": True, "type": "sequence"}]


def test_repeated_settle_polls_fold_into_one_row() -> None:
    """Once the settle began, three or more polls in a row that each repeat their actor's last
    request and answer (nothing written, nothing noted) are one row; every other step keeps its
    own row, so the folded rows account for the rest of the log."""
    trace = load(EXAMPLES / "STALE_CACHE_RMW.json")
    detail = collect(trace)
    md = render(detail, Paths("t.json", "test_t.py"))
    folded = [line for line in md.splitlines() if "(folded)" in line]
    assert folded, "the example's settle repeats polls"
    settle = next(i for i, line in enumerate(detail.world.log) if "settle: traffic stops" in line)
    last: dict[tuple[str, str], Any] = {}
    answers = {}
    for i in range(len(detail.world.log)):
        seq = detail.log_exchange.get(i)
        if seq is None:
            continue
        ex = detail.exchange(seq)
        key = (ex.actor, f"{ex.method} {ex.path}")
        answers[i + 1] = (ex, last.get(key))
        last[key] = (ex.status, ex.answer)
    covered = 0
    for line in folded:
        first, end = (int(n) for n in line.split("|")[1].strip().split("–"))
        assert end - first + 1 >= 3 and first > settle
        for step in range(first, end + 1):
            ex, before = answers[step]
            assert ex.method == "GET" and ex.ok and not ex.kv_writes and ex.actor != "probe"
            assert before == (ex.status, ex.answer)
        covered += end - first + 1
    table = md[md.index("## Steps") : md.index("## State")]
    rows = [line for line in table.splitlines() if re.match(r"\| \d", line)]
    assert len(rows) - len(folded) + covered == len(detail.world.log)
