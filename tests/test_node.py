"""The Node lane: a real JavaScript worker under the simulated platform, its calls relayed as
scheduling points, its clock and randomness virtual, its failures reported.

Each test writes a small Workers module into a temporary directory and runs it with the Python
scheduler in charge. The tests need Node 20.6+ (``node`` on the PATH or ``QMODEL_NODE``); CI
installs it. Without it they are skipped, unless ``QMODEL_REQUIRE_NODE=1`` makes that an error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from qmodel import cli
from qmodel.errors import InvalidTarget, StepLimitExceeded
from qmodel.node import NodeLaneAborted, bindings_for, js_worker
from qmodel.node.host import host_for
from qmodel.sim import Platform, Request
from qmodel.sim.choices import FirstOptionBackend, ScriptedBackend
from qmodel.sim.kv import KvConfig
from qmodel.sim.runtime import MAX_LOGS

if shutil.which(os.environ.get("QMODEL_NODE") or "node") is None:
    if os.environ.get("QMODEL_REQUIRE_NODE") == "1":
        raise RuntimeError("QMODEL_REQUIRE_NODE=1 but no node on the PATH")
    pytest.skip("Node.js is not installed (the Node lane's tests need it)", allow_module_level=True)


def module(tmp_path: Path, source: str, name: str = "worker.mjs", **files: str) -> Path:
    """Write a worker module (and helper files) into ``tmp_path``; its path."""
    for fname, text in files.items():
        (tmp_path / fname.replace("__", ".")).write_text(textwrap.dedent(text))
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


def platform_for(target: Any, *, backend: Any = None, **kw: Any) -> Platform:
    durable = getattr(target, "durable_objects", None)
    kw.setdefault("kv_bindings", target.kv_bindings)
    return Platform.create(backend=backend or FirstOptionBackend(), durable=durable, **kw)


def get(p: Platform, target: Any, path: str, *, location: str = "fra", **kw: Any) -> Any:
    return p.request(target, Request.make("GET", path, **kw), location=location)


COUNTER = """
    let hits = 0;
    export default {
      async fetch(request, env, ctx) {
        const key = new URL(request.url).pathname.slice(1) || 'n';
        const n = Number((await env.COMMENTS_KV.get(key)) ?? '0');
        await env.COMMENTS_KV.put(key, String(n + 1));
        hits += 1;
        return Response.json({ n: n + 1, hits });
      },
    };
"""


def test_each_kv_call_is_a_scheduling_point(tmp_path: Path) -> None:
    """Every KV call of the JavaScript is one step of its request, labelled as in Python."""
    target = js_worker(module(tmp_path, COUNTER))()
    p = platform_for(target)
    assert get(p, target, "/n").json_body() == {"n": 1, "hits": 1}
    assert [s.op for s in p.scheduler.trace] == ["start", "COMMENTS_KV.get n", "COMMENTS_KV.put n"]
    assert p.invocations[0].counters() == "[KVr:1 KVw:1]"


def test_the_scheduler_chooses_the_interleaving(tmp_path: Path) -> None:
    """Two JavaScript read-modify-writes interleaved at their reads lose an update; in
    sequence they do not. Python's schedule decides, not Node."""
    target = js_worker(module(tmp_path, COUNTER))()
    for order, expected in ((["a", "b", "a", "b"], "1"), (["a", "a", "b", "b"], "2")):
        p = platform_for(target, kv=KvConfig.local())
        tasks = {
            name: p.send(target, Request.make("GET", "/k"), location=loc)
            for name, loc in (("a", "fra"), ("b", "iad"))
        }
        for name in order:
            p.scheduler.step(tasks[name])
        assert all(t.finished for t in tasks.values())
        assert p.kv_store.snapshot().get("k") == expected


def test_concurrent_calls_of_one_request_are_ordered_by_a_choice(tmp_path: Path) -> None:
    """Promise.all of two puts to one key: which is performed last is the choice node.call."""
    source = """
        export default {
          async fetch(request, env) {
            await Promise.all([env.COMMENTS_KV.put('k', 'first'), env.COMMENTS_KV.put('j', 'x'),
                               env.COMMENTS_KV.put('k2', 'second')]);
            return new Response('ok');
          },
        };
    """
    target = js_worker(module(tmp_path, source))()
    p = platform_for(target, backend=ScriptedBackend({"node.call": [2, 1]}))
    assert get(p, target, "/").body == "ok"
    puts = [s.op for s in p.scheduler.trace if "put" in s.op]
    assert puts == ["COMMENTS_KV.put k2", "COMMENTS_KV.put j", "COMMENTS_KV.put k"]
    assert [c.label for c in p.choices.log if c.label == "node.call"] == ["node.call"] * 2


