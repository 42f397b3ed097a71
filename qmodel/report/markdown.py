"""The bug report as Markdown, ready to paste into an issue.

Sections: the title (the invariant and the one-line summary naming the message ids); what
was run and how it was found; what broke; the messages and their short names; the steps as a
table (virtual time, actor, location, request, answer, the KV operations with the values read
and written, the per-request counters as the seeds logged them, and notes on what made a step
surprising); the state when the violation was caught (KV, the design's cache, the spec side by
side); the sequence diagram; and the commands that replay it.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from typing import Any

from qmodel.history import Exchange
from qmodel.report.detail import Detail, message_ids, summarize
from qmodel.report.mermaid import diagram

__all__ = ["Paths", "render"]


class Paths:
    """Where the report's files are, as the reader should type them."""

    def __init__(self, trace: str, test: str) -> None:
        self.trace = trace
        self.test = test


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>")


def _ms(ms: int) -> str:
    return f"+{ms / 1000:.3f} s"


def _aliaser(detail: Detail) -> tuple[Callable[[str], str], list[tuple[str, str]]]:
    ids = message_ids(detail)
    names = [(mid, f"m{i}") for i, mid in enumerate(ids, 1)]
    if not names:
        return (lambda s: s), []
    pattern = re.compile(
        "|".join(re.escape(mid) for mid, _ in sorted(names, key=lambda n: -len(n[0])))
    )
    table = dict(names)

    def alias(text: str) -> str:
        return pattern.sub(lambda m: table[m.group(0)], text)

    return alias, names


def _step_notes(detail: Detail, ex: Exchange, *, logs: bool = True) -> list[str]:
    notes: list[str] = []
    if ex.status is None:
        notes.append("killed before it answered: " + ("; ".join(ex.errors) or "no answer"))
    else:
        notes += list(ex.errors)
    for err in ex.kv_errors:
        if "429" not in err:
            notes.append(f"KV error raised into the worker: {err}")
    body = ex.body if isinstance(ex.body, dict) else {}
    mid, ts = body.get("id"), body.get("timestamp")
    if isinstance(mid, str) and isinstance(ts, int) and mid.split("-", 1)[0].isdigit():
        id_ms = int(mid.split("-", 1)[0])
        if id_ms != ts:
            notes.append(
                f"the client's timestamp {ts} is {ts - id_ms:+d} ms from the time in its id "
                f"({id_ms}): two clock reads"
            )
    for op in detail.ops_of(ex.seq):
        notes += list(op.notes)
    if logs:
        shown = ex.logs[:MAX_LOG_NOTES]
        notes += [f"`{line}`" for line in shown]
        if len(ex.logs) > len(shown):
            notes.append(f"… {len(ex.logs) - len(shown)} more console lines")
    if ex.seq in detail.violation.exchanges:
        notes.append("**cited by the violation**")
    return notes


#: Console lines of the worker shown per step.
MAX_LOG_NOTES = 5
#: Fewer repeated polls than this in a row stay rows of their own.
MIN_FOLD = 3


