"""A JavaScript worker module as a qmodel target: checked once, then one fresh instance per
test case.

:func:`js_worker` (what ``--target path/to/worker.mjs`` resolves to) checks everything that
can be checked before a run: the file, Node's version, that the module imports (a syntax error
is reported with its file and line), that it has ``export default { fetch }`` and that each
Durable Object binding names an exported class with a ``fetch`` method. Each problem raises
:class:`~qmodel.errors.InvalidTarget` saying what is wrong and what to do (exit status 2).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs

from qmodel.errors import InvalidTarget
from qmodel.node.bundle import MODULE_SUFFIXES, TS_SUFFIXES, bundle
from qmodel.node.config import Bindings, bindings_for, find_config
from qmodel.node.host import LOAD_TIMEOUT_S, find_node, host_for
from qmodel.node.worker import NodeWorker
from qmodel.sim.queues import PushConsumer
from qmodel.workers.queues_chat import PullBot

__all__ = ["JsModule", "JsWorker", "js_worker"]

_LOCAL_IMPORT = re.compile(r"""(?:\bfrom\s*|\bimport\s*\(?\s*)(['"])(\.{1,2}/[^'"]+)\1""")


@attrs.frozen
class JsModule:
    """A checked worker module: its path and ``file:`` URL, its bindings, the node binary, and
    the folders its Node process may read (``roots``, see :func:`read_roots`).

    A TypeScript worker is run as its bundle (:mod:`qmodel.node.bundle`): ``path`` is then the
    entry the user wrote (``src/index.ts``), ``url`` the bundle's, ``source_map`` the bundle's
    map; ``shown_root`` is the folder paths in errors and call sites are shown relative to."""

    path: Path
    url: str
    bindings: Bindings
    node: str
    roots: tuple[str, ...] = ()
    source_map: Path | None = None
    shown_root: Path | None = None
    #: How the ``queues`` era's pull consumer orders its calls, from the module's ``export const
    #: pullBot = { ackBeforeReply: true }`` (``None``: the default bot).
    pull_bot: PullBot | None = None

    def load_command(
        self, inst: int, seed: int, now: int, *, check: bool = False
    ) -> dict[str, Any]:
        """The host's ``load`` command for a fresh instance of this module."""
        b = self.bindings
        return {
            "t": "load",
            "check": check,
            "inst": inst,
            "url": self.url,
            "seed": seed,
            "kv": list(b.kv),
            "do": dict(b.durable),
            "queues": list(b.queues),
            "vars": dict(b.vars),
            "flags": list(b.flags),
            "map": str(self.source_map) if self.source_map is not None else None,
            "root": str(self.shown_root) if self.shown_root is not None else None,
            "now": now,
        }


class JsWorker:
    """A JavaScript worker ready to test; calling it gives a fresh :class:`NodeWorker` (a new
    module instance), as the machine does once per test case.

    ``machine_for(js_worker("worker.mjs"), protocol="queue")`` is the pytest entry point.
    """

    def __init__(self, module: JsModule) -> None:
        self.module = module
        self.__name__ = module.path.stem

    def __call__(self) -> NodeWorker:
        return NodeWorker(self.module)

    @property
    def durable_objects(self) -> dict[str, str]:
        """Durable Object bindings: binding -> exported class."""
        return dict(self.module.bindings.durable)

    def __repr__(self) -> str:
        return f"JsWorker({self.module.path})"


def js_worker(
    path: str | Path,
    *,
    kv_bindings: Iterable[str] | None = None,
    do_bindings: Iterable[str] | None = None,
    env: str | None = None,
) -> JsWorker:
    """The JavaScript worker module at ``path`` (``.mjs``, or ``.js`` with module syntax), or
    the TypeScript entry module at ``path`` (``.ts``, ``.mts``, ``.tsx``), bundled first.

    Bindings come from the Wrangler configuration beside it (or in a parent directory; its
    ``[env.NAME]`` section for ``env``); ``kv_bindings`` (names) and ``do_bindings``
    (``"NAME=Class"``) replace them.
    """
    p = Path(path)
    if p.suffix not in MODULE_SUFFIXES:
        raise InvalidTarget(
            f"{p} is not a JavaScript or TypeScript module; give a .mjs, .js or .ts file with "
            "export default { async fetch(request, env, ctx) { ... } }, or the project's folder",
            target=str(p),
        )
    if not p.is_file():
        raise InvalidTarget(
            f"target file {p} does not exist; give the path of a Workers module "
            "(export default { async fetch(request, env, ctx) { ... } })",
            target=str(p),
        )
    bindings = bindings_for(p, kv=kv_bindings, durable=do_bindings, env=env)
    node = find_node()
    root = project_root(p)
    if p.suffix in TS_SUFFIXES:
        compat = any(f.startswith("nodejs_compat") for f in bindings.flags)
        built = bundle(p, root, nodejs_compat=compat)
        module = JsModule(
            p, built.path.as_uri(), bindings, node, (str(built.folder),), built.source_map, root
        )
    else:
        module = JsModule(
            p, p.resolve().as_uri(), bindings, node, read_roots(p, bindings), None, root
        )
    return JsWorker(_check(module))


def project_root(path: Path) -> Path:
    """The folder paths are shown relative to: the Wrangler configuration's when the module is
    under it, else the module's own."""
    module = path.resolve()
    config = find_config(module)
    if config is not None and config.resolve().parent in module.parents:
        return config.resolve().parent
    return module.parent


def read_roots(path: Path, bindings: Bindings) -> tuple[str, ...]:
    """The folders the Node process of the worker at ``path`` may read: the worker's folder
    (the folder of its Wrangler configuration when that is an ancestor, so a project's modules
    may import one another), and the ``node_modules`` folders above it, where Node looks for
    packages. Everything else is out of the process's reach."""
    module = path.resolve()
    root = module.parent
    source = bindings.source
    if source is not None:
        config = Path(source).resolve().parent
        if config in module.parents:
            root = config
    roots = [str(root)]
    for parent in root.parents:
        packages = parent / "node_modules"
        if packages.is_dir():
            roots.append(str(packages))
    return tuple(roots)


def _check(module: JsModule) -> JsModule:
    """Load ``module`` once and refuse what cannot run; the module with what its exports say
    (its ``pullBot``)."""
    host = host_for(module.node, module.roots)
    instance = host.new_instance()
    events = host.command(module.load_command(instance, 0, 0, check=True), timeout=LOAD_TIMEOUT_S)
    path = module.path
    for ev in events:
        if ev["e"] == "loadfail":
            if ev.get("name") == "SyntaxError" and module.source_map is None:
                located = locate_syntax_error(module.node, path)
                if located is not None:
                    raise InvalidTarget(
                        f"{located}\nfix the syntax error so the module imports, then run again",
                        target=str(path),
                    )
            raise InvalidTarget(
                f"importing {path} raised {ev['error']}; fix the error so the module imports "
                "cleanly, then run again",
                target=str(path),
            )
        if ev["e"] == "loaded":
            exports: dict[str, str] = ev["exports"]
            listed = ", ".join(sorted(exports)) or "nothing"
            if not ev["defaultFetch"]:
                raise InvalidTarget(
                    f"{path} has no default export with a fetch method (it exports: {listed}); "
                    "a Workers module ends with export default { async fetch(request, env, ctx) "
                    "{ ... } }",
                    target=str(path),
                )
            for binding, cls in module.bindings.durable.items():
                kind = exports.get(cls)
                if kind not in ("class-with-fetch", "durable-object-class"):
                    what = "does not export it" if kind is None else f"exports it as a {kind}"
                    raise InvalidTarget(
                        f"the Durable Object binding {binding} names class {cls}, but {path} "
                        f"{what} (it exports: {listed}); export class {cls} extends DurableObject "
                        "(from cloudflare:workers) or with an async fetch(request) method, or "
                        f"fix the binding ({_source(module)})",
                        target=str(path),
                    )
            pushed = [
                q.name
                for q in module.bindings.queues.values()
                if isinstance(q.consumer, PushConsumer)
            ]
            if pushed and not ev.get("defaultQueue"):
                raise InvalidTarget(
                    f"queue {', '.join(sorted(set(pushed)))} has a push consumer (in "
                    f"{module.bindings.source}) but the default export of {path} has no queue "
                    "method; add async "
                    "queue(batch, env, ctx) { ... } beside fetch, or make the consumer "
                    'type = "http_pull"',
                    target=str(path),
                )
            return attrs.evolve(module, pull_bot=_pull_bot(ev.get("pullBot"), path))
    raise InvalidTarget(f"loading {path} gave no answer from Node", target=str(path))


def _pull_bot(value: Any, path: Path) -> PullBot | None:
    """The module's ``pullBot`` export as a :class:`PullBot` (only ``ackBeforeReply``)."""
    if value is None:
        return None
    unknown = sorted(set(value) - {"ackBeforeReply"}) if isinstance(value, dict) else None
    if unknown is None or unknown or not isinstance(value.get("ackBeforeReply", False), bool):
        raise InvalidTarget(
            f"{path} exports pullBot = {value!r}; give {{ ackBeforeReply: true }} or "
            "{ ackBeforeReply: false } (how the queues era's pull consumer acks)",
            target=str(path),
        )
    return PullBot(ack_before_reply=value.get("ackBeforeReply", False))


def _source(module: JsModule) -> str:
    src = module.bindings.source
    return f"from {src}" if src is not None else "--do-binding NAME=Class"


def local_imports(entry: Path) -> list[Path]:
    """``entry`` and the local files it imports, transitively (found by a plain scan of the
    import statements; only for locating a syntax error)."""
    seen: list[Path] = []
    todo = [entry.resolve()]
    while todo:
        f = todo.pop(0)
        if f in seen or not f.is_file():
            continue
        seen.append(f)
        try:
            text = f.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for _, rel in _LOCAL_IMPORT.findall(text):
            todo.append((f.parent / rel.split("?")[0]).resolve())
    return seen


def locate_syntax_error(node: str, entry: Path) -> str | None:
    """``file, line N: SyntaxError: ...`` with the offending line, from ``node --check`` over
    the module and its local imports; ``None`` if none of them fails the check."""
    for f in local_imports(entry):
        try:
            proc = subprocess.run(
                [node, "--check", str(f)], capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        if proc.returncode == 0:
            continue
        lines = proc.stderr.splitlines()
        head = lines[0] if lines else ""
        m = re.match(r"(.*):(\d+)$", head)
        message = next((line for line in lines if re.match(r"\w*Error\b", line)), "SyntaxError")
        if m is None:
            return f"{f}: {message}"
        code = "\n".join(f"    {line}" for line in lines[1:3])
        return f"{m[1]}, line {m[2]}: {message}\n{code}"
    return None