def test_kv_errors_reject_with_the_platform_message(tmp_path: Path) -> None:
    """A KV error is a rejected promise in JavaScript, with the simulator's message."""
    source = """
        export default {
          async fetch(request, env) {
            try {
              await env.COMMENTS_KV.put('k', 'v', { expirationTtl: 30 });
              return new Response('stored');
            } catch (err) {
              return new Response(`${err instanceof Error} ${err.message}`, { status: 400 });
            }
          },
        };
    """
    target = js_worker(module(tmp_path, source))()
    p = platform_for(target)
    r = get(p, target, "/")
    assert r.status == 400
    assert r.body.startswith("true KV PUT failed: 400 Invalid expiration_ttl of 30.")
    assert [str(e).split(".")[0] for e in p.invocations[0].kv_errors] == [
        "KV PUT failed: 400 Invalid expiration_ttl of 30"
    ]


def test_kv_put_options_list_and_metadata(tmp_path: Path) -> None:
    """put with metadata and expirationTtl, getWithMetadata, list with prefix/limit/cursor and
    delete reach the simulated KV with their arguments."""
    source = """
        export default {
          async fetch(request, env) {
            const kv = env.COMMENTS_KV;
            for (const k of ['a:1', 'a:2', 'a:3', 'b:1']) {
              await kv.put(k, k.toUpperCase(), { expirationTtl: 120, metadata: { k } });
            }
            const got = await kv.getWithMetadata('a:2');
            const names = [];
            let cursor;
            for (;;) {
              const page = await kv.list({ prefix: 'a:', limit: 2, cursor });
              names.push(...page.keys.map((k) => k.name));
              if (page.list_complete) break;
              cursor = page.cursor;
            }
            await kv.delete('a:1');
            const json = await kv.get('a:3', 'json').catch((e) => e.name);
            return Response.json({ got, names, gone: await kv.get('a:1'), json });
          },
        };
    """
    target = js_worker(module(tmp_path, source))()
    p = platform_for(target, kv=KvConfig.local())  # no 1 write/s limit for the delete
    body = get(p, target, "/").json_body()
    assert body["got"] == {"value": "A:2", "metadata": {"k": "a:2"}, "cacheStatus": None}
    assert body["names"] == ["a:1", "a:2", "a:3"]
    assert body["gone"] is None and body["json"] == "SyntaxError"


def test_kv_bulk_get_is_one_operation_giving_a_map(tmp_path: Path) -> None:
    """get([keys]) and getWithMetadata([keys]) read several keys in one call (one scheduling
    point, one operation counted), give a Map in the order asked, and reject what Miniflare
    rejects with KV GET_BULK errors."""
    source = """
        export default {
          async fetch(request, env) {
            const kv = env.COMMENTS_KV;
            await kv.put('a', '{"n":1}', { metadata: { m: 'a' } });
            await kv.put('b', 'plain');
            const text = await kv.get(['b', 'a', 'missing']);
            const json = await kv.get(['a', 'missing'], { type: 'json' });
            const meta = await kv.getWithMetadata(['a']);
            const errors = [];
            const many = Array.from({ length: 101 }, (_, i) => `k${i}`);
            const bad = [[[], 'text'], [many, 'text'], [['b'], 'json'], [['a'], 'arrayBuffer']];
            for (const [keys, type] of bad) {
              const settled = kv.get(keys, type).then(() => 'none', (e) => e.message);
              errors.push(await settled);
            }
            return Response.json({
              text: [...text.entries()], isMap: text instanceof Map, json: [...json.entries()],
              meta: [...meta.entries()], errors,
            });
          },
        };
    """
    target = js_worker(module(tmp_path, source))()
    p = platform_for(target, kv=KvConfig.local())
    body = get(p, target, "/").json_body()
    assert body["isMap"] is True
    assert body["text"] == [["b", "plain"], ["a", '{"n":1}'], ["missing", None]]
    assert body["json"] == [["a", {"n": 1}], ["missing", None]]
    assert body["meta"] == [["a", {"value": '{"n":1}', "metadata": {"m": "a"}}]]
    assert body["errors"] == [
        "KV GET_BULK failed: 400 You must request a minimum of 1 key",
        "KV GET_BULK failed: 400 You can request a maximum of 100 keys",
        "KV GET_BULK failed: 400 At least one of the requested keys corresponds to a non-json "
        "value",
        'KV GET_BULK failed: 400 "arrayBuffer" is not a valid type. Use "json" or "text"',
    ]
    (inv,) = p.invocations
    assert inv.kv_reads == 7 and inv.kv_writes == 2
    labels = [s.op for s in p.scheduler.trace]
    assert "COMMENTS_KV.get[] b, a, missing" in labels


def test_a_worker_that_throws_answers_500_and_is_logged(tmp_path: Path) -> None:
    """An uncaught exception is a 500 (error 1101) with the error and its line in the
    invocation's errors."""
    source = """
        export default {
          async fetch(request, env) {
            const cfg = null;
            return new Response(cfg.mode);
          },
        };
    """
    target = js_worker(module(tmp_path, source))()
    p = platform_for(target)
    r = get(p, target, "/")
    assert (r.status, r.body) == (500, "Worker threw exception (error 1101)")
    assert p.invocations[0].errors == [
        "uncaught JavaScriptError: TypeError: Cannot read properties of null (reading 'mode') "
        "(worker.mjs:5:29)"
    ]