def _steps_table(detail: Detail, alias: Callable[[str], str]) -> list[str]:
    """The steps, a row per log line, except for two kinds of runs of rows folded into one: an
    app's burst of posts (less the steps the violation cites, which keep their rows), and,
    once the settle began, polls that repeat what their actor was already told (same request,
    same answer, nothing written, nothing to note)."""
    world = detail.world
    out = [
        "| step | time | actor | location | request | answer | KV operations | counters | notes |",
        "|---:|---|---|---|---|---|---|---|---|",
    ]
    #: (step, time, cells, group): rows of one group in a row are folded.
    rows: list[tuple[int, int, list[str], str | None]] = []
    settling = False
    told: dict[tuple[str, str], Any] = {}
    for i, line in enumerate(world.log):
        seq = detail.log_exchange.get(i)
        t = int(line.split(" ", 1)[0][2:]) if line.startswith("t=") else detail.start_ms
        if seq is None:
            settling = settling or " settle: traffic stops" in line
            text = line.split(" ", 1)[1] if " " in line else line
            rows.append((i + 1, t, ["", "", f"*{_cell(alias(text))}*", "", "", "", ""], None))
            continue
        ex = detail.exchange(seq)
        ops = detail.ops_of(seq)
        request = f"{ex.method} {ex.path}"
        if ex.message_id and ex.message_id not in ex.path:
            request += f" {ex.message_id}"
        answer = "no answer" if ex.status is None else str(ex.status)
        kv = "<br>".join(f"`{_cell(alias(op.describe()))}`" for op in ops)
        step_notes = _step_notes(detail, ex)
        notes = "<br>".join(_cell(alias(n)) for n in step_notes)
        # A burst folds into one row, but never over a step the violation cites.
        cited = seq in detail.violation.exchanges
        group = "burst" if ex.actor.startswith("other-app") and not cited else None
        heard = (ex.actor, request)
        if (
            group is None
            and settling
            and ex.method == "GET"
            and ex.ok
            and not (ex.kv_writes or ex.kv_deletes or _step_notes(detail, ex, logs=False))
            and heard in told
            and told[heard] == (ex.status, ex.answer, ex.logs)
        ):
            group = "repeat"
        told[heard] = (ex.status, ex.answer, ex.logs)
        cells = [
            ex.actor,
            ex.location,
            f"`{_cell(alias(request))}`",
            answer,
            kv,
            f"`{ex.counters()}`",
            notes,
        ]
        rows.append((i + 1, t, cells, group))
    k = 0
    while k < len(rows):
        step, t, cells, group = rows[k]
        j = k
        while group is not None and j + 1 < len(rows) and rows[j + 1][3] == group:
            j += 1
        if group == "repeat" and j - k + 1 < MIN_FOLD:
            j = k
        if j == k:
            out.append(f"| {step} | {_ms(t - detail.start_ms)} | " + " | ".join(cells) + " |")
        elif group == "burst":
            statuses = sorted({r[2][3] for r in rows[k : j + 1]})
            out.append(
                f"| {step}–{rows[j][0]} | {_ms(t - detail.start_ms)} | {cells[0]} | {cells[1]} | "
                f"`POST /api/comments` ×{j - k + 1} | {', '.join(statuses)} | | | another app's "
                "messages (one row for the burst) |"
            )
        else:
            actors = ", ".join(dict.fromkeys(r[2][0] for r in rows[k : j + 1]))
            statuses = sorted({r[2][3] for r in rows[k : j + 1]})
            out.append(
                f"| {step}–{rows[j][0]} | {_ms(t - detail.start_ms)} … "
                f"{_ms(rows[j][1] - detail.start_ms)} | {actors} | | {j - k + 1} polls | "
                f"{', '.join(statuses)} | | | each the same request and answer as that actor's "
                "last: nothing new, nothing written (folded) |"
            )
        k = j + 1
    return out


def _state(detail: Detail, alias: Callable[[str], str], names: list[tuple[str, str]]) -> list[str]:
    snap = detail.snapshot
    if snap is None:
        return ["(no state was captured)"]
    out: list[str] = []
    stored: dict[str, tuple[str, Any]] = {}
    caches: dict[str, list[Any]] = {}
    for key, value in snap.kv.items():
        try:
            parsed = json.loads(value)
        except ValueError:
            continue
        if isinstance(parsed, dict) and isinstance(parsed.get("id"), str):
            stored[parsed["id"]] = (key, parsed)
        elif isinstance(parsed, list) and parsed and all(isinstance(m, dict) for m in parsed):
            caches[key] = parsed
    spec = snap.spec
    describe = detail.world.protocol.describe

    def expects(mid: str) -> str | None:
        return describe(spec, mid) if describe is not None else None

    when = _ms(snap.now_ms - detail.start_ms)
    out.append(f"When the violation was caught ({when}), for each message:")
    out.append("")
    cache_names = list(caches)
    head = "| message | stored in KV |" + "".join(f" in `{_cell(c)}` |" for c in cache_names)
    head += " spec expects |"
    out.append(head)
    out.append("|---|---|" + "---|" * len(cache_names) + "---|")
    header = len(out)
    for mid, short in names:
        if (
            mid not in stored
            and expects(mid) is None
            and not any(m.get("id") == mid for c in caches.values() for m in c)
        ):
            continue
        if mid in stored:
            key, msg = stored[mid]
            kv = f"`{_cell(alias(key))}`: {_cell(alias(summarize(json.dumps(msg))))}"
        else:
            kv = "**absent**"
        cells = [f"{short}", kv]
        for c in cache_names:
            found = [m for m in caches[c] if m.get("id") == mid]
            if not found:
                cells.append("**absent**")
            else:
                text = ", ".join(alias(summarize(json.dumps(m))) for m in found)
                cells.append(_cell(text) + (f" (**×{len(found)}**)" if len(found) > 1 else ""))
        cells.append(_cell(alias(expects(mid) or "not acknowledged (no promise)")))
        out.append("| " + " | ".join(cells) + " |")
    if len(out) == header:  # nothing but another app's messages, which the violation cites not
        out[header - 4 :] = [
            f"When the violation was caught ({when}), no message of the actors was in play, "
            "and the violation cites none of another app's."
        ]
    others = [k for k in snap.kv if not any(k == s[0] for s in stored.values()) and k not in caches]
    out.append("")
    out.append(
        f"KV holds {len(snap.kv)} key{'s' if len(snap.kv) != 1 else ''}"
        + (
            f"; besides the messages and caches: {', '.join(f'`{alias(k)}`' for k in others[:10])}"
            if others
            else "."
        )
    )
    return out


