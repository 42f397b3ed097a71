"""Broken Python workers: every way a worker's fetch can fail is a finding, or ends the run with
exit 3 and a message naming the request, never an exit 0 or a hang; each in bounded time.

Each case runs ``qmodel check --json`` on a small worker file with a small budget and asserts
the exit status, the one JSON object on stdout, the message and how long it took.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from qmodel import cli
from qmodel.profiles import SHRINK_BUDGETS
from qmodel.sim import Platform, Request
from qmodel.targets import resolve


def worker(tmp_path: Path, body: str, imports: str = "") -> Path:
    """A worker file whose fetch runs ``body``."""
    path = tmp_path / "worker.py"
    source = f"{imports}\n\nasync def fetch(request, env, ctx):\n" + textwrap.indent(
        textwrap.dedent(body).strip() + "\n", "    "
    )
    path.write_text(source)
    return path


def check(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, dict[str, Any], str, float]:
    """``qmodel check --json`` of ``path`` in-process: exit status, the one JSON object on
    stdout, stderr, and the wall seconds it took."""
    started = time.monotonic()
    code = cli.main(
        ["check", "--target", str(path), "--profile", "dev", "--max-examples", "3", "--json"]
    )
    seconds = time.monotonic() - started
    out, err = capsys.readouterr()
    [line] = out.splitlines()
    return code, json.loads(line), err, seconds


@pytest.fixture(autouse=True)
def _small_shrinking(monkeypatch: pytest.MonkeyPatch) -> None:
    # The verdict is the point of these tests, not how far a counterexample shrinks.
    monkeypatch.setitem(SHRINK_BUDGETS, "dev", (5, 10, 60))


def test_a_request_awaiting_what_nothing_settles_is_a_liveness_finding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A fetch awaiting a future of another event loop (no simulated call ever settles it) is
    a violation of platform, rule no-answer, naming what it awaited: not ok, exit 0."""
    imports = """
class Future:
    \"\"\"A future of some other event loop, which nothing in the simulated world settles.\"\"\"

    def __repr__(self):
        return "<Future pending>"

    def __await__(self):
        return (yield self)
"""
    path = worker(tmp_path, "await Future()", imports=imports)
    code, result, _, seconds = check(capsys, path)
    assert (code, result["verdict"], result["invariant"]) == (1, "violation", "platform")
    [step] = result["trace"]
    assert "-> no answer" in step
    assert "awaited <Future pending>, which is not a simulated platform call, so nothing" in step
    assert seconds < 10


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("sys.exit(0)", "uncaught SystemExit: 0"),
        (
            "raise KeyboardInterrupt('from the worker')",
            "uncaught KeyboardInterrupt: from the worker",
        ),
        ("raise SystemExit('bye')", "uncaught SystemExit: bye"),
    ],
    ids=["sys-exit-0", "keyboard-interrupt", "system-exit"],
)
def test_an_exit_raised_in_fetch_is_a_500(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, error: str
) -> None:
    """SystemExit and KeyboardInterrupt raised by a worker are uncaught exceptions like any
    other: the request answers 500, a violation of platform; qmodel itself does not exit."""
    path = worker(tmp_path, body, imports="import sys")
    code, result, _, seconds = check(capsys, path)
    assert (code, result["verdict"], result["invariant"]) == (1, "violation", "platform")
    assert result["trace"][0].endswith("-> 500 [KVr:0 KVw:0]")
    assert seconds < 10
    target = resolve(str(path)).factory()
    p = Platform.create(seed=0)
    assert p.request(target, Request.make("GET", "/"), location="fra").status == 500
    assert p.invocations[0].errors == [error]


