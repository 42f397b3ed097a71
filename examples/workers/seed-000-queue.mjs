// The comments worker of seed 000 ("Complete Message Flow"), queue era, as a Workers module.
//
// Messages live under `comment:{id}`; the endpoints read and read-modify-write the cache key
// `recent:comments` (the last 200 messages). It has every bug seed 000 describes, the same as
// qmodel's Python design `CommentsWorker(Fixes.seed_000())`:
//
// - CACHE_LOST_UPDATE: two POSTs read-modify-write `recent:comments`; one message never
//   reaches the cache (a failed cache write is only logged);
// - STATUS_WRITE_CLOBBERS_CACHE: claim/complete/fail/PATCH rewrite the whole cache from the copy
//   read when the request began, erasing what was posted in between;
// - GHOST_PENDING: the pending endpoint "self-heals" a cached status by writing back the copy
//   it read;
// - CLAIM_NOT_ATOMIC: claim is get, check pending, put: two bots can both win;
// - CRASH_AFTER_REPLY: nothing completes a message whose bot died after replying;
// - CACHE_TRIM_DROPS_PENDING: the bot only ever sees pending messages among the cached 200;
// - STALE_CACHE_RMW: a location with a stale copy of the cache writes it back;
// - POLL_MISSES_MESSAGE: `after` compares the clients' own timestamps.
//
// Bindings: COMMENTS_KV (KV). Run it: qmodel check --target examples/workers/seed-000-queue.mjs --protocol queue

const CACHE_KEY = 'recent:comments';
const CACHE_SIZE = 200;
const MAX_ATTEMPTS = 3;
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

const keyOf = (id) => `comment:${id}`;

async function load(env, id) {
  const key = keyOf(id);
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

// claim/complete/fail/PATCH write the status back by rewriting the whole cache from the
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
    await env.COMMENTS_KV.put(keyOf(msg.id), text);
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

async function pending(url, env) {
  const limitText = url.searchParams.get('limit') ?? '10';
  if (!isInteger(limitText)) return error(400, 'limit is an integer');
  const limit = parseInt(limitText, 10);
  let cache = await readCache(env);
  const candidates = new Map();
  for (const m of cache) {
    if (m['message-type'] === 'human' && (m.botParams || {}).status === 'pending') candidates.set(m.id, m);
  }
  const found = [];
  let heal = false;
  for (const [id, cached] of candidates) {
    const [, actual] = await load(env, id);
    if (actual === null) continue;
    const bp = actual.botParams || {};
    if ('botParams' in cached && bp.status !== (cached.botParams || {}).status) {
      // SELF-HEALING (seed 000, step 4): the cached status is wrong; fix the copy.
      heal = true;
      cache = cache.map((c) => (c.id === id ? actual : c));
    }
    if (bp.status === 'pending') found.push(actual);
  }
  if (heal) {
    try {
      await env.COMMENTS_KV.put(CACHE_KEY, JSON.stringify(cache));
    } catch (err) {
      console.error('[Queue] Cache heal failed', String(err));
    }
  }
  found.sort((a, b) => {
    const pa = (a.botParams || {}).priority ?? 0;
    const pb = (b.botParams || {}).priority ?? 0;
    if (pa !== pb) return pb - pa;
    return (a.timestamp ?? 0) - (b.timestamp ?? 0);
  });
  return json({ pending: found.slice(0, limit) });
}

// The shared shape of claim, complete and fail: load the message, decide, write it, rewrite
// the cache. `decide` returns [status, error] to refuse, null when nothing changes, or the new
// botParams.
async function transition(request, env, decide, answer) {
  const [body, bad] = await readJson(request);
  if (bad) return bad;
  const id = (body || {}).messageId;
  if (!id) return error(400, 'messageId is required');
  const snapshot = await readCache(env);
  const [key, msg] = await load(env, id);
  if (msg === null) return error(404, 'Message not found');
  const outcome = decide({ ...(msg.botParams || {}) }, Date.now(), body);
  if (Array.isArray(outcome)) return json({ success: false, error: outcome[1] }, outcome[0]);
  if (outcome === null) return json(answer(msg));
  const updated = { ...msg, botParams: outcome };
  try {
    await env.COMMENTS_KV.put(key, JSON.stringify(updated));
  } catch (err) {
    return error(500, err.message);
  }
  await statusToCache(env, updated, snapshot);
  return json(answer(updated));
}

function claim(request, env) {
  return transition(
    request,
    env,
    (bp, now, body) => {
      if (bp.status !== 'pending') return [409, `Message is ${bp.status}, not pending`];
      return { ...bp, status: 'processing', claimedBy: body.workerId ?? null, claimedAt: now };
    },
    (msg) => ({ success: true, message: msg }),
  );
}

function complete(request, env) {
  return transition(
    request,
    env,
    (bp, now) => {
      if (bp.status === 'complete') return null;
      if (bp.status !== 'processing') return [409, `Message is ${bp.status}, not processing`];
      return { ...bp, status: 'complete', processed: true, completedAt: now };
    },
    () => ({ success: true }),
  );
}

function fail(request, env) {
  return transition(
    request,
    env,
    (bp) => {
      if (bp.status === 'complete' || bp.status === 'failed') return [409, `Message is already ${bp.status}`];
      const attempts = (parseInt(bp.attempts, 10) || 0) + 1;
      return { ...bp, status: attempts >= MAX_ATTEMPTS ? 'failed' : 'pending', attempts, claimedBy: null };
    },
    (msg) => ({ success: true, status: msg.botParams.status, attempts: msg.botParams.attempts }),
  );
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
    if (path === '/api/queue/pending' && method === 'GET') return pending(url, env);
    if (path === '/api/queue/claim' && method === 'POST') return claim(request, env);
    if (path === '/api/queue/complete' && method === 'POST') return complete(request, env);
    if (path === '/api/queue/fail' && method === 'POST') return fail(request, env);
    return new Response('Not found', { status: 404, headers: CORS });
  },
};
