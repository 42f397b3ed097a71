"""Benchmark: the exhaustive explorer on every catalog race, beside ``qmodel check``'s shrunk
counterexample.

For each race: ``qmodel explore`` in the scope listed below (end-to-end wall time of the
command, states, states per second, the counterexample's length in KV operations before the
settle, and those of the requests the violation cites), then ``qmodel check --target
catalog:ID --profile ci --json --report DIR`` (its defaults: production KV, every invariant, so
the invariant it reports may differ from the explorer's): the bug of the explorer's invariant
when check found it, else check's first, with its KV operations as Hypothesis shrunk it and as
qmodel.minimise left it (both from ``violations`` in ``--json``: up to where the bug is caught,
through the settle when caught there), and the minimised trace replayed up to its last verb to
count its KV operations as the explorer does (before the settle).

    python bench/bench_explore.py [--ids ID,ID] [--max-seconds S] [--no-check] [--like-for-like]

With ``--like-for-like`` check runs in the explorer's KV mode (``--kv``) and checks the
explorer's invariant only, so both engines judge the same semantics.

Prints one row per race; asserts nothing (speed is measured here, not in tests). A race the
explorer cannot reach in its scope (or in ``--max-seconds``) says so in its row: ``unknown``
(a bound was hit) or ``ok`` (the scope holds no violation). A burst (``--bursts``) lands whole
in the explorer's scope.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qmodel import protocols  # noqa: E402
from qmodel.check import select  # noqa: E402
from qmodel.driver import Example, InvariantViolation  # noqa: E402
from qmodel.replay import world_config  # noqa: E402
from qmodel.sim.choices import RecordedBackend  # noqa: E402
from qmodel.targets import resolve  # noqa: E402
from qmodel.trace import load  # noqa: E402

#: Each race's invariant and the scope the explorer searches for it (flags of qmodel explore).
SCOPES: dict[str, tuple[str, list[str]]] = {
    "TS_KEY_404": (
        "addressable",
        ["--posts", "1", "--options", "frontend.clock_straddle=3", "--horizon-ms", "1000"],
    ),
    "LIST_FIRST_PAGE_404": (
        "addressable",
        ["--posts", "1", "--kv", "strict", "--horizon-ms", "1000"],
    ),
    "CACHE_LOST_UPDATE": ("cache-coherent", ["--bots", "0", "--kv", "local"]),
    "STATUS_WRITE_CLOBBERS_CACHE": (
        "cache-coherent",
        ["--posts", "2", "--landed", "1", "--kv", "local"],
    ),
    "GHOST_PENDING": (
        "cache-coherent",
        ["--posts", "1", "--kv", "strict", "--horizon-ms", "3000"],
    ),
    "CLAIM_NOT_ATOMIC": (
        "single-claim",
        ["--bots", "2", "--posts", "1", "--landed", "1", "--kv", "local"],
    ),
    "CRASH_AFTER_REPLY": (
        "pending-visible",
        ["--posts", "1", "--crashes", "1", "--horizon-ms", "1000", "--kv", "local"],
    ),
    "CACHE_TRIM_DROPS_PENDING": (
        "pending-visible",
        ["--posts", "1", "--bursts", "1", "--kv", "local"],
    ),
    "STALE_CACHE_RMW": ("cache-coherent", ["--bots", "0", "--kv", "strict"]),
    "POLL_MISSES_MESSAGE": (
        "poll-delivery",
        [
            "--bots",
            "0",
            "--frontends",
            "2",
            "--posts",
            "1",
            "--bursts",
            "1",
            "--options",
            "frontend.clock_straddle=3",
            "--kv",
            "local",
        ],
    ),
    # The jobs protocol: the work verb is enqueue; --bots are its consumers.
    "JOBS_LEASE_RACE": ("single-lease", ["--bots", "2", "--posts", "1", "--landed", "1"]),
    "JOBS_STALE_LIST": ("single-lease", ["--bots", "2", "--posts", "1", "--landed", "1"]),
    # The first consumer works 45 s (its fourth work time) on a lease of 30 s.
    "JOBS_NO_FENCING": (
        "stale-ack",
        ["--bots", "2", "--posts", "1", "--landed", "1", "--horizon-ms", "46000"]
        + ["--options", "consumer.work_ms=@4"],
    ),
    # The clock moves a second (the second tick) while the first attempt waits: the
    # producer's one-second timeout fires and its retry races the first attempt.
    "JOBS_IDEMPOTENCY_STALE": (
        "no-double-work",
        ["--bots", "1", "--posts", "1", "--advances", "1", "--horizon-ms", "8000"]
        + ["--options", "verb.advance=@2", "--options", "producer.timeout_ms=@1"]
        + ["--options", "consumer.work_ms=@1", "--options", "consumer.outcome=@1"],
    ),
    # Cloudflare Queues: leases of 30 s run out within the horizon.
    "QUEUES_REPLY_NOT_IDEMPOTENT": (
        "one-reply",
        ["--posts", "1", "--bots", "1", "--horizon-ms", "31000"],
    ),
    "QUEUES_ACK_BEFORE_REPLY": (
        "pending-visible",
        # A generation that fails after the ack (the bot's second outcome) loses the message.
        ["--posts", "1", "--bots", "1", "--horizon-ms", "3000", "--options", "bot.generate=2"],
    ),
    "QUEUES_PUSH_REPLY_NOT_IDEMPOTENT": (
        "one-reply",
        ["--posts", "1", "--bots", "0", "--horizon-ms", "6000", "--depth", "400"],
    ),
}


def qmodel(*argv: str) -> tuple[dict[str, Any], float]:
    """Run the command line in a fresh process; its JSON object and the wall seconds."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "qmodel.cli", *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    seconds = time.perf_counter() - started
    try:
        return json.loads(done.stdout.strip().splitlines()[-1]), seconds
    except (IndexError, ValueError):
        return {"verdict": "error", "error": {"message": done.stderr[-300:]}}, seconds


