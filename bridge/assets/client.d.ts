// Types for /client.js.
export type State = 'disconnected' | 'connecting' | 'connected' | 'reconnecting' | 'failed';
export declare const STATES: readonly State[];

export interface BackoffOptions {
  initialMs?: number;
  maxMs?: number;
  random?: () => number;
}
/** A uniform delay in [0, min(maxMs, initialMs · 2^attempt)] (full jitter). */
export declare function backoffDelay(attempt: number, options?: BackoffOptions): number;

export interface RawEvent<T = unknown> {
  id: string | null;
  type: string;
  data: T;
}

export interface Options {
  /** Base URL of the bridge; '' for the page's own origin. */
  url?: string;
  /** Channels to subscribe to (default ['dashboard']). */
  channels?: string[];
  /** A bearer token, or a function returning one (called before every connection: refresh here). */
  token?: string | (() => string | Promise<string>);
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
}

export declare class Switchyard {
  constructor(options?: Options);
  readonly state: State;
  readonly transport: 'sse' | 'polling' | null;
  readonly lastEventId: string | null;
  on<T = any>(type: string, handler: (data: T, event: RawEvent<T>) => void): () => void;
  onState(handler: (state: State, previous: State) => void): () => void;
  onGap(handler: (info: unknown) => void): () => void;
  onError(handler: (error: Error) => void): () => void;
  start(): this;
  stop(): this;
}
