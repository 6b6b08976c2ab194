// Unit tests of the browser client (bridge/assets/client.js): its state machine, backoff,
// watchdog, resume and polling fallback, with a fake clock and a fake EventSource.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Switchyard, addDecimal, backoffDelay, typed } from '../../bridge/assets/client.js';

/** A clock whose timers fire only when the test advances it. */
class Clock {
  constructor() {
    this.now = 0;
    this.tasks = [];
    this.seq = 0;
    this.setTimeout = (fn, ms) => {
      const id = ++this.seq;
      this.tasks.push({ id, at: this.now + ms, fn });
      return id;
    };
    this.clearTimeout = (id) => {
      this.tasks = this.tasks.filter((t) => t.id !== id);
    };
  }
  async advance(ms) {
    const until = this.now + ms;
    for (;;) {
      this.tasks.sort((a, b) => a.at - b.at);
      const next = this.tasks[0];
      if (!next || next.at > until) break;
      this.tasks.shift();
      this.now = next.at;
      next.fn();
      await flush();
    }
    this.now = until;
  }
  pending() {
    return this.tasks.map((t) => t.at - this.now);
  }
}

const flush = () => new Promise((r) => setImmediate(r));

function fakeEventSource() {
  const made = [];
  class FakeES {
    constructor(url) {
      this.url = new URL(url, 'http://x');
      this.listeners = new Map();
      this.closed = false;
      made.push(this);
    }
    addEventListener(type, fn) {
      this.listeners.set(type, [...(this.listeners.get(type) ?? []), fn]);
    }
    close() {
      this.closed = true;
    }
    open() {
      this.onopen?.();
    }
    fail() {
      this.onerror?.();
    }
    emit(type, data, id = '') {
      const e = { type, data: JSON.stringify(data), lastEventId: id };
      const named = this.listeners.get(type);
      if (named) named.forEach((fn) => fn(e));
      else this.onmessage?.(e);
    }
  }
  return { FakeES, made };
}

function memoryStorage() {
  const m = new Map();
  return { getItem: (k) => (m.has(k) ? m.get(k) : null), setItem: (k, v) => m.set(k, String(v)) };
}

function client(extra = {}) {
  const clock = new Clock();
  const { FakeES, made } = fakeEventSource();
  const states = [];
  const sy = new Switchyard({
    channels: ['dashboard', 'alerts'],
    EventSource: FakeES,
    storage: memoryStorage(),
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    random: () => 0.5,
    heartbeatMs: 1000,
    ...extra,
  });
  sy.onState((s) => states.push(s));
  return { sy, clock, made, states };
}

test('backoff is exponential with full jitter, capped', () => {
  const top = (a) => backoffDelay(a, { initialMs: 1000, maxMs: 30000, random: () => 0.999999 });
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6, 40].map(top), [999, 1999, 3999, 7999, 15999, 29999, 29999, 29999]);
  assert.equal(backoffDelay(3, { random: () => 0 }), 0);
  const spread = new Set(Array.from({ length: 50 }, () => backoffDelay(2)));
  assert.ok(spread.size > 10, 'jittered delays differ');
  for (const d of spread) assert.ok(d >= 0 && d < 4000);
});

const order = (n) => ({ id: String(n), key: `o${n}`, shopifyOrderCreated: { name: `#${n}`, total: { amount: '1.50', currency: 'GBP' } } });

test('connects, delivers typed events, and reconnects with backoff from the last id', async () => {
  const { sy, clock, made, states } = client();
  const got = [];
  sy.on('shopify:order-created', (e, raw) => got.push([raw.id, e.key, e.data.name, e.data.total.amount]));
  sy.start();
  await flush();
  assert.equal(made.length, 1);
  assert.equal(made[0].url.pathname, '/api/sse/subscribe');
  assert.equal(made[0].url.searchParams.get('channels'), 'dashboard,alerts');
  assert.equal(made[0].url.searchParams.get('heartbeat'), 'event');
  assert.equal(made[0].url.searchParams.get('start'), 'state', 'a page starts from the current state');
  made[0].open();
  made[0].emit('stream:state', { asOf: '40', events: 0 }, '40');
  made[0].emit('shopify:order-created', order(41), '41');
  made[0].emit('shopify:order-created', order(42), '42');
  assert.deepEqual(got, [['41', 'o41', '#41', '1.50'], ['42', 'o42', '#42', '1.50']]);
  assert.deepEqual(states, ['connecting', 'connected']);

  made[0].fail();
  assert.ok(made[0].closed, 'the browser is never left to retry on its own');
  assert.equal(sy.state, 'reconnecting');
  assert.deepEqual(clock.pending(), [500], 'first retry: random 0.5 × 1 s');
  await clock.advance(500);
  assert.equal(made.length, 2);
  assert.equal(made[1].url.searchParams.get('lastEventId'), '42', 'resumes after the last event');
  assert.equal(made[1].url.searchParams.get('start'), null, 'within a page a reconnect resumes by id only');
  made[1].open();
  assert.equal(sy.state, 'connected');
  sy.stop();
  assert.equal(sy.state, 'disconnected');
  assert.ok(made[1].closed);
});

