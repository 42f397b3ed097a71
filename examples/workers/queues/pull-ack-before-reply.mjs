// QUEUES_ACK_BEFORE_REPLY: the worker is the sound one, but its pull consumer acks each message
// as soon as it pulls it; a crash or a failed generation before the reply loses the message.
// `pullBot` tells qmodel how the pull consumer (the `queues` protocol's bot) orders its calls.
import { makeWorker } from './chat.mjs';

export { MessageQueue } from './chat.mjs';

export const pullBot = { ackBeforeReply: true };

export default makeWorker({ idempotentReply: true });
