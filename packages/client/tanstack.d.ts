// Types for @switchyard/client/tanstack (tanstack.js).
import type { EventMap, Switchyard, SwitchyardEvent } from './client.js';

type QueryKey = readonly unknown[];

/** What is needed of a TanStack `QueryClient`. */
export interface QueryClientLike {
  invalidateQueries(filters: { queryKey: QueryKey }): unknown;
  setQueryData(queryKey: QueryKey, data: unknown): unknown;
}

export interface QueryRules {
  /** Event type → the query keys it makes stale (a burst is one refetch per key). */
  invalidate?: {
    [K in keyof EventMap]?: QueryKey[] | ((event: SwitchyardEvent<EventMap[K], K>) => QueryKey[]);
  };
  /** Event type → [query key, data] written into the cache (the event is the query's whole state). */
  set?: {
    [K in keyof EventMap]?: (event: SwitchyardEvent<EventMap[K], K>) => [QueryKey, unknown] | null;
  };
}

export interface QueryOptions {
  /** How long a burst is gathered before each key is invalidated once (default 50 ms). */
  windowMs?: number;
  setTimeout?: typeof setTimeout;
  clearTimeout?: typeof clearTimeout;
}

/** Connects a client to a query client; returns a function that disconnects. */
export declare function connectQueryClient(
  client: Switchyard,
  queryClient: QueryClientLike,
  rules?: QueryRules,
  options?: QueryOptions,
): () => void;

/** For `dashboard:refresh-required`: `[...prefix, section]` per named section, or `prefix` when none is named. */
export declare function sections(prefix?: QueryKey): (event: SwitchyardEvent<EventMap['dashboard:refresh-required']>) => QueryKey[];
