// The module linker of qmodel's Node lane: how a worker's imports are found, and refused.
//
// The host (host.mjs) links every module of a worker itself, as a vm.SourceTextModule, instead
// of handing them to Node's loader: so no module of the worker is loaded by a rule this file
// does not apply, whatever its URL, and each test case gets fresh instances of the worker's own
// modules (module-level state never leaks from one case into the next) that are garbage once
// the case is over. (Node's loader hooks would run on a worker thread, which the permission
// model the host runs under forbids.)
//
// What a worker may import:
//   * its own ES modules: `.mjs` or `.js` files (a `.js` file is an ES module whatever
//     package.json says, as on Workers) inside the folders the host may read (QMODEL_NODE_ROOTS),
//     by path, with no query or fragment;
//   * the pure built-ins in ALLOWED;
//   * packages, by name (a bare specifier resolved under node_modules): Node imports them
//     itself, once per process, and they are shared by the test cases of a run.
// Everything else is refused with an error that says why and what to do instead: `data:`,
// `http:` and other URLs, CommonJS files (`.cjs`), files without a .mjs or .js extension,
// JSON and other module types, files outside the worker's folders, and paths into
// node_modules (a package is imported by its name).

import fs from 'node:fs';
import path from 'node:path';
import vm from 'node:vm';
import { isBuiltin } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as assertNs from 'node:assert';
import * as assertStrictNs from 'node:assert/strict';
import * as asyncHooksNs from 'node:async_hooks';
import * as bufferNs from 'node:buffer';
import * as eventsNs from 'node:events';
import * as pathNs from 'node:path';
import * as pathPosixNs from 'node:path/posix';
import * as querystringNs from 'node:querystring';
import * as streamNs from 'node:stream';
import * as streamWebNs from 'node:stream/web';
import * as stringDecoderNs from 'node:string_decoder';
import * as urlNs from 'node:url';
import * as utilNs from 'node:util';
import * as utilTypesNs from 'node:util/types';

// Built-ins a worker may import: pure computation, much like Workers' nodejs_compat. The rest
// (fs, net, http, child_process, worker_threads, vm, module, os, process, crypto, zlib, ...)
// would reach outside the simulation or break determinism.
const BUILTINS = new Map([
  ['assert', assertNs], ['assert/strict', assertStrictNs], ['async_hooks', asyncHooksNs],
  ['buffer', bufferNs], ['events', eventsNs], ['path', pathNs], ['path/posix', pathPosixNs],
  ['querystring', querystringNs], ['stream', streamNs], ['stream/web', streamWebNs],
  ['string_decoder', stringDecoderNs], ['url', urlNs], ['util', utilNs],
  ['util/types', utilTypesNs],
]);
export const ALLOWED = [...BUILTINS.keys()];

// `cloudflare:workers`, the Workers runtime's own module: its namespace is given by the host
// (which knows the running instance's env), see provideCloudflareWorkers.
let cloudflareWorkers = null;

/** Set what `import ... from 'cloudflare:workers'` gives a worker (the host calls this once). */
export function provideCloudflareWorkers(namespace) {
  cloudflareWorkers = namespace;
}

// Built-ins that only the nodejs_compat compatibility flag opens (as on Workers), each made
// deterministic by the host: `crypto` draws its randomness from the run's seeded PRNG.
const COMPAT = new Map();
const COMPAT_FLAGS = ['nodejs_compat', 'nodejs_compat_v2'];

/** Set what `import ... from 'node:<name>'` gives a worker run with nodejs_compat. */
export function provideCompatBuiltin(name, namespace) {
  COMPAT.set(name, namespace);
}

const ROOTS = JSON.parse(process.env.QMODEL_NODE_ROOTS || '[]');
const HINT = 'Use the Workers APIs instead (env bindings, the global crypto, Request/Response).';

/** An import the sandbox refuses: what was imported, from where, why, and what to do. */
export class ImportRefused extends Error {
  constructor(parent, specifier, why) {
    super(`${parent} imports '${specifier}': ${why}`);
    this.name = 'ImportRefused';
  }
}

function inRoots(real) {
  return ROOTS.some((root) => real === root || real.startsWith(root + path.sep));
}

function underNodeModules(file) {
  return file.split(path.sep).includes('node_modules');
}