def test_console_output_goes_with_the_request_that_wrote_it(tmp_path: Path) -> None:
    """console.log/warn/error lines are kept on the invocation of the request whose code wrote
    them (two concurrent requests do not mix), in order, at most MAX_LOGS each."""
    source = """
        export default {
          async fetch(request, env) {
            const name = new URL(request.url).pathname.slice(1);
            console.log('start', name, { n: 1 });
            await env.COMMENTS_KV.get(name);
            console.warn(`after read ${name}`);
            if (name === 'many') for (let i = 0; i < 60; i++) console.error(i);
            return new Response(name);
          },
        };
    """
    target = js_worker(module(tmp_path, source))()
    p = platform_for(target)
    tasks = [p.send(target, Request.make("GET", f"/{n}"), location="fra") for n in ("a", "b")]
    p.scheduler.run(until=lambda: all(t.finished for t in tasks))
    by_label = {inv.label: inv.logs for inv in p.invocations}
    assert by_label["GET /a@fra"] == ["console.log: start a { n: 1 }", "console.warn: after read a"]
    assert by_label["GET /b@fra"] == ["console.log: start b { n: 1 }", "console.warn: after read b"]
    get(p, target, "/many")
    assert len(p.invocations[-1].logs) == MAX_LOGS
    assert p.invocations[-1].logs[2:4] == ["console.error: 0", "console.error: 1"]


def test_a_durable_objects_console_lines_go_to_the_request_that_called_it(
    tmp_path: Path,
) -> None:
    """What a Durable Object logs while serving a request shows with that request's lines,
    marked with the object, in the order written."""
    source = """
        export class Queue {
          constructor(state) { this.storage = state.storage; }
          async fetch(request) {
            const n = ((await this.storage.get('n')) ?? 0) + 1;
            await this.storage.put('n', n);
            console.log('queued', n);
            return new Response(String(n));
          }
        }
        export default {
          async fetch(request, env) {
            console.log('worker before');
            const r = await env.QUEUE.get(env.QUEUE.idFromName('main')).fetch(request.url);
            console.log('worker after', await r.text());
            return new Response('ok');
          },
        };
    """
    target = js_worker(module(tmp_path, source), do_bindings=["QUEUE=Queue"])()
    p = platform_for(target)
    get(p, target, "/")
    (worker_inv,) = [inv for inv in p.invocations if inv.label == "GET /@fra"]
    assert worker_inv.logs == [
        "console.log: worker before",
        "QUEUE[main] console.log: queued 1",
        "console.log: worker after 1",
    ]


def test_each_test_case_gets_a_fresh_module_instance(tmp_path: Path) -> None:
    """Module-level state (of the worker and of the modules it imports) is shared by the
    requests of one test case and never carried into the next."""
    source = """
        import { bump } from './state.mjs';
        let local = 0;
        export default {
          async fetch() { local += 1; return Response.json([local, bump()]); },
        };
    """
    helper = "let n = 0; export function bump() { return ++n; }\n"
    path = module(tmp_path, source, state__mjs=helper)
    worker = js_worker(path)
    for _ in range(2):
        target = worker()
        p = platform_for(target)
        assert [get(p, target, "/").json_body() for _ in range(2)] == [[1, 1], [2, 2]]


def test_clock_and_randomness_are_the_worlds(tmp_path: Path) -> None:
    """Date and performance follow the virtual clock; Math.random and crypto come from a PRNG
    seeded by the choice node.seed, so the same choices give the same values."""
    source = """
        export default {
          async fetch() {
            const bytes = crypto.getRandomValues(new Uint8Array(4));
            return Response.json({
              now: Date.now(), date: new Date().getTime(), random: Math.random(),
              uuid: crypto.randomUUID(), bytes: [...bytes],
            });
          },
        };
    """
    worker = js_worker(module(tmp_path, source))

    def run(seed: int) -> dict[str, Any]:
        target = worker()
        p = platform_for(target, backend=ScriptedBackend({"node.seed": [seed]}))
        p.scheduler.advance(1234)
        out = get(p, target, "/").json_body()
        assert out["now"] == out["date"] == p.clock.now_ms
        return out

    assert run(7) == run(7)
    assert run(7)["random"] != run(8)["random"]
    assert run(7)["uuid"][14] == "4"


def test_no_network_no_filesystem_no_process(tmp_path: Path) -> None:
    """fetch rejects, the filesystem and process are out of reach, host timers are virtual."""
    source = """
        export default {
          async fetch() {
            const out = {};
            out.fetch = await fetch('https://example.com/').then(() => 'ok', (e) => e.message);
            out.fs = await import('node:fs').then(() => 'ok', (e) => e.message);
            try { process.exit(1); } catch (e) { out.process = e.message; }
            return Response.json(out);
          },
        };
    """
    path = module(tmp_path, source)
    target = js_worker(path)()
    p = platform_for(target)
    out = get(p, target, "/").json_body()
    assert out["fetch"].startswith("fetch(https://example.com/) refused: qmodel's Node lane gives")
    assert f"{path.as_uri()} imports 'node:fs': qmodel's Node lane gives a worker no" in out["fs"]
    assert out["process"].startswith("process is not available in qmodel's Node lane")


