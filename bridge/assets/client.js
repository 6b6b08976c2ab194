// Switchyard browser client: typed events over SSE with resume, backoff, a heartbeat watchdog
// and a polling fallback. Dependency-free ES module, served by the bridge at /client.js.
//
//   import { Switchyard } from '/client.js';
//   const sy = new Switchyard({ channels: ['dashboard', 'alerts'], token });
//   sy.on('shopify:order-created', (e) => show(e.data.total?.amount, e.key));
//   sy.onStateEnd(({ asOf }) => markFiguresCurrent());
//   sy.onState((state) => indicator.textContent = state);
//   sy.start();
//
// State: a page's first connection asks for the current state of every key (`start=state`),
// so a dashboard opened or reloaded shows every figure at once; later reconnects resume by
// id, and when history cannot cover a resume the server sends the state of what changed.
//
// Why not just EventSource: its own retry reuses the same URL (a single-use ticket would be
// spent), never gives up, has no jitter, cannot see heartbeats (comments), and loses the last
// id on a page reload. This client owns the connection instead.

/** Connection states, in the order a healthy client moves through them. */
export const STATES = Object.freeze(['disconnected', 'connecting', 'connected', 'reconnecting', 'failed']);

/**
 * Exponential backoff with full jitter: a uniform delay in [0, min(max, initial · 2^attempt)].
 * Full jitter spreads a thundering herd after a server restart (AWS Architecture Blog,
 * "Exponential Backoff And Jitter").
 */
export function backoffDelay(attempt, { initialMs = 1000, maxMs = 30000, random = Math.random } = {}) {
  const cap = Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * cap);
}

const DEFAULTS = {
  url: '',
  channels: ['dashboard'],
  token: undefined,
  heartbeatMs: 15000,
  initialDelayMs: 1000,
  maxDelayMs: 30000,
  maxRetries: Infinity,
  // After this many failed stream attempts in a row, poll instead (and keep trying streams).
  fallbackAfter: 3,
  pollIntervalMs: 2000,
  storageKey: undefined,
  lastEventId: undefined,
  start: 'state',
  tenant: undefined,
};

// Envelope fields of switchyard.v1.Event: everything else is the payload (one field).
const ENVELOPE = new Set(['id', 'tenant', 'occurredAt', 'publishedAt', 'source', 'key', 'idempotencyKey', 'trace']);

/**
 * `a + b` for decimal strings (`"0.10"`, `"-3"`), exactly: money is never added as floating
 * point (0.1 + 0.2 is not 0.3). Keeps the larger number of decimal places.
 */
export function addDecimal(a, b) {
  const parse = (v) => {
    const [int, frac = ''] = String(v).trim().split('.');
    return { n: BigInt(int + frac), scale: frac.length };
  };
  const x = parse(a);
  const y = parse(b);
  const scale = Math.max(x.scale, y.scale);
  const sum = x.n * 10n ** BigInt(scale - x.scale) + y.n * 10n ** BigInt(scale - y.scale);
  const neg = sum < 0n;
  const digits = (neg ? -sum : sum).toString().padStart(scale + 1, '0');
  const text = scale ? `${digits.slice(0, -scale)}.${digits.slice(-scale)}` : digits;
  return neg ? `-${text}` : text;
}

/** The event as handlers see it: the envelope, its type, and the payload as `data`. */
export function typed(type, envelope) {
  const e = { type, data: undefined };
  for (const [k, v] of Object.entries(envelope ?? {})) {
    if (ENVELOPE.has(k)) e[k] = v;
    else if (k === 'custom') e.data = parseCustom(v);
    else e.data = v;
  }
  if (e.data === undefined) e.data = {};
  return e;
}

function parseCustom(c) {
  try {
    return JSON.parse(c?.json ?? 'null');
  } catch {
    return c?.json;
  }
}

