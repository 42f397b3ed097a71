"""Hostile and broken JavaScript workers: every way out of the Node lane's sandbox that was
found is closed, and every way a worker can break ends in a finding or exit 3, in bounded time.

Each escape tries to leave a mark outside the sandbox (a file written, a process started, a
connection made) and the test asserts the mark is absent, besides the exact outcome. The tests
need Node 20.6+, like ``tests/test_node.py`` (whose helpers they use).
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from test_node import get, module, platform_for, run_cli

from qmodel.node import NodeLaneAborted, js_worker
from qmodel.node.host import host_for
from qmodel.profiles import SHRINK_BUDGETS

#: A marker file each escape tries to create (the test's folder is one Node may read).
MARK = "escaped.txt"


def load_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], source: str, **files: str
) -> str:
    """Check the worker ``source`` from the command line; it must exit 2 before any search.
    The message it printed."""
    path = module(tmp_path, source, **files)
    code, out, err = run_cli(capsys, "check", "--target", str(path), "--max-examples", "1")
    assert (code, out) == (2, "")
    return err


def fetch_json(tmp_path: Path, source: str, **files: str) -> Any:
    """The JSON body the worker ``source`` answers to one GET."""
    target = js_worker(module(tmp_path, source, **files))()
    return get(platform_for(target), target, "/").json_body()


# -- escapes at import time: refused before the search starts -----------------------------------

WRITE_MARK = f'import fs from "node:fs"; fs.writeFileSync("MARKDIR/{MARK}", "x");'


def test_a_data_url_import_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """import('data:...') at module top level (which would import node:fs itself) exits 2."""
    url = json.dumps("data:text/javascript," + WRITE_MARK.replace("MARKDIR", str(tmp_path)))
    source = f"await import({url});\nexport default {{ fetch() {{}} }};\n"
    err = load_error(tmp_path, capsys, source)
    assert "imports 'data:text/javascript,import fs from" in err
    assert "a data: URL is refused: qmodel's Node lane runs only the worker's own files" in err
    assert not (tmp_path / MARK).exists()


def test_a_commonjs_helper_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A .cjs helper (which would require child_process) exits 2 naming the file."""
    helper = f"require('child_process').execSync('touch {tmp_path / MARK}');\n"
    source = "import './helper.cjs';\nexport default { fetch() {} };\n"
    err = load_error(tmp_path, capsys, source, helper__cjs=helper)
    assert "imports './helper.cjs': CommonJS files of a worker are refused" in err
    assert not (tmp_path / MARK).exists()


def test_a_query_naming_node_modules_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A local import whose URL says /node_modules/ in its query is refused, not taken for a
    package."""
    helper = WRITE_MARK.replace("MARKDIR", str(tmp_path)) + "\nexport const x = 1;\n"
    source = "import './helper.mjs?x=/node_modules/';\nexport default { fetch() {} };\n"
    err = load_error(tmp_path, capsys, source, helper__mjs=helper)
    assert "imports './helper.mjs?x=/node_modules/': a query or fragment" in err
    assert not (tmp_path / MARK).exists()


def test_an_extensionless_commonjs_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file without an extension (Node would load it as CommonJS) exits 2."""
    (tmp_path / "helper").write_text(f"require('fs').writeFileSync('{tmp_path / MARK}', 'x');\n")
    source = "import './helper';\nexport default { fetch() {} };\n"
    err = load_error(tmp_path, capsys, source)
    assert "imports './helper': a file without an extension is not a module" in err
    assert not (tmp_path / MARK).exists()