def test_wait_until_runs_after_the_response(tmp_path: Path) -> None:
    """Work passed to ctx.waitUntil is performed by a background task after the answer; a
    rejected waitUntil promise is logged in the invocation's errors."""
    source = """
        export default {
          async fetch(request, env, ctx) {
            ctx.waitUntil(env.COMMENTS_KV.put('archive', 'x'));
            ctx.waitUntil(Promise.reject(new Error('archive failed')));
            return new Response('answered');
          },
        };
    """
    target = js_worker(module(tmp_path, source))()
    p = platform_for(target)
    task = p.send(target, Request.make("GET", "/"), location="fra")
    p.run_until_done(task)
    assert task.result.body == "answered" and p.kv_store.snapshot().get("archive") is None
    p.scheduler.run()
    assert p.kv_store.snapshot().get("archive") == "x"
    [bg] = p.invocations[0].background
    assert bg.name == "GET /@fra/waitUntil" and bg.finished
    assert p.invocations[0].errors == [
        "wait_until task raised JavaScriptError: Error: archive failed (worker.mjs:5:34)"
    ]


def test_a_request_awaiting_another_waits_without_steps(tmp_path: Path) -> None:
    """A request waiting on a promise another request settles takes no steps while it waits,
    and answers once the other has run."""
    source = """
        let release;
        const gate = new Promise((r) => { release = r; });
        export default {
          async fetch(request, env) {
            if (new URL(request.url).pathname === '/wait') {
              const v = await gate;
              return new Response(`released by ${v}`);
            }
            await env.COMMENTS_KV.get('x');
            release('b');
            return new Response('released');
          },
        };
    """
    target = js_worker(module(tmp_path, source))()
    p = platform_for(target)
    waiting = p.send(target, Request.make("GET", "/wait"), location="fra")
    assert p.scheduler.runnable() == []  # blocked on its mailbox: nothing to step
    releaser = p.send(target, Request.make("GET", "/go"), location="iad")
    p.scheduler.step(releaser)  # performs the get; the releaser answers and resolves the gate
    assert releaser.finished and p.scheduler.runnable() == [waiting]
    assert p.run_until_done(waiting).body == "released by b"
    assert waiting.steps == 2


@pytest.mark.parametrize(
    "body",
    [
        "return new Promise(() => {});",
        "for (;;) await env.COMMENTS_KV.get('x');",
    ],
    ids=["awaits-nothing", "awaits-forever"],
)
def test_a_worker_that_never_answers_meets_the_step_limit(tmp_path: Path, body: str) -> None:
    """A request that can never answer is stopped by the step limit, not left hanging."""
    source = f"export default {{ async fetch(request, env) {{ {body} }} }};\n"
    target = js_worker(module(tmp_path, source))()
    p = platform_for(target, max_task_steps=30, kv=None)
    task = p.send(target, Request.make("GET", "/"), location="fra")
    p.scheduler.run(max_steps=1_000, until=lambda: task.finished)
    assert task.killed and isinstance(task.error, StepLimitExceeded)
    assert p.scheduler.overruns[0].steps == 30


def test_a_request_awaiting_nothing_is_stopped_after_two_minutes(tmp_path: Path) -> None:
    """A request with nothing of its own outstanding (no call, timer or Durable Object request)
    is stopped after HANG_POLLS polls, long before the step limit, with a reason that says so;
    one that keeps a timer going is not."""
    from qmodel.node.worker import HANG_POLL_MS, HANG_POLLS, HUNG

    source = """
        export default {
          async fetch(request) {
            if (new URL(request.url).pathname === '/timer') {
              await new Promise((resolve) => setTimeout(resolve, 200_000));
              return new Response('late');
            }
            return new Promise(() => {});
          },
        };
    """
    target = js_worker(module(tmp_path, source))()
    p = platform_for(target)
    start = p.clock.now_ms
    task = p.send(target, Request.make("GET", "/"), location="fra")
    p.scheduler.run(max_steps=1_000, until=lambda: task.finished)
    assert task.killed and isinstance(task.error, StepLimitExceeded)
    assert str(task.error) == HUNG and task.steps < 200
    assert p.clock.now_ms - start == HANG_POLLS * HANG_POLL_MS
    timer = p.send(target, Request.make("GET", "/timer"), location="fra")
    assert p.run_until_done(timer).body == "late"


def test_timers_follow_the_virtual_clock(tmp_path: Path) -> None:
    """setTimeout fires when virtual time reaches it; clearTimeout cancels."""
    source = """
        export default {
          async fetch() {
            const start = Date.now();
            const cancelled = setTimeout(() => { throw new Error('cancelled timer ran'); }, 10);
            clearTimeout(cancelled);
            await new Promise((r) => setTimeout(r, 1500));
            return new Response(String(Date.now() - start));
          },
        };
    """
    target = js_worker(module(tmp_path, source))()
    p = platform_for(target)
    assert get(p, target, "/").body == "1500"
    assert not any(level == "uncaught" for _, level, _ in target.logs)


