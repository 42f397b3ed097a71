// The seeds' chat on Cloudflare Queues, as a Workers module: the messages live in the
// `MessageQueue` Durable Object (the sound design's), the work goes through the queue `comments`.
// The same designs as qmodel's Python `QueuesChatWorker` and `QueuesPushWorker`
// (qmodel/workers/queues_chat.py), switch for switch.
//
// POST /api/comments stores a message through the object and, for a human message, sends
// { id } to the queue (env.COMMENTS_QUEUE) before answering 200: once send() resolves the
// message is durably in the queue (reference Q1.2). Then either
//
// * an HTTP pull consumer (qmodel's bot of the `queues` protocol) pulls it, generates, posts
//   the reply and acks the lease; or
// * this worker is the push consumer: queue(batch, env, ctx) writes each reply through the
//   object and acks that message, or retries it when the object did not take the reply.
//
// Delivery is at least once (Q3.1): a lease that runs out during a generation, a crash between
// reply and ack, a duplicate. `idempotentReply` (the sound choice) has the object refuse a
// second reply to a message (409) and complete the message with the first in the same step, so
// a redelivered message is acked without a second answer; without it every reply is stored and
// the message is marked complete afterwards, so a redelivery is answered twice.
//
// The designs are the small modules beside it (pull-*.mjs, push-*.mjs); wrangler.toml says which
// consumer the queue has: an HTTP pull consumer at its top level, a push consumer in its
// environment `push` (qmodel check --env push).

const CORS = { 'access-control-allow-origin': '*' };
const CACHE_SIZE = 200;
const LEASE_MS = 60_000;
const MAX_ATTEMPTS = 3;
// How long the push consumer's reply takes to write (ms): a model call, say.
const PUSH_REPLY_MS = 1_500;
// Durable Object storage reads at most 128 keys at once.
const BATCH = 128;

let counter = 0;

