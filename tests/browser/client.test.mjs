// Unit tests of the browser client (bridge/assets/client.js): its state machine, backoff,
// watchdog, resume and polling fallback, with a fake clock and a fake EventSource.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Switchyard, backoffDelay } from '../../bridge/assets/client.js';

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

test('connects, delivers typed events, and reconnects with backoff from the last id', async () => {
  const { sy, clock, made, states } = client();
  const got = [];
  sy.on('shopify:order-created', (data, raw) => got.push([raw.id, data.n]));
  sy.start();
  await flush();
  assert.equal(made.length, 1);
  assert.equal(made[0].url.pathname, '/api/sse/subscribe');
  assert.equal(made[0].url.searchParams.get('channels'), 'dashboard,alerts');
  assert.equal(made[0].url.searchParams.get('heartbeat'), 'event');
  made[0].open();
  made[0].emit('shopify:order-created', { n: 1 }, '41');
  made[0].emit('shopify:order-created', { n: 2 }, '42');
  assert.deepEqual(got, [['41', 1], ['42', 2]]);
  assert.deepEqual(states, ['connecting', 'connected']);

  made[0].fail();
  assert.ok(made[0].closed, 'the browser is never left to retry on its own');
  assert.equal(sy.state, 'reconnecting');
  assert.deepEqual(clock.pending(), [500], 'first retry: random 0.5 × 1 s');
  await clock.advance(500);
  assert.equal(made.length, 2);
  assert.equal(made[1].url.searchParams.get('lastEventId'), '42', 'resumes after the last event');
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
});

test('a gap from the server reaches onGap, not the event handlers', async () => {
  const { sy, made } = client();
  const gaps = [];
  const all = [];
  sy.onGap((g) => gaps.push(g));
  sy.on('*', (d) => all.push(d));
  sy.start();
  await flush();
  made[0].open();
  made[0].emit('stream:gap', { oldestAvailableId: '10' });
  made[0].emit('alert:info', { title: 'after' }, '11');
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

test('without EventSource it polls /api/events, and after repeated stream failures it falls back', async () => {
  const pages = [
    { events: [{ id: '5', type: 'alert:info', event: { title: 'a' } }], next: '5', complete: true },
    { events: [], next: '5', complete: true },
  ];
  const asked = [];
  const fetch = async (url) => {
    asked.push(new URL(url, 'http://x'));
    return { ok: true, json: async () => pages[Math.min(asked.length - 1, 1)] };
  };
  const { sy, clock } = client({ EventSource: null, fetch, pollIntervalMs: 2000 });
  const got = [];
  sy.on('alert:info', (d) => got.push(d.title));
  sy.start();
  await flush();
  await flush();
  assert.equal(sy.transport, 'polling');
  assert.equal(sy.state, 'connected');
  assert.deepEqual(got, ['a']);
  await clock.advance(0);
  assert.equal(asked[1].searchParams.get('after'), '5');
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