export class Switchyard {
  /**
   * @param {object} options see client.d.ts. `token` may be a string or a function returning
   *   one (or a promise of one): it is called before every connection, so it can refresh.
   */
  constructor(options = {}) {
    this.options = { ...DEFAULTS, ...options };
    const g = globalThis;
    this.env = {
      EventSource: 'EventSource' in options ? options.EventSource : g.EventSource,
      fetch: options.fetch ?? g.fetch?.bind(g),
      storage: 'storage' in options ? options.storage : safeSessionStorage(),
      setTimeout: options.setTimeout ?? g.setTimeout.bind(g),
      clearTimeout: options.clearTimeout ?? g.clearTimeout.bind(g),
      random: options.random ?? Math.random,
      now: options.now ?? Date.now,
    };
    this.channels = [...this.options.channels];
    this.storageKey = this.options.storageKey ?? `switchyard:lastEventId:${this.channels.join(',')}`;
    this.state = 'disconnected';
    this.transport = null;
    // A reload resumes where this tab left off; a first visit starts at `lastEventId` if given
    // ('0' replays the retained history), else live.
    this.lastEventId = this.env.storage?.getItem(this.storageKey) ?? this.options.lastEventId ?? null;
    // This page holds no figures yet: its first connection starts from state.
    this.needState = this.options.start === 'state';
    this.attempt = 0;
    this.failures = 0;
    // When the next attempt is due (ms since the epoch) while waiting out a backoff, else null.
    this.retryAt = null;
    this.handlers = new Map();
    this.stateHandlers = new Set();
    this.gapHandlers = new Set();
    this.stateEndHandlers = new Set();
    this.errorHandlers = new Set();
    this.retryHandlers = new Set();
    this.source = null;
    this.timer = null;
    this.watchdog = null;
    this.running = false;
    this.generation = 0;
  }

  /** Calls `fn(data, event)` for each event of `type` (`'*'` for every event). Returns an unsubscribe. */
  on(type, fn) {
    if (!this.handlers.has(type)) this.handlers.set(type, new Set());
    this.handlers.get(type).add(fn);
    if (type !== '*' && this.source) this.listen(this.source, type);
    return () => this.handlers.get(type)?.delete(fn);
  }

  /** `fn(state, previous)` on every state change. Returns an unsubscribe. */
  onState(fn) {
    this.stateHandlers.add(fn);
    return () => this.stateHandlers.delete(fn);
  }

  /** `fn({ asOf, events })` when the state part of a stream is complete: figures are current. */
  onStateEnd(fn) {
    this.stateEndHandlers.add(fn);
    return () => this.stateEndHandlers.delete(fn);
  }

  /** `fn(info)` when the server says history was incomplete (the state of what changed follows). */
  onGap(fn) {
    this.gapHandlers.add(fn);
    return () => this.gapHandlers.delete(fn);
  }

  /** `fn({ attempt, delayMs, at })` when a failed connection's next attempt is scheduled
   * (`at`, ms since the epoch, is also `retryAt` until it starts): for a countdown. */
  onRetry(fn) {
    this.retryHandlers.add(fn);
    return () => this.retryHandlers.delete(fn);
  }

  /** `fn(error)` for connection errors (informational; the client retries by itself). */
  onError(fn) {
    this.errorHandlers.add(fn);
    return () => this.errorHandlers.delete(fn);
  }

  start() {
    if (this.running) return this;
    this.running = true;
    this.attempt = 0;
    this.failures = 0;
    this.connect();
    return this;
  }

  stop() {
    this.running = false;
    this.generation++;
    this.teardown();
    this.setState('disconnected');
    return this;
  }

  // ---- internals ----

  setState(next) {
    if (next === this.state) return;
    const prev = this.state;
    this.state = next;
    for (const fn of this.stateHandlers) fn(next, prev);
  }

  teardown() {
    if (this.source) {
      this.source.close();
      this.source = null;
    }
    this.env.clearTimeout(this.timer);
    this.env.clearTimeout(this.watchdog);
    this.timer = null;
    this.watchdog = null;
    this.retryAt = null;
  }

  async token() {
    const t = this.options.token;
    return typeof t === 'function' ? await t() : t;
  }

  usePolling() {
    return !this.env.EventSource || this.failures >= this.options.fallbackAfter;
  }

  connect() {
    const gen = ++this.generation;
    this.teardown();
    this.setState(this.attempt === 0 && this.state !== 'reconnecting' ? 'connecting' : 'reconnecting');
    const go = this.usePolling() ? this.poll(gen) : this.stream(gen);
    go.catch((error) => this.failed(gen, error));
  }

