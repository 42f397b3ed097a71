"""The trace file: everything needed to run a counterexample again, exactly.

A trace names the target and fingerprints its design, gives the world's configuration and the
invariants that were checked, and records every choice of the run in the order it was made (the
example's verbs, labelled ``verb`` and ``verb.NAME``, among the platform's decisions), the
verbs again as a readable list, and what the run showed (the violation, its step count and the
log lines). It is JSON,
written canonically (same run, same bytes) with one verb and one choice per line, so a trace
kept in a repository diffs readably.

    {
      "format": "qmodel-trace",
      "version": 2,
      "qmodel": "0.1.0",
      "hypothesis": "6.170.27",
      "target": "catalog:CLAIM_NOT_ATOMIC",
      "design": "CommentsWorker(atomic_claim=False)",
      "config": {"protocol": "queue", "bots": 2, ...},
      "invariants": ["ack-durable", ...],
      "search": {"profile": "ci", "seed": 0, "max_examples": null, "examples": 580},
      "expected": {"invariant": "single-claim", "summary": ..., "at": "verb 7", "steps": 35,
                   "log": [...], ...},
      "verbs": [["post", 0], ...],
      "choices": [["step", 3, 1], ...]
    }

:func:`load` refuses anything else with a :class:`TraceFileError` naming the field and saying
what to do; :func:`fingerprint` says what a target is now, so a replay can tell a changed
design from a changed qmodel.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from qmodel.errors import QmodelError
from qmodel.sim.choices import Choice

__all__ = [
    "FORMAT",
    "VERSION",
    "Expected",
    "Search",
    "Trace",
    "TraceFileError",
    "fingerprint",
    "fingerprint_unrun",
    "runs_code",
    "load",
    "loads",
]

FORMAT = "qmodel-trace"
#: The version of the trace format this qmodel reads and writes.
VERSION = 2
#: The largest trace file read (bytes): a shrunk counterexample is kilobytes; a settle-heavy
#: one a few megabytes.
MAX_BYTES = 64 * 1024 * 1024

#: The targets that name a design shipped with qmodel (fingerprinted by the design's repr).
_BUILTIN_PREFIXES = ("catalog:",)
_BUILTIN_NAMES = ("sound", "seed-000")


class TraceFileError(QmodelError, ValueError):
    """A trace file that cannot be used: unreadable, not JSON, a field missing or of the wrong
    kind, another format version, or (at replay) another target or design than recorded.

    ``field`` names the field at fault (``""`` for the file as a whole).
    """

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field


@attrs.frozen(kw_only=True)
class Expected:
    """What the recorded run showed: the violation, where it was caught, and the run's log."""

    invariant: str
    summary: str
    message_ids: tuple[str, ...] = ()
    #: ``seq`` of the exchanges the violation cites.
    exchanges: tuple[int, ...] = ()
    #: The violation's evidence, as JSON values.
    values: Mapping[str, Any] = attrs.field(factory=dict)
    #: Where it was caught: ``"start"``, ``"verb N"`` (after the Nth verb) or ``"settled"``.
    at: str
    #: The number of log lines (the ``steps`` of ``qmodel check --json``).
    steps: int
    log: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "invariant": self.invariant,
            "summary": self.summary,
            "message_ids": list(self.message_ids),
            "exchanges": list(self.exchanges),
            "values": dict(self.values),
            "at": self.at,
            "steps": self.steps,
            "log": list(self.log),
        }


@attrs.frozen(kw_only=True)
class Search:
    """How the counterexample was found (for the reader; a replay does not depend on it)."""

    profile: str | None = None
    seed: int | None = None
    max_examples: int | None = None
    examples: int | None = None
    #: The ``qmodel check`` command that ran the search.
    command: str | None = None
    #: The length of the run Hypothesis shrunk (log lines, and KV operations up to where the
    #: bug was caught: through the settle when it was caught there), and of
    #: the run :mod:`qmodel.minimise` made of it, which this trace records; ``None`` (and not
    #: written) for a trace that was not minimised.
    shrunk_steps: int | None = None
    shrunk_kv_ops: int | None = None
    minimised_steps: int | None = None
    minimised_kv_ops: int | None = None

    def to_json(self) -> dict[str, Any]:
        out = {
            "profile": self.profile,
            "seed": self.seed,
            "max_examples": self.max_examples,
            "examples": self.examples,
            "command": self.command,
        }
        for name in _LENGTHS:
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


