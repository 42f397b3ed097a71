// QUEUES_PUSH_SOUND: queue() replies idempotently and acks each message after its reply, so a
// redelivery is refused (409) and acked, and a throw would retry only the unacked ones.
import { makeWorker } from './chat.mjs';

export { MessageQueue } from './chat.mjs';

export default makeWorker({ idempotentReply: true, push: true });
