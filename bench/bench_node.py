"""Benchmark: KV operations per second through the Node lane, beside the Python lane.

The same mixed workload as ``bench_platform.py`` (fresh worlds, each with rounds of concurrent
POSTs, pending polls, claims and completes at several locations, interleaved by a seeded random
schedule), run twice in this process: against the Python design of seed 000
(``CommentsWorker(Fixes.seed_000())``) and against its JavaScript port
``examples/workers/seed-000-queue.mjs`` running in Node, where every KV call is a round trip
between Python's scheduler and Node. Both runs simulate the same requests on the same platform;
the figures are wall-clock rates of this machine.

    python bench/bench_node.py [--worlds N] [--rounds R] [--seed S] [--repeat K] [--profile]

Prints the figures; it asserts nothing (speed is measured here, not in tests). ``--profile``
prints where the Node lane's Python time goes. Beside the wall-clock rates it prints the CPU
time spent (for the Node lane, this process's and Node's together). On a quiet machine the two
processes spin while they wait for each other (``qmodel.node.host.Pacer``), so there the Node
lane's CPU time counts the spinning too; the wall-clock rate is the figure to compare.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qmodel.node import js_worker  # noqa: E402
from qmodel.node.host import host_for  # noqa: E402
from qmodel.sim import Platform, Request  # noqa: E402
from qmodel.workers import CommentsWorker, Fixes  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_platform import round_requests  # noqa: E402  (the same workload as the Python bench)

LOCATIONS = ("fra", "iad", "sin", "gru")
#: The node binary the Node lane runs and the worker's folders, which name its Node process
#: (set by main once the design is checked).
js_worker_node: tuple[str, tuple[str, ...]] = ("", ())
JS_DESIGN = ROOT / "examples" / "workers" / "seed-000-queue.mjs"


def world(target: Any, seed: int, rounds: int) -> tuple[int, int, int]:
    """One simulated world: ``rounds`` rounds of traffic; (requests, KV operations, steps)."""
    platform = Platform.create(seed=seed, durable=getattr(target, "durable_objects", None))
    workload = random.Random(seed)  # what to send; the schedule itself is the platform's
    sched = platform.scheduler
    known: list[str] = []
    requests = 0
    for r in range(rounds):
        batch = round_requests(workload, platform.clock.now_ms, r, known)
        # Sent from a task, as the actors send them (a JavaScript worker starts inside a step).
        sched.spawn(lambda b=batch: _send_all(platform, target, b, workload), "client")
        requests += len(batch)
        sched.run(max_steps=1_000_000)
        sched.advance(workload.choice((50, 300, 1_200, 4_000, 65_000)))
    return requests, platform.kv_stats().operations, sched.steps


async def _send_all(platform: Platform, target: Any, batch: list[Request], workload: Any) -> None:
    for req in batch:
        platform.send(target, req, location=workload.choice(LOCATIONS))


def _python_design() -> CommentsWorker:
    return CommentsWorker(Fixes.seed_000())


def _node_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) the Node process has used (Linux; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(make: Callable[[], Any], worlds: int, rounds: int, seed: int) -> dict[str, float]:
    requests = ops = steps = 0
    host = host_for(*js_worker_node)
    pid = host.proc.pid if host.proc is not None else None
    node0, cpu0, start = _node_cpu(pid), time.process_time(), time.perf_counter()
    for w in range(worlds):
        r, o, s = world(make(), seed * 1_000_003 + w, rounds)
        requests, ops, steps = requests + r, ops + o, steps + s
    elapsed = time.perf_counter() - start
    if host.proc is None or host.proc.pid != pid:
        pid = None  # restarted: its CPU time is not comparable
    cpu = time.process_time() - cpu0 + (_node_cpu(pid) - node0 if pid is not None else 0.0)
    return {
        "requests": requests,
        "kv_ops": ops,
        "steps": steps,
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "kv_ops_per_s": ops / elapsed,
        "kv_ops_per_cpu_s": ops / cpu,
        "requests_per_s": requests / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", type=int, default=100, help="fresh worlds (machine examples)")
    parser.add_argument("--rounds", type=int, default=20, help="rounds of traffic per world")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each lane; fastest shown")
    parser.add_argument("--profile", action="store_true", help="profile the Node lane's run")
    args = parser.parse_args()
    global js_worker_node
    js = js_worker(JS_DESIGN)
    js_worker_node = (js.module.node, js.module.roots)
    node = host_for(*js_worker_node)
    lanes: list[tuple[str, Callable[[], Any]]] = [
        ("Python lane (CommentsWorker(Fixes.seed_000()))", _python_design),
        (f"Node lane ({JS_DESIGN.relative_to(ROOT)})", js),
    ]
    print(f"workload: {args.worlds} worlds x {args.rounds} rounds, seed {args.seed}")
    results = {}
    for name, make in lanes:
        if args.profile and make is js:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.enable()
            runs = [run(make, args.worlds, args.rounds, args.seed) for _ in range(args.repeat)]
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(15)
        else:
            runs = [run(make, args.worlds, args.rounds, args.seed) for _ in range(args.repeat)]
        out = results[name] = min(runs, key=lambda r: r["seconds"])
        print(
            f"{name}:\n"
            f"  {out['requests']:,} requests, {out['kv_ops']:,} KV operations, "
            f"{out['steps']:,} steps in {out['seconds']:.2f} s\n"
            f"  KV operations per second: {out['kv_ops_per_s']:,.0f}   "
            f"requests per second: {out['requests_per_s']:,.0f}\n"
            f"  CPU {out['cpu_seconds']:.2f} s (this process, and Node's for the Node lane): "
            f"{out['kv_ops_per_cpu_s']:,.0f} KV operations per CPU second"
        )
    py, nd = (results[name] for name, _ in lanes)
    print(
        f"Node lane / Python lane: {nd['kv_ops_per_s'] / py['kv_ops_per_s']:.2f} of the KV "
        f"operation rate (Node {node.node}, {node.generation} process(es) started)"
    )


if __name__ == "__main__":
    main()
