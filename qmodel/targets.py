"""Resolving ``--target`` into a factory of fresh target instances.

A target is named by:

* ``catalog:ID``: the design with exactly that known bug (``qmodel catalog`` lists them);
* ``sound``: the Durable Object design;
* ``seed-000`` (the default): the queue-era worker of seed 000 with all its bugs;
* ``pkg.module:attr`` (or ``pkg.module``): an importable object;
* ``path/to/worker.py[:attr]``: a file;
* ``path/to/worker.mjs`` (or ``.js``): a JavaScript Workers module, run by the Node lane
  (:mod:`qmodel.node`); ``path/to/index.ts`` a TypeScript one, bundled first;
* ``path/to/project`` (or its ``wrangler.json``/``.jsonc``/``.toml``): a Workers project, its
  configuration's ``main`` run with its bindings (``env`` picks an ``[env.NAME]`` section).

The object named may be a worker instance, a module with ``async def fetch(request, env,
ctx)``, a class (instantiated for every example) or a factory function. Whatever goes wrong
raises :class:`~qmodel.errors.InvalidTarget` with a message naming the file and the fix.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

from qmodel.catalog import UnknownCatalogId, entry
from qmodel.errors import InvalidTarget
from qmodel.sim.runtime import check_target
from qmodel.workers import CommentsWorker, Fixes

__all__ = ["DEFAULT_TARGET", "ResolvedTarget", "resolve", "target_spec"]

DEFAULT_TARGET = "seed-000"


@attrs.frozen
class ResolvedTarget:
    """A target ready to run: its name, a factory, and the era its actors should speak."""

    name: str
    factory: Callable[[], Any]
    protocol: str = "queue"
    #: Whether it is a known design needing production KV to show its bug.
    needs_production_kv: bool = False


def _seed_000() -> CommentsWorker:
    return CommentsWorker(Fixes.seed_000())


def resolve(
    spec: str | None,
    *,
    kv_bindings: Sequence[str] | None = None,
    do_bindings: Sequence[str] | None = None,
    env: str | None = None,
) -> ResolvedTarget:
    """The target named by ``spec`` (``None``: the default, seed 000's worker).

    ``kv_bindings`` (names) and ``do_bindings`` (``NAME=Class``) set the bindings of a
    JavaScript target, overriding its Wrangler configuration, and ``env`` picks the
    configuration's ``[env.NAME]`` section; other targets take none.
    """
    if spec is not None and _is_project(spec):
        spec = str(_project_main(spec, env))
    if (kv_bindings or do_bindings or env) and not _runs_in_node(spec or ""):
        raise InvalidTarget(
            "--kv-binding, --do-binding and --env set the bindings of a JavaScript or "
            "TypeScript worker (a .mjs, .js or .ts target, or a project folder); a Python "
            "target declares its own (durable_objects = {...})",
            target=spec or DEFAULT_TARGET,
        )
    if spec is None or spec == DEFAULT_TARGET:
        return ResolvedTarget(DEFAULT_TARGET, _seed_000, "queue", False)
    if spec.startswith("catalog:") or spec == "sound":
        cid = spec.split(":", 1)[1] if spec.startswith("catalog:") else "sound"
        try:
            e = entry(cid)
        except UnknownCatalogId as err:
            raise InvalidTarget(str(err), target=spec) from None
        return ResolvedTarget(spec, e.target, e.protocol, e.needs_production_kv)
    path_part, _, attr = spec.partition(":") if not _is_windows_drive(spec) else (spec, "", "")
    if _runs_in_node(spec):
        # The Node lane: the module runs in Node, its platform calls in this simulator.
        from qmodel.node import js_worker

        worker = js_worker(spec, kv_bindings=kv_bindings, do_bindings=do_bindings, env=env)
        return ResolvedTarget(spec, worker, "queue", False)
    if _runs_in_node(path_part):
        raise InvalidTarget(
            f"{spec}: a JavaScript target is its module's default export (and the classes its "
            f"Durable Object bindings name); give the path alone, --target {path_part}",
            target=spec,
        )
    looks_like_path = "/" in path_part or "\\" in path_part or Path(path_part).is_file()
    if path_part.endswith(".py") or looks_like_path:
        return _from_file(spec, Path(path_part), attr or None)
    return _from_module(spec, path_part, attr or None)


def _runs_in_node(spec: str) -> bool:
    from qmodel.node.bundle import runs_in_node  # the Node lane is imported only when needed

    return runs_in_node(spec)


def _is_project(spec: str) -> bool:
    """Whether ``spec`` names a Workers project: its folder, or its Wrangler file."""
    from qmodel.node.config import CONFIG_NAMES

    path = Path(spec)
    return path.is_dir() or (path.name in CONFIG_NAMES and path.is_file())


def _project_main(spec: str, env: str | None = None) -> Path:
    """The entry module of the Workers project ``spec`` (a folder, or its Wrangler file): the
    ``main`` of its Wrangler configuration, as ``wrangler dev`` runs it."""
    from qmodel.node.config import find_config, main_of

    path = Path(spec)
    config = path if path.is_file() else find_config(path)
    if config is None or (path.is_dir() and path.resolve() not in config.resolve().parents):
        raise InvalidTarget(
            f"{spec} is a folder without a Wrangler configuration (wrangler.json, "
            "wrangler.jsonc or wrangler.toml); give the project's folder, or the path of its "
            "worker module",
            target=spec,
        )
    main = main_of(config, env)
    if main is None:
        raise InvalidTarget(
            f'{config} names no main module; add main = "src/index.js" to it, or give the '
            "path of the worker module",
            target=spec,
        )
    if not main.is_file():
        raise InvalidTarget(
            f"{config}: main is {main}, which does not exist; fix main, or give the path of the "
            "worker module",
            target=spec,
        )
    return main


def _is_windows_drive(spec: str) -> bool:
    return len(spec) > 2 and spec[1] == ":" and spec[2] in "\\/"


def _from_file(spec: str, path: Path, attr: str | None) -> ResolvedTarget:
    if not path.exists():
        raise InvalidTarget(
            f"target file {path} does not exist; give the path of a Python file defining "
            "async def fetch(request, env, ctx) (optionally path.py:object)",
            target=spec,
        )
    if path.suffix != ".py":
        raise InvalidTarget(
            f"target file {path} is not a Python file (.py); give a .py file, a module path "
            "pkg.module:object, or catalog:ID",
            target=spec,
        )
    name = f"qmodel_target_{abs(hash(str(path.resolve()))):x}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise InvalidTarget(f"cannot load {path} as a Python module", target=spec)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException as exc:  # noqa: BLE001 - any failure of user code on import
        sys.modules.pop(name, None)
        raise InvalidTarget(_import_failure(str(path), exc), target=spec) from None
    return _from_object(spec, module, attr, where=str(path))


def _from_module(spec: str, modname: str, attr: str | None) -> ResolvedTarget:
    try:
        module = importlib.import_module(modname)
    except ModuleNotFoundError as exc:
        if exc.name and modname.startswith(exc.name):
            raise InvalidTarget(
                f"cannot import {modname!r}: no module named {exc.name!r}. Give a module on "
                "the Python path (pkg.module:object), a file (path/to/worker.py), or "
                "catalog:ID / sound",
                target=spec,
            ) from None
        raise InvalidTarget(_import_failure(modname, exc), target=spec) from None
    except BaseException as exc:  # noqa: BLE001
        raise InvalidTarget(_import_failure(modname, exc), target=spec) from None
    return _from_object(spec, module, attr, where=modname)


def _import_failure(where: str, exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    line = ""
    for frame in reversed(frames):
        if not frame.filename.startswith("<frozen"):
            line = f" ({frame.filename}, line {frame.lineno})"
            break
    if isinstance(exc, SyntaxError) and exc.lineno:
        line = f" ({exc.filename}, line {exc.lineno})"
    return (
        f"importing {where} raised {type(exc).__name__}: {exc}{line}; fix the error so the "
        "module imports cleanly, then run again"
    )


def _from_object(spec: str, module: Any, attr: str | None, *, where: str) -> ResolvedTarget:
    if attr is None:
        obj = module
    else:
        try:
            obj = getattr(module, attr)
        except AttributeError:
            names = sorted(n for n in vars(module) if not n.startswith("_"))
            raise InvalidTarget(
                f"{where} has no attribute {attr!r}; it defines: {', '.join(names) or 'nothing'}",
                target=spec,
            ) from None
    factory = _as_factory(obj, spec, where)
    return ResolvedTarget(spec, factory, "queue", False)


def _as_factory(obj: Any, spec: str, where: str) -> Callable[[], Any]:
    if inspect.isclass(obj):
        try:
            instance = obj()
        except Exception as exc:
            raise InvalidTarget(
                f"{where}: constructing {obj.__name__}() raised {type(exc).__name__}: {exc}; a "
                "target class must construct with no arguments",
                target=spec,
            ) from None
        check_target(instance, name=f"{where}:{obj.__name__}")
        return obj
    if inspect.ismodule(obj) or hasattr(obj, "fetch"):
        if inspect.ismodule(obj) and not hasattr(obj, "fetch"):
            raise InvalidTarget(
                f"{where} has no fetch; define async def fetch(request, env, ctx) in it, or name "
                f"the object to test as {where}:object",
                target=spec,
            )
        check_target(obj, name=where)
        return lambda: obj
    if callable(obj):
        made = obj()
        check_target(made, name=f"{where} (the object its factory returned)")
        return obj
    raise InvalidTarget(
        f"{where}: {type(obj).__name__} is not a target; give an object, module or class with "
        "async def fetch(request, env, ctx), or a function that returns one",
        target=spec,
    )


def target_spec(target: Any) -> str:
    """A ``--target`` text naming ``target`` again: ``catalog:ID`` or ``sound`` for a catalog
    design, ``seed-000`` for the default worker, else ``pkg.module:Class`` (or the file path
    when the module cannot be imported by name)."""
    from qmodel.catalog import CATALOG

    text = repr(target)
    for e in CATALOG.values():
        if repr(e.target()) == text:
            return "sound" if e.id == "sound" else f"catalog:{e.id}"
    if repr(resolve(None).factory()) == text:
        return DEFAULT_TARGET
    if inspect.ismodule(target):
        return _importable(target.__name__, getattr(target, "__file__", None), None)
    cls = type(target)
    module = inspect.getmodule(cls)
    return _importable(cls.__module__, getattr(module, "__file__", None), cls.__qualname__)


def _importable(modname: str, path: str | None, attr: str | None) -> str:
    from importlib.machinery import PathFinder

    # On the path, not merely in sys.modules (a worker file is loaded under a made-up name).
    top = modname.split(".", 1)[0]
    ok = modname != "__main__" and (
        top in sys.builtin_module_names or PathFinder.find_spec(top) is not None
    )
    where = modname if ok or path is None else path
    return f"{where}:{attr}" if attr else where