def _where(at: str, total: int) -> str:
    if at == "settled":
        return "once the world was settled (traffic stopped, staleness windows passed, a fair run)"
    if at == "start":
        return "before the first step"
    return f"right after {at} of {total} (a safety invariant, checked after every verb)"


def render(detail: Detail, paths: Paths) -> str:
    """The report for ``detail`` (from :func:`~qmodel.report.detail.collect`)."""
    trace = detail.trace
    v = detail.violation
    inv = detail.outcome.world.protocol.invariant(v.invariant)
    alias, names = _aliaser(detail)
    cfg = trace.config
    caught = detail.outcome.first_at or trace.expected.at
    lines = [f"# {v.render()}", ""]
    search = trace.search
    found = ""
    if search.examples:
        found = f" after {search.examples} examples"
    lines += [
        f"- **Target:** `{trace.target}`, design `{trace.design}`",
        f"- **World:** protocol `{cfg.get('protocol')}`, {_actors(detail)}, {cfg.get('kv')} KV",
        f"- **Invariant:** `{inv.id}` ({inv.kind}): {inv.doc}",
        f"- **Caught:** {_where(caught, len(trace.verbs))}",
        f"- **Found by:** `{_search_command(trace)}`{found}; {_how_short(trace)} "
        f"{trace.expected.steps} steps ({len(trace.verbs)} verbs, {len(trace.choices)} choices)",
        f"- **Seed:** {search.seed if search.seed is not None else 'n/a'}"
        + (f" (profile {search.profile})" if search.profile else ""),
        "",
        "## What broke",
        "",
        f"> {_cell(v.summary)}",
        "",
    ]
    for key, value in v.values.items():
        lines.append(f"- `{key}`: {_cell(alias(str(_plain(value))))}")
    if v.exchanges:
        steps = [str(i + 1) for i, seq in sorted(detail.log_exchange.items()) if seq in v.exchanges]
        lines.append(f"- cited steps: {', '.join(steps)}")
    lines.append("")
    posted = _posters(detail)
    if names:
        lines += ["## Messages", "", "| name | id | posted by |", "|---|---|---|"]
        burst = [short for mid, short in names if _bystander(mid, posted, v)]
        for mid, short in names:
            if not _bystander(mid, posted, v):
                lines.append(f"| {short} | `{mid}` | {posted.get(mid, '')} |")
        if burst:
            lines.append(
                f"| {burst[0]} … {burst[-1]} | {len(burst)} messages | another app's bursts |"
            )
        lines.append("")
    lines += [
        "## Steps",
        "",
        "Times are virtual, from the start of the run. A step is a line of the run's log: a "
        "verb of the machine, or a request with its answer (listed when it answered). KV "
        "operations show the value read or written; the counters are the request's, as the "
        "seeds' logs print them.",
        "",
    ]
    lines += _steps_table(detail, alias)
    lines += ["", "## State when it broke", ""]
    lines += _state(detail, alias, [n for n in names if not _bystander(n[0], posted, v)])
    lines += [
        "",
        "## Sequence diagram",
        "",
        "```mermaid",
        diagram(detail, alias).rstrip(),
        "```",
        "",
    ]
    trace_path, test_path = shlex.quote(paths.trace), shlex.quote(paths.test)
    named = _named(trace)
    lines += [
        "## Reproduce",
        "",
        "```sh",
        f"qmodel replay {trace_path}{named}    # this run, exactly: exit 1 with the same violation",
        f"pytest {test_path}    # the regression test: fails while the bug is there",
        f"QMODEL_TARGET=path/to/fixed_worker.py pytest {test_path}    # the same, against a fix",
        f"{_search_command(trace)}    # the search that found it",
        "```",
        "",
        f"Generated by qmodel {trace.qmodel} from `{paths.trace}`.",
        "",
    ]
    return "\n".join(lines)


