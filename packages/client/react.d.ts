// Types for @switchyard/client/react (react.js). React is a peer dependency.
import type { ReactNode, HTMLAttributes, ReactElement } from 'react';
import type { EventMap, Options, RawEvent, State, Switchyard, SwitchyardEvent } from './client.js';

export interface ProviderProps {
  /** Options for the one `Switchyard` the provider creates (ignored when `client` is given). */
  options?: Options;
  /** A client you made yourself; the provider starts it and stops it when it unmounts. */
  client?: Switchyard;
  children?: ReactNode;
}
export declare function SwitchyardProvider(props: ProviderProps): ReactElement;

export interface Hub {
  readonly client: Switchyard;
}
export declare function useSwitchyard(): Hub;

export declare function useEvents<K extends keyof EventMap>(
  types: K | K[],
  handler: (event: SwitchyardEvent<EventMap[K], K>, raw: RawEvent) => void,
): void;
export declare function useEvents<T = unknown>(types: string | string[], handler: (event: SwitchyardEvent<T>, raw: RawEvent) => void): void;

/** The current snapshot of (type, key), or undefined until one has arrived. */
export declare function useSnapshot<K extends keyof EventMap>(type: K, key: string): SwitchyardEvent<EventMap[K], K> | undefined;
export declare function useSnapshot<T = unknown>(type: string, key: string): SwitchyardEvent<T> | undefined;

export type JobPhase = 'started' | 'running' | 'completed' | 'failed';
export interface JobStatus {
  id: string;
  /** The type of the latest event about the job. */
  type: string;
  phase: JobPhase;
  stage?: string;
  /** 0-100; 100 once completed. */
  percent: number;
  message?: string;
  /** Completed or failed: nothing more will come. */
  done: boolean;
  error?: string;
  event: SwitchyardEvent;
}
/** A job's status from its import/export/forecast/workflow events (key = the job's id). */
export declare function useJob(id: string): JobStatus | undefined;

export type ConnectionBadge = State | 'fallback-polling';
export interface Connection {
  state: State;
  transport: 'sse' | 'polling' | null;
  status: ConnectionBadge;
  /** While a failed connection's backoff is waited out: when the next attempt starts (ms since
   * the epoch) and how long until then (counts down); null otherwise. */
  retryAt: number | null;
  retryInMs: number | null;
}
export declare function useConnection(): Connection;

export interface ConnectionStatusProps extends HTMLAttributes<HTMLSpanElement> {
  /** Text per status; `retrying` is shown during a backoff, `{s}` replaced by the seconds left. */
  labels?: Partial<Record<ConnectionBadge | 'retrying', string>>;
}
/** An unstyled `<span role="status" data-status="…">`. */
export declare function ConnectionStatus(props: ConnectionStatusProps): ReactElement;
