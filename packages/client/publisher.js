// Switchyard publisher for back-end services in Node (or any runtime with fetch): typed events
// over HTTP (`POST /api/events`), with an idempotency key on every event so a retry after a
// lost answer is stored once, batches committed all or nothing, retries with full-jitter
// backoff on what a retry can fix (network errors, 429, 502, 503, 504; `Retry-After` honoured),
// and a `PublishError` naming the code and field when the server refuses an event.
//
//   import { Publisher } from '@switchyard/client/publisher';
//   const pub = new Publisher({ url: 'http://127.0.0.1:8080', token: process.env.SWITCHYARD_TOKEN });
//   const { id } = await pub.publish('alert:critical', { title: 'Freezer 3 is warm' });

/** The server refused the request (or every retry failed): `code` and `field` say why. */
export class PublishError extends Error {
  constructor({ status = 0, code = 'unavailable', field = undefined, message, retryable = false }) {
    super(message);
    this.name = 'PublishError';
    this.status = status;
    this.code = code;
    this.field = field;
    this.retryable = retryable;
  }
}

const RETRYABLE = new Set([429, 502, 503, 504]);

const DEFAULTS = {
  url: '',
  token: undefined,
  retries: 5,
  initialDelayMs: 200,
  maxDelayMs: 10000,
};

export class Publisher {
  constructor(options = {}) {
    this.options = { ...DEFAULTS, ...options };
    this.fetch = options.fetch ?? globalThis.fetch?.bind(globalThis);
    this.random = options.random ?? Math.random;
    this.sleep = options.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms)));
    this.newKey = options.newKey ?? (() => globalThis.crypto.randomUUID());
  }

  /** One event; resolves with `{ id, duplicate }` once it is durable. */
  async publish(type, data, options = {}) {
    return this.send(this.event(type, data, options));
  }

  /** Several events, committed together or not at all: `{ ids, duplicates }`. */
  async publishBatch(events) {
    if (!Array.isArray(events) || events.length === 0) {
      throw new PublishError({ status: 0, code: 'empty_batch', field: 'events', message: 'send at least one event' });
    }
    return this.send(events.map((e) => this.event(e.type, e.data, e)));
  }

  event(type, data, { key, idempotencyKey, occurredAt, tenant } = {}) {
    const e = { type, data: data ?? {}, idempotencyKey: idempotencyKey ?? this.newKey() };
    if (key !== undefined) e.key = String(key);
    if (occurredAt !== undefined) e.occurredAt = occurredAt instanceof Date ? occurredAt.toISOString() : occurredAt;
    if (tenant !== undefined) e.tenant = tenant;
    return e;
  }

  /** The same body (same idempotency keys) until it is answered or the retries are spent. */
  async send(body) {
    const text = JSON.stringify(body);
    for (let attempt = 0; ; attempt++) {
      let failure;
      try {
        const token = typeof this.options.token === 'function' ? await this.options.token() : this.options.token;
        const headers = { 'content-type': 'application/json' };
        if (token) headers.authorization = `Bearer ${token}`;
        const r = await this.fetch(`${this.options.url}/api/events`, { method: 'POST', headers, body: text });
        if (r.ok) return await r.json();
        failure = await refusal(r);
      } catch (e) {
        failure = new PublishError({ code: 'unavailable', message: `publish failed: ${e.message ?? e}`, retryable: true });
      }
      if (!failure.retryable || attempt >= this.options.retries) throw failure;
      const cap = Math.min(this.options.maxDelayMs, this.options.initialDelayMs * 2 ** attempt);
      await this.sleep(Math.max(failure.retryAfterMs ?? 0, Math.floor(this.random() * cap)));
    }
  }
}

/** The server's `{"error": {code, message, field}}` as a PublishError. */
async function refusal(r) {
  const body = await r.json().catch(() => ({}));
  const err = body?.error ?? {};
  const failure = new PublishError({
    status: r.status,
    code: err.code ?? `http_${r.status}`,
    field: err.field,
    message: err.message ?? `HTTP ${r.status}`,
    retryable: RETRYABLE.has(r.status),
  });
  const after = Number.parseInt(r.headers.get('retry-after') ?? '', 10);
  if (Number.isFinite(after)) failure.retryAfterMs = after * 1000;
  return failure;
}
