// The `stock` service of Sagawire's order machine (machines/order.yaml), written from the wire
// protocol alone: commands prepare_order and release_stock (its compensation).
//
//   SAGAWIRE_AMQP_URL       amqp://guest:guest@localhost:5672/
//   STOCK_JOURNAL           dedupe journal file (stock-journal.jsonl)
//   STOCK_FAILURE_RATE      share of orders that fail somewhere (0.2); stock's share is out_of_stock
//   STOCK_HANDLER_DELAY_MS  time a command takes (0)
//   STOCK_PREFETCH          commands in flight at once (16)
import { setTimeout as sleep } from 'node:timers/promises';
import amqp from 'amqplib';
import { failingService } from './faults.mjs';
import { Journal } from './journal.mjs';
import { deadLetterOptions, readCommand, replyOptions, Unreadable } from './protocol.mjs';

const SERVICE = 'stock';
const QUEUE = `sagawire.${SERVICE}.commands`; // bound to sagawire.commands with `stock.*`
const REPLIES = 'sagawire.replies'; // direct; our routing key is our service name
const DLX = 'sagawire.dlx'; // direct; routing key: the queue's name

const env = process.env;
const url = env.SAGAWIRE_AMQP_URL || 'amqp://guest:guest@localhost:5672/';
const rate = Number(env.STOCK_FAILURE_RATE ?? 0.2);
const delayMs = Number(env.STOCK_HANDLER_DELAY_MS ?? 0);
const prefetch = Number(env.STOCK_PREFETCH ?? 16);

// One JSON object per line on stderr, with the keys of the Python services' logs.
function log(level, event, fields = {}) {
  const record = { event, level, service: SERVICE, ...fields, timestamp: new Date().toISOString() };
  process.stderr.write(`${JSON.stringify(record)}\n`);
}

const safeUrl = url.replace(/\/\/([^:/@]*):[^@]*@/, '//$1:***@'); // never log the password

const journal = new Journal(env.STOCK_JOURNAL || 'stock-journal.jsonl');
if (journal.droppedPartialLine) log('warning', 'journal_partial_line_dropped', { path: journal.path });

// The handlers: command -> [event, body, rejected]. Compensations never fail.
const handlers = {
  prepare_order({ input }) {
    if (failingService(input.order_id, rate) === SERVICE) {
      return ['out_of_stock', { sku: input.items?.[0]?.sku ?? null }, true]; // a business failure
    }
    return ['order_prepared', { reservation_id: `res-${crypto.randomUUID()}` }, false];
  },
  release_stock({ input, compensates }) {
    // x-sagawire-compensates names the key of the prepare_order it undoes. A step that timed out
    // on the orchestrator's side may never have been applied here: releasing nothing is a
    // success too (a rejected compensation is retried, and the saga ends `failed`).
    const done = compensates && journal.get(compensates);
    const reservationId = done && !done.rejected ? done.body.reservation_id : null;
    const body = { order_id: input.order_id, reservation_id: reservationId, released: reservationId !== null };
    return ['stock_released', body, false];
  },
};

// --- connecting, and waiting for the daemon to declare our queue ----------------------------

let conn;
while (!conn) {
  try {
    conn = await amqp.connect(url, { clientProperties: { connection_name: `sagawire ${SERVICE} (node)` } });
  } catch (err) {
    log('warning', 'broker_unreachable', { url: safeUrl, error: err.message, retry_in_s: 1 });
    await sleep(1000);
  }
}
log('info', 'connected', { url: safeUrl });
let stopping = false;
conn.on('error', (err) => log('error', 'connection_error', { error: err.message }));
conn.on('close', () => {
  if (stopping) return;
  // Unacked commands go back to the queue: restarted, the service answers them from the journal.
  log('error', 'connection_lost_exiting');
  process.exit(1);
});

// The queue's arguments must match the daemon's exactly: check it passively instead of declaring
// it. A failed check closes the channel (404), hence a new channel per try.
for (let waiting = false; ; waiting = true) {
  const probe = await conn.createChannel();
  probe.on('error', () => {});
  try {
    await probe.checkQueue(QUEUE);
    await probe.close();
    break;
  } catch (err) {
    if (err.code !== 404) throw err;
    if (!waiting) log('info', 'waiting_for_queue', { queue: QUEUE, hint: 'the daemon declares it at start' });
    await sleep(500);
  }
}

const ch = await conn.createConfirmChannel(); // publisher confirms on every publish
ch.on('error', (err) => log('error', 'channel_error', { error: err.message }));
await ch.prefetch(prefetch);

