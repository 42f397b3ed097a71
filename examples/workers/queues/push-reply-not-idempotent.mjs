// QUEUES_PUSH_REPLY_NOT_IDEMPOTENT: queue() stores every reply; a duplicate delivery is
// answered twice.
import { makeWorker } from './chat.mjs';

export { MessageQueue } from './chat.mjs';

export default makeWorker({ idempotentReply: false, push: true });