@pytest.mark.parametrize(
    ("body", "imports"),
    [
        ("time.sleep(10**6)", "import time"),
        ("threading.Event().wait()", "import threading"),
        ("threading.Lock().acquire(); threading.Lock().acquire()", "import threading"),
    ],
    ids=["sleep", "event-wait", "lock"],
)
def test_a_blocking_call_is_interrupted_and_ends_the_run_with_exit_3(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    body: str,
    imports: str,
) -> None:
    """A worker blocked in a system call (a sleep, a wait on an event or a lock nobody
    releases) is interrupted by the watchdog's signal: exit 3, one JSON object, a message
    naming the request, within about the watchdog's allowance."""
    monkeypatch.setenv("QMODEL_HANG_SECONDS", "1")
    if body.startswith("threading.Lock"):
        body = "lock = threading.Lock()\nlock.acquire()\nlock.acquire()"
    path = worker(tmp_path, body, imports=imports)
    code, result, err, seconds = check(capsys, path)
    assert code == 3
    assert result["verdict"] == "error"
    assert result["error"] == {
        "kind": "stuck",
        "message": "request bot-1:pending made no progress for 1 s inside one step: its code did "
        "not return to the scheduler (a loop without await, a blocking call such as time.sleep "
        "or a lock, or JavaScript that never awaits); every step of a worker must return to the "
        "scheduler at its next await",
    }
    assert err == f"qmodel: error: {result['error']['message']}\n"
    assert seconds < 5


def test_a_worker_that_swallows_the_interrupt_ends_the_process_with_exit_3(
    tmp_path: Path,
) -> None:
    """A worker that catches the watchdog's interrupt and blocks again cannot be stopped in
    the process: it ends with exit 3 and the message, on stderr and as the JSON object."""
    body = """
        while True:
            try:
                time.sleep(10**6)
            except BaseException:
                pass
    """
    path = worker(tmp_path, body, imports="import time")
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "qmodel.cli",
            "check",
            "--target",
            str(path),
            "--profile",
            "dev",
            "--max-examples",
            "3",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "QMODEL_HANG_SECONDS": "1"},
    )
    seconds = time.monotonic() - started
    assert proc.returncode == 3
    [line] = proc.stdout.splitlines()
    answer = json.loads(line)
    assert answer["verdict"] == "error" and answer["error"]["kind"] == "stuck"
    message = answer["error"]["message"]
    assert message.startswith("request bot-1:pending made no progress for 1 s inside one step")
    assert message.endswith(
        "The interrupt did not stop it within 3 s (the worker swallows it, or blocks where a "
        "signal cannot reach), so the run ends here."
    )
    assert f"qmodel: error: {message}" in proc.stderr
    assert seconds < 15


def test_ctrl_c_inside_a_worker_stops_the_run_and_is_no_finding(tmp_path: Path) -> None:
    """Ctrl-C while a worker blocks is the user's interrupt, not the worker's failure: the run
    stops at once with status 130, one line on stderr and, under --json, verdict unknown."""
    path = worker(tmp_path, "time.sleep(10**6)", imports="import time")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qmodel.cli",
            "check",
            "--target",
            str(path),
            "--profile",
            "dev",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(2)  # the worker is blocked in its first request by now
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert err.startswith("qmodel: interrupted") and err.count("\n") == 1, err
    answer = json.loads(out)
    assert answer["verdict"] == "unknown" and answer["error"]["kind"] == "interrupted"


# -- traces run nothing until they are validated -----------------------------------------------


def _doctored(tmp_path: Path, target: str) -> Path:
    """A committed example trace whose target is changed to ``target``."""
    example = Path(__file__).resolve().parent.parent / "docs" / "examples"
    raw = json.loads((example / "CLAIM_NOT_ATOMIC.json").read_text())
    raw["target"] = target
    path = tmp_path / "doctored.json"
    path.write_text(json.dumps(raw))
    return path


def _evil(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.py"
    evil.write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n\nasync def fetch(request, env, ctx):\n"
        "    return None\n"
    )
    return evil, marker


