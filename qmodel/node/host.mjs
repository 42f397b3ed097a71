// qmodel's Node lane: the host process that runs a user's JavaScript worker under Node.
//
// Python starts one of these per run and speaks to it in JSON lines, synchronously: it writes
// one command on the fd named by QMODEL_NODE_IN, this host applies it (delivers a request,
// settles a pending platform call, ...), runs JavaScript until every job is blocked on a
// platform call (the microtask queue drains, then one setImmediate hop), and writes back one
// line: the JSON array of events the run produced, on the fd named by QMODEL_NODE_OUT. The host
// never decides an ordering: each KV call, Durable Object storage call, Durable Object request
// and timer of the worker becomes an event with a call id, and the promise the worker awaits
// settles only when Python says so. Python's scheduler decides when, so schedules of real
// JavaScript are chosen, recorded, replayed and shrunk like those of the Python designs.
//
// Each test case gets fresh instances of the worker's modules, linked by loader.mjs, which
// applies the sandbox's import rules to every module of the worker. Requests are told apart by
// an AsyncLocalStorage context, as workerd tells them apart by I/O context, so a call is
// attributed to the request (or Durable Object request) whose code made it.
//
// The worker sees the virtual clock in Date and performance.now, a PRNG seeded by Python (from
// the run's choice source) in Math.random and crypto, and no network, filesystem, process or
// host timers. Events of the protocol, Python to Node (`t`) and Node to Python (`e`), are
// documented in qmodel/node/host.py.
//
// The worker runs in this process's realm, which is locked before its first module loads: Node
// starts with --frozen-intrinsics (no built-in object or prototype can be changed), the globals
// the host relies on cannot be replaced, and the host keeps its own references to what it
// uses, so a worker cannot forge the host's messages by replacing JSON.stringify, Promise or an
// array method. The operating system confines the rest (see qmodel/node/host.py).

import fs from 'node:fs';
import v8 from 'node:v8';
import util from 'node:util';
import { AsyncLocalStorage } from 'node:async_hooks';
import { createHash, createHmac, timingSafeEqual, pbkdf2Sync, hash as cryptoHash } from 'node:crypto';
import { makeLinker, nativeImportsPending, provideCloudflareWorkers, provideCompatBuiltin } from './loader.mjs';

const IN = Number(process.env.QMODEL_NODE_IN);
const OUT = Number(process.env.QMODEL_NODE_OUT);
const realProcess = process;
const realSetImmediate = setImmediate;
const RealDate = Date;
const realConsole = console;
const { stringify: jsonStringify, parse: jsonParse } = JSON;
const bufferFrom = Buffer.from.bind(Buffer);
const bufferConcat = Buffer.concat.bind(Buffer);
const bufferAlloc = Buffer.alloc.bind(Buffer);

// -- state --------------------------------------------------------------------------------------

let now = 0; // virtual ms, sent by Python with every command
let current = null; // the instance whose code runs now (for Math.random and crypto)
let nextCid = 0;
let nextTimer = 0;
let events = [];
const instances = new Map(); // instance id -> instance record
const pending = new Map(); // call id -> { resolve, reject, inst }
const timers = new Map(); // timer id -> call id
const als = new AsyncLocalStorage(); // { inst, rid }

function emit(event) {
  events.push(event);
}

// -- errors -------------------------------------------------------------------------------------

// Frames of the host's own files (host.mjs, loader.mjs) are never "where the worker threw".
const HOST_URL = new URL('.', import.meta.url).href;

/** "TypeError: x is not a function (src/index.ts:12:5)": the error and where the worker threw
 * (through the source map of a bundled worker). */
function describeError(err) {
  if (err instanceof Error) {
    const head = `${err.name}: ${err.message}`;
    const stack = String(err.stack || '');
    const where = siteOf(stack);
    return { text: String(where ? `${head} (${where})` : head), stack: mapStack(stack) };
  }
  let text;
  try {
    text = typeof err === 'string' ? err : util.inspect(err);
  } catch {
    text = String(err);
  }
  return { text: `threw ${text}`, stack: '' };
}

// -- where in the worker's sources -------------------------------------------------------------

// A bundled worker (TypeScript, see qmodel/node/bundle.py) comes with a source map whose
// sources are relative to its project's folder; a worker run as it is shows its files relative
// to its own folder. `siteOf(stack)` is where the worker's code stands in a stack: its first
// frame that is not the host's, as `src/index.ts:42:7`.
const sourceMaps = new Map(); // module file: URL -> { sources, lines }
const shownRoots = []; // [file: URL prefix of a worker's folder]
const FRAME = /(file:\/\/[^\s)]+?):(\d+):(\d+)/;
const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

function vlq(text) {
  const out = [];
  let shift = 0;
  let value = 0;
  for (const ch of text) {
    let digit = B64.indexOf(ch);
    const more = digit & 32;
    digit &= 31;
    value += digit * 2 ** shift;
    if (more) {
      shift += 5;
    } else {
      out.push(value % 2 ? -Math.floor(value / 2) : value / 2);
      value = 0;
      shift = 0;
    }
  }
  return out;
}

/** Source map v3 `mappings` as, per generated line, [genColumn, source, line, column] rows. */
function decodeMappings(mappings) {
  const lines = [];
  let source = 0;
  let line = 0;
  let column = 0;
  for (const text of mappings.split(';')) {
    const rows = [];
    let gen = 0;
    if (text) {
      for (const segment of text.split(',')) {
        const v = vlq(segment);
        gen += v[0];
        if (v.length >= 4) {
          source += v[1];
          line += v[2];
          column += v[3];
          rows.push([gen, source, line, column]);
        }
      }
    }
    lines.push(rows);
  }
  return lines;
}

function registerSources(url, mapFile, root) {
  if (mapFile && !sourceMaps.has(url)) {
    const data = jsonParse(fs.readFileSync(mapFile, 'utf8'));
    sourceMaps.set(url, { sources: data.sources, lines: decodeMappings(data.mappings) });
  }
  if (root) {
    const prefix = new URL(root.endsWith('/') ? root : `${root}/`, 'file:///').href;
    if (!shownRoots.includes(prefix)) shownRoots.push(prefix);
  }
}

/** `url:line:column` of generated code as the worker's author wrote it. */
function located(url, line, column) {
  const map = sourceMaps.get(url);
  if (map !== undefined) {
    const rows = map.lines[line - 1] || [];
    let best = null;
    for (const row of rows) {
      if (row[0] <= column - 1) best = row;
      else break;
    }
    if (best !== null) return `${map.sources[best[1]]}:${best[2] + 1}:${best[3] + 1}`;
  }
  const root = shownRoots.find((r) => url.startsWith(r));
  const shown = root ? decodeURIComponent(url.slice(root.length)) : url.slice(url.lastIndexOf('/') + 1);
  return `${shown}:${line}:${column}`;
}

/** The worker's first frame in `stack` (not the host's own), located; or null. */
function siteOf(stack) {
  for (const line of String(stack).split('\n')) {
    if (line.includes(HOST_URL)) continue;
    const m = FRAME.exec(line);
    if (m) return located(m[1], Number(m[2]), Number(m[3]));
  }
  return null;
}

/** `stack` with every frame of a bundled worker pointing into its sources. */
function mapStack(stack) {
  if (sourceMaps.size === 0) return stack;
  return String(stack).replace(new RegExp(FRAME.source, 'g'), (all, url, line, column) => (
    sourceMaps.has(url) ? located(url, Number(line), Number(column)) : all
  ));
}

// -- randomness and time ----------------------------------------------------------------------

function makeRng(seed) {
  // sfc32, seeded from a 32-bit seed; deterministic across platforms.
  let a = seed >>> 0;
  let b = 0x9e3779b9;
  let c = 0x243f6a88;
  let d = 0xb7e15162;
  const next = () => {
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return t >>> 0;
  };
  for (let i = 0; i < 15; i++) next();
  return next;
}

function rng() {
  if (current === null) throw new Error('no worker instance is running');
  return current.rng();
}

function randomBytes(view) {
  for (let i = 0; i < view.length; i += 4) {
    let r = rng();
    for (let j = i; j < Math.min(i + 4, view.length); j++) {
      view[j] = r & 0xff;
      r >>>= 8;
    }
  }
}