/** Where `specifier`, imported by the module at `parent` (a file: URL), leads:
 * `{ kind: 'builtin', name }`, `{ kind: 'file', file, url }` (one of the worker's own modules)
 * or `{ kind: 'package', url }`; or an ImportRefused saying why not. */
export function resolveImport(specifier, parent, attributes, flags = []) {
  const refuse = (why) => new ImportRefused(parent, specifier, why);
  if (attributes && Object.keys(attributes).length > 0) {
    throw refuse(
      "import attributes (with { type: ... }) are not supported: qmodel's Node lane imports " +
      'JavaScript modules only; read data through env bindings, or export it from a .mjs file',
    );
  }
  if (specifier === 'cloudflare:workers') {
    if (cloudflareWorkers === null) throw refuse('the host gives no cloudflare:workers module');
    return { kind: 'cloudflare' };
  }
  if (specifier.startsWith('cloudflare:')) {
    throw refuse(
      "qmodel's Node lane provides cloudflare:workers (DurableObject, WorkerEntrypoint, env) " +
      `and no other cloudflare: module; ${specifier} is not simulated`,
    );
  }
  if (isBuiltin(specifier)) {
    const name = specifier.startsWith('node:') ? specifier.slice(5) : specifier;
    if (COMPAT.has(name)) {
      if (flags.some((f) => COMPAT_FLAGS.includes(f))) return { kind: 'compat', name };
      throw refuse(
        `the Node built-in '${name}' needs the nodejs_compat compatibility flag, on Workers as ` +
        'here: add compatibility_flags = ["nodejs_compat"] to the Wrangler configuration',
      );
    }
    if (!BUILTINS.has(name)) {
      throw refuse(
        "qmodel's Node lane gives a worker no filesystem, network, processes or host " +
        `internals, so the Node built-in '${name}' is refused. Built-ins allowed: ` +
        `${ALLOWED.join(', ')}. ${HINT}`,
      );
    }
    return { kind: 'builtin', name };
  }
  const relative = /^(\.{1,2}\/|\/)/.test(specifier);
  const isUrl = /^[a-zA-Z][a-zA-Z0-9+.-]*:/.test(specifier);
  if (!relative && !isUrl) {
    let url;
    try {
      url = import.meta.resolve(specifier, parent);
    } catch (err) {
      throw refuse(`no package '${specifier}' was found from there (${err.message})`);
    }
    if (url.startsWith('node:')) return resolveImport(url, parent, attributes, flags);
    const file = url.startsWith('file:') ? fileURLToPath(url) : null;
    if (file !== null && underNodeModules(file)) return { kind: 'package', url };
    return resolveFile(new URL(url), parent, specifier);
  }
  return resolveFile(new URL(specifier, parent), parent, specifier);
}

function resolveFile(url, parent, specifier) {
  const refuse = (why) => new ImportRefused(parent, specifier, why);
  if (url.protocol !== 'file:') {
    throw refuse(
      `a ${url.protocol} URL is refused: qmodel's Node lane runs only the worker's own files ` +
      'and the packages under its node_modules, never code from elsewhere; put the code in a ' +
      ".mjs file beside the worker and import it by path ('./helper.mjs')",
    );
  }
  if (url.search || url.hash) {
    throw refuse(
      "a query or fragment in a module's URL is refused: qmodel's Node lane imports a " +
      "worker's files by path only (each test case gets fresh instances of them anyway); " +
      'drop it',
    );
  }
  const file = fileURLToPath(url);
  const ext = path.extname(file);
  if (ext === '.cjs') {
    throw refuse(
      'CommonJS files of a worker are refused: Workers run ES modules, and require() would ' +
      'reach outside the sandbox; rename it to .mjs and use import/export',
    );
  }
  if (ext !== '.mjs' && ext !== '.js') {
    throw refuse(
      `${ext ? `a ${ext} file` : 'a file without an extension'} is not a module qmodel's Node ` +
      'lane loads: only ES modules in .mjs or .js files are; rename it',
    );
  }
  let real;
  try {
    real = fs.realpathSync(file);
  } catch (err) {
    if (err.code === 'ENOENT' || err.code === 'ENOTDIR') {
      throw refuse(`there is no file ${file}`);
    }
    throw refuse(
      `${file} is outside the folders the worker's Node process may read ` +
      `(${ROOTS.join(', ')}); keep the worker's modules in its folder`,
    );
  }
  if (underNodeModules(real)) {
    throw refuse(
      'a path into node_modules is refused: import a package by its name ' +
      "(import x from 'package'), which Node resolves and loads as a package",
    );
  }
  if (!inRoots(real)) {
    throw refuse(
      `${real} is outside the worker's folders (${ROOTS.join(', ')}); keep the worker's ` +
      'modules in its folder',
    );
  }
  return { kind: 'file', file: real, url: pathToFileURL(real).href };
}