// A `mandatory` message that no queue took comes back as basic.return, before its confirm.
const returned = new Set();
ch.on('return', (msg) => returned.add(msg.properties.messageId));

class PublishFailed extends Error {}

// Resolves once the broker confirmed the message and routed it to a queue.
function publish(exchange, routingKey, content, options) {
  return new Promise((resolve, reject) => {
    ch.publish(exchange, routingKey, content, options, (err) => {
      if (returned.delete(options.messageId)) reject(new PublishFailed(`no queue for routing key ${routingKey}`));
      else if (err) reject(new PublishFailed(`the broker nacked the publish: ${err.message}`));
      else resolve();
    });
  });
}

// --- serving a command -----------------------------------------------------------------------

const applying = new Map(); // idempotency key -> promise, while its handler runs

async function serve(msg) {
  let command;
  try {
    command = readCommand(msg, handlers);
    if (typeof command.input.order_id !== 'string') throw new Unreadable('input order_id must be a string');
  } catch (err) {
    if (!(err instanceof Unreadable)) throw err;
    return deadLetter(msg, err.message);
  }
  const { key } = command;
  const { redelivered } = msg.fields;
  const fields = { saga_id: command.sagaId, command: command.name, key, attempt: String(command.attempt), redelivered };
  // Another delivery of the same key may be mid-handler (attempt 2 while attempt 1 still runs).
  while (!journal.get(key) && applying.has(key)) await applying.get(key).catch(() => {});
  let stored = journal.get(key);
  if (stored) {
    log('info', 'duplicate_answered', fields); // nothing applied, nothing written
  } else {
    const work = (async () => {
      await sleep(delayMs);
      if (command.compensates) await applying.get(command.compensates)?.catch(() => {});
      const [event, body, rejected] = handlers[command.name](command);
      journal.record(key, event, body, rejected); // the effect and its dedupe record: one write
    })();
    applying.set(key, work);
    await work.finally(() => applying.delete(key));
    stored = journal.get(key);
    log('info', 'applied', { ...fields, reply: stored.event, rejected: stored.rejected });
  }
  // The stored reply with the headers of *this* command (its attempt); ack once it is confirmed.
  const options = replyOptions(SERVICE, command, stored.event, stored.rejected);
  await publish(REPLIES, SERVICE, Buffer.from(JSON.stringify(stored.body)), options);
  ch.ack(msg);
}

// Publish it to sagawire.dlx (routing key: our queue's name) with the reason, then ack; if that
// fails, reject it without requeue and RabbitMQ dead-letters it (without our reason).
async function deadLetter(msg, reason) {
  log('warning', 'dead_lettered', { reason, type: msg.properties.type });
  try {
    await publish(DLX, QUEUE, msg.content, deadLetterOptions(msg, QUEUE, reason));
    ch.ack(msg);
  } catch (err) {
    log('warning', 'dead_letter_publish_failed', { error: err.message });
    ch.nack(msg, false, false);
  }
}

const inFlight = new Set();
let idle = () => {}; // called when the last command in flight is done

async function onDelivery(msg) {
  if (msg === null) {
    log('error', 'consumer_cancelled_by_broker');
    return shutdown(1);
  }
  const job = serve(msg).catch((err) => {
    // A reply the broker did not take: requeue, and the next delivery is answered from the journal
    // (a quorum queue's x-delivery-limit bounds the loop). Anything else: dead-letter it.
    const requeue = err instanceof PublishFailed;
    log('error', 'command_failed', { error: err.message, requeue });
    try {
      ch.nack(msg, false, requeue);
    } catch {} // the channel is gone: the broker requeues the command by itself
  });
  inFlight.add(job);
  await job;
  inFlight.delete(job);
  if (inFlight.size === 0) idle();
}

const { consumerTag } = await ch.consume(QUEUE, onDelivery, { noAck: false });
log('info', 'consuming', { queue: QUEUE, prefetch, failure_rate: rate, handler_delay_ms: delayMs });
process.stdout.write(`serving ${SERVICE}\n`);

// --- stopping: no new commands, let those in flight finish, close ----------------------------

async function shutdown(code) {
  if (stopping) return;
  stopping = true;
  log('info', 'stopping', { in_flight: inFlight.size });
  try {
    await ch.cancel(consumerTag);
    if (inFlight.size > 0) await new Promise((resolve) => (idle = resolve));
    await ch.close();
    await conn.close();
  } catch (err) {
    log('warning', 'close_failed', { error: err.message });
  }
  journal.close();
  log('info', 'stopped');
  process.exit(code);
}

for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => shutdown(0));
