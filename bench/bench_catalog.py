"""Benchmark: how reliably and how fast the machine finds each catalog bug by itself.

For every catalog id of any protocol (and the sound designs), or the ids given, runs ``qmodel
check --target catalog:ID --profile ci --seed S`` for seeds 0..N-1, with no scripted schedule,
and prints per id: the detection rate (a violation of one of the id's own invariants), the
median wall seconds (search and shrinking), the median examples run before the first
violation, and the median length of the shrunk run.

    python bench/bench_catalog.py [--seeds N] [--jobs J] [--ids ID ...] [--profile ci]
    python bench/bench_catalog.py --protocol jobs      # the ids of one protocol

A sound design (an entry with no invariants) is reported as clean seeds, not detections.

Prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def one(job: tuple[str, int, str]) -> tuple[str, int, dict]:
    cid, seed, profile = job
    from qmodel.cli import check_args, run_check

    target = "sound" if cid == "sound" else f"catalog:{cid}"
    from qmodel.catalog import entry

    e = entry(cid)
    args = check_args(
        ["--target", target, "--protocol", e.protocol, "--profile", profile, "--seed", str(seed)]
    )
    r = run_check(args)
    return (
        cid,
        seed,
        {
            "verdict": r["verdict"],
            "invariant": r["invariant"],
            "own": r["invariant"] in e.invariants,
            "seconds": r["seconds"],
            "first": r["first_violation_at"],
            "examples": r["examples"],
            "steps": r["steps"],
        },
    )


def main() -> None:
    from qmodel.catalog import CATALOG

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--profile", default="ci")
    p.add_argument("--ids", nargs="*", default=None, help="catalog ids (default: all)")
    p.add_argument("--protocol", default=None, help="only the catalog ids of this protocol")
    args = p.parse_args()
    if args.ids is None:
        args.ids = [i for i, e in CATALOG.items() if args.protocol in (None, e.protocol)]
    jobs = [(cid, s, args.profile) for cid in args.ids for s in range(args.seeds)]
    results: dict[str, list[dict]] = {cid: [] for cid in args.ids}
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for cid, seed, r in pool.map(one, jobs):
            results[cid].append(r)
            print(
                f"  {cid} seed {seed}: {r['verdict']} {r['invariant'] or ''} "
                f"{r['seconds']:.1f}s first@{r['first']} shrunk={r['steps']}",
                flush=True,
            )
    print()
    print(
        "| id | detected (own invariant) | median s | median examples to first "
        "| median shrunk steps | invariants seen |"
    )
    print("|---|---|---|---|---|---|")
    for cid in args.ids:
        rs = results[cid]
        if not CATALOG[cid].invariants:
            clean = sum(r["verdict"] == "ok" for r in rs)
            print(
                f"| {cid} | {clean}/{len(rs)} clean "
                f"| {statistics.median(r['seconds'] for r in rs):.1f} "
                f"| - | - | {sorted({r['invariant'] for r in rs if r['invariant']})} |"
            )
            continue
        hit = [r for r in rs if r["own"]]
        firsts = [r["first"] for r in hit if r["first"] is not None]
        print(
            f"| {cid} | {len(hit)}/{len(rs)} | {statistics.median(r['seconds'] for r in rs):.1f} | "
            f"{statistics.median(firsts) if firsts else '-'} | "
            f"{statistics.median(r['steps'] for r in hit) if hit else '-'} | "
            f"{sorted({r['invariant'] for r in rs if r['invariant']})} |"
        )


if __name__ == "__main__":
    main()