def test_a_doctored_trace_naming_another_target_runs_none_of_its_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A trace that names a worker file is replayed only when the user names the target, and a
    named target whose files are not the recorded design is refused before it is imported: exit
    2 each time, one JSON object, and the file's code never ran."""
    evil, marker = _evil(tmp_path)
    path = _doctored(tmp_path, str(evil))
    code = cli.main(["replay", str(path), "--json"])
    out, err = capsys.readouterr()
    answer = json.loads(out)
    assert code == 2 and answer["verdict"] == "error" and answer["error"]["kind"] == "trace"
    assert "a trace file alone never makes qmodel run code" in answer["error"]["message"]
    code = cli.main(["replay", str(path), "--json", "--target", str(evil)])
    answer = json.loads(capsys.readouterr().out)
    assert code == 2 and answer["error"]["message"].startswith(
        f"field 'design': the trace was recorded against CommentsWorker(atomic_claim=False), "
        f"but {evil} is now sha256:"
    )
    assert "nothing of it was run" in answer["error"]["message"]
    assert not marker.exists()


def test_a_doctored_trace_naming_a_protocol_module_loads_none_of_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A trace whose protocol is a module of the user's is not loaded on the trace's word."""
    evil, marker = _evil(tmp_path)
    example = Path(__file__).resolve().parent.parent / "docs" / "examples"
    raw = json.loads((example / "CLAIM_NOT_ATOMIC.json").read_text())
    raw["config"]["protocol"] = f"{evil}:P"
    path = tmp_path / "doctored.json"
    path.write_text(json.dumps(raw))
    code = cli.main(["replay", str(path), "--json"])
    answer = json.loads(capsys.readouterr().out)
    assert code == 2 and "--protocol" in answer["error"]["message"]
    assert not marker.exists()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda raw: raw["config"].__setitem__("kv", "nope"), "kv is 'nope'; it must be 'strict'"),
        (lambda raw: raw["config"].__setitem__("bots", 1000), "bots is 1000; it must be from 0"),
        (lambda raw: raw["config"].__setitem__("skews_ms", ["x"]), "should be a list of integers"),
    ],
    ids=["kv", "bots", "skews"],
)
def test_a_trace_with_an_impossible_configuration_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: Any, message: str
) -> None:
    """A configuration no world can have is refused naming the field, never a traceback."""
    example = Path(__file__).resolve().parent.parent / "docs" / "examples"
    raw = json.loads((example / "CLAIM_NOT_ATOMIC.json").read_text())
    edit(raw)
    path = tmp_path / "t.json"
    path.write_text(json.dumps(raw))
    code = cli.main(["replay", str(path), "--json"])
    out, err = capsys.readouterr()
    answer = json.loads(out)
    assert (
        code == 2 and answer["error"]["kind"] == "trace" and message in answer["error"]["message"]
    )
    assert "Traceback" not in err


def test_a_trace_nested_too_deeply_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """JSON nested past Python's recursion limit is refused as no trace, never a traceback."""
    path = tmp_path / "t.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    code = cli.main(["replay", str(path), "--json"])
    answer = json.loads(capsys.readouterr().out)
    assert code == 2 and "nests its JSON too deeply" in answer["error"]["message"]


def test_what_a_worker_prints_stays_off_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A worker printing at import and in fetch leaves --json stdout one JSON object."""
    path = tmp_path / "talks.py"
    path.write_text(
        "print('hello from import')\n"
        "from qmodel.workers import SoundWorker\n"
        "_s = SoundWorker()\n"
        "durable_objects = SoundWorker.durable_objects\n\n"
        "async def fetch(request, env, ctx):\n"
        "    print('hello from fetch')\n"
        "    return await _s.fetch(request, env, ctx)\n"
    )
    code = cli.main(
        ["check", "--target", str(path), "--profile", "dev", "--max-examples", "3", "--json"]
    )
    out, err = capsys.readouterr()
    [line] = out.splitlines()
    assert code == 0 and json.loads(line)["verdict"] == "ok"
    assert "hello from import" in err


def test_a_catalog_bug_under_another_protocol_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--protocol do on a bug of the patch era would hide it: exit 2, naming its protocol."""
    code = cli.main(["check", "--target", "catalog:TS_KEY_404", "--protocol", "do", "--json"])
    answer = json.loads(capsys.readouterr().out)
    assert code == 2 and answer["error"]["message"].startswith(
        "catalog:TS_KEY_404 is a bug of the patch protocol; under --protocol do its actors never"
    )
