// The queue of messages, one Durable Object: every route that reads or changes the queue is a
// method the worker calls on its stub (Durable Object RPC). Each method reads storage, decides
// and writes storage with only storage awaits in between, so the input gate makes it atomic.

import { DurableObject } from 'cloudflare:workers';
import type { Answer, BotParams, Message } from './messages';
import { byPriority } from './messages';

const LEASE_MS = 60_000;
const MAX_ATTEMPTS = 3;
// Durable Object storage reads at most 128 keys at once.
const BATCH = 128;

function isOpen(bp: BotParams, now: number): boolean {
  if (bp.status === 'pending') return true;
  return bp.status === 'processing' && now - (bp.claimedAt ?? 0) >= LEASE_MS;
}

export class MessageQueue extends DurableObject {
  private async record(id: string): Promise<Message | null> {
    return (await this.ctx.storage.get<Message>(`msg:${id}`)) ?? null;
  }

  private async view(ids: string[]): Promise<Message[]> {
    const out: Message[] = [];
    for (let i = 0; i < ids.length; i += BATCH) {
      const chunk = ids.slice(i, i + BATCH);
      const records = await this.ctx.storage.get<Message>(chunk.map((id) => `msg:${id}`));
      for (const id of chunk) {
        const found = records.get(`msg:${id}`);
        if (found !== undefined) out.push(found);
      }
    }
    return out;
  }

  /** Store a new message (stamped with a strictly increasing server time); a reply completes
   * the message it answers, and a second reply is refused. */
  async post(message: Message): Promise<Answer> {
    const existing = await this.record(message.id);
    if (existing !== null) return [200, { message: existing, duplicate: true }];
    const storage = this.ctx.storage;
    let original: Message | null = null;
    if (message.replyTo) {
      original = await this.record(message.replyTo);
      if (original?.botParams?.replyId) {
        return [409, { error: `message ${message.replyTo} already answered by ${original.botParams.replyId}` }];
      }
    }
    const last = (await storage.get<number>('clock')) ?? 0;
    const msg: Message = { ...message, timestamp: Math.max(Date.now(), last + 1) };
    const writes: Record<string, unknown> = { clock: msg.timestamp, [`msg:${msg.id}`]: msg };
    const timeline = (await storage.get<[number, string][]>('timeline')) ?? [];
    timeline.push([msg.timestamp, msg.id]);
    writes.timeline = timeline;
    let pending = (await storage.get<string[]>('pending')) ?? [];
    if (msg['message-type'] === 'human' && msg.botParams) pending = [...pending, msg.id];
    if (original !== null && message.replyTo) {
      const bp = { ...original.botParams!, status: 'complete', processed: true, replyId: msg.id, completedAt: Date.now() };
      writes[`msg:${message.replyTo}`] = { ...original, botParams: bp };
      pending = pending.filter((i) => i !== message.replyTo);
    }
    writes.pending = pending;
    await storage.put(writes);
    return [200, { message: msg }];
  }

  async message(id: string): Promise<Answer> {
    const rec = await this.record(id);
    return rec !== null ? [200, { message: rec }] : [404, { error: 'Message not found' }];
  }

  /** Every message with timestamp > after, oldest first, at most `limit`. */
  async since(after: number, limit: number): Promise<Message[]> {
    const timeline = (await this.ctx.storage.get<[number, string][]>('timeline')) ?? [];
    const ids = timeline.filter(([ts]) => ts > after).slice(0, limit).map(([, id]) => id);
    return this.view(ids);
  }

  async pending(): Promise<Message[]> {
    const ids = (await this.ctx.storage.get<string[]>('pending')) ?? [];
    const now = Date.now();
    return (await this.view(ids)).filter((m) => isOpen(m.botParams!, now));
  }

  async claim(id: string, workerId: string | null): Promise<Answer> {
    const rec = await this.record(id);
    if (rec === null) return [404, { success: false, error: 'Message not found' }];
    const bp = { ...rec.botParams! };
    const now = Date.now();
    if (!isOpen(bp, now)) return [409, { success: false, error: `Message is ${bp.status}, not pending` }];
    const claimed = { ...rec, botParams: { ...bp, status: 'processing', claimedBy: workerId, claimedAt: now } };
    await this.ctx.storage.put(`msg:${id}`, claimed);
    return [200, { success: true, message: claimed }];
  }

  async claimNext(workerId: string | null): Promise<Answer> {
    const open = await this.pending();
    if (open.length === 0) return [200, { success: false, message: null }];
    return this.claim(open.sort(byPriority)[0].id, workerId);
  }

  async finish(id: string, workerId: string | null, failure: string | null): Promise<Answer> {
    const rec = await this.record(id);
    if (rec === null) return [404, { success: false, error: 'Message not found' }];
    const bp: BotParams = { ...rec.botParams! };
    if (bp.status === 'complete' && failure === null) return [200, { success: true, status: 'complete', attempts: bp.attempts }];
    if ((bp.claimedBy ?? null) !== workerId) return [409, { success: false, error: `claimed by ${bp.claimedBy}` }];
    if (bp.status === 'complete' || bp.status === 'failed') return [409, { success: false, error: `Message is already ${bp.status}` }];
    if (failure === null) {
      Object.assign(bp, { status: 'complete', processed: true, completedAt: Date.now() });
    } else {
      bp.attempts += 1;
      Object.assign(bp, { status: bp.attempts >= MAX_ATTEMPTS ? 'failed' : 'pending', claimedBy: null, lastError: failure });
    }
    const writes: Record<string, unknown> = { [`msg:${id}`]: { ...rec, botParams: bp } };
    if (bp.status === 'complete' || bp.status === 'failed') {
      const pending = (await this.ctx.storage.get<string[]>('pending')) ?? [];
      writes.pending = pending.filter((i) => i !== id);
    }
    await this.ctx.storage.put(writes);
    return [200, { success: true, status: bp.status, attempts: bp.attempts }];
  }

  async patch(id: string, changes: Partial<BotParams>): Promise<Answer> {
    const rec = await this.record(id);
    if (rec === null) return [404, { error: 'Message not found' }];
    const bp = { ...rec.botParams!, ...changes };
    const writes: Record<string, unknown> = {};
    if (bp.processed && bp.status !== 'complete' && bp.status !== 'failed') {
      bp.status = 'complete';
      const pending = (await this.ctx.storage.get<string[]>('pending')) ?? [];
      writes.pending = pending.filter((i) => i !== id);
    }
    const updated = { ...rec, botParams: bp };
    writes[`msg:${id}`] = updated;
    await this.ctx.storage.put(writes);
    return [200, { message: updated }];
  }
}
