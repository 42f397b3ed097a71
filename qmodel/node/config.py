"""A JavaScript worker's bindings: from its Wrangler configuration, overridden by flags.

The configuration is the first ``wrangler.json``, ``wrangler.jsonc`` or ``wrangler.toml`` found
in the worker's directory or a parent of it (in each folder in that order, as Wrangler looks).
From it: ``main``, ``kv_namespaces[].binding``, ``durable_objects.bindings[].{name,
class_name}``, ``vars`` and ``compatibility_flags``. A Durable Object binding whose
``script_name`` is the worker's own ``name`` is a class of this worker.

``--env NAME`` reads the ``[env.NAME]`` section as ``wrangler --env NAME`` does. [INFERENCE,
from Wrangler's documentation of environments, not in ``reference/``] Bindings and ``vars`` are
not inherited: with an environment, they are the section's own (none when it lists none);
``main``, ``compatibility_date`` and ``compatibility_flags`` are inherited from the top level
when the section does not set them; the worker's ``name`` becomes ``<name>-<env>``.
``--kv-binding NAME`` (repeatable) replaces the KV bindings, ``--do-binding NAME=Class``
(repeatable) the Durable Object bindings. With neither a configuration nor flags, the worker
gets one KV binding, ``COMMENTS_KV``.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn

import attrs

from qmodel.errors import InvalidTarget
from qmodel.sim.queues import PullConsumer, PushConsumer, QueueConfig

__all__ = [
    "Bindings",
    "DEFAULT_KV",
    "bindings_for",
    "find_config",
    "main_of",
    "parse_do_flag",
    "parse_jsonc",
    "read_config",
    "queues_of",
]

DEFAULT_KV = ("COMMENTS_KV",)
CONFIG_NAMES = ("wrangler.json", "wrangler.jsonc", "wrangler.toml")
_IDENT = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")


@attrs.frozen
class Bindings:
    """What a worker's ``env`` holds: KV binding names (the first is the platform's main KV
    namespace), Durable Object bindings (binding -> exported class), plain ``vars``, and the
    configuration file they came from (``None``: defaults or flags)."""

    kv: tuple[str, ...] = DEFAULT_KV
    durable: Mapping[str, str] = attrs.field(factory=dict)
    vars: Mapping[str, Any] = attrs.field(factory=dict)
    source: Path | None = None
    #: ``compatibility_flags`` (``nodejs_compat`` opens ``node:crypto``).
    flags: tuple[str, ...] = ()
    #: The Wrangler environment read (``--env NAME``), or ``None`` for the top level.
    env: str | None = None
    #: Cloudflare Queues: producer binding -> its queue (see :func:`queues_of`).
    queues: Mapping[str, QueueConfig] = attrs.field(factory=dict)


def find_config(worker: Path) -> Path | None:
    """The Wrangler configuration beside ``worker`` (or in the folder ``worker``) or in the
    nearest parent that has one."""
    start = worker.resolve()
    start = start if start.is_dir() else start.parent
    for folder in [start, *start.parents]:
        for name in CONFIG_NAMES:
            candidate = folder / name
            if candidate.is_file():
                return candidate
    return None


def _strip_jsonc(text: str) -> str:
    """JSON with comments and trailing commas (Wrangler's jsonc) as plain JSON.

    One pass over the text that knows where strings are: a ``//`` or ``/*`` inside a string,
    or a ``,}`` inside one, is text; outside, comments are dropped, and so is a comma followed
    (across space and comments) by ``}`` or ``]``.
    """
    out: list[str] = []
    i, n = 0, len(text)

    def skip_space_and_comments(j: int) -> int:
        while j < n:
            if text[j] in " \t\r\n":
                j += 1
            elif text.startswith("//", j):
                k = text.find("\n", j)
                j = n if k < 0 else k
            elif text.startswith("/*", j):
                k = text.find("*/", j + 2)
                j = n if k < 0 else k + 2
            else:
                break
        return j

    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("//", i) or text.startswith("/*", i):
            i = skip_space_and_comments(i)
        elif c == ",":
            j = skip_space_and_comments(i + 1)
            if j < n and text[j] in "}]":
                i += 1  # a trailing comma
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse_jsonc(text: str) -> Any:
    """Parse JSON with comments and trailing commas (``wrangler.jsonc``)."""
    return json.loads(_strip_jsonc(text))


#: Keys an environment inherits from the top level when it does not set them.
INHERITED = ("main", "compatibility_date", "compatibility_flags", "name")


def read_config(path: Path, env: str | None = None) -> dict[str, Any]:
    """The Wrangler configuration at ``path``, as ``wrangler --env env`` sees it."""
    data = _read(path)
    if env is None:
        return data
    envs = data.get("env")
    section = envs.get(env) if isinstance(envs, dict) else None
    if not isinstance(section, dict):
        known = sorted(envs) if isinstance(envs, dict) else []
        raise InvalidTarget(
            f"{path} has no environment {env!r} ([env.{env}]); "
            + (f"its environments: {', '.join(known)}" if known else "it defines none")
            + "; give one of them with --env, or none for the top level",
            target=str(path),
        )
    out = dict(section)
    for key in INHERITED:
        if key not in out and key in data:
            out[key] = data[key]
    if isinstance(data.get("name"), str) and "name" not in section:
        out["name"] = f"{data['name']}-{env}"
    return out


def _read(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_text(encoding="utf-8")
        data = tomllib.loads(raw) if path.suffix == ".toml" else parse_jsonc(raw)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise InvalidTarget(
            f"cannot read the Wrangler configuration {path}: {exc}; fix it, or give the bindings "
            "with --kv-binding NAME and --do-binding NAME=Class",
            target=str(path),
        ) from None
    if not isinstance(data, dict):
        raise InvalidTarget(
            f"{path} is not a Wrangler configuration (not a table)", target=str(path)
        )
    return data


def main_of(config: Path, env: str | None = None) -> Path | None:
    """The entry module ``main`` names in the Wrangler configuration ``config`` (relative to
    the configuration's folder), or ``None`` when it names none."""
    main = read_config(config, env).get("main")
    if not isinstance(main, str) or not main:
        return None
    return (config.parent / main).resolve()


def _from_config(
    path: Path, *, durable_from_flags: bool = False, env: str | None = None
) -> Bindings:
    data = read_config(path, env)
    kv = []
    for entry in data.get("kv_namespaces") or []:
        if isinstance(entry, dict) and isinstance(entry.get("binding"), str):
            kv.append(entry["binding"])
    durable: dict[str, str] = {}
    section = data.get("durable_objects") or {}
    for entry in section.get("bindings") or [] if isinstance(section, dict) else []:
        if not isinstance(entry, dict):
            continue
        name, cls = entry.get("name"), entry.get("class_name")
        if not isinstance(name, str) or not isinstance(cls, str):
            continue
        script = entry.get("script_name")
        if script and script != data.get("name") and not durable_from_flags:
            raise InvalidTarget(
                f"{path}: the Durable Object binding {name} uses class {cls} of another worker "
                f"({entry['script_name']}); qmodel runs one module, so give the class from this "
                f"module with --do-binding {name}=Class",
                target=str(path),
            )
        durable[name] = cls
    raw_vars = data.get("vars")
    variables = dict(raw_vars) if isinstance(raw_vars, dict) else {}
    raw_flags = data.get("compatibility_flags")
    if raw_flags is not None and not (
        isinstance(raw_flags, list) and all(isinstance(f, str) for f in raw_flags)
    ):
        raise InvalidTarget(
            f'{path}: compatibility_flags should be a list of strings, such as ["nodejs_compat"]',
            target=str(path),
        )
    flags = tuple(raw_flags or ())
    return Bindings(
        tuple(kv) or DEFAULT_KV, durable, variables, path, flags, env, queues_of(data, path)
    )


def parse_do_flag(text: str) -> tuple[str, str]:
    """``NAME=Class`` of ``--do-binding``, checked to be two JavaScript identifiers."""
    name, sep, cls = text.partition("=")
    if not sep or not _IDENT.fullmatch(name) or not _IDENT.fullmatch(cls):
        raise InvalidTarget(
            f"--do-binding {text!r}: give NAME=Class, the binding name in env and the exported "
            "Durable Object class (for example --do-binding QUEUE=MessageQueue)",
            target=text,
        )
    return name, cls


def bindings_for(
    worker: Path,
    *,
    kv: Iterable[str] | None = None,
    durable: Iterable[str] | None = None,
    env: str | None = None,
) -> Bindings:
    """The bindings of ``worker``: its Wrangler configuration (its ``[env.NAME]`` section for
    ``env``), with ``kv`` (names) and ``durable`` (``NAME=Class`` texts) replacing the
    configuration's when given."""
    path = find_config(worker)
    durable = list(durable or ())
    if env is not None and path is None:
        raise InvalidTarget(
            f"--env {env}: {worker} has no Wrangler configuration to read environments from",
            target=str(worker),
        )
    # Durable Object bindings given by flags replace the configuration's, so a binding to
    # another worker's class there is no reason to refuse.
    base = (
        _from_config(path, durable_from_flags=bool(durable), env=env)
        if path is not None
        else Bindings()
    )
    kv_names = tuple(kv or ())
    for name in kv_names:
        if not _IDENT.fullmatch(name):
            raise InvalidTarget(
                f"--kv-binding {name!r} is not a binding name (a JavaScript identifier such as "
                "COMMENTS_KV)",
                target=name,
            )
    if len(set(kv_names)) != len(kv_names):
        raise InvalidTarget(
            f"--kv-binding names repeat: {', '.join(kv_names)}", target=",".join(kv_names)
        )
    do_pairs = dict(parse_do_flag(t) for t in durable or ())
    result = attrs.evolve(
        base,
        kv=kv_names or base.kv,
        durable=do_pairs or dict(base.durable),
        source=base.source if not (kv_names and do_pairs) else None,
    )
    both = set(result.kv) & set(result.durable)
    if both:
        raise InvalidTarget(
            f"binding {', '.join(sorted(both))} is both a KV namespace and a Durable Object "
            "namespace; give each binding one name",
            target=str(worker),
        )
    return result


#: Consumer settings read from the configuration: Wrangler's key -> (setting, type of value).
_PUSH_KEYS = {
    "max_batch_size": "max_batch_size",
    "max_batch_timeout": "max_batch_timeout_s",
    "max_retries": "max_retries",
    "dead_letter_queue": "dead_letter_queue",
    "retry_delay": "retry_delay_s",
    "max_concurrency": "max_concurrency",
}
_PULL_KEYS = {
    "max_batch_size": "batch_size",
    "visibility_timeout_ms": "visibility_timeout_ms",
    "max_retries": "max_retries",
    "dead_letter_queue": "dead_letter_queue",
    "retry_delay": "retry_delay_s",
}


def queues_of(data: Mapping[str, Any], path: Path) -> dict[str, QueueConfig]:
    """The Cloudflare Queues of the Wrangler configuration ``data`` (read from ``path``):
    producer binding -> :class:`~qmodel.sim.queues.QueueConfig`.

    Read, in TOML (``[[queues.producers]]``, ``[[queues.consumers]]``) or JSON form:

    * ``queues.producers[]``: ``binding`` (the name in ``env``), ``queue`` (its name) and
      ``delivery_delay`` (seconds). Several bindings may name one queue (reference Q1.17).
    * ``queues.consumers[]``: ``queue`` and its settings ``max_batch_size``,
      ``max_batch_timeout``, ``max_retries``, ``dead_letter_queue``, ``retry_delay``,
      ``max_concurrency``, each with the platform's default when absent (Q2.7-Q2.11); ``type =
      "http_pull"`` makes it an HTTP pull consumer (its ``max_batch_size`` is the pull batch size,
      ``visibility_timeout_ms`` its lease, Q4.5). Current Wrangler accepts only ``"worker"`` there
      and enables pull with a command instead (Q4.1); qmodel reads the older form so a design
      says in one file which consumer it has.

    Refused, naming the file: a consumer of a queue no producer binding names (qmodel runs one
    worker, so nothing else could send to it), two consumers of one queue (Q2.14, Q4.2), a
    setting out of its documented range, a producer binding that is also a KV or Durable Object
    binding. [INFERENCE] a producer binding's ``delivery_delay`` is modelled as its queue's
    default delay (Q1.12): two bindings of one queue with different delays are refused.
    """
    section = data.get("queues")
    if section is None:
        return {}
    if not isinstance(section, dict):
        _queue_error(
            path, "queues is not a table; give [[queues.producers]] and [[queues.consumers]]"
        )
    taken = {e.get("binding") for e in data.get("kv_namespaces") or [] if isinstance(e, dict)}
    durable = data.get("durable_objects") or {}
    if isinstance(durable, dict):
        taken |= {e.get("name") for e in durable.get("bindings") or [] if isinstance(e, dict)}
    producers: dict[str, tuple[str, int]] = {}
    for i, entry in enumerate(_entries(section, "producers", path)):
        where = f"queues.producers[{i}]"
        binding, queue = entry.get("binding"), entry.get("queue")
        if not isinstance(binding, str) or not _IDENT.fullmatch(binding):
            _queue_error(path, f"{where}.binding {binding!r} is not a binding name (e.g. JOBS)")
        if not isinstance(queue, str) or not queue:
            _queue_error(path, f'{where} ({binding}) names no queue; give queue = "name"')
        if binding in taken or binding in producers:
            _queue_error(path, f"binding {binding} is declared twice; give each binding one name")
        delay = entry.get("delivery_delay", 0)
        producers[binding] = (queue, _setting(path, where, "delivery_delay", delay))
    delays: dict[str, int] = {}
    for queue, delay in producers.values():
        if delays.setdefault(queue, delay) != delay:
            _queue_error(
                path,
                f"the producers of queue {queue} give different delivery_delay values; qmodel "
                "models the delay per queue, so give them one value",
            )
    consumers: dict[str, PushConsumer | PullConsumer] = {}
    for i, entry in enumerate(_entries(section, "consumers", path)):
        where = f"queues.consumers[{i}]"
        queue = entry.get("queue")
        if queue not in delays:
            known = ", ".join(sorted(delays)) or "none"
            _queue_error(
                path,
                f"{where} consumes queue {queue!r}, which no producer binding names (queues of "
                f"this worker: {known}); add a [[queues.producers]] entry for it, or fix the name",
            )
        if queue in consumers:
            _queue_error(path, f"queue {queue} has two consumers; a queue has one (Q2.14, Q4.2)")
        kind = entry.get("type", "worker")
        if kind not in ("worker", "http_pull"):
            _queue_error(path, f'{where}.type {kind!r}: give "worker" (push) or "http_pull"')
        if entry.get("dead_letter_queue") == queue:
            _queue_error(path, f"{where}: queue {queue} cannot be its own dead_letter_queue")
        keys = _PUSH_KEYS if kind == "worker" else _PULL_KEYS
        settings = {
            field: _setting(path, where, key, entry[key])
            for key, field in keys.items()
            if key in entry
        }
        try:
            consumers[queue] = (PushConsumer if kind == "worker" else PullConsumer)(**settings)
        except ValueError as exc:
            _queue_error(path, f"{where}: {exc}")
    configs: dict[str, QueueConfig] = {}
    for queue, delay in delays.items():
        try:
            configs[queue] = QueueConfig(
                name=queue, consumer=consumers.get(queue), delivery_delay_s=delay
            )
        except ValueError as exc:
            _queue_error(path, f"the producers of queue {queue}: {exc}")
    return {binding: configs[queue] for binding, (queue, _) in producers.items()}


def _entries(section: Mapping[str, Any], name: str, path: Path) -> list[dict[str, Any]]:
    entries = section.get(name) or []
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        _queue_error(path, f"queues.{name} is not a list of tables ([[queues.{name}]])")
    return entries


def _setting(path: Path, where: str, key: str, value: Any) -> Any:
    if key == "dead_letter_queue":
        if not isinstance(value, str) or not value:
            _queue_error(path, f"{where}.dead_letter_queue {value!r} is not a queue name")
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        _queue_error(path, f"{where}.{key} {value!r} is not a whole number")
    return value


def _queue_error(path: Path, message: str) -> NoReturn:
    raise InvalidTarget(f"{path}: {message}", target=str(path))
