"""Benchmark: simulated KV operations and scheduler steps per second on one core.

A mixed workload on the queue-era design of seed 000 (``CommentsWorker(Fixes.seed_000())``),
shaped like the state machine's examples: many fresh worlds, each with rounds of concurrent
POSTs from frontends at several locations, pending polls, claims and completes from bots, all
interleaved by a seeded random schedule (every choice through the world's one choice source),
with the clock moving between rounds.

    python bench/bench_platform.py [--worlds N] [--rounds R] [--seed S] [--no-trace] [--repeat K]

Prints the figures; it asserts nothing (speed is measured here, not in tests). Rates are per
second of wall time, as before, and also per second of this process's CPU time, which other
work on a shared machine disturbs less. With ``--repeat K`` the workload runs K times and the
fastest run is reported (every run simulates exactly the same thing).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qmodel.sim import Platform, Request  # noqa: E402
from qmodel.workers import CommentsWorker, Fixes  # noqa: E402

LOCATIONS = ("fra", "iad", "sin", "gru")


def round_requests(workload: random.Random, now: int, r: int, known: list[str]) -> list[Request]:
    """Round ``r`` of the workload: 1-4 posts (their ids added to ``known``), a pending poll, a
    frontend poll, and two claim/complete pairs on messages posted so far."""
    batch = []
    for i in range(workload.randint(1, 4)):
        body = {
            "id": f"{now}-r{r}i{i}",
            "timestamp": now + workload.randint(0, 2),
            "text": f"message {r}.{i}",
            "message-type": "human",
        }
        known.append(body["id"])
        batch.append(Request.make("POST", "/api/comments", json_body=body))
    batch.append(Request.make("GET", "/api/queue/pending", query={"limit": 10}))
    batch.append(Request.make("GET", "/api/comments", query={"after": now - 5_000}))
    for _ in range(2):
        bot = {"messageId": workload.choice(known), "workerId": "b1"}
        batch.append(Request.make("POST", "/api/queue/claim", json_body=bot))
        batch.append(Request.make("POST", "/api/queue/complete", json_body=bot))
    return batch


def world(seed: int, rounds: int, record: bool) -> tuple[int, int, int, int, int, float]:
    """One simulated world, as one example of a machine run: ``rounds`` rounds of traffic."""
    target = CommentsWorker(Fixes.seed_000())
    platform = Platform.create(seed=seed, record=record, durable=target.durable_objects)
    workload = random.Random(seed)  # what to send; the schedule itself is the platform's
    sched = platform.scheduler
    known: list[str] = []
    requests = 0
    for r in range(rounds):
        tasks = round_requests(workload, platform.clock.now_ms, r, known)
        for req in tasks:
            platform.send(target, req, location=workload.choice(LOCATIONS))
        requests += len(tasks)
        sched.run(max_steps=1_000_000)
        sched.advance(workload.choice((50, 300, 1_200, 4_000, 65_000)))
    stats = platform.kv_stats()
    choices = len(platform.choices.log)
    return (requests, stats.operations, sched.steps, stats.rejected_429, choices, stats.cost_usd)


def run(worlds: int, rounds: int, seed: int, record: bool) -> dict[str, float]:
    totals = [0, 0, 0, 0, 0, 0.0]
    start, start_cpu = time.perf_counter(), time.process_time()
    for w in range(worlds):
        for i, v in enumerate(world(seed * 1_000_003 + w, rounds, record)):
            totals[i] += v
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - start_cpu
    requests, ops, steps, rejected, choices, cost = totals
    return {
        "worlds": worlds,
        "rounds": rounds,
        "requests": requests,
        "kv_ops": ops,
        "steps": steps,
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "kv_ops_per_s": ops / elapsed,
        "kv_ops_per_cpu_s": ops / cpu,
        "steps_per_s": steps / elapsed,
        "requests_per_s": requests / elapsed,
        "cost_usd": cost,
        "rejected_429": rejected,
        "choices": choices,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", type=int, default=400, help="fresh worlds (machine examples)")
    parser.add_argument("--rounds", type=int, default=20, help="rounds of traffic per world")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-trace", action="store_true", help="do not record step records")
    parser.add_argument("--repeat", type=int, default=1, help="runs; the fastest is reported")
    args = parser.parse_args()
    runs = [run(args.worlds, args.rounds, args.seed, not args.no_trace) for _ in range(args.repeat)]
    out = min(runs, key=lambda r: r["seconds"])
    print(
        f"workload: {out['worlds']} worlds x {out['rounds']} rounds, {out['requests']:,} "
        f"requests, seed {args.seed}, step records {'off' if args.no_trace else 'on'}"
    )
    print(f"simulated KV operations: {out['kv_ops']:,} ({out['rejected_429']:,} refused with 429)")
    print(f"scheduler steps:         {out['steps']:,}; choices recorded: {out['choices']:,}")
    if args.repeat > 1:
        walls = ", ".join(f"{r['seconds']:.2f}" for r in runs)
        print(f"runs:                    {args.repeat} (wall s: {walls}); the fastest below")
    print(f"wall time:               {out['seconds']:.2f} s (CPU {out['cpu_seconds']:.2f} s)")
    print(
        f"KV operations per second: {out['kv_ops_per_s']:,.0f} "
        f"({out['kv_ops_per_cpu_s']:,.0f} per CPU second)"
    )
    print(f"scheduler steps per second: {out['steps_per_s']:,.0f}")
    print(f"requests per second:     {out['requests_per_s']:,.0f}")
    print(f"simulated KV cost:       ${out['cost_usd']:.6f} at Cloudflare's prices")


if __name__ == "__main__":
    main()
