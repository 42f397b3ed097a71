"""Real Workers projects in the Node lane: TypeScript bundled with esbuild and reported through
its source map, Wrangler environments, ``nodejs_compat``'s ``node:crypto`` drawn from the run's
seed, Durable Object RPC, and Service Worker syntax.

The example project ``examples/workers/ts-project`` (``wrangler.jsonc``, a ``DurableObject``
class from ``cloudflare:workers`` reached by RPC, a KV cache updated by read-modify-write) is
checked as a user would check it: ``qmodel check --target examples/workers/ts-project``.

The tests need Node 20.6+ and esbuild (``npm ci --prefix tools/esbuild``); they are skipped
without them unless ``QMODEL_REQUIRE_NODE=1``.
"""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest

from qmodel import cli
from qmodel.errors import InvalidTarget
from qmodel.node import bindings_for, js_worker
from qmodel.node.bundle import find_esbuild
from qmodel.sim import Platform, Request
from qmodel.sim.choices import FirstOptionBackend, SeededBackend

if shutil.which(os.environ.get("QMODEL_NODE") or "node") is None:
    if os.environ.get("QMODEL_REQUIRE_NODE") == "1":
        raise RuntimeError("QMODEL_REQUIRE_NODE=1 but no node on the PATH")
    pytest.skip("Node.js is not installed (the Node lane's tests need it)", allow_module_level=True)
try:
    find_esbuild(Path(__file__).parent)
except InvalidTarget:
    if os.environ.get("QMODEL_REQUIRE_NODE") == "1":
        raise
    pytest.skip("esbuild is not installed (npm ci --prefix tools/esbuild)", allow_module_level=True)

PROJECT = Path(__file__).resolve().parent.parent / "examples" / "workers" / "ts-project"


def write(folder: Path, **files: str) -> Path:
    """Write ``files`` under ``folder`` (``src__index_ts`` names ``src/index.ts``, the last
    ``_`` of a name being its dot); the folder."""
    for name, text in files.items():
        stem, _, suffix = name.replace("__", "/").rpartition("_")
        path = folder / f"{stem}.{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return folder


def platform_for(target: Any, backend: Any = None) -> Platform:
    return Platform.create(
        backend=backend or FirstOptionBackend(),
        durable=target.durable_objects,
        kv_bindings=target.kv_bindings,
    )


def call(p: Platform, target: Any, method: str, path: str, body: Any = None) -> Any:
    return p.request(target, Request.make(method, path, json_body=body), location="fra")


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- TypeScript -------------------------------------------------------------------------------


def test_a_typescript_project_is_bundled_with_a_map_into_its_sources() -> None:
    """The project's main (src/index.ts and the modules it imports) is run as one bundle, whose
    map names the project's own files relative to its folder."""
    worker = js_worker(PROJECT / "src" / "index.ts")
    module = worker.module
    assert module.url.endswith("/worker.mjs") and module.source_map is not None
    sources = json.loads(module.source_map.read_text())["sources"]
    assert {"src/index.ts", "src/queue.ts", "src/messages.ts"} <= set(sources)
    assert module.bindings.flags == ("nodejs_compat",)
    assert dict(module.bindings.durable) == {"QUEUE": "MessageQueue"}


def test_calls_and_errors_of_typescript_point_into_the_ts_source(tmp_path: Path) -> None:
    """A KV call's site and a thrown error's place are lines of the .ts file, not of the
    bundle."""
    project = write(
        tmp_path,
        wrangler_jsonc='{"name": "t", "main": "src/index.ts", "kv_namespaces": [{"binding": "KV"}]}',  # noqa: E501
        src__index_ts="""
            interface Env { KV: KVNamespace }

            async function bump(env: Env): Promise<number> {
              const n: number = Number((await env.KV.get('n')) ?? '0');
              await env.KV.put('n', String(n + 1));
              return n + 1;
            }

            export default {
              async fetch(request: Request, env: Env): Promise<Response> {
                if (new URL(request.url).pathname === '/boom') {
                  throw new TypeError('boom');
                }
                return Response.json({ n: await bump(env) });
              },
            };
        """,
    )
    sites: list[str] = []
    target = js_worker(project / "src" / "index.ts")()
    p = platform_for(target)
    p.kv_store.tap = lambda op, inv, result, error: sites.append(op.site)
    assert call(p, target, "GET", "/").json_body() == {"n": 1}
    assert sites == ["src/index.ts:5:42", "src/index.ts:6:16"]
    answer = call(p, target, "GET", "/boom")
    assert answer.status == 500
    errors = answer_errors(p)
    assert any("TypeError: boom (src/index.ts:13:13)" in line for line in errors), errors


def answer_errors(p: Platform) -> list[str]:
    return [e for inv in p.invocations for e in inv.errors]


