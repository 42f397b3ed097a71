// QUEUES_SOUND: idempotent replies (the object refuses a second reply, 409), and the pull
// consumer acks a message after its reply is stored.
import { makeWorker } from './chat.mjs';

export { MessageQueue } from './chat.mjs';

export default makeWorker({ idempotentReply: true });
