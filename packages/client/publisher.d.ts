// Types for @switchyard/client/publisher: the payload of each catalog event type comes from
// the client's generated EventMap, so a misspelt field is a type error.
import type { EventMap } from './client.js';

export interface PublisherOptions {
  /** The server's HTTP address, e.g. `http://127.0.0.1:8080`. */
  url?: string;
  /** A bearer token with the publish role, or a function returning one (called per request). */
  token?: string | (() => string | Promise<string>);
  /** Retries after the first attempt, for what a retry can fix (default 5). */
  retries?: number;
  initialDelayMs?: number;
  maxDelayMs?: number;
  fetch?: typeof fetch;
  random?: () => number;
  sleep?: (ms: number) => Promise<void>;
  /** A fresh idempotency key (default `crypto.randomUUID()`). */
  newKey?: () => string;
}

export interface EventOptions {
  /** What the event is about (an order id, a store): a snapshot is the state of its key. */
  key?: string;
  /** Stored once per tenant and key, whatever the retries (default: a fresh one per event). */
  idempotencyKey?: string;
  occurredAt?: string | Date;
  /** System tokens only. */
  tenant?: string;
}

export type BatchItem = {
  [K in keyof EventMap]: { type: K; data: Partial<EventMap[K]> } & EventOptions;
}[keyof EventMap];

export declare class PublishError extends Error {
  /** The HTTP status (0 when no answer came). */
  readonly status: number;
  /** The server's error code, e.g. `unknown_field`, `invalid_key`, `forbidden`. */
  readonly code: string;
  /** The field the server names, when it names one. */
  readonly field?: string;
  /** Whether a retry could have helped (they were spent). */
  readonly retryable: boolean;
}

export declare class Publisher {
  constructor(options?: PublisherOptions);
  /** One catalog event; resolves once it is durable. */
  publish<K extends keyof EventMap>(type: K, data: Partial<EventMap[K]>, options?: EventOptions): Promise<{ id: string; duplicate: boolean }>;
  /** Several events, committed together or not at all. */
  publishBatch(events: BatchItem[]): Promise<{ ids: string[]; duplicates: number }>;
}
