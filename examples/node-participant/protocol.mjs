// Reading commands and writing replies as the "Wire protocol" section of the repository's
// README.md says: properties, the x-sagawire-* headers and their types, dead-letter reasons.

// Thrown for a command that cannot be read: the caller dead-letters it, never retries it.
export class Unreadable extends Error {}

const utf8 = new TextDecoder('utf-8', { fatal: true });

// A value quoted in a reason: at most 60 characters of it.
function excerpt(value) {
  let text = Buffer.isBuffer(value) ? `<${value.length} bytes>` : String(JSON.stringify(value));
  if (typeof value === 'string') text = `'${value}'`;
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

// Header kinds ("Header types"): text is a string or a byte array of valid UTF-8; an integer is
// an AMQP integer of any width or a plain decimal string of up to 19 digits. amqplib decodes
// every AMQP number, floats included, to a JS number: a whole float (1.0) passes as 1 here.
const kinds = {
  text(name, value) {
    if (typeof value === 'string') return value;
    try {
      if (Buffer.isBuffer(value)) return utf8.decode(value);
    } catch {
      throw new Unreadable(`header ${name} must be valid UTF-8`);
    }
    throw new Unreadable(`header ${name} must be a string, got ${excerpt(value)}`);
  },
  integer(name, value) {
    const decimal = typeof value === 'string' && /^-?[0-9]{1,19}$/.test(value);
    const n = Number.isInteger(value) || decimal ? BigInt(value) : null;
    if (n === null || n < -(2n ** 63n) || n >= 2n ** 63n) {
      throw new Unreadable(`header ${name} must be an integer or a decimal string, got ${excerpt(value)}`);
    }
    return n;
  },
};

function header(headers, name, kind, required) {
  const value = headers[name];
  if (value !== undefined && value !== null) return kinds[kind](name, value);
  if (required) throw new Unreadable(`header ${name} is missing`);
  return undefined;
}

// Checks what a command must carry and returns what its handler and its reply need.
export function readCommand(msg, handlers) {
  const props = msg.properties;
  const headers = props.headers ?? {};
  if (props.contentEncoding && props.contentEncoding.toLowerCase() !== 'identity') {
    throw new Unreadable(`content_encoding ${excerpt(props.contentEncoding)} is not supported`);
  }
  if (props.contentType) {
    const [mime, ...params] = props.contentType.split(';').map((p) => p.trim().toLowerCase());
    const charset = params.find((p) => p.startsWith('charset='))?.slice(8).replaceAll('"', '');
    if (mime !== 'application/json') {
      throw new Unreadable(`content_type ${excerpt(props.contentType)} is not JSON`);
    }
    if (charset && charset !== 'utf-8' && charset !== 'utf8') {
      throw new Unreadable(`charset ${excerpt(charset)} is not UTF-8`);
    }
  }
  if (!props.type) throw new Unreadable('property type (the command name) is missing');
  if (!props.correlationId) throw new Unreadable('property correlation_id (the saga id) is missing');
  if (!Object.hasOwn(handlers, props.type)) {
    throw new Unreadable(`no handler for command ${excerpt(props.type)}`);
  }
  let input;
  try {
    input = JSON.parse(utf8.decode(msg.content));
  } catch (err) {
    throw new Unreadable(`body is not valid JSON: ${err.message.slice(0, 100)}`);
  }
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    throw new Unreadable(`body must be a JSON object, got ${Array.isArray(input) ? 'list' : typeof input}`);
  }
  const visit = header(headers, 'x-sagawire-visit', 'integer', true);
  const attempt = header(headers, 'x-sagawire-attempt', 'integer', true);
  if (visit < 1n || attempt < 1n) throw new Unreadable(`visit ${visit} and attempt ${attempt} must be positive`);
  return {
    name: props.type,
    sagaId: props.correlationId,
    input,
    key: header(headers, 'x-sagawire-idempotency-key', 'text', true),
    machine: header(headers, 'x-sagawire-machine', 'text', true),
    step: header(headers, 'x-sagawire-step', 'text', true),
    visit,
    attempt,
    version: header(headers, 'x-sagawire-version', 'integer', false),
    compensates: header(headers, 'x-sagawire-compensates', 'text', false),
    traceparent: typeof headers.traceparent === 'string' ? headers.traceparent : undefined,
  };
}

// Publish options of a reply to `command`. Integers go out as 64-bit AMQP integers (`long`;
// amqplib would pick the smallest width), strings as long strings, the flag as a boolean.
export function replyOptions(service, command, event, rejected) {
  const long = (value) => ({ '!': 'long', value });
  const headers = {
    'x-sagawire-service': service,
    'x-sagawire-machine': command.machine,
    'x-sagawire-step': command.step,
    'x-sagawire-visit': long(command.visit),
    'x-sagawire-attempt': long(command.attempt),
    'x-sagawire-idempotency-key': command.key,
  };
  if (command.version !== undefined) headers['x-sagawire-version'] = long(command.version);
  if (command.traceparent !== undefined) headers.traceparent = command.traceparent;
  if (rejected) headers['x-sagawire-rejected'] = true;
  return {
    type: event,
    correlationId: command.sagaId,
    messageId: crypto.randomUUID(),
    contentType: 'application/json',
    persistent: true, // delivery_mode 2
    mandatory: true, // a reply no queue takes comes back (basic.return) instead of vanishing
    headers,
  };
}

// Publish options of a dead letter: the command's own properties and headers, plus the reason
// and where the command was (the daemon's dead letters carry these same headers). user_id is
// checked by RabbitMQ against the publishing user, expiration would let the dead letter vanish:
// neither is kept.
export function deadLetterOptions(msg, queue, reason) {
  const { userId, expiration, ...properties } = msg.properties;
  return {
    ...properties,
    messageId: properties.messageId ?? crypto.randomUUID(),
    persistent: true,
    mandatory: true,
    headers: {
      ...properties.headers,
      'x-sagawire-dead-letter-reason': Buffer.from(`invalid_message: ${reason}`).subarray(0, 900).toString(),
      'x-sagawire-dead-letter-queue': queue,
      'x-sagawire-original-exchange': msg.fields.exchange,
      'x-sagawire-original-routing-key': msg.fields.routingKey,
    },
  };
}