#: The lengths a minimised trace's search records (see :class:`Search`).
_LENGTHS = ("shrunk_steps", "shrunk_kv_ops", "minimised_steps", "minimised_kv_ops")


@attrs.frozen(kw_only=True)
class Trace:
    """One recorded counterexample (see the module docstring for the file)."""

    target: str
    design: str
    config: Mapping[str, Any]
    invariants: tuple[str, ...]
    verbs: tuple[tuple[str, int], ...]
    choices: tuple[Choice, ...]
    expected: Expected
    search: Search = attrs.field(factory=Search)
    qmodel: str = ""
    version: int = VERSION
    #: The Hypothesis version of the search that found it: a replay does not need it (every
    #: choice is recorded), but the same ``--seed`` searches otherwise on another version.
    hypothesis: str = ""
    #: A JavaScript target's bindings (``{"kv": [names], "do": {binding: class}}``, and
    #: ``"env": NAME`` when a Wrangler environment was read), so a replay gives the worker the
    #: same ``env`` whether they came from flags or a Wrangler file; ``None`` for other targets.
    bindings: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": FORMAT,
            "version": self.version,
            "qmodel": self.qmodel,
            "hypothesis": self.hypothesis,
            "target": self.target,
        }
        if self.bindings is not None:
            b = self.bindings
            out["bindings"] = {"kv": list(b["kv"]), "do": dict(b["do"])}
            if b.get("env") is not None:
                out["bindings"]["env"] = b["env"]
        return out | {
            "design": self.design,
            "config": dict(self.config),
            "invariants": list(self.invariants),
            "search": self.search.to_json(),
            "expected": self.expected.to_json(),
            "verbs": [[v, a] for v, a in self.verbs],
            "choices": [c.to_json() for c in self.choices],
        }

    def dumps(self) -> str:
        """Canonical JSON text: the same trace gives the same bytes."""
        return _canonical(self.to_json())

    def digest(self) -> str:
        """A short hash of what makes the run (target, design, config, verbs, choices)."""
        core = {
            k: v
            for k, v in self.to_json().items()
            if k in ("target", "bindings", "design", "config", "invariants", "verbs", "choices")
        }
        text = json.dumps(core, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]

    def write(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_text(self.dumps(), encoding="utf-8")
        return p


def _canonical(obj: Mapping[str, Any]) -> str:
    # Top-level fields one per line; lists of short lists (verbs, choices) one item per line.
    lines = ["{"]
    items = list(obj.items())
    for i, (key, value) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        head = f"  {json.dumps(key)}: "
        if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
            inner = ",\n".join("    " + json.dumps(v, ensure_ascii=False) for v in value)
            lines.append(f"{head}[\n{inner}\n  ]{comma}")
        elif isinstance(value, dict) and value:
            text = json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n  ")
            lines.append(f"{head}{text}{comma}")
        else:
            lines.append(f"{head}{json.dumps(value, ensure_ascii=False)}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data (tuples and sets as lists, other objects as text)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted((jsonable(v) for v in value), key=repr)
    if isinstance(value, Sequence):
        return [jsonable(v) for v in value]
    return str(value)


# -- reading ---------------------------------------------------------------------------------------

_RERECORD = "record it again with qmodel check ... --report DIR"


def load(path: str | Path) -> Trace:
    """Read and validate the trace file at ``path``.

    Raises :class:`TraceFileError` when the file is missing, not JSON, not a qmodel trace, of
    another format version, or when a field is missing or of the wrong kind; the message names
    the field and what to do.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_BYTES:
            raise TraceFileError(
                f"trace file {p} is {size} bytes, more than the {MAX_BYTES} a trace may have "
                "(a counterexample of qmodel check is far smaller); it is not a trace qmodel "
                "wrote",
                field="size",
            )
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TraceFileError(
            f"trace file {p} does not exist; give the .json file qmodel check --report wrote"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceFileError(f"cannot read trace file {p}: {exc}") from None
    return loads(text, source=str(p))


def loads(text: str, *, source: str = "<trace>") -> Trace:
    """Parse and validate a trace given as JSON text (see :func:`load`)."""
    if len(text) > MAX_BYTES:
        raise TraceFileError(
            f"{source} has {len(text)} characters, more than the {MAX_BYTES} a trace may have",
            field="size",
        )
    try:
        raw = json.loads(text)
    except RecursionError:
        raise TraceFileError(
            f"{source} nests its JSON too deeply to be a trace qmodel wrote", field="format"
        ) from None
    except json.JSONDecodeError as exc:
        raise TraceFileError(
            f"{source} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            f"a trace file is the JSON qmodel check --report wrote: {_RERECORD}"
        ) from None
    if not isinstance(raw, dict):
        raise TraceFileError(f"{source}: a trace is a JSON object, not {type(raw).__name__}")
    if raw.get("format") != FORMAT:
        raise TraceFileError(
            f"{source}: field 'format' is {raw.get('format')!r}, not {FORMAT!r}; this is not a "
            "qmodel trace file",
            field="format",
        )
    version = raw.get("version")
    if version == 1:
        search = raw.get("search") if isinstance(raw.get("search"), dict) else {}
        command = search.get("command") if isinstance(search.get("command"), str) else None
        again = (
            f"run `{command} --report DIR` again"
            if command
            else "run the qmodel check that found it again with --report DIR"
        )
        raise TraceFileError(
            f"{source}: trace format 1 (qmodel {raw.get('qmodel') or 'unknown'}) kept the verbs "
            "apart from the choices; this qmodel records them in one stream (format 2) and "
            f"cannot replay it. Re-create it: {again}; the same seed finds the same bug",
            field="version",
        )
    if version != VERSION:
        raise TraceFileError(
            f"{source}: field 'version' is {version!r}, but this qmodel reads trace format "
            f"{VERSION}; replay it with the qmodel that wrote it ({raw.get('qmodel') or 'unknown'}"
            f"), or {_RERECORD}",
            field="version",
        )
    r = _Reader(raw, source)
    config = r.obj("config")
    for key, value in config.items():
        if not isinstance(key, str):
            raise r.bad("config", "an object of configuration values")
        if isinstance(value, list):
            config[key] = tuple(value)
    search_raw = raw.get("search") or {}
    if not isinstance(search_raw, dict):
        raise r.bad("search", "an object")
    expected_raw = r.obj("expected")
    e = _Reader(expected_raw, source, prefix="expected.")
    expected = Expected(
        invariant=e.text("invariant"),
        summary=e.text("summary"),
        message_ids=tuple(e.list_of("message_ids", str, "strings")),
        exchanges=tuple(e.list_of("exchanges", int, "integers")),
        values=e.obj("values", required=False),
        at=e.text("at"),
        steps=e.integer("steps"),
        log=tuple(e.list_of("log", str, "strings")),
    )
    verbs: list[tuple[str, int]] = []
    for i, item in enumerate(r.list_of("verbs", list, "[verb, argument] pairs")):
        if (
            len(item) != 2
            or not isinstance(item[0], str)
            or not isinstance(item[1], int)
            or isinstance(item[1], bool)
        ):
            raise TraceFileError(
                f"{source}: verbs[{i}] is {item!r}; a verb is [name, integer argument]",
                field=f"verbs[{i}]",
            )
        verbs.append((item[0], item[1]))
    choices: list[Choice] = []
    for i, item in enumerate(r.list_of("choices", list, "[label, n, index] triples")):
        try:
            c = Choice.from_json(item)
        except QmodelError:
            c = None
        if c is None or not 0 <= c.index < c.n:
            raise TraceFileError(
                f"{source}: choices[{i}] is {item!r}; a choice is [label, n, index] with "
                "0 <= index < n",
                field=f"choices[{i}]",
            )
        choices.append(c)
    # A verb drawn among a single enabled one is no choice and is not recorded, so there may be
    # fewer choices of a verb than verbs, never more.
    drawn = sum(1 for c in choices if c.label == "verb")
    if drawn > len(verbs):
        raise TraceFileError(
            f"{source}: field 'verbs' lists {len(verbs)} verbs but the choices hold {drawn} "
            "choices of a verb; the file was edited: record it again",
            field="verbs",
        )
    return Trace(
        target=r.text("target"),
        design=r.text("design"),
        config=config,
        invariants=tuple(r.list_of("invariants", str, "invariant ids")),
        verbs=tuple(verbs),
        choices=tuple(choices),
        expected=expected,
        search=Search(
            profile=search_raw.get("profile"),
            seed=search_raw.get("seed"),
            max_examples=search_raw.get("max_examples"),
            examples=search_raw.get("examples"),
            command=search_raw.get("command"),
            **{name: _length(search_raw, name, source) for name in _LENGTHS},
        ),
        qmodel=str(raw.get("qmodel") or ""),
        hypothesis=str(raw.get("hypothesis") or ""),
        version=VERSION,
        bindings=_bindings(raw, source),
    )


def _length(search: dict[str, Any], name: str, source: str) -> int | None:
    value = search.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TraceFileError(
            f"{source}: field 'search.{name}' should be a count (an integer >= 0), not "
            f"{value!r:.40}",
            field=f"search.{name}",
        )
    return value


def _bindings(raw: dict[str, Any], source: str) -> dict[str, Any] | None:
    value = raw.get("bindings")
    if value is None:
        return None
    kv = value.get("kv") if isinstance(value, dict) else None
    do = value.get("do") if isinstance(value, dict) else None
    env = value.get("env") if isinstance(value, dict) else None
    if (
        not (env is None or isinstance(env, str))
        or not isinstance(kv, list)
        or not kv
        or not all(isinstance(k, str) for k in kv)
        or not isinstance(do, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in do.items())
    ):
        raise TraceFileError(
            f'{source}: field \'bindings\' should be {{"kv": [binding names], "do": '
            f'{{binding: class}}, "env": NAME (optional)}}, not {value!r:.80}; {_RERECORD}',
            field="bindings",
        )
    out: dict[str, Any] = {"kv": tuple(kv), "do": dict(do)}
    if env is not None:
        out["env"] = env
    return out


class _Reader:
    def __init__(self, raw: dict[str, Any], source: str, prefix: str = "") -> None:
        self.raw, self.source, self.prefix = raw, source, prefix

    def bad(self, name: str, what: str) -> TraceFileError:
        field = self.prefix + name
        if name not in self.raw:
            return TraceFileError(
                f"{self.source}: field {field!r} is missing; {_RERECORD}", field=field
            )
        return TraceFileError(
            f"{self.source}: field {field!r} should be {what}, not {self.raw[name]!r:.80}",
            field=field,
        )

    def text(self, name: str) -> str:
        v = self.raw.get(name)
        if not isinstance(v, str):
            raise self.bad(name, "a string")
        return v

    def integer(self, name: str) -> int:
        v = self.raw.get(name)
        if not isinstance(v, int) or isinstance(v, bool):
            raise self.bad(name, "an integer")
        return v

    def obj(self, name: str, *, required: bool = True) -> dict[str, Any]:
        if not required and name not in self.raw:
            return {}
        v = self.raw.get(name)
        if not isinstance(v, dict):
            raise self.bad(name, "an object")
        return dict(v)

    def list_of(self, name: str, kind: type, what: str) -> list[Any]:
        v = self.raw.get(name)
        if not isinstance(v, list) or not all(
            isinstance(x, kind) and not (kind is int and isinstance(x, bool)) for x in v
        ):
            raise self.bad(name, f"a list of {what}")
        return v


# -- what a target is ------------------------------------------------------------------------------


def fingerprint(spec: str, instance: Any) -> str:
    """What the target named ``spec`` is now, to tell a changed design from the recorded one.

    A design shipped with qmodel (``catalog:ID``, ``sound``, ``seed-000``) is its repr, which
    names its switches (``CommentsWorker(atomic_claim=False)``); a file or module target is
    the SHA-256 of its source file (``sha256:...  worker.py``); a JavaScript worker the SHA-256
    of its module, the local modules it imports and its bindings, queues included
    (``sha256:... worker.mjs``);
    anything else its type's name.
    """
    if spec.startswith(_BUILTIN_PREFIXES) or spec in _BUILTIN_NAMES:
        return repr(instance)
    module = getattr(instance, "module", None)
    if module is not None and _runs_in_node(spec):
        return _js_fingerprint(module)
    path = _source_file(spec)
    if path is not None:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        return f"sha256:{digest} {path.name}"
    return f"{type(instance).__module__}.{type(instance).__qualname__}"


def runs_code(spec: str) -> bool:
    """Whether resolving the target ``spec`` runs code that did not ship with qmodel (a worker
    file, a module, a JavaScript module): a replay runs such a target only when the user names
    it."""
    return not (spec.startswith(_BUILTIN_PREFIXES) or spec in _BUILTIN_NAMES)


def fingerprint_unrun(spec: str, bindings: Mapping[str, Any] | None = None) -> str | None:
    """The fingerprint of the target ``spec`` computed from its files alone, without importing
    or running any of it (``None`` when that cannot be done: a built-in design, or a module
    named by import path). A replay compares it with the trace's before it resolves the target,
    so a trace recorded against other code runs none of this code."""
    if not runs_code(spec):
        return None
    if _runs_in_node(spec):
        from qmodel.node.bundle import TS_SUFFIXES, bundle
        from qmodel.node.config import bindings_for
        from qmodel.node.target import JsModule, project_root

        path = Path(spec)
        if not path.is_file():
            return None
        kv = list(bindings["kv"]) if bindings else None
        do = [f"{n}={c}" for n, c in bindings["do"].items()] if bindings else None
        env = bindings.get("env") if bindings else None
        found = bindings_for(path, kv=kv, durable=do, env=env)
        url, source_map = path.resolve().as_uri(), None
        if path.suffix in TS_SUFFIXES:
            # Bundling runs esbuild over the sources, none of the worker's code.
            compat = any(f.startswith("nodejs_compat") for f in found.flags)
            built = bundle(path, project_root(path), nodejs_compat=compat)
            url, source_map = built.path.as_uri(), built.source_map
        return _js_fingerprint(JsModule(path, url, found, "", (), source_map))
    path_part = spec.rsplit(":", 1)[0] if spec.count(":") and not _is_drive(spec) else spec
    candidate = Path(path_part)
    if candidate.suffix == ".py" and candidate.is_file():
        digest = hashlib.sha256(candidate.read_bytes()).hexdigest()
        return f"sha256:{digest} {candidate.name}"
    return None


def _js_fingerprint(module: Any) -> str:
    from qmodel.node.target import local_imports

    h = hashlib.sha256()
    entry = module.path.resolve()
    # A bundled (TypeScript) worker is its bundle: every file it imports is in it.
    files = [Path(_file_of(module.url))] if module.source_map is not None else local_imports(entry)
    for f in files:
        name = f.relative_to(entry.parent) if f.is_relative_to(entry.parent) else f.name
        h.update(f"{Path(name).as_posix()}\0".encode())
        h.update(hashlib.sha256(f.read_bytes()).digest())
    b = module.bindings
    env = {"kv": list(b.kv), "do": dict(b.durable), "vars": jsonable(dict(b.vars))}
    if b.flags or b.env is not None:
        env |= {"flags": list(b.flags), "env": b.env}
    if b.queues:  # only when there are some, so the fingerprints of other designs stay as they were
        env["queues"] = {name: repr(config) for name, config in b.queues.items()}
    h.update(json.dumps(env, sort_keys=True).encode())
    return f"sha256:{h.hexdigest()} {module.path.name}"


def _file_of(url: str) -> str:
    from urllib.parse import unquote, urlparse

    return unquote(urlparse(url).path)


def _runs_in_node(spec: str) -> bool:
    from qmodel.node.bundle import runs_in_node  # the Node lane is imported only when needed

    return runs_in_node(spec)


def _source_file(spec: str) -> Path | None:
    path_part = spec.rsplit(":", 1)[0] if spec.count(":") and not _is_drive(spec) else spec
    candidate = Path(path_part)
    if candidate.suffix in (".py", ".js", ".mjs") and candidate.is_file():
        return candidate
    try:
        found = importlib.util.find_spec(path_part)
    except (ImportError, ValueError):
        return None
    origin = getattr(found, "origin", None)
    if origin and origin not in ("built-in", "frozen") and Path(origin).is_file():
        return Path(origin)
    return None


def _is_drive(spec: str) -> bool:
    return len(spec) > 2 and spec[1] == ":" and spec[2] in "\\/"