test('gives up after maxRetries consecutive failures; delays grow until then', async () => {
  const { sy, clock, made, states } = client({ maxRetries: 3, fallbackAfter: 99 });
  sy.start();
  await flush();
  const delays = [];
  for (let i = 0; i < 3; i++) {
    made.at(-1).fail();
    delays.push(clock.pending()[0]);
    await clock.advance(delays.at(-1));
  }
  made.at(-1).fail();
  assert.deepEqual(delays, [500, 1000, 2000]);
  assert.equal(sy.state, 'failed');
  assert.equal(states.at(-1), 'failed');
  assert.deepEqual(clock.pending(), [], 'nothing scheduled after giving up');
});

test('retryAt and onRetry say when the next attempt starts, and clear when it does', async () => {
  const { sy, clock, made } = client({ fallbackAfter: 99 });
  sy.env.now = () => clock.now;
  const retries = [];
  sy.onRetry((r) => retries.push({ ...r, retryAt: sy.retryAt, state: sy.state }));
  sy.start();
  await flush();
  assert.equal(sy.retryAt, null, 'no retry while connecting');
  made.at(-1).fail();
  assert.deepEqual(retries, [{ attempt: 1, delayMs: 500, at: 500, retryAt: 500, state: 'reconnecting' }]);
  await clock.advance(499);
  assert.equal(sy.retryAt, 500, 'still waiting');
  await clock.advance(1);
  assert.equal(sy.retryAt, null, 'the attempt started');
  made.at(-1).fail();
  assert.deepEqual(retries.at(-1), { attempt: 2, delayMs: 1000, at: 1500, retryAt: 1500, state: 'reconnecting' });
  sy.stop();
  assert.equal(sy.retryAt, null, 'stopped: nothing due');
});

test('the watchdog reconnects a stream that went quiet; heartbeats keep it alive', async () => {
  const { sy, clock, made } = client();
  sy.start();
  await flush();
  made[0].open();
  await clock.advance(2000);
  made[0].emit('stream:heartbeat', { intervalMs: 1000 });
  await clock.advance(2000);
  assert.equal(made.length, 1, 'a heartbeat within 2.5× the period keeps the stream');
  await clock.advance(600);
  assert.ok(made[0].closed, 'no bytes for 2.5× the heartbeat: the stream is dead');
  assert.equal(sy.state, 'reconnecting');
  await clock.advance(500);
  assert.equal(made.length, 2);
});

test('the last id survives a page reload (sessionStorage)', async () => {
  const storage = memoryStorage();
  const first = client({ storage });
  first.sy.start();
  await flush();
  first.made[0].open();
  first.made[0].emit('alert:info', { title: 'x' }, '77');
  first.sy.stop();
  const second = client({ storage });
  second.sy.start();
  await flush();
  assert.equal(second.made[0].url.searchParams.get('lastEventId'), '77');
  assert.equal(second.made[0].url.searchParams.get('start'), 'state', 'a reload has no figures: state first, then the facts after 77');
});

test('the state part reaches handlers with real ids, then onStateEnd; a reconnect before it ends asks again', async () => {
  const { sy, clock, made } = client();
  const got = [];
  const ends = [];
  sy.on('shopify:sync-completed', (e, raw) => got.push([raw.id, e.key, e.data.totalOrders]));
  sy.onStateEnd((info) => ends.push(info));
  sy.start();
  await flush();
  made[0].open();
  made[0].emit('shopify:sync-completed', { id: '3', key: 'uk', shopifySyncCompleted: { totalOrders: 7 } }, '3');
  made[0].fail();
  await clock.advance(clock.pending()[0]);
  assert.equal(made[1].url.searchParams.get('start'), 'state', 'the state part never completed');
  made[1].open();
  made[1].emit('shopify:sync-completed', { id: '3', key: 'uk', shopifySyncCompleted: { totalOrders: 7 } }, '3');
  made[1].emit('stream:state', { asOf: '9', events: 1 }, '9');
  assert.deepEqual(ends, [{ asOf: '9', events: 1 }]);
  assert.equal(sy.lastEventId, '9', 'the cursor moves to asOf');
  // A coalescing stream's cursor that owes held state is kept verbatim and sent back.
  made[1].emit('alert:info', { id: '12', alertInfo: { title: 'x' } }, '12~10');
  made[1].fail();
  await clock.advance(clock.pending()[0]);
  assert.equal(made[2].url.searchParams.get('lastEventId'), '12~10');
  assert.equal(made[2].url.searchParams.get('start'), null);
  assert.deepEqual(got, [['3', 'uk', 7], ['3', 'uk', 7]]);
});