// -- modules ------------------------------------------------------------------------------------

function synthetic(namespace, identifier) {
  const names = Object.keys(namespace);
  const module = new vm.SyntheticModule(names, function init() {
    for (const name of names) {
      const value = namespace[name];
      // A plain namespace object (util, path, url, ...) is shared by every test case of the
      // run: the worker gets a frozen copy, so it cannot change what another case sees.
      const shared = name === 'default' && value !== null && typeof value === 'object' && !Array.isArray(value);
      this.setExport(name, shared ? Object.freeze({ ...value }) : value);
    }
  }, { identifier });
  return module;
}

const builtinModules = new Map(); // name -> linked and evaluated SyntheticModule
const packageModules = new Map(); // url -> Promise<SyntheticModule>
let pendingNative = 0;

/** How many packages Node is importing right now (they settle through the event loop). */
export function nativeImportsPending() {
  return pendingNative;
}

/** The module of built-in `name`: a pure one, or one nodejs_compat opens (the names differ). */
function builtinModule(name) {
  let module = builtinModules.get(name);
  if (module === undefined) {
    module = synthetic(BUILTINS.get(name) ?? COMPAT.get(name), `node:${name}`);
    builtinModules.set(name, module);
  }
  return module;
}

let cloudflareModuleCache = null;

function cloudflareModule() {
  if (cloudflareModuleCache === null) {
    cloudflareModuleCache = synthetic(cloudflareWorkers, 'cloudflare:workers');
  }
  return cloudflareModuleCache;
}

function packageModule(url) {
  let module = packageModules.get(url);
  if (module === undefined) {
    pendingNative += 1;
    module = import(url).then(
      (ns) => {
        pendingNative -= 1;
        return synthetic(ns, url);
      },
      (err) => {
        pendingNative -= 1;
        packageModules.delete(url);
        throw err;
      },
    );
    packageModules.set(url, module);
  }
  return module;
}

/** A linker for one module instance of a worker: `modules` holds its own files' modules;
 * `flags` are the worker's compatibility flags; `beforeEntry(namespace)` is called once the
 * entry module is linked and before it runs (the host tells a Service Worker script, one
 * without exports, by its namespace having no names). */
export function makeLinker(modules, { flags = [], beforeEntry = null } = {}) {
  function sourceModule(file, url) {
    let module = modules.get(file);
    if (module !== undefined) return module;
    const source = fs.readFileSync(file, 'utf8');
    module = new vm.SourceTextModule(source, {
      identifier: url,
      initializeImportMeta(meta) {
        meta.url = url;
      },
      importModuleDynamically: (specifier, _referrer, attributes) => dynamicImport(specifier, url, attributes),
    });
    modules.set(file, module);
    return module;
  }

  async function moduleFor(specifier, parent, attributes) {
    const target = resolveImport(specifier, parent, attributes, flags);
    switch (target.kind) {
      case 'builtin':
      case 'compat':
        return builtinModule(target.name);
      case 'cloudflare':
        return cloudflareModule();
      case 'package':
        return packageModule(target.url);
      default:
        return sourceModule(target.file, target.url);
    }
  }

  const link = (specifier, referencing, extra) => moduleFor(specifier, referencing.identifier, extra?.attributes ?? extra?.assert);

  async function ready(module) {
    if (module.status === 'unlinked') await module.link(link);
    if (module.status !== 'evaluated') await module.evaluate();
    if (module.status === 'errored') throw module.error;
    return module;
  }

  async function dynamicImport(specifier, parent, attributes) {
    return (await ready(await moduleFor(specifier, parent, attributes))).namespace;
  }

  /** Import the worker's entry module (a file: URL): its namespace. */
  return async function importEntry(url) {
    const target = resolveFile(new URL(url), url, url);
    const module = sourceModule(target.file, target.url);
    if (beforeEntry !== null && module.status === 'unlinked') {
      await module.link(link);
      beforeEntry(module.namespace);
    }
    return (await ready(module)).namespace;
  };
}