DO_COUNTER = """
    export class Counter {
      constructor(state, env) { this.state = state; this.env = env; }
      async fetch(request) {
        const slow = new URL(request.url).pathname === '/slow';
        const n = (await this.state.storage.get('n')) ?? 0;
        if (slow) await this.env.COMMENTS_KV.get('anything');  // a KV await opens the gate
        await this.state.storage.put('n', n + 1);
        return new Response(String(n + 1));
      }
    }
    export default {
      async fetch(request, env) {
        const stub = env.COUNTER.get(env.COUNTER.idFromName('one'));
        const [a, b] = await Promise.all([stub.fetch(request.url), stub.fetch(request.url)]);
        return new Response(`${await a.text()} ${await b.text()}`);
      },
    };
"""


def test_durable_object_storage_with_its_input_gate(tmp_path: Path) -> None:
    """Two increments of a JavaScript Durable Object: atomic with only storage awaits (the
    input gate), torn when a KV await opens the gate and the schedule interleaves them."""
    worker = js_worker(module(tmp_path, DO_COUNTER), do_bindings=["COUNTER=Counter"])
    assert set(worker.durable_objects) == {"COUNTER"}
    # [0, 1]: the first object request starts, and once it awaits KV the second one starts.
    for path, schedule, expected in (
        ("/fast", [0, 1], "1 2"),
        ("/slow", [0, 1], "1 1"),
        ("/slow", [], "1 2"),
    ):
        target = worker()
        p = platform_for(target, backend=ScriptedBackend({"step": list(schedule)}))
        assert get(p, target, path).body == expected, (path, schedule)


#: The front of the storage tests' workers: every request goes to the object named 's'.
STORE_FRONT = """
    export default {
      async fetch(request, env) {
        return env.STORE.get(env.STORE.idFromName('s')).fetch(request.url);
      },
    };
"""


def test_durable_object_storage_list_options_and_delete_all(tmp_path: Path) -> None:
    """storage.list's start, startAfter, end, prefix, reverse and limit, and deleteAll(), reach
    the simulated storage; start with startAfter is refused."""
    source = """
        export class Store {
          constructor(state) { this.storage = state.storage; }
          async fetch() {
            await this.storage.put({ a: 1, b: 2, b1: 3, b2: 4, c: 5 });
            const keys = async (o) => [...(await this.storage.list(o)).keys()];
            const out = {
              range: await keys({ start: 'b', end: 'c' }),
              after: await keys({ startAfter: 'b1' }),
              last: await keys({ prefix: 'b', reverse: true, limit: 2 }),
              both: await this.storage.list({ start: 'a', startAfter: 'a' }).catch((e) => e.name),
            };
            await this.storage.deleteAll();
            out.left = (await this.storage.list()).size;
            return Response.json(out);
          }
        }
    """
    target = js_worker(module(tmp_path, source + STORE_FRONT), do_bindings=["STORE=Store"])()
    p = platform_for(target)
    assert get(p, target, "/").json_body() == {
        "range": ["b", "b1", "b2"],
        "after": ["b2", "c"],
        "last": ["b2", "b1"],
        "both": "TypeError",
        "left": 0,
    }


def test_durable_object_alarms(tmp_path: Path) -> None:
    """setAlarm/getAlarm/deleteAlarm reach the simulated storage, and the platform runs the
    JavaScript alarm() handler when the virtual clock reaches it, with retryCount and isRetry
    on a retry; setAlarm without an alarm() handler is refused."""
    source = """
        export class Timer {
          constructor(state) { this.storage = state.storage; }
          async fetch(request) {
            const path = new URL(request.url).pathname;
            if (path === '/set') {
              await this.storage.transaction((txn) => txn.setAlarm(new Date(Date.now() + 5000)));
            }
            if (path === '/fail') await this.storage.put('fail', 1);
            return Response.json({
              alarm: await this.storage.getAlarm(), log: (await this.storage.get('log')) ?? [],
            });
          }
          async alarm(info) {
            const log = (await this.storage.get('log')) ?? [];
            log.push([Date.now(), info.retryCount, info.isRetry]);
            await this.storage.put('log', log);
            if (await this.storage.get('fail')) {
              await this.storage.delete('fail');
              throw new Error('alarm handler failed once');
            }
          }
        }
        export class Plain {
          constructor(state) { this.storage = state.storage; }
          async fetch() {
            return this.storage.setAlarm(Date.now()).then(() => new Response('set'),
              (e) => new Response(e.message, { status: 500 }));
          }
        }
        export default {
          async fetch(request, env) {
            const ns = new URL(request.url).pathname === '/plain' ? env.PLAIN : env.TIMER;
            return ns.get(ns.idFromName('t')).fetch(request.url);
          },
        };
    """
    target = js_worker(module(tmp_path, source), do_bindings=["TIMER=Timer", "PLAIN=Plain"])()
    p = platform_for(target)
    t0 = p.clock.now_ms
    assert get(p, target, "/fail").json_body() == {"alarm": None, "log": []}
    assert get(p, target, "/set").json_body() == {"alarm": t0 + 5000, "log": []}
    sched = p.scheduler
    while sched.run() or sched.advance_to_next_wakeup():
        pass
    log = get(p, target, "/").json_body()["log"]
    assert log == [[t0 + 5000, 0, False], [t0 + 7000, 1, True]]
    refused = get(p, target, "/plain")
    assert refused.status == 500 and "must have an alarm() handler" in refused.body


