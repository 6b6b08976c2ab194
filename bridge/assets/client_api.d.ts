export type State = 'disconnected' | 'connecting' | 'connected' | 'reconnecting' | 'failed';
export declare const STATES: readonly State[];

export interface BackoffOptions {
  initialMs?: number;
  maxMs?: number;
  random?: () => number;
}
/** A uniform delay in [0, min(maxMs, initialMs · 2^attempt)] (full jitter). */
export declare function backoffDelay(attempt: number, options?: BackoffOptions): number;

/** `a + b` for decimal strings, exactly (money is never added as floating point). */
export declare function addDecimal(a: string, b: string): string;

/** The envelope every event carries (proto3 JSON of switchyard.v1.Event, payload aside). */
export interface Envelope {
  /** The event's id in the one history (a string: 64-bit). */
  id?: string;
  tenant?: string;
  occurredAt?: string;
  publishedAt?: string;
  /** Who produced it: `webhook:shopify`, `connector:xero`, a service name. */
  source?: string;
  /** What it is about (order id, store, job id); snapshots are the state of their key. */
  key?: string;
  idempotencyKey?: string;
}

/** What a handler receives: the envelope, the type, and the payload as `data`. */
export interface SwitchyardEvent<T = unknown, K extends string = string> extends Envelope {
  type: K;
  data: T;
}

/** The frame as it arrived: `id` is the resume cursor (`N`, or `N~W` while snapshots are held). */
export interface RawEvent {
  id: string | null;
  type: string;
  data: unknown;
  /** Set when the event came from `/api/state` (`refreshState`, a polling client's state part):
   * it is the current state of its key. A stream's state part says so by its `N~W` ids. */
  state?: boolean;
}

/** `stream:state`: the state part is complete; figures are current as of `asOf`. */
export interface StateInfo {
  asOf: string;
  events: number;
}

export interface Options {
  /** Base URL of the bridge; '' for the page's own origin. */
  url?: string;
  /** Channels to subscribe to (default ['dashboard']; [] for every channel the token allows). */
  channels?: string[];
  /** System (`*`) tokens only: the tenant to read, or `'*'` for every tenant. */
  tenant?: string;
  /** A bearer token, or a function returning one (called before every connection: refresh here). */
  token?: string | (() => string | Promise<string>);
  /**
   * `'state'` (default): a page's first connection starts with the current state of every key
   * (then the facts after the id saved by a previous load, if any); later reconnects resume by
   * id, and a gap is healed by the server with the state of what changed. `'live'`: events
   * from now on (or after `lastEventId`).
   */
  start?: 'state' | 'live';
  /** The server's heartbeat period; no bytes for 2.5× this means the connection is dead. */
  heartbeatMs?: number;
  initialDelayMs?: number;
  maxDelayMs?: number;
  /** Give up (state 'failed') after this many consecutive failed attempts. Default: never. */
  maxRetries?: number;
  /** Consecutive failed stream attempts before polling /api/events instead. */
  fallbackAfter?: number;
  pollIntervalMs?: number;
  /** Where the last id is kept across reloads (sessionStorage). */
  storageKey?: string;
  /** First visit only: resume after this id ('0' replays the retained history). */
  lastEventId?: string;
  /** Injection points for tests and non-browser hosts. */
  EventSource?: typeof EventSource | null;
  fetch?: typeof fetch;
  storage?: Pick<Storage, 'getItem' | 'setItem'> | null;
  setTimeout?: typeof setTimeout;
  clearTimeout?: typeof clearTimeout;
  random?: () => number;
  /** The clock for `retryAt` (default `Date.now`). */
  now?: () => number;
}

/** A failed connection's next attempt, as `onRetry` reports it. */
export interface RetryInfo {
  /** 1 for the first retry after a failure. */
  attempt: number;
  delayMs: number;
  /** When it starts, ms since the epoch. */
  at: number;
}

export declare class Switchyard {
  constructor(options?: Options);
  readonly state: State;
  readonly transport: 'sse' | 'polling' | null;
  readonly lastEventId: string | null;
  /** While waiting out a backoff: when the next attempt starts (ms since the epoch); else null. */
  readonly retryAt: number | null;
  /** Calls `handler` for each event of a catalog type, typed by its payload. */
  on<K extends keyof EventMap>(type: K, handler: (event: SwitchyardEvent<EventMap[K], K>, raw: RawEvent) => void): () => void;
  /** Custom event types (their `data` is the parsed `custom.json`), or `'*'` for every catalog
   * event (and custom types also registered by name). */
  on<T = unknown>(type: string, handler: (event: SwitchyardEvent<T>, raw: RawEvent) => void): () => void;
  /** Fetches the current state of `channels` (default: this client's) and hands each event to
   * the handlers, as a stream would: for `dashboard:refresh-required`, refetch only what it names. */
  refreshState(channels?: string[]): Promise<StateInfo>;
  /** Called each time the state part of a stream is complete (first load, after a gap). */
  onStateEnd(handler: (info: StateInfo) => void): () => void;
  onState(handler: (state: State, previous: State) => void): () => void;
  /** The server said history was incomplete; the state of what changed follows by itself. */
  onGap(handler: (info: unknown) => void): () => void;
  onError(handler: (error: Error) => void): () => void;
  /** A failed connection's next attempt is scheduled: for a countdown ("retrying in 4 s"). */
  onRetry(handler: (info: RetryInfo) => void): () => void;
  start(): this;
  stop(): this;
}