def _plain(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return ", ".join(str(_plain(v)) for v in value) or "(none)"
    return value


def _bystander(mid: str, posted: dict[str, str], v: Any) -> bool:
    """A message of another app's burst that the violation does not cite."""
    return posted.get(mid, "").startswith("other-app") and mid not in v.message_ids


def _posters(detail: Detail) -> dict[str, str]:
    """Who made each unit of work: the actor of the request of the protocol's work verb (the
    first of its happy path: the chat's post, the jobs' enqueue) that names it."""
    out: dict[str, str] = {}
    work = detail.world.protocol.work_verb
    for ex in detail.world.history:
        if ex.kind == work and ex.method == "POST":
            body = ex.body if isinstance(ex.body, dict) else {}
            mid = body.get("id") or (ex.answer.get("id") if isinstance(ex.answer, dict) else None)
            if isinstance(mid, str):
                out.setdefault(mid, ex.actor)
    return out


def _how_short(trace: Any) -> str:
    """``shrunk to``, or for a minimised trace what Hypothesis's shrunk run was."""
    search = trace.search
    if search.minimised_steps is None or search.shrunk_kv_ops == search.minimised_kv_ops:
        return "shrunk to"
    return (
        f"shrunk to {search.shrunk_steps} steps and {search.shrunk_kv_ops} KV operations, "
        f"then minimised to {search.minimised_kv_ops} KV operations and"
    )


def _search_command(trace: Any) -> str:
    if trace.search.command:
        return str(trace.search.command)
    cmd = ["qmodel", "check", "--target", trace.target]
    cfg = trace.config
    if cfg.get("protocol"):
        cmd += ["--protocol", str(cfg["protocol"])]
    if cfg.get("bots") != 2:
        cmd += ["--bots", str(cfg.get("bots"))]
    if cfg.get("frontends") != 2:
        cmd += ["--frontends", str(cfg.get("frontends"))]
    if cfg.get("kv") != "strict":
        cmd += ["--kv", str(cfg.get("kv"))]
    if tuple(trace.invariants) != _all_ids(trace):
        for i in trace.invariants:
            cmd += ["--invariant", i]
    s = trace.search
    if s.profile:
        cmd += ["--profile", s.profile]
    if s.max_examples:
        cmd += ["--max-examples", str(s.max_examples)]
    if s.seed is not None:
        cmd += ["--seed", str(s.seed)]
    return " ".join(shlex.quote(c) for c in cmd)


def _actors(detail: Detail) -> str:
    """``2 frontends, 1 bot``: each group of the protocol's actors with its size (a group's name
    is plural; one member is told in the singular), and whether nobody does the work."""
    world = detail.world
    told = [
        f"1 {name.removesuffix('s')}" if len(members) == 1 else f"{len(members)} {name}"
        for name, members in world.actors.items()
    ]
    if world.protocol.workers(world.config) == 0:
        told.append("nobody doing the work (the invariants about it are not judged)")
    return ", ".join(told) or "no actors"


def _named(trace: Any) -> str:
    """The ``--target``/``--protocol`` a replay needs: those whose code did not ship with
    qmodel run only when the user names them."""
    from qmodel.protocols import BUILTIN
    from qmodel.trace import runs_code

    out = ""
    if runs_code(trace.target):
        out += f" --target {shlex.quote(trace.target)}"
    protocol = str(trace.config.get("protocol", ""))
    if protocol not in BUILTIN:
        out += f" --protocol {shlex.quote(protocol)}"
    return out


def _all_ids(trace: Any) -> tuple[str, ...]:
    """Every invariant id of the trace's protocol (a report's command names a selection only)."""
    from qmodel.replay import protocol_of

    protocol = protocol_of(trace, confirmed=str(trace.config.get("protocol", "")))
    return tuple(i.id for i in protocol.invariants)