def test_durable_object_transactions_commit_once_or_roll_back(tmp_path: Path) -> None:
    """storage.transaction(): the closure's reads see its own writes, which reach storage in
    one storage operation when it returns; txn.rollback() or a throw discards them."""
    source = """
        export class Store {
          constructor(state) { this.storage = state.storage; }
          async fetch() {
            const s = this.storage;
            await s.put({ a: 1, b: 2, c: 3 });
            const seen = await s.transaction(async (txn) => {
              await txn.put('b', 20);
              await txn.delete('c');
              await txn.put('d', 4);
              return {
                b: await txn.get('b'), c: await txn.get('c') ?? null,
                many: [...(await txn.get(['d', 'a', 'c'])).entries()],
                list: [...(await txn.list({ reverse: true, limit: 3 })).keys()],
                gone: await txn.delete('c'),
              };
            });
            const rolled = await s.transaction(async (txn) => {
              await txn.put('a', 100);
              txn.rollback();
              return txn.get('a').then(() => 'read', (e) => e.message);
            });
            const thrown = await s.transaction(async (txn) => {
              await txn.put('a', 200);
              throw new Error('abandoned');
            }).catch((e) => e.message);
            return Response.json({ seen, rolled, thrown, now: [...(await s.list()).entries()] });
          }
        }
    """
    target = js_worker(module(tmp_path, source + STORE_FRONT), do_bindings=["STORE=Store"])()
    p = platform_for(target)
    assert get(p, target, "/").json_body() == {
        "seen": {
            "b": 20,
            "c": None,
            "many": [["d", 4], ["a", 1]],
            "list": ["d", "b", "a"],
            "gone": False,
        },
        "rolled": "this transaction was rolled back or has ended",
        "thrown": "abandoned",
        "now": [["a", 1], ["b", 20], ["d", 4]],
    }
    commits = [s.op for s in p.scheduler.trace if ".storage.commit" in s.op]
    assert commits == ["STORE[s].storage.commit ['b', 'c', 'd']"]


def test_durable_ids_match_the_python_namespace(tmp_path: Path) -> None:
    """idFromName gives the id Python's namespace gives, so both name the same object."""
    source = """
        export class Q { async fetch() { return new Response('q'); } }
        export default {
          async fetch(request, env) {
            return new Response(env.QUEUE.idFromName('queue').toString());
          },
        };
    """
    target = js_worker(module(tmp_path, source), do_bindings=["QUEUE=Q"])()
    p = platform_for(target)
    hex_id = get(p, target, "/").body
    assert hex_id == p.namespaces["QUEUE"].id_from_name("queue").hex


def test_a_dead_node_process_is_reported_and_reaped(tmp_path: Path) -> None:
    """Node dying mid-run stops the run with NodeLaneAborted, and leaves no zombie."""
    target = js_worker(module(tmp_path, COUNTER))()
    p = platform_for(target)
    get(p, target, "/a")
    host = target._host
    assert host is not None and host.proc is not None
    proc = host.proc
    proc.kill()
    proc.wait()
    with pytest.raises(NodeLaneAborted, match="the Node process of the JavaScript lane exited"):
        get(p, target, "/b")
    assert host.proc is None and proc.returncode is not None
    # The next test case starts a fresh process.
    fresh = js_worker(module(tmp_path, COUNTER))()
    assert get(platform_for(fresh), fresh, "/c").json_body() == {"n": 1, "hits": 1}