test('typed(): envelope fields, the payload as data, custom JSON parsed', () => {
  const e = typed('acme:thing', { id: '5', key: 'k', publishedAt: 't', custom: { type: 'acme:thing', json: '{"a":1}' } });
  assert.deepEqual(e, { type: 'acme:thing', id: '5', key: 'k', publishedAt: 't', data: { a: 1 } });
  assert.deepEqual(typed('alert:info', { alertInfo: {} }).data, {});
  assert.deepEqual(typed('alert:info', {}).data, {}, 'a payload with only defaults is still an object');
});

test('a gap from the server reaches onGap, not the event handlers', async () => {
  const { sy, made } = client();
  const gaps = [];
  const all = [];
  sy.onGap((g) => gaps.push(g));
  sy.on('*', (e) => all.push(e.data));
  sy.start();
  await flush();
  made[0].open();
  made[0].emit('stream:gap', { oldestAvailableId: '10' });
  made[0].emit('alert:info', { alertInfo: { title: 'after' } }, '11');
  assert.deepEqual(gaps, [{ oldestAvailableId: '10' }]);
  assert.deepEqual(all, [{ title: 'after' }]);
});

test('a token is traded for a fresh single-use ticket before every connection', async () => {
  const calls = [];
  let n = 0;
  const fetch = async (url, init) => {
    calls.push([url, init.headers.authorization]);
    return { ok: true, json: async () => ({ ticket: `t${++n}` }) };
  };
  let version = 0;
  const { sy, clock, made } = client({ fetch, token: async () => `jwt-${++version}` });
  sy.start();
  await flush();
  made[0].open();
  made[0].fail();
  await clock.advance(500);
  await flush();
  assert.deepEqual(calls, [['/api/sse/ticket', 'Bearer jwt-1'], ['/api/sse/ticket', 'Bearer jwt-2']], 'token refreshed each time');
  assert.deepEqual(made.map((m) => m.url.searchParams.get('ticket')), ['t1', 't2']);
});

test('without EventSource it reads /api/state, polls /api/events after asOf, and after repeated stream failures it falls back', async () => {
  const state = { asOf: '4', events: [{ id: '2', type: 'shopify:sync-completed', event: { id: '2', key: 'uk', shopifySyncCompleted: { totalOrders: 3 } } }] };
  const pages = [
    { events: [{ id: '5', type: 'alert:info', event: { alertInfo: { title: 'a' } } }], next: '5', complete: true },
    { events: [], next: '5', complete: true },
  ];
  const asked = [];
  let polled = 0;
  const fetch = async (url) => {
    const u = new URL(url, 'http://x');
    asked.push(u);
    if (u.pathname === '/api/state') return { ok: true, json: async () => state };
    return { ok: true, json: async () => pages[Math.min(polled++, 1)] };
  };
  const { sy, clock } = client({ EventSource: null, fetch, pollIntervalMs: 2000 });
  const got = [];
  const fromState = [];
  sy.on('alert:info', (e) => got.push(e.data.title));
  sy.on('shopify:sync-completed', (e) => got.push(`${e.key}=${e.data.totalOrders}`));
  sy.on('*', (e, raw) => fromState.push(`${e.type}:${raw.state === true}`));
  sy.start();
  for (let i = 0; i < 4; i++) await flush();
  // The state part says it is state (the React hub keeps those); a polled fact does not.
  assert.deepEqual(fromState, ['shopify:sync-completed:true', 'alert:info:false']);
  assert.equal(sy.transport, 'polling');
  assert.equal(sy.state, 'connected');
  assert.equal(asked[0].pathname, '/api/state');
  assert.equal(asked[1].searchParams.get('after'), '4', 'polling goes on after asOf');
  assert.deepEqual(got, ['uk=3', 'a']);
  await clock.advance(0);
  assert.equal(asked[2].searchParams.get('after'), '5');
  sy.stop();

  // With EventSource present but failing before it ever opens: polling after `fallbackAfter` tries.
  const { FakeES, made } = fakeEventSource();
  const s2 = client({ EventSource: FakeES, fetch, fallbackAfter: 2 });
  s2.sy.start();
  await flush();
  s2.made = made;
  for (let i = 0; i < 2; i++) {
    made.at(-1).fail();
    await s2.clock.advance(s2.clock.pending()[0]);
  }
  await flush();
  assert.equal(s2.sy.transport, 'polling');
  assert.equal(s2.sy.state, 'connected');
  s2.sy.stop();
});

test('addDecimal adds money exactly, never as floating point', () => {
  assert.equal(addDecimal('0.1', '0.2'), '0.3');
  assert.equal(addDecimal('1249.99', '0.01'), '1250.00');
  assert.equal(addDecimal('10', '0.005'), '10.005');
  assert.equal(addDecimal('-5.50', '2.25'), '-3.25');
  assert.equal(addDecimal('0', '-0.07'), '-0.07');
  assert.equal(addDecimal('90071992547409.93', '0.08'), '90071992547410.01', 'beyond 2^53 cents');
});
