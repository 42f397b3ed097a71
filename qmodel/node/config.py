"""A JavaScript worker's bindings: from its Wrangler configuration, overridden by flags.

The configuration is the first ``wrangler.toml``, ``wrangler.json`` or ``wrangler.jsonc`` found
in the worker's directory or a parent of it (the order Wrangler itself searches). From it:
``kv_namespaces[].binding``, ``durable_objects.bindings[].{name, class_name}`` and ``vars``
(top level only; ``[env.*]`` sections are not read). ``--kv-binding NAME`` (repeatable) replaces
the KV bindings, ``--do-binding NAME=Class`` (repeatable) the Durable Object bindings. With
neither a configuration nor flags, the worker gets one KV binding, ``COMMENTS_KV``.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from qmodel.errors import InvalidTarget

__all__ = ["Bindings", "DEFAULT_KV", "bindings_for", "find_config", "parse_do_flag"]

DEFAULT_KV = ("COMMENTS_KV",)
CONFIG_NAMES = ("wrangler.toml", "wrangler.json", "wrangler.jsonc")
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


def find_config(worker: Path) -> Path | None:
    """The Wrangler configuration beside ``worker`` or in the nearest parent that has one."""
    for folder in [worker.resolve().parent, *worker.resolve().parent.parents]:
        for name in CONFIG_NAMES:
            candidate = folder / name
            if candidate.is_file():
                return candidate
    return None


def _strip_jsonc(text: str) -> str:
    """JSON with comments and trailing commas (Wrangler's jsonc) as plain JSON."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
        else:
            out.append(c)
            i += 1
    return re.sub(r",(\s*[}\]])", r"\1", "".join(out))


def _read(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_text(encoding="utf-8")
        data = tomllib.loads(raw) if path.suffix == ".toml" else json.loads(_strip_jsonc(raw))
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


def _from_config(path: Path) -> Bindings:
    data = _read(path)
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
        if entry.get("script_name"):
            raise InvalidTarget(
                f"{path}: the Durable Object binding {name} uses class {cls} of another worker "
                f"({entry['script_name']}); qmodel runs one module, so give the class from this "
                f"module with --do-binding {name}=Class",
                target=str(path),
            )
        durable[name] = cls
    raw_vars = data.get("vars")
    variables = dict(raw_vars) if isinstance(raw_vars, dict) else {}
    return Bindings(tuple(kv) or DEFAULT_KV, durable, variables, path)


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
) -> Bindings:
    """The bindings of ``worker``: its Wrangler configuration, with ``kv`` (names) and
    ``durable`` (``NAME=Class`` texts) replacing the configuration's when given."""
    path = find_config(worker)
    base = _from_config(path) if path is not None else Bindings()
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
