// The chat's worker (../../../docs/PROTOCOL.md, queue era) as a TypeScript Workers project:
// the queue lives in one Durable Object (./queue.ts), reached by RPC; the recent-messages list
// that GET /api/comments serves is a cache in KV, which every POST updates by reading the list,
// adding the message and writing it back.
//
// Check it: qmodel check --target examples/workers/ts-project

import { randomUUID } from 'node:crypto';
import type { Answer, Message } from './messages';
import { byPriority, byTime, CORS, json } from './messages';
import type { MessageQueue } from './queue';

export { MessageQueue } from './queue';

interface Env {
  COMMENTS_KV: KVNamespace;
  QUEUE: DurableObjectNamespace<MessageQueue>;
}

const CACHE_KEY = 'recent';
const CACHE_SIZE = 200;

function queue(env: Env) {
  return env.QUEUE.get(env.QUEUE.idFromName('queue'));
}

function newMessage(body: Record<string, any>, now: number): Message {
  const kind = body['message-type'] === 'AI' ? 'AI' : 'human';
  const msg: Message = {
    id: body.id || `${now}-${randomUUID().slice(0, 8)}`,
    timestamp: body.timestamp || now,
    text: body.text,
    username: body.username || 'anonymous',
    color: body.color || 'gray',
    domain: body.domain || 'saywhatwant.app',
    'message-type': kind,
    clientTimestamp: body.timestamp ?? null,
  };
  if (body.replyTo) msg.replyTo = body.replyTo;
  if (kind === 'human') {
    const params = body.botParams || {};
    msg.botParams = { entity: params.entity ?? 'default', priority: params.priority ?? 5, status: 'pending', processed: false, attempts: 0 };
  }
  return msg;
}

/** Put `msg` into the recent-messages cache: read it, add the message, write it back. */
async function addToCache(env: Env, msg: Message): Promise<void> {
  const cached = (await env.COMMENTS_KV.get<Message[]>(CACHE_KEY, 'json')) ?? [];
  const next = [msg, ...cached.filter((m) => m.id !== msg.id)].slice(0, CACHE_SIZE);
  await env.COMMENTS_KV.put(CACHE_KEY, JSON.stringify(next));
}

/** A finished message's new status, written into the cache the same way. */
async function updateCache(env: Env, msg: Message): Promise<void> {
  const cached = (await env.COMMENTS_KV.get<Message[]>(CACHE_KEY, 'json')) ?? [];
  const next = cached.map((m) => (m.id === msg.id ? msg : m));
  await env.COMMENTS_KV.put(CACHE_KEY, JSON.stringify(next));
}

async function post(body: Record<string, any>, env: Env): Promise<Response> {
  if (!body || typeof body !== 'object' || Array.isArray(body) || !body.text) {
    return json({ error: 'text is required' }, 400);
  }
  const [status, res] = await queue(env).post(newMessage(body, Date.now()));
  if (status !== 200) return json(res, status);
  const stored = res.message as Message;
  if (!res.duplicate) await addToCache(env, stored);
  return json(stored);
}

async function list(url: URL, env: Env): Promise<Response> {
  const params = url.searchParams;
  const limit = parseInt(params.get('limit') ?? '50', 10);
  const kind = params.get('type');
  let items: Message[];
  if (params.has('after')) {
    items = await queue(env).since(parseInt(params.get('after')!, 10), limit);
  } else {
    items = (await env.COMMENTS_KV.get<Message[]>(CACHE_KEY, 'json')) ?? [];
  }
  if (kind) items = items.filter((m) => m['message-type'] === kind);
  items = [...items].sort(byTime).reverse();
  if (params.has('after')) return json(items);
  return json({ comments: items.slice(0, limit), hasMore: items.length > limit });
}

async function finished(env: Env, id: string, answer: Answer): Promise<Response> {
  const [status, res] = answer;
  if (status === 200 && (res.status === 'complete' || res.status === 'failed')) {
    const [, found] = await queue(env).message(id);
    if (found.message) await updateCache(env, found.message as Message);
  }
  return json(res, status);
}

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const url = new URL(request.url);
    const path = url.pathname;
    const method = request.method;
    if (method === 'OPTIONS') return new Response('', { headers: CORS });
    let body: Record<string, any> = {};
    const text = await request.text();
    if (text) {
      try {
        body = JSON.parse(text);
      } catch {
        return json({ error: 'Invalid JSON' }, 400);
      }
    }
    const q = queue(env);
    if (path === '/api/comments' && method === 'POST') return post(body, env);
    if (path === '/api/comments' && method === 'GET') return list(url, env);
    if (path.startsWith('/api/comments/')) {
      const id = path.slice('/api/comments/'.length);
      if (method === 'GET') {
        const [status, res] = await q.message(id);
        return json(res.message ?? res, status);
      }
      if (method === 'PATCH') {
        const [status, res] = await q.patch(id, body?.botParams ?? {});
        return json(res.message ?? res, status);
      }
    }
    if (path === '/api/queue/pending' && method === 'GET') {
      const limit = parseInt(url.searchParams.get('limit') ?? '10', 10);
      return json({ pending: (await q.pending()).sort(byPriority).slice(0, limit) });
    }
    const id = body?.messageId ?? null;
    const workerId = body?.workerId ?? null;
    if (method === 'POST' && path === '/api/queue/claim') return json(...swap(await q.claim(id, workerId)));
    if (method === 'POST' && path === '/api/queue/claim-next') return json(...swap(await q.claimNext(workerId)));
    if (method === 'POST' && path === '/api/queue/complete') return finished(env, id, await q.finish(id, workerId, null));
    if (method === 'POST' && path === '/api/queue/fail') return finished(env, id, await q.finish(id, workerId, String(body?.error ?? 'failed')));
    return new Response('Not found', { status: 404, headers: CORS });
  },
};

function swap([status, body]: Answer): [Record<string, unknown>, number] {
  return [body, status];
}
