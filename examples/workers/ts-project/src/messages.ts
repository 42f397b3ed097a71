// The chat's messages (../../../docs/PROTOCOL.md) and the helpers both halves of the worker use.

export type Kind = 'human' | 'AI';
export type Status = 'pending' | 'processing' | 'complete' | 'failed';

export interface BotParams {
  entity: string;
  priority: number;
  status: Status;
  processed: boolean;
  attempts: number;
  claimedBy?: string | null;
  claimedAt?: number;
  completedAt?: number;
  replyId?: string;
  lastError?: string | null;
}

export interface Message {
  id: string;
  timestamp: number;
  text: string;
  username: string;
  color: string;
  domain: string;
  'message-type': Kind;
  replyTo?: string;
  botParams?: BotParams;
  clientTimestamp?: number | null;
}

/** What a queue route answers: an HTTP status and its JSON body. */
export type Answer = [number, Record<string, unknown>];

export const CORS: Record<string, string> = { 'access-control-allow-origin': '*' };

export function json(data: unknown, status = 200, headers: Record<string, string> = CORS): Response {
  return new Response(JSON.stringify(data), {
    status,
    headers: { ...headers, 'content-type': 'application/json' },
  });
}

export function byTime(a: Message, b: Message): number {
  if (a.timestamp !== b.timestamp) return a.timestamp < b.timestamp ? -1 : 1;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

export function byPriority(a: Message, b: Message): number {
  const pa = a.botParams?.priority ?? 0;
  const pb = b.botParams?.priority ?? 0;
  if (pa !== pb) return pb - pa;
  return (a.timestamp ?? 0) - (b.timestamp ?? 0);
}
