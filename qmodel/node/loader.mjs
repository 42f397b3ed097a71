// Module hooks for qmodel's Node lane (registered by host.mjs with module.register).
//
// A worker module is imported as `file:///.../worker.mjs?qmodel-instance=N`: one fresh module
// instance per test case. These hooks carry the `qmodel-instance` query to every local file the
// worker imports, so its helper modules are fresh per test case too (module-level state never
// leaks from one case into the next); packages under node_modules are shared. They refuse the
// Node built-ins that would give the worker a filesystem, a network, processes or the host's
// internals, and load a `.js` file of the worker as an ES module whatever package.json says.

const INSTANCE = /[?&]qmodel-instance=([^&#]+)/;

// Built-ins a worker may import: pure computation, much like Workers' nodejs_compat. The rest
// (fs, net, http, child_process, worker_threads, vm, module, os, process, crypto, ...) would
// reach outside the simulation or break determinism.
const ALLOWED = new Set([
  'assert', 'assert/strict', 'async_hooks', 'buffer', 'events', 'path', 'path/posix',
  'querystring', 'stream', 'stream/web', 'string_decoder', 'url', 'util', 'util/types',
]);

function instanceOf(url) {
  const m = url && INSTANCE.exec(url);
  return m ? m[1] : null;
}

export async function resolve(specifier, context, nextResolve) {
  const inst = instanceOf(context.parentURL);
  const resolved = await nextResolve(specifier, context);
  if (inst === null) return resolved;
  const url = resolved.url;
  if (url.startsWith('node:')) {
    const name = url.slice(5);
    if (!ALLOWED.has(name)) {
      const where = context.parentURL.replace(INSTANCE, '').replace(/\?$/, '');
      throw new Error(
        `${where} imports '${specifier}': qmodel's Node lane gives a worker no filesystem, ` +
        `network, processes or host internals, so the Node built-in '${name}' is refused. ` +
        `Built-ins allowed: ${[...ALLOWED].join(', ')}. Use the Workers APIs instead ` +
        `(env bindings, the global crypto, Request/Response).`,
      );
    }
    return resolved;
  }
  if (url.startsWith('file:') && !url.includes('/node_modules/') && instanceOf(url) === null) {
    const sep = url.includes('?') ? '&' : '?';
    return { ...resolved, url: `${url}${sep}qmodel-instance=${inst}` };
  }
  return resolved;
}

export async function load(url, context, nextLoad) {
  const result = await nextLoad(url, context);
  if (instanceOf(url) !== null && url.split(/[?#]/)[0].endsWith('.js') && result.format === 'commonjs') {
    // A worker's .js file is an ES module (Workers' module syntax), even without
    // "type": "module" in package.json.
    const { readFile } = await import('node:fs/promises');
    const source = result.source ?? (await readFile(new URL(url)));
    return { format: 'module', source, shortCircuit: true };
  }
  return result;
}