  /** Schedules the next attempt with backoff, or gives up after `maxRetries`. */
  failed(gen, error) {
    if (gen !== this.generation || !this.running) return;
    this.teardown();
    for (const fn of this.errorHandlers) fn(error);
    if (this.attempt >= this.options.maxRetries) {
      this.running = false;
      this.setState('failed');
      return;
    }
    const delay = backoffDelay(this.attempt, {
      initialMs: this.options.initialDelayMs,
      maxMs: this.options.maxDelayMs,
      random: this.env.random,
    });
    this.attempt++;
    this.retryAt = this.env.now() + delay;
    this.setState('reconnecting');
    for (const fn of this.retryHandlers) fn({ attempt: this.attempt, delayMs: delay, at: this.retryAt });
    this.timer = this.env.setTimeout(() => this.connect(), delay);
  }

  opened() {
    this.attempt = 0;
    this.setState('connected');
  }

  remember(id) {
    if (!id) return;
    this.lastEventId = id;
    try {
      this.env.storage?.setItem(this.storageKey, id);
    } catch {
      // Storage full or disabled: resume still works within this page.
    }
  }

  dispatch(type, envelope, raw) {
    const event = typed(type, envelope);
    for (const fn of this.handlers.get(type) ?? []) fn(event, raw);
    for (const fn of this.handlers.get('*') ?? []) fn(event, raw);
  }

  stateEnded(info) {
    this.needState = false;
    for (const fn of this.stateEndHandlers) fn(info);
  }

  armWatchdog(gen) {
    this.env.clearTimeout(this.watchdog);
    this.watchdog = this.env.setTimeout(() => {
      if (gen === this.generation) this.failed(gen, new Error('no heartbeat: the connection went quiet'));
    }, this.options.heartbeatMs * 2.5);
  }

  listen(source, type) {
    if (source.listening.has(type)) return;
    source.listening.add(type);
    source.addEventListener(type, (e) => this.onMessage(source.gen, type, e));
  }

  onMessage(gen, type, e) {
    if (gen !== this.generation) return;
    this.armWatchdog(gen);
    let data;
    try {
      data = JSON.parse(e.data);
    } catch {
      data = e.data;
    }
    if (type === 'stream:gap') {
      for (const fn of this.gapHandlers) fn(data);
      return;
    }
    if (type === 'stream:state') {
      this.remember(e.lastEventId);
      this.stateEnded(data);
      return;
    }
    if (type === 'stream:heartbeat' || type === 'stream:reconnect') return;
    this.remember(e.lastEventId);
    this.dispatch(type, data, { id: e.lastEventId || null, type, data });
  }

  async stream(gen) {
    const params = this.params(this.channels);
    params.set('heartbeat', 'event');
    // State, then the facts after the id a previous load saved; or, within a page, a plain resume.
    if (this.needState) params.set('start', 'state');
    if (this.lastEventId) params.set('lastEventId', this.lastEventId);
    const token = await this.token();
    if (token) params.set('ticket', await this.ticket(token));
    const everything = await this.catalogTypes();
    if (gen !== this.generation) return;
    const source = new this.env.EventSource(`${this.options.url}/api/sse/subscribe?${params}`);
    source.gen = gen;
    source.listening = new Set();
    this.source = source;
    this.transport = 'sse';
    for (const type of ['stream:gap', 'stream:state', 'stream:heartbeat', 'stream:reconnect', ...this.handlers.keys(), ...everything]) {
      if (type !== '*') this.listen(source, type);
    }
    // Events nobody registered for by name still reach '*' handlers.
    source.onmessage = (e) => this.onMessage(gen, e.type, e);
    source.onopen = () => {
      if (gen !== this.generation) return;
      this.failures = 0;
      this.opened();
      this.armWatchdog(gen);
    };
    source.onerror = () => {
      if (gen !== this.generation) return;
      // Never let EventSource retry on its own: its URL holds a spent ticket.
      if (this.state !== 'connected') this.failures++;
      this.failed(gen, new Error('stream interrupted'));
    };
  }

