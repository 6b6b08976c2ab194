// React bindings for the Switchyard client: one connection per provider, however many hooks.
//
// Why a hub between the client and the hooks: a component that mounts after the page opened
// (a tab switched to, a panel expanded) must still see the state that arrived before it did,
// and 20 hooks must not mean 20 connections. The hub holds the one `Switchyard`, the latest
// snapshot of every (type, key) that is state, and the jobs it has seen; hooks read it through
// `useSyncExternalStore`, so a render never sees half an update.
//
// No JSX and no build step: this file is what the package ships.
import { createContext, createElement, useContext, useEffect, useRef, useState, useSyncExternalStore } from 'react';
import { Switchyard } from './client.js';

const Context = createContext(null);

/** Jobs the hub remembers, the most recently heard of (a job's life is short; its id is new). */
const MAX_JOBS = 1000;

/** The phase each job event type reports, by the catalog's families. */
const JOB_PHASES = new Map([
  ['job-started', 'started'],
  ['job-progress', 'running'],
  ['job-completed', 'completed'],
  ['job-failed', 'failed'],
  ['forecast:progress', 'running'],
  ['forecast:complete', 'completed'],
  ['forecast:error', 'failed'],
  ['workflow:stage', 'running'],
  ['workflow:progress', 'running'],
  ['workflow:completion', 'completed'],
  ['workflow:error', 'failed'],
]);

function jobPhase(type) {
  return JOB_PHASES.get(type) ?? JOB_PHASES.get(type.slice(type.indexOf(':') + 1));
}

/** The progress snapshot a job event's family keeps (`import:job-completed` → `import:job-progress`). */
function progressType(type) {
  const family = type.slice(0, type.indexOf(':'));
  return family === 'forecast' || family === 'workflow' ? `${family}:progress` : `${family}:job-progress`;
}

const slot = (type, key) => `${type}\u0000${key}`;

/** What the provider shares with its hooks: the client, the state seen so far, and listeners. */
export class Hub {
  constructor(client) {
    this.client = client;
    this.snapshots = new Map();
    // Types known to be state: they came in a state part (ids `N~W`, or `raw.state` from
    // /api/state when polling), or a hook asked for one.
    this.stateTypes = new Set();
    this.jobs = new Map();
    this.listeners = new Set();
    this.users = 0;
    this.stopTimer = null;
    this.connection = this.readConnection();
    client.on('*', (event, raw) => this.receive(event, raw));
    const changed = () => {
      this.connection = this.readConnection();
      this.notify();
    };
    client.onState(changed);
    client.onRetry(changed);
  }

  readConnection() {
    const c = this.client;
    return { state: c.state, transport: c.transport, retryAt: c.retryAt ?? null };
  }

  receive(event, raw) {
    const key = event.key;
    if (key === undefined || key === '') return;
    if (raw?.state || raw?.id?.includes('~')) this.stateTypes.add(event.type);
    let changed = false;
    if (this.stateTypes.has(event.type)) {
      this.snapshots.set(slot(event.type, key), event);
      changed = true;
    }
    const phase = jobPhase(event.type);
    if (phase) {
      const previous = this.jobs.get(key);
      const status = jobStatus(previous, event, phase);
      // As in the server's state view, a job that ended has no progress snapshot any more.
      if (status.done) this.snapshots.delete(slot(progressType(event.type), key));
      this.jobs.delete(key);
      this.jobs.set(key, status);
      if (this.jobs.size > MAX_JOBS) this.jobs.delete(this.jobs.keys().next().value);
      changed = true;
    }
    if (changed) this.notify();
  }

  notify() {
    for (const fn of this.listeners) fn();
  }

  subscribe = (fn) => {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  };

  snapshot(type, key) {
    this.stateTypes.add(type);
    return this.snapshots.get(slot(type, key));
  }

  job(id) {
    return this.jobs.get(id);
  }

  /** A provider's effect holds the connection; under StrictMode's unmount-then-mount the stop
   * is deferred a tick and cancelled, so the page keeps one connection and never reconnects. */
  retain() {
    this.users++;
    clearTimeout(this.stopTimer);
    this.client.start();
    return () => {
      if (--this.users > 0) return;
      this.stopTimer = setTimeout(() => this.client.stop(), 0);
    };
  }
}

