"""Running a recorded counterexample again: strictly (``qmodel replay``) or faithfully against
another target (the regression test).

A replay runs the machine's own checks in the order Hypothesis runs them (:func:`drive`): its
invariant (the safety invariants) once the machine is made and after each recorded verb,
stopping at the first violation; then its teardown (settle the world, check the safety and the
eventual invariants, as the machine decides), whose violation, if any, is the one reported.
Only the verbs and the choices come from the trace.

* :func:`replay_strict` replays the recorded choices with a
  :class:`~qmodel.sim.choices.RecordedBackend`: the run must ask for exactly the recorded
  choices and show exactly the recorded violation, step count and log, or
  :class:`ReplayMismatch` says which field differs.
* :func:`replay_faithful` replays the recorded choices while the run asks for the same ones
  (same label, same number of options), then decides every remaining choice with option 0
  (:class:`~qmodel.sim.choices.FirstOptionBackend`: the first runnable task, the fresh read,
  the full page). Against the recorded target it is the strict replay; against a fixed design
  it applies the same verbs with a schedule as close to the recorded one as the design allows.
* :func:`regression_check` is what a generated regression test calls.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from qmodel import __version__, protocols
from qmodel.check import Invariant, UnknownInvariant, Violation, select
from qmodel.driver import VERB_LABEL, Example, InvariantViolation
from qmodel.errors import InvalidTarget, QmodelError, TraceMismatch
from qmodel.protocol import Protocol
from qmodel.sim.choices import Backend, Choice, FirstOptionBackend, RecordedBackend
from qmodel.trace import (
    Expected,
    Search,
    Trace,
    TraceFileError,
    fingerprint,
    fingerprint_unrun,
    jsonable,
    load,
    runs_code,
)
from qmodel.world import World, WorldConfig

__all__ = [
    "FaithfulBackend",
    "Outcome",
    "ReplayMismatch",
    "drive",
    "expected_of",
    "regression_check",
    "replay_faithful",
    "retrace",
    "replay_strict",
    "trace_of",
    "world_config",
]


class ReplayMismatch(QmodelError, ValueError):
    """A strict replay did not reproduce the recorded run. ``field`` names what differs
    (``target``, ``design``, ``choices``, ``expected.invariant``, ``expected.log``, ...)."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


@attrs.define
class FaithfulBackend:
    """Replays ``recorded`` while each choice asked has the recorded label and option count;
    from the first one that does not, ``then`` decides (and keeps deciding), except for the
    verbs: they are the example's own story, so the recorded verbs and their arguments are
    answered in order to the end (where they still fit the choice asked).

    ``diverged_at`` is the position of that first differing choice (``None`` while faithful).
    """

    recorded: Sequence[Choice]
    then: Backend = attrs.field(factory=FirstOptionBackend)
    position: int = 0
    diverged_at: int | None = None
    diverged_on: str = ""
    _verbs: list[Choice] = attrs.field(init=False)
    _verbs_asked: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        self._verbs = [c for c in self.recorded if _is_verb(c.label)]

    def pick(self, label: str, n: int, weights: tuple[int, ...] | None) -> int:
        verb = _is_verb(label)
        if verb:
            self._verbs_asked += 1
        if self.diverged_at is None:
            if self.position < len(self.recorded):
                c = self.recorded[self.position]
                if c.label == label and c.n == n:
                    self.position += 1
                    return c.index
                self.diverged_on = (
                    f"the trace recorded {c.label!r} of {c.n} options, the run asked for "
                    f"{label!r} of {n}"
                )
            else:
                self.diverged_on = "the recorded choices ran out"
            self.diverged_at = self.position
        if verb and self._verbs_asked <= len(self._verbs):
            c = self._verbs[self._verbs_asked - 1]
            if c.label == label and c.index < n:
                return c.index
        return self.then.pick(label, n, weights)


def _is_verb(label: str) -> bool:
    return label == VERB_LABEL or label.startswith(VERB_LABEL + ".")


@attrs.define(eq=False)
class Outcome:
    """What a replay showed: the violation (or ``None``), where it was caught (``"start"``,
    ``"verb N"`` or ``"settled"``), and the world after the run.

    A safety violation caught after a verb is caught again when the settled world is checked
    (the history still holds it), and the machine reports that second catch; ``first_at`` is
    where the reported invariant broke first.
    """

    violation: Violation | None
    at: str | None
    world: World
    first_at: str | None = None


