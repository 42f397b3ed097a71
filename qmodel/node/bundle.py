"""TypeScript Workers projects: bundled with esbuild as Wrangler bundles them, with a source map.

A worker whose entry module is TypeScript (``.ts``, ``.mts``, ``.tsx``) is bundled into one ES
module before the Node lane runs it, as ``wrangler dev`` and ``wrangler deploy`` do: esbuild,
``--bundle --format=esm --target=es2022``, Workers' package conditions (``workerd``, ``worker``,
``browser``), ``cloudflare:*`` and Node built-ins left as imports (the host provides them), and a
source map. The map's sources are rewritten relative to the project's folder, so an error's
frame and the call site of every platform call read ``src/index.ts:42:7``, not a line of the
bundle.

esbuild is ``QMODEL_ESBUILD``, else the copy pinned in qmodel's ``tools/esbuild`` (``npm ci
--prefix tools/esbuild``), else the project's own (``node_modules/.bin/esbuild`` in the project or
above it, as a Wrangler project has through Wrangler): a program of the project's runs outside
the Node lane's sandbox, so it comes last. The bundle is written under the
system's temporary folder, in a folder named by a digest of its content, so a running check
never sees its bundle change and the same sources give the same paths every time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import attrs

from qmodel.errors import InvalidTarget

__all__ = ["MODULE_SUFFIXES", "TS_SUFFIXES", "Bundle", "bundle", "find_esbuild", "runs_in_node"]

TS_SUFFIXES = (".ts", ".mts", ".tsx")
#: The modules the Node lane runs: JavaScript as it is, TypeScript bundled first.
MODULE_SUFFIXES = (".mjs", ".js", *TS_SUFFIXES)


def runs_in_node(spec: str) -> bool:
    """Whether the target ``spec`` names a module the Node lane runs."""
    return spec.endswith(MODULE_SUFFIXES)


#: The esbuild Wrangler 4 pins; qmodel's own copy (tools/esbuild) is this version.
ESBUILD_VERSION = "0.28.2"
#: How long one bundling may take before it is stopped.
BUNDLE_TIMEOUT_S = 60
_OWN = (
    Path(__file__).resolve().parents[2] / "tools" / "esbuild" / "node_modules" / ".bin" / "esbuild"
)


@attrs.frozen
class Bundle:
    """A bundled worker: the bundle (an ES module), its source map (sources relative to
    ``root``), and the folder it was written to (the Node process must read it)."""

    path: Path
    source_map: Path
    folder: Path
    root: Path


def find_esbuild(project: Path) -> str:
    """The esbuild to bundle ``project`` with (see the module's docstring): ``QMODEL_ESBUILD``,
    else qmodel's own pinned copy, else the project's (``node_modules/.bin/esbuild`` in its
    folder or above), last because it is a program of the project's and runs outside the
    Node lane's sandbox, as ``wrangler`` would run it."""
    named = os.environ.get("QMODEL_ESBUILD")
    if named:
        if not Path(named).is_file():
            raise InvalidTarget(
                f"QMODEL_ESBUILD={named} is not a file; give the path of an esbuild binary, or "
                "unset it",
                target=str(project),
            )
        return named
    if _OWN.is_file():
        return str(_OWN)
    start = project.resolve()
    for folder in [start, *start.parents]:
        candidate = folder / "node_modules" / ".bin" / "esbuild"
        if candidate.is_file():
            return str(candidate)
    raise InvalidTarget(
        f"{project} is a TypeScript worker and no esbuild was found to bundle it: install the "
        f"project's packages (npm install; Wrangler brings esbuild), or npm install --save-dev "
        f"esbuild@{ESBUILD_VERSION}, or set QMODEL_ESBUILD to an esbuild binary",
        target=str(project),
    )


def bundle(entry: Path, root: Path, *, nodejs_compat: bool = False) -> Bundle:
    """Bundle the worker whose entry module is ``entry``; ``root`` is the project's folder
    (the Wrangler configuration's), which the source map's paths are relative to.

    A TypeScript or resolution error raises :class:`InvalidTarget` with esbuild's own
    messages (file, line and what is wrong)."""
    entry = entry.resolve()
    root = root.resolve()
    esbuild = find_esbuild(entry.parent)
    work = Path(tempfile.mkdtemp(prefix="qmodel-bundling-"))
    out = work / "worker.mjs"
    argv = [
        esbuild,
        str(entry),
        "--bundle",
        "--format=esm",
        "--target=es2022",
        "--platform=neutral",
        "--main-fields=workerd,worker,browser,module,main",
        "--conditions=workerd,worker,browser",
        "--external:cloudflare:*",
        "--external:node:*",
        "--sourcemap=external",
        "--sources-content=false",
        "--log-level=error",
        "--color=false",
        f"--outfile={out}",
    ]
    if nodejs_compat:
        # With nodejs_compat, bare Node built-in names (import 'crypto') stay imports too.
        argv += [f"--external:{name}" for name in _NODE_NAMES]
    try:
        run = subprocess.run(
            argv,
            cwd=root,
            capture_output=True,
            text=True,
            timeout=BUNDLE_TIMEOUT_S,
            check=False,
            env={"PATH": os.environ.get("PATH", ""), "NO_COLOR": "1"},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        shutil.rmtree(work, ignore_errors=True)
        raise InvalidTarget(
            f"bundling {entry} with {esbuild} failed: {exc}", target=str(entry)
        ) from None
    if run.returncode != 0 or not out.is_file():
        shutil.rmtree(work, ignore_errors=True)
        text = (run.stderr or run.stdout).strip()
        raise InvalidTarget(
            f"bundling {_shown(entry, root)} with esbuild failed:\n{text}\nfix the errors above "
            "(the same ones wrangler deploy would report), then run again",
            target=str(entry),
        )
    _relative_sources(out.with_name("worker.mjs.map"), root)
    # Named by its content: a run never sees another run's bundle change under it, and the
    # same sources give the same path (and so the same stack texts) every time.
    content = hashlib.sha256(out.read_bytes() + out.with_name("worker.mjs.map").read_bytes())
    folder = Path(tempfile.gettempdir()) / f"qmodel-bundle-{content.hexdigest()[:20]}"
    if folder.is_dir():
        shutil.rmtree(work, ignore_errors=True)
    else:
        try:
            os.replace(work, folder)
        except OSError:  # another run wrote the same bundle at the same moment
            shutil.rmtree(work, ignore_errors=True)
    return Bundle(folder / "worker.mjs", folder / "worker.mjs.map", folder, root)


def _relative_sources(map_path: Path, root: Path) -> None:
    """Rewrite the map's ``sources`` (relative to the bundle's folder) relative to ``root``."""
    data = json.loads(map_path.read_text(encoding="utf-8"))
    sources = []
    for source in data.get("sources", []):
        absolute = (map_path.parent / source).resolve()
        sources.append(_shown(absolute, root))
    data["sources"] = sources
    data.pop("sourceRoot", None)
    map_path.write_text(json.dumps(data), encoding="utf-8")


def _shown(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


#: Node's built-in module names without the ``node:`` prefix (nodejs_compat accepts both).
_NODE_NAMES = (
    "assert", "async_hooks", "buffer", "crypto", "events", "path", "querystring", "stream",
    "string_decoder", "timers", "timers/promises", "url", "util",
)  # fmt: skip