def test_a_node_that_stops_answering_is_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker looping without awaiting makes Node stop answering: after the timeout the
    process is killed and the run stops with a message saying why."""
    source = "export default { async fetch() { for (;;) {} } };\n"
    target = js_worker(module(tmp_path, source))()
    p = platform_for(target)
    get_host = host_for(target.module.node, target.module.roots)
    monkeypatch.setattr(get_host, "timeout", 1.0)
    with pytest.raises(NodeLaneAborted, match="did not answer within 1 s"):
        get(p, target, "/")
    assert get_host.proc is None


# -- bindings and bad input ----------------------------------------------------------------------


def test_bindings_from_wrangler_configuration(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """kv_namespaces, durable_objects and vars come from wrangler.toml or wrangler.jsonc in the
    worker's directory or a parent; flags replace them."""
    sub = tmp_path / "src"
    sub.mkdir()
    worker = sub / "worker.mjs"
    worker.write_text("export default { fetch() {} };\n")
    (tmp_path / "wrangler.jsonc").write_text(
        '{\n  // the queue\n  "kv_namespaces": [{"binding": "MSGS", "id": "x"},],\n'
        '  "durable_objects": {"bindings": [{"name": "QUEUE", "class_name": "Queue"}]},\n'
        '  "vars": {"MODE": "test // not a comment"}\n}\n'
    )
    b = bindings_for(worker)
    assert (b.kv, dict(b.durable), dict(b.vars)) == (
        ("MSGS",),
        {"QUEUE": "Queue"},
        {"MODE": "test // not a comment"},
    )
    (sub / "wrangler.toml").write_text('kv_namespaces = [{ binding = "A" }, { binding = "B" }]\n')
    assert bindings_for(worker).kv == ("A", "B")
    b = bindings_for(worker, kv=["COMMENTS_KV"], durable=["Q=MessageQueue"])
    assert (b.kv, dict(b.durable)) == (("COMMENTS_KV",), {"Q": "MessageQueue"})
    assert bindings_for(tmp_path_factory.mktemp("plain") / "w.mjs").kv == ("COMMENTS_KV",)


def test_several_kv_bindings(tmp_path: Path) -> None:
    """The first KV binding is the world's namespace; a second is a namespace of its own."""
    source = """
        export default {
          async fetch(request, env) {
            await env.MAIN.put('k', 'main');
            await env.OTHER.put('k', 'other');
            return Response.json([await env.MAIN.get('k'), await env.OTHER.get('k')]);
          },
        };
    """
    target = js_worker(module(tmp_path, source), kv_bindings=["MAIN", "OTHER"])()
    p = platform_for(target, kv=None)
    assert get(p, target, "/").json_body() == ["main", "other"]
    assert p.kv_store.snapshot().get("k") == "main"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_syntax_error_names_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A module with a syntax error (here in a file it imports) exits 2 naming file and line."""
    path = module(
        tmp_path,
        "import { f } from './helper.mjs';\nexport default { fetch: f };\n",
        helper__mjs="export function f() {\n  return 1 +;\n}\n",
    )
    code, _, err = run_cli(capsys, "check", "--target", str(path))
    assert code == 2
    assert f"{tmp_path / 'helper.mjs'}, line 2: SyntaxError: Unexpected token ';'" in err


@pytest.mark.parametrize(
    ("source", "flags", "message"),
    [
        (
            "export const fetch = () => 1;\n",
            [],
            "has no default export with a fetch method (it "
            "exports: fetch); a Workers module ends with export default",
        ),
        (
            "export default { fetch() {} };\n",
            ["--do-binding", "QUEUE=MessageQueue"],
            "the Durable Object binding QUEUE names class MessageQueue, but",
        ),
        (
            "throw new Error('missing config');\nexport default {};\n",
            [],
            "raised Error: missing config (worker.mjs:1:7); fix the error so the module imports",
        ),
        (
            "import fs from 'node:fs';\nexport default { fetch() {} };\n",
            [],
            "imports 'node:fs': qmodel's Node lane gives a worker no filesystem",
        ),
    ],
    ids=["no-default-fetch", "missing-do-class", "throws-on-import", "imports-fs"],
)
def test_bad_modules_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], source: str, flags: list[str], message: str
) -> None:
    """A module that cannot be a worker exits 2 with what is wrong and what to do."""
    path = module(tmp_path, source)
    code, out, err = run_cli(capsys, "check", "--target", str(path), *flags)
    assert code == 2 and out == ""
    assert message in err


def test_missing_or_old_node_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No Node, or a Node older than 20.6, exits 2 saying which version to install and how."""
    path = module(tmp_path, COUNTER)
    monkeypatch.setenv("QMODEL_NODE", str(tmp_path / "no-node-here"))
    code, _, err = run_cli(capsys, "check", "--target", str(path))
    assert code == 2
    assert "JavaScript workers run under Node.js 20.6 or newer, and QMODEL_NODE=" in err
    assert "install Node.js 20 LTS or newer" in err
    old = tmp_path / "node18"
    old.write_text("#!/bin/sh\necho v18.19.0\n")
    old.chmod(0o755)
    monkeypatch.setenv("QMODEL_NODE", str(old))
    code, _, err = run_cli(capsys, "check", "--target", str(path))
    assert code == 2
    assert f"{old} is v18.19.0; install Node.js 20 LTS or newer" in err


def test_binding_flags_are_for_javascript_targets(capsys: pytest.CaptureFixture[str]) -> None:
    """--kv-binding on a Python target is a usage error (exit 2)."""
    code, _, err = run_cli(capsys, "check", "--target", "sound", "--kv-binding", "KV")
    assert code == 2
    assert "--kv-binding, --do-binding and --env set the bindings of a JavaScript" in err


def test_invalid_target_for_a_missing_file() -> None:
    """A .mjs path that does not exist is an InvalidTarget naming it."""
    with pytest.raises(InvalidTarget, match="target file nowhere/worker.mjs does not exist"):
        js_worker("nowhere/worker.mjs")