def world_config(raw: dict[str, Any]) -> WorldConfig:
    """The :class:`WorldConfig` a trace records; unknown or ill-typed fields raise
    :class:`TraceFileError` naming them."""
    known = {f.name: f for f in attrs.fields(WorldConfig)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise TraceFileError(
            f"field 'config' has {', '.join(repr(u) for u in unknown)}, which this qmodel's "
            f"world does not know (it knows {', '.join(known)}); the trace comes from another "
            "version of qmodel: replay it with that version, or record it again",
            field="config",
        )
    try:
        config = WorldConfig(**raw)
    except (TypeError, ValueError) as exc:
        raise TraceFileError(
            f"field 'config' is not a world configuration: {exc}", field="config"
        ) from None
    defaults = WorldConfig()
    for name, value in raw.items():
        if name == "skews_ms" and isinstance(value, tuple | list):
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise TraceFileError(
                    f"field 'config.skews_ms' is {value!r}; it should be a list of integers",
                    field="config.skews_ms",
                )
            continue
        default = getattr(defaults, name)
        if default is not None and value is not None and type(value) is not type(default):
            raise TraceFileError(
                f"field 'config.{name}' is {value!r}; it should be a {type(default).__name__}",
                field=f"config.{name}",
            )
    problems = config.problems()
    if problems:
        raise TraceFileError(
            f"field 'config': {'; '.join(problems)}; the file was edited: record it again",
            field="config",
        )
    return config


def drive(
    target: Any,
    protocol: Protocol,
    config: WorldConfig,
    backend: Backend,
    verbs: int,
    checked: Sequence[Invariant],
    *,
    world_type: type[World] = World,
    on_world: Callable[[World], None] | None = None,
    on_violation: Callable[[World, Violation, str], None] | None = None,
) -> Outcome:
    """Run an example of ``verbs`` steps against ``target`` as the machine runs one, every
    choice (the verbs' included) from ``backend``.

    The machine's own checks run, in the order Hypothesis runs them: the safety invariants once
    the example is made and after every step; the teardown at the end, also after a violation,
    and a violation the teardown raises replaces the earlier one.

    ``on_world`` is called with the fresh world before anything happens in it (a report switches
    its recorders on there); ``on_violation`` with the world at each violation, when it is
    raised.
    """
    example = Example.begin(target, protocol, config, backend, checked, world_type=world_type)
    world = example.world
    if on_world is not None:
        on_world(world)
    found: Violation | None = None
    at = "start"
    try:
        example.check_safety()
        for n in range(1, verbs + 1):
            at = f"verb {n}"
            example.step()
    except InvariantViolation as exc:
        found = exc.violation
        if on_violation is not None:
            on_violation(world, found, at)
    first = (found.invariant, at) if found is not None else None
    try:
        example.finish()
    except InvariantViolation as exc:
        found, at = exc.violation, "settled"
        if on_violation is not None:
            on_violation(world, found, at)
    if found is None:
        return Outcome(None, None, world)
    first_at = first[1] if first is not None and first[0] == found.invariant else at
    return Outcome(found, at, world, first_at)


def protocol_of(trace: Trace, *, confirmed: str | None = None) -> Protocol:
    """The protocol the trace was recorded with (:class:`TraceFileError` if unknown here).

    A protocol of the user's own (``package.module:NAME``) is code: it is loaded only when the
    user names it (``confirmed``), never on the word of a trace file.
    """
    name = str(trace.config.get("protocol", ""))
    if name not in protocols.BUILTIN and confirmed != name:
        raise TraceFileError(
            f"field 'config.protocol': the trace names the protocol {name!r}, which is code of "
            "your own that loading it would run; name it yourself to confirm: --protocol "
            f"{name}",
            field="config.protocol",
        )
    try:
        return protocols.get(name)
    except protocols.UnknownProtocol as err:
        raise TraceFileError(f"field 'config.protocol': {err}", field="config.protocol") from None


def _verbs_known(trace: Trace, protocol: Protocol) -> None:
    names = [v.name for v in protocol.verbs]
    for i, (verb, _arg) in enumerate(trace.verbs):
        if verb not in names:
            raise TraceFileError(
                f"field 'verbs': verbs[{i}] is {verb!r}, which protocol {protocol.name!r} does "
                f"not have (its verbs: {', '.join(names)})",
                field=f"verbs[{i}]",
            )


def _checked(trace: Trace, protocol: Protocol) -> tuple[Invariant, ...]:
    _verbs_known(trace, protocol)
    try:
        return select(protocol.invariants, list(trace.invariants), protocol=protocol.name)
    except UnknownInvariant as err:
        raise TraceFileError(
            f"field 'invariants': {err}; the trace comes from another version of qmodel",
            field="invariants",
        ) from None


def _resolve(spec: str, bindings: Mapping[str, Any] | None = None) -> Any:
    """The target ``spec``; a JavaScript target with the recorded ``bindings``."""
    from qmodel.node.bundle import runs_in_node
    from qmodel.targets import resolve

    if bindings is None or not runs_in_node(spec):
        return resolve(spec)
    return resolve(
        spec,
        kv_bindings=list(bindings["kv"]),
        do_bindings=[f"{name}={cls}" for name, cls in bindings["do"].items()],
        env=bindings.get("env"),
    )


def check_identity(trace: Trace, target: str | None = None) -> Any:
    """Make sure the trace's target is the one the user named and the recorded design, then
    resolve it; return the resolved target.

    Nothing of the target runs before that is known: a target whose code did not ship with
    qmodel is resolved only when the user names it (``target``), and a file target's
    fingerprint is compared from its files before it is imported. A different ``target`` than
    recorded, an unnamed code target, or a design that changed raises :class:`ReplayMismatch`
    naming the field."""
    if target is None and runs_code(trace.target):
        raise ReplayMismatch(
            f"field 'target': the trace names the target {trace.target}, whose code a replay "
            "runs; a trace file alone never makes qmodel run code. Name the target yourself to "
            f"confirm: qmodel replay TRACE.json --target {trace.target}",
            field="target",
        )
    if target is not None and target != trace.target:
        raise ReplayMismatch(
            f"field 'target': the trace was recorded against {trace.target}, not {target}; a "
            "replay runs the recorded target. To run this counterexample's verbs against "
            f"another worker, run its regression test with QMODEL_TARGET={target}",
            field="target",
        )
    before = fingerprint_unrun(trace.target, trace.bindings)
    if before is not None and before != trace.design:
        raise ReplayMismatch(
            f"field 'design': the trace was recorded against {trace.design}, but {trace.target} "
            f"is now {before}; nothing of it was run. Check the new design with qmodel check, "
            "or run the regression test to see whether the counterexample still breaks it",
            field="design",
        )
    try:
        resolved = _resolve(trace.target, trace.bindings)
    except InvalidTarget as err:
        raise ReplayMismatch(
            f"field 'target': the trace's target {trace.target} cannot be loaded here: {err}",
            field="target",
        ) from None
    now = fingerprint(trace.target, resolved.factory())
    if now != trace.design:
        raise ReplayMismatch(
            f"field 'design': the trace was recorded against {trace.design}, but {trace.target} "
            f"is now {now}; the recorded choices belong to the old design. Check the new one "
            "with qmodel check, or run the regression test to see whether the counterexample "
            "still breaks it",
            field="design",
        )
    return resolved


def replay_strict(
    trace: Trace,
    *,
    target: str | None = None,
    protocol: str | None = None,
    world_type: type[World] = World,
    on_world: Callable[[World], None] | None = None,
    on_violation: Callable[[World, Violation, str], None] | None = None,
    compare: bool = True,
) -> Outcome:
    """Replay ``trace`` exactly; with ``compare`` (the default) anything that differs from the
    recorded run raises :class:`ReplayMismatch` (or :class:`TraceFileError` for a field this
    qmodel cannot use).

    ``target`` and ``protocol`` are what the user named: a trace's own target or protocol that
    is code of the user's is run only when named (see :func:`check_identity` and
    :func:`protocol_of`); everything else of the trace is checked first."""
    proto = protocol_of(trace, confirmed=protocol)
    config = world_config(dict(trace.config))
    checked = _checked(trace, proto)
    resolved = check_identity(trace, target)
    backend = RecordedBackend(trace.choices)
    try:
        outcome = drive(
            resolved.factory(),
            proto,
            config,
            backend,
            len(trace.verbs),
            checked,
            world_type=world_type,
            on_world=on_world,
            on_violation=on_violation,
        )
    except TraceMismatch as err:
        raise ReplayMismatch(
            f"field 'choices': the replay diverged from the trace: {err}", field="choices"
        ) from None
    if compare:
        _compare(trace, outcome)
    return outcome


def _compare(trace: Trace, outcome: Outcome) -> None:
    exp = trace.expected
    v = outcome.violation
    if v is None:
        raise ReplayMismatch(
            f"field 'expected.invariant': the replay broke no invariant, but the trace records "
            f"{exp.invariant} (at {exp.at}); qmodel's invariants or simulator changed since it "
            "was recorded: record it again",
            field="expected.invariant",
        )
    got = expected_of(outcome.world, v, outcome.at or "")
    for name in ("invariant", "at", "summary", "message_ids"):
        if getattr(got, name) != getattr(exp, name):
            raise ReplayMismatch(
                f"field 'expected.{name}': the trace records {getattr(exp, name)!r}, the replay "
                f"gave {getattr(got, name)!r}",
                field=f"expected.{name}",
            )
    if got.log != exp.log:
        i = next(
            (i for i, (a, b) in enumerate(zip(got.log, exp.log, strict=False)) if a != b),
            min(len(got.log), len(exp.log)),
        )
        recorded = exp.log[i] if i < len(exp.log) else "(the end)"
        replayed = got.log[i] if i < len(got.log) else "(the end)"
        raise ReplayMismatch(
            f"field 'expected.log': step {i + 1} differs: the trace records {recorded!r}, the "
            f"replay gave {replayed!r} ({len(exp.log)} recorded steps, {len(got.log)} replayed)",
            field="expected.log",
        )
    if got.steps != exp.steps:
        raise ReplayMismatch(
            f"field 'expected.steps': the trace records {exp.steps} steps but {len(exp.log)} log "
            "lines; the file was edited",
            field="expected.steps",
        )
    if tuple(outcome.world.verbs) != tuple(trace.verbs):
        raise ReplayMismatch(
            f"field 'verbs': the trace records {len(trace.verbs)} verbs "
            f"({_verbs_text(trace.verbs)}), the replay applied {len(outcome.world.verbs)} "
            f"({_verbs_text(outcome.world.verbs)})",
            field="verbs",
        )
    made = tuple(outcome.world.platform.choices.log)
    if made != tuple(trace.choices):
        i = next(
            (i for i, (a, b) in enumerate(zip(made, trace.choices, strict=False)) if a != b),
            min(len(made), len(trace.choices)),
        )
        raise ReplayMismatch(
            f"field 'choices': choice #{i} differs (the trace records {len(trace.choices)} "
            f"choices, the replay made {len(made)})",
            field="choices",
        )


def _verbs_text(verbs: Sequence[tuple[str, int]]) -> str:
    shown = ", ".join(f"{v} {a}" for v, a in verbs[:5])
    return shown + (", ..." if len(verbs) > 5 else "")


def expected_of(world: World, violation: Violation, at: str) -> Expected:
    """The :class:`Expected` record of a run that broke ``violation`` (caught at ``at``)."""
    return Expected(
        invariant=violation.invariant,
        summary=violation.summary,
        message_ids=tuple(violation.message_ids),
        exchanges=tuple(violation.exchanges),
        values=jsonable(dict(violation.values)),
        at=at,
        steps=len(world.log),
        log=tuple(world.log),
    )


def trace_of(
    world: World,
    violation: Violation,
    *,
    target: str,
    checked: Sequence[Invariant],
    search: Search | None = None,
) -> Trace:
    """The trace of a failing world a machine ran (its verbs, its choices, its log).

    Where the violation was caught is not known from the world alone (the machine's teardown
    settles it in any case), so the trace is replayed once to find it; a replay that does not
    reproduce the machine's run raises :class:`ReplayMismatch` (a determinism bug to report).
    """
    draft = _record(world, violation, "", target, tuple(i.id for i in checked), search)
    outcome = replay_strict(draft, target=target, protocol=world.config.protocol, compare=False)
    if outcome.at is None:
        raise ReplayMismatch(
            "the counterexample did not break any invariant when replayed; the run is not "
            "deterministic (a target that reads wall time or global random?)",
            field="expected.invariant",
        )
    final = attrs.evolve(draft, expected=attrs.evolve(draft.expected, at=outcome.at))
    _compare(final, outcome)
    return final


def _record(
    world: World,
    violation: Violation,
    at: str,
    target: str,
    checked: tuple[str, ...],
    search: Search | None,
) -> Trace:
    config = {f.name: getattr(world.config, f.name) for f in attrs.fields(WorldConfig)}
    return Trace(
        target=target,
        design=fingerprint(target, world.target),
        config=config,
        invariants=checked,
        verbs=tuple(world.verbs),
        choices=tuple(world.platform.choices.log),
        expected=expected_of(world, violation, at),
        search=search or Search(),
        qmodel=__version__,
        hypothesis=_hypothesis_version(),
        bindings=_js_bindings(world.target),
    )


def _js_bindings(instance: Any) -> dict[str, Any] | None:
    """The bindings of a JavaScript worker instance (see :attr:`Trace.bindings`)."""
    from qmodel.node.worker import NodeWorker

    if not isinstance(instance, NodeWorker):
        return None
    b = instance.module.bindings
    out: dict[str, Any] = {"kv": tuple(b.kv), "do": dict(b.durable)}
    if b.env is not None:
        out["env"] = b.env
    return out


def retrace(trace: Trace, outcome: Outcome) -> Trace:
    """The trace of a replayed run, with ``trace``'s target, invariants and search: for an exact
    replay, the same trace (the same bytes)."""
    if outcome.violation is None or outcome.at is None:
        raise ReplayMismatch("the replay broke no invariant", field="expected.invariant")
    return _record(
        outcome.world, outcome.violation, outcome.at, trace.target, trace.invariants, trace.search
    )


def replay_faithful(trace: Trace, target: str | None = None) -> tuple[Outcome, FaithfulBackend]:
    """Apply the trace's verbs to ``target`` (default: the recorded one) with the recorded
    choices while they still apply (see :class:`FaithfulBackend`); check the recorded
    invariants as the machine does."""
    # A regression test is the user's own file: the trace it names is theirs to trust.
    proto = protocol_of(trace, confirmed=str(trace.config.get("protocol", "")))
    config = world_config(dict(trace.config))
    checked = _checked(trace, proto)
    spec = target or trace.target
    resolved = _resolve(spec, trace.bindings if spec == trace.target else None)
    backend = FaithfulBackend(trace.choices)
    outcome = drive(resolved.factory(), proto, config, backend, len(trace.verbs), checked)
    return outcome, backend


class RegressionFailure(AssertionError):
    """The counterexample still breaks an invariant of the target."""


def regression_check(trace_path: str | Path, target: str | None = None) -> Outcome:
    """Replay the trace at ``trace_path`` against ``target`` (default: the recorded target)
    faithfully, and raise :class:`RegressionFailure` with the violation if any invariant the
    trace checked is broken. Returns the outcome when none is."""
    trace = load(trace_path)
    outcome, backend = replay_faithful(trace, target)
    spec = target or trace.target
    if outcome.violation is not None:
        v = outcome.violation
        how = (
            "the recorded schedule, exactly"
            if backend.diverged_at is None
            else f"the recorded schedule up to choice #{backend.diverged_at}, then the first "
            f"option of every choice ({backend.diverged_on})"
        )
        raise RegressionFailure(
            f"{spec} still breaks {v.invariant} (caught at {outcome.at}) on the counterexample "
            f"of {Path(trace_path).name}, replayed with {how}:\n  {v.render()}"
        )
    return outcome


def _hypothesis_version() -> str:
    """The installed Hypothesis's version, read from its metadata (a replay or an exploration
    imports no Hypothesis)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hypothesis")
    except PackageNotFoundError:
        return ""