def test_a_typescript_error_is_reported_with_esbuilds_file_and_line(tmp_path: Path) -> None:
    """A project that does not bundle is refused with esbuild's message (file, line)."""
    write(
        tmp_path,
        wrangler_toml='name = "t"\nmain = "src/index.ts"\n',
        src__index_ts="export default { fetch( { return new Response('x') } };\n",
    )
    with pytest.raises(
        InvalidTarget, match=r"(?s)bundling src/index.ts with esbuild failed:.*src/index.ts:1"
    ):
        js_worker(tmp_path / "src" / "index.ts")


def test_no_esbuild_says_how_to_get_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad QMODEL_ESBUILD is refused naming it (it is consulted before qmodel's own copy)."""
    monkeypatch.setenv("QMODEL_ESBUILD", str(tmp_path / "nope"))
    with pytest.raises(InvalidTarget, match="QMODEL_ESBUILD=.*nope is not a file"):
        find_esbuild(tmp_path)


def test_the_typescript_projects_race_is_found_and_reported_in_its_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """qmodel check --target FOLDER on the TypeScript project finds its bug (the KV cache's
    read-modify-write: a write refused with 429 fails the request), and the report shows the
    KV calls at their lines of src/index.ts; the trace replays."""
    reports = tmp_path / "reports"
    code, out, _ = run_cli(
        capsys, "check", "--target", str(PROJECT), "--profile", "dev", "--json",
        "--report", str(reports),
    )  # fmt: skip
    result = json.loads(out)
    assert code == 1 and result["verdict"] == "violation", result
    assert result["invariant"] == "platform"
    text = Path(result["report"]["markdown"]).read_text()
    assert "src/index.ts:" in text
    code, _, err = run_cli(
        capsys, "replay", result["report"]["trace"], "--target", result["target"]
    )
    assert code == 1, err


@pytest.mark.slow
def test_the_typescript_projects_lost_update_is_found_at_ci(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The cache's lost update itself (cache-coherent, no erasure) is found by search at ci."""
    code, out, _ = run_cli(
        capsys, "check", "--target", str(PROJECT), "--profile", "ci", "--json",
        "--skip-invariant", "platform", "--skip-invariant", "pending-visible",
    )  # fmt: skip
    result = json.loads(out)
    assert code == 1 and result["invariant"] == "cache-coherent", result


# -- Wrangler environments -----------------------------------------------------------------


def test_env_reads_the_environments_own_bindings_and_inherits_main_and_flags() -> None:
    """--env staging: the section's bindings and vars (a string holding ",}" intact), main and
    compatibility_flags from the top level."""
    b = bindings_for(PROJECT / "src" / "index.ts", env="staging")
    assert b.env == "staging" and b.flags == ("nodejs_compat",)
    assert dict(b.vars) == {"STAGE": "staging, with a comma,}"}
    assert dict(b.durable) == {"QUEUE": "MessageQueue"}
    assert dict(bindings_for(PROJECT / "src" / "index.ts").vars) == {}


def test_env_bindings_are_not_inherited(tmp_path: Path) -> None:
    """An environment that lists no KV namespace has none of the top level's (Wrangler's rule);
    an unknown environment is refused naming the known ones."""
    write(
        tmp_path,
        wrangler_toml="""
            name = "t"
            main = "worker.mjs"
            kv_namespaces = [{ binding = "TOP" }]
            [env.prod]
            kv_namespaces = [{ binding = "PROD" }]
            [env.bare]
            vars = { X = "1" }
        """,
        worker_mjs="export default { fetch() { return new Response('x') } };",
    )
    worker = tmp_path / "worker.mjs"
    assert bindings_for(worker).kv == ("TOP",)
    assert bindings_for(worker, env="prod").kv == ("PROD",)
    assert bindings_for(worker, env="bare").kv == ("COMMENTS_KV",)
    with pytest.raises(InvalidTarget, match="no environment 'qa'.*its environments: bare, prod"):
        bindings_for(worker, env="qa")


def env_project(folder: Path) -> Path:
    """A project whose worker answers 404 everywhere but in its environment ``x`` (500 there)."""
    return write(
        folder,
        wrangler_jsonc="""
            {
              "name": "t", "main": "worker.mjs",
              "kv_namespaces": [{ "binding": "COMMENTS_KV" }],
              "env": {
                "x": {
                  "kv_namespaces": [{ "binding": "COMMENTS_KV" }],
                  "vars": { "MODE": "racy" },
                },
              },
            }
        """,
        worker_mjs="""
            export default {
              async fetch(request, env) {
                if (env.MODE !== 'racy') return new Response('not found', { status: 404 });
                return new Response('boom', { status: 500 });
              },
            };
        """,
    )


def test_env_on_the_command_line_and_in_the_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """qmodel check --env NAME uses the environment; the trace records it, so a replay does too."""
    env_project(tmp_path)
    code, out, _ = run_cli(capsys, "check", "--target", str(tmp_path), "--json", "--profile", "dev")
    assert code == 2 and "404" in json.loads(out)["error"]["message"]
    code, out, _ = run_cli(
        capsys, "check", "--target", str(tmp_path), "--env", "x", "--json", "--profile", "dev",
        "--report", str(tmp_path / "r"),
    )  # fmt: skip
    result = json.loads(out)
    assert code == 1, result
    trace = json.loads(Path(result["report"]["trace"]).read_text())
    assert trace["bindings"]["env"] == "x"
    assert "--env x" in trace["search"]["command"]  # the search's command line, to run it again
    code, _, err = run_cli(capsys, "replay", result["report"]["trace"], "--target", trace["target"])
    assert code == 1, err


def test_explore_takes_env_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """qmodel explore --env NAME searches the environment's worker."""
    env_project(tmp_path)
    code, out, _ = run_cli(
        capsys, "explore", "--target", str(tmp_path), "--env", "x", "--posts", "1", "--json"
    )
    result = json.loads(out)
    assert (code, result["verdict"], result["invariant"]) == (1, "violation", "platform"), result


# -- nodejs_compat ------------------------------------------------------------------------------

#: A project whose worker.mjs runs with nodejs_compat.
COMPAT_TOML = 'name = "t"\nmain = "worker.mjs"\ncompatibility_flags = ["nodejs_compat"]\n'

CRYPTO_WORKER = """
    import { randomUUID, randomBytes, createHash, randomInt } from 'node:crypto';
    export default {
      async fetch() {
        return Response.json({
          uuid: randomUUID(),
          bytes: randomBytes(4).toString('hex'),
          int: randomInt(10),
          hash: createHash('sha256').update('x').digest('hex').slice(0, 8),
        });
      },
    };
"""


def test_node_crypto_needs_nodejs_compat(tmp_path: Path) -> None:
    """Without the flag, node:crypto is refused saying which flag opens it."""
    write(tmp_path, wrangler_toml='name = "t"\nmain = "worker.mjs"\n', worker_mjs=CRYPTO_WORKER)
    with pytest.raises(InvalidTarget, match="needs the nodejs_compat compatibility flag"):
        js_worker(tmp_path / "worker.mjs")


def test_node_crypto_draws_from_the_runs_seed(tmp_path: Path) -> None:
    """With nodejs_compat, node:crypto works; its random values follow the run's choices (the
    same seed gives the same values, another seed others); hashing is Node's."""
    write(
        tmp_path,
        wrangler_toml=COMPAT_TOML,
        worker_mjs=CRYPTO_WORKER,
    )
    worker = js_worker(tmp_path / "worker.mjs")

    def answer(seed: int) -> dict[str, Any]:
        target = worker()
        body = call(platform_for(target, SeededBackend(seed)), target, "GET", "/").json_body()
        assert isinstance(body, dict)
        return body

    first, again, other = answer(1), answer(1), answer(2)
    assert first == again and first["uuid"] != other["uuid"]
    assert first["hash"] == "2d711642"
    assert 0 <= first["int"] < 10 and len(first["bytes"]) == 8


def test_node_timers_run_on_the_virtual_clock(tmp_path: Path) -> None:
    """node:timers and node:timers/promises (nodejs_compat) wait on the virtual clock, as the
    global setTimeout does."""
    write(
        tmp_path,
        wrangler_toml=COMPAT_TOML,
        worker_mjs="""
            import { setTimeout as sleep } from 'node:timers/promises';
            import timers from 'node:timers';
            export default {
              async fetch() {
                const start = Date.now();
                await sleep(1500);
                await new Promise((resolve) => timers.setTimeout(resolve, 500));
                return new Response(String(Date.now() - start));
              },
            };
        """,
    )
    target = js_worker(tmp_path / "worker.mjs")()
    assert call(platform_for(target), target, "GET", "/").body == "2000"


def test_unsupported_node_crypto_apis_say_so(tmp_path: Path) -> None:
    """An API of node:crypto left out (a thread-pool one) throws naming it."""
    write(
        tmp_path,
        wrangler_toml=COMPAT_TOML,
        worker_mjs="""
            import crypto from 'node:crypto';
            export default {
              async fetch() {
                crypto.scrypt('a', 'b', 8, () => {});
                return new Response('x');
              },
            };
        """,
    )
    target = js_worker(tmp_path / "worker.mjs")()
    p = platform_for(target)
    assert call(p, target, "GET", "/").status == 500
    assert any("node:crypto scrypt is not available" in e for e in answer_errors(p))


# -- Durable Object RPC -------------------------------------------------------------------------

RPC_WORKER = """
    import { DurableObject } from 'cloudflare:workers';

    export class Counter extends DurableObject {
      async add(by, note) {
        const n = ((await this.ctx.storage.get('n')) ?? 0) + by;
        await this.ctx.storage.put('n', n);
        return { n, note, at: new Date(0) };
      }
      async fail() {
        throw new RangeError('too far');
      }
    }

    export default {
      async fetch(request, env) {
        const stub = env.COUNTER.get(env.COUNTER.idFromName('one'));
        const path = new URL(request.url).pathname;
        try {
          if (path === '/add') return Response.json(await stub.add(2, ['a', 1]));
          if (path === '/fail') await stub.fail();
          if (path === '/missing') await stub.nothing();
          if (path === '/fetch') return new Response(String((await stub.fetch('https://x/')).status));
          if (path === '/fn') await stub.add(() => 1);
        } catch (err) {
          return Response.json({ name: err.name, message: err.message });
        }
        return new Response('?');
      },
    };
"""


def rpc_worker(tmp_path: Path) -> Any:
    write(
        tmp_path,
        wrangler_toml="""
            name = "t"
            main = "worker.mjs"
            [durable_objects]
            bindings = [{ name = "COUNTER", class_name = "Counter" }]
        """,
        worker_mjs=RPC_WORKER,
    )
    return js_worker(tmp_path / "worker.mjs")()


def test_rpc_methods_of_a_durable_object_stub(tmp_path: Path) -> None:
    """stub.add(...) runs the object's method as a Durable Object request (its storage calls
    are steps of it) and gives its result by structured clone."""
    target = rpc_worker(tmp_path)
    p = platform_for(target)
    assert call(p, target, "GET", "/add").json_body() == {
        "n": 2, "note": ["a", 1], "at": "1970-01-01T00:00:00.000Z",
    }  # fmt: skip
    assert call(p, target, "GET", "/add").json_body()["n"] == 4
    labels = [inv.label for inv in p.invocations]
    assert labels.count("COUNTER[one] POST /rpc/add") == 2, labels


def test_fetch_on_a_stub_of_a_class_without_fetch(tmp_path: Path) -> None:
    """stub.fetch() on a class that has only RPC methods fails the object's request, naming
    the class."""
    target = rpc_worker(tmp_path)
    p = platform_for(target)
    assert call(p, target, "GET", "/fetch").body == "500"
    assert any("class Counter has no fetch() handler" in e for e in answer_errors(p))


@pytest.mark.parametrize(
    ("path", "name", "message"),
    [
        ("/fail", "RangeError", "too far"),
        ("/missing", "TypeError", 'does not implement the method "nothing"'),
        ("/fn", "TypeError", "an argument cannot be sent"),
    ],
)
def test_rpc_errors_reach_the_caller(tmp_path: Path, path: str, name: str, message: str) -> None:
    """A method's error is thrown at the caller with its name and message; so is calling a
    method the class lacks, or sending a function."""
    target = rpc_worker(tmp_path)
    body = call(platform_for(target), target, "GET", path).json_body()
    assert body["name"] == name and message in body["message"], body


# -- Service Worker syntax ----------------------------------------------------------------------


def test_a_service_worker_script_serves_with_bindings_as_globals(tmp_path: Path) -> None:
    """addEventListener('fetch', ...) with respondWith, and the KV binding as a global, as the
    Service Worker syntax has them."""
    write(
        tmp_path,
        worker_mjs="""
            async function handle(request) {
              const key = new URL(request.url).pathname.slice(1);
              const n = Number((await COMMENTS_KV.get(key)) ?? '0') + 1;
              await COMMENTS_KV.put(key, String(n));
              return new Response(`${key}=${n}`);
            }
            addEventListener('fetch', (event) => event.respondWith(handle(event.request)));
        """,
    )
    target = js_worker(tmp_path / "worker.mjs")()
    p = platform_for(target)
    assert call(p, target, "GET", "/a").body == "a=1"
    assert call(p, target, "GET", "/b").body == "b=1"


def test_a_module_worker_cannot_add_event_listeners(tmp_path: Path) -> None:
    """addEventListener is for Service Worker scripts; a module worker is told to export its
    handlers, and its bindings are not globals."""
    write(
        tmp_path,
        worker_mjs="""
            addEventListener('fetch', () => {});
            export default { fetch() { return new Response('x'); } };
        """,
    )
    with pytest.raises(
        InvalidTarget, match="addEventListener is for scripts in Service Worker syntax"
    ):
        js_worker(tmp_path / "worker.mjs")
    write(
        tmp_path,
        worker_mjs="""
            export default { fetch() { return new Response(typeof COMMENTS_KV); } };
        """,
    )
    target = js_worker(tmp_path / "worker.mjs")()
    assert call(platform_for(target), target, "GET", "/").body == "undefined"
