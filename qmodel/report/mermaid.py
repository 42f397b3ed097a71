"""The counterexample as a Mermaid ``sequenceDiagram`` (GitHub renders it as pasted).

Participants are the actors (Frontend-1, Bot-1, ...), one worker per edge location the requests
arrived at (Worker@sin), a Durable Object when the design has one, and KV. Events come in the
order they happened: a request arrow when it reaches the worker, each KV operation with what it
read or wrote (and a note when it was surprising: a stale read, a cached miss, a 429, a short
list page), the answer (or a crossed arrow for a request that never answered), and the machine's
verbs as notes. Another app's bursts are one note; once the world settles only the exchanges
that wrote KV, failed, or are cited by the violation are drawn.
"""

from __future__ import annotations

from collections.abc import Callable

from qmodel.report.detail import Detail, KvOp

__all__ = ["diagram", "escape"]

#: Past this many lines the diagram stops with a note (the table has everything).
MAX_LINES = 400
#: Notes and messages are cut to this many characters.
MAX_TEXT = 110


def escape(text: str) -> str:
    """``text`` made safe for a Mermaid message or note: the characters that end a statement
    or start markup become entity codes (``#59;`` for ``;``), as Mermaid documents."""
    return " ".join(text.translate(_ENTITIES).split())


#: One pass over the text: ``#`` must not be escaped again inside the codes themselves.
_ENTITIES = str.maketrans(
    {"#": "#35;", ";": "#59;", "<": "#lt;", ">": "#gt;", '"': "#quot;", "%": "#37;"}
)


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def actor_label(name: str) -> str:
    """``frontend-1`` -> ``Frontend-1``; another app -> ``Other app``; the probes -> ``Probe``."""
    if name.startswith("other-app"):
        return "Other app"
    if name == "probe":
        return "Probe"
    return name[:1].upper() + name[1:]


def worker_label(location: str, do_location: str) -> str:
    if location == do_location:
        return "Durable Object"
    if location.startswith("probe"):
        return "Worker@probe"
    return f"Worker@{location}"


def diagram(detail: Detail, alias: Callable[[str], str]) -> str:
    """The Mermaid source (without the Markdown fence)."""
    world = detail.world
    do_location = world.platform.do_location
    history = world.history.exchanges
    iid_seq = {iid: seq for seq, iid in detail.exchange_iid.items() if iid}
    settle_at = next(
        (i for i, line in enumerate(world.log) if " settle: traffic stops" in line), len(world.log)
    )
    cited = set(detail.violation.exchanges)
    seq_line = {seq: i for i, seq in detail.log_exchange.items()}

    def shown(seq: int) -> bool:
        ex = history[seq - 1]
        if ex.actor.startswith("other-app"):
            return False
        if seq in cited or seq_line.get(seq, 0) < settle_at:
            return True
        return bool(ex.kv_writes or ex.kv_deletes or not ex.ok or ex.errors)

    participants: dict[str, str] = {}
    order: list[str] = []

    def pid(label: str) -> str:
        if label not in participants:
            participants[label] = f"P{len(participants) + 1}"
            order.append(label)
        return participants[label]

    # Declare in a readable order: actors, then workers as they appear, then KV.
    for group in world.actors.values():
        for actor in group:
            pid(actor_label(actor.name))
    kv = pid("KV")
    first = participants[order[0]]
    everyone = f"{first},{kv}"
    body: list[str] = []
    requested: set[int] = set()
    left_out = 0

    def request(seq: int) -> None:
        if seq in requested:
            return
        requested.add(seq)
        ex = history[seq - 1]
        a, w = pid(actor_label(ex.actor)), pid(worker_label(ex.location, do_location))
        target = f" {ex.message_id}" if ex.message_id and ex.message_id not in ex.path else ""
        body.append(f"    {a}->>{w}: {_text(alias(f'{ex.method} {ex.path}{target}'))}")

    for kind, item in detail.events:
        if len(body) >= MAX_LINES:
            break
        if kind == "kv":
            op: KvOp = item
            seq = iid_seq.get(op.iid)
            if seq is not None and not shown(seq):
                continue
            if seq is not None:
                request(seq)
                w = pid(worker_label(history[seq - 1].location, do_location))
            else:
                w = pid(worker_label(op.location, do_location))
            body.append(f"    {w}->>{kv}: {_text(alias(op.describe()))}")
            for note in op.notes:
                body.append(f"    Note over {w},{kv}: {_text(alias(note))}")
            continue
        index: int = item
        line = world.log[index]
        seq = detail.log_exchange.get(index)
        if seq is None:
            body.append(_verb_note(line, pid, everyone, alias))
            continue
        if not shown(seq):
            if not history[seq - 1].actor.startswith("other-app"):
                left_out += 1
            continue
        request(seq)
        ex = history[seq - 1]
        a, w = pid(actor_label(ex.actor)), pid(worker_label(ex.location, do_location))
        if ex.status is None:
            why = "; ".join(ex.errors) or "no answer"
            body.append(f"    {w}--x{a}: {_text(alias(why))}")
        else:
            body.append(f"    {w}-->>{a}: {_text(f'{ex.status} {ex.counters()}')}")
        if seq in cited:
            body.append(f"    Note over {a}: {_text('cited by the violation')}")
    if len(body) >= MAX_LINES:
        body.append(f"    Note over {everyone}: {_text('cut here: the table has the rest')}")
    if left_out:
        text = f"{left_out} settled polls that wrote nothing are left out (see the table)"
        body.append(f"    Note over {everyone}: {_text(text)}")
    v = detail.violation
    text = alias(f"VIOLATION {v.invariant}: {v.summary}")
    body.append(f"    Note over {everyone}: {_text(text)}")
    head = ["sequenceDiagram"]
    # KV last, whatever order things appeared in.
    labels = [lab for lab in order if lab != "KV"] + (["KV"] if "KV" in participants else [])
    for label in labels:
        head.append(f"    participant {participants[label]} as {escape(label)}")
    return "\n".join(head + body) + "\n"


def _text(text: str) -> str:
    return escape(_cut(text))


def _verb_note(
    line: str, pid: Callable[[str], str], everyone: str, alias: Callable[[str], str]
) -> str:
    text = line.split(" ", 1)[1] if line.startswith("t=") and " " in line else line
    who = text.split(" ", 1)[0]
    if who.startswith(("frontend-", "bot-")):
        return f"    Note over {pid(actor_label(who))}: {_text(alias(text))}"
    if text.startswith("burst of"):
        p = pid("Other app")
        return f"    Note over {p}: {_text(text + ' (another app, its requests left out)')}"
    return f"    Note over {everyone}: {_text(alias(text))}"