def story_kv_ops(trace_path: str) -> int:
    """The KV operations of a trace's verbs (before its settle), as the explorer counts."""
    trace = load(trace_path)
    target = resolve(trace.target)
    config = world_config(dict(trace.config))
    proto = protocols.get(config.protocol)
    checked = select(proto.invariants, list(trace.invariants), protocol=proto.name)
    example = Example.begin(
        target.factory(), proto, config, RecordedBackend(trace.choices), checked
    )
    try:
        example.check_safety()
        for _ in trace.verbs:
            example.step()
    except InvariantViolation:
        pass
    return example.world.platform.kv_stats().operations


def main() -> None:
    """Print one row per catalog race."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ids", help="comma-separated catalog ids (default: every race)")
    p.add_argument("--max-seconds", type=float, default=30.0, help="per exploration")
    p.add_argument("--no-check", action="store_true", help="skip qmodel check (slow)")
    p.add_argument(
        "--like-for-like",
        action="store_true",
        help="run check in the explorer's KV mode and with its invariant only",
    )
    args = p.parse_args()
    ids = args.ids.split(",") if args.ids else list(SCOPES)
    print(f"load: {Path('/proc/loadavg').read_text().strip()}")
    if args.like_for_like:
        print("like for like: check runs with each scope's --kv and invariant only.")
    print(
        "Unless --like-for-like, KV semantics differ: check runs its default, production KV "
        "(strict) in a world of 2 frontends and 2 bots; each explorer scope names its own "
        "(--kv, --bots, --frontends below), mostly local KV and fewer actors. shrunk and "
        "minim.: check's KV operations up to where the bug is caught (through the settle when"
        " caught there), as Hypothesis shrunk it and as qmodel.minimise left it; before: the "
        "minimised run's before the settle, counted as the explorer counts; ratio = before / "
        "explorer; all = minim. / the explorer's through the settle when caught there."
    )
    header = (
        f"{'race':28} {'explore':>8} {'verdict':>9} {'states':>7} {'st/s':>6} {'kv_ops':>6} "
        f"{'cited':>5} | {'check':>7} {'verdict':>9} {'invariant':>15} {'shrunk':>6} "
        f"{'minim.':>6} {'before':>6} {'ratio':>5} {'all':>5}"
    )
    print(header)
    print("-" * len(header))
    for cid in ids:
        invariant, flags = SCOPES[cid]
        target = ["--target", f"catalog:{cid}"]
        ex, ex_s = qmodel(
            "explore",
            *target,
            "--invariant",
            invariant,
            *flags,
            "--max-seconds",
            str(args.max_seconds),
            "--json",
        )
        row = (
            f"{cid:28} {ex_s:7.2f}s {ex.get('verdict', '?'):>9} {ex.get('states') or 0:>7} "
            f"{ex.get('states_per_second') or 0:>6} {_n(ex.get('kv_ops')):>6} "
            f"{_n(ex.get('cited_kv_ops')):>5}"
        )
        if args.no_check:
            print(row, flush=True)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            alike: list[str] = []
            if args.like_for_like:
                kv = flags[flags.index("--kv") + 1] if "--kv" in flags else "local"
                alike = ["--kv", kv, "--invariant", invariant]
            ck, ck_s = qmodel(
                "check", *target, *alike, "--profile", "ci", "--json", "--report", tmp
            )
            found = ck.get("violations") or []
            # The same bug as the explorer's when check found it too, else check's first.
            same = [v for v in found if v["invariant"] == (ex.get("invariant") or invariant)]
            pick = (same or found or [{}])[0]
            before = None
            if (pick.get("report") or {}).get("trace"):
                before = story_kv_ops(pick["report"]["trace"])
        inv = pick.get("invariant") or "-"
        shrunk, least = _n(pick.get("shrunk_kv_ops")), _n(pick.get("minimised_kv_ops"))
        ratio = whole = "-"
        if before is not None and ex.get("kv_ops"):
            ratio = f"{before / ex['kv_ops']:.1f}"
        if pick.get("minimised_kv_ops") is not None and ex.get("kv_ops"):
            # Both up to where the bug is caught, through the settle when caught there.
            whole = f"{pick['minimised_kv_ops'] / (ex['kv_ops'] + ex['settle_kv_ops']):.1f}"
        print(
            f"{row} | {ck_s:6.1f}s {ck.get('verdict', '?'):>9} {inv:>15} {shrunk:>6} "
            f"{least:>6} {_n(before):>6} {ratio:>5} {whole:>5}",
            flush=True,
        )


def _n(value: Any) -> str:
    return "-" if value is None else str(value)


if __name__ == "__main__":
    main()