function jobStatus(previous, event, phase) {
  const d = event.data ?? {};
  const percent = phase === 'completed' ? 100 : (d.percent ?? previous?.percent ?? 0);
  // A workflow's stage completing is not the workflow done: only `final` ends it.
  const done = phase === 'completed' && (event.type !== 'workflow:completion' || d.final === true);
  return {
    id: event.key,
    type: event.type,
    phase: phase === 'completed' && !done ? 'running' : phase,
    stage: d.stage ?? previous?.stage,
    percent,
    message: d.message ?? previous?.message,
    done: done || phase === 'failed',
    error: phase === 'failed' ? (d.error ?? 'failed') : undefined,
    event,
  };
}

/** Holds one `Switchyard` for everything beneath it: pass `options` (or your own `client`). */
export function SwitchyardProvider({ client, options, children }) {
  const [hub] = useState(() => new Hub(client ?? new Switchyard(options)));
  useEffect(() => hub.retain(), [hub]);
  return createElement(Context.Provider, { value: hub }, children);
}

/** The provider's hub (and `hub.client`, the `Switchyard` itself). */
export function useSwitchyard() {
  const hub = useContext(Context);
  if (!hub) throw new Error('useSwitchyard: no <SwitchyardProvider> above this component');
  return hub;
}

/** Calls `handler(event, raw)` for each event of these types ('*' for every catalog event).
 * The latest `handler` is called: it need not be memoised. */
export function useEvents(types, handler) {
  const hub = useSwitchyard();
  const latest = useRef(handler);
  latest.current = handler;
  const list = Array.isArray(types) ? types : [types];
  const joined = list.join('\u0000');
  useEffect(() => {
    const offs = joined.split('\u0000').map((type) => hub.client.on(type, (e, raw) => latest.current(e, raw)));
    return () => offs.forEach((off) => off());
  }, [hub, joined]);
}

/** The current snapshot of (type, key): the state on open, then every live update. */
export function useSnapshot(type, key) {
  const hub = useSwitchyard();
  return useSyncExternalStore(hub.subscribe, () => hub.snapshot(type, key));
}

/** A job's phase (started, running, completed, failed), stage, percent, message and error. */
export function useJob(id) {
  const hub = useSwitchyard();
  return useSyncExternalStore(hub.subscribe, () => hub.job(id));
}

/** The connection: state (connecting, connected, reconnecting, failed, disconnected), the
 * transport, `status`, one word for a badge (`fallback-polling` when polling), and while a
 * backoff is waited out `retryAt` and `retryInMs`, which counts down (re-rendered 4× a second). */
export function useConnection() {
  const hub = useSwitchyard();
  const c = useSyncExternalStore(hub.subscribe, () => hub.connection);
  const now = hub.client.env.now;
  const [, tick] = useState(0);
  useEffect(() => {
    if (c.retryAt == null) return;
    const timer = setInterval(() => {
      tick((n) => n + 1);
      if (now() >= c.retryAt) clearInterval(timer);
    }, 250);
    return () => clearInterval(timer);
  }, [c.retryAt, now]);
  const status = c.state === 'connected' && c.transport === 'polling' ? 'fallback-polling' : c.state;
  const retryInMs = c.retryAt == null ? null : Math.max(0, c.retryAt - now());
  return { ...c, status, retryInMs };
}

const LABELS = {
  connecting: 'Connecting…',
  connected: 'Live',
  reconnecting: 'Reconnecting…',
  // While a backoff is waited out; `{s}` is the seconds left.
  retrying: 'Reconnecting in {s} s…',
  'fallback-polling': 'Live (polling)',
  failed: 'Disconnected',
  disconnected: 'Offline',
};

/** An unstyled badge: `<span data-status="…">Live</span>`; style it by `data-status`. While a
 * backoff is waited out it counts down ("Reconnecting in 3 s…", `data-retry-in="3"`). */
export function ConnectionStatus({ labels, ...props }) {
  const { status, retryInMs } = useConnection();
  const all = { ...LABELS, ...labels };
  const seconds = retryInMs > 0 ? Math.ceil(retryInMs / 1000) : null;
  const text = seconds === null ? (all[status] ?? status) : all.retrying.replace('{s}', seconds);
  const attrs = { role: 'status', 'data-status': status, 'data-retry-in': seconds ?? undefined, ...props };
  return createElement('span', attrs, text);
}