function VirtualDate(...args) {
  if (!new.target) return new RealDate(now).toString();
  return Reflect.construct(RealDate, args.length === 0 ? [now] : args, new.target);
}
Object.setPrototypeOf(VirtualDate, RealDate);
VirtualDate.prototype = RealDate.prototype;
// defineProperty, not assignment: Date.now of the frozen Date would refuse to be shadowed.
Object.defineProperty(VirtualDate, 'now', { value: () => now, writable: true, configurable: true });

const virtualCrypto = {
  getRandomValues(array) {
    if (!ArrayBuffer.isView(array) || array instanceof Float32Array || array instanceof Float64Array || array instanceof DataView) {
      throw new TypeError('crypto.getRandomValues takes an integer typed array');
    }
    if (array.byteLength > 65536) {
      throw new RangeError(`crypto.getRandomValues: ${array.byteLength} bytes asked, at most 65536`);
    }
    randomBytes(new Uint8Array(array.buffer, array.byteOffset, array.byteLength));
    return array;
  },
  randomUUID() {
    const b = new Uint8Array(16);
    randomBytes(b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  },
  subtle: {
    // Node runs WebCrypto jobs on its thread pool, which would settle outside the host's
    // control; the deterministic digest is computed at once instead, and the rest is refused.
    async digest(algorithm, data) {
      const name = String(typeof algorithm === 'string' ? algorithm : algorithm?.name).toUpperCase();
      const algo = { 'SHA-1': 'sha1', 'SHA-256': 'sha256', 'SHA-384': 'sha384', 'SHA-512': 'sha512' }[name];
      if (!algo) throw new TypeError(`crypto.subtle.digest: unsupported algorithm ${name}`);
      const bytes = ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : new Uint8Array(data);
      const out = createHash(algo).update(bytes).digest();
      return out.buffer.slice(out.byteOffset, out.byteOffset + out.byteLength);
    },
  },
};
for (const name of ['encrypt', 'decrypt', 'sign', 'verify', 'generateKey', 'deriveKey', 'deriveBits', 'importKey', 'exportKey', 'wrapKey', 'unwrapKey']) {
  virtualCrypto.subtle[name] = async () => {
    throw new Error(`crypto.subtle.${name} is not available in qmodel's Node lane (only digest is); keep key handling out of the code under test`);
  };
}

// -- platform calls -----------------------------------------------------------------------------

/** A promise settled when Python answers call `payload`, made on behalf of the running request. */
function bridge(payload, what) {
  const store = als.getStore();
  if (store === undefined) {
    return Promise.reject(new Error(
      `${what} was called outside a request (at module top level, or in a callback the ` +
      'platform does not track); on Workers, I/O happens only while handling a request',
    ));
  }
  // Where the worker made a KV call, for a report (whose replay asks for sites): a stack
  // capture costs about a tenth of a call's time, so a search goes without.
  const site = store.sites && payload.k === 'kv' ? siteOf(new Error().stack) : null;
  return new Promise((resolve, reject) => {
    const cid = ++nextCid;
    pending.set(cid, { resolve, reject, inst: store.inst });
    emit({ e: 'call', rid: store.rid, cid, ...payload, site });
  });
}

function settle(cmd) {
  const p = pending.get(cmd.cid);
  if (p === undefined) return;
  pending.delete(cmd.cid);
  current = instances.get(p.inst) ?? current;
  if (cmd.ok) {
    p.resolve(cmd.v);
  } else {
    const err = cmd.err || {};
    const Ctor = err.name === 'TypeError' ? TypeError : err.name === 'RangeError' ? RangeError : Error;
    p.reject(new Ctor(err.message));
  }
}

// -- timers, on the virtual clock ----------------------------------------------------------------

function setVirtualTimeout(fn, ms, ...args) {
  if (typeof fn !== 'function') throw new TypeError('setTimeout: the callback must be a function');
  const id = ++nextTimer;
  armTimer(id, fn, ms, args, false);
  return id;
}

function setVirtualInterval(fn, ms, ...args) {
  if (typeof fn !== 'function') throw new TypeError('setInterval: the callback must be a function');
  const id = ++nextTimer;
  armTimer(id, fn, ms, args, true);
  return id;
}

function armTimer(id, fn, ms, args, repeat) {
  const store = als.getStore();
  if (store === undefined) {
    throw new Error('setTimeout/setInterval outside a request: on Workers timers run only while a request is handled');
  }
  const delay = Math.max(0, Math.floor(Number(ms) || 0));
  const cid = ++nextCid;
  timers.set(id, cid);
  new Promise((resolve, reject) => {
    pending.set(cid, { resolve, reject, inst: store.inst });
    emit({ e: 'call', rid: store.rid, cid, k: 'timer', ms: delay });
  }).then(() => {
    if (timers.get(id) !== cid) return;
    timers.delete(id);
    if (repeat) armTimer(id, fn, ms, args, true);
    fn(...args);
  });
}

function clearVirtualTimer(id) {
  const cid = timers.get(id);
  if (cid === undefined) return;
  timers.delete(id);
  pending.delete(cid);
  const store = als.getStore();
  emit({ e: 'cancel', cid, rid: store ? store.rid : null });
}

// -- KV -----------------------------------------------------------------------------------------

function decodeValue(value, type) {
  if (value === null || value === undefined) return null;
  switch (type) {
    case 'text':
      return value;
    case 'json':
      return JSON.parse(value);
    case 'arrayBuffer': {
      const b = new TextEncoder().encode(value);
      return b.buffer;
    }
    case 'stream':
      return new Response(value).body;
    default:
      throw new TypeError(`Unknown response type. Possible types are "text", "arrayBuffer", "json", and "stream".`);
  }
}

function kvType(options) {
  const type = typeof options === 'string' ? options : (options?.type ?? 'text');
  if (!['text', 'json', 'arrayBuffer', 'stream'].includes(type)) {
    throw new TypeError(`Unknown response type. Possible types are "text", "arrayBuffer", "json", and "stream".`);
  }
  return type;
}

function kvKey(key, method) {
  if (Array.isArray(key)) {
    throw new TypeError(`KV ${method}() takes one key; only get() and getWithMetadata() read several at once`);
  }
  return String(key);
}

/** A bulk read: get([keys]) and getWithMetadata([keys]) give a Map of key to value. */
function bulkGet(name, method, keys, options) {
  const type = typeof options === 'string' ? options : (options?.type ?? 'text');
  const cacheTtl = typeof options === 'object' && options !== null ? options.cacheTtl : undefined;
  return bridge({
    k: 'kv', b: name, m: method, keys: keys.map(String), type: String(type), cacheTtl: cacheTtl ?? null,
  }, `${name}.${method === 'getBulk' ? 'get' : 'getWithMetadata'}`).then((entries) => new Map(entries));
}

function plainJson(value, what) {
  if (value === undefined) return null;
  return JSON.parse(JSON.stringify(value, (k, v) => {
    if (typeof v === 'bigint') throw new TypeError(`${what} must be serialisable as JSON`);
    return v;
  }));
}

class KVNamespace {
  #name;

  constructor(name) {
    this.#name = name;
  }

  get(key, options) {
    try {
      if (Array.isArray(key)) return bulkGet(this.#name, 'getBulk', key, options);
      const type = kvType(options);
      const cacheTtl = typeof options === 'object' && options !== null ? options.cacheTtl : undefined;
      return bridge({ k: 'kv', b: this.#name, m: 'get', key: kvKey(key, 'get'), cacheTtl: cacheTtl ?? null }, `${this.#name}.get`)
        .then((v) => decodeValue(v, type));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  getWithMetadata(key, options) {
    try {
      if (Array.isArray(key)) return bulkGet(this.#name, 'getWithMetadataBulk', key, options);
      const type = kvType(options);
      const cacheTtl = typeof options === 'object' && options !== null ? options.cacheTtl : undefined;
      return bridge({ k: 'kv', b: this.#name, m: 'getWithMetadata', key: kvKey(key, 'get'), cacheTtl: cacheTtl ?? null }, `${this.#name}.getWithMetadata`)
        .then((v) => ({ value: decodeValue(v.value, type), metadata: v.metadata ?? null, cacheStatus: null }));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  put(key, value, options = {}) {
    try {
      let text = value;
      if (ArrayBuffer.isView(value) || value instanceof ArrayBuffer) {
        text = new TextDecoder().decode(value);
      } else if (typeof value !== 'string') {
        throw new TypeError(
          `KV put() accepts only strings, ArrayBuffers, ArrayBufferViews, and ReadableStreams as values (got ${value === null ? 'null' : typeof value}); ` +
          'store JSON.stringify(value)',
        );
      }
      const opts = options ?? {};
      return bridge({
        k: 'kv',
        b: this.#name,
        m: 'put',
        key: kvKey(key, 'put'),
        value: text,
        expiration: opts.expiration ?? null,
        expirationTtl: opts.expirationTtl ?? null,
        metadata: plainJson(opts.metadata, 'KV metadata'),
      }, `${this.#name}.put`).then(() => undefined);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  delete(key) {
    try {
      return bridge({ k: 'kv', b: this.#name, m: 'delete', key: kvKey(key, 'delete') }, `${this.#name}.delete`).then(() => undefined);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  list(options = {}) {
    const opts = options ?? {};
    return bridge({
      k: 'kv',
      b: this.#name,
      m: 'list',
      prefix: opts.prefix == null ? '' : String(opts.prefix),
      limit: opts.limit ?? 1000,
      cursor: opts.cursor ?? null,
    }, `${this.#name}.list`).then((page) => {
      const out = { keys: page.keys, list_complete: page.list_complete, cacheStatus: null };
      if (!page.list_complete) out.cursor = page.cursor;
      return out;
    });
  }
}

// -- Cloudflare Queues --------------------------------------------------------------------------

// A producer binding and a push consumer's batch, as proxies: every rule (argument errors,
// limits, delays, first-call-wins, retries) is qmodel/sim/queues.py's, performed in Python.

/** A message body as it crosses to Python: JSON, `bytes` (base64) for an ArrayBufferView, or
 * `undef` for undefined (refused there with the runtime's message). */
function queueBody(body) {
  if (body === undefined) return { body: null, undef: true };
  if (ArrayBuffer.isView(body)) {
    return { body: null, bytes: bufferFrom(body.buffer, body.byteOffset, body.byteLength).toString('base64') };
  }
  let text;
  try {
    text = JSON.stringify(body);
  } catch (err) {
    throw new TypeError(`queue message body is not serializable as json: ${err.message}; send JSON values`);
  }
  return { body: text === undefined ? null : JSON.parse(text), undef: text === undefined };
}

function queueDelay(value) {
  return value === undefined ? null : value;
}

class WorkerQueue {
  #name;

  constructor(name) {
    this.#name = name;
  }

  send(body, options) {
    try {
      const opts = options ?? {};
      return bridge({
        k: 'q',
        b: this.#name,
        m: 'send',
        ...queueBody(body),
        contentType: opts.contentType ?? null,
        delaySeconds: queueDelay(opts.delaySeconds),
      }, `${this.#name}.send`).then(() => undefined);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  sendBatch(messages, options) {
    try {
      if (messages === null || messages === undefined || typeof messages[Symbol.iterator] !== 'function') {
        throw new TypeError('sendBatch() takes an iterable of messages ({ body, contentType?, delaySeconds? })');
      }
      const items = Array.from(messages, (m) => ({
        ...queueBody(m?.body),
        contentType: m?.contentType ?? null,
        delaySeconds: queueDelay(m?.delaySeconds),
      }));
      return bridge({
        k: 'q',
        b: this.#name,
        m: 'sendBatch',
        messages: items,
        delaySeconds: queueDelay((options ?? {}).delaySeconds),
      }, `${this.#name}.sendBatch`).then(() => undefined);
    } catch (err) {
      return Promise.reject(err);
    }
  }
}

/** One message of a push batch: ack() and retry() are told to Python as they happen, in order,
 * where the first call per message wins (Q2.6). */
class QueueMessage {
  #rid;
  #index;

  constructor(rid, index, m) {
    this.#rid = rid;
    this.#index = index;
    this.id = m.id;
    this.timestamp = new RealDate(m.timestamp);
    this.body = m.bytes !== undefined ? new Uint8Array(bufferFrom(m.bytes, 'base64')) : m.body;
    this.attempts = m.attempts;
  }

  ack() {
    emit({ e: 'qop', rid: this.#rid, op: 'ack', i: this.#index });
  }

  retry(options) {
    emit({ e: 'qop', rid: this.#rid, op: 'retry', i: this.#index, delaySeconds: queueDelay(options?.delaySeconds) });
  }
}

class MessageBatch {
  #rid;

  constructor(rid, queue, messages) {
    this.#rid = rid;
    this.queue = queue;
    this.messages = messages.map((m, i) => new QueueMessage(rid, i, m));
  }

  ackAll() {
    emit({ e: 'qop', rid: this.#rid, op: 'ackAll' });
  }

  retryAll(options) {
    emit({ e: 'qop', rid: this.#rid, op: 'retryAll', delaySeconds: queueDelay(options?.delaySeconds) });
  }
}

/** Deliver a push batch to the module's queue(batch, env, ctx); `resp` once it has settled,
 * `fail` if it threw or its promise rejected (Q2.4: the batch is retried). */
function workerQueue(cmd) {
  const inst = instances.get(cmd.inst);
  if (inst === undefined) throw new Error(`no worker instance ${cmd.inst}`);
  current = inst;
  const store = { inst: inst.id, rid: cmd.rid, sites: cmd.sites === true };
  const batch = new MessageBatch(cmd.rid, cmd.queue, cmd.messages);
  const ctx = { waitUntil, passThroughOnException() {}, props: {} };
  als.run(store, async () => {
    try {
      const handler = isEntrypointClass(inst.handler) ? new inst.handler(ctx, inst.env) : inst.handler;
      if (typeof handler?.queue !== 'function') {
        throw new TypeError('the worker has no queue(batch, env, ctx) handler, and a push consumer delivered a batch');
      }
      await handler.queue(batch, inst.env, ctx);
    } catch (err) {
      const d = describeError(err);
      emit({ e: 'fail', rid: store.rid, error: d.text, stack: d.stack });
      return;
    }
    emit({ e: 'resp', rid: store.rid, status: 200, headers: [], body: '' });
  });
}

// -- Durable Objects ----------------------------------------------------------------------------

const DO_ORIGIN = 'https://durable-object.qmodel.test';
const NULL_BODY = new Set([101, 204, 205, 304]);

function encodeStored(value) {
  if (value === undefined) throw new TypeError('storage.put: undefined cannot be stored');
  return v8.serialize(value).toString('base64');
}

function decodeStored(text) {
  return text === null || text === undefined ? undefined : v8.deserialize(Buffer.from(text, 'base64'));
}

class DurableObjectId {
  #hex;

  constructor(hex, name) {
    this.#hex = hex;
    if (name !== undefined) this.name = name;
  }

  toString() {
    return this.#hex;
  }

  equals(other) {
    return String(other) === this.#hex;
  }
}

class DurableObjectStub {
  #binding;

  constructor(binding, id) {
    this.#binding = binding;
    this.id = id;
    this.name = id.name;
  }

  async fetch(input, init) {
    const target = typeof input === 'string' || input instanceof URL ? new URL(String(input), DO_ORIGIN) : input;
    const request = new Request(target, init);
    const body = request.method === 'GET' || request.method === 'HEAD' ? null : await request.text();
    const req = { method: request.method, url: request.url, headers: [...request.headers], body };
    const answer = await this.#send(req, 'fetch');
    return new Response(NULL_BODY.has(answer.status) ? null : answer.body, { status: answer.status, headers: answer.headers });
  }

  /** A request to the object (a platform call of the caller): its answer. */
  #send(req, what) {
    const hex = this.id.toString();
    const payload = { k: 'do', b: this.#binding, hex, name: this.id.name ?? null, req };
    return bridge(payload, `${this.#binding} stub.${what}`);
  }

  /** `stub.method(...args)`: a call of the object's method, which travels as a Durable Object
   * request does (a scheduling point on each side); arguments and result are copied by
   * structured clone, and an error thrown by the method is thrown here with its name and
   * message, as Workers RPC does. */
  async rpc(method, args) {
    let body;
    try {
      body = bufferFrom(v8.serialize(args)).toString('base64');
    } catch (err) {
      throw new TypeError(
        `${this.#binding} stub.${method}(): an argument cannot be sent (${err.message}); qmodel's ` +
        'Node lane passes structured-cloneable values to Durable Object methods (no functions or stubs)',
      );
    }
    const url = `${DO_ORIGIN}/rpc/${encodeURIComponent(method)}`;
    const answer = await this.#send({ method: 'POST', url, headers: [[RPC_HEADER, method]], body }, method);
    const outcome = new Headers(answer.headers).get(RPC_HEADER);
    if (outcome === 'ok') return v8.deserialize(bufferFrom(answer.body, 'base64'));
    if (outcome === 'error') {
      const e = jsonParse(answer.body);
      const Ctor = { TypeError, RangeError }[e.name] ?? Error;
      const err = new Ctor(e.message);
      if (!(e.name in { TypeError: 1, RangeError: 1, Error: 1 })) err.name = e.name;
      throw err;
    }
    throw new Error(`${this.#binding} stub.${method}(): the Durable Object answered ${answer.status} without a result`);
  }
}

const RPC_HEADER = 'x-qmodel-rpc';
// Names a stub answers itself: never sent to the object as a method call (`then` too, so an
// awaited stub is not taken for a promise).
const STUB_OWN = new Set(['fetch', 'id', 'name', 'then', 'rpc', 'constructor', 'toJSON']);

/** A stub whose every other property is an RPC method of the object. */
function rpcStub(stub) {
  return new Proxy(stub, {
    get(target, prop) {
      if (typeof prop === 'symbol' || STUB_OWN.has(prop)) {
        const value = Reflect.get(target, prop, target);
        return typeof value === 'function' ? value.bind(target) : value;
      }
      return (...args) => target.rpc(prop, args);
    },
  });
}

class DurableObjectNamespace {
  #binding;

  constructor(binding) {
    this.#binding = binding;
  }

  idFromName(name) {
    const text = String(name);
    return new DurableObjectId(createHash('sha256').update(`${this.#binding}:${text}`).digest('hex'), text);
  }

  idFromString(hex) {
    if (!/^[0-9a-f]{64}$/.test(String(hex))) throw new TypeError(`Invalid Durable Object ID: ${hex}`);
    return new DurableObjectId(String(hex), undefined);
  }

  newUniqueId() {
    const b = new Uint8Array(32);
    randomBytes(b);
    return new DurableObjectId([...b].map((x) => x.toString(16).padStart(2, '0')).join(''), undefined);
  }

  get(id) {
    if (!(id instanceof DurableObjectId)) {
      throw new TypeError(`${this.#binding}.get() takes an id from idFromName(), idFromString() or newUniqueId()`);
    }
    return rpcStub(new DurableObjectStub(this.#binding, id));
  }

  getByName(name) {
    return this.get(this.idFromName(name));
  }
}

function storageKeys(keys, method) {
  if (keys.length > 128) throw new RangeError(`storage.${method}: at most 128 keys at once`);
  return keys.map(String);
}

class DurableObjectStorage {
  #object;

  constructor(object) {
    this.#object = object;
  }

  get(key) {
    if (Array.isArray(key)) {
      return bridge({ k: 'st', m: 'get', keys: storageKeys(key, 'get') }, 'storage.get')
        .then((pairs) => new Map(pairs.map(([k, v]) => [k, decodeStored(v)])));
    }
    return bridge({ k: 'st', m: 'get', key: String(key) }, 'storage.get').then(decodeStored);
  }

  put(key, value) {
    try {
      if (typeof key === 'object' && key !== null) {
        const entries = Object.entries(key).map(([k, v]) => [k, encodeStored(v)]);
        if (entries.length > 128) throw new RangeError('storage.put: at most 128 keys at once');
        return bridge({ k: 'st', m: 'put', entries }, 'storage.put').then(() => undefined);
      }
      return bridge({ k: 'st', m: 'put', key: String(key), value: encodeStored(value) }, 'storage.put').then(() => undefined);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  delete(key) {
    if (Array.isArray(key)) {
      return bridge({ k: 'st', m: 'delete', keys: storageKeys(key, 'delete') }, 'storage.delete');
    }
    return bridge({ k: 'st', m: 'delete', key: String(key) }, 'storage.delete');
  }

  list(options = {}) {
    const opts = options ?? {};
    if (opts.start !== undefined && opts.startAfter !== undefined) {
      return Promise.reject(new TypeError('storage.list: give start or startAfter, not both'));
    }
    const key = (v) => (v === undefined || v === null ? null : String(v));
    return bridge({
      k: 'st',
      m: 'list',
      prefix: opts.prefix == null ? '' : String(opts.prefix),
      limit: opts.limit ?? null,
      reverse: Boolean(opts.reverse),
      start: key(opts.start),
      startAfter: key(opts.startAfter),
      end: key(opts.end),
    }, 'storage.list').then((pairs) => new Map(pairs.map(([k, v]) => [k, decodeStored(v)])));
  }

  async transaction(closure) {
    const txn = new Transaction(this);
    let result;
    try {
      result = await closure(txn);
    } catch (err) {
      txn.rollback();
      throw err;
    }
    await txn.commit();
    return result;
  }

  async sync() {}

  deleteAll() {
    return bridge({ k: 'st', m: 'deleteAll' }, 'storage.deleteAll').then(() => undefined);
  }

  getAlarm() {
    return bridge({ k: 'st', m: 'getAlarm' }, 'storage.getAlarm');
  }

  setAlarm(scheduledTime) {
    if (typeof this.#object.instance?.alarm !== 'function') {
      return Promise.reject(new TypeError('Your Durable Object class must have an alarm() handler in order to call setAlarm()'));
    }
    const ms = scheduledTime instanceof RealDate ? scheduledTime.getTime() : Number(scheduledTime);
    if (!Number.isFinite(ms)) {
      return Promise.reject(new TypeError('storage.setAlarm() takes a Date or a time in milliseconds since the epoch'));
    }
    return bridge({ k: 'st', m: 'setAlarm', ms: Math.trunc(ms) }, 'storage.setAlarm').then(() => undefined);
  }

  deleteAlarm() {
    return bridge({ k: 'st', m: 'deleteAlarm' }, 'storage.deleteAlarm').then(() => undefined);
  }
}

const utf8Order = (a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b));

function inRange(key, { prefix, start, startAfter, end }) {
  if (prefix != null && !key.startsWith(String(prefix))) return false;
  if (start != null && utf8Order(key, String(start)) < 0) return false;
  if (startAfter != null && utf8Order(key, String(startAfter)) <= 0) return false;
  return end == null || utf8Order(key, String(end)) < 0;
}

// storage.transaction(closure) of the key-value backend (reference 5.4): the closure's writes
// are kept aside, seen by its own reads, and applied in one storage operation when it returns;
// txn.rollback() or a throw discards them. Concurrent transactions are not retried (the
// platform may run a closure again after a conflict): with only storage awaits in the closure,
// the input gate keeps it atomic anyway. Alarm calls go to the storage directly.
class Transaction {
  #storage;
  #writes = new Map(); // key -> encoded value, or null for a delete
  #over = false;

  constructor(storage) {
    this.#storage = storage;
  }

  #open() {
    if (this.#over) throw new Error('this transaction was rolled back or has ended');
  }

  async get(key) {
    this.#open();
    if (!Array.isArray(key)) {
      const k = String(key);
      if (!this.#writes.has(k)) return this.#storage.get(k);
      const w = this.#writes.get(k);
      return w === null ? undefined : decodeStored(w);
    }
    const keys = storageKeys(key, 'get');
    const unwritten = keys.filter((k) => !this.#writes.has(k));
    const stored = unwritten.length ? await this.#storage.get(unwritten) : new Map();
    const out = new Map();
    for (const k of new Set(keys)) {
      const w = this.#writes.get(k);
      if (w !== undefined && w !== null) out.set(k, decodeStored(w));
      else if (w === undefined && stored.has(k)) out.set(k, stored.get(k));
    }
    return out;
  }

  async put(key, value) {
    this.#open();
    if (typeof key === 'object' && key !== null) {
      const entries = Object.entries(key);
      if (entries.length > 128) throw new RangeError('storage.put: at most 128 keys at once');
      for (const [k, v] of entries) this.#writes.set(k, encodeStored(v));
    } else {
      this.#writes.set(String(key), encodeStored(value));
    }
  }

  async delete(key) {
    this.#open();
    const keys = Array.isArray(key) ? storageKeys(key, 'delete') : [String(key)];
    const found = await this.get(keys);
    for (const k of keys) this.#writes.set(k, null);
    return Array.isArray(key) ? found.size : found.size > 0;
  }

  async list(options = {}) {
    this.#open();
    const { limit, reverse, ...range } = options ?? {};
    const merged = await this.#storage.list(range);
    for (const [k, w] of this.#writes) {
      if (!inRange(k, range)) continue;
      if (w === null) merged.delete(k);
      else merged.set(k, decodeStored(w));
    }
    let keys = [...merged.keys()].sort(utf8Order);
    if (reverse) keys.reverse();
    if (limit != null) keys = keys.slice(0, limit);
    return new Map(keys.map((k) => [k, merged.get(k)]));
  }

  rollback() {
    this.#over = true;
    this.#writes.clear();
  }

  getAlarm(...args) {
    return this.#storage.getAlarm(...args);
  }

  setAlarm(...args) {
    return this.#storage.setAlarm(...args);
  }

  deleteAlarm(...args) {
    return this.#storage.deleteAlarm(...args);
  }

  async commit() {
    if (this.#over) return;
    this.#over = true;
    if (this.#writes.size === 0) return;
    await bridge({ k: 'st', m: 'commit', entries: [...this.#writes] }, 'storage.transaction');
  }
}

function makeState(object, hex, name) {
  return {
    id: new DurableObjectId(hex, name ?? undefined),
    storage: new DurableObjectStorage(object),
    waitUntil(promise) {
      waitUntil(promise);
    },
    blockConcurrencyWhile(callback) {
      const store = als.getStore();
      const rid = store ? store.rid : null;
      emit({ e: 'bcw', rid, d: 1 });
      const run = (async () => callback())();
      const done = run.then(
        () => emit({ e: 'bcw', rid, d: -1 }),
        () => emit({ e: 'bcw', rid, d: -1 }),
      );
      object.blockers.add(done);
      done.then(() => object.blockers.delete(done));
      return run;
    },
  };
}

// -- requests -----------------------------------------------------------------------------------

const BODY_TEXT = Symbol('qmodel.bodyText');
const RealResponse = Response;

// Node's Response, remembering a body given as a string, so the host reads the text of a
// response without streaming it through undici (the common case, and a large part of the
// host's time per request). It is still a Response in every respect.
class WorkerResponse extends RealResponse {
  constructor(body = null, init = undefined) {
    super(body, init);
    if (typeof body === 'string' || body === null) this[BODY_TEXT] = body ?? '';
  }

  static json(data, init = {}) {
    const headers = new Headers(init?.headers);
    if (!headers.has('content-type')) headers.set('content-type', 'application/json');
    return new WorkerResponse(JSON.stringify(data), { ...init, headers });
  }
}

async function responseText(response) {
  const text = response[BODY_TEXT];
  if (text !== undefined && !response.bodyUsed) return text;
  return response.text();
}

function waitUntil(promise) {
  const store = als.getStore();
  const rid = store ? store.rid : null;
  emit({ e: 'wu', rid, d: 1 });
  Promise.resolve(promise).then(
    () => emit({ e: 'wu', rid, d: -1 }),
    (err) => emit({ e: 'wu', rid, d: -1, error: describeError(err).text }),
  );
}

function makeRequest(req) {
  const init = { method: req.method, headers: req.headers };
  if (req.body !== null && req.body !== undefined && req.method !== 'GET' && req.method !== 'HEAD') {
    init.body = req.body;
  }
  return new Request(req.url, init);
}

function describeValue(value) {
  if (value === undefined) return 'undefined';
  if (value === null) return 'null';
  if (typeof value === 'object') return `an object of class ${value.constructor?.name ?? 'Object'}`;
  return `a ${typeof value}`;
}

/** Run `handler` as request `rid`; emit its response (`resp`) or its failure (`fail`). */
function serve(store, handler) {
  als.run(store, async () => {
    let response;
    try {
      response = await handler();
    } catch (err) {
      const d = describeError(err);
      emit({ e: 'fail', rid: store.rid, error: d.text, stack: d.stack });
      return;
    }
    if (!(response instanceof Response)) {
      emit({ e: 'fail', rid: store.rid, error: `fetch returned ${describeValue(response)}, not a Response`, stack: '' });
      return;
    }
    let body;
    try {
      body = await responseText(response);
    } catch (err) {
      emit({ e: 'fail', rid: store.rid, error: `reading the response body failed: ${describeError(err).text}`, stack: '' });
      return;
    }
    emit({ e: 'resp', rid: store.rid, status: response.status, headers: [...response.headers], body });
  });
}

function workerFetch(cmd) {
  const inst = instances.get(cmd.inst);
  if (inst === undefined) throw new Error(`no worker instance ${cmd.inst}`);
  current = inst;
  const request = makeRequest(cmd.req);
  const ctx = {
    waitUntil,
    passThroughOnException() {},
    props: {},
  };
  serve({ inst: inst.id, rid: cmd.rid, sites: cmd.sites === true }, () => {
    // A class default export (export default class extends WorkerEntrypoint) serves each
    // request with a new instance, made with (ctx, env) as the runtime makes it.
    const handler = isEntrypointClass(inst.handler) ? new inst.handler(ctx, inst.env) : inst.handler;
    return handler.fetch(request, inst.env, ctx);
  });
}

function isEntrypointClass(value) {
  return typeof value === 'function' && typeof value.prototype?.fetch === 'function';
}

// -- cloudflare:workers -------------------------------------------------------------------------

/** `DurableObject` of cloudflare:workers: the base of a Durable Object class; the runtime
 * constructs it with (ctx, env), which it keeps as this.ctx and this.env. */
class DurableObject {
  constructor(ctx, env) {
    this.ctx = ctx;
    this.env = env;
  }
}

/** `WorkerEntrypoint` of cloudflare:workers: a class default export's base, constructed for
 * each request with (ctx, env). */
class WorkerEntrypoint {
  constructor(ctx, env) {
    this.ctx = ctx;
    this.env = env;
  }
}

/** `env` of cloudflare:workers: the running instance's bindings, read when used (at module top
 * level too, as the runtime allows). */
const workersEnv = new Proxy(Object.create(null), {
  get(_target, name) {
    return current?.env?.[name];
  },
  has(_target, name) {
    return current?.env !== null && current?.env !== undefined && name in current.env;
  },
  ownKeys() {
    return current?.env ? Reflect.ownKeys(current.env) : [];
  },
  getOwnPropertyDescriptor(_target, name) {
    if (!current?.env || !(name in current.env)) return undefined;
    return { value: current.env[name], enumerable: true, configurable: true, writable: false };
  },
  set() {
    throw new TypeError('env of cloudflare:workers is read-only');
  },
});

provideCloudflareWorkers(Object.freeze({ DurableObject, WorkerEntrypoint, env: workersEnv }));

/** Deliver an event to the Durable Object `cmd.obj` (constructed first if new): `deliver`
 * gets the object's instance and gives the event's Response. */
function durableEvent(cmd, deliver) {
  const inst = instances.get(cmd.inst);
  if (inst === undefined) throw new Error(`no worker instance ${cmd.inst}`);
  current = inst;
  const store = { inst: inst.id, rid: cmd.rid, sites: cmd.sites === true };
  serve(store, async () => {
    let object = inst.objects.get(cmd.obj);
    if (object === undefined) {
      object = { instance: null, blockers: new Set() };
      const Class = inst.module[cmd.cls];
      object.instance = new Class(makeState(object, cmd.hex, cmd.name), inst.env);
      inst.objects.set(cmd.obj, object);
    }
    // blockConcurrencyWhile: no event reaches the object until its callback settles.
    while (object.blockers.size > 0) await Promise.all([...object.blockers]);
    return deliver(object.instance);
  });
}

function durableFetch(cmd) {
  const method = new Headers(cmd.req.headers).get(RPC_HEADER);
  if (method !== null) {
    durableEvent(cmd, (object) => durableRpc(cmd.cls, object, method, cmd.req.body));
    return;
  }
  const request = makeRequest(cmd.req);
  durableEvent(cmd, (object) => {
    if (typeof object.fetch !== 'function') {
      throw new TypeError(`Durable Object class ${cmd.cls} has no fetch() handler; call its methods on the stub instead (RPC)`);
    }
    return object.fetch(request);
  });
}

// Methods an object's stub may not call (the runtime's own handlers, and Object's).
const NOT_RPC = new Set(['fetch', 'alarm', 'webSocketMessage', 'webSocketClose', 'webSocketError', 'constructor']);

async function durableRpc(cls, object, method, body) {
  const answer = (outcome, text, status) => new WorkerResponse(text, { status, headers: { [RPC_HEADER]: outcome } });
  const fn = NOT_RPC.has(method) || method in Object.prototype ? undefined : object[method];
  if (typeof fn !== 'function') {
    const why = `The RPC receiver does not implement the method "${method}".`;
    return answer('error', jsonStringify({ name: 'TypeError', message: `${why} (Durable Object class ${cls})` }), 500);
  }
  let result;
  try {
    result = await fn.apply(object, v8.deserialize(bufferFrom(body, 'base64')));
  } catch (err) {
    const name = err instanceof Error ? err.name : 'Error';
    const message = err instanceof Error ? err.message : describeError(err).text;
    return answer('error', jsonStringify({ name, message }), 500);
  }
  let text;
  try {
    text = bufferFrom(v8.serialize(result)).toString('base64');
  } catch (err) {
    throw new TypeError(`${cls}.${method}() returned a value that cannot be sent back (${err.message}); return structured-cloneable values`);
  }
  return answer('ok', text, 200);
}

function durableAlarm(cmd) {
  durableEvent(cmd, async (object) => {
    if (typeof object.alarm !== 'function') {
      throw new TypeError(`Durable Object class ${cmd.cls} has no alarm() handler`);
    }
    await object.alarm({ retryCount: cmd.retryCount, isRetry: cmd.isRetry });
    return new WorkerResponse(null, { status: 204 });
  });
}

// -- instances ----------------------------------------------------------------------------------

function makeEnv(cmd) {
  const env = {};
  for (const [name, value] of Object.entries(cmd.vars ?? {})) env[name] = value;
  for (const name of cmd.kv) env[name] = new KVNamespace(name);
  for (const binding of Object.keys(cmd.do)) env[binding] = new DurableObjectNamespace(binding);
  for (const binding of cmd.queues ?? []) env[binding] = new WorkerQueue(binding);
  return env;
}

let loading = null; // the instance whose module is being evaluated (addEventListener's)

async function load(cmd) {
  const inst = {
    id: cmd.inst, rng: makeRng(cmd.seed), origin: now, objects: new Map(), module: null, env: null, handler: null, listeners: null,
  };
  instances.set(cmd.inst, inst);
  current = inst;
  registerSources(cmd.url, cmd.map ?? null, cmd.root ?? null);
  // The bindings exist before the module runs: cloudflare:workers' env is read at top level.
  inst.env = makeEnv(cmd);
  const beforeEntry = (namespace) => {
    // A script without exports is in Service Worker syntax: its bindings are globals and it
    // registers its handler with addEventListener('fetch', ...).
    if (Reflect.ownKeys(namespace).every((k) => typeof k === 'symbol')) {
      inst.listeners = new Map();
      exposeBindings(Object.keys(inst.env));
    }
  };
  loading = inst;
  try {
    inst.module = await makeLinker(new Map(), { flags: cmd.flags ?? [], beforeEntry })(cmd.url);
  } catch (err) {
    instances.delete(cmd.inst);
    const d = describeError(err);
    emit({ e: 'loadfail', name: err?.name ?? null, error: d.text, stack: d.stack });
    return;
  } finally {
    loading = null;
  }
  inst.handler = inst.module.default;
  if (inst.listeners !== null && inst.listeners.has('fetch')) inst.handler = serviceWorkerHandler(inst.listeners);
  const exported = {};
  for (const [name, value] of Object.entries(inst.module)) {
    exported[name] = typeof value === 'function'
      ? (typeof value.prototype?.fetch === 'function' ? 'class-with-fetch'
        : value.prototype instanceof DurableObject ? 'durable-object-class' : 'function')
      : value === null ? 'null' : typeof value;
  }
  const handler = inst.handler;
  emit({
    e: 'loaded',
    exports: exported,
    serviceWorker: inst.listeners !== null,
    defaultFetch:
      handler !== null &&
      handler !== undefined &&
      (typeof handler.fetch === 'function' || isEntrypointClass(handler)),
    defaultQueue:
      handler !== null &&
      handler !== undefined &&
      typeof (isEntrypointClass(handler) ? handler.prototype.queue : handler.queue) === 'function',
    pullBot: plainExport(inst.module.pullBot),
  });
  if (cmd.check) drop(cmd.inst);
}

// -- Service Worker syntax ----------------------------------------------------------------------

const exposed = new Set();

/** A Service Worker script's bindings are globals: each reads the running instance's env. */
function exposeBindings(names) {
  for (const name of names) {
    if (exposed.has(name)) continue;
    if (Object.getOwnPropertyDescriptor(globalThis, name) !== undefined) {
      throw new TypeError(`the binding ${name} would shadow the global of that name; rename the binding`);
    }
    Object.defineProperty(globalThis, name, {
      get: () => (current?.listeners ? current.env?.[name] : undefined),
      enumerable: false,
      configurable: false,
    });
    exposed.add(name);
  }
}

function addEventListener(type, listener) {
  const inst = loading;
  if (inst === null || inst.listeners === null) {
    throw new TypeError(
      'addEventListener is for scripts in Service Worker syntax (no exports), while they load; ' +
      'a module worker exports its handlers (export default { fetch })',
    );
  }
  if (type !== 'fetch') {
    throw new TypeError(`addEventListener('${type}'): qmodel's Node lane runs 'fetch' listeners only`);
  }
  if (typeof listener !== 'function' && typeof listener?.handleEvent !== 'function') {
    throw new TypeError("addEventListener('fetch', listener): the listener must be a function");
  }
  const list = inst.listeners.get(type) ?? [];
  list.push(listener);
  inst.listeners.set(type, list);
}

/** The fetch handler of a Service Worker script: a FetchEvent to each listener until one
 * calls respondWith(). */
function serviceWorkerHandler(listeners) {
  return {
    fetch(request, _env, ctx) {
      let response = null;
      const event = {
        type: 'fetch',
        request,
        respondWith(value) {
          if (response !== null) throw new Error('respondWith() was already called for this event');
          response = Promise.resolve(value);
        },
        waitUntil: ctx.waitUntil,
        passThroughOnException() {},
      };
      for (const listener of listeners.get('fetch')) {
        if (typeof listener === 'function') listener.call(globalThis, event);
        else listener.handleEvent(event);
        if (response !== null) return response;
      }
      throw new Error("no fetch listener called event.respondWith(): call it synchronously, with the Response or a promise of it");
    },
  };
}

// -- node:timers under nodejs_compat: the virtual clock's timers ----------------------------------

// The worker's timers, as globals and as node:timers.
const VIRTUAL_TIMERS = Object.freeze({
  setTimeout: setVirtualTimeout,
  setInterval: setVirtualInterval,
  setImmediate: (fn, ...args) => setVirtualTimeout(fn, 0, ...args),
  clearTimeout: clearVirtualTimer,
  clearInterval: clearVirtualTimer,
  clearImmediate: clearVirtualTimer,
});

function makeNodeTimers() {
  return { ...VIRTUAL_TIMERS, default: VIRTUAL_TIMERS };
}

function makeNodeTimerPromises() {
  const later = (ms, value) => new Promise((resolve) => setVirtualTimeout(() => resolve(value), ms));
  const ns = {
    setTimeout: later,
    setImmediate: (value) => later(0, value),
    scheduler: Object.freeze({ wait: (ms) => later(ms, undefined), yield: () => later(0, undefined) }),
  };
  return { ...ns, default: Object.freeze({ ...ns }) };
}

// -- node:crypto under nodejs_compat --------------------------------------------------------------

function cryptoRefused(name) {
  return () => {
    throw new Error(
      `node:crypto ${name} is not available in qmodel's Node lane (its result would not be ` +
      'chosen by the run, or it works on a thread pool); use createHash, createHmac, ' +
      'randomBytes, randomUUID, randomInt or the Web Crypto digest',
    );
  };
}

function randomBuffer(size) {
  if (!Number.isInteger(size) || size < 0 || size > 65536) throw new RangeError(`randomBytes: size ${size} out of range 0..65536`);
  const b = bufferAlloc(size);
  randomBytes(b);
  return b;
}

/** node:crypto as a worker with nodejs_compat sees it: hashing as Node does it, and every
 * random value drawn from the instance's PRNG (seeded from the run's choices). */
function makeNodeCrypto() {
  const ns = {
    createHash,
    createHmac,
    hash: cryptoHash,
    timingSafeEqual,
    pbkdf2Sync,
    randomBytes(size, callback) {
      const b = randomBuffer(size);
      if (typeof callback === 'function') {
        queueMicrotask(() => callback(null, b));
        return undefined;
      }
      return b;
    },
    randomFillSync(view, offset = 0, size) {
      const bytes = new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
      randomBytes(bytes.subarray(offset, size === undefined ? undefined : offset + size));
      return view;
    },
    randomInt(min, max, callback) {
      if (max === undefined || typeof max === 'function') {
        callback = max;
        max = min;
        min = 0;
      }
      if (!Number.isSafeInteger(min) || !Number.isSafeInteger(max) || max <= min) {
        throw new RangeError(`randomInt: give integers min < max (got ${min}, ${max})`);
      }
      const value = min + Math.floor((rng() / 4294967296) * (max - min));
      if (typeof callback === 'function') {
        queueMicrotask(() => callback(null, value));
        return undefined;
      }
      return value;
    },
    randomUUID: () => virtualCrypto.randomUUID(),
    getRandomValues: (array) => virtualCrypto.getRandomValues(array),
    webcrypto: virtualCrypto,
    subtle: virtualCrypto.subtle,
  };
  for (const name of ['pbkdf2', 'scrypt', 'scryptSync', 'generateKeyPair', 'generateKeyPairSync', 'generateKey', 'generateKeySync', 'createCipheriv', 'createDecipheriv', 'createSign', 'createVerify', 'createECDH', 'createDiffieHellman', 'generatePrime', 'generatePrimeSync', 'randomFill', 'hkdf', 'hkdfSync', 'sign', 'verify']) {
    ns[name] = cryptoRefused(name);
  }
  return { ...ns, default: Object.freeze({ ...ns }) };
}

/** A plain-data export (for qmodel's own settings, such as `pullBot`), or null. */
function plainExport(value) {
  if (value === null || typeof value !== 'object') return null;
  try {
    return JSON.parse(JSON.stringify(value));
  } catch {
    return null;
  }
}

function drop(id) {
  const inst = instances.get(id);
  if (inst === undefined) return;
  instances.delete(id);
  inst.objects.clear();
  for (const [cid, p] of pending) if (p.inst === id) pending.delete(cid);
  if (current === inst) current = null;
}

// -- the worker's globals -----------------------------------------------------------------------

function installGlobals() {
  const refuse = (what, why) => () => {
    throw new Error(`${what} is not available in qmodel's Node lane: ${why}`);
  };
  globalThis.Date = VirtualDate;
  globalThis.Response = WorkerResponse;
  // Math itself is frozen: the worker's Math is a copy whose random is the seeded PRNG.
  globalThis.Math = copyWith(Math, {
    random() {
      const hi = rng() >>> 5;
      const lo = rng() >>> 6;
      return (hi * 67108864 + lo) / 9007199254740992;
    },
  });
  installOffThreadRefusals(refuse);
  Object.defineProperty(globalThis, 'crypto', { value: virtualCrypto, writable: true, configurable: true, enumerable: true });
  Object.defineProperty(globalThis, 'performance', {
    value: { now: () => now - (current?.origin ?? 0), get timeOrigin() { return current?.origin ?? 0; } },
    writable: true,
    configurable: true,
  });
  globalThis.fetch = async (input) => {
    const url = input instanceof Request ? input.url : String(input);
    throw new TypeError(
      `fetch(${url}) refused: qmodel's Node lane gives a worker no network; reach other ` +
      'services through env bindings (KV, Durable Objects)',
    );
  };
  Object.defineProperty(globalThis, 'addEventListener', { value: addEventListener, writable: false, configurable: false, enumerable: true });
  provideCompatBuiltin('crypto', makeNodeCrypto());
  provideCompatBuiltin('timers', makeNodeTimers());
  provideCompatBuiltin('timers/promises', makeNodeTimerPromises());
  Object.assign(globalThis, VIRTUAL_TIMERS);
  const log = (level) => (...args) => {
    const store = als.getStore();
    emit({ e: 'log', rid: store ? store.rid : null, level, text: String(util.format(...args)) });
  };
  globalThis.console = {
    ...realConsole,
    log: log('log'),
    info: log('info'),
    warn: log('warn'),
    error: log('error'),
    debug: log('debug'),
    trace: log('trace'),
  };
  for (const name of ['process', 'require', 'module', 'exports']) {
    Object.defineProperty(globalThis, name, {
      get: refuse(name, 'a worker gets no host process (Workers have none either)'),
      set: undefined,
      configurable: true,
    });
  }
  lockGlobals();
}

// APIs whose work Node finishes on its thread pool or through its event loop, outside the
// host's control: when they settle could not be chosen, recorded or replayed (and the host
// would answer before they do). WebAssembly compiles synchronously instead, settling as a
// microtask of the code that asked; the others are refused, naming the API.
function installOffThreadRefusals(refuse) {
  const offThread = (name, where, instead) => {
    const fail = refuse(name, `${where}, outside the scheduler's control, so when it finishes could not be chosen or replayed; ${instead}`);
    // A function, so `new X()` and `X()` both throw the message.
    const Refused = function () { fail(); };
    Object.defineProperty(Refused, 'name', { value: name });
    globalThis[name] = Refused;
  };
  const compress = 'compress outside the code under test, or with a pure-JavaScript library';
  offThread('CompressionStream', 'Node compresses on its thread pool', compress);
  offThread('DecompressionStream', 'Node decompresses on its thread pool', compress);
  const direct = 'call the receiving code directly';
  offThread('MessageChannel', 'Node delivers its messages through the event loop', direct);
  offThread('MessagePort', 'Node delivers its messages through the event loop', direct);
  offThread('BroadcastChannel', 'Node delivers its messages through the event loop', direct);
  // Atomics.waitAsync settles on a real timer or another thread's notify, through the loop.
  globalThis.Atomics = copyWith(Atomics, {
    waitAsync() {
      refuse('Atomics.waitAsync', "it settles through Node's event loop, outside the scheduler's control; await a platform call or a timer instead")();
    },
  });
  const RealWasm = WebAssembly;
  const later = (fn) => Promise.resolve().then(fn);
  const streaming = (name, instead) => () => Promise.reject(new Error(
    `WebAssembly.${name} is not available in qmodel's Node lane (it compiles on a background ` +
    `thread, outside the scheduler's control); use WebAssembly.${instead}`,
  ));
  globalThis.WebAssembly = copyWith(RealWasm, {
    compile: (bytes) => later(() => new RealWasm.Module(bytes)),
    instantiate: (source, imports) => later(() => {
      if (source instanceof RealWasm.Module) return new RealWasm.Instance(source, imports);
      const module = new RealWasm.Module(source);
      return { module, instance: new RealWasm.Instance(module, imports) };
    }),
    compileStreaming: streaming('compileStreaming', 'compile(bytes)'),
    instantiateStreaming: streaming('instantiateStreaming', 'instantiate(bytes, imports)'),
  });
  if (typeof AbortSignal === 'function' && !Object.isFrozen(AbortSignal)) {
    // AbortSignal.timeout uses a host timer; on the virtual clock instead.
    Object.defineProperty(AbortSignal, 'timeout', {
      value(ms) {
        const controller = new AbortController();
        setVirtualTimeout(() => controller.abort(new DOMException('The operation was aborted due to timeout', 'TimeoutError')), ms);
        return controller.signal;
      },
      writable: true,
      configurable: true,
    });
  }
}

/** A frozen copy of the (frozen) namespace object `original` with `overrides` in place. */
function copyWith(original, overrides) {
  const descriptors = Object.getOwnPropertyDescriptors(original);
  for (const [name, value] of Object.entries(overrides)) {
    descriptors[name] = { value, writable: false, enumerable: false, configurable: false };
  }
  return Object.freeze(Object.create(Object.getPrototypeOf(original), descriptors));
}

// Globals the host reads at call time, or that would let a worker change what another test
// case sees: made read-only and non-configurable, so assigning one throws a TypeError.
const LOCKED_GLOBALS = [
  'globalThis', 'JSON', 'Object', 'Array', 'Function', 'Promise', 'Map', 'Set', 'WeakMap', 'WeakSet',
  'Reflect', 'Proxy', 'Symbol', 'String', 'Number', 'Boolean', 'BigInt', 'Error', 'TypeError',
  'RangeError', 'SyntaxError', 'Buffer', 'Response', 'Request', 'Headers', 'URL', 'URLSearchParams',
  'TextEncoder', 'TextDecoder', 'ArrayBuffer', 'SharedArrayBuffer', 'DataView', 'Uint8Array',
  'Int32Array', 'Atomics', 'Math', 'Date', 'crypto', 'performance', 'fetch', 'setTimeout',
  'setInterval', 'setImmediate', 'clearTimeout', 'clearInterval', 'clearImmediate', 'queueMicrotask',
  'structuredClone', 'WebAssembly', 'CompressionStream', 'DecompressionStream', 'MessageChannel',
  'MessagePort', 'BroadcastChannel', 'AbortSignal', 'AbortController', 'process', 'require', 'module',
  'exports',
];

function lockGlobals() {
  for (const name of LOCKED_GLOBALS) {
    let d = Object.getOwnPropertyDescriptor(globalThis, name);
    if (d === undefined || !d.configurable) continue;
    if (d.set !== undefined) {
      // Node defines some web globals lazily (accessors that define the value when first
      // used): use them once, then lock the value.
      void globalThis[name];
      d = Object.getOwnPropertyDescriptor(globalThis, name);
    }
    if ('value' in d) {
      Object.defineProperty(globalThis, name, { value: d.value, enumerable: d.enumerable, writable: false, configurable: false });
    } else {
      Object.defineProperty(globalThis, name, { get: d.get, set: undefined, enumerable: d.enumerable, configurable: false });
    }
  }
  // Not ECMAScript intrinsics, so --frozen-intrinsics left them alone: the host relies on them
  // (AsyncLocalStorage tells which request made a call; a worker may import async_hooks).
  for (const value of [Buffer, RealResponse, WorkerResponse, Request, Headers, crypto, crypto.subtle, performance, AbortSignal, AsyncLocalStorage]) {
    Object.freeze(value);
    if (typeof value === 'function') Object.freeze(value.prototype);
  }
}

realProcess.on('unhandledRejection', (reason) => {
  emit({ e: 'log', rid: null, level: 'uncaught', text: `Uncaught (in promise) ${describeError(reason).text}` });
});
realProcess.on('uncaughtException', (err) => {
  emit({ e: 'log', rid: null, level: 'uncaught', text: `Uncaught ${describeError(err).text}` });
});

// -- the command loop ---------------------------------------------------------------------------

const readBuffer = bufferAlloc(1 << 20);
let inbox = bufferAlloc(0);

// While the machine is quiet, Python makes the command pipe non-blocking (see Pacer in
// host.py): a read that finds nothing then spins for a while, since the next command usually
// comes within microseconds and a sleeping reader would add the kernel's wake-up latency to
// every round trip. A longer wait backs off to short sleeps of growing length, so an idle host
// costs next to no CPU. Timing here only paces the wait; it never reaches the worker or the
// run's results. On a busy machine the pipe is blocking and a read sleeps until a command.
const SPIN_NS = 1_000_000n;
const MAX_SLEEP_MS = 5;
const sleeper = new Int32Array(new SharedArrayBuffer(4));

function waitForInput(since) {
  const waited = realProcess.hrtime.bigint() - since;
  if (waited < SPIN_NS) return;
  Atomics.wait(sleeper, 0, 0, Math.min(MAX_SLEEP_MS, Number(waited / 10_000_000n) + 0.05));
}

function readLine() {
  let since = 0n;
  for (;;) {
    const i = inbox.indexOf(10);
    if (i >= 0) {
      const line = inbox.subarray(0, i).toString('utf8');
      inbox = inbox.subarray(i + 1);
      return line;
    }
    let n;
    try {
      n = fs.readSync(IN, readBuffer, 0, readBuffer.length, null);
    } catch (err) {
      if (err.code === 'EAGAIN') {
        if (since === 0n) since = realProcess.hrtime.bigint();
        waitForInput(since);
        continue;
      }
      if (err.code === 'EOF') n = 0;
      else throw err;
    }
    if (n === 0) realProcess.exit(0); // Python closed the pipe: the run is over
    inbox = inbox.length ? bufferConcat([inbox, readBuffer.subarray(0, n)]) : bufferFrom(readBuffer.subarray(0, n));
  }
}

function writeLine(text) {
  const data = bufferFrom(text + '\n', 'utf8');
  let off = 0;
  while (off < data.length) off += fs.writeSync(OUT, data, off, data.length - off);
}

function handle(cmd) {
  if (typeof cmd.now === 'number') now = cmd.now;
  if (cmd.drop) for (const id of cmd.drop) drop(id);
  switch (cmd.t) {
    case 'res':
      settle(cmd);
      return null;
    case 'fetch':
      workerFetch(cmd);
      return null;
    case 'dofetch':
      durableFetch(cmd);
      return null;
    case 'doalarm':
      durableAlarm(cmd);
      return null;
    case 'queue':
      workerQueue(cmd);
      return null;
    case 'load':
      return load(cmd);
    case 'ping':
      emit({ e: 'pong', version: realProcess.version });
      return null;
    case 'drop':
      return null;
    default:
      throw new Error(`unknown command ${JSON.stringify(cmd.t)}`);
  }
}

let replying = false;
let settling = 0;

// Runs once the microtasks of a command have drained. A package Node is importing settles
// through the event loop, not as a microtask: the host turns the loop until it has (bounded),
// so the run still ends only when every job waits on a platform call.
function afterRun() {
  if (nativeImportsPending() > 0 && settling < 200_000) {
    settling += 1;
    realSetImmediate(afterRun);
    return;
  }
  settling = 0;
  tick();
}

function tick() {
  if (replying) writeLine(jsonStringify(events));
  events = [];
  replying = true;
  let waiting = null;
  try {
    waiting = handle(jsonParse(readLine()));
  } catch (err) {
    emit({ e: 'hosterror', error: describeError(err).text, stack: String(err?.stack ?? '') });
  }
  if (waiting) waiting.then(() => realSetImmediate(afterRun), (err) => {
    emit({ e: 'hosterror', error: describeError(err).text, stack: String(err?.stack ?? '') });
    realSetImmediate(afterRun);
  });
  else realSetImmediate(afterRun);
}

try {
  installGlobals();
} catch (err) {
  // A bug of the host itself: say so and stop, rather than leave Python waiting.
  fs.writeSync(2, `qmodel's Node host failed to start: ${err?.stack ?? err}\n`);
  realProcess.exit(70);
}
tick();