def test_a_file_outside_the_workers_folder_is_refused(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """A module outside the worker's folder is refused by the linker, and unreadable anyway."""
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "other.mjs"
    elsewhere.write_text("export const secret = 1;\n")
    source = f"import {{ secret }} from '{elsewhere}';\nexport default {{ fetch() {{}} }};\n"
    err = load_error(tmp_path, capsys, source)
    assert f"imports '{elsewhere}': {elsewhere} is outside the worker's folders" in err


# -- escapes inside fetch: the promise rejects, nothing happens ---------------------------------


def test_escapes_inside_fetch_reject(tmp_path: Path) -> None:
    """Inside a request, a data: import, a path into node_modules, eval and new Function are
    refused with what was wrong; none leaves a mark."""
    (tmp_path / "node_modules" / "pkg").mkdir(parents=True)
    (tmp_path / "node_modules" / "pkg" / "index.mjs").write_text("export const x = 1;\n")
    url = json.dumps("data:text/javascript," + WRITE_MARK.replace("MARKDIR", str(tmp_path)))
    source = f"""
        const attempt = (f) => f().then(() => 'ran', (e) => e.message);
        export default {{
          async fetch() {{
            return Response.json({{
              data: await attempt(() => import({url})),
              http: await attempt(() => import('http://127.0.0.1:9/x.mjs')),
              path: await attempt(() => import('./node_modules/pkg/index.mjs')),
              eval: await attempt(async () => eval('1 + 1')),
              fn: await attempt(async () => new Function('return 1')()),
            }});
          }},
        }};
    """
    out = fetch_json(tmp_path, source)
    assert "a data: URL is refused" in out["data"]
    assert "a http: URL is refused" in out["http"]
    assert "a path into node_modules is refused: import a package by its name" in out["path"]
    assert out["eval"] == out["fn"] == "Code generation from strings disallowed for this context"
    assert not (tmp_path / MARK).exists()


def test_a_worker_cannot_forge_the_hosts_messages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A worker whose fetch always throws, and which tries to replace JSON.stringify, the JSON
    global, Promise.prototype.then, Array.prototype.push and the request-telling
    AsyncLocalStorage, is still caught: every attempt throws, and the search reports its 500s
    (exit 1)."""
    source = """
        import { AsyncLocalStorage } from 'node:async_hooks';
        const refused = [];
        const attempt = (name, f) => { try { f(); } catch (e) { refused.push(name); } };
        attempt('stringify', () => { JSON.stringify = () => '[]'; });
        attempt('JSON', () => { globalThis.JSON = { stringify: () => '[]', parse: JSON.parse }; });
        attempt('then', () => { Promise.prototype.then = function () {}; });
        attempt('push', () => { Array.prototype.push = () => 0; });
        attempt('define', () => Object.defineProperty(JSON, 'stringify', { value: () => '[]' }));
        attempt('store', () => { AsyncLocalStorage.prototype.getStore = () => ({ rid: 1 }); });
        export default {
          async fetch() { throw new Error(`always fails; refused: ${refused.join(' ')}`); },
        };
    """
    path = module(tmp_path, source)
    code, out, _ = run_cli(
        capsys, "check", "--target", str(path), "--profile", "dev", "--max-examples", "3", "--json"
    )
    result = json.loads(out)
    assert (code, result["verdict"], result["invariant"]) == (1, "violation", "platform")
    assert "-> 500" in result["trace"][0]
    target = js_worker(path)()
    p = platform_for(target)
    get(p, target, "/")
    assert p.invocations[0].errors == [
        "uncaught JavaScriptError: Error: always fails; refused: stringify JSON then push "
        "define store (worker.mjs:12:25)"
    ]


# -- the operating system: even code Node loads itself is confined ------------------------------


def test_the_operating_system_confines_node(tmp_path: Path) -> None:
    """A package (imported by Node itself, so it may use any built-in) cannot write a file,
    start a process or a worker thread, read outside the worker's folders or see this
    process's environment: Node's permission model refuses each."""
    pkg = tmp_path / "node_modules" / "evil"
    pkg.mkdir(parents=True)
    (pkg / "package.json").write_text('{"name": "evil", "type": "module", "main": "index.js"}')
    (pkg / "index.js").write_text(
        f"""
        import fs from 'node:fs';
        import cp from 'node:child_process';
        import process from 'node:process';
        import {{ Worker }} from 'node:worker_threads';
        const attempt = (f) => {{ try {{ f(); return 'ran'; }} catch (e) {{ return e.code; }} }};
        export const results = {{
          write: attempt(() => fs.writeFileSync('{tmp_path / MARK}', 'x')),
          writeTmp: attempt(() => fs.writeFileSync('/tmp/{MARK}', 'x')),
          spawn: attempt(() => cp.execSync('touch {tmp_path / MARK}')),
          worker: attempt(() => new Worker('setTimeout(() => {{}}, 1)', {{ eval: true }})),
          read: attempt(() => fs.readFileSync('/etc/hostname')),
          env: Object.keys(process.env).sort(),
        }};
        """
    )
    source = """
        import { results } from 'evil';
        export default { async fetch() { return Response.json(results); } };
    """
    out = fetch_json(tmp_path, source)
    assert out == {
        "write": "ERR_ACCESS_DENIED",
        "writeTmp": "ERR_ACCESS_DENIED",
        "spawn": "ERR_ACCESS_DENIED",
        "worker": "ERR_ACCESS_DENIED",
        "read": "ERR_ACCESS_DENIED",
        "env": ["QMODEL_NODE_IN", "QMODEL_NODE_OUT", "QMODEL_NODE_ROOTS"],
    }
    assert not (tmp_path / MARK).exists()


def test_node_has_no_network(tmp_path: Path) -> None:
    """A package that connects to a socket this process listens on reaches nothing: Node runs
    in a network namespace of its own."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.setblocking(False)
    port = server.getsockname()[1]
    pkg = tmp_path / "node_modules" / "dialer"
    pkg.mkdir(parents=True)
    (pkg / "package.json").write_text('{"name": "dialer", "type": "module", "main": "index.js"}')
    (pkg / "index.js").write_text(
        f"""
        import net from 'node:net';
        export const dialed = new Promise((resolve) => {{
          const s = net.connect({port}, '127.0.0.1', () => resolve('connected'));
          s.on('error', (e) => resolve(e.code));
        }});
        """
    )
    source = """
        import { dialed } from 'dialer';
        export default { async fetch() { return new Response(await dialed); } };
    """
    target = js_worker(module(tmp_path, source))
    host = host_for(target.module.node, target.module.roots)
    if not host.network_isolated:
        server.close()
        pytest.skip("this kernel refuses unprivileged network namespaces")
    worker = target()
    answer = get(platform_for(worker), worker, "/").body
    try:
        with pytest.raises(BlockingIOError):
            server.accept()
    finally:
        server.close()
    assert answer == "ENETUNREACH"


def test_apis_finishing_off_thread_are_refused_or_made_synchronous(tmp_path: Path) -> None:
    """CompressionStream (Node's thread pool) and Atomics.waitAsync (the event loop) are refused
    naming the API; WebAssembly.instantiate compiles at once, so its answer settles under the
    scheduler like any other."""
    # (module (func (export "answer") (result i32) i32.const 42))
    wasm = (
        "0,97,115,109,1,0,0,0,1,5,1,96,0,1,127,3,2,1,0,7,10,1,6,97,110,115,119,101,114,0,0,10,"
        "6,1,4,0,65,42,11"
    )
    source = f"""
        export default {{
          async fetch() {{
            let compression;
            try {{ new CompressionStream('gzip'); }} catch (e) {{ compression = e.message; }}
            let waitAsync;
            try {{ Atomics.waitAsync(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10); }}
            catch (e) {{ waitAsync = e.message; }}
            const {{ instance }} = await WebAssembly.instantiate(new Uint8Array([{wasm}]));
            return Response.json({{ compression, waitAsync, answer: instance.exports.answer() }});
          }},
        }};
    """
    out = fetch_json(tmp_path, source)
    assert out["compression"] == (
        "CompressionStream is not available in qmodel's Node lane: Node compresses on its "
        "thread pool, outside the scheduler's control, so when it finishes could not be chosen "
        "or replayed; compress outside the code under test, or with a pure-JavaScript library"
    )
    assert out["waitAsync"] == (
        "Atomics.waitAsync is not available in qmodel's Node lane: it settles through Node's "
        "event loop, outside the scheduler's control; await a platform call or a timer instead"
    )
    assert out["answer"] == 42


# -- broken workers: a finding or exit 3, in bounded time ---------------------------------------


def timed_check(
    capsys: pytest.CaptureFixture[str], path: Path, *flags: str
) -> tuple[int, dict[str, Any], str, float]:
    """``qmodel check --json`` of ``path`` with a small budget: exit status, the one JSON object
    on stdout, stderr, and the wall seconds it took."""
    started = time.monotonic()
    code, out, err = run_cli(
        capsys,
        "check",
        "--target",
        str(path),
        "--profile",
        "dev",
        "--max-examples",
        "3",
        "--json",
        *flags,
    )
    seconds = time.monotonic() - started
    [line] = out.splitlines()
    return code, json.loads(line), err, seconds


def test_a_worker_awaiting_forever_is_a_liveness_finding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fetch that awaits a promise nothing settles: violation of platform (no-answer)."""
    # The verdict is the point here, not how far it shrinks: a small shrinking budget.
    # (Each example takes seconds: in the settle, every poll of every actor waits its 2
    # virtual minutes before it is stopped.)
    monkeypatch.setitem(SHRINK_BUDGETS, "dev", (1, 1, 60))
    path = module(tmp_path, "export default { fetch() { return new Promise(() => {}); } };\n")
    code, result, _, seconds = timed_check(capsys, path, "--max-examples", "1", "--no-minimise")
    assert (code, result["verdict"], result["invariant"]) == (1, "violation", "platform")
    unanswered = [line for line in result["trace"] if "-> no answer" in line]
    assert unanswered and all("it can never answer" in line for line in unanswered)
    # A guard against a hang (an await nothing settles must not wait on a real clock), not a
    # speed figure: the run takes seconds, well under the bound even on a loaded machine.
    assert seconds < 60


@pytest.mark.parametrize(
    "body",
    ["for (;;) {}", "Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);"],
    ids=["while-true", "atomics-wait"],
)
def test_a_worker_that_never_returns_ends_the_run_with_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, body: str
) -> None:
    """JavaScript that never returns to Node's event loop is stopped by the watchdog: exit 3,
    one JSON object, a message naming the request; Node is killed, not left spinning."""
    monkeypatch.setenv("QMODEL_HANG_SECONDS", "1")
    path = module(tmp_path, f"export default {{ async fetch() {{ {body} }} }};\n")
    code, result, err, seconds = timed_check(capsys, path)
    assert code == 3 and result["verdict"] == "error"
    assert result["error"]["kind"] == "stuck"
    assert result["error"]["message"].startswith(
        "request bot-1:pending made no progress for 1 s inside"
    )
    assert "qmodel: error: request bot-1:pending made no progress" in err
    assert seconds < 10


def test_a_heap_blow_up_is_reported_by_its_first_cause(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Node dying of a heap blow-up ends the run with exit 3 naming the request and the cause,
    not the settle's later call into the dead process."""
    monkeypatch.setenv("QMODEL_NODE_ARGS", "--max-old-space-size=32")
    source = """
        export default {
          async fetch() { const a = []; for (;;) a.push(new Array(1e5).fill(1)); },
        };
    """
    path = module(tmp_path, source)
    code, result, _, seconds = timed_check(capsys, path)
    assert code == 3 and result["verdict"] == "error"
    assert result["error"]["kind"] == "node"
    message = result["error"]["message"]
    assert message.startswith(
        "while serving request bot-1:pending, the Node process of the JavaScript lane exited"
    )
    assert (
        "(killed by signal 6): FATAL ERROR: Reached heap limit Allocation failed - "
        "JavaScript heap out of memory; its last output:" in message
    )
    assert "lived in a Node process that has since stopped" not in message
    assert seconds < 20


def test_a_dead_process_is_reported_by_its_first_cause_afterwards(tmp_path: Path) -> None:
    """Every later call into an instance of a process that died repeats the first cause."""
    source = """
        export default {
          async fetch(request) {
            if (request.url.endsWith('/die')) for (;;) {}
            return new Response('ok');
          },
        };
    """
    target = js_worker(module(tmp_path, source))()
    p = platform_for(target)
    host = host_for(target.module.node, target.module.roots)
    host.timeout = 1.0
    with pytest.raises(NodeLaneAborted) as first:
        get(p, target, "/die")
    assert str(first.value).startswith("while serving request GET /die@fra, the Node process")
    with pytest.raises(NodeLaneAborted) as later:
        get(p, target, "/ok")
    assert str(later.value) == str(first.value)