  /**
   * With a '*' handler: every catalog type (GET /api/catalog, once), because an EventSource
   * hears only the event types it listens to by name. Types outside the catalog (custom
   * events) reach '*' only when also registered by name.
   */
  async catalogTypes() {
    if (!this.handlers.has('*')) return [];
    if (!this.catalog) {
      try {
        const r = await this.env.fetch(`${this.options.url}/api/catalog`);
        this.catalog = r.ok ? (await r.json()).events.map((e) => e.name) : [];
      } catch {
        this.catalog = [];
      }
    }
    return this.catalog;
  }

  /** What every request names: the channels, and the tenant when the options name one. */
  params(channels) {
    const params = new URLSearchParams({ channels: channels.join(',') });
    if (this.options.tenant) params.set('tenant', this.options.tenant);
    return params;
  }

  async ticket(token) {
    const r = await this.env.fetch(`${this.options.url}/api/sse/ticket`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}` },
    });
    if (!r.ok) throw new Error(`ticket: HTTP ${r.status}`);
    return (await r.json()).ticket;
  }

  /**
   * Fetches the current state of `channels` (default: this client's) from GET /api/state and
   * hands each event to the handlers, as a stream would. Resolves with `{ asOf, events }`.
   * For `dashboard:refresh-required`: refetch only the sections it names.
   */
  async refreshState(channels = this.channels) {
    // A page at a time (the server never renders every key at once), all with the first's asOf.
    let cursor = null;
    let asOf = null;
    let count = 0;
    do {
      const params = this.params(channels);
      if (cursor) params.set('cursor', cursor);
      const token = await this.token();
      const r = await this.env.fetch(`${this.options.url}/api/state?${params}`, {
        headers: token ? { authorization: `Bearer ${token}` } : {},
        credentials: 'same-origin',
      });
      if (!r.ok) throw new Error(`state: HTTP ${r.status}`);
      const view = await r.json();
      asOf ??= view.asOf;
      for (const item of view.events ?? []) {
        this.dispatch(item.type, item.event, { id: String(item.id), type: item.type, data: item.event, state: true });
      }
      count += view.events?.length ?? 0;
      cursor = view.next ?? null;
    } while (cursor);
    return { asOf, events: count };
  }

  /** The state part for a polling client: the state, then polling goes on after `asOf`. */
  async pollState(gen) {
    const info = await this.refreshState();
    if (gen !== this.generation) return;
    this.remember(info.asOf);
    this.stateEnded(info);
  }

  /** Polling through GET /api/events; tries a stream again every few polls. */
  async poll(gen) {
    this.transport = 'polling';
    let polls = 0;
    if (this.needState) await this.pollState(gen);
    for (;;) {
      const params = this.params(this.channels);
      if (this.lastEventId) params.set('after', this.lastEventId);
      const token = await this.token();
      const r = await this.env.fetch(`${this.options.url}/api/events?${params}`, {
        headers: token ? { authorization: `Bearer ${token}` } : {},
        credentials: 'same-origin',
      });
      if (gen !== this.generation) return;
      if (!r.ok) throw new Error(`poll: HTTP ${r.status}`);
      const page = await r.json();
      if (gen !== this.generation) return;
      this.opened();
      if (page.complete === false) {
        for (const fn of this.gapHandlers) fn({ oldestAvailableId: page.oldestAvailableId, headId: page.headId });
      }
      for (const item of page.events ?? []) {
        this.remember(String(item.id));
        this.dispatch(item.type, item.event, { id: String(item.id), type: item.type, data: item.event });
      }
      this.remember(page.next);
      polls++;
      // Streaming may work again (the network changed, the proxy went away): try it.
      if (this.env.EventSource && polls % 10 === 0) {
        this.failures = 0;
        this.attempt = 0;
        this.connect();
        return;
      }
      await new Promise((resolve) => {
        this.timer = this.env.setTimeout(resolve, page.events?.length ? 0 : this.options.pollIntervalMs);
      });
      if (gen !== this.generation) return;
    }
  }
}

function safeSessionStorage() {
  try {
    return globalThis.sessionStorage ?? null;
  } catch {
    return null;
  }
}