def test_node_is_killed_with_this_process(tmp_path: Path) -> None:
    """The Node process ends when the Python process that started it ends (no orphan)."""
    script = tmp_path / "run.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
            from qmodel.node import js_worker
            from qmodel.node.host import host_for
            w = js_worker({str(module(tmp_path, COUNTER))!r})
            print(host_for(w.module.node, w.module.roots).proc.pid, flush=True)
            """
        )
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    status = Path(f"/proc/{int(out.stdout.strip())}/status")
    # Gone (reaped as the script exited), or at worst a zombie waiting for init: not running.
    assert not status.exists() or "State:\tZ" in status.read_text()


def test_a_platform_without_the_workers_kv_binding_says_so(tmp_path: Path) -> None:
    """A world made without the worker's KV binding rejects its KV call with a TypeError that
    names the binding and the fix (the worker throws: a 500)."""
    source = """
        export default {
          async fetch(request, env) {
            try {
              await env.MAIN.get('k');
              return new Response('read');
            } catch (err) {
              return new Response(`${err.name}: ${err.message}`, { status: 500 });
            }
          },
        };
    """
    target = js_worker(module(tmp_path, source), kv_bindings=["MAIN"])()
    p = platform_for(target, kv_bindings=("COMMENTS_KV",))
    response = get(p, target, "/")
    assert response.status == 500
    assert response.body.startswith("TypeError: env.MAIN is not a KV namespace in this world")
    assert "kv_bindings=worker.kv_bindings" in response.body


def test_pacer_lets_node_spin_only_while_the_machine_is_quiet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pacer turns Node's spinning on after a quiet epoch, off after a busy one, and waits
    twice as many epochs before each new try while spinning keeps meeting a busy machine."""
    from qmodel.node import host

    switches = [0]
    monkeypatch.setattr(host, "_involuntary_switches", lambda: switches[0])
    pacer = host.Pacer()

    def epoch(new_switches: int) -> list[bool]:
        switches[0] += new_switches
        return [c for c in (pacer.answered() for _ in range(pacer.EPOCH)) if c is not None]

    assert epoch(0) == [True] and pacer.node_spins
    assert epoch(pacer.BUSY) == [] and pacer.node_spins  # at the threshold: still quiet
    assert epoch(pacer.BUSY + 1) == [False] and not pacer.node_spins
    assert epoch(0) == [True]  # waited 1 epoch
    assert epoch(500) == [False]
    assert epoch(0) == [] and epoch(0) == [True]  # waited 2 epochs
    assert epoch(500) == [False]
    assert [epoch(0) for _ in range(4)] == [[], [], [], [True]]  # waited 4
    assert epoch(500) == [False] and epoch(500) == [] and epoch(500) == []  # busy: no try
    monkeypatch.setattr(host, "_involuntary_switches", lambda: -1)
    assert [epoch(0) for _ in range(20)] == [[]] * 20  # unmeasurable: Node never spins


CLOUDFLARE_WORKERS = """
    import { DurableObject, WorkerEntrypoint, env } from "cloudflare:workers";

    export class Counter extends DurableObject {
      async fetch(request) {
        const n = ((await this.ctx.storage.get("n")) ?? 0) + 1;
        await this.ctx.storage.put("n", n);
        return Response.json({ n });
      }
    }

    export default class extends WorkerEntrypoint {
      async fetch(request) {
        const stub = this.env.COUNTER.get(this.env.COUNTER.idFromName("one"));
        const { n } = await (await stub.fetch(request)).json();
        await env.COMMENTS_KV.put(`seen:${n}`, "1");
        return Response.json({ n, same: env.COMMENTS_KV === this.env.COMMENTS_KV });
      }
    }
"""


def test_cloudflare_workers_classes_and_env(tmp_path: Path) -> None:
    """import from "cloudflare:workers": a class default export extending WorkerEntrypoint
    serves requests with this.env; a Durable Object class extending DurableObject keeps
    this.ctx.storage; the module's env is the instance's bindings."""
    target = js_worker(
        module(tmp_path, CLOUDFLARE_WORKERS),
        kv_bindings=["COMMENTS_KV"],
        do_bindings=["COUNTER=Counter"],
    )()
    p = platform_for(target)
    assert get(p, target, "/a").json_body() == {"n": 1, "same": True}
    assert get(p, target, "/b").json_body() == {"n": 2, "same": True}
    assert p.kv_store.snapshot().get("seen:2") == "1"


def test_another_cloudflare_module_is_refused_naming_it(tmp_path: Path) -> None:
    """cloudflare: modules other than cloudflare:workers are refused with their name."""
    source = """
        import { connect } from "cloudflare:sockets";
        export default { async fetch() { return new Response("x"); } };
    """
    with pytest.raises(InvalidTarget) as err:
        js_worker(module(tmp_path, source))
    assert "cloudflare:sockets is not simulated" in str(err.value)
