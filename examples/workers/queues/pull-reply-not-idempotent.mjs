// QUEUES_REPLY_NOT_IDEMPOTENT: every reply is stored; a message redelivered after a lease ran
// out, a crash before the ack or a duplicate is answered twice.
import { makeWorker } from './chat.mjs';

export { MessageQueue } from './chat.mjs';

export default makeWorker({ idempotentReply: false });