function json(data, status = 200, headers = CORS) {
  return new Response(JSON.stringify(data), {
    status,
    headers: { ...headers, 'content-type': 'application/json' },
  });
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

function byPriority(a, b) {
  const pa = (a.botParams || {}).priority ?? 0;
  const pb = (b.botParams || {}).priority ?? 0;
  if (pa !== pb) return pb - pa;
  return (a.timestamp ?? 0) - (b.timestamp ?? 0);
}

function byTime(a, b) {
  if (a.timestamp !== b.timestamp) return a.timestamp < b.timestamp ? -1 : 1;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

// -- the worker ---------------------------------------------------------------------------------

async function call(env, route, body = {}) {
  const stub = env.QUEUE.get(env.QUEUE.idFromName('queue'));
  const response = await stub.fetch(`https://queue.internal${route}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return [response.status, await response.json()];
}

// Store the message; a human one is then sent to the queue before the 200.
async function post(body, env, ctx, idempotentReply) {
  if (!body || typeof body !== 'object' || Array.isArray(body) || !body.text) {
    return json({ error: 'text is required' }, 400);
  }
  const msg = newMessage(body, Date.now());
  // The server's clock orders messages (the queue object restamps it); keep the client's.
  msg.clientTimestamp = body.timestamp ?? null;
  const replyTo = msg.replyTo;
  const idempotent = idempotentReply || !replyTo;
  const [status, res] = await call(env, '/post', { message: msg, stamp: true, replyCompletes: idempotent });
  if (status !== 200) return json(res, status);
  const stored = res.message;
  if (!idempotent) {
    // Every reply is stored; the message it answers is marked complete afterwards.
    const done = { status: 'complete', processed: true, replyId: stored.id };
    await call(env, '/update', { id: replyTo, botParams: done });
  }
  if (stored['message-type'] === 'human') await env.COMMENTS_QUEUE.send({ id: stored.id });
  ctx.waitUntil(env.COMMENTS_KV.put(`comment:${stored.id}`, JSON.stringify(stored)));
  return json(stored);
}

// The push consumer: reply to each message of the batch through the object, then ack it; a
// message the object did not take is retried alone (a throw would retry every unacked one).
async function consume(batch, env, idempotentReply) {
  for (const message of batch.messages) {
    const mid = message.body !== null && typeof message.body === 'object' ? message.body.id : undefined;
    if (typeof mid !== 'string') {
      message.ack(); // not ours: never retry what cannot be answered
      continue;
    }
    await new Promise((resolve) => setTimeout(resolve, PUSH_REPLY_MS));
    const reply = newMessage({
      text: `reply to ${mid}`,
      username: 'push-consumer',
      color: 'green',
      domain: 'saywhatwant.app',
      'message-type': 'AI',
      replyTo: mid,
    }, Date.now());
    const [status, res] = await call(env, '/post', { message: reply, stamp: true, replyCompletes: idempotentReply });
    if (status === 200 && !idempotentReply) {
      const done = { status: 'complete', processed: true, replyId: res.message.id };
      await call(env, '/update', { id: mid, botParams: done });
    }
    if (status === 200 || status === 409) message.ack(); // 409: already answered (a redelivery)
    else message.retry();
  }
}

async function list(url, env) {
  const params = url.searchParams;
  const limit = parseInt(params.get('limit') ?? '50', 10);
  const kind = params.get('type');
  let items;
  if (params.has('after')) {
    [, { messages: items }] = await call(env, '/since', { after: parseInt(params.get('after'), 10), limit });
  } else {
    [, { messages: items }] = await call(env, '/recent');
  }
  if (kind) items = items.filter((m) => m['message-type'] === kind);
  items = [...items].sort(byTime).reverse();
  if (params.has('after')) return json(items);
  return json({ comments: items.slice(0, limit), hasMore: items.length > limit });
}

const QUEUE_ROUTES = {
  '/api/queue/claim': '/claim',
  '/api/queue/complete': '/complete',
  '/api/queue/fail': '/fail',
  '/api/queue/claim-next': '/claim-next',
};

async function serve(request, env, ctx, idempotentReply) {
  const url = new URL(request.url);
  const path = url.pathname;
  const method = request.method;
  if (method === 'OPTIONS') return new Response('', { headers: CORS });
  let body = {};
  const text = await request.text();
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      return json({ error: 'Invalid JSON' }, 400);
    }
  }
  if (path === '/api/comments' && method === 'POST') return post(body, env, ctx, idempotentReply);
  if (path === '/api/comments' && method === 'GET') return list(url, env);
  if (path.startsWith('/api/comments/')) {
    const id = path.slice('/api/comments/'.length);
    if (method === 'GET') {
      const [status, res] = await call(env, '/message', { id });
      return json(res.message ?? res, status);
    }
    if (method === 'PATCH') {
      const [status, res] = await call(env, '/patch', { id, botParams: (body || {}).botParams || {} });
      return json(res.message ?? res, status);
    }
  }
  if (path === '/api/queue/pending' && method === 'GET') {
    const limit = parseInt(url.searchParams.get('limit') ?? '10', 10);
    const [, res] = await call(env, '/pending', { leaseMs: LEASE_MS });
    return json({ pending: [...res.messages].sort(byPriority).slice(0, limit) });
  }
  if (method === 'POST' && path in QUEUE_ROUTES) {
    const [status, res] = await call(env, QUEUE_ROUTES[path], {
      id: (body || {}).messageId ?? null,
      workerId: (body || {}).workerId ?? null,
      error: (body || {}).error ?? null,
      leaseMs: LEASE_MS,
      checkClaimer: true,
    });
    return json(res, status);
  }
  return new Response('Not found', { status: 404, headers: CORS });
}

/** The worker of one design: `idempotentReply` (the sound choice) and, for a push consumer,
 * `push` (a queue() handler). */
export function makeWorker({ idempotentReply = true, push = false } = {}) {
  const worker = {
    fetch(request, env, ctx) {
      return serve(request, env, ctx, idempotentReply);
    },
  };
  if (push) {
    worker.queue = (batch, env) => consume(batch, env, idempotentReply);
  }
  return worker;
}

// -- the queue object ---------------------------------------------------------------------------

function isOpen(bp, now, leaseMs) {
  if (bp.status === 'pending') return true;
  return bp.status === 'processing' && leaseMs != null && now - (bp.claimedAt || 0) >= leaseMs;
}

export class MessageQueue {
  constructor(state, env) {
    this.storage = state.storage;
    this.env = env;
  }

  async fetch(request) {
    const route = new URL(request.url).pathname;
    const text = await request.text();
    const body = text ? JSON.parse(text) : {};
    const handler = MessageQueue.routes[route];
    if (!handler) return json({ error: `no route ${route}` }, 404, {});
    const [status, payload] = await handler.call(this, body);
    return json(payload, status, {});
  }

  async record(id) {
    return (await this.storage.get(`msg:${id}`)) ?? null;
  }

  async view(ids) {
    const out = [];
    for (let i = 0; i < ids.length; i += BATCH) {
      const chunk = ids.slice(i, i + BATCH);
      const records = await this.storage.get(chunk.map((id) => `msg:${id}`));
      for (const id of chunk) if (records.has(`msg:${id}`)) out.push(records.get(`msg:${id}`));
    }
    return out;
  }

  async stamp() {
    const last = (await this.storage.get('clock')) ?? 0;
    const ts = Math.max(Date.now(), last + 1);
    await this.storage.put('clock', ts);
    return ts;
  }

  // POST a message: stamp it, add it to `recent`, the timeline and (a human message) the
  // pending index. A reply completes the message it answers; a second reply is refused.
  async post(body) {
    const msg = { ...body.message };
    const existing = await this.record(msg.id);
    if (existing !== null) return [200, { message: existing, duplicate: true }];
    const replyTo = msg.replyTo;
    let original = null;
    if (body.replyCompletes && replyTo) {
      original = await this.record(replyTo);
      if (original !== null && (original.botParams || {}).replyId) {
        return [409, { error: `message ${replyTo} already answered by ${original.botParams.replyId}` }];
      }
    }
    if (body.stamp) msg.timestamp = await this.stamp();
    const writes = { [`msg:${msg.id}`]: msg };
    const timeline = (await this.storage.get('timeline')) ?? [];
    const entry = [msg.timestamp ?? 0, msg.id];
    let at = timeline.length;
    while (at > 0 && (timeline[at - 1][0] > entry[0] || (timeline[at - 1][0] === entry[0] && timeline[at - 1][1] > entry[1]))) at--;
    timeline.splice(at, 0, entry);
    writes.timeline = timeline;
    const recent = (await this.storage.get('recent')) ?? [];
    writes.recent = [msg.id, ...recent.filter((i) => i !== msg.id)].slice(0, CACHE_SIZE);
    if (msg['message-type'] === 'human' && msg.botParams != null) {
      const pending = (await this.storage.get('pending')) ?? [];
      writes.pending = [...pending, msg.id];
    }
    if (original !== null) {
      const bp = { ...(original.botParams || {}), status: 'complete', processed: true, replyId: msg.id, completedAt: Date.now() };
      writes[`msg:${replyTo}`] = { ...original, botParams: bp };
      const pending = writes.pending ?? ((await this.storage.get('pending')) ?? []);
      writes.pending = pending.filter((i) => i !== replyTo);
    }
    await this.storage.put(writes);
    return original !== null ? [200, { message: msg, completed: writes[`msg:${replyTo}`] }] : [200, { message: msg }];
  }

  async recent() {
    return [200, { messages: await this.view((await this.storage.get('recent')) ?? []) }];
  }

  // Merge botParams fields into one message (the non-idempotent reply's completion).
  async update(body) {
    const rec = await this.record(body.id);
    if (rec === null) return [404, { error: 'Message not found' }];
    const bp = { ...(rec.botParams || {}), ...body.botParams };
    const writes = { [`msg:${body.id}`]: { ...rec, botParams: bp } };
    if (bp.status === 'complete' || bp.status === 'failed') {
      const pending = (await this.storage.get('pending')) ?? [];
      writes.pending = pending.filter((i) => i !== body.id);
    }
    await this.storage.put(writes);
    return [200, { ok: true }];
  }

  async message(body) {
    const rec = await this.record(body.id);
    return rec !== null ? [200, { message: rec }] : [404, { error: 'Message not found' }];
  }

  // Every message with timestamp > after, oldest first, at most `limit`.
  async since(body) {
    const after = body.after ?? 0;
    const limit = body.limit ?? 50;
    const timeline = (await this.storage.get('timeline')) ?? [];
    let start = 0;
    while (start < timeline.length && timeline[start][0] <= after) start++;
    return [200, { messages: await this.view(timeline.slice(start, start + limit).map(([, id]) => id)) }];
  }

  async pending(body) {
    const ids = (await this.storage.get('pending')) ?? [];
    if (body.idsOnly) return [200, { ids }];
    const now = Date.now();
    const open = (await this.view(ids)).filter((m) => isOpen(m.botParams || {}, now, body.leaseMs));
    return [200, { messages: open }];
  }

  async claim(body) {
    const rec = await this.record(body.id);
    if (rec === null) return [404, { success: false, error: 'Message not found' }];
    const bp = { ...(rec.botParams || {}) };
    const now = Date.now();
    if (!isOpen(bp, now, body.leaseMs)) return [409, { success: false, error: `Message is ${bp.status}, not pending` }];
    const claimed = { ...rec, botParams: { ...bp, status: 'processing', claimedBy: body.workerId, claimedAt: now } };
    await this.storage.put(`msg:${body.id}`, claimed);
    return [200, { success: true, message: claimed }];
  }

  async claimNext(body) {
    const [, found] = await this.pending(body);
    if (found.messages.length === 0) return [200, { success: false, message: null }];
    const first = [...found.messages].sort(byPriority)[0];
    return this.claim({ ...body, id: first.id });
  }

  async finish(body, fields) {
    const rec = await this.record(body.id);
    if (rec === null) return [404, { success: false, error: 'Message not found' }];
    const bp = { ...(rec.botParams || {}) };
    if (bp.status === 'complete' && fields.status === 'complete') {
      // Completing twice (a reply already completed it) is not an error.
      return [200, { success: true, status: 'complete', attempts: bp.attempts ?? 0 }];
    }
    if (body.checkClaimer && (bp.claimedBy ?? null) !== (body.workerId ?? null)) {
      return [409, { success: false, error: `claimed by ${bp.claimedBy}` }];
    }
    if (bp.status === 'complete' || bp.status === 'failed') {
      return [409, { success: false, error: `Message is already ${bp.status}` }];
    }
    let change = fields;
    if (fields.status === 'fail') {
      const attempts = (bp.attempts || 0) + 1;
      change = { status: attempts >= MAX_ATTEMPTS ? 'failed' : 'pending', attempts, claimedBy: null, lastError: body.error ?? null };
    }
    Object.assign(bp, change);
    const writes = { [`msg:${body.id}`]: { ...rec, botParams: bp } };
    if (bp.status === 'complete' || bp.status === 'failed') {
      const pending = (await this.storage.get('pending')) ?? [];
      writes.pending = pending.filter((i) => i !== body.id);
    }
    await this.storage.put(writes);
    return [200, { success: true, status: bp.status, attempts: bp.attempts ?? 0 }];
  }

  complete(body) {
    return this.finish(body, { status: 'complete', processed: true, completedAt: Date.now() });
  }

  fail(body) {
    return this.finish(body, { status: 'fail' });
  }

  async patch(body) {
    const rec = await this.record(body.id);
    if (rec === null) return [404, { error: 'Message not found' }];
    const bp = { ...(rec.botParams || {}), ...(body.botParams || {}) };
    const writes = {};
    if (bp.processed && bp.status !== 'complete' && bp.status !== 'failed') {
      bp.status = 'complete';
      const pending = (await this.storage.get('pending')) ?? [];
      writes.pending = pending.filter((i) => i !== body.id);
    }
    const updated = { ...rec, botParams: bp };
    writes[`msg:${body.id}`] = updated;
    await this.storage.put(writes);
    return [200, { message: updated }];
  }

  static routes = {
    '/post': MessageQueue.prototype.post,
    '/recent': MessageQueue.prototype.recent,
    '/message': MessageQueue.prototype.message,
    '/update': MessageQueue.prototype.update,
    '/since': MessageQueue.prototype.since,
    '/pending': MessageQueue.prototype.pending,
    '/claim': MessageQueue.prototype.claim,
    '/claim-next': MessageQueue.prototype.claimNext,
    '/complete': MessageQueue.prototype.complete,
    '/fail': MessageQueue.prototype.fail,
    '/patch': MessageQueue.prototype.patch,
  };
}
