// The comments worker of seed 004 ("The Fix"), PATCH era, before its fix, as a Workers module.
//
// Messages are stored under `comment:{timestamp}:{id}`, the timestamp being the one the client
// sent. The bot lists `GET /api/comments?limit=N`, answers each message whose
// `botParams.processed` is false, then `PATCH /api/comments/{id}` with `processed: true`. The
// PATCH handler rebuilds the key from the timestamp inside the id (`id.split('-')[0]`); the
// client took the id and the timestamp from two clock reads, which can differ by a millisecond
// or two, so the PATCH answers 404, the message stays unprocessed and the bot answers it again
// and again (TS_KEY_404). The cache `recent:comments` is read-modify-written as in seed 000.
// The same design as qmodel's Python `CommentsWorker(Fixes.seed_004())`.
//
// Bindings: COMMENTS_KV (KV). Run it: qmodel check --target examples/workers/seed-004-patch.mjs --protocol patch

const CACHE_KEY = 'recent:comments';
const CACHE_SIZE = 200;
const CORS = { 'access-control-allow-origin': '*' };

let counter = 0;

function json(data, status = 200) {
  return new Response(JSON.stringify(data), {
    status,
    headers: { ...CORS, 'content-type': 'application/json' },
  });
}

function error(status, message) {
  return json({ error: message }, status);
}

function isInteger(text) {
  return /^[-+]?\d+$/.test(text.trim());
}

function byTime(a, b) {
  const ta = a.timestamp ?? 0;
  const tb = b.timestamp ?? 0;
  if (ta !== tb) return ta < tb ? -1 : 1;
  const ia = a.id ?? '';
  const ib = b.id ?? '';
  return ia < ib ? -1 : ia > ib ? 1 : 0;
}

function newMessage(body, now) {
  counter += 1;
  const kind = body['message-type'] || 'human';
  const msg = {
    id: body.id || `${now}-${counter.toString(16).padStart(6, '0')}`,
    timestamp: body.timestamp || now,
    text: body.text,
    username: body.username || 'anonymous',
    color: body.color || 'gray',
    domain: body.domain || 'saywhatwant.app',
    'message-type': kind,
  };
  if (body.replyTo) msg.replyTo = body.replyTo;
  if (kind === 'human') {
    const params = body.botParams || {};
    msg.botParams = {
      entity: params.entity ?? 'default',
      priority: params.priority ?? 5,
      status: 'pending',
      processed: false,
      attempts: 0,
    };
  }
  return msg;
}

function applyChange(cache, change) {
  if (change.op === 'prepend') {
    const m = change.message;
    return [m, ...cache.filter((c) => c.id !== m.id)].slice(0, CACHE_SIZE);
  }
  if (change.op === 'update') {
    return cache.map((c) => (c.id === change.id ? { ...c, botParams: { ...(c.botParams || {}), ...change.botParams } } : c));
  }
  return change.messages.slice(0, CACHE_SIZE);
}

// The key a message is stored under: the client's timestamp, then the id.
const keyOf = (msg) => `comment:${msg.timestamp}:${msg.id}`;

// seed 004, before the fix: `const timestamp = messageId.split('-')[0]`.
const locate = (id) => `comment:${id.split('-')[0]}:${id}`;

async function load(env, id) {
  const key = locate(id);
  const raw = await env.COMMENTS_KV.get(key);
  return [key, raw === null ? null : JSON.parse(raw)];
}

async function readCache(env) {
  const raw = await env.COMMENTS_KV.get(CACHE_KEY);
  return raw ? JSON.parse(raw) : [];
}

// The seeds' cache update: read, modify, write at this location; a failure is only logged.
async function changeCache(env, change) {
  try {
    const cache = change.op === 'replace' ? [] : await readCache(env);
    await env.COMMENTS_KV.put(CACHE_KEY, JSON.stringify(applyChange(cache, change)));
  } catch (err) {
    console.error('[Comments] Cache update failed', String(err));
  }
}

// PATCH writes the status back by rewriting the whole cache from the
// snapshot read when the request began.
async function statusToCache(env, msg, snapshot) {
  const messages = snapshot.map((m) => (m.id === msg.id ? msg : m));
  await changeCache(env, { op: 'replace', messages });
}

async function readJson(request) {
  try {
    return [await request.json(), null];
  } catch {
    return [null, error(400, 'Invalid JSON')];
  }
}

async function postComment(request, env) {
  const [body, bad] = await readJson(request);
  if (bad) return bad;
  if (!body || typeof body !== 'object' || Array.isArray(body) || !body.text) {
    return error(400, 'text is required');
  }
  const msg = newMessage(body, Date.now());
  const text = JSON.stringify(msg);
  try {
    await env.COMMENTS_KV.put(keyOf(msg), text);
  } catch (err) {
    return error(500, err.message);
  }
  await changeCache(env, { op: 'prepend', message: msg });
  return new Response(text, { headers: { ...CORS, 'content-type': 'application/json' } });
}

async function getComments(url, env) {
  const params = url.searchParams;
  const limitText = params.get('limit') ?? '50';
  const afterText = params.get('after');
  if (!isInteger(limitText) || (afterText !== null && !isInteger(afterText))) {
    return error(400, 'after and limit are integers');
  }
  const limit = parseInt(limitText, 10);
  const after = afterText === null ? null : parseInt(afterText, 10);
  const kind = params.get('type');
  let items = await readCache(env);
  if (after !== null) {
    items = items.filter((m) => (m.timestamp ?? 0) > after).sort(byTime).slice(0, limit);
  }
  if (kind) items = items.filter((m) => m['message-type'] === kind);
  items = [...items].sort(byTime).reverse();
  if (after !== null) return json(items);
  return json({ comments: items.slice(0, limit), hasMore: items.length > limit });
}

async function getComment(id, env) {
  const [, msg] = await load(env, id);
  return msg === null ? error(404, 'Message not found') : json(msg);
}

async function patchComment(id, request, env) {
  const [body, bad] = await readJson(request);
  if (bad) return bad;
  const fields = (body || {}).botParams || {};
  const snapshot = await readCache(env);
  const [key, msg] = await load(env, id);
  if (msg === null) return error(404, 'Message not found');
  const bp = { ...(msg.botParams || {}), ...fields };
  if (bp.processed && bp.status !== 'complete' && bp.status !== 'failed') bp.status = 'complete';
  const updated = { ...msg, botParams: bp };
  try {
    await env.COMMENTS_KV.put(key, JSON.stringify(updated));
  } catch (err) {
    return error(500, err.message);
  }
  await statusToCache(env, updated, snapshot);
  return json(updated);
}

export default {
  async fetch(request, env, ctx) {
    const url = new URL(request.url);
    const path = url.pathname;
    const method = request.method;
    if (method === 'OPTIONS') return new Response('', { headers: CORS });
    if (path === '/api/comments' && method === 'POST') return postComment(request, env);
    if (path === '/api/comments' && method === 'GET') return getComments(url, env);
    if (path.startsWith('/api/comments/')) {
      const id = path.slice('/api/comments/'.length);
      if (method === 'GET') return getComment(id, env);
      if (method === 'PATCH') return patchComment(id, request, env);
    }
    return new Response('Not found', { status: 404, headers: CORS });
  },
};
